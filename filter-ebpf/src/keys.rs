//! Map keys built from 32-bit words. Addresses travel as four native-endian words holding
//! the network-order bytes, and keys are written whole: byte-wise construction makes LLVM
//! spill every address byte to its own stack slot and call `memset` for the reserved bytes.
//! `msfilter_common::maps::word_offsets` pins the layouts this relies on.

use msfilter_common::{GroupKey, GroupKey4, SourceKey, SourceKey4, VlanKey};

#[cfg(target_endian = "big")]
compile_error!("the VLAN key word below assumes little-endian (bpfel)");

/// An address as words: IPv6 as is, IPv4 as IPv4-mapped (`::ffff:a.b.c.d`).
pub(crate) type Words = [u32; 4];

#[inline(always)]
pub(crate) const fn ipv4_mapped(a: [u8; 4]) -> Words {
    [
        0,
        0,
        u32::from_ne_bytes([0, 0, 0xff, 0xff]),
        u32::from_ne_bytes(a),
    ]
}

#[inline(always)]
pub(crate) const fn ipv6(a: [u8; 16]) -> Words {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// Whether an address is IPv4 (IPv4-mapped).
#[inline(always)]
pub(crate) const fn is_ipv4(a: &Words) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff])
}

#[inline(always)]
pub(crate) const fn group_key4(ifindex: u32, g: &Words) -> GroupKey4 {
    // SAFETY: GroupKey4 is 8 bytes of plain data, 4-byte aligned, like [u32; 2]: ifindex,
    // then the group's 4 bytes.
    unsafe { core::mem::transmute::<[u32; 2], GroupKey4>([ifindex, g[3]]) }
}

#[inline(always)]
pub(crate) const fn source_key4(ifindex: u32, g: &Words, s: &Words) -> SourceKey4 {
    // SAFETY: SourceKey4 is 12 bytes of plain data, 4-byte aligned, like [u32; 3]: ifindex,
    // group, source.
    unsafe { core::mem::transmute::<[u32; 3], SourceKey4>([ifindex, g[3], s[3]]) }
}

#[inline(always)]
pub(crate) const fn group_key(ifindex: u32, g: &Words) -> GroupKey {
    let words: [u32; 5] = [ifindex, g[0], g[1], g[2], g[3]];
    // SAFETY: GroupKey is 20 bytes of plain data, 4-byte aligned, like [u32; 5]: ifindex, then
    // the group's 16 bytes.
    unsafe { core::mem::transmute::<[u32; 5], GroupKey>(words) }
}

#[inline(always)]
pub(crate) const fn source_key(ifindex: u32, g: &Words, s: &Words) -> SourceKey {
    let words: [u32; 9] = [ifindex, g[0], g[1], g[2], g[3], s[0], s[1], s[2], s[3]];
    // SAFETY: SourceKey is 36 bytes of plain data, 4-byte aligned, like [u32; 9]: ifindex,
    // group, source.
    unsafe { core::mem::transmute::<[u32; 9], SourceKey>(words) }
}

#[inline(always)]
pub(crate) const fn vlan_key(ifindex: u32, vid: u16) -> VlanKey {
    let words: [u32; 2] = [ifindex, vid as u32];
    // SAFETY: VlanKey is 8 bytes of plain data, 4-byte aligned, like [u32; 2]: ifindex, then
    // the VLAN id and its zero reserved half-word, little-endian.
    unsafe { core::mem::transmute::<[u32; 2], VlanKey>(words) }
}
