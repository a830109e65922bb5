//! Counting without a second lookup: per-CPU values are added to plainly, shared source
//! entries with atomic adds.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use msfilter_common::{Counter, Reason};

use crate::maps::MSF_REASONS;

/// Count a frame under its reason (per-CPU array: no atomics needed).
#[inline(always)]
pub(crate) fn count_reason(reason: Reason, len: u64) {
    if let Some(counter) = MSF_REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { (*counter).add(len) };
    }
}

/// Count a frame on a counter that all CPUs share (a source entry). The results are unused,
/// so this compiles to the BPF atomic add without fetch, which every kernel supports. (The
/// BPF target does not offer `AtomicU64::fetch_add`, hence the intrinsic.)
#[inline(always)]
pub(crate) fn count_shared(counter: *mut Counter, len: u64) {
    // SAFETY: `counter` points into a map value, 8-byte aligned, valid for the program's run.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*counter).packets, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*counter).bytes, len);
    }
}
