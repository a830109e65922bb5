//! Dropping groups nobody joined (`attach IFACE --follow --drop-unjoined`).
//!
//! On an interface that floods every group (no IGMP/MLD snooping), datagrams of groups no
//! socket joined reach the IP layer only to be dropped there (IPv4 route input,
//! `ip6_mc_input`). With drop-unjoined, XDP drops them first. Three maps decide, all shared
//! by the XDP program, the follow hooks and the daemon:
//!
//! * [`UNJOINED_MAP`]: interface index → which families are dropped there
//!   ([`DROP_IPV4`], [`DROP_IPV6`]). The daemon clears a family's bit while the interface
//!   forwards multicast (`mc_forwarding`): a multicast router needs every group.
//! * [`GATE_MAP`]: three counters. The follow hooks add one to [`GATE_BEGUN`] for every
//!   membership option *before* the kernel applies it; the daemon writes [`GATE_SETTLED`]
//!   with the value of `begun` up to which every option is reflected in the groups map, and
//!   [`GATE_LEASE`] with a `CLOCK_MONOTONIC` deadline it keeps moving while it is alive.
//!
//! A group absent from the groups map is dropped only while the gate is closed (`begun ==
//! settled`: no option is in flight, so a group just joined is already in the map) and the
//! lease runs (a daemon that died stops the dropping within [`LEASE`]). Link-scope groups
//! (224.0.0.0/24; IPv6 scopes 1 and 2, e.g. ff02::/16) always pass: the kernel joins them
//! itself and neighbour discovery needs them.

use crate::Reason;
use crate::maps::Addr;

/// Name of the map of interfaces that drop unjoined groups.
pub const UNJOINED_MAP: &str = "MSF_UNJOINED";
/// Name of the gate map (three `u64`: begun, settled, lease).
pub const GATE_MAP: &str = "MSF_UNJOINED_GATE";
/// Capacity of [`UNJOINED_MAP`].
pub const MAX_UNJOINED_INTERFACES: u32 = 1024;

/// Index in [`GATE_MAP`]: membership options begun (written by the follow hooks only).
pub const GATE_BEGUN: u32 = 0;
/// Index in [`GATE_MAP`]: the `begun` count whose options the groups map reflects.
pub const GATE_SETTLED: u32 = 1;
/// Index in [`GATE_MAP`]: `CLOCK_MONOTONIC` ns until which dropping is allowed (0: never).
pub const GATE_LEASE: u32 = 2;
/// Entries of [`GATE_MAP`].
pub const GATE_ENTRIES: u32 = 3;

/// How long a lease lasts; the daemon renews it four times as often.
pub const LEASE_NS: u64 = 1_000_000_000;
/// [`LEASE_NS`] as text, for documentation and messages.
pub const LEASE: &str = "1 s";

/// Bit of an [`UNJOINED_MAP`] value: unjoined IPv4 groups are dropped.
pub const DROP_IPV4: u32 = 1;
/// Bit of an [`UNJOINED_MAP`] value: unjoined IPv6 groups are dropped.
pub const DROP_IPV6: u32 = 2;

/// The [`UNJOINED_MAP`] bit that governs `group` (IPv4-mapped groups are IPv4).
#[inline(always)]
pub const fn family_bit(group: &Addr) -> u32 {
    if group[0] == 0 && group[10] == 0xff && group[11] == 0xff {
        DROP_IPV4
    } else {
        DROP_IPV6
    }
}

/// Whether `group` is link-scope: 224.0.0.0/24, or an IPv6 group of scope 1 or 2
/// (interface- and link-local, ff01::/16, ff02::/16 and their flagged forms). Never dropped
/// as unjoined.
#[inline(always)]
pub const fn is_link_scope(group: &Addr) -> bool {
    if family_bit(group) == DROP_IPV4 {
        group[12] == 224 && group[13] == 0 && group[14] == 0
    } else {
        group[1] & 0x0f <= 2
    }
}

/// Whether the gate lets unjoined groups be dropped now.
#[inline(always)]
pub const fn gate_closed(begun: u64, settled: u64, lease_until_ns: u64, now_ns: u64) -> bool {
    begun == settled && now_ns < lease_until_ns
}

/// The reason for a datagram of a group absent from the groups map, given the interface's
/// [`UNJOINED_MAP`] bits and whether the gate is closed.
#[inline(always)]
pub const fn decide(flags: u32, group: &Addr, gate_closed: bool) -> Reason {
    if gate_closed && flags & family_bit(group) != 0 && !is_link_scope(group) {
        Reason::Unjoined
    } else {
        Reason::Unmanaged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::ipv4_mapped;

    fn v6(first: u16) -> Addr {
        let mut a = [0; 16];
        a[..2].copy_from_slice(&first.to_be_bytes());
        a[15] = 1;
        a
    }

    #[test]
    fn link_scope_groups_are_recognised() {
        assert!(is_link_scope(&ipv4_mapped([224, 0, 0, 251])));
        assert!(is_link_scope(&ipv4_mapped([224, 0, 0, 1])));
        assert!(!is_link_scope(&ipv4_mapped([224, 0, 1, 1])));
        assert!(!is_link_scope(&ipv4_mapped([232, 0, 0, 1])));
        assert!(is_link_scope(&v6(0xff02)));
        assert!(is_link_scope(&v6(0xff01)));
        assert!(is_link_scope(&v6(0xff12)));
        assert!(!is_link_scope(&v6(0xff05)));
        assert!(!is_link_scope(&v6(0xff3e)));
        assert!(!is_link_scope(&v6(0xff15)));
    }

    #[test]
    fn families_are_told_apart() {
        assert_eq!(family_bit(&ipv4_mapped([239, 1, 1, 1])), DROP_IPV4);
        assert_eq!(family_bit(&v6(0xff3e)), DROP_IPV6);
    }

    #[test]
    fn only_a_closed_gate_on_a_flagged_family_drops() {
        let g4 = ipv4_mapped([232, 1, 1, 1]);
        let g6 = v6(0xff3e);
        assert_eq!(decide(DROP_IPV4, &g4, true), Reason::Unjoined);
        assert_eq!(decide(DROP_IPV4, &g4, false), Reason::Unmanaged);
        assert_eq!(decide(DROP_IPV4, &g6, true), Reason::Unmanaged);
        assert_eq!(decide(DROP_IPV6, &g6, true), Reason::Unjoined);
        assert_eq!(decide(0, &g4, true), Reason::Unmanaged);
        let link = ipv4_mapped([224, 0, 0, 9]);
        assert_eq!(
            decide(DROP_IPV4 | DROP_IPV6, &link, true),
            Reason::Unmanaged
        );
        assert_eq!(Reason::Unjoined.verdict(), crate::Verdict::Drop);
    }

    #[test]
    fn the_gate_needs_no_option_in_flight_and_a_running_lease() {
        assert!(gate_closed(5, 5, 100, 99));
        assert!(!gate_closed(6, 5, 100, 99));
        assert!(!gate_closed(5, 5, 100, 100));
        assert!(!gate_closed(0, 0, 0, 0));
    }
}
