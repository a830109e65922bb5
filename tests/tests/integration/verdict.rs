//! Fixture verdicts: every rule of the reference model (`msfilter_common::verdict`), for IPv4
//! and IPv6, with and without VLAN tags, run through the XDP program with
//! `BPF_PROG_TEST_RUN`. Each case checks kernel == model == the (verdict, reason) written
//! here, the kernel's reason being read from its reason counters.
//!
//! Frames arrive on the loopback interface (index 1 in every namespace) unless a test needs
//! two interfaces, which it creates in a namespace of its own.

use msfilter::{
    datapath::{Datapath, Gate, GroupCounters, monotonic_ns},
    policy::GroupFilter,
};
use msfilter_common::{
    Addr, Counter, Mode, Reason,
    headers::{
        ETH_P_8021AD, ETH_P_8021Q, IPPROTO_DSTOPTS, IPPROTO_ESP, IPPROTO_HIP, IPPROTO_ICMPV6,
        IPPROTO_MH, IPPROTO_NONE, IPPROTO_PIM, IPPROTO_SHIM6, IPPROTO_UDP,
    },
    maps::ipv4_mapped,
    unjoined::{DROP_IPV4, DROP_IPV6},
};
use msfilter_testbed::{
    model::{judge_kernel, judge_model, load_datapath, policy_summary, two_interfaces},
    packet::{
        Ext, Frame, ICMPV6_ECHO_REQUEST, ICMPV6_NEIGHBOR_SOLICITATION, IGMPV3_REPORT, Ipv4, Ipv6,
        Network, Upper, hex,
    },
};

/// Loopback: the ingress interface of every test that needs only one.
const LO: u32 = 1;

/// Managed IPv4 group and its sources: `S4` is listed, `S4_OTHER` is not.
const G4: [u8; 4] = [232, 1, 1, 1];
const S4: [u8; 4] = [10, 0, 0, 1];
const S4_OTHER: [u8; 4] = [10, 0, 0, 2];
/// A multicast group nobody manages.
const G4_UNMANAGED: [u8; 4] = [239, 9, 9, 9];

/// ff3e::8000:1, a source-specific group.
const G6: [u8; 16] = [0xff, 0x3e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 1];
/// ff02::1:ff00:1, the solicited-node group that neighbor solicitations go to.
const G6_SOLICITED: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1];
const G6_UNMANAGED: [u8; 16] = [0xff, 0x3e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 9];
/// 2001:db8::1 (listed) and 2001:db8::2 (not listed).
const S6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const S6_OTHER: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

const PAYLOAD: &[u8] = b"msfilter fixture";

/// The VLAN stacks that are judged: none, 802.1Q, 802.1ad, QinQ, and two of a kind.
const JUDGED_VLAN_STACKS: [&[u16]; 6] = [
    &[],
    &[ETH_P_8021Q],
    &[ETH_P_8021AD],
    &[ETH_P_8021AD, ETH_P_8021Q],
    &[ETH_P_8021Q, ETH_P_8021Q],
    &[ETH_P_8021Q, ETH_P_8021AD],
];

fn udp4(src: [u8; 4], dst: [u8; 4]) -> Ipv4 {
    Ipv4::new(src, dst, Upper::udp(PAYLOAD))
}

fn udp6(src: [u8; 16], dst: [u8; 16]) -> Ipv6 {
    Ipv6::new(src, dst, Upper::udp(PAYLOAD))
}

fn tagged(frame: Frame, tpids: &[u16]) -> Frame {
    tpids
        .iter()
        .zip(100..)
        .fold(frame, |f, (&tpid, vid)| f.vlan(tpid, vid))
}

/// A loaded program and where its frames arrive.
struct Bench {
    dp: Datapath,
    ifindex: u32,
}

impl Bench {
    /// G4 and G6 on loopback in `mode`, listing S4 and S6.
    fn new(mode: Mode) -> Self {
        let mut bench = Self {
            dp: load_datapath(),
            ifindex: LO,
        };
        bench.set(G4, mode, &[S4]);
        bench.set6(G6, mode, &[S6]);
        bench
    }

    fn exclude() -> Self {
        Self::new(Mode::Exclude)
    }

    fn set_addr(&mut self, group: Addr, mode: Mode, sources: &[Addr]) {
        self.dp
            .set_filter(
                self.ifindex,
                group,
                Some(GroupFilter::new(mode, sources.iter().copied())),
            )
            .expect("set_filter");
    }

    fn set(&mut self, group: [u8; 4], mode: Mode, sources: &[[u8; 4]]) {
        let sources: Vec<_> = sources.iter().map(|s| ipv4_mapped(*s)).collect();
        self.set_addr(ipv4_mapped(group), mode, &sources);
    }

    fn set6(&mut self, group: [u8; 16], mode: Mode, sources: &[[u8; 16]]) {
        self.set_addr(group, mode, sources);
    }

    /// Kernel and model both give `frame` the `expected` reason (and its verdict).
    #[track_caller]
    fn check(&self, what: &str, frame: &[u8], expected: Reason) {
        check_on(&self.dp, self.ifindex, what, frame, expected);
    }

    #[track_caller]
    fn check_frame(&self, what: &str, frame: &Frame, expected: Reason) {
        self.check(what, &frame.to_bytes(), expected);
    }

    /// A frame shorter than an Ethernet header: the model says truncated, and the kernel
    /// refuses to run the program on it at all (`BPF_PROG_TEST_RUN` needs `ETH_HLEN` bytes;
    /// no driver hands XDP such a frame either).
    #[track_caller]
    fn check_shorter_than_ethernet(&self, what: &str, frame: &[u8]) {
        assert!(frame.len() < 14);
        let model = judge_model(&self.dp, frame, self.ifindex);
        assert_eq!(
            model.1,
            Reason::Truncated,
            "{what}: model on {}",
            hex(frame)
        );
        assert!(
            self.dp.test_run(frame, Some(self.ifindex)).is_err(),
            "{what}: the kernel ran a {}-byte frame",
            frame.len()
        );
    }
}

#[track_caller]
fn check_on(dp: &Datapath, ifindex: u32, what: &str, frame: &[u8], expected: Reason) {
    let want = (expected.verdict(), expected);
    let model = judge_model(dp, frame, ifindex);
    let kernel = judge_kernel(dp, frame, ifindex);
    assert!(
        model == want && kernel == want,
        "{what}: expected {want:?}, model {model:?}, kernel {kernel:?}\n\
         ifindex {ifindex}, frame ({} bytes): {}\npolicy:\n{}",
        frame.len(),
        hex(frame),
        policy_summary(dp.installed())
    );
}

#[test]
fn non_ip_frames_pass() {
    let b = Bench::exclude();
    for tpids in JUDGED_VLAN_STACKS {
        b.check_frame(
            &format!("ARP, tags {tpids:x?}"),
            &tagged(Frame::arp(), tpids),
            Reason::NotIp,
        );
    }
    let lldp = Frame::new(Network::Other {
        ethertype: 0x88cc,
        bytes: vec![0; 40],
    });
    b.check_frame("LLDP", &lldp, Reason::NotIp);
    // An Ethernet header alone, with an ethertype that is not IP.
    b.check(
        "bare Ethernet header",
        &Frame::arp().to_bytes()[..14],
        Reason::NotIp,
    );
}

#[test]
fn truncated_at_every_header_boundary() {
    let b = Bench::exclude();
    let frames = [
        ("IPv4", Frame::new(udp4(S4, G4).option_words(2))),
        (
            "IPv6",
            Frame::new(
                udp6(S6, G6)
                    .ext(Ext::hop_by_hop(0))
                    .ext(Ext::destination_options(1))
                    .ext(Ext::routing(0))
                    .ext(Ext::fragment(0, true))
                    .ext(Ext::ah(1)),
            ),
        ),
    ];
    for (family, frame) in frames {
        for tpids in JUDGED_VLAN_STACKS {
            let frame = tagged(frame.clone(), tpids);
            let bytes = frame.to_bytes();
            let layout = frame.layout();
            b.check(&format!("{family} whole"), &bytes, Reason::Excluded);
            // Every boundary, and one byte either side: the datagram is incomplete, so the
            // frame is truncated, whichever header the cut falls in.
            let mut cuts: Vec<usize> = layout
                .boundaries()
                .iter()
                .flat_map(|&at| [at.saturating_sub(1), at, at + 1])
                .filter(|&at| at < bytes.len())
                .collect();
            cuts.dedup();
            for at in cuts {
                let what = format!("{family}, tags {tpids:x?}, cut at {at} of {layout:?}");
                if at < 14 {
                    b.check_shorter_than_ethernet(&what, &bytes[..at]);
                } else {
                    b.check(&what, &bytes[..at], Reason::Truncated);
                }
            }
        }
    }
}

#[test]
fn truncated_inside_ipv6_extension_headers() {
    // The IPv6 payload length ends inside the chain: the frame is complete, the chain is not.
    let b = Bench::exclude();
    for tpids in [&[][..], &[ETH_P_8021AD, ETH_P_8021Q]] {
        let frame = tagged(
            Frame::new(
                Ipv6::new(S6, G6, Upper::icmpv6(ICMPV6_ECHO_REQUEST, PAYLOAD))
                    .ext(Ext::hop_by_hop_router_alert())
                    .ext(Ext::destination_options(2))
                    .ext(Ext::routing(1))
                    .ext(Ext::fragment(0, true))
                    .ext(Ext::ah(3)),
            ),
            tpids,
        );
        let layout = frame.layout();
        let chain: Vec<_> = layout
            .spans
            .iter()
            .filter(|s| {
                matches!(
                    s.name,
                    "hop-by-hop" | "destination-options" | "routing" | "fragment" | "ah"
                )
            })
            .copied()
            .collect();
        assert_eq!(chain.len(), 5);
        for span in &chain {
            for at in [span.start, span.start + 1, span.start + 2, span.end - 1] {
                let what = format!("datagram ends at {at}, inside {span:?}, tags {tpids:x?}");
                b.check(&what, &frame.ending_at(at), Reason::Truncated);
            }
        }
        // The chain is complete but the ICMPv6 type byte is not there.
        let icmp = layout.span("icmpv6").unwrap();
        b.check(
            "datagram ends before the ICMPv6 type",
            &frame.ending_at(icmp.start),
            Reason::Truncated,
        );
        // The type byte alone is enough to judge.
        b.check(
            "datagram ends after the ICMPv6 type",
            &frame.ending_at(icmp.start + 1),
            Reason::Excluded,
        );
        // UDP's header is never read: a complete chain with nothing after it is judged.
        let mut udp = frame.clone();
        udp.ipv6_mut().upper = Upper::udp(PAYLOAD);
        b.check(
            "UDP datagram ends right after the chain",
            &udp.ending_at(icmp.start),
            Reason::Excluded,
        );
    }

    // Headers whose length fields run past the end of the payload (the frame has the bytes).
    for ext in [
        Ext::hop_by_hop(0).length_field(4),
        Ext::destination_options(0).length_field(200),
        Ext::routing(2).length_field(6),
        Ext::ah(1).length_field(10),
    ] {
        let frame = Frame::new(udp6(S6, G6).ext(ext.clone())).padding(64);
        b.check_frame(&format!("{ext:?} too long"), &frame, Reason::Truncated);
    }
    // An extension header in the Ethernet padding after the payload does not count.
    let mut frame = Frame::new(Ipv6::new(S6, G6, Upper::raw(0, &[])));
    frame.padding = 32;
    b.check_frame(
        "hop-by-hop header only in the padding",
        &frame,
        Reason::Truncated,
    );
    // Payload length beyond the frame.
    let frame = Frame::new(udp6(S6, G6).payload_len(200));
    b.check_frame("payload length beyond the frame", &frame, Reason::Truncated);
    let frame = Frame::new(udp6(S6, G6).payload_len(20)).padding(10);
    b.check_frame(
        "payload length short of the UDP payload",
        &frame,
        Reason::Excluded,
    );
}

#[test]
fn malformed_ip_headers() {
    let b = Bench::exclude();
    for tpids in [&[][..], &[ETH_P_8021Q]] {
        let t = |f: Frame| tagged(f, tpids);
        for version in [0, 5, 6, 15] {
            b.check_frame(
                &format!("IPv4 ethertype, version {version}"),
                &t(Frame::new(udp4(S4, G4).version(version))),
                Reason::Malformed,
            );
        }
        for version in [0, 4, 7, 15] {
            b.check_frame(
                &format!("IPv6 ethertype, version {version}"),
                &t(Frame::new(udp6(S6, G6).version(version))),
                Reason::Malformed,
            );
        }
        for ihl in 0..5 {
            b.check_frame(
                &format!("IHL {ihl}"),
                &t(Frame::new(udp4(S4, G4).ihl(ihl))),
                Reason::Malformed,
            );
        }
        for (options, total_len) in [(0, 0), (0, 19), (1, 20), (1, 23), (10, 59)] {
            b.check_frame(
                &format!("{options} option words, total length {total_len}"),
                &t(Frame::new(
                    udp4(S4, G4).option_words(options).total_len(total_len),
                )),
                Reason::Malformed,
            );
        }
        // IHL beyond the total length, with the frame long enough for either.
        b.check_frame(
            "IHL 15, total length 40",
            &t(Frame::new(udp4(S4, G4).ihl(15).total_len(40)).padding(60)),
            Reason::Malformed,
        );
        // Total length beyond the frame.
        b.check_frame(
            "total length beyond the frame",
            &t(Frame::new(udp4(S4, G4).total_len(200))),
            Reason::Truncated,
        );
        // The order of the checks: a wrong version is malformed even for a unicast
        // destination, while a bad IHL only matters once the destination is multicast.
        b.check_frame(
            "unicast, wrong version",
            &t(Frame::new(udp4(S4, [10, 0, 0, 9]).version(5))),
            Reason::Malformed,
        );
        b.check_frame(
            "unicast, IHL 3",
            &t(Frame::new(udp4(S4, [10, 0, 0, 9]).ihl(3))),
            Reason::NotMulticast,
        );
        b.check_frame(
            "unicast IPv6, wrong version",
            &t(Frame::new(udp6(S6, S6_OTHER).version(4))),
            Reason::Malformed,
        );
    }
}

#[test]
fn vlan_tags_up_to_two_are_judged() {
    let b = Bench::exclude();
    for tpids in JUDGED_VLAN_STACKS {
        b.check_frame(
            &format!("IPv4, tags {tpids:x?}"),
            &tagged(Frame::new(udp4(S4, G4)), tpids),
            Reason::Excluded,
        );
        b.check_frame(
            &format!("IPv6, tags {tpids:x?}"),
            &tagged(Frame::new(udp6(S6_OTHER, G6)), tpids),
            Reason::NotExcluded,
        );
    }
    for tpids in [
        &[ETH_P_8021Q, ETH_P_8021Q, ETH_P_8021Q][..],
        &[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q],
        &[ETH_P_8021AD, ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q],
    ] {
        b.check_frame(
            &format!("IPv4, tags {tpids:x?}"),
            &tagged(Frame::new(udp4(S4, G4)), tpids),
            Reason::TooManyVlanTags,
        );
        b.check_frame(
            &format!("IPv6, tags {tpids:x?}"),
            &tagged(Frame::new(udp6(S6, G6)), tpids),
            Reason::TooManyVlanTags,
        );
        b.check_frame(
            &format!("ARP, tags {tpids:x?}"),
            &tagged(Frame::arp(), tpids),
            Reason::TooManyVlanTags,
        );
    }
    // Two tags and a third TPID with nothing after it: too many tags, not truncated.
    let three = tagged(Frame::arp(), &[ETH_P_8021Q; 3]).to_bytes();
    b.check("third tag cut off", &three[..22], Reason::TooManyVlanTags);
}

#[test]
fn ipv4_options_are_skipped() {
    let b = Bench::exclude();
    for words in 1usize..=10 {
        let ihl = 5 + words;
        b.check_frame(
            &format!("IHL {ihl}, listed"),
            &Frame::new(udp4(S4, G4).option_words(words)),
            Reason::Excluded,
        );
        b.check_frame(
            &format!("IHL {ihl}, unlisted, QinQ"),
            &tagged(
                Frame::new(udp4(S4_OTHER, G4).option_words(words)),
                &[ETH_P_8021AD, ETH_P_8021Q],
            ),
            Reason::NotExcluded,
        );
        // The options are covered by the total length but the frame ends inside them.
        let frame = Frame::new(udp4(S4, G4).option_words(words));
        let options = frame.layout().span("ipv4-options").unwrap();
        b.check(
            &format!("IHL {ihl}, cut inside the options"),
            &frame.to_bytes()[..options.end - 1],
            Reason::Truncated,
        );
    }
    // Padding after the datagram is not part of it.
    b.check_frame(
        "IHL 15, padded",
        &Frame::new(udp4(S4, G4).option_words(10)).padding(30),
        Reason::Excluded,
    );
}

#[test]
fn ipv4_fragments_are_judged_by_their_addresses() {
    let b = Bench::exclude();
    let fragments = [
        ("first", 0, true),
        ("middle", 100, true),
        ("last", 200, false),
    ];
    for (which, offset, more) in fragments {
        for tpids in [&[][..], &[ETH_P_8021Q]] {
            let t = |f: Frame| tagged(f, tpids);
            b.check_frame(
                &format!("{which} fragment, listed"),
                &t(Frame::new(udp4(S4, G4).fragment(offset, more))),
                Reason::Excluded,
            );
            b.check_frame(
                &format!("{which} fragment, unlisted"),
                &t(Frame::new(
                    Ipv4::new(S4_OTHER, G4, Upper::raw(IPPROTO_UDP, PAYLOAD))
                        .fragment(offset, more),
                )),
                Reason::NotExcluded,
            );
            b.check_frame(
                &format!("{which} IGMP fragment"),
                &t(Frame::new(
                    Ipv4::new(S4, G4, Upper::igmp(IGMPV3_REPORT, G4)).fragment(offset, more),
                )),
                Reason::Control,
            );
            b.check_frame(
                &format!("{which} PIM fragment"),
                &t(Frame::new(
                    Ipv4::new(S4, G4, Upper::pim()).fragment(offset, more),
                )),
                Reason::Control,
            );
        }
    }
}

#[test]
fn control_traffic_is_never_dropped() {
    // INCLUDE {} drops every data datagram; control traffic still passes.
    let mut b = Bench::new(Mode::Include);
    b.set(G4, Mode::Include, &[]);
    b.set6(G6, Mode::Include, &[]);
    for tpids in [&[][..], &[ETH_P_8021AD, ETH_P_8021Q]] {
        let t = |f: Frame| tagged(f, tpids);
        b.check_frame(
            "UDP (the control case's baseline)",
            &t(Frame::new(udp4(S4, G4))),
            Reason::NotIncluded,
        );
        b.check_frame(
            "IGMP report",
            &t(Frame::new(
                Ipv4::new(S4, G4, Upper::igmp(IGMPV3_REPORT, G4)).option_words(1),
            )),
            Reason::Control,
        );
        b.check_frame(
            "IGMP query to 224.0.0.1",
            &t(Frame::new(Ipv4::new(
                S4,
                [224, 0, 0, 1],
                Upper::igmp(0x11, [0; 4]),
            ))),
            Reason::Control,
        );
        b.check_frame(
            "PIM over IPv4",
            &t(Frame::new(Ipv4::new(S4, G4, Upper::pim()))),
            Reason::Control,
        );
        b.check_frame(
            "PIM over IPv6",
            &t(Frame::new(Ipv6::new(S6, G6, Upper::pim()))),
            Reason::Control,
        );
        b.check_frame(
            "PIM over IPv6 after destination options",
            &t(Frame::new(
                Ipv6::new(S6, G6, Upper::pim()).ext(Ext::destination_options(0)),
            )),
            Reason::Control,
        );
        for ty in [130, 131, 132, 143] {
            b.check_frame(
                &format!("MLD type {ty} after hop-by-hop router alert"),
                &t(Frame::new(
                    Ipv6::new(S6, G6, Upper::mld(ty, G6)).ext(Ext::hop_by_hop_router_alert()),
                )),
                Reason::Control,
            );
            b.check_frame(
                &format!("MLD type {ty} without hop-by-hop"),
                &t(Frame::new(Ipv6::new(S6_OTHER, G6, Upper::mld(ty, G6)))),
                Reason::Control,
            );
        }
        // Other ICMPv6 types to a managed group are data like any other.
        for ty in [ICMPV6_ECHO_REQUEST, 129, 133, 134, 144] {
            b.check_frame(
                &format!("ICMPv6 type {ty}"),
                &t(Frame::new(Ipv6::new(S6, G6, Upper::icmpv6(ty, PAYLOAD)))),
                Reason::NotIncluded,
            );
        }
    }
}

#[test]
fn icmpv6_to_a_managed_group_is_judged() {
    let mut b = Bench::exclude();
    b.set6(G6_SOLICITED, Mode::Exclude, &[S6]);
    let ns = Frame::new(Ipv6::new(
        S6,
        G6_SOLICITED,
        Upper::icmpv6(ICMPV6_NEIGHBOR_SOLICITATION, &[0; 20]),
    ));
    b.check_frame(
        "neighbor solicitation, listed source",
        &ns,
        Reason::Excluded,
    );
    let mut ns_other = ns;
    ns_other.ipv6_mut().src = S6_OTHER;
    b.check_frame(
        "neighbor solicitation, unlisted source",
        &ns_other,
        Reason::NotExcluded,
    );
    let echo = Frame::new(Ipv6::new(
        S6,
        G6,
        Upper::icmpv6(ICMPV6_ECHO_REQUEST, PAYLOAD),
    ));
    b.check_frame("echo request", &echo, Reason::Excluded);
    let echo = Frame::new(
        Ipv6::new(S6, G6, Upper::icmpv6(ICMPV6_ECHO_REQUEST, PAYLOAD))
            .ext(Ext::hop_by_hop_router_alert()),
    );
    b.check_frame("echo request after hop-by-hop", &echo, Reason::Excluded);
}

#[test]
fn ipv6_extension_chains_are_walked() {
    let b = Bench::exclude();
    let chains: Vec<(&str, Vec<Ext>)> = vec![
        ("destination options", vec![Ext::destination_options(0)]),
        ("routing", vec![Ext::routing(2)]),
        ("AH", vec![Ext::ah(4)]),
        ("AH without ICV", vec![Ext::ah(1)]),
        ("hop-by-hop, long", vec![Ext::hop_by_hop(7)]),
        (
            "hop-by-hop, destination, routing, AH, destination",
            vec![
                Ext::hop_by_hop_router_alert(),
                Ext::destination_options(1),
                Ext::routing(0),
                Ext::ah(2),
                Ext::destination_options(0),
            ],
        ),
        (
            "mobility, HIP, shim6",
            vec![
                Ext::generic(IPPROTO_MH, 0),
                Ext::generic(IPPROTO_HIP, 1),
                Ext::generic(IPPROTO_SHIM6, 0),
            ],
        ),
    ];
    for (name, chain) in chains {
        for (upper, source, expected) in [
            (Upper::udp(PAYLOAD), S6, Reason::Excluded),
            (Upper::udp(PAYLOAD), S6_OTHER, Reason::NotExcluded),
            (
                Upper::icmpv6(ICMPV6_ECHO_REQUEST, PAYLOAD),
                S6,
                Reason::Excluded,
            ),
            (Upper::mld(143, G6), S6, Reason::Control),
            (Upper::pim(), S6, Reason::Control),
            (Upper::raw(IPPROTO_ESP, PAYLOAD), S6, Reason::Excluded),
            (Upper::raw(IPPROTO_NONE, &[]), S6, Reason::Excluded),
        ] {
            let mut ip = Ipv6::new(source, G6, upper.clone());
            ip.exts.clone_from(&chain);
            for tpids in [&[][..], &[ETH_P_8021Q]] {
                b.check_frame(
                    &format!("{name}, then protocol {}, tags {tpids:x?}", upper.protocol),
                    &tagged(Frame::new(ip.clone()), tpids),
                    expected,
                );
            }
        }
    }
}

#[test]
fn ipv6_fragments() {
    let b = Bench::exclude();
    // A first fragment: the walk continues past it and sees the upper layer.
    for (upper, expected) in [
        (Upper::udp(PAYLOAD), Reason::Excluded),
        (Upper::mld(131, G6), Reason::Control),
        (
            Upper::icmpv6(ICMPV6_ECHO_REQUEST, PAYLOAD),
            Reason::Excluded,
        ),
        (Upper::pim(), Reason::Control),
    ] {
        let protocol = upper.protocol;
        let first = Ipv6::new(S6, G6, upper).ext(Ext::fragment(0, true));
        b.check_frame(
            &format!("first fragment, protocol {protocol}"),
            &Frame::new(first.clone()),
            expected,
        );
        b.check_frame(
            &format!("first fragment, then destination options, protocol {protocol}"),
            &Frame::new(first.ext(Ext::destination_options(0))),
            expected,
        );
    }
    // A non-first fragment: the walk stops at the fragment header; what follows is the
    // middle of the original payload, whatever it looks like.
    for (which, offset, more) in [("middle", 5, true), ("last", 300, false)] {
        // Bytes that would read as an echo request: still not visible, so control.
        let icmp = Ipv6::new(
            S6,
            G6,
            Upper::raw(IPPROTO_ICMPV6, &[ICMPV6_ECHO_REQUEST, 0, 0, 0]),
        )
        .ext(Ext::fragment(offset, more));
        b.check_frame(
            &format!("{which} ICMPv6 fragment"),
            &Frame::new(icmp.clone()),
            Reason::Control,
        );
        b.check_frame(
            &format!("{which} ICMPv6 fragment after hop-by-hop, QinQ"),
            &tagged(
                Frame::new(Ipv6 {
                    exts: vec![Ext::hop_by_hop(0), Ext::fragment(offset, more)],
                    ..icmp
                }),
                &[ETH_P_8021AD, ETH_P_8021Q],
            ),
            Reason::Control,
        );
        // UDP in a non-first fragment is judged by the addresses, like any fragment.
        for (source, expected) in [(S6, Reason::Excluded), (S6_OTHER, Reason::NotExcluded)] {
            let udp = Ipv6::new(source, G6, Upper::raw(IPPROTO_UDP, PAYLOAD))
                .ext(Ext::fragment(offset, more));
            b.check_frame(&format!("{which} UDP fragment"), &Frame::new(udp), expected);
        }
        b.check_frame(
            &format!("{which} PIM fragment"),
            &Frame::new(
                Ipv6::new(S6, G6, Upper::raw(IPPROTO_PIM, PAYLOAD))
                    .ext(Ext::fragment(offset, more)),
            ),
            Reason::Control,
        );
        // The fragment header names an extension header, but the walk has stopped: what
        // follows is not read, and the datagram is judged.
        b.check_frame(
            &format!("{which} fragment of a destination options header"),
            &Frame::new(
                Ipv6::new(S6, G6, Upper::raw(IPPROTO_DSTOPTS, &[0xff; 3]))
                    .ext(Ext::fragment(offset, more)),
            ),
            Reason::Excluded,
        );
        // Nothing after the fragment header at all.
        b.check_frame(
            &format!("{which} UDP fragment with no data"),
            &Frame::new(
                Ipv6::new(S6, G6, Upper::raw(IPPROTO_UDP, &[])).ext(Ext::fragment(offset, more)),
            ),
            Reason::Excluded,
        );
    }
    // A fragment header cut short by the payload length.
    let frame =
        Frame::new(Ipv6::new(S6, G6, Upper::raw(IPPROTO_UDP, &[])).ext(Ext::fragment(5, true)));
    b.check(
        "fragment header cut short",
        &frame.ending_at(frame.layout().len - 1),
        Reason::Truncated,
    );
}

#[test]
fn ipv6_extension_chain_limit() {
    let b = Bench::exclude();
    let kinds = [
        Ext::hop_by_hop(0),
        Ext::destination_options(0),
        Ext::routing(0),
        Ext::fragment(0, false),
        Ext::ah(1),
        Ext::generic(IPPROTO_MH, 0),
        Ext::destination_options(1),
        Ext::generic(IPPROTO_SHIM6, 0),
    ];
    for (n, expected) in [
        (5, Reason::Excluded),
        (6, Reason::Excluded),
        (7, Reason::ExtensionChainTooLong),
        (8, Reason::ExtensionChainTooLong),
    ] {
        for upper in [Upper::udp(PAYLOAD), Upper::mld(143, G6)] {
            let expected = match (expected, upper.protocol) {
                (Reason::Excluded, IPPROTO_ICMPV6) => Reason::Control,
                _ => expected,
            };
            let mut ip = Ipv6::new(S6, G6, upper);
            ip.exts = kinds[..n].to_vec();
            for tpids in [&[][..], &[ETH_P_8021Q, ETH_P_8021Q]] {
                b.check_frame(
                    &format!("{n} extension headers, tags {tpids:x?}"),
                    &tagged(Frame::new(ip.clone()), tpids),
                    expected,
                );
            }
        }
    }
    // A non-first fragment as the sixth header ends the walk within the limit; as the
    // seventh it is beyond it.
    let mut ip = Ipv6::new(S6, G6, Upper::raw(IPPROTO_UDP, PAYLOAD));
    ip.exts = kinds[..5].to_vec();
    ip.exts.push(Ext::fragment(9, true));
    b.check_frame(
        "non-first fragment as the 6th header",
        &Frame::new(ip.clone()),
        Reason::Excluded,
    );
    ip.exts.insert(0, Ext::hop_by_hop(0));
    b.check_frame(
        "non-first fragment as the 7th header",
        &Frame::new(ip),
        Reason::ExtensionChainTooLong,
    );
    // Too long is decided before the 7th header is read: it may lie beyond the payload.
    let mut ip = Ipv6::new(S6, G6, Upper::raw(0, &[]));
    ip.exts = kinds[..6].to_vec();
    b.check_frame(
        "7th header missing",
        &Frame::new(ip),
        Reason::ExtensionChainTooLong,
    );
}

#[test]
fn unicast_and_broadcast_are_not_multicast() {
    let b = Bench::exclude();
    for tpids in [&[][..], &[ETH_P_8021AD, ETH_P_8021Q]] {
        for dst in [
            [10, 0, 0, 9],
            [255, 255, 255, 255],
            [240, 0, 0, 1],
            [223, 255, 255, 255],
        ] {
            b.check_frame(
                &format!("IPv4 to {dst:?}"),
                &tagged(Frame::new(udp4(S4, dst)), tpids),
                Reason::NotMulticast,
            );
        }
        let mut link_local = [0u8; 16];
        link_local[..2].copy_from_slice(&[0xfe, 0x80]);
        link_local[15] = 1;
        let mut almost = G6;
        almost[0] = 0xfe;
        for dst in [S6_OTHER, link_local, almost] {
            b.check_frame(
                &format!("IPv6 to {dst:x?}"),
                &tagged(Frame::new(udp6(S6, dst)), tpids),
                Reason::NotMulticast,
            );
        }
        // Not multicast is decided before the length checks.
        b.check_frame(
            "IPv6 unicast, payload length beyond the frame",
            &tagged(Frame::new(udp6(S6, S6_OTHER).payload_len(900)), tpids),
            Reason::NotMulticast,
        );
        b.check_frame(
            "IPv4 unicast, total length beyond the frame",
            &tagged(Frame::new(udp4(S4, [10, 0, 0, 9]).total_len(900)), tpids),
            Reason::NotMulticast,
        );
    }
}

#[test]
fn unmanaged_groups_pass() {
    let b = Bench::exclude();
    for tpids in [&[][..], &[ETH_P_8021Q]] {
        b.check_frame(
            "IPv4, unmanaged group",
            &tagged(Frame::new(udp4(S4, G4_UNMANAGED)), tpids),
            Reason::Unmanaged,
        );
        b.check_frame(
            "IPv6, unmanaged group",
            &tagged(Frame::new(udp6(S6, G6_UNMANAGED)), tpids),
            Reason::Unmanaged,
        );
    }
    // An IPv6 group carrying the IPv4 group's bytes is another group.
    let mut mapped = [0u8; 16];
    mapped[0] = 0xff;
    mapped[12..].copy_from_slice(&G4);
    b.check_frame(
        "IPv6 group with the IPv4 group's bytes",
        &Frame::new(udp6(S6, mapped)),
        Reason::Unmanaged,
    );
}

#[test]
fn exclude_and_include_modes() {
    for mode in [Mode::Exclude, Mode::Include] {
        let (listed, unlisted) = match mode {
            Mode::Exclude => (Reason::Excluded, Reason::NotExcluded),
            Mode::Include => (Reason::Included, Reason::NotIncluded),
        };
        let b = Bench::new(mode);
        for tpids in JUDGED_VLAN_STACKS {
            let t = |f: Frame| tagged(f, tpids);
            let what = |s: &str| format!("{mode:?}, {s}, tags {tpids:x?}");
            b.check_frame(&what("IPv4 listed"), &t(Frame::new(udp4(S4, G4))), listed);
            b.check_frame(
                &what("IPv4 unlisted"),
                &t(Frame::new(udp4(S4_OTHER, G4))),
                unlisted,
            );
            b.check_frame(&what("IPv6 listed"), &t(Frame::new(udp6(S6, G6))), listed);
            b.check_frame(
                &what("IPv6 unlisted"),
                &t(Frame::new(udp6(S6_OTHER, G6))),
                unlisted,
            );
        }
    }
}

#[test]
fn include_nothing_drops_everything() {
    let mut b = Bench::new(Mode::Include);
    b.set(G4, Mode::Include, &[]);
    b.set6(G6, Mode::Include, &[]);
    for source in [S4, S4_OTHER, [0, 0, 0, 0], [255, 255, 255, 255]] {
        b.check_frame(
            &format!("IPv4 from {source:?}"),
            &Frame::new(udp4(source, G4)),
            Reason::NotIncluded,
        );
    }
    for source in [S6, S6_OTHER, [0; 16]] {
        b.check_frame(
            &format!("IPv6 from {source:x?}"),
            &Frame::new(udp6(source, G6)),
            Reason::NotIncluded,
        );
    }
}

#[test]
fn filters_are_per_interface() {
    let (ns, d0, d1) = two_interfaces("vrd");
    let mut dp = load_datapath();
    dp.set_filter(
        d0,
        ipv4_mapped(G4),
        Some(GroupFilter::new(Mode::Exclude, [ipv4_mapped(S4)])),
    )
    .unwrap();
    dp.set_filter(d1, G6, Some(GroupFilter::new(Mode::Include, [S6])))
        .unwrap();
    let v4 = Frame::new(udp4(S4, G4)).to_bytes();
    let v6 = Frame::new(udp6(S6_OTHER, G6)).to_bytes();
    ns.run(|| {
        check_on(&dp, d0, "IPv4 on d0", &v4, Reason::Excluded);
        check_on(&dp, d1, "IPv4 on d1", &v4, Reason::Unmanaged);
        check_on(&dp, LO, "IPv4 on lo", &v4, Reason::Unmanaged);
        check_on(&dp, d0, "IPv6 on d0", &v6, Reason::Unmanaged);
        check_on(&dp, d1, "IPv6 on d1", &v6, Reason::NotIncluded);
    });
}

/// A mode switch relists the sources of both lists in place, under the new mode, and drops
/// those of the old list only; the group's counters keep every frame through all of it.
#[test]
fn a_mode_switch_relists_sources_in_place() {
    let mut b = Bench::exclude();
    let group = ipv4_mapped(G4);
    let from_s4 = Frame::new(udp4(S4, G4)).to_bytes();
    let from_other = Frame::new(udp4(S4_OTHER, G4)).to_bytes();
    let totals = |b: &Bench| {
        let c = b.dp.group_counters(LO, group).unwrap().unwrap();
        (c.passed.packets, c.dropped.packets)
    };
    b.check("EXCLUDE {S4}: S4", &from_s4, Reason::Excluded);
    assert_eq!(totals(&b), (0, 1));

    // INCLUDE {S4_OTHER}: S4's entry was of the old list and is gone.
    let change = b.dp.set_filter(
        LO,
        group,
        Some(GroupFilter::new(Mode::Include, [ipv4_mapped(S4_OTHER)])),
    );
    let change = change.unwrap();
    assert_eq!(
        (
            change.groups_switched,
            change.sources_added,
            change.sources_removed
        ),
        (1, 1, 1)
    );
    assert_eq!(totals(&b), (0, 1), "the retired entry's drop is kept");
    b.check("INCLUDE {S4_OTHER}: S4", &from_s4, Reason::NotIncluded);
    b.check(
        "INCLUDE {S4_OTHER}: S4_OTHER",
        &from_other,
        Reason::Included,
    );

    // Same mode, another list: the list changes in place.
    b.set(G4, Mode::Include, &[S4]);
    b.check("INCLUDE {S4}: S4", &from_s4, Reason::Included);
    b.check("INCLUDE {S4}: S4_OTHER", &from_other, Reason::NotIncluded);
    assert_eq!(totals(&b), (2, 3));

    // Back to EXCLUDE with the same source: relisted, not added.
    let change =
        b.dp.set_filter(
            LO,
            group,
            Some(GroupFilter::new(Mode::Exclude, [ipv4_mapped(S4)])),
        )
        .unwrap();
    assert_eq!(
        (
            change.groups_switched,
            change.sources_added,
            change.sources_removed
        ),
        (1, 0, 0)
    );
    assert_eq!(totals(&b), (2, 3), "relisting keeps what the entry counted");
    b.check("EXCLUDE {S4} again: S4", &from_s4, Reason::Excluded);
    b.check(
        "EXCLUDE {S4} again: S4_OTHER",
        &from_other,
        Reason::NotExcluded,
    );
    let counted = b.dp.source_counter(LO, group, ipv4_mapped(S4)).unwrap();
    assert_eq!(
        counted.map(|c| c.packets),
        Some(1),
        "the relisted entry starts from zero and counts only what it matched"
    );
    assert_eq!(totals(&b), (3, 4), "seven frames, all counted once");

    // Unmanaged again.
    b.dp.set_filter(LO, group, None).unwrap();
    b.check("no filter: S4", &from_s4, Reason::Unmanaged);
    assert_eq!(b.dp.group_counters(LO, group).unwrap(), None);
}

#[test]
fn group_and_source_counters_count_judged_frames() {
    let mut b = Bench::exclude();
    b.set6(G6, Mode::Include, &[S6]);
    let group4 = ipv4_mapped(G4);
    let zero = GroupCounters::default();
    assert_eq!(b.dp.group_counters(LO, group4).unwrap(), Some(zero));
    assert_eq!(b.dp.group_counters(LO, G6).unwrap(), Some(zero));
    assert_eq!(
        b.dp.group_counters(LO, ipv4_mapped(G4_UNMANAGED)).unwrap(),
        None
    );

    let mut expected4 = zero;
    let mut listed4 = Counter::ZERO;
    let mut expected6 = zero;
    let mut listed6 = Counter::ZERO;
    for (i, payload_len) in [0usize, 1, 17, 100, 1000].into_iter().enumerate() {
        let payload = vec![0x5a; payload_len];
        let tags: &[u16] = if i % 2 == 0 { &[] } else { &[ETH_P_8021Q] };
        // IPv4, EXCLUDE {S4}: S4 dropped (and counted on its entry), S4_OTHER passed.
        let listed = tagged(Frame::new(Ipv4::new(S4, G4, Upper::udp(&payload))), tags).to_bytes();
        let unlisted = tagged(
            Frame::new(Ipv4::new(S4_OTHER, G4, Upper::udp(&payload))),
            tags,
        )
        .to_bytes();
        b.check("IPv4 listed", &listed, Reason::Excluded);
        b.check("IPv4 unlisted", &unlisted, Reason::NotExcluded);
        expected4.dropped.add(listed.len() as u64);
        listed4.add(listed.len() as u64);
        expected4.passed.add(unlisted.len() as u64);
        // IPv6, INCLUDE {S6}: S6 passed (and counted), S6_OTHER dropped.
        let listed = tagged(Frame::new(Ipv6::new(S6, G6, Upper::udp(&payload))), tags).to_bytes();
        let unlisted = tagged(
            Frame::new(Ipv6::new(S6_OTHER, G6, Upper::udp(&payload))),
            tags,
        )
        .to_bytes();
        b.check("IPv6 listed", &listed, Reason::Included);
        b.check("IPv6 unlisted", &unlisted, Reason::NotIncluded);
        expected6.passed.add(listed.len() as u64);
        listed6.add(listed.len() as u64);
        expected6.dropped.add(unlisted.len() as u64);
        // Frames of the group that are not judged do not count on it.
        b.check(
            "IGMP to the group",
            &Frame::new(Ipv4::new(S4, G4, Upper::igmp(IGMPV3_REPORT, G4))).to_bytes(),
            Reason::Control,
        );
        b.check(
            "truncated datagram to the group",
            &Frame::new(udp4(S4, G4).total_len(1400)).to_bytes(),
            Reason::Truncated,
        );
        assert_eq!(
            b.dp.group_counters(LO, group4).unwrap(),
            Some(expected4),
            "round {i}"
        );
        assert_eq!(
            b.dp.group_counters(LO, G6).unwrap(),
            Some(expected6),
            "round {i}"
        );
        assert_eq!(
            b.dp.source_counter(LO, group4, ipv4_mapped(S4)).unwrap(),
            Some(listed4)
        );
        assert_eq!(b.dp.source_counter(LO, G6, S6).unwrap(), Some(listed6));
        // Unlisted sources have no entry and so no counter.
        assert_eq!(
            b.dp.source_counter(LO, group4, ipv4_mapped(S4_OTHER))
                .unwrap(),
            None
        );
        assert_eq!(b.dp.source_counter(LO, G6, S6_OTHER).unwrap(), None);
    }
}

/// Drop-unjoined (`msfilter_common::unjoined`): on an interface with a family's bit, while
/// the gate is closed and the lease runs, an unmanaged group of that family is dropped —
/// never a link-scope group, never a managed one, never on another interface; an option in
/// flight or a lapsed lease lets everything unmanaged pass again.
#[test]
fn unjoined_groups_drop_only_behind_a_closed_gate() {
    let (ns, d0, d1) = two_interfaces("vru");
    let mut dp = load_datapath();
    dp.set_filter(
        d0,
        ipv4_mapped(G4),
        Some(GroupFilter::new(Mode::Exclude, [ipv4_mapped(S4)])),
    )
    .unwrap();
    let v4 = Frame::new(udp4(S4_OTHER, G4_UNMANAGED)).to_bytes();
    let v6 = Frame::new(udp6(S6, G6_UNMANAGED)).to_bytes();
    let managed = Frame::new(udp4(S4_OTHER, G4)).to_bytes();
    let mdns = Frame::new(udp4(S4, [224, 0, 0, 251])).to_bytes();
    let solicited = Frame::new(udp6(S6, G6_SOLICITED)).to_bytes();
    let far = monotonic_ns() + 3_600_000_000_000;
    let closed = Gate {
        begun: 7,
        settled: 7,
        lease_until_ns: far,
    };
    ns.run(|| {
        // Nothing asked yet: the gate's lease is 0.
        check_on(&dp, d0, "no lease", &v4, Reason::Unmanaged);

        dp.set_unjoined(d0, DROP_IPV4 | DROP_IPV6).unwrap();
        dp.set_unjoined(d1, DROP_IPV6).unwrap();
        dp.write_gate(closed).unwrap();
        check_on(&dp, d0, "IPv4 on d0", &v4, Reason::Unjoined);
        check_on(&dp, d0, "IPv6 on d0", &v6, Reason::Unjoined);
        check_on(&dp, d1, "IPv4 on d1 (IPv6 only)", &v4, Reason::Unmanaged);
        check_on(&dp, d1, "IPv6 on d1", &v6, Reason::Unjoined);
        check_on(&dp, LO, "IPv4 on lo (no bits)", &v4, Reason::Unmanaged);
        check_on(&dp, d0, "managed group", &managed, Reason::NotExcluded);
        check_on(&dp, d0, "224.0.0.251", &mdns, Reason::Unmanaged);
        check_on(&dp, d0, "ff02::1:ff00:1", &solicited, Reason::Unmanaged);
        // A VLAN tag nothing maps: another (sub-)interface's traffic, never d0's to drop.
        let tagged = Frame::new(udp4(S4_OTHER, G4_UNMANAGED)).vlan(ETH_P_8021Q, 300);
        check_on(
            &dp,
            d0,
            "unmapped VLAN",
            &tagged.to_bytes(),
            Reason::Unmanaged,
        );
        let outer_ad = Frame::new(udp4(S4_OTHER, G4_UNMANAGED)).vlan(ETH_P_8021AD, 300);
        check_on(
            &dp,
            d0,
            "802.1ad tag",
            &outer_ad.to_bytes(),
            Reason::Unmanaged,
        );
        // A mapped VLAN: its sub-interface's bits decide, not the parent's.
        const SUB: u32 = 4001;
        dp.set_vlan(d1, 300, SUB).unwrap();
        check_on(
            &dp,
            d1,
            "mapped VLAN, no bits",
            &tagged.to_bytes(),
            Reason::Unmanaged,
        );
        dp.set_unjoined(SUB, DROP_IPV4).unwrap();
        check_on(
            &dp,
            d1,
            "mapped VLAN, IPv4 bit",
            &tagged.to_bytes(),
            Reason::Unjoined,
        );
        dp.set_unjoined(SUB, 0).unwrap();

        // An option in flight: the hooks counted one more than the daemon settled.
        dp.write_gate(Gate { begun: 8, ..closed }).unwrap();
        check_on(&dp, d0, "option in flight", &v4, Reason::Unmanaged);
        // The lease ran out (the daemon died).
        dp.write_gate(Gate {
            lease_until_ns: monotonic_ns() - 1,
            ..closed
        })
        .unwrap();
        check_on(&dp, d0, "lease over", &v6, Reason::Unmanaged);
        // Settled again, then the interface stops dropping.
        dp.write_gate(closed).unwrap();
        check_on(&dp, d0, "settled again", &v4, Reason::Unjoined);
        dp.set_unjoined(d0, 0).unwrap();
        check_on(&dp, d0, "bits removed", &v4, Reason::Unmanaged);
        assert_eq!(dp.unjoined().unwrap(), [(d1, DROP_IPV6)].into());
        // Releasing the interface removes its bits too.
        dp.set_unjoined(d0, DROP_IPV4).unwrap();
        dp.clear_interface(d0).unwrap();
        assert_eq!(dp.unjoined().unwrap(), [(d1, DROP_IPV6)].into());
        check_on(&dp, d0, "after clear_interface", &v4, Reason::Unmanaged);
    });
}

/// An 802.1Q sub-interface enforced on its parent: frames whose outer 802.1Q tag carries a
/// VLAN the VLAN map holds for the ingress interface are judged (and counted) by the
/// sub-interface's entries; untagged frames, other VLAN ids, an 802.1ad outer tag and the
/// VLAN as inner tag by the parent's. The sub-interface needs no device here: the map holds
/// its index as written.
#[test]
fn mapped_vlans_are_judged_by_their_sub_interface() {
    const SUB: u32 = 4000;
    let (ns, d0, d1) = two_interfaces("vvl");
    let mut dp = load_datapath();
    dp.set_filter(
        d0,
        ipv4_mapped(G4),
        Some(GroupFilter::new(Mode::Exclude, [ipv4_mapped(S4)])),
    )
    .unwrap();
    dp.set_filter(
        SUB,
        ipv4_mapped(G4),
        Some(GroupFilter::new(Mode::Include, [ipv4_mapped(S4)])),
    )
    .unwrap();
    dp.set_filter(SUB, G6, Some(GroupFilter::new(Mode::Include, [S6])))
        .unwrap();
    dp.set_vlan(d0, 100, SUB).unwrap();
    let err = dp.set_vlan(d0, 4096, SUB).unwrap_err();
    assert!(err.to_string().contains("VLAN id 4096"), "{err}");
    assert_eq!(dp.vlans().len(), 1, "a refused mapping changes nothing");

    let q = ETH_P_8021Q;
    let ad = ETH_P_8021AD;
    let v4 = |src| Frame::new(udp4(src, G4));
    let v6 = |src| Frame::new(udp6(src, G6));
    let cases: Vec<(&str, u32, Frame, Reason)> = vec![
        ("untagged on the parent", d0, v4(S4), Reason::Excluded),
        (
            "VLAN 100, listed",
            d0,
            v4(S4).vlan(q, 100),
            Reason::Included,
        ),
        (
            "VLAN 100, unlisted",
            d0,
            v4(S4_OTHER).vlan(q, 100),
            Reason::NotIncluded,
        ),
        (
            "VLAN 100 with priority and DEI bits",
            d0,
            v4(S4).vlan_tci(q, 0xf000 | 100),
            Reason::Included,
        ),
        (
            "VLAN 101: unmapped",
            d0,
            v4(S4).vlan(q, 101),
            Reason::Excluded,
        ),
        (
            "802.1ad outer tag 100",
            d0,
            v4(S4).vlan(ad, 100),
            Reason::Excluded,
        ),
        (
            "QinQ, 802.1ad outer, 100 inner",
            d0,
            v4(S4).vlan(ad, 7).vlan(q, 100),
            Reason::Excluded,
        ),
        (
            "802.1Q 100 outer, 7 inner",
            d0,
            v4(S4_OTHER).vlan(q, 100).vlan(q, 7),
            Reason::NotIncluded,
        ),
        (
            "802.1Q 7 outer, 100 inner",
            d0,
            v4(S4).vlan(q, 7).vlan(q, 100),
            Reason::Excluded,
        ),
        (
            "VLAN 100 on another interface",
            d1,
            v4(S4).vlan(q, 100),
            Reason::Unmanaged,
        ),
        ("IPv6, VLAN 100", d0, v6(S6).vlan(q, 100), Reason::Included),
        ("IPv6 untagged", d0, v6(S6), Reason::Unmanaged),
        (
            "IGMP on VLAN 100",
            d0,
            Frame::new(Ipv4::new(S4, G4, Upper::igmp(IGMPV3_REPORT, G4))).vlan(q, 100),
            Reason::Control,
        ),
    ];
    ns.run(|| {
        for (what, ifindex, frame, expected) in &cases {
            check_on(&dp, *ifindex, what, &frame.to_bytes(), *expected);
        }
        // The sub-interface's group counted what it judged: listed S4 passed (twice on
        // VLAN 100, once with priority bits), the unlisted source dropped twice.
        let counters = dp.group_counters(SUB, ipv4_mapped(G4)).unwrap().unwrap();
        assert_eq!((counters.passed.packets, counters.dropped.packets), (2, 2));
        let parent = dp.group_counters(d0, ipv4_mapped(G4)).unwrap().unwrap();
        assert_eq!((parent.passed.packets, parent.dropped.packets), (0, 5));

        // Unmapped again: VLAN 100 is the parent's.
        assert!(dp.remove_vlan(d0, 100).unwrap());
        assert!(!dp.remove_vlan(d0, 100).unwrap());
        let frame = v4(S4).vlan(q, 100).to_bytes();
        check_on(
            &dp,
            d0,
            "VLAN 100 after unmapping",
            &frame,
            Reason::Excluded,
        );
    });
}

/// What the verifier processed for the program, printed with `--nocapture` (the VLAN lookup
/// is on the tagged path only). The kernel refuses programs beyond a million processed
/// instructions; this one must stay far below.
#[test]
fn the_verifier_processes_far_fewer_instructions_than_its_limit() {
    let dp = load_datapath();
    let size = dp.program_size().unwrap();
    eprintln!(
        "program size: {:?} instructions verified, {:?} bytes translated, {} bytes JIT-compiled",
        size.verified_instructions, size.translated_bytes, size.jited_bytes
    );
    let verified = size
        .verified_instructions
        .expect("the kernel reports the verified instruction count");
    assert!(verified < 250_000, "{verified} instructions verified");
}
