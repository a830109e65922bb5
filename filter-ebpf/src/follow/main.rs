//! msfilter's follow hooks: cgroup programs that tell the follower when a socket's
//! multicast memberships may change, without interpreting them.
//!
//! * `cgroup/setsockopt` ([`msf_setsockopt`]): a membership option is about to be handled
//!   on a socket of the followed network namespace. Give the socket an id (socket-local
//!   storage) if it has none, count the option as begun, and report the socket, the calling
//!   thread, the option and the first bytes of its value. Always lets the call proceed.
//! * `cgroup/sock_release` ([`msf_release`]): a followed socket is released; forget its
//!   counter and report it.
//!
//! Both are attached to the root of the cgroup v2 hierarchy, so they see every socket of
//! the host (the namespace check drops the others first). The follower reads the socket's
//! filter back from the kernel; nothing here decides what a socket wants. See
//! `docs/follow.md`.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(
    internal_features,
    reason = "atomic_xadd: the BPF target has no AtomicU64::fetch_add"
)]

mod hooks;
mod maps;

use aya_ebpf::{
    macros::{cgroup_sock, cgroup_sockopt},
    programs::{SockContext, SockoptContext},
};

/// Always 1: the kernel goes on to handle the option as if the hook were not there.
#[cgroup_sockopt(setsockopt)]
pub fn msf_setsockopt(ctx: SockoptContext) -> i32 {
    hooks::setsockopt(&ctx);
    1
}

/// Always 1: the release goes on.
#[cgroup_sock(sock_release)]
pub fn msf_release(ctx: SockContext) -> i32 {
    hooks::released(&ctx);
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
