//! msfilter's XDP program: judges every multicast datagram by (ingress interface, group,
//! source) against the groups and sources maps, before the network stack sees it. A frame of
//! a VLAN mapped in the VLAN map is judged as arriving on that 802.1Q sub-interface.
//!
//! The entry point is deliberately tiny: [`try_msfilter`] parses and judges; whatever it
//! could not judge comes back as an [`Error`] and is passed. The rules are those of the
//! reference model in `msfilter_common::verdict`, which the tests hold this program to.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(
    internal_features,
    reason = "atomic_xadd: the BPF target has no AtomicU64::fetch_add"
)]

mod counters;
mod keys;
mod maps;
mod parse;
mod trace;
mod unjoined;
mod vlan;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use msfilter_common::{Reason, Verdict, maps::published_after, verdict::decide};

use crate::parse::{Error, Frame};

#[xdp]
pub fn msfilter(ctx: XdpContext) -> u32 {
    match try_msfilter(&ctx) {
        Ok(verdict) => verdict as u32,
        Err(error) => {
            let len = parse::frame_len(&ctx);
            counters::count_reason(error.reason(), len);
            trace::frame(ctx.ingress_ifindex() as u32, None, error.reason(), len);
            xdp_action::XDP_PASS
        }
    }
}

/// Parse the frame and judge it. Frames that are not multicast data subject to the filter
/// (not IP, malformed, truncated, control traffic, unicast) come back as `Err` and pass.
#[inline(always)]
fn try_msfilter(ctx: &XdpContext) -> Result<Verdict, Error> {
    let frame = parse::multicast_datagram(ctx)?;
    let len = parse::frame_len(ctx);
    let (ifindex, own) = vlan::judged_ifindex(ctx, ctx.ingress_ifindex() as u32);
    let reason = judge(ifindex, own, &frame, len);
    counters::count_reason(reason, len);
    trace::frame(ifindex, Some(&frame), reason, len);
    Ok(reason.verdict())
}

/// The policy's reason for a multicast datagram. A listed source is judged by its pair entry
/// alone, one lookup; only a frame whose source has no pair entry looks up its group.
#[inline(always)]
fn judge(ifindex: u32, own: bool, frame: &Frame, len: u64) -> Reason {
    // IPv4 groups live in maps with compact keys: every key byte is hashed and compared.
    let ipv4 = keys::is_ipv4(&frame.group);
    // The publication epoch this frame began in, read before the pair lookup
    // (`limits::EPOCH_MAP`).
    let epoch = match maps::MSF_EPOCH.get_ptr(0) {
        // SAFETY: a successful lookup in an array map; userspace writes the u32 whole.
        Some(epoch) => unsafe { core::ptr::read_volatile(epoch) },
        None => 0,
    };
    let mut looked_again = false;
    let group_value = loop {
        if let Some(reason) = listed(ipv4, ifindex, frame, len) {
            return reason;
        }
        let group_value = if ipv4 {
            maps::MSF_GROUPS4.get_ptr_mut(keys::group_key4(ifindex, &frame.group))
        } else {
            maps::MSF_GROUPS.get_ptr_mut(keys::group_key(ifindex, &frame.group))
        };
        let Some(group_value) = group_value else {
            return if own {
                unjoined::judge(ifindex, &frame.group)
            } else {
                Reason::Unmanaged
            };
        };
        // SAFETY: the pointer comes from a successful lookup in a per-CPU map: this CPU's
        // copy, which nothing else writes while this program runs on this CPU.
        let group_value = unsafe { &mut *group_value };
        // Published after this frame began: its pair entries may have been written after the
        // lookup above missed. Look once more.
        if looked_again || !published_after(group_value.published, epoch) {
            break group_value;
        }
        looked_again = true;
    };

    let reason = decide(group_value.state.mode(), false);
    match reason.verdict() {
        Verdict::Pass => group_value.passed.add(len),
        Verdict::Drop => group_value.dropped.add(len),
    }
    reason
}

/// The reason given by the frame's pair entry, counted on it; `None` if the source is not
/// listed.
#[inline(always)]
fn listed(ipv4: bool, ifindex: u32, Frame { group, source }: &Frame, len: u64) -> Option<Reason> {
    let value = if ipv4 {
        maps::MSF_PAIRS4.get_ptr_mut(keys::source_key4(ifindex, group, source))
    } else {
        maps::MSF_PAIRS.get_ptr_mut(keys::source_key(ifindex, group, source))
    }?;
    // SAFETY: a successful lookup's value pointer, valid for the program's run; userspace
    // replaces values whole, and `listed` is one byte.
    let (mode, matched) = unsafe { ((*value).listed.mode(), &raw mut (*value).matched) };
    counters::count_shared(matched, len);
    Some(decide(mode, true))
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
