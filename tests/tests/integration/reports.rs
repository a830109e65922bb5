//! Because msfilter applies every request as the real socket option, the kernel tells the
//! network: captured in the sender's namespace, the receiver's IGMPv3 (IPv4) and MLDv2 (IPv6)
//! reports carry group records that match each request.

use std::{net::IpAddr, time::Duration};

use msfilter_testbed::{
    capture::{
        ALLOW_NEW_SOURCES, BLOCK_OLD_SOURCES, CHANGE_TO_EXCLUDE, CHANGE_TO_INCLUDE, Capture,
        GroupRecord,
    },
    daemon::Daemon,
    netns::Link,
};

/// Reports are sent at once on a change (then repeated); allow for scheduling.
const WAIT: Duration = Duration::from_secs(5);

/// The policy in force after a request: mode and listed sources (`None`: not a member).
type Policy<'a> = Option<(u8, &'a [IpAddr])>;

/// Whether a record agrees with `policy`. A host may fold sources it is still retransmitting
/// from an earlier change into a record, so ALLOW/BLOCK lists are checked source by source
/// against the policy rather than for equality; CHANGE_TO lists must equal the new list.
fn consistent(record: &GroupRecord, policy: Policy<'_>) -> bool {
    let accepted = |s: &IpAddr| match policy {
        None => false,
        Some((CHANGE_TO_INCLUDE, list)) => list.contains(s),
        Some((_, list)) => !list.contains(s),
    };
    let same = |list: &[IpAddr]| {
        let mut a = record.sources.clone();
        let mut b = list.to_vec();
        a.sort();
        b.sort();
        a == b
    };
    match (record.kind, policy) {
        (ALLOW_NEW_SOURCES, _) => record.sources.iter().all(accepted),
        (BLOCK_OLD_SOURCES, _) => !record.sources.iter().any(accepted),
        (CHANGE_TO_INCLUDE, None) => record.sources.is_empty(),
        (kind, Some((mode, list))) => kind == mode && same(list),
        _ => false,
    }
}

/// Wait for a record of `kind` for `group` that lists `changed` and agrees with `policy`.
fn expect(
    capture: &Capture,
    after: &str,
    kind: u8,
    group: IpAddr,
    changed: &[IpAddr],
    policy: Policy<'_>,
) {
    let (found, seen) = capture.wait_for(WAIT, |r: &GroupRecord| {
        r.kind == kind
            && r.group == group
            && changed.iter().all(|s| r.sources.contains(s))
            && consistent(r, policy)
    });
    assert!(
        found,
        "after {after}: no report record of type {kind} for {group} listing {changed:?} \
         consistent with the policy; records seen: {seen:?}"
    );
}

fn run(tag: &str, group: &str, s1: &str, s2: &str, prefix: &str) {
    let link = Link::new(tag, &[&format!("{s1}/{prefix}")]).unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    let capture = Capture::open(&link.sender, &link.tx).unwrap();
    let rx = link.rx.as_str();
    let g: IpAddr = group.parse().unwrap();
    let (a, b): (IpAddr, IpAddr) = (s1.parse().unwrap(), s2.parse().unwrap());
    let (ex, inc) = (CHANGE_TO_EXCLUDE, CHANGE_TO_INCLUDE);

    daemon.cli_ok(&["join", rx, group]);
    expect(&capture, "join", ex, g, &[], Some((ex, &[])));
    daemon.cli_ok(&["block", rx, group, s1]);
    expect(
        &capture,
        "block",
        BLOCK_OLD_SOURCES,
        g,
        &[a],
        Some((ex, &[a])),
    );
    daemon.cli_ok(&["unblock", rx, group, s1]);
    expect(
        &capture,
        "unblock",
        ALLOW_NEW_SOURCES,
        g,
        &[a],
        Some((ex, &[])),
    );
    daemon.cli_ok(&["filter", "set", rx, group, "--mode", "include", s2]);
    expect(
        &capture,
        "filter set include",
        inc,
        g,
        &[b],
        Some((inc, &[b])),
    );
    daemon.cli_ok(&["join-source", rx, group, s1]);
    expect(
        &capture,
        "join-source",
        ALLOW_NEW_SOURCES,
        g,
        &[a],
        Some((inc, &[a, b])),
    );
    daemon.cli_ok(&["leave", rx, group]);
    expect(&capture, "leave", BLOCK_OLD_SOURCES, g, &[a, b], None);
}

#[test]
fn igmpv3_reports_follow_the_requests() {
    run("igmp", "232.11.11.11", "10.99.0.1", "10.99.0.9", "24");
}

#[test]
fn mldv2_reports_follow_the_requests() {
    run("mld", "ff3e::11:11", "fd99::1", "fd99::9", "64");
}
