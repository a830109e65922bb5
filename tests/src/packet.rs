//! Frames for tests: Ethernet with any VLAN tags, IPv4 (options, fragments), IPv6 (extension
//! header chains), upper layers (UDP, ICMPv6, IGMP, PIM, anything), padding, and non-IP
//! frames such as ARP. Every field the rules read can be set to any value, lengths included,
//! so malformed frames are built the same way as valid ones.
//!
//! [`Frame::to_bytes`] encodes; [`Frame::layout`] says where each header starts and ends, so
//! tests can truncate a frame at every header boundary. The arithmetic here (lengths,
//! offsets) is written independently of `msfilter_common::headers`, so a wrong shared helper
//! shows up as a disagreement with the fixtures instead of being copied into them.

use std::fmt::Write as _;

use msfilter_common::headers::{
    ETH_P_IPV4, ETH_P_IPV6, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS,
    IPPROTO_ICMPV6, IPPROTO_IGMP, IPPROTO_PIM, IPPROTO_ROUTING, IPPROTO_UDP,
};

pub type Mac = [u8; 6];

pub const ETH_P_ARP: u16 = 0x0806;
pub const BROADCAST_MAC: Mac = [0xff; 6];
/// Source MAC of every built frame unless changed (locally administered).
pub const SRC_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
/// Destination MAC of unicast frames (locally administered).
pub const UNICAST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];

/// ICMPv6 types used by the tests.
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_NEIGHBOR_SOLICITATION: u8 = 135;
/// IGMPv3 membership report.
pub const IGMPV3_REPORT: u8 = 0x22;

/// One 802.1Q (`0x8100`) or 802.1ad (`0x88a8`) tag, or any other TPID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vlan {
    pub tpid: u16,
    /// Priority, DEI and VLAN id.
    pub tci: u16,
}

/// An Ethernet frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// `None`: derived from the destination address (multicast MAC for a multicast group,
    /// broadcast for 255.255.255.255 and non-IP frames, a unicast MAC otherwise).
    pub dst_mac: Option<Mac>,
    pub src_mac: Mac,
    /// Outermost first.
    pub vlans: Vec<Vlan>,
    pub network: Network,
    /// Bytes after the datagram (Ethernet pads short frames).
    pub padding: usize,
}

/// What the Ethernet frame carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    Ipv4(Ipv4),
    Ipv6(Ipv6),
    /// Any other ethertype, with its bytes as they are.
    Other {
        ethertype: u16,
        bytes: Vec<u8>,
    },
}

/// An IPv4 datagram. Fields left at `None` are computed from the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub version: u8,
    /// Header length in 4-byte words as written; `None`: 5 plus the option words.
    pub ihl: Option<u8>,
    /// Option bytes; padded with zeros (end of options) to a multiple of 4.
    pub options: Vec<u8>,
    /// `None`: header plus upper layer.
    pub total_len: Option<u16>,
    /// In 8-byte units (13 bits).
    pub fragment_offset: u16,
    pub more_fragments: bool,
    pub ttl: u8,
    pub upper: Upper,
}

/// An IPv6 datagram. Each extension header's next-header field names the header after it
/// (the upper layer after the last one) unless overridden.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub version: u8,
    /// `None`: extension headers plus upper layer.
    pub payload_len: Option<u16>,
    pub hop_limit: u8,
    pub exts: Vec<Ext>,
    pub upper: Upper,
}

/// One IPv6 extension header, encoded (its next-header byte is filled in by [`Ipv6`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext {
    /// The header's own protocol number (what the previous next-header field says).
    pub protocol: u8,
    /// `None`: the protocol of what follows.
    pub next_header: Option<u8>,
    /// The whole header, including the next-header and length bytes.
    pub bytes: Vec<u8>,
}

/// The upper layer (or, in a non-first fragment, whatever bytes follow the headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upper {
    /// What the last next-header / protocol field says.
    pub protocol: u8,
    /// Header and payload.
    pub bytes: Vec<u8>,
    /// How many of `bytes` are the header (for [`Layout`]).
    pub header_len: usize,
}

/// Where one header (or the payload, or the padding) lies in the encoded frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub name: &'static str,
    pub start: usize,
    pub end: usize,
}

/// Where every part of an encoded frame lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// In frame order.
    pub spans: Vec<Span>,
    /// Offset of the IP (or other network-layer) header.
    pub l3: usize,
    /// Length of the encoded frame.
    pub len: usize,
}

impl Layout {
    /// Every offset where a part starts or ends, ascending, without duplicates (0 and the
    /// frame length included).
    pub fn boundaries(&self) -> Vec<usize> {
        let mut out: Vec<usize> = self.spans.iter().flat_map(|s| [s.start, s.end]).collect();
        out.push(0);
        out.push(self.len);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The first part called `name`.
    pub fn span(&self, name: &str) -> Option<Span> {
        self.spans.iter().copied().find(|s| s.name == name)
    }

    /// Every part called `name`, in frame order.
    pub fn spans_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Span> + 'a {
        self.spans.iter().copied().filter(move |s| s.name == name)
    }
}

impl Frame {
    pub fn new(network: impl Into<Network>) -> Self {
        Self {
            dst_mac: None,
            src_mac: SRC_MAC,
            vlans: Vec::new(),
            network: network.into(),
            padding: 0,
        }
    }

    /// An ARP request (who has 10.0.0.2? tell 10.0.0.1), broadcast.
    pub fn arp() -> Self {
        let mut bytes = Vec::with_capacity(28);
        bytes.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
        bytes.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
        bytes.extend_from_slice(&[6, 4]);
        bytes.extend_from_slice(&1u16.to_be_bytes()); // request
        bytes.extend_from_slice(&SRC_MAC);
        bytes.extend_from_slice(&[10, 0, 0, 1]);
        bytes.extend_from_slice(&[0; 6]);
        bytes.extend_from_slice(&[10, 0, 0, 2]);
        Self::new(Network::Other {
            ethertype: ETH_P_ARP,
            bytes,
        })
    }

    /// Add a VLAN tag inside the ones already there.
    #[must_use]
    pub fn vlan(mut self, tpid: u16, vid: u16) -> Self {
        self.vlans.push(Vlan {
            tpid,
            tci: vid & 0x0fff,
        });
        self
    }

    /// Add a VLAN tag with a whole TCI (priority and DEI bits too) inside the ones already
    /// there.
    #[must_use]
    pub fn vlan_tci(mut self, tpid: u16, tci: u16) -> Self {
        self.vlans.push(Vlan { tpid, tci });
        self
    }

    #[must_use]
    pub const fn padding(mut self, bytes: usize) -> Self {
        self.padding = bytes;
        self
    }

    #[must_use]
    pub const fn dst_mac(mut self, mac: Mac) -> Self {
        self.dst_mac = Some(mac);
        self
    }

    /// The IPv4 datagram; panics if the frame carries something else.
    pub fn ipv4_mut(&mut self) -> &mut Ipv4 {
        match &mut self.network {
            Network::Ipv4(ip) => ip,
            other => panic!("not an IPv4 frame: {other:?}"),
        }
    }

    /// The IPv6 datagram; panics if the frame carries something else.
    pub fn ipv6_mut(&mut self) -> &mut Ipv6 {
        match &mut self.network {
            Network::Ipv6(ip) => ip,
            other => panic!("not an IPv6 frame: {other:?}"),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode().0
    }

    pub fn layout(&self) -> Layout {
        self.encode().1
    }

    /// The frame cut at `at`, with the IP length field (IPv4 total length, IPv6 payload
    /// length) rewritten so that the datagram ends exactly there: a datagram that is
    /// complete as far as the frame goes, but whose headers may not be. `at` must lie past
    /// the fixed IP header.
    pub fn ending_at(&self, at: usize) -> Vec<u8> {
        let (mut bytes, layout) = self.encode();
        bytes.truncate(at);
        let l3 = layout.l3;
        let length_field = |len: usize| -> [u8; 2] {
            u16::try_from(len)
                .expect("datagram longer than 64 KiB")
                .to_be_bytes()
        };
        match &self.network {
            Network::Ipv4(_) => {
                assert!(at >= l3 + 20, "cut at {at} is inside the IPv4 header");
                bytes[l3 + 2..l3 + 4].copy_from_slice(&length_field(at - l3));
                let header_len = usize::from(bytes[l3] & 0x0f) * 4;
                if (20..=at - l3).contains(&header_len) {
                    set_ipv4_checksum(&mut bytes[l3..l3 + header_len]);
                }
            }
            Network::Ipv6(_) => {
                assert!(at >= l3 + 40, "cut at {at} is inside the IPv6 header");
                bytes[l3 + 4..l3 + 6].copy_from_slice(&length_field(at - l3 - 40));
            }
            Network::Other { .. } => panic!("ending_at needs an IP frame"),
        }
        bytes
    }

    fn encode(&self) -> (Vec<u8>, Layout) {
        let mut out = Vec::with_capacity(128);
        let mut spans = Vec::new();
        out.extend_from_slice(
            &self
                .dst_mac
                .unwrap_or_else(|| self.network.default_dst_mac()),
        );
        out.extend_from_slice(&self.src_mac);
        let ethertype = self.network.ethertype();
        // Each type field names what follows it: the first tag's TPID, ..., the ethertype.
        let mut types = self.vlans.iter().map(|v| v.tpid).chain([ethertype]);
        out.extend_from_slice(&types.next().unwrap_or(ethertype).to_be_bytes());
        push_span(&mut spans, "ethernet", 0, out.len());
        for (vlan, next) in self.vlans.iter().zip(types) {
            let start = out.len();
            out.extend_from_slice(&vlan.tci.to_be_bytes());
            out.extend_from_slice(&next.to_be_bytes());
            push_span(&mut spans, "vlan", start, out.len());
        }
        let l3 = out.len();
        match &self.network {
            Network::Ipv4(ip) => ip.encode(&mut out, &mut spans),
            Network::Ipv6(ip) => ip.encode(&mut out, &mut spans),
            Network::Other { bytes, .. } => {
                out.extend_from_slice(bytes);
                push_span(&mut spans, "payload", l3, out.len());
            }
        }
        let start = out.len();
        out.resize(start + self.padding, 0);
        push_span(&mut spans, "padding", start, out.len());
        let len = out.len();
        (out, Layout { spans, l3, len })
    }
}

fn push_span(spans: &mut Vec<Span>, name: &'static str, start: usize, end: usize) {
    if end > start {
        spans.push(Span { name, start, end });
    }
}

impl Network {
    const fn ethertype(&self) -> u16 {
        match self {
            Self::Ipv4(_) => ETH_P_IPV4,
            Self::Ipv6(_) => ETH_P_IPV6,
            Self::Other { ethertype, .. } => *ethertype,
        }
    }

    fn default_dst_mac(&self) -> Mac {
        match self {
            Self::Ipv4(ip) if ip.dst == [255; 4] => BROADCAST_MAC,
            // RFC 1112: 01:00:5e and the group's low 23 bits.
            Self::Ipv4(ip) if ip.dst[0] & 0xf0 == 0xe0 => {
                [0x01, 0x00, 0x5e, ip.dst[1] & 0x7f, ip.dst[2], ip.dst[3]]
            }
            // RFC 2464: 33:33 and the group's low 32 bits.
            Self::Ipv6(ip) if ip.dst[0] == 0xff => {
                [0x33, 0x33, ip.dst[12], ip.dst[13], ip.dst[14], ip.dst[15]]
            }
            Self::Ipv4(_) | Self::Ipv6(_) => UNICAST_MAC,
            Self::Other { .. } => BROADCAST_MAC,
        }
    }
}

impl From<Ipv4> for Network {
    fn from(ip: Ipv4) -> Self {
        Self::Ipv4(ip)
    }
}

impl From<Ipv6> for Network {
    fn from(ip: Ipv6) -> Self {
        Self::Ipv6(ip)
    }
}

impl Ipv4 {
    pub const fn new(src: [u8; 4], dst: [u8; 4], upper: Upper) -> Self {
        Self {
            src,
            dst,
            version: 4,
            ihl: None,
            options: Vec::new(),
            total_len: None,
            fragment_offset: 0,
            more_fragments: false,
            ttl: 64,
            upper,
        }
    }

    /// `words` 4-byte words of options (IHL = 5 + words): a router alert, then no-ops.
    #[must_use]
    pub fn option_words(mut self, words: usize) -> Self {
        let mut options = Vec::with_capacity(words * 4);
        if words > 0 {
            options.extend_from_slice(&[0x94, 4, 0, 0]); // router alert (RFC 2113)
        }
        options.resize(words * 4, 1); // NOP
        self.options = options;
        self
    }

    #[must_use]
    pub const fn ihl(mut self, words: u8) -> Self {
        self.ihl = Some(words);
        self
    }

    #[must_use]
    pub const fn total_len(mut self, len: u16) -> Self {
        self.total_len = Some(len);
        self
    }

    #[must_use]
    pub const fn version(mut self, version: u8) -> Self {
        self.version = version;
        self
    }

    /// Fragment offset (in 8-byte units) and the more-fragments flag.
    #[must_use]
    pub const fn fragment(mut self, offset: u16, more: bool) -> Self {
        self.fragment_offset = offset;
        self.more_fragments = more;
        self
    }

    fn encode(&self, out: &mut Vec<u8>, spans: &mut Vec<Span>) {
        let start = out.len();
        let mut options = self.options.clone();
        options.resize(options.len().next_multiple_of(4), 0);
        let header_len = 20 + options.len();
        let ihl = self
            .ihl
            .unwrap_or_else(|| u8::try_from(header_len / 4).expect("too many options"));
        let total_len = self.total_len.unwrap_or_else(|| {
            u16::try_from(header_len + self.upper.bytes.len()).expect("datagram over 64 KiB")
        });
        let flags_offset = (u16::from(self.more_fragments) << 13) | (self.fragment_offset & 0x1fff);
        out.push((self.version << 4) | (ihl & 0x0f));
        out.push(0); // DSCP, ECN
        out.extend_from_slice(&total_len.to_be_bytes());
        out.extend_from_slice(&0x4d53u16.to_be_bytes()); // identification
        out.extend_from_slice(&flags_offset.to_be_bytes());
        out.push(self.ttl);
        out.push(self.upper.protocol);
        out.extend_from_slice(&[0, 0]); // checksum, below
        out.extend_from_slice(&self.src);
        out.extend_from_slice(&self.dst);
        push_span(spans, "ipv4", start, out.len());
        out.extend_from_slice(&options);
        push_span(spans, "ipv4-options", start + 20, out.len());
        set_ipv4_checksum(&mut out[start..]);
        self.upper.encode(out, spans);
    }
}

/// Fill in the checksum of the IPv4 header `header` (exactly the header's bytes).
fn set_ipv4_checksum(header: &mut [u8]) {
    header[10..12].fill(0);
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let sum = u16::try_from(sum).expect("folded to 16 bits");
    header[10..12].copy_from_slice(&(!sum).to_be_bytes());
}

impl Ipv6 {
    pub const fn new(src: [u8; 16], dst: [u8; 16], upper: Upper) -> Self {
        Self {
            src,
            dst,
            version: 6,
            payload_len: None,
            hop_limit: 64,
            exts: Vec::new(),
            upper,
        }
    }

    /// Append an extension header to the chain.
    #[must_use]
    pub fn ext(mut self, ext: Ext) -> Self {
        self.exts.push(ext);
        self
    }

    #[must_use]
    pub const fn payload_len(mut self, len: u16) -> Self {
        self.payload_len = Some(len);
        self
    }

    #[must_use]
    pub const fn version(mut self, version: u8) -> Self {
        self.version = version;
        self
    }

    fn encode(&self, out: &mut Vec<u8>, spans: &mut Vec<Span>) {
        let start = out.len();
        let chain_len: usize = self.exts.iter().map(|e| e.bytes.len()).sum();
        let payload_len = self.payload_len.unwrap_or_else(|| {
            u16::try_from(chain_len + self.upper.bytes.len()).expect("payload over 64 KiB")
        });
        let first = self
            .exts
            .first()
            .map_or(self.upper.protocol, |e| e.protocol);
        out.extend_from_slice(&[self.version << 4, 0, 0, 0]); // version, class, flow label
        out.extend_from_slice(&payload_len.to_be_bytes());
        out.push(first);
        out.push(self.hop_limit);
        out.extend_from_slice(&self.src);
        out.extend_from_slice(&self.dst);
        push_span(spans, "ipv6", start, out.len());
        for (i, ext) in self.exts.iter().enumerate() {
            let following = self
                .exts
                .get(i + 1)
                .map_or(self.upper.protocol, |e| e.protocol);
            let ext_start = out.len();
            out.extend_from_slice(&ext.bytes);
            if let Some(nh) = out.get_mut(ext_start) {
                *nh = ext.next_header.unwrap_or(following);
            }
            push_span(spans, ext.name(), ext_start, out.len());
        }
        self.upper.encode(out, spans);
    }
}

impl Ext {
    /// Hop-by-hop options of `(units + 1) * 8` bytes, padding only.
    pub fn hop_by_hop(units: u8) -> Self {
        Self::with_options(IPPROTO_HOPOPTS, units, &[])
    }

    /// Hop-by-hop options carrying a router alert (as MLD messages do), 8 bytes.
    pub fn hop_by_hop_router_alert() -> Self {
        Self::with_options(IPPROTO_HOPOPTS, 0, &[5, 2, 0, 0])
    }

    /// Destination options of `(units + 1) * 8` bytes, padding only.
    pub fn destination_options(units: u8) -> Self {
        Self::with_options(IPPROTO_DSTOPTS, units, &[])
    }

    /// A routing header (type 0, no segments left) of `(units + 1) * 8` bytes.
    pub fn routing(units: u8) -> Self {
        Self::generic(IPPROTO_ROUTING, units)
    }

    /// Any extension header measured in 8-byte units (routing, mobility, HIP, shim6):
    /// `(units + 1) * 8` bytes of zeros after the two fixed bytes.
    pub fn generic(protocol: u8, units: u8) -> Self {
        let mut bytes = vec![0; (usize::from(units) + 1) * 8];
        bytes[1] = units;
        Self {
            protocol,
            next_header: None,
            bytes,
        }
    }

    /// A fragment header: offset in 8-byte units, more-fragments flag.
    pub fn fragment(offset: u16, more: bool) -> Self {
        let mut bytes = vec![0; 8];
        let field = (offset << 3) | u16::from(more);
        bytes[2..4].copy_from_slice(&field.to_be_bytes());
        bytes[4..8].copy_from_slice(&0x4d53_4654u32.to_be_bytes()); // identification
        Self {
            protocol: IPPROTO_FRAGMENT,
            next_header: None,
            bytes,
        }
    }

    /// An authentication header whose length field is `len`: `(len + 2) * 4` bytes
    /// (RFC 4302), with SPI 0x100 and sequence number 1.
    pub fn ah(len: u8) -> Self {
        let mut bytes = vec![0; (usize::from(len) + 2) * 4];
        bytes[1] = len;
        if bytes.len() >= 12 {
            bytes[4..8].copy_from_slice(&0x100u32.to_be_bytes());
            bytes[8..12].copy_from_slice(&1u32.to_be_bytes());
        }
        Self {
            protocol: IPPROTO_AH,
            next_header: None,
            bytes,
        }
    }

    /// Override the next-header byte (instead of naming what follows).
    #[must_use]
    pub const fn next_header(mut self, next_header: u8) -> Self {
        self.next_header = Some(next_header);
        self
    }

    /// Overwrite the length byte without changing how many bytes the header really has
    /// (a header that claims to be longer or shorter than it is).
    #[must_use]
    pub fn length_field(mut self, value: u8) -> Self {
        self.bytes[1] = value;
        self
    }

    /// Options header (hop-by-hop, destination) with `options` followed by padding.
    fn with_options(protocol: u8, units: u8, options: &[u8]) -> Self {
        let len = (usize::from(units) + 1) * 8;
        let mut bytes = vec![0, units];
        bytes.extend_from_slice(options);
        assert!(bytes.len() <= len, "options too long");
        // PadN options of up to 2 + 255 bytes, or Pad1 for a single byte.
        while bytes.len() < len {
            match len - bytes.len() {
                1 => bytes.push(0),
                n => {
                    let data = (n - 2).min(255);
                    bytes.extend_from_slice(&[1, u8::try_from(data).expect("at most 255")]);
                    bytes.resize(bytes.len() + data, 0);
                }
            }
        }
        Self {
            protocol,
            next_header: None,
            bytes,
        }
    }

    const fn name(&self) -> &'static str {
        match self.protocol {
            IPPROTO_HOPOPTS => "hop-by-hop",
            IPPROTO_ROUTING => "routing",
            IPPROTO_FRAGMENT => "fragment",
            IPPROTO_AH => "ah",
            IPPROTO_DSTOPTS => "destination-options",
            _ => "extension",
        }
    }
}

impl Upper {
    /// UDP from port 5000 to 5001 (checksum 0: not computed).
    pub fn udp(payload: &[u8]) -> Self {
        let len = u16::try_from(8 + payload.len()).expect("UDP over 64 KiB");
        let mut bytes = Vec::with_capacity(8 + payload.len());
        bytes.extend_from_slice(&5000u16.to_be_bytes());
        bytes.extend_from_slice(&5001u16.to_be_bytes());
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(payload);
        Self {
            protocol: IPPROTO_UDP,
            bytes,
            header_len: 8,
        }
    }

    /// ICMPv6 of type `ty`, code 0, checksum 0, then `body`.
    pub fn icmpv6(ty: u8, body: &[u8]) -> Self {
        let mut bytes = vec![ty, 0, 0, 0];
        bytes.extend_from_slice(body);
        Self {
            protocol: IPPROTO_ICMPV6,
            bytes,
            header_len: 4,
        }
    }

    /// An MLDv1 message of type `ty` (130 query, 131 report, 132 done) about `group`, or
    /// the same 24 bytes under any other type.
    pub fn mld(ty: u8, group: [u8; 16]) -> Self {
        let mut body = vec![0; 4]; // maximum response delay, reserved
        body.extend_from_slice(&group);
        Self::icmpv6(ty, &body)
    }

    /// An IGMP message of type `ty` about `group` (8 bytes).
    pub fn igmp(ty: u8, group: [u8; 4]) -> Self {
        let mut bytes = vec![ty, 0, 0, 0];
        bytes.extend_from_slice(&group);
        Self {
            protocol: IPPROTO_IGMP,
            bytes,
            header_len: 8,
        }
    }

    /// A PIM hello (version 2, type 0) with no options.
    pub fn pim() -> Self {
        Self {
            protocol: IPPROTO_PIM,
            bytes: vec![0x20, 0, 0, 0],
            header_len: 4,
        }
    }

    /// Any protocol number with bytes that are all payload (no header of their own).
    pub fn raw(protocol: u8, bytes: &[u8]) -> Self {
        Self {
            protocol,
            bytes: bytes.to_vec(),
            header_len: 0,
        }
    }

    const fn name(&self) -> &'static str {
        match self.protocol {
            IPPROTO_UDP => "udp",
            IPPROTO_ICMPV6 => "icmpv6",
            IPPROTO_IGMP => "igmp",
            IPPROTO_PIM => "pim",
            _ => "upper",
        }
    }

    fn encode(&self, out: &mut Vec<u8>, spans: &mut Vec<Span>) {
        let start = out.len();
        let header_end = start + self.header_len.min(self.bytes.len());
        out.extend_from_slice(&self.bytes);
        push_span(spans, self.name(), start, header_end);
        push_span(spans, "payload", header_end, out.len());
    }
}

/// Bytes as lowercase hex without separators (for failure messages; paste into a test).
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const G4: [u8; 4] = [232, 1, 2, 3];
    const S4: [u8; 4] = [10, 0, 0, 1];

    fn g6() -> [u8; 16] {
        let mut g = [0; 16];
        g[0] = 0xff;
        g[1] = 0x3e;
        g[12..].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
        g
    }

    fn s6() -> [u8; 16] {
        let mut s = [0; 16];
        s[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        s[15] = 1;
        s
    }

    #[test]
    fn ipv4_fields_land_where_the_rules_read_them() {
        let f = Frame::new(Ipv4::new(S4, G4, Upper::udp(&[0xaa; 10])).option_words(2))
            .vlan(0x88a8, 10)
            .vlan(0x8100, 20)
            .padding(3);
        let b = f.to_bytes();
        assert_eq!(&b[..6], &[0x01, 0x00, 0x5e, 1, 2, 3]);
        assert_eq!(&b[6..12], &SRC_MAC);
        assert_eq!(&b[12..14], &[0x88, 0xa8]);
        assert_eq!(&b[14..18], &[0x00, 10, 0x81, 0x00]);
        assert_eq!(&b[18..22], &[0x00, 20, 0x08, 0x00]);
        let l3 = 22;
        assert_eq!(b[l3], 0x47); // version 4, IHL 7
        assert_eq!(u16::from_be_bytes([b[l3 + 2], b[l3 + 3]]), 28 + 18);
        assert_eq!(b[l3 + 9], IPPROTO_UDP);
        assert_eq!(&b[l3 + 12..l3 + 16], &S4);
        assert_eq!(&b[l3 + 16..l3 + 20], &G4);
        assert_eq!(&b[l3 + 20..l3 + 24], &[0x94, 4, 0, 0]);
        assert_eq!(b.len(), l3 + 28 + 18 + 3);
        // The header checksum verifies: the one's complement sum over the header is 0xffff.
        let sum: u32 = b[l3..l3 + 28]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        assert_eq!((sum & 0xffff) + (sum >> 16), 0xffff);

        let layout = f.layout();
        assert_eq!(layout.l3, l3);
        let names: Vec<_> = layout.spans.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "ethernet",
                "vlan",
                "vlan",
                "ipv4",
                "ipv4-options",
                "udp",
                "payload",
                "padding"
            ]
        );
        assert_eq!(
            layout.boundaries(),
            [0, 14, 18, 22, 42, 50, 58, 68, 71],
            "{layout:?}"
        );
    }

    #[test]
    fn ipv4_overrides_and_fragments() {
        let f = Frame::new(
            Ipv4::new(S4, G4, Upper::raw(99, &[0; 8]))
                .ihl(3)
                .total_len(7)
                .version(6)
                .fragment(0x1abc, true),
        );
        let b = f.to_bytes();
        assert_eq!(b[14], 0x63);
        assert_eq!(&b[16..18], &[0, 7]);
        assert_eq!(&b[20..22], &[0x3a, 0xbc]); // MF and offset 0x1abc
        assert_eq!(b[23], 99);
        // Multicast MAC keeps only the low 23 bits of the group.
        let f = Frame::new(Ipv4::new(S4, [239, 129, 2, 3], Upper::udp(&[])));
        assert_eq!(&f.to_bytes()[..6], &[0x01, 0x00, 0x5e, 0x01, 2, 3]);
        let f = Frame::new(Ipv4::new(S4, [255; 4], Upper::udp(&[])));
        assert_eq!(&f.to_bytes()[..6], &BROADCAST_MAC);
        let f = Frame::new(Ipv4::new(S4, [10, 0, 0, 9], Upper::udp(&[])));
        assert_eq!(&f.to_bytes()[..6], &UNICAST_MAC);
    }

    #[test]
    fn ipv6_chain_is_linked_and_measured() {
        let f = Frame::new(
            Ipv6::new(s6(), g6(), Upper::mld(143, g6()))
                .ext(Ext::hop_by_hop_router_alert())
                .ext(Ext::destination_options(1))
                .ext(Ext::routing(0))
                .ext(Ext::fragment(0, true))
                .ext(Ext::ah(4)),
        )
        .vlan(0x8100, 5);
        let b = f.to_bytes();
        assert_eq!(&b[..6], &[0x33, 0x33, 0x12, 0x34, 0x56, 0x78]);
        assert_eq!(&b[16..18], &[0x86, 0xdd]);
        let l3 = 18;
        assert_eq!(b[l3] >> 4, 6);
        let chain = 8 + 16 + 8 + 8 + 24;
        let payload = chain + 4 + 20;
        assert_eq!(
            usize::from(u16::from_be_bytes([b[l3 + 4], b[l3 + 5]])),
            payload
        );
        assert_eq!(b[l3 + 6], IPPROTO_HOPOPTS);
        assert_eq!(&b[l3 + 8..l3 + 24], &s6());
        assert_eq!(&b[l3 + 24..l3 + 40], &g6());
        let mut off = l3 + 40;
        // hop-by-hop: next = dest opts, len 0, router alert option.
        assert_eq!(&b[off..off + 8], &[IPPROTO_DSTOPTS, 0, 5, 2, 0, 0, 1, 0]);
        off += 8;
        assert_eq!(&b[off..off + 2], &[IPPROTO_ROUTING, 1]);
        off += 16;
        assert_eq!(&b[off..off + 2], &[IPPROTO_FRAGMENT, 0]);
        off += 8;
        assert_eq!(&b[off..off + 4], &[IPPROTO_AH, 0, 0x00, 0x01]); // offset 0, M
        off += 8;
        assert_eq!(&b[off..off + 2], &[IPPROTO_ICMPV6, 4]);
        off += 24;
        assert_eq!(b[off], 143);
        assert_eq!(b.len(), l3 + 40 + payload);

        let layout = f.layout();
        let ext_names: Vec<_> = layout
            .spans
            .iter()
            .filter(|s| s.start >= l3 + 40 && s.end <= l3 + 40 + chain)
            .map(|s| (s.name, s.end - s.start))
            .collect();
        assert_eq!(
            ext_names,
            [
                ("hop-by-hop", 8),
                ("destination-options", 16),
                ("routing", 8),
                ("fragment", 8),
                ("ah", 24)
            ]
        );
        assert_eq!(layout.span("icmpv6").unwrap().start, off);
    }

    #[test]
    fn overrides_and_cuts() {
        let f = Frame::new(
            Ipv6::new(s6(), g6(), Upper::udp(&[1, 2, 3]))
                .ext(Ext::fragment(3, false).next_header(IPPROTO_ICMPV6))
                .ext(Ext::destination_options(0).length_field(200))
                .payload_len(1000),
        );
        let b = f.to_bytes();
        assert_eq!(&b[18..20], &1000u16.to_be_bytes());
        assert_eq!(&b[54..58], &[IPPROTO_ICMPV6, 0, 0, 0x18]);
        assert_eq!(&b[62..64], &[IPPROTO_UDP, 200]);
        // A datagram that ends inside the destination options header.
        let cut = f.ending_at(65);
        assert_eq!(cut.len(), 65);
        assert_eq!(&cut[18..20], &11u16.to_be_bytes());
        // IPv4: total length follows the cut, and the checksum is redone.
        let f4 = Frame::new(Ipv4::new(S4, G4, Upper::udp(&[0; 20])));
        let cut = f4.ending_at(14 + 24);
        assert_eq!(&cut[16..18], &24u16.to_be_bytes());
        let mut fixed = cut[14..34].to_vec();
        set_ipv4_checksum(&mut fixed);
        assert_eq!(fixed, cut[14..34]);
    }

    #[test]
    fn option_headers_of_every_size_are_well_formed() {
        for units in 0..=255u8 {
            for ext in [Ext::hop_by_hop(units), Ext::destination_options(units)] {
                assert_eq!(ext.bytes.len(), (usize::from(units) + 1) * 8);
                assert_eq!(ext.bytes[1], units);
                // The options (Pad1, PadN) tile the header exactly.
                let mut off = 2;
                while off < ext.bytes.len() {
                    off += match ext.bytes[off] {
                        0 => 1,
                        _ => 2 + usize::from(ext.bytes[off + 1]),
                    };
                }
                assert_eq!(off, ext.bytes.len(), "{units} units");
            }
        }
        assert_eq!(Ext::hop_by_hop_router_alert().bytes[2..6], [5, 2, 0, 0]);
    }

    #[test]
    fn arp_and_hex() {
        let b = Frame::arp().vlan(0x8100, 7).to_bytes();
        assert_eq!(&b[..6], &BROADCAST_MAC);
        assert_eq!(&b[12..16], &[0x81, 0x00, 0x00, 0x07]);
        assert_eq!(&b[16..18], &ETH_P_ARP.to_be_bytes());
        assert_eq!(b.len(), 14 + 4 + 28);
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
