//! Reference programs for `cargo xtask bench`, kept out of msfilter's own object:
//!
//! * `bench_drop`: the floor, XDP_DROP and a per-CPU count, nothing else;
//! * `bench_pass`: XDP_PASS and a count, in front of the stack-based alternatives;
//! * `bench_tx`: XDP_TX, the generator that sends live test frames out of a veth;
//! * `bench_lookup`: the bare cost of one hash lookup with msfilter's source key (same width,
//!   same map type and flags), built from an IPv4 frame's fixed offsets.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, xdp_action},
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use msfilter_common::{Counter, SourceKey, maps::ipv4_mapped};

/// Frames each program saw (index 0).
#[map]
static BENCH_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Sized at load time to the benchmark's pair count.
#[map]
static BENCH_LOOKUP: HashMap<SourceKey, Counter> = HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

#[inline(always)]
fn count() {
    if let Some(c) = BENCH_COUNT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        unsafe { *c += 1 };
    }
}

#[xdp]
pub fn bench_drop(_ctx: XdpContext) -> u32 {
    count();
    xdp_action::XDP_DROP
}

#[xdp]
pub fn bench_pass(_ctx: XdpContext) -> u32 {
    count();
    xdp_action::XDP_PASS
}

#[xdp]
pub fn bench_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[xdp]
pub fn bench_lookup(ctx: XdpContext) -> u32 {
    match try_lookup(&ctx) {
        Some(true) => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

/// Ethernet + IPv4 without options: source at 26, destination at 30.
#[inline(always)]
fn try_lookup(ctx: &XdpContext) -> Option<bool> {
    let start = ctx.data();
    if start + 34 > ctx.data_end() {
        return None;
    }
    // SAFETY: the 34 bytes were checked above.
    let (src, dst) = unsafe {
        (
            *((start + 26) as *const [u8; 4]),
            *((start + 30) as *const [u8; 4]),
        )
    };
    let key = SourceKey::new(
        ctx.ingress_ifindex() as u32,
        0,
        ipv4_mapped(dst),
        ipv4_mapped(src),
    );
    Some(BENCH_LOOKUP.get_ptr(key).is_some())
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
