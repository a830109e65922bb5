//! Verdicts, reasons, and the reference model of the XDP program.
//!
//! [`verdict`] is what the kernel program must compute for every frame. It reads the frame
//! through slices, independently of the kernel program's pointer walk; both share only the
//! arithmetic in [`crate::headers`] and the rule in [`decide`]. The tests compare the two on
//! fixtures and on hundreds of thousands of generated frames.
//!
//! The rules, in order:
//! 1. Ethernet, then up to [`MAX_VLAN_TAGS`] 802.1Q/802.1ad tags. More tags: pass
//!    ([`Reason::TooManyVlanTags`]). Not IPv4/IPv6: pass ([`Reason::NotIp`]).
//! 2. IPv4: the 20-byte header must be present ([`Reason::Truncated`]) with version 4
//!    ([`Reason::Malformed`]); a destination outside 224.0.0.0/4 passes
//!    ([`Reason::NotMulticast`]); then IHL ≥ 5 and total length ≥ IHL·4
//!    ([`Reason::Malformed`]) and the whole datagram present ([`Reason::Truncated`]). Every
//!    fragment is judged by its own header's addresses. IGMP and PIM pass
//!    ([`Reason::Control`]).
//! 3. IPv6: the 40-byte header must be present with version 6; a destination outside ff00::/8
//!    passes; the payload length must fit the frame. Up to [`MAX_IPV6_EXT_HEADERS`] extension
//!    headers are walked (each must fit inside the payload) to find the upper-layer protocol;
//!    a non-first fragment stops the walk with the fragment header's next-header. A longer
//!    chain passes ([`Reason::ExtensionChainTooLong`]). MLD (ICMPv6 130, 131, 132, 143) and
//!    PIM pass; so does ICMPv6 in a non-first fragment, whose type cannot be seen.
//! 4. The judging interface: the ingress interface, unless the outermost tag is 802.1Q
//!    ([`mapped_vlan`]) and the policy maps (ingress interface, that tag's VLAN id) to a
//!    VLAN sub-interface ([`Policy::vlan`]): then that sub-interface. Untagged frames, an
//!    802.1ad outer tag and unmapped VLAN ids keep the ingress interface; inner tags never
//!    count.
//! 5. The (group, source) pair on the judging interface: listed → [`decide`] by the mode it is
//!    listed under. Otherwise the group: absent → pass ([`Reason::Unmanaged`]), or drop
//!    ([`Reason::Unjoined`]) where that interface drops unjoined groups ([`unjoined`]);
//!    present → [`decide`] by the group's mode for an unlisted source. (Userspace keeps every
//!    pair's mode equal to its group's, except for the instant of a mode switch, when each
//!    pair still judges by the old list or already by the new one.)

use crate::headers::{
    ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_FRAGMENT, IPPROTO_ICMPV6, IPPROTO_PIM, IPV4_MIN_HLEN,
    IPV6_EXT_MIN, IPV6_FRAG_HLEN, IPV6_HLEN, VLAN_HLEN, ipv6_ext_len, ipv6_fragment_offset,
    is_ipv4_control, is_ipv4_multicast, is_ipv6_ext, is_ipv6_multicast, is_mld, is_vlan,
    mapped_vlan,
};
use crate::limits::{MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS};
use crate::maps::{Addr, GroupKey, GroupState, Mode, SourceKey, VlanKey, ipv4_mapped};
use crate::unjoined;

/// What XDP does with a frame. The values are the kernel's `XDP_DROP` and `XDP_PASS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Drop = 1,
    Pass = 2,
}

impl Verdict {
    /// The verdict for an XDP return code, if it is one msfilter returns.
    pub const fn from_action(action: u32) -> Option<Self> {
        match action {
            1 => Some(Self::Drop),
            2 => Some(Self::Pass),
            _ => None,
        }
    }
}

/// Why a frame got its verdict. Index of the per-CPU reasons counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Ethertype is neither IPv4 nor IPv6 (after VLAN tags). Pass.
    NotIp = 0,
    /// The frame ends inside a header (or before the IP datagram's end). Pass.
    Truncated = 1,
    /// Wrong IP version, IPv4 IHL < 5, or IPv4 total length < header length. Pass.
    Malformed = 2,
    /// More than [`MAX_VLAN_TAGS`] VLAN tags. Pass.
    TooManyVlanTags = 3,
    /// More than [`MAX_IPV6_EXT_HEADERS`] IPv6 extension headers. Pass.
    ExtensionChainTooLong = 4,
    /// Destination is not multicast. Pass.
    NotMulticast = 5,
    /// IGMP, PIM or MLD: multicast control traffic is never dropped. Pass.
    Control = 6,
    /// No filter for this group on this interface. Pass.
    Unmanaged = 7,
    /// EXCLUDE mode, source not listed. Pass.
    NotExcluded = 8,
    /// INCLUDE mode, source listed. Pass.
    Included = 9,
    /// EXCLUDE mode, source listed. Drop.
    Excluded = 10,
    /// INCLUDE mode, source not listed. Drop.
    NotIncluded = 11,
    /// No socket on the interface joined the group, and the interface drops unjoined groups
    /// (`crate::unjoined`). Drop.
    Unjoined = 12,
}

impl Reason {
    pub const COUNT: usize = 13;

    pub const ALL: [Self; Self::COUNT] = [
        Self::NotIp,
        Self::Truncated,
        Self::Malformed,
        Self::TooManyVlanTags,
        Self::ExtensionChainTooLong,
        Self::NotMulticast,
        Self::Control,
        Self::Unmanaged,
        Self::NotExcluded,
        Self::Included,
        Self::Excluded,
        Self::NotIncluded,
        Self::Unjoined,
    ];

    #[inline(always)]
    pub const fn verdict(self) -> Verdict {
        match self {
            Self::Excluded | Self::NotIncluded | Self::Unjoined => Verdict::Drop,
            _ => Verdict::Pass,
        }
    }

    /// Stable, machine-friendly name (used in CLI output and JSON).
    pub const fn name(self) -> &'static str {
        match self {
            Self::NotIp => "not-ip",
            Self::Truncated => "truncated",
            Self::Malformed => "malformed",
            Self::TooManyVlanTags => "too-many-vlan-tags",
            Self::ExtensionChainTooLong => "ipv6-extension-chain-too-long",
            Self::NotMulticast => "not-multicast",
            Self::Control => "control",
            Self::Unmanaged => "unmanaged-group",
            Self::NotExcluded => "exclude-mode-unlisted-source",
            Self::Included => "include-mode-listed-source",
            Self::Excluded => "exclude-mode-listed-source",
            Self::NotIncluded => "include-mode-unlisted-source",
            Self::Unjoined => "unjoined-group",
        }
    }

    pub const fn from_index(index: u32) -> Option<Self> {
        if (index as usize) < Self::COUNT {
            Some(Self::ALL[index as usize])
        } else {
            None
        }
    }
}

/// The rule for a managed group: by mode and whether the source is listed.
#[inline(always)]
pub const fn decide(mode: Mode, listed: bool) -> Reason {
    match (mode, listed) {
        (Mode::Exclude, true) => Reason::Excluded,
        (Mode::Exclude, false) => Reason::NotExcluded,
        (Mode::Include, true) => Reason::Included,
        (Mode::Include, false) => Reason::NotIncluded,
    }
}

/// The policy the model consults: the same questions the kernel program asks its maps.
pub trait Policy {
    /// The group's state on this interface, or `None` if the group is unmanaged there.
    fn group(&self, key: &GroupKey) -> Option<GroupState>;
    /// The mode under which this pair entry lists the source, if the entry exists.
    fn source(&self, key: &SourceKey) -> Option<Mode>;
    /// The VLAN sub-interface whose entries judge this VLAN's frames on this interface, if
    /// one is mapped (the VLAN map).
    fn vlan(&self, key: &VlanKey) -> Option<u32>;
    /// The interface's `unjoined::UNJOINED_MAP` bits if the gate is closed now, else 0
    /// (groups absent from the groups map then pass).
    fn drops_unjoined(&self, _ifindex: u32) -> u32 {
        0
    }
}

/// The reference model: the verdict and reason the XDP program must give `frame` when it
/// arrives on `ifindex` under `policy`.
pub fn verdict<P: Policy + ?Sized>(frame: &[u8], ifindex: u32, policy: &P) -> (Verdict, Reason) {
    let reason = match judge(frame, ifindex, policy) {
        Ok(reason) | Err(reason) => reason,
    };
    (reason.verdict(), reason)
}

/// The group and source of a multicast datagram that is subject to the filter.
struct Addresses {
    group: Addr,
    source: Addr,
}

/// The interface whose entries judge `frame` arriving on `ifindex` (rule 4): the ingress
/// interface, or the VLAN sub-interface the policy maps the frame's outer 802.1Q tag to.
/// Frames that are not judged by group and source (rules 1–3) stay on the ingress interface.
pub fn judging_interface<P: Policy + ?Sized>(frame: &[u8], ifindex: u32, policy: &P) -> u32 {
    addressed(frame, ifindex, policy).map_or(ifindex, |(judging, _, _)| judging)
}

/// Rules 1–4: the judging interface and the addresses of a datagram the filter applies to.
fn addressed<P: Policy + ?Sized>(
    frame: &[u8],
    ifindex: u32,
    policy: &P,
) -> Result<(u32, bool, Addresses), Reason> {
    let (ethertype, l3, vlan, tagged) = ethernet(frame)?;
    let addresses = match ethertype {
        ETH_P_IPV4 => ipv4(frame, l3)?,
        ETH_P_IPV6 => ipv6(frame, l3)?,
        _ => return Err(Reason::NotIp),
    };
    let mapped = vlan.and_then(|vid| policy.vlan(&VlanKey::new(ifindex, vid)));
    // Whether the frame is the judging interface's own traffic: untagged, or of a mapped VLAN.
    // A tag nothing maps belongs to some other (sub-)interface, or to none.
    let own = !tagged || mapped.is_some();
    Ok((mapped.unwrap_or(ifindex), own, addresses))
}

fn judge<P: Policy + ?Sized>(frame: &[u8], ifindex: u32, policy: &P) -> Result<Reason, Reason> {
    let (ifindex, own, Addresses { group, source }) = addressed(frame, ifindex, policy)?;
    if let Some(mode) = policy.source(&SourceKey::new(ifindex, group, source)) {
        return Ok(decide(mode, true));
    }
    let Some(state) = policy.group(&GroupKey::new(ifindex, group)) else {
        let flags = if own {
            policy.drops_unjoined(ifindex)
        } else {
            0
        };
        return Ok(unjoined::decide(flags, &group, true));
    };
    Ok(decide(state.mode(), false))
}

fn byte(frame: &[u8], off: usize) -> Result<u8, Reason> {
    frame.get(off).copied().ok_or(Reason::Truncated)
}

fn be16(frame: &[u8], off: usize) -> Result<u16, Reason> {
    Ok(u16::from_be_bytes([
        byte(frame, off)?,
        byte(frame, off + 1)?,
    ]))
}

fn array<const N: usize>(frame: &[u8], off: usize) -> Result<[u8; N], Reason> {
    let bytes = frame.get(off..off + N).ok_or(Reason::Truncated)?;
    let mut out = [0; N];
    out.copy_from_slice(bytes);
    Ok(out)
}

/// Ethertype after up to [`MAX_VLAN_TAGS`] tags, the offset of the L3 header, and the VLAN id
/// of the outermost tag if it is one that maps to a sub-interface ([`mapped_vlan`]).
fn ethernet(frame: &[u8]) -> Result<(u16, usize, Option<u16>, bool), Reason> {
    if frame.len() < ETH_HLEN {
        return Err(Reason::Truncated);
    }
    let mut ethertype = be16(frame, ETH_HLEN - 2)?;
    let mut off = ETH_HLEN;
    let mut tags = 0;
    let mut vlan = None;
    while is_vlan(ethertype) {
        if tags == MAX_VLAN_TAGS {
            return Err(Reason::TooManyVlanTags);
        }
        if frame.len() < off + VLAN_HLEN {
            return Err(Reason::Truncated);
        }
        if tags == 0 {
            vlan = mapped_vlan(ethertype, be16(frame, off)?);
        }
        ethertype = be16(frame, off + 2)?;
        off += VLAN_HLEN;
        tags += 1;
    }
    Ok((ethertype, off, vlan, tags > 0))
}

fn ipv4(frame: &[u8], l3: usize) -> Result<Addresses, Reason> {
    let header: [u8; IPV4_MIN_HLEN] = array(frame, l3)?;
    if header[0] >> 4 != 4 {
        return Err(Reason::Malformed);
    }
    if !is_ipv4_multicast(header[16]) {
        return Err(Reason::NotMulticast);
    }
    let header_len = usize::from(header[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if header_len < IPV4_MIN_HLEN || total_len < header_len {
        return Err(Reason::Malformed);
    }
    if frame.len() - l3 < total_len {
        return Err(Reason::Truncated);
    }
    if is_ipv4_control(header[9]) {
        return Err(Reason::Control);
    }
    Ok(Addresses {
        group: ipv4_mapped([header[16], header[17], header[18], header[19]]),
        source: ipv4_mapped([header[12], header[13], header[14], header[15]]),
    })
}

fn ipv6(frame: &[u8], l3: usize) -> Result<Addresses, Reason> {
    let header: [u8; IPV6_HLEN] = array(frame, l3)?;
    if header[0] >> 4 != 6 {
        return Err(Reason::Malformed);
    }
    if !is_ipv6_multicast(header[24]) {
        return Err(Reason::NotMulticast);
    }
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let end = l3 + IPV6_HLEN + payload_len;
    if frame.len() < end {
        return Err(Reason::Truncated);
    }
    // Only the bytes inside the datagram count (Ethernet may pad short frames).
    let datagram = &frame[..end];

    let mut next_header = header[6];
    let mut off = l3 + IPV6_HLEN;
    let mut non_first_fragment = false;
    let mut walked = 0;
    while is_ipv6_ext(next_header) {
        if walked == MAX_IPV6_EXT_HEADERS {
            return Err(Reason::ExtensionChainTooLong);
        }
        walked += 1;
        if next_header == IPPROTO_FRAGMENT {
            let fragment: [u8; IPV6_FRAG_HLEN] = array(datagram, off)?;
            next_header = fragment[0];
            if ipv6_fragment_offset(u16::from_be_bytes([fragment[2], fragment[3]])) != 0 {
                // What follows is the middle of the original payload, not a header.
                non_first_fragment = true;
                break;
            }
            off += IPV6_FRAG_HLEN;
            continue;
        }
        let fixed: [u8; IPV6_EXT_MIN] = array(datagram, off)?;
        let len = ipv6_ext_len(next_header, fixed[1]);
        if datagram.len() < off + len {
            return Err(Reason::Truncated);
        }
        next_header = fixed[0];
        off += len;
    }

    match next_header {
        IPPROTO_PIM => return Err(Reason::Control),
        IPPROTO_ICMPV6 if non_first_fragment => return Err(Reason::Control),
        IPPROTO_ICMPV6 if is_mld(byte(datagram, off)?) => return Err(Reason::Control),
        _ => {}
    }

    let mut group = [0; 16];
    group.copy_from_slice(&header[24..40]);
    let mut source = [0; 16];
    source.copy_from_slice(&header[8..24]);
    Ok(Addresses { group, source })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::HashMap;
    use std::vec::Vec;

    use super::*;
    use crate::headers::*;

    #[derive(Default)]
    struct Table {
        groups: HashMap<GroupKey, GroupState>,
        sources: HashMap<SourceKey, Mode>,
        vlans: HashMap<VlanKey, u32>,
    }

    impl Policy for Table {
        fn group(&self, key: &GroupKey) -> Option<GroupState> {
            self.groups.get(key).copied()
        }
        fn source(&self, key: &SourceKey) -> Option<Mode> {
            self.sources.get(key).copied()
        }
        fn vlan(&self, key: &VlanKey) -> Option<u32> {
            self.vlans.get(key).copied()
        }
    }

    const IF: u32 = 7;
    const G4: [u8; 4] = [232, 1, 1, 1];
    const S4: [u8; 4] = [10, 0, 0, 1];
    const OTHER4: [u8; 4] = [10, 0, 0, 2];

    fn eth(ethertype: u16, vlans: &[u16]) -> Vec<u8> {
        let tags: Vec<(u16, u16)> = vlans.iter().map(|&tpid| (tpid, 100)).collect();
        eth_tagged(ethertype, &tags)
    }

    /// Ethernet header with `(TPID, TCI)` tags, outermost first.
    fn eth_tagged(ethertype: u16, tags: &[(u16, u16)]) -> Vec<u8> {
        let mut f = std::vec![0x01, 0x00, 0x5e, 0, 0, 1, 2, 0, 0, 0, 0, 1];
        for (tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn ipv4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, payload: usize) -> Vec<u8> {
        let mut f = eth(ETH_P_IPV4, &[]);
        let total = (20 + payload) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 1, proto, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.resize(f.len() + payload, 0);
        f
    }

    fn policy(mode: Mode, listed: &[[u8; 4]]) -> Table {
        let mut t = Table::default();
        let g = ipv4_mapped(G4);
        t.groups.insert(GroupKey::new(IF, g), GroupState::new(mode));
        for s in listed {
            t.sources
                .insert(SourceKey::new(IF, g, ipv4_mapped(*s)), mode);
        }
        t
    }

    #[test]
    fn exclude_and_include_rules() {
        let f = ipv4_frame(S4, G4, IPPROTO_UDP, 8);
        let g = ipv4_frame(OTHER4, G4, IPPROTO_UDP, 8);
        let ex = policy(Mode::Exclude, &[S4]);
        assert_eq!(verdict(&f, IF, &ex), (Verdict::Drop, Reason::Excluded));
        assert_eq!(verdict(&g, IF, &ex), (Verdict::Pass, Reason::NotExcluded));
        let inc = policy(Mode::Include, &[S4]);
        assert_eq!(verdict(&f, IF, &inc), (Verdict::Pass, Reason::Included));
        assert_eq!(verdict(&g, IF, &inc), (Verdict::Drop, Reason::NotIncluded));
        // Another interface is unmanaged.
        assert_eq!(verdict(&f, IF + 1, &ex), (Verdict::Pass, Reason::Unmanaged));
    }

    #[test]
    fn a_pair_entry_judges_by_its_own_mode() {
        // The instant of a mode switch: the group is already INCLUDE, one pair still carries
        // the EXCLUDE listing (about to be deleted), another the INCLUDE one; a pair entry
        // decides even where no group entry exists (yet).
        let f = ipv4_frame(S4, G4, IPPROTO_UDP, 8);
        let h = ipv4_frame(OTHER4, G4, IPPROTO_UDP, 8);
        let mut t = Table::default();
        let g = ipv4_mapped(G4);
        t.groups
            .insert(GroupKey::new(IF, g), GroupState::new(Mode::Include));
        t.sources
            .insert(SourceKey::new(IF, g, ipv4_mapped(S4)), Mode::Exclude);
        assert_eq!(verdict(&f, IF, &t).1, Reason::Excluded);
        assert_eq!(verdict(&h, IF, &t).1, Reason::NotIncluded);
        t.sources
            .insert(SourceKey::new(IF, g, ipv4_mapped(OTHER4)), Mode::Include);
        assert_eq!(verdict(&h, IF, &t).1, Reason::Included);
        t.groups.clear();
        assert_eq!(verdict(&f, IF, &t).1, Reason::Excluded);
        assert_eq!(verdict(&h, IF, &t).1, Reason::Included);
    }

    #[test]
    fn control_and_unicast_pass() {
        let ex = policy(Mode::Exclude, &[S4]);
        let igmp = ipv4_frame(S4, G4, IPPROTO_IGMP, 8);
        assert_eq!(verdict(&igmp, IF, &ex).1, Reason::Control);
        let pim = ipv4_frame(S4, G4, IPPROTO_PIM, 8);
        assert_eq!(verdict(&pim, IF, &ex).1, Reason::Control);
        let unicast = ipv4_frame(S4, [10, 0, 0, 9], IPPROTO_UDP, 8);
        assert_eq!(verdict(&unicast, IF, &ex).1, Reason::NotMulticast);
    }

    #[test]
    fn vlan_tags() {
        let ex = policy(Mode::Exclude, &[S4]);
        let plain = ipv4_frame(S4, G4, IPPROTO_UDP, 8);
        for (tags, expected) in [
            (std::vec![ETH_P_8021Q], Reason::Excluded),
            (std::vec![ETH_P_8021AD, ETH_P_8021Q], Reason::Excluded),
            (
                std::vec![ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q],
                Reason::TooManyVlanTags,
            ),
        ] {
            let mut f = eth(ETH_P_IPV4, &tags);
            f.extend_from_slice(&plain[14..]);
            assert_eq!(verdict(&f, IF, &ex).1, expected, "{tags:x?}");
        }
    }

    /// A VLAN mapped to a sub-interface is judged by the sub-interface's entries; everything
    /// else (untagged, unmapped VLAN id, 802.1ad outer tag, the VLAN only as inner tag) by the
    /// ingress interface's.
    #[test]
    fn mapped_vlans_are_judged_on_their_sub_interface() {
        const SUB: u32 = 40;
        // EXCLUDE S4 on the parent; INCLUDE S4 on the sub-interface: the reasons differ.
        let mut t = policy(Mode::Exclude, &[S4]);
        let g = ipv4_mapped(G4);
        t.groups
            .insert(GroupKey::new(SUB, g), GroupState::new(Mode::Include));
        t.sources
            .insert(SourceKey::new(SUB, g, ipv4_mapped(S4)), Mode::Include);
        t.vlans.insert(VlanKey::new(IF, 100), SUB);
        let plain = ipv4_frame(S4, G4, IPPROTO_UDP, 8);
        let other = ipv4_frame(OTHER4, G4, IPPROTO_UDP, 8);
        let tagged = |tags: &[(u16, u16)], datagram: &[u8]| {
            let mut f = eth_tagged(ETH_P_IPV4, tags);
            f.extend_from_slice(&datagram[14..]);
            f
        };
        let q = ETH_P_8021Q;
        let ad = ETH_P_8021AD;
        for (tags, ifindex, datagram, expected) in [
            (&[][..], IF, &plain, Reason::Excluded),
            (&[(q, 100)][..], IF, &plain, Reason::Included),
            (&[(q, 100)][..], IF, &other, Reason::NotIncluded),
            // Priority bits set: still VLAN 100.
            (&[(q, 0xa064)][..], IF, &plain, Reason::Included),
            (&[(q, 101)][..], IF, &plain, Reason::Excluded),
            (&[(ad, 100)][..], IF, &plain, Reason::Excluded),
            (&[(q, 100), (q, 7)][..], IF, &other, Reason::NotIncluded),
            (&[(ad, 7), (q, 100)][..], IF, &plain, Reason::Excluded),
            (&[(q, 7), (q, 100)][..], IF, &plain, Reason::Excluded),
            // The mapping belongs to its parent: the same VLAN elsewhere is not mapped.
            (&[(q, 100)][..], IF + 1, &plain, Reason::Unmanaged),
        ] {
            let f = tagged(tags, datagram);
            assert_eq!(
                verdict(&f, ifindex, &t).1,
                expected,
                "{tags:x?} on {ifindex}"
            );
        }
        let f = tagged(&[(q, 100)], &plain);
        assert_eq!(judging_interface(&f, IF, &t), SUB);
        assert_eq!(judging_interface(&f, IF + 1, &t), IF + 1);
        assert_eq!(judging_interface(&plain, IF, &t), IF);
        // Unjudged frames are unaffected by the mapping.
        let mut igmp = tagged(&[(q, 100)], &ipv4_frame(S4, G4, IPPROTO_IGMP, 8));
        assert_eq!(verdict(&igmp, IF, &t).1, Reason::Control);
        assert_eq!(judging_interface(&igmp, IF, &t), IF);
        igmp.truncate(17);
        assert_eq!(verdict(&igmp, IF, &t).1, Reason::Truncated);
    }

    #[test]
    fn truncated_and_malformed_ipv4() {
        let ex = policy(Mode::Exclude, &[S4]);
        let f = ipv4_frame(S4, G4, IPPROTO_UDP, 8);
        for cut in 0..f.len() {
            let r = verdict(&f[..cut], IF, &ex).1;
            assert!(r == Reason::Truncated, "cut {cut}: {r:?}");
        }
        let mut bad_ihl = f.clone();
        bad_ihl[14] = 0x44;
        assert_eq!(verdict(&bad_ihl, IF, &ex).1, Reason::Malformed);
        let mut bad_version = f.clone();
        bad_version[14] = 0x65;
        assert_eq!(verdict(&bad_version, IF, &ex).1, Reason::Malformed);
        // Options: IHL 6 with 4 option bytes inside the datagram.
        let mut opts = f[..34].to_vec();
        opts[14] = 0x46;
        opts.extend_from_slice(&[1, 1, 1, 0]);
        opts.extend_from_slice(&[0; 4]);
        opts[16..18].copy_from_slice(&28u16.to_be_bytes());
        assert_eq!(verdict(&opts, IF, &ex).1, Reason::Excluded);
        // Ethernet padding after the datagram is fine.
        let mut padded = f.clone();
        padded.resize(f.len() + 20, 0);
        assert_eq!(verdict(&padded, IF, &ex).1, Reason::Excluded);
    }
}
