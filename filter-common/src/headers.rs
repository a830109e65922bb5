//! Header constants and pure header arithmetic, shared by the XDP program and the model.
//!
//! Only the decisions that are plain arithmetic on header fields live here; how bytes are
//! reached (bounds-checked pointers in the kernel, slices in the model) stays with each side,
//! so the differential test still compares two independent traversals.

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const IPV4_MIN_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
/// Bytes of an IPv6 extension header needed to read its next-header and length fields.
pub const IPV6_EXT_MIN: usize = 2;
pub const IPV6_FRAG_HLEN: usize = 8;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_IGMP: u8 = 2;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_NONE: u8 = 59;
pub const IPPROTO_DSTOPTS: u8 = 60;
pub const IPPROTO_PIM: u8 = 103;
pub const IPPROTO_MH: u8 = 135;
pub const IPPROTO_HIP: u8 = 139;
pub const IPPROTO_SHIM6: u8 = 140;

/// MLD message types (RFC 2710, RFC 3810).
pub const ICMPV6_MLD_QUERY: u8 = 130;
pub const ICMPV6_MLD_REPORT: u8 = 131;
pub const ICMPV6_MLD_DONE: u8 = 132;
pub const ICMPV6_MLD2_REPORT: u8 = 143;

/// 802.1Q or 802.1ad tag.
#[inline(always)]
pub const fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// The VLAN whose sub-interface judges a frame, from the frame's outermost tag (its TPID and
/// TCI): the VLAN id (TCI & 0x0fff) of an 802.1Q tag. An 802.1ad outer tag (a QinQ S-tag)
/// maps to no sub-interface, nor does an inner tag: only 802.1Q sub-interfaces of the
/// interface the program runs on are enforced there.
#[inline(always)]
pub const fn mapped_vlan(outer_tpid: u16, outer_tci: u16) -> Option<u16> {
    if outer_tpid == ETH_P_8021Q {
        Some(outer_tci & 0x0fff)
    } else {
        None
    }
}

/// IPv4 multicast: 224.0.0.0/4.
#[inline(always)]
pub const fn is_ipv4_multicast(first_octet: u8) -> bool {
    first_octet & 0xf0 == 0xe0
}

/// IPv6 multicast: ff00::/8.
#[inline(always)]
pub const fn is_ipv6_multicast(first_octet: u8) -> bool {
    first_octet == 0xff
}

/// IPv4 control protocols that are never dropped: IGMP and PIM.
#[inline(always)]
pub const fn is_ipv4_control(protocol: u8) -> bool {
    protocol == IPPROTO_IGMP || protocol == IPPROTO_PIM
}

/// MLD message types, which are never dropped.
#[inline(always)]
pub const fn is_mld(icmpv6_type: u8) -> bool {
    matches!(
        icmpv6_type,
        ICMPV6_MLD_QUERY | ICMPV6_MLD_REPORT | ICMPV6_MLD_DONE | ICMPV6_MLD2_REPORT
    )
}

/// IPv6 extension headers that are walked to find the upper-layer protocol. ESP is not
/// among them: what follows it is encrypted, so ESP itself is the upper layer.
#[inline(always)]
pub const fn is_ipv6_ext(next_header: u8) -> bool {
    matches!(
        next_header,
        IPPROTO_HOPOPTS
            | IPPROTO_ROUTING
            | IPPROTO_FRAGMENT
            | IPPROTO_DSTOPTS
            | IPPROTO_AH
            | IPPROTO_MH
            | IPPROTO_HIP
            | IPPROTO_SHIM6
    )
}

/// Length in bytes of an IPv6 extension header from its type and its second byte
/// (`Hdr Ext Len`). AH counts 4-byte units minus 2 (RFC 4302); the fragment header is always
/// 8 bytes; all others count 8-byte units minus 1 (RFC 8200).
#[inline(always)]
pub const fn ipv6_ext_len(next_header: u8, hdr_ext_len: u8) -> usize {
    match next_header {
        IPPROTO_FRAGMENT => IPV6_FRAG_HLEN,
        IPPROTO_AH => (hdr_ext_len as usize + 2) * 4,
        _ => (hdr_ext_len as usize + 1) * 8,
    }
}

/// Fragment offset field of an IPv6 fragment header's bytes 2..4 (units of 8 bytes).
#[inline(always)]
pub const fn ipv6_fragment_offset(bytes_2_3: u16) -> u16 {
    bytes_2_3 >> 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_lengths() {
        assert_eq!(ipv6_ext_len(IPPROTO_HOPOPTS, 0), 8);
        assert_eq!(ipv6_ext_len(IPPROTO_DSTOPTS, 3), 32);
        assert_eq!(ipv6_ext_len(IPPROTO_ROUTING, 255), 2048);
        assert_eq!(ipv6_ext_len(IPPROTO_AH, 1), 12);
        assert_eq!(ipv6_ext_len(IPPROTO_AH, 4), 24);
        assert_eq!(ipv6_ext_len(IPPROTO_FRAGMENT, 200), 8);
    }

    #[test]
    fn classes() {
        assert!(is_ipv4_multicast(224) && is_ipv4_multicast(239) && !is_ipv4_multicast(240));
        assert!(!is_ipv4_multicast(223));
        assert!(is_ipv6_multicast(0xff) && !is_ipv6_multicast(0xfe));
        assert!(is_ipv4_control(2) && is_ipv4_control(103) && !is_ipv4_control(17));
        assert!(is_mld(130) && is_mld(143) && !is_mld(133) && !is_mld(128));
        assert!(is_ipv6_ext(0) && is_ipv6_ext(44) && !is_ipv6_ext(IPPROTO_ESP));
        assert!(!is_ipv6_ext(IPPROTO_ICMPV6) && !is_ipv6_ext(IPPROTO_UDP));
        assert!(is_vlan(0x8100) && is_vlan(0x88a8) && !is_vlan(0x0800));
        // Priority and DEI bits are not part of the VLAN id; 802.1ad outer tags map nowhere.
        assert_eq!(mapped_vlan(ETH_P_8021Q, 0xe064), Some(100));
        assert_eq!(mapped_vlan(ETH_P_8021Q, 0x0fff), Some(4095));
        assert_eq!(mapped_vlan(ETH_P_8021AD, 100), None);
        assert_eq!(ipv6_fragment_offset(0x0009), 1); // offset 1, M flag set
        assert_eq!(ipv6_fragment_offset(0x0001), 0); // first fragment, M flag set
    }
}
