//! Real traffic through the XDP program in driver mode: a sender namespace with two source
//! addresses sends UDP multicast over a veth pair to a receiver namespace where an
//! application is an any-source member of the group. The filter decides which source the
//! application hears; the counters must equal what was sent.

use std::{net::IpAddr, time::Duration};

use msfilter::{
    datapath::{AttachMode, Datapath, LoadOptions},
    iface,
    policy::GroupFilter,
};
use msfilter_common::{Addr, Reason, maps::ipv4_mapped};
use msfilter_testbed::{
    netns::Link,
    traffic::{Receiver, Sender},
};

const DATAGRAMS: u64 = 300;

fn key_addr(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(a) => ipv4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

struct Case {
    tag: &'static str,
    blocked: IpAddr,
    allowed: IpAddr,
    group: IpAddr,
    mode: msfilter_common::Mode,
}

/// Run one case: `mode` with `listed` = the blocked source for EXCLUDE, the allowed one for
/// INCLUDE.
fn run(case: &Case) {
    let addrs = match case.group {
        IpAddr::V4(_) => ["10.99.0.1/24", "10.99.0.3/24"],
        IpAddr::V6(_) => ["fd99::1/64", "fd99::3/64"],
    };
    let link = Link::new(case.tag, &addrs).unwrap();
    let rx = link.receiver.ifindex(&link.rx).unwrap();
    let tx = link.sender.ifindex(&link.tx).unwrap();

    let mut dp = Datapath::load(&LoadOptions::default()).unwrap();
    let listed = match case.mode {
        msfilter_common::Mode::Exclude => case.blocked,
        msfilter_common::Mode::Include => case.allowed,
    };
    dp.set_filter(
        rx,
        key_addr(case.group),
        Some(GroupFilter::new(case.mode, [key_addr(listed)])),
    )
    .unwrap();
    let mode = link
        .receiver
        .run(|| {
            dp.attach(rx, Some(AttachMode::Driver), false)
                .map(|a| a.mode)
        })
        .unwrap();
    assert_eq!(mode, AttachMode::Driver);

    let receiver = Receiver::new(&link.receiver, case.group, rx);
    let mut blocked = Sender::new(&link.sender, case.blocked, case.group, tx, 64);
    let mut allowed = Sender::new(&link.sender, case.allowed, case.group, tx, 64);
    let before = dp.reason_counters().unwrap();
    for _ in 0..DATAGRAMS {
        blocked.send().unwrap();
        allowed.send().unwrap();
    }
    let got = receiver.take_when_quiet(Duration::from_millis(300));
    let counters = dp.reason_counters().unwrap().since(&before);

    // The application hears every datagram of the allowed source and none of the blocked.
    assert_eq!(got.get(&case.allowed).copied(), Some(DATAGRAMS), "{got:?}");
    assert_eq!(got.get(&case.blocked), None, "{got:?}");

    // XDP counted exactly what was sent.
    let frame = blocked.frame_len();
    let (drop_reason, pass_reason) = match case.mode {
        msfilter_common::Mode::Exclude => (Reason::Excluded, Reason::NotExcluded),
        msfilter_common::Mode::Include => (Reason::NotIncluded, Reason::Included),
    };
    assert_eq!(counters.get(drop_reason).packets, DATAGRAMS);
    assert_eq!(counters.get(drop_reason).bytes, DATAGRAMS * frame);
    assert_eq!(counters.get(pass_reason).packets, DATAGRAMS);
    let group = dp
        .group_counters(rx, key_addr(case.group))
        .unwrap()
        .unwrap();
    assert_eq!(group.dropped.packets, DATAGRAMS);
    assert_eq!(group.dropped.bytes, DATAGRAMS * frame);
    assert_eq!(group.passed.packets, DATAGRAMS);
    assert_eq!(group.passed.bytes, DATAGRAMS * frame);
    let source = dp
        .source_counter(rx, key_addr(case.group), key_addr(listed))
        .unwrap()
        .unwrap();
    assert_eq!(source.packets, DATAGRAMS);
    assert_eq!(source.bytes, DATAGRAMS * frame);

    // Detach removes the filter: both sources reach the application again.
    let removed = dp.detach(rx, false).unwrap();
    assert_eq!(removed, 2, "one group entry and one source entry");
    for _ in 0..10 {
        blocked.send().unwrap();
        allowed.send().unwrap();
    }
    let got = receiver.take_when_quiet(Duration::from_millis(300));
    assert_eq!(got.get(&case.blocked).copied(), Some(10), "{got:?}");
    assert_eq!(got.get(&case.allowed).copied(), Some(10), "{got:?}");
}

#[test]
fn ipv4_exclude_drops_the_blocked_source() {
    run(&Case {
        tag: "e4x",
        blocked: "10.99.0.3".parse().unwrap(),
        allowed: "10.99.0.1".parse().unwrap(),
        group: "232.1.1.1".parse().unwrap(),
        mode: msfilter_common::Mode::Exclude,
    });
}

#[test]
fn ipv4_include_passes_only_the_listed_source() {
    run(&Case {
        tag: "e4i",
        blocked: "10.99.0.3".parse().unwrap(),
        allowed: "10.99.0.1".parse().unwrap(),
        group: "239.1.2.3".parse().unwrap(),
        mode: msfilter_common::Mode::Include,
    });
}

#[test]
fn ipv6_exclude_drops_the_blocked_source() {
    run(&Case {
        tag: "e6x",
        blocked: "fd99::3".parse().unwrap(),
        allowed: "fd99::1".parse().unwrap(),
        group: "ff3e::8000:1".parse().unwrap(),
        mode: msfilter_common::Mode::Exclude,
    });
}

#[test]
fn ipv6_include_passes_only_the_listed_source() {
    run(&Case {
        tag: "e6i",
        blocked: "fd99::3".parse().unwrap(),
        allowed: "fd99::1".parse().unwrap(),
        group: "ff15::42".parse().unwrap(),
        mode: msfilter_common::Mode::Include,
    });
}

#[test]
fn attaching_to_a_missing_interface_is_a_clear_error_and_changes_nothing() {
    let link = Link::new("emiss", &["10.99.0.1/24"]).unwrap();
    let mut dp = Datapath::load(&LoadOptions::default()).unwrap();
    // A name is resolved before the datapath is asked; an index that names no interface
    // is refused by the datapath.
    let err = link.receiver.run(|| iface::resolve("nosuch0")).unwrap_err();
    assert_eq!(err.to_string(), "no interface named \"nosuch0\"");
    let err = link
        .receiver
        .run(|| dp.attach(999_999, None, false).map(|a| a.mode))
        .unwrap_err();
    assert_eq!(err.to_string(), "no interface with index 999999");
    assert_eq!(dp.attachments().count(), 0);
    let rx = link.receiver.ifindex(&link.rx).unwrap();
    // The real interface is still free for us.
    let mode = link
        .receiver
        .run(|| dp.attach(rx, None, false).map(|a| a.mode))
        .unwrap();
    assert_eq!(mode, AttachMode::Driver);
    let err = link
        .receiver
        .run(|| dp.attach(rx, None, false).map(|a| a.mode))
        .unwrap_err();
    assert!(err.to_string().contains("already attached"), "{err}");
}
