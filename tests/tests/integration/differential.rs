//! Differential test: generated frames through the XDP program (`BPF_PROG_TEST_RUN`) and the
//! reference model, comparing verdict and reason. Zero mismatches allowed.
//!
//! The frames are a mix of valid multicast datagrams (IPv4 and IPv6, up to two VLAN tags,
//! IPv4 options and fragments, IPv6 extension chains and fragments) and mutations of them
//! (truncations, bogus lengths and versions, too many tags, long or overrunning extension
//! chains, control protocols, unicast and broadcast destinations, random bytes), judged under
//! a series of random policies on two interfaces and a VLAN sub-interface, some groups
//! switched to the other mode (sources listed in both lists relisted in place), with random
//! VLAN mappings (tagged
//! frames carry a mapped VLAN id half the time).
//!
//! The seed comes from `MSFILTER_SEED` (decimal or 0x-hex) or the clock, and is printed at
//! the start and in every failure: `MSFILTER_SEED=<seed> cargo test -p msfilter-testbed --test
//! integration differential::` replays a run exactly. `MSFILTER_FRAMES` changes the number of frames.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use msfilter::{
    datapath::{Datapath, Gate, monotonic_ns},
    policy::GroupFilter,
};
use msfilter_common::{
    Addr, GroupKey, Mode, Reason, Verdict,
    headers::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_AH, IPPROTO_DSTOPTS,
        IPPROTO_ESP, IPPROTO_FRAGMENT, IPPROTO_HIP, IPPROTO_HOPOPTS, IPPROTO_ICMPV6, IPPROTO_IGMP,
        IPPROTO_MH, IPPROTO_NONE, IPPROTO_PIM, IPPROTO_ROUTING, IPPROTO_SHIM6, IPPROTO_UDP,
    },
    maps::ipv4_mapped,
    unjoined::{DROP_IPV4, DROP_IPV6},
    verdict::judging_interface,
};
use msfilter_testbed::{
    model::{
        MapsPolicy, judge_model, load_datapath, policy_summary, try_judge_kernel, two_interfaces,
    },
    packet::{Ext, Frame, Ipv4, Ipv6, Network, Upper, hex},
    rng::Rng,
};

/// Frames per run unless `MSFILTER_FRAMES` says otherwise.
const DEFAULT_FRAMES: usize = 200_000;
/// Random policies per run; the frames are shared out evenly.
const POLICIES: usize = 10;
/// Mismatches described in the failure message (all are counted).
const MAX_REPORTED: usize = 20;
/// Every reason must turn up at least this often per 100,000 frames, so the mix keeps
/// exercising every rule.
const MIN_PER_REASON_PER_100K: usize = 200;
/// `BPF_PROG_TEST_RUN` gives a program without multi-buffer support only the first
/// `PAGE_SIZE - XDP_PACKET_HEADROOM - sizeof(skb_shared_info)` bytes (3520 with 4 KiB
/// pages) and leaves the rest in fragments it cannot see; generated frames stay below.
const MAX_FRAME: usize = 3400;
/// Loopback: managed on no interface, so everything multicast on it is unmanaged.
const LO: u32 = 1;
/// A VLAN sub-interface's index: it has a policy of its own and is reached only through the
/// VLAN map (no device needs to exist for that).
const SUB: u32 = 4000;
/// The VLAN ids the mappings use; tagged frames carry one of them half the time.
const MAPPED_VIDS: [u16; 3] = [100, 200, 300];

/// Groups and sources drawn from small pools, so that listed and unlisted sources both come
/// up often; a few frames use addresses from outside the pools.
struct Pools {
    groups4: Vec<[u8; 4]>,
    sources4: Vec<[u8; 4]>,
    groups6: Vec<[u8; 16]>,
    sources6: Vec<[u8; 16]>,
}

impl Pools {
    fn new() -> Self {
        let v6 = |prefix: &[u8], tail: [u8; 2]| {
            let mut a = [0; 16];
            a[..prefix.len()].copy_from_slice(prefix);
            a[14..].copy_from_slice(&tail);
            a
        };
        let doc = [0x20, 0x01, 0x0d, 0xb8];
        let mut solicited = v6(&[0xff, 0x02], [0, 1]);
        solicited[11] = 1;
        solicited[12] = 0xff;
        Self {
            groups4: vec![
                [232, 1, 1, 1],
                [232, 1, 1, 2],
                [239, 255, 0, 1],
                [224, 0, 0, 251],
            ],
            sources4: vec![[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3], [192, 0, 2, 7]],
            groups6: vec![
                v6(&[0xff, 0x3e], [0x80, 1]),
                v6(&[0xff, 0x3e], [0x80, 2]),
                v6(&[0xff, 0x05], [0, 3]),
                solicited,
            ],
            sources6: vec![
                v6(&doc, [0, 1]),
                v6(&doc, [0, 2]),
                v6(&[0xfe, 0x80], [0, 1]),
                v6(&doc, [0xab, 0xcd]),
            ],
        }
    }

    fn group4(&self, rng: &mut Rng) -> [u8; 4] {
        if rng.chance(0.85) {
            *rng.choose(&self.groups4)
        } else {
            let mut g = rng.array::<4>();
            g[0] = 0xe0 | (g[0] & 0x0f);
            g
        }
    }

    fn source4(&self, rng: &mut Rng) -> [u8; 4] {
        if rng.chance(0.85) {
            *rng.choose(&self.sources4)
        } else {
            rng.array()
        }
    }

    fn group6(&self, rng: &mut Rng) -> [u8; 16] {
        if rng.chance(0.85) {
            *rng.choose(&self.groups6)
        } else {
            let mut g = rng.array::<16>();
            g[0] = 0xff;
            g
        }
    }

    fn source6(&self, rng: &mut Rng) -> [u8; 16] {
        if rng.chance(0.85) {
            *rng.choose(&self.sources6)
        } else {
            rng.array()
        }
    }

    /// Every pool group as a map key address, with its family's sources.
    fn groups(&self) -> Vec<(Addr, Vec<Addr>)> {
        let sources4: Vec<Addr> = self.sources4.iter().map(|s| ipv4_mapped(*s)).collect();
        let v4 = self
            .groups4
            .iter()
            .map(|g| (ipv4_mapped(*g), sources4.clone()));
        let v6 = self.groups6.iter().map(|g| (*g, self.sources6.clone()));
        v4.chain(v6).collect()
    }
}

/// Install a new random policy on `ifindexes`: each pool group managed with probability
/// 2/3 (random mode, random subset of its family's sources, possibly none), then about a
/// third of the managed groups switched to the other mode with another list. Returns how
/// many groups switched.
fn random_policy(rng: &mut Rng, dp: &mut Datapath, pools: &Pools, ifindexes: &[u32]) -> usize {
    let random_filter = |rng: &mut Rng, mode: Mode, sources: &[Addr]| {
        let listed = sources.iter().copied().filter(|_| rng.chance(0.4));
        GroupFilter::new(mode, listed.collect::<Vec<_>>())
    };
    let random_mode = |rng: &mut Rng| {
        if rng.chance(0.5) {
            Mode::Exclude
        } else {
            Mode::Include
        }
    };
    let mut desired = BTreeMap::new();
    for &ifindex in ifindexes {
        for (group, sources) in pools.groups() {
            let filter = if rng.chance(2.0 / 3.0) {
                let mode = random_mode(rng);
                Some(random_filter(rng, mode, &sources))
            } else {
                None
            };
            desired.insert(GroupKey::new(ifindex, group), (filter, sources));
        }
    }
    dp.set_filters(desired.iter().map(|(k, (f, _))| (*k, f.clone())))
        .expect("installing a random policy");
    random_unjoined(rng, dp, ifindexes);
    let mut switched = 0;
    for (key, (filter, sources)) in &desired {
        let Some(filter) = filter else { continue };
        if rng.chance(1.0 / 3.0) {
            let other = match filter.mode {
                Mode::Exclude => Mode::Include,
                Mode::Include => Mode::Exclude,
            };
            switched += dp
                .set_filter(
                    key.ifindex,
                    key.group,
                    Some(random_filter(rng, other, sources)),
                )
                .expect("switching a group's mode")
                .groups_switched;
        }
    }
    switched
}

/// Random drop-unjoined state: each interface drops unjoined groups of no family, IPv4,
/// IPv6 or both; the gate is mostly closed with a running lease, else open (an option in
/// flight) or with its lease run out. Leases are far from now, so model and kernel see the
/// same state.
fn random_unjoined(rng: &mut Rng, dp: &mut Datapath, ifindexes: &[u32]) {
    for &ifindex in ifindexes {
        let bits = [0, DROP_IPV4, DROP_IPV6, DROP_IPV4 | DROP_IPV6][rng.weighted(&[2, 2, 2, 4])];
        dp.set_unjoined(ifindex, bits)
            .expect("writing drop-unjoined bits");
    }
    let now = monotonic_ns();
    let settled = rng.below(1000);
    let gate = match rng.weighted(&[7, 2, 1]) {
        0 => Gate {
            begun: settled,
            settled,
            lease_until_ns: now + 3_600_000_000_000,
        },
        1 => Gate {
            begun: settled + 1,
            settled,
            lease_until_ns: now + 3_600_000_000_000,
        },
        _ => Gate {
            begun: settled,
            settled,
            lease_until_ns: now.saturating_sub(3_600_000_000_000).max(1),
        },
    };
    dp.write_gate(gate).expect("writing the gate");
}

/// Map a random subset of VLANs to sub-interfaces: on `d0` and `d1` VLAN 100 to [`SUB`],
/// 200 to the other veth end (an interface with a policy of its own), 300 to loopback
/// (nothing managed there). Earlier mappings are removed first.
fn random_vlans(rng: &mut Rng, dp: &mut Datapath, d0: u32, d1: u32) {
    let old: Vec<_> = dp.vlans().keys().copied().collect();
    for key in old {
        dp.remove_vlan(key.ifindex, key.vid)
            .expect("removing a VLAN mapping");
    }
    for (parent, other) in [(d0, d1), (d1, d0)] {
        for (vid, sub) in MAPPED_VIDS.into_iter().zip([SUB, other, LO]) {
            if rng.chance(0.7) {
                dp.set_vlan(parent, vid, sub).expect("mapping a VLAN");
            }
        }
    }
}

/// What kind of frame the generator made (for the mix statistics and failure messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Valid,
    CutAtBoundary,
    CutAnywhere,
    DatagramEndsEarly,
    BogusIhl,
    BogusVersion,
    BogusTotalLength,
    BogusPayloadLength,
    ManyVlanTags,
    LongExtensionChain,
    ChainPastTheEnd,
    Control,
    UnicastOrBroadcast,
    NotIp,
    RandomBytes,
    FlippedBytes,
}

/// Relative frequency of each kind.
const MIX: [(Kind, u32); 16] = [
    (Kind::Valid, 30),
    (Kind::CutAtBoundary, 8),
    (Kind::CutAnywhere, 4),
    (Kind::DatagramEndsEarly, 6),
    (Kind::BogusIhl, 3),
    (Kind::BogusVersion, 3),
    (Kind::BogusTotalLength, 3),
    (Kind::BogusPayloadLength, 3),
    (Kind::ManyVlanTags, 3),
    (Kind::LongExtensionChain, 6),
    (Kind::ChainPastTheEnd, 5),
    (Kind::Control, 5),
    (Kind::UnicastOrBroadcast, 4),
    (Kind::NotIp, 3),
    (Kind::RandomBytes, 5),
    (Kind::FlippedBytes, 5),
];

/// Generates frames from one PRNG stream.
struct Generator<'a> {
    rng: &'a mut Rng,
    pools: &'a Pools,
}

impl Generator<'_> {
    fn frame(&mut self) -> (Kind, Vec<u8>) {
        let weights: Vec<u32> = MIX.iter().map(|(_, w)| *w).collect();
        let kind = MIX[self.rng.weighted(&weights)].0;
        // Large headers and payloads may add up to more than a test run can take: try again.
        loop {
            let bytes = self.make(kind);
            assert!(
                bytes.len() >= 14,
                "{kind:?} made a {}-byte frame",
                bytes.len()
            );
            if bytes.len() <= MAX_FRAME {
                return (kind, bytes);
            }
        }
    }

    fn make(&mut self, kind: Kind) -> Vec<u8> {
        match kind {
            Kind::Valid => self.datagram().to_bytes(),
            Kind::CutAtBoundary => {
                let frame = self.datagram();
                let bytes = frame.to_bytes();
                let at = *self.rng.choose(&frame.layout().boundaries());
                let at = match self.rng.range(0..3u8) {
                    0 => at.saturating_sub(1),
                    1 => at,
                    _ => at + 1,
                };
                bytes[..at.clamp(14, bytes.len())].to_vec()
            }
            Kind::CutAnywhere => {
                let bytes = self.datagram().to_bytes();
                let at = self.rng.range_inclusive(14..=bytes.len());
                bytes[..at].to_vec()
            }
            Kind::DatagramEndsEarly => {
                // The IP length field agrees with the frame, which ends inside some header.
                let frame = self.datagram();
                let layout = frame.layout();
                let fixed = match frame.network {
                    Network::Ipv4(_) => 20,
                    _ => 40,
                };
                let at = self
                    .rng
                    .range_inclusive(layout.l3 + fixed..=layout.len - frame.padding);
                frame.ending_at(at)
            }
            Kind::BogusIhl => {
                let mut frame = self.frame_v4();
                frame.ipv4_mut().ihl = Some(self.rng.range(0..16));
                self.maybe_pad(frame).to_bytes()
            }
            Kind::BogusVersion => {
                let mut frame = self.datagram();
                let version = self.rng.range(0..16);
                match &mut frame.network {
                    Network::Ipv4(ip) => ip.version = version,
                    Network::Ipv6(ip) => ip.version = version,
                    Network::Other { .. } => unreachable!("datagram() makes IP frames"),
                }
                frame.to_bytes()
            }
            Kind::BogusTotalLength => {
                let mut frame = self.frame_v4();
                let real = frame.layout().len - frame.layout().l3;
                frame.ipv4_mut().total_len = Some(self.bogus_length(real));
                self.maybe_pad(frame).to_bytes()
            }
            Kind::BogusPayloadLength => {
                let mut frame = self.frame_v6();
                let real = frame.layout().len - frame.layout().l3 - 40;
                frame.ipv6_mut().payload_len = Some(self.bogus_length(real));
                self.maybe_pad(frame).to_bytes()
            }
            Kind::ManyVlanTags => {
                let mut frame = if self.rng.chance(0.8) {
                    self.datagram()
                } else {
                    Frame::arp()
                };
                while frame.vlans.len() < 3 || self.rng.chance(0.3) {
                    frame = frame.vlan(self.tpid(), self.rng.range(0..4096));
                }
                frame.to_bytes()
            }
            Kind::LongExtensionChain => {
                let mut frame = self.frame_v6();
                let n = self.rng.range_inclusive(6..=10usize);
                let ip = frame.ipv6_mut();
                ip.exts.clear();
                for _ in 0..n {
                    let ext = self.ext();
                    ip.exts.push(ext);
                }
                frame.to_bytes()
            }
            Kind::ChainPastTheEnd => {
                let mut frame = self.frame_v6();
                if frame.ipv6_mut().exts.is_empty() {
                    let ext = self.ext();
                    frame.ipv6_mut().exts.push(ext);
                }
                let exts = frame.ipv6_mut().exts.len();
                let which = self.rng.range(0..exts);
                let value = if self.rng.chance(0.5) {
                    self.rng.u8()
                } else {
                    self.rng.range_inclusive(1..=8)
                };
                let ext = &mut frame.ipv6_mut().exts[which];
                ext.bytes[1] = ext.bytes[1].wrapping_add(value);
                self.maybe_pad(frame).to_bytes()
            }
            Kind::Control => self.control().to_bytes(),
            Kind::UnicastOrBroadcast => {
                let mut frame = self.datagram();
                let broadcast = self.rng.chance(0.3);
                match &mut frame.network {
                    Network::Ipv4(ip) if broadcast => ip.dst = [255; 4],
                    Network::Ipv4(ip) => {
                        ip.dst = self.rng.array();
                        ip.dst[0] = (ip.dst[0] & 0x7f) | 0x01;
                    }
                    Network::Ipv6(ip) => {
                        ip.dst = self.rng.array();
                        if ip.dst[0] == 0xff {
                            ip.dst[0] = 0xfe;
                        }
                    }
                    Network::Other { .. } => unreachable!("datagram() makes IP frames"),
                }
                frame.to_bytes()
            }
            Kind::NotIp => {
                let frame = if self.rng.chance(0.5) {
                    Frame::arp()
                } else {
                    let mut ethertype = self.rng.u16();
                    if matches!(
                        ethertype,
                        ETH_P_IPV4 | ETH_P_IPV6 | ETH_P_8021Q | ETH_P_8021AD
                    ) {
                        ethertype = 0x88b5; // local experimental
                    }
                    let len = self.rng.range(0..100);
                    Frame::new(Network::Other {
                        ethertype,
                        bytes: self.rng.bytes(len),
                    })
                };
                self.maybe_tag(frame).to_bytes()
            }
            Kind::RandomBytes => self.random_bytes(),
            Kind::FlippedBytes => {
                let mut bytes = self.datagram().to_bytes();
                for _ in 0..self.rng.range_inclusive(1..=3u8) {
                    let at = self.rng.range(12..bytes.len().min(120));
                    bytes[at] ^= 1u8 << self.rng.range(0..8u8);
                }
                bytes
            }
        }
    }

    /// A valid multicast data datagram of either family.
    fn datagram(&mut self) -> Frame {
        if self.rng.chance(0.5) {
            self.frame_v4()
        } else {
            self.frame_v6()
        }
    }

    fn frame_v4(&mut self) -> Frame {
        let (src, dst) = (self.pools.source4(self.rng), self.pools.group4(self.rng));
        let upper = match self.rng.weighted(&[85, 15]) {
            0 => Upper::udp(&self.payload()),
            _ => {
                let mut protocol = self.rng.u8();
                if matches!(protocol, IPPROTO_IGMP | IPPROTO_PIM) {
                    protocol = IPPROTO_UDP;
                }
                Upper::raw(protocol, &self.payload())
            }
        };
        let mut ip = Ipv4::new(src, dst, upper);
        if self.rng.chance(0.25) {
            ip = ip.option_words(self.rng.range_inclusive(1..=10));
        }
        ip = match self.rng.weighted(&[70, 10, 10, 10]) {
            0 => ip,
            1 => ip.fragment(0, true),
            2 => ip.fragment(self.rng.range(1..0x2000), true),
            _ => ip.fragment(self.rng.range(1..0x2000), false),
        };
        self.finish(Frame::new(ip))
    }

    fn frame_v6(&mut self) -> Frame {
        let (src, dst) = (self.pools.source6(self.rng), self.pools.group6(self.rng));
        let upper = match self.rng.weighted(&[70, 15, 15]) {
            0 => Upper::udp(&self.payload()),
            1 => {
                let ty = *self.rng.choose(&[128, 129, 133, 134, 135, 136, 1, 255]);
                Upper::icmpv6(ty, &self.payload())
            }
            _ => {
                let protocol = *self.rng.choose(&[IPPROTO_ESP, IPPROTO_NONE, 6, 132, 255]);
                Upper::raw(protocol, &self.payload())
            }
        };
        let mut ip = Ipv6::new(src, dst, upper);
        let n = match self.rng.weighted(&[40, 20, 15, 25]) {
            0 => 0,
            1 => 1,
            2 => 2,
            _ => self.rng.range_inclusive(3..=5usize),
        };
        for _ in 0..n {
            ip.exts.push(self.ext());
        }
        self.finish(Frame::new(ip))
    }

    /// One extension header of a random kind and size (now and then a large one);
    /// fragments are first or not.
    fn ext(&mut self) -> Ext {
        let units = if self.rng.chance(0.9) {
            self.rng.range(0..4)
        } else {
            self.rng.range_inclusive(4..=255)
        };
        match self.rng.range(0..7u8) {
            0 => Ext::hop_by_hop(units),
            1 => Ext::hop_by_hop_router_alert(),
            2 => Ext::destination_options(units),
            3 => Ext::routing(units),
            4 => {
                let offset = if self.rng.chance(0.5) {
                    0
                } else {
                    self.rng.range(1..0x2000)
                };
                Ext::fragment(offset, self.rng.chance(0.5))
            }
            5 => Ext::ah(self.rng.range_inclusive(1..=6)),
            _ => Ext::generic(
                *self.rng.choose(&[IPPROTO_MH, IPPROTO_HIP, IPPROTO_SHIM6]),
                units,
            ),
        }
    }

    /// IGMP or PIM over IPv4; MLD or PIM over IPv6, often behind extension headers.
    fn control(&mut self) -> Frame {
        if self.rng.chance(0.4) {
            let mut frame = self.frame_v4();
            let group = frame.ipv4_mut().dst;
            frame.ipv4_mut().upper = if self.rng.chance(0.6) {
                Upper::igmp(*self.rng.choose(&[0x11, 0x12, 0x16, 0x17, 0x22]), group)
            } else {
                Upper::pim()
            };
            return frame;
        }
        let mut frame = self.frame_v6();
        let group = frame.ipv6_mut().dst;
        let ip = frame.ipv6_mut();
        ip.upper = if self.rng.chance(0.75) {
            Upper::mld(*self.rng.choose(&[130, 131, 132, 143]), group)
        } else {
            Upper::pim()
        };
        if self.rng.chance(0.5) {
            ip.exts.insert(0, Ext::hop_by_hop_router_alert());
            ip.exts.truncate(6);
        }
        frame
    }

    /// Random bytes after an Ethernet header that mostly leads somewhere: IP ethertypes,
    /// often with the right version and a multicast destination.
    fn random_bytes(&mut self) -> Vec<u8> {
        let len = self.rng.range(14..300);
        let mut bytes = self.rng.bytes(len);
        let mut l3 = 14;
        let ethertype = match self.rng.weighted(&[40, 40, 10, 10]) {
            0 => ETH_P_IPV4,
            1 => ETH_P_IPV6,
            2 => {
                // One tag, then IP.
                if bytes.len() >= 18 {
                    bytes[16..18].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
                    l3 = 18;
                }
                ETH_P_8021Q
            }
            _ => self.rng.u16(),
        };
        bytes[12..14].copy_from_slice(&ethertype.to_be_bytes());
        let ip = u16::from_be_bytes([bytes[l3 - 2], bytes[l3 - 1]]);
        if self.rng.chance(0.7) {
            if ip == ETH_P_IPV4 && bytes.len() >= l3 + 20 {
                bytes[l3] = 0x40 | (bytes[l3] & 0x0f);
                bytes[l3 + 16] = 0xe0 | (bytes[l3 + 16] & 0x0f);
            } else if ip == ETH_P_IPV6 && bytes.len() >= l3 + 40 {
                bytes[l3] = 0x60 | (bytes[l3] & 0x0f);
                bytes[l3 + 24] = 0xff;
                if self.rng.chance(0.5) {
                    // A payload length that fits, so the walk gets somewhere.
                    let fits = u16::try_from(bytes.len() - l3 - 40).expect("short frame");
                    bytes[l3 + 4..l3 + 6].copy_from_slice(&fits.to_be_bytes());
                    bytes[l3 + 6] = *self.rng.choose(&[
                        IPPROTO_HOPOPTS,
                        IPPROTO_ROUTING,
                        IPPROTO_FRAGMENT,
                        IPPROTO_AH,
                        IPPROTO_DSTOPTS,
                        IPPROTO_ICMPV6,
                        IPPROTO_PIM,
                        IPPROTO_UDP,
                    ]);
                }
            }
        }
        bytes
    }

    /// A length field near the real one, or anywhere.
    fn bogus_length(&mut self, real: usize) -> u16 {
        let real = u16::try_from(real).expect("short frame");
        match self.rng.range(0..3u8) {
            0 => real.wrapping_add(self.rng.range_inclusive(1..=16)),
            1 => real.saturating_sub(self.rng.range_inclusive(1..=24)),
            _ => self.rng.u16(),
        }
    }

    /// Mostly short; now and then up to a full Ethernet payload.
    fn payload(&mut self) -> Vec<u8> {
        let len = if self.rng.chance(0.9) {
            self.rng.range(0..64)
        } else {
            self.rng.range(64..1400)
        };
        self.rng.bytes(len)
    }

    fn tpid(&mut self) -> u16 {
        *self.rng.choose(&[ETH_P_8021Q, ETH_P_8021AD])
    }

    fn maybe_tag(&mut self, mut frame: Frame) -> Frame {
        for _ in 0..self.rng.weighted(&[60, 25, 15]) {
            let vid = if self.rng.chance(0.5) {
                *self.rng.choose(&MAPPED_VIDS)
            } else {
                self.rng.range(0..4096)
            };
            frame = frame.vlan_tci(self.tpid(), vid | self.rng.range(0..16) << 12);
        }
        frame
    }

    fn maybe_pad(&mut self, mut frame: Frame) -> Frame {
        if self.rng.chance(0.5) {
            frame.padding += self.rng.range(1..48);
        }
        frame
    }

    /// 0–2 VLAN tags, and sometimes Ethernet padding.
    fn finish(&mut self, frame: Frame) -> Frame {
        let frame = self.maybe_tag(frame);
        if self.rng.chance(0.2) {
            frame.padding(self.rng.range(1..40))
        } else {
            frame
        }
    }
}

/// One frame on which the kernel and the model disagree.
struct Mismatch {
    round: usize,
    index: usize,
    kind: Kind,
    ifindex: u32,
    frame: Vec<u8>,
    kernel: Result<(Verdict, Reason), String>,
    model: (Verdict, Reason),
}

/// What a run saw.
#[derive(Default)]
struct Tally {
    by_kind: BTreeMap<Kind, usize>,
    by_reason: BTreeMap<Reason, usize>,
    /// The first [`MAX_REPORTED`] mismatches.
    mismatches: Vec<Mismatch>,
    mismatch_count: usize,
    /// Each round's policy, as `policy_summary` prints it.
    policies: Vec<String>,
    /// Groups switched to the other mode, summed over rounds.
    switched_groups: usize,
    /// VLAN mappings in force at the start of a round, summed over rounds.
    mapped_vlans: usize,
    /// Frames the model judged on a VLAN sub-interface's entries.
    judged_on_vlans: usize,
}

impl Tally {
    fn failure_report(&self, seed: u64, frames: usize, interfaces: &str) -> String {
        let mut report = format!(
            "{} of {frames} frames judged differently by the kernel and the model; replay \
             with MSFILTER_SEED={seed} MSFILTER_FRAMES={frames} ({interfaces})\n",
            self.mismatch_count
        );
        for m in &self.mismatches {
            let _ = write!(
                report,
                "\n--- seed {seed}, round {} frame {} ({:?}), ifindex {}: kernel {:?}, model \
                 {:?}\nframe ({} bytes): {}\npolicy:\n{}",
                m.round,
                m.index,
                m.kind,
                m.ifindex,
                m.kernel,
                m.model,
                m.frame.len(),
                hex(&m.frame),
                self.policies[m.round]
            );
        }
        if self.mismatch_count > self.mismatches.len() {
            let more = self.mismatch_count - self.mismatches.len();
            let _ = write!(report, "\n(and {more} more)");
        }
        report
    }
}

#[test]
fn kernel_and_model_agree_on_generated_frames() {
    let seed = Rng::seed_from_env_or_clock("MSFILTER_SEED");
    let frames: usize = std::env::var("MSFILTER_FRAMES")
        .map(|v| v.parse().expect("MSFILTER_FRAMES must be a number"))
        .unwrap_or(DEFAULT_FRAMES);
    eprintln!("differential: MSFILTER_SEED={seed} ({frames} frames)");
    let started = Instant::now();

    let mut rng = Rng::new(seed);
    let pools = Pools::new();
    let (ns, d0, d1) = two_interfaces("dif");
    let interfaces = format!("d0 = {d0}, d1 = {d1}, lo = {LO}");
    let mut dp = load_datapath();
    let mut tally = Tally::default();

    ns.run(|| {
        for round in 0..POLICIES {
            tally.switched_groups += random_policy(&mut rng, &mut dp, &pools, &[d0, d1, SUB]);
            random_vlans(&mut rng, &mut dp, d0, d1);
            tally.policies.push(format!(
                "{}vlans: {:?}\n",
                policy_summary(dp.installed()),
                dp.vlans()
            ));
            tally.mapped_vlans += dp.vlans().len();
            let share = frames / POLICIES + usize::from(round < frames % POLICIES);
            for index in 0..share {
                let mut generator = Generator {
                    rng: &mut rng,
                    pools: &pools,
                };
                let (kind, frame) = generator.frame();
                let ifindex = [d0, d1, LO][rng.weighted(&[45, 45, 10])];
                let model = judge_model(&dp, &frame, ifindex);
                let kernel = try_judge_kernel(&dp, &frame, ifindex);
                if judging_interface(&frame, ifindex, &MapsPolicy(dp.installed(), dp.vlans()))
                    != ifindex
                {
                    tally.judged_on_vlans += 1;
                }
                *tally.by_kind.entry(kind).or_default() += 1;
                *tally.by_reason.entry(model.1).or_default() += 1;
                if kernel.as_ref() != Ok(&model) {
                    tally.mismatch_count += 1;
                    if tally.mismatches.len() < MAX_REPORTED {
                        tally.mismatches.push(Mismatch {
                            round,
                            index,
                            kind,
                            ifindex,
                            frame,
                            kernel,
                            model,
                        });
                    }
                }
            }
        }
    });
    eprintln!(
        "differential: {frames} frames in {:.1} s, {} mismatches (seed {seed})",
        started.elapsed().as_secs_f64(),
        tally.mismatch_count
    );
    eprintln!("  mix: {:?}", tally.by_kind);
    eprintln!("  model reasons: {:?}", tally.by_reason);

    assert!(
        tally.mismatch_count == 0,
        "{}",
        tally.failure_report(seed, frames, &interfaces)
    );
    // The mix must keep reaching every rule, and the policies must include groups that
    // switched mode, or a zero-mismatch run proves little.
    assert!(
        tally.switched_groups > 0,
        "no group switched mode; seed {seed}"
    );
    // And tagged frames must reach mapped VLANs often.
    eprintln!(
        "  VLAN mappings per round {:.1}, frames judged on a sub-interface: {}",
        tally.mapped_vlans as f64 / POLICIES as f64,
        tally.judged_on_vlans
    );
    assert!(
        tally.judged_on_vlans >= frames / 50,
        "only {} of {frames} frames judged on a VLAN sub-interface; seed {seed}",
        tally.judged_on_vlans
    );
    let minimum = MIN_PER_REASON_PER_100K * frames / 100_000;
    for reason in Reason::ALL {
        let seen = tally.by_reason.get(&reason).copied().unwrap_or(0);
        assert!(
            seen >= minimum,
            "only {seen} frames with reason {reason:?} (want {minimum}); seed {seed}"
        );
    }
}

/// Frames of the trace differential test.
const TRACE_FRAMES: usize = 20_000;

/// With `msfilter trace`'s switch on, the XDP program reports every frame it judges, with the
/// reason the model gives, the frame's length and interface, and for a judged datagram its
/// group and source as the maps know them. A full ring buffer counts what it loses.
#[test]
fn trace_reports_what_the_program_decided() {
    use msfilter::datapath::TraceSelection;

    let seed = Rng::seed_from_env_or_clock("MSFILTER_SEED");
    eprintln!("trace differential: MSFILTER_SEED={seed}");
    let mut rng = Rng::new(seed);
    let pools = Pools::new();
    let (ns, d0, d1) = two_interfaces("dtr");
    let mut dp = load_datapath();
    let every = TraceSelection {
        ifindex: 0,
        group: None,
        sample_one_in: 1,
    };
    let mut by_reason: BTreeMap<Reason, usize> = BTreeMap::new();
    ns.run(|| {
        random_policy(&mut rng, &mut dp, &pools, &[d0, d1, SUB]);
        random_vlans(&mut rng, &mut dp, d0, d1);
        let mut trace = dp.trace(every).unwrap();
        for index in 0..TRACE_FRAMES {
            let (_, frame) = Generator {
                rng: &mut rng,
                pools: &pools,
            }
            .frame();
            let ifindex = [d0, d1, LO][rng.weighted(&[45, 45, 10])];
            let model = judge_model(&dp, &frame, ifindex);
            let kernel = try_judge_kernel(&dp, &frame, ifindex);
            assert_eq!(
                kernel.as_ref(),
                Ok(&model),
                "frame {index}: {}",
                hex(&frame)
            );
            let event = trace
                .next_event()
                .unwrap_or_else(|| panic!("frame {index} was not traced: {}", hex(&frame)));
            let context = || format!("frame {index} ({event:?}): {}", hex(&frame));
            assert_eq!(event.reason(), Some(model.1), "{}", context());
            assert_eq!(event.verdict(), Some(model.0), "{}", context());
            // The interface whose entries judged the frame: a mapped VLAN's sub-interface.
            let judging =
                judging_interface(&frame, ifindex, &MapsPolicy(dp.installed(), dp.vlans()));
            assert_eq!(event.ifindex, judging, "{}", context());
            assert_eq!(event.len as usize, frame.len(), "{}", context());
            assert!(
                trace.next_event().is_none(),
                "two events for one frame: {}",
                context()
            );
            // A datagram the policy judged names its group and source; the reason then
            // follows from the installed entry of that group and source.
            let judged = matches!(
                model.1,
                Reason::Unmanaged
                    | Reason::Unjoined
                    | Reason::NotExcluded
                    | Reason::Included
                    | Reason::Excluded
                    | Reason::NotIncluded
            );
            assert_eq!(event.addressed == 1, judged, "{}", context());
            if judged {
                let installed = dp.installed().get(&GroupKey::new(judging, event.group));
                let listed = installed.map(|g| g.sources.contains(&event.source));
                let expected = match (installed.map(|g| g.state.mode()), listed) {
                    // No entry: unmanaged, or dropped as unjoined (when: the verdict and
                    // differential tests).
                    (None, _) if model.1 == Reason::Unjoined => Reason::Unjoined,
                    (None, _) => Reason::Unmanaged,
                    (Some(Mode::Exclude), Some(true)) => Reason::Excluded,
                    (Some(Mode::Exclude), _) => Reason::NotExcluded,
                    (Some(Mode::Include), Some(true)) => Reason::Included,
                    (Some(Mode::Include), _) => Reason::NotIncluded,
                };
                assert_eq!(expected, model.1, "{}", context());
            } else {
                assert_eq!(
                    (event.group, event.source),
                    ([0; 16], [0; 16]),
                    "{}",
                    context()
                );
            }
            *by_reason.entry(model.1).or_default() += 1;
        }
        assert_eq!(trace.lost().unwrap(), 0);

        // Not read, the ring buffer fills: every frame is either in it or counted as lost.
        let frame = Frame::new(Ipv4::new(
            [10, 0, 0, 1],
            [232, 1, 1, 1],
            Upper::udp(b"fill the ring"),
        ))
        .to_bytes();
        let sent = 6_000;
        for _ in 0..sent {
            dp.test_run(&frame, Some(d0)).unwrap();
        }
        let lost = trace.lost().unwrap();
        let mut kept = 0u64;
        while trace.next_event().is_some() {
            kept += 1;
        }
        assert!(lost > 0, "a 256 KiB ring buffer cannot hold {sent} events");
        assert_eq!(kept + lost, sent, "kept {kept}, lost {lost}");

        // Switched off, nothing is traced: of a frame sent while on and left unread, and one
        // sent after the switch was turned off, the next trace finds only the first.
        dp.test_run(&frame, Some(d0)).unwrap();
        assert_eq!(trace.stop().unwrap(), lost);
        dp.test_run(&frame, Some(d0)).unwrap();
        let next = dp.trace(every).unwrap();
        assert_eq!(
            next.discarded(),
            1,
            "a frame was traced while the trace was off"
        );
    });
    eprintln!("trace differential: reasons {by_reason:?}");
    for reason in [
        Reason::Excluded,
        Reason::NotIncluded,
        Reason::Unmanaged,
        Reason::Control,
    ] {
        assert!(
            by_reason.contains_key(&reason),
            "no frame judged {reason:?}"
        );
    }
}
