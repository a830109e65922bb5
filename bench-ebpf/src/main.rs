//! Reference programs for `cargo xtask bench`, kept out of msfilter's own object:
//!
//! * `bench_drop`: the floor, XDP_DROP and a per-CPU count, nothing else;
//! * `bench_pass`: XDP_PASS and a count, in front of the stack-based alternatives;
//! * `bench_tx`: XDP_TX, the generator that sends live test frames out of a veth;
//! * `bench_lookup` / `bench_lookup6`: the bare cost of one hash lookup with msfilter's source
//!   key (same width — 12 bytes for IPv4, 40 for IPv6 — same map type and flags), built from an
//!   IPv4 / IPv6 frame's fixed offsets;
//! * `bench_lookup_group` / `bench_lookup_u32`: the same lookup with msfilter's 20-byte group
//!   key and with a 4-byte key, so the cost of the key width (jhash over it and the key
//!   compare) shows as a difference.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, xdp_action},
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use msfilter_common::{Counter, GroupKey, SourceKey, SourceKey4, maps::ipv4_mapped};

/// Frames each program saw (index 0).
#[map]
static BENCH_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Sized at load time to the benchmark's pair count: IPv6 source keys.
#[map]
static BENCH_LOOKUP: HashMap<SourceKey, Counter> = HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

/// The same for IPv4 source keys (msfilter's 12-byte `SourceKey4`).
#[map]
static BENCH_LOOKUP4: HashMap<SourceKey4, Counter> =
    HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

/// The 20-byte key: msfilter's group key.
#[map]
static BENCH_LOOKUP_GROUP: HashMap<GroupKey, Counter> =
    HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

/// A 4-byte key.
#[map]
static BENCH_LOOKUP_U32: HashMap<u32, Counter> = HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

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

#[xdp]
pub fn bench_lookup6(ctx: XdpContext) -> u32 {
    match try_lookup6(&ctx) {
        Some(true) => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

#[xdp]
pub fn bench_lookup_group(ctx: XdpContext) -> u32 {
    match ipv4_addresses(&ctx) {
        Some((_, dst)) => {
            let key = GroupKey::new(ctx.ingress_ifindex() as u32, ipv4_mapped(dst));
            verdict(found(BENCH_LOOKUP_GROUP.get_ptr(key).is_some()))
        }
        None => xdp_action::XDP_PASS,
    }
}

#[xdp]
pub fn bench_lookup_u32(ctx: XdpContext) -> u32 {
    match ipv4_addresses(&ctx) {
        Some((src, _)) => verdict(found(
            BENCH_LOOKUP_U32.get_ptr(u32::from_be_bytes(src)).is_some(),
        )),
        None => xdp_action::XDP_PASS,
    }
}

/// A found key is counted as the floor counts its frames, so a lookup program's cost above
/// the floor is the lookup alone.
#[inline(always)]
fn found(hit: bool) -> bool {
    if hit {
        count();
    }
    hit
}

#[inline(always)]
const fn verdict(found: bool) -> u32 {
    if found {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Ethernet + IPv4 without options: source at 26, destination at 30.
#[inline(always)]
fn ipv4_addresses(ctx: &XdpContext) -> Option<([u8; 4], [u8; 4])> {
    let start = ctx.data();
    if start + 34 > ctx.data_end() {
        return None;
    }
    // SAFETY: the 34 bytes were checked above.
    Some(unsafe {
        (
            *((start + 26) as *const [u8; 4]),
            *((start + 30) as *const [u8; 4]),
        )
    })
}

#[inline(always)]
fn try_lookup(ctx: &XdpContext) -> Option<bool> {
    let (src, dst) = ipv4_addresses(ctx)?;
    let key = SourceKey4 {
        ifindex: ctx.ingress_ifindex() as u32,
        group: dst,
        source: src,
    };
    Some(found(BENCH_LOOKUP4.get_ptr(key).is_some()))
}

/// Ethernet + IPv6: source at 22, destination at 38.
#[inline(always)]
fn try_lookup6(ctx: &XdpContext) -> Option<bool> {
    let start = ctx.data();
    if start + 54 > ctx.data_end() {
        return None;
    }
    // SAFETY: the 54 bytes were checked above.
    let (src, dst) = unsafe {
        (
            *((start + 22) as *const [u8; 16]),
            *((start + 38) as *const [u8; 16]),
        )
    };
    let key = SourceKey::new(ctx.ingress_ifindex() as u32, dst, src);
    Some(found(BENCH_LOOKUP.get_ptr(key).is_some()))
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
