//! Groups absent from the groups map: unmanaged (pass), or unjoined (drop) where the
//! interface asks for it and the gate is closed. The rule is `msfilter_common::unjoined`.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use msfilter_common::{
    Reason,
    unjoined::{self, GATE_BEGUN, GATE_LEASE, GATE_SETTLED},
};

use crate::{keys::Words, maps};

#[inline(always)]
fn gate(index: u32) -> u64 {
    maps::MSF_UNJOINED_GATE
        .get_ptr(index)
        // SAFETY: an element of an array map, valid for the program's run; read once.
        .map_or(0, |p| unsafe { core::ptr::read_volatile(p) })
}

/// The reason for a datagram of a group the groups map does not hold on `ifindex`. Cheap
/// when no interface drops unjoined groups: one inlined array read.
#[inline(always)]
pub(crate) fn judge(ifindex: u32, group: &Words) -> Reason {
    let lease = gate(GATE_LEASE);
    if lease == 0 {
        return Reason::Unmanaged;
    }
    // SAFETY: Words and Addr are 16 bytes of plain data; only read as bytes.
    let group: &[u8; 16] = unsafe { &*(group as *const Words).cast::<[u8; 16]>() };
    if unjoined::is_link_scope(group) {
        return Reason::Unmanaged;
    }
    // SAFETY: a value of a hash map, valid for the program's run.
    let Some(flags) = (unsafe { maps::MSF_UNJOINED.get(ifindex) }).copied() else {
        return Reason::Unmanaged;
    };
    let (begun, settled) = (gate(GATE_BEGUN), gate(GATE_SETTLED));
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    unjoined::decide(
        flags,
        group,
        unjoined::gate_closed(begun, settled, lease, now),
    )
}
