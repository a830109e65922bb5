//! The packet trace's sampled path (`msfilter trace`, `msfilter_common::trace`).
//!
//! Every frame reads the switch and branches on it; only while a trace runs does a frame
//! go further, into [`emit`], kept out of line so the judged path stays as it was.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use msfilter_common::{Reason, trace::TraceEvent};

use crate::{
    keys::Words,
    maps::{MSF_TRACE, MSF_TRACE_CTL},
    parse::Frame,
};

/// Loaded as 0, the verifier removes the trace path (the benchmark's baseline); the product
/// loads it as 1 (`msfilter_common::trace::TRACE_CAPABLE_GLOBAL`).
#[unsafe(no_mangle)]
static MSF_TRACE_CAPABLE: u8 = 1;

/// Trace this frame if a trace is on and selects it. `addresses`: the frame's group and
/// source, when it was parsed that far.
#[inline(always)]
pub(crate) fn frame(ifindex: u32, addresses: Option<&Frame>, reason: Reason, len: u64) {
    // SAFETY: a plain read of a read-only global; volatile so that the load-time value, not
    // the compiled-in one, decides.
    if unsafe { core::ptr::read_volatile(&raw const MSF_TRACE_CAPABLE) } == 0 {
        return;
    }
    let Some(control) = MSF_TRACE_CTL.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the pointer comes from a successful lookup; `enabled` is a plain u32.
    if unsafe { (*control).enabled } == 0 {
        return;
    }
    emit(control, ifindex, addresses, reason, len);
}

/// Out of line: a BPF function takes at most five arguments in registers, hence the frame's
/// addresses by reference.
#[inline(never)]
fn emit(
    control: *mut msfilter_common::trace::TraceControl,
    ifindex: u32,
    addresses: Option<&Frame>,
    reason: Reason,
    len: u64,
) {
    // SAFETY: a map value, valid for the program's run; userspace rewrites it whole, so a
    // frame may see a selection half old and half new, once.
    let c = unsafe { &*control };
    if c.ifindex != 0 && c.ifindex != ifindex {
        return;
    }
    if c.match_group != 0 {
        let Some(Frame { group, .. }) = addresses else {
            return;
        };
        // The same words as the maps' keys (`keys`): compare word by word.
        // SAFETY: `group` is 16 bytes at a 4-byte aligned offset of the map value.
        let want: &Words = unsafe { &*(&raw const c.group).cast::<Words>() };
        if want[0] != group[0] || want[1] != group[1] || want[2] != group[2] || want[3] != group[3]
        {
            return;
        }
    }
    // SAFETY: helper calls without preconditions.
    if c.sample_one_in > 1 && unsafe { bpf_get_prandom_u32() } % c.sample_one_in != 0 {
        return;
    }
    let (group, source, addressed) = match addresses {
        Some(f) => (f.group, f.source, 1),
        None => ([0; 4], [0; 4], 0),
    };
    let event = TraceEvent {
        // SAFETY: as above.
        time_ns: unsafe { bpf_ktime_get_ns() },
        ifindex,
        len: len as u32,
        reason: reason as u8,
        addressed,
        reserved: [0; 6],
        // SAFETY: Words and Addr are both 16 bytes of plain data; the words hold the
        // network-order bytes (`keys`).
        group: unsafe { core::mem::transmute::<Words, [u8; 16]>(group) },
        source: unsafe { core::mem::transmute::<Words, [u8; 16]>(source) },
    };
    if MSF_TRACE.output::<TraceEvent>(&event, 0).is_err() {
        // SAFETY: `lost` is 8-byte aligned inside the map value; other CPUs add to it too.
        unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*control).lost, 1);
        }
    }
}
