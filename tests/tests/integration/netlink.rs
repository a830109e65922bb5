//! The rtnetlink + bpf(2) layer against the kernel: which XDP program holds an interface
//! (attached by someone else, through a link or through netlink, in driver or skb mode),
//! what that program is, removing it, missing interfaces, and interface events.
//!
//! Needs root (namespaces, BPF, XDP); without it every test fails loudly.

use std::{
    collections::BTreeMap,
    io,
    os::fd::AsRawFd as _,
    time::{Duration, Instant, SystemTime},
};

use msfilter::{
    datapath::AttachMode,
    iface::{
        self, LinkEvent, LinkMonitor,
        xdp::{self, BPF_PROG_TYPE_XDP, XdpAttachedMode, XdpAttachment},
    },
};
use msfilter_testbed::{
    foreign::{ForeignXdp, Via},
    netns::Netns,
};

/// A namespace with veth pair `a0` (index 42) / `b0`, both up. The fixed index lets two
/// namespaces have interfaces with equal indexes.
fn veth(tag: &str) -> (Netns, u32, u32) {
    let ns = Netns::new(tag).unwrap();
    ns.ip(&[
        "link", "add", "a0", "index", "42", "type", "veth", "peer", "name", "b0",
    ])
    .unwrap();
    ns.ip(&["link", "set", "a0", "up"]).unwrap();
    ns.ip(&["link", "set", "b0", "up"]).unwrap();
    let a0 = ns.ifindex("a0").unwrap();
    let b0 = ns.ifindex("b0").unwrap();
    assert_eq!(a0, 42);
    (ns, a0, b0)
}

#[test]
fn no_program_is_no_attachment() {
    let (ns, a0, b0) = veth("nlnone");
    ns.run(|| {
        assert_eq!(xdp::xdp_attachment(a0).unwrap(), None);
        assert_eq!(xdp::xdp_attachment(b0).unwrap(), None);
        assert_eq!(xdp::xdp_link_of(a0).unwrap(), None);
        // Nothing to remove is not an error.
        xdp::remove_xdp(a0).unwrap();
        assert_eq!(xdp::xdp_attachment(a0).unwrap(), None);
    });
}

/// Attach a foreign program `via` in `mode`, check everything the layer says about it,
/// remove it through the layer, and check it is gone.
fn foreign_program(tag: &str, via: Via, mode: AttachMode) {
    let (ns, a0, b0) = veth(tag);
    let expected_mode = match mode {
        AttachMode::Driver => XdpAttachedMode::Driver,
        AttachMode::Skb => XdpAttachedMode::Skb,
    };
    let before = SystemTime::now();
    ns.run(|| {
        let foreign = ForeignXdp::attach("foreign_pass", a0, via, mode).unwrap();
        assert_eq!(foreign.link_id.is_some(), via == Via::Link);

        let attachment = xdp::xdp_attachment(a0).unwrap();
        let expected = XdpAttachment {
            prog_id: foreign.prog_id,
            mode: expected_mode,
            driver: (mode == AttachMode::Driver).then_some(foreign.prog_id),
            skb: (mode == AttachMode::Skb).then_some(foreign.prog_id),
            hardware: None,
        };
        assert_eq!(attachment, Some(expected));
        assert_eq!(
            expected.programs().collect::<Vec<_>>(),
            [(expected_mode, foreign.prog_id)]
        );
        // The other end of the pair is untouched.
        assert_eq!(xdp::xdp_attachment(b0).unwrap(), None);

        let summary = xdp::program_summary(foreign.prog_id).unwrap();
        assert_eq!(summary.id, foreign.prog_id);
        assert_eq!(summary.name, "foreign_pass");
        assert_eq!(summary.prog_type, BPF_PROG_TYPE_XDP);
        assert_eq!(summary.tag.len(), 16, "{summary:?}");
        assert!(
            summary.tag.bytes().all(|b| b.is_ascii_hexdigit()),
            "{summary:?}"
        );
        // Loaded just now (the boot time is derived from two clocks: allow a second).
        let slack = Duration::from_secs(1);
        assert!(
            summary.loaded_at + slack >= before && summary.loaded_at <= SystemTime::now() + slack,
            "loaded at {:?}, test started at {before:?}",
            summary.loaded_at
        );

        // Through a link: the link's id; through netlink: none.
        assert_eq!(xdp::xdp_link_of(a0).unwrap(), foreign.link_id);

        xdp::remove_xdp(a0).unwrap();
        assert_eq!(xdp::xdp_attachment(a0).unwrap(), None);
        assert_eq!(xdp::xdp_link_of(a0).unwrap(), None);
        // Again: nothing left to remove.
        xdp::remove_xdp(a0).unwrap();
        // The program itself still exists (the fixture holds it) and is still described.
        assert_eq!(
            xdp::program_summary(foreign.prog_id).unwrap().name,
            "foreign_pass"
        );
        drop(foreign);
        assert_eq!(xdp::xdp_attachment(a0).unwrap(), None);
    });
}

#[test]
fn foreign_program_through_a_link_in_driver_mode() {
    foreign_program("nlld", Via::Link, AttachMode::Driver);
}

#[test]
fn foreign_program_through_a_link_in_skb_mode() {
    foreign_program("nlls", Via::Link, AttachMode::Skb);
}

#[test]
fn foreign_program_through_netlink_in_skb_mode() {
    foreign_program("nlns", Via::Netlink, AttachMode::Skb);
}

#[test]
fn foreign_program_through_netlink_in_driver_mode() {
    foreign_program("nlnd", Via::Netlink, AttachMode::Driver);
}

/// The fixture's own detach works (so the tests above prove `remove_xdp`, not the drop).
#[test]
fn dropping_the_foreign_program_detaches_it() {
    let (ns, a0, _) = veth("nldrop");
    ns.run(|| {
        for via in [Via::Link, Via::Netlink] {
            let foreign = ForeignXdp::attach("foreign_drop", a0, via, AttachMode::Skb).unwrap();
            assert_eq!(
                xdp::xdp_attachment(a0).unwrap().map(|a| a.prog_id),
                Some(foreign.prog_id),
                "{via:?}"
            );
            drop(foreign);
            assert_eq!(xdp::xdp_attachment(a0).unwrap(), None, "{via:?}");
        }
    });
}

/// XDP links are global and carry only an interface index: links on interfaces with the
/// same index in other namespaces must not count.
#[test]
fn links_in_other_namespaces_are_not_this_ones() {
    let (one, a1, _) = veth("nlsame1");
    let (two, a2, _) = veth("nlsame2");
    assert_eq!(a1, a2);
    let f1 = one
        .run(|| ForeignXdp::attach("foreign_one", a1, Via::Link, AttachMode::Driver))
        .unwrap();
    let f2 = two
        .run(|| ForeignXdp::attach("foreign_two", a2, Via::Link, AttachMode::Driver))
        .unwrap();
    assert_ne!(f1.link_id, f2.link_id);
    assert_eq!(one.run(|| xdp::xdp_link_of(a1)).unwrap(), f1.link_id);
    assert_eq!(two.run(|| xdp::xdp_link_of(a2)).unwrap(), f2.link_id);

    // Removing in one namespace leaves the other alone.
    one.run(|| xdp::remove_xdp(a1)).unwrap();
    assert_eq!(one.run(|| xdp::xdp_attachment(a1)).unwrap(), None);
    let left = two.run(|| xdp::xdp_attachment(a2)).unwrap().unwrap();
    assert_eq!(left.prog_id, f2.prog_id);
    assert_eq!(two.run(|| xdp::xdp_link_of(a2)).unwrap(), f2.link_id);
}

#[test]
fn missing_interface_or_program_is_not_found() {
    let ns = Netns::new("nlmiss").unwrap();
    ns.run(|| {
        let e = xdp::xdp_attachment(4242).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(
            e.to_string()
                .starts_with("RTM_GETLINK for interface 4242: "),
            "{e}"
        );
        for e in [
            xdp::xdp_link_of(4242).unwrap_err(),
            xdp::remove_xdp(4242).unwrap_err(),
        ] {
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        }
    });
    let e = xdp::program_summary(i32::MAX as u32).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("program 2147483647"), "{e}");
}

/// What the kernel describes for devices that are no VLANs is read as no VLAN: a veth (its
/// link info names kind "veth" and IFLA_LINK its peer), loopback (no link info), and a
/// macvlan where the kernel has the driver (kind "macvlan", IFLA_LINK its lower device). A
/// missing interface is NotFound. Whether `ip link add ... type vlan` works here decides
/// whether a real VLAN device is read too.
#[test]
fn vlan_link_reads_what_the_kernel_describes() {
    use msfilter::iface::vlan::{VlanLink, vlan_link};

    let (ns, a0, b0) = veth("nlvlan");
    let macvlan = ns
        .ip(&["link", "add", "link", "a0", "name", "m0", "type", "macvlan"])
        .is_ok();
    let vlan = ns
        .ip(&[
            "link", "add", "link", "a0", "name", "a0.100", "type", "vlan", "id", "100",
        ])
        .is_ok();
    eprintln!("macvlan device: {macvlan}, 802.1Q device: {vlan}");
    ns.run(|| {
        assert_eq!(vlan_link(a0).unwrap(), None);
        assert_eq!(vlan_link(b0).unwrap(), None);
        assert_eq!(vlan_link(1).unwrap(), None, "loopback");
        if macvlan {
            let m0 = iface::resolve("m0").unwrap().index;
            assert_eq!(vlan_link(m0).unwrap(), None, "macvlan");
        }
        if vlan {
            let sub = iface::resolve("a0.100").unwrap().index;
            assert_eq!(
                vlan_link(sub).unwrap(),
                Some(VlanLink {
                    parent: a0,
                    vid: 100
                })
            );
        }
        let e = vlan_link(4242).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    });
}

#[test]
fn interfaces_lists_the_namespace() {
    let (ns, a0, b0) = veth("nlifs");
    let listed = ns.run(iface::interfaces).unwrap();
    let mut expected = vec![(1, "lo".to_string()), (a0, "a0".into()), (b0, "b0".into())];
    expected.sort();
    assert_eq!(listed, expected);
}

/// Read events until `done` says the ones so far are enough, waiting on the monitor's
/// descriptor; fail after 5 s.
fn events_until(monitor: &mut LinkMonitor, done: impl Fn(&[LinkEvent]) -> bool) -> Vec<LinkEvent> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut events = Vec::new();
    loop {
        events.extend(monitor.read_events().unwrap());
        if done(&events) {
            return events;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out; events so far: {events:#?}");
        let mut pollfd = libc::pollfd {
            fd: monitor.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&raw mut pollfd, 1, left.as_millis() as libc::c_int) };
    }
}

/// Events other than `Changed`, which follow any state change and vary between kernels.
fn significant(events: &[LinkEvent]) -> Vec<LinkEvent> {
    events
        .iter()
        .filter(|e| !matches!(e, LinkEvent::Changed { .. }))
        .cloned()
        .collect()
}

fn position(events: &[LinkEvent], wanted: &LinkEvent) -> usize {
    events
        .iter()
        .position(|e| e == wanted)
        .unwrap_or_else(|| panic!("no {wanted:?} in {events:#?}"))
}

#[test]
fn monitor_reports_added_renamed_removed_and_recreated() {
    let ns = Netns::new("nlmon").unwrap();
    let other = Netns::new("nlmonx").unwrap();
    let mut monitor = ns.run(LinkMonitor::new).unwrap();
    assert_eq!(
        monitor.known().collect::<Vec<_>>(),
        [(1, "lo")],
        "{monitor:?}"
    );
    assert_eq!(significant(&monitor.read_events().unwrap()), []);

    // Another namespace's interfaces are not this monitor's business.
    other
        .ip(&["link", "add", "o0", "type", "veth", "peer", "name", "o1"])
        .unwrap();

    ns.ip(&["link", "add", "m0", "type", "veth", "peer", "name", "m1"])
        .unwrap();
    let m0 = ns.ifindex("m0").unwrap();
    let m1 = ns.ifindex("m1").unwrap();
    ns.ip(&["link", "set", "m0", "up"]).unwrap();
    // A rename needs the interface down.
    ns.ip(&["link", "set", "m0", "down"]).unwrap();
    ns.ip(&["link", "set", "m0", "name", "m2"]).unwrap();
    // Deleting one end of a veth pair deletes both.
    ns.ip(&["link", "del", "m2"]).unwrap();
    // Re-created under the old name: a new interface.
    ns.ip(&["link", "add", "m0", "type", "veth", "peer", "name", "m1"])
        .unwrap();
    let new_m0 = ns.ifindex("m0").unwrap();
    assert_ne!(new_m0, m0);

    let added = |ifindex, name: &str| LinkEvent::Added {
        ifindex,
        name: name.into(),
    };
    let removed = |ifindex, name: &str| LinkEvent::Removed {
        ifindex,
        name: name.into(),
    };
    let renamed = LinkEvent::Renamed {
        ifindex: m0,
        old_name: "m0".into(),
        name: "m2".into(),
    };
    let all = events_until(&mut monitor, |e| e.contains(&added(new_m0, "m0")));
    let events = significant(&all);

    // Each interface's story, in order.
    let first = position(&events, &added(m0, "m0"));
    let peer = position(&events, &added(m1, "m1"));
    let rename = position(&events, &renamed);
    let gone = position(&events, &removed(m0, "m2"));
    let peer_gone = position(&events, &removed(m1, "m1"));
    let again = position(&events, &added(new_m0, "m0"));
    assert!(first < rename && peer < rename, "{events:#?}");
    assert!(rename < gone && rename < peer_gone, "{events:#?}");
    assert!(gone < again && peer_gone < again, "{events:#?}");
    // Up and down were changes of m0 under its first name.
    assert!(
        all[..all.iter().position(|e| *e == renamed).unwrap()].contains(&LinkEvent::Changed {
            ifindex: m0,
            name: "m0".into()
        }),
        "{all:#?}"
    );
    // Nothing else: no other namespace's interfaces, no duplicates.
    let new_m1 = ns.ifindex("m1").unwrap();
    let mut rest = events.clone();
    for e in [
        added(m0, "m0"),
        added(m1, "m1"),
        renamed,
        removed(m0, "m2"),
        removed(m1, "m1"),
        added(new_m0, "m0"),
        added(new_m1, "m1"),
    ] {
        if let Some(i) = rest.iter().position(|x| *x == e) {
            rest.remove(i);
        }
    }
    assert_eq!(rest, [], "unexpected events in {events:#?}");

    let mut known: Vec<_> = monitor.known().map(|(i, n)| (i, n.to_string())).collect();
    known.sort();
    assert_eq!(known, ns.run(iface::interfaces).unwrap());
    assert_eq!(monitor.overflows(), 0);
}

/// Events the kernel dropped (the receive queue overflowed) are made up for from a dump:
/// replaying the events over the first view gives the namespace as it is.
#[test]
fn monitor_recovers_from_lost_events() {
    let ns = Netns::new("nllost").unwrap();
    let mut monitor = ns.run(LinkMonitor::new).unwrap();
    let start: BTreeMap<u32, String> = monitor.known().map(|(i, n)| (i, n.into())).collect();
    // Shrink the queue to the kernel's minimum so a few interfaces overflow it.
    let tiny: libc::c_int = 1;
    // SAFETY: an int option on the monitor's socket, with its size.
    let ret = unsafe {
        libc::setsockopt(
            monitor.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const tiny).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "{}", io::Error::last_os_error());

    for i in 0..12 {
        ns.ip(&[
            "link",
            "add",
            &format!("v{i}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("w{i}"),
        ])
        .unwrap();
    }
    ns.ip(&["link", "set", "v3", "name", "r3"]).unwrap();
    ns.ip(&["link", "del", "v5"]).unwrap();

    let mut view = start;
    for event in monitor.read_events().unwrap() {
        match event {
            LinkEvent::Added { ifindex, name } => {
                assert_eq!(view.insert(ifindex, name), None, "added twice");
            }
            LinkEvent::Renamed {
                ifindex,
                old_name,
                name,
            } => assert_eq!(view.insert(ifindex, name), Some(old_name)),
            LinkEvent::Changed { ifindex, name } => {
                assert_eq!(view.get(&ifindex), Some(&name));
            }
            LinkEvent::Removed { ifindex, name } => {
                assert_eq!(view.remove(&ifindex), Some(name));
            }
        }
    }
    assert!(monitor.overflows() >= 1, "the queue never overflowed");
    let now: BTreeMap<u32, String> = ns.run(iface::interfaces).unwrap().into_iter().collect();
    assert_eq!(view, now);
    assert!(now.values().any(|n| n == "r3") && !now.values().any(|n| n == "v5"));
}
