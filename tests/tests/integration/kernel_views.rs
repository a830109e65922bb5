//! The kernel's listing of interface-level source filters, read through the test bed: it must
//! be complete even when the newest group on the interface has no sources, which
//! `/proc/net/mcfilter*` alone does not guarantee (docs/kernel.md).

use std::net::IpAddr;

use msfilter::sockopt::{Family, MembershipSocket, Request};
use msfilter_testbed::{kernel::source_filters, sequences::Bed};

fn newest_group_without_sources_hides_nothing(family: Family, with: &str, any: &str, s: &str) {
    let bed = Bed::new("kv").expect("namespace with d0");
    let (with, any, s): (IpAddr, IpAddr, IpAddr) = (
        with.parse().unwrap(),
        any.parse().unwrap(),
        s.parse().unwrap(),
    );
    let (a, b) = bed.ns.run(|| {
        let a = MembershipSocket::open(family, bed.ifindex).unwrap();
        a.apply(with, &Request::JoinSourceGroup { source: s })
            .unwrap();
        let b = MembershipSocket::open(family, bed.ifindex).unwrap();
        b.apply(any, &Request::JoinGroup).unwrap();
        (a, b)
    });
    // The any-source group is now the interface's newest and has no source entries.
    let path = match family {
        Family::V4 => "/proc/net/mcfilter",
        Family::V6 => "/proc/net/mcfilter6",
    };
    let raw = bed.ns.read_proc(path).unwrap();
    println!("{family}: the raw listing with an any-source group newest:\n{raw}");
    assert_eq!(
        source_filters(&bed.ns, "d0", with),
        [(s, 1, 0)].into_iter().collect(),
        "{family}: the included source is listed"
    );
    assert!(source_filters(&bed.ns, "d0", any).is_empty());
    drop((a, b));
    // Another test thread that forks holds duplicates of the sockets until its child execs
    // (they are close-on-exec), so the kernel may release them a moment after the drop.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !source_filters(&bed.ns, "d0", with).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        source_filters(&bed.ns, "d0", with).is_empty(),
        "left on close"
    );
}

#[test]
fn ipv4_listing_is_complete() {
    newest_group_without_sources_hides_nothing(Family::V4, "232.61.0.1", "232.61.0.2", "10.0.0.5");
}

#[test]
fn ipv6_listing_is_complete() {
    newest_group_without_sources_hides_nothing(Family::V6, "ff3e::61:1", "ff3e::61:2", "fd00::5");
}
