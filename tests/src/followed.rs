//! The follower in a test namespace, and the kernel's own view to hold it to.
//!
//! * [`start`]: a [`Follower`] for a namespace (started on a thread inside it).
//! * [`settle`]: process until the follower has nothing left to do.
//! * [`igmp_users`]: the kernel's membership counts (`/proc/net/igmp(6)`), parsed here
//!   independently of the product.
//! * [`kernel_accepts`]: whether the kernel's interface-level filter accepts a source, from
//!   `/proc/net/mcfilter(6)` (read completely, [`crate::kernel::source_filters`]) and the
//!   number of EXCLUDE-mode members — exactly the rule of `ip_check_mc_rcu()`.
//! * [`in_receives`]: `Ip: InReceives` / `Ip6InReceives` of a namespace.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use msfilter::{
    follow::{FollowOptions, Follower},
    policy::GroupFilter,
    sockopt::{addr_of, ip_of},
};
use msfilter_common::{GroupKey, Mode};

use crate::{apps::AppFilter, kernel, netns::Netns};

/// A follower of `interfaces` in `ns`, started there (it reads that namespace's sockets
/// and counts).
pub fn start(ns: &Netns, interfaces: &[u32]) -> Follower {
    let options = FollowOptions {
        interfaces: interfaces.iter().copied().collect(),
        ..FollowOptions::default()
    };
    ns.run(|| Follower::start(options))
        .unwrap_or_else(|e| panic!("starting the follower in {}: {e}", ns.name()))
}

/// Process until the follower is idle (every socket read, every group judged). Panics
/// after 10 s.
pub fn settle(follower: &mut Follower) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        follower
            .process()
            .unwrap_or_else(|e| panic!("follower: {e}"));
        if follower.is_idle() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the follower did not settle in 10 s"
        );
        follower
            .wait_and_process(Duration::from_millis(5))
            .unwrap_or_else(|e| panic!("follower: {e}"));
        if follower.is_idle() {
            return;
        }
    }
}

/// The follower's view of one socket's filter for `group` on `ifindex`, in the apps'
/// words. `None` if the socket is unknown or not a member.
pub fn followed_filter(
    follower: &Follower,
    cookie: u64,
    ifindex: u32,
    group: IpAddr,
) -> Option<AppFilter> {
    let record = follower.socket_by_cookie(cookie)?;
    record
        .memberships
        .get(&GroupKey::new(ifindex, addr_of(group)))
        .map(|f| app_filter(f, group))
}

/// A follower filter of `group` in the apps' words. The sources of an IPv6 group are IPv6
/// addresses, IPv4-mapped ones included (an IPv6 socket may list `::ffff:a.b.c.d`).
pub fn app_filter(filter: &GroupFilter, group: IpAddr) -> AppFilter {
    let mut sources: Vec<IpAddr> = filter
        .sources
        .iter()
        .map(|a| match group {
            IpAddr::V4(_) => ip_of(a),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(*a)),
        })
        .collect();
    sources.sort();
    AppFilter {
        mode: filter.mode,
        sources,
    }
}

/// Process until `done` holds and the follower is idle (for what arrives asynchronously:
/// a release is delayed while anyone — another follower's scan, say — holds a descriptor
/// of the socket). Panics after 10 s.
pub fn settle_until(follower: &mut Follower, mut done: impl FnMut(&Follower) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        settle(follower);
        if done(follower) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the follower did not reach the expected state in 10 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The kernel's membership count of every (interface index, group) in `ns`, from
/// `/proc/net/igmp` and `/proc/net/igmp6`.
pub fn igmp_users(ns: &Netns) -> BTreeMap<(u32, IpAddr), u32> {
    let mut out = BTreeMap::new();
    let v4 = ns
        .read_proc("/proc/net/igmp")
        .expect("reading /proc/net/igmp");
    let mut ifindex = 0;
    for line in v4.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            ifindex = fields[0].parse().unwrap();
        } else if fields.len() >= 2 {
            // The group's four bytes as a native-endian word.
            let word = u32::from_str_radix(fields[0], 16).unwrap();
            let group = IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes()));
            out.insert((ifindex, group), fields[1].parse().unwrap());
        }
    }
    if let Ok(v6) = ns.read_proc("/proc/net/igmp6") {
        for line in v6.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() >= 4 {
                let group =
                    IpAddr::V6(Ipv6Addr::from(u128::from_str_radix(fields[2], 16).unwrap()));
                out.insert(
                    (fields[0].parse().unwrap(), group),
                    fields[3].parse().unwrap(),
                );
            }
        }
    }
    out
}

/// Whether the kernel's interface-level filter of `group` on `device` accepts `source`,
/// given how many of its members are in EXCLUDE mode (the per-socket filters the test
/// read from the applications themselves). The rule of `ip_check_mc_rcu()`: a listed
/// source passes iff some member includes it or not every EXCLUDE member excludes it; an
/// unlisted source passes iff some member is in EXCLUDE mode.
pub fn kernel_accepts(
    listed: &BTreeSet<(IpAddr, u32, u32)>,
    exclude_members: u32,
    source: IpAddr,
) -> bool {
    match listed.iter().find(|(s, _, _)| *s == source) {
        Some(&(_, include, exclude)) => include > 0 || exclude != exclude_members,
        None => exclude_members > 0,
    }
}

/// [`kernel_accepts`] for every source in `universe`, reading the kernel's lists once.
pub fn kernel_view(
    ns: &Netns,
    device: &str,
    group: IpAddr,
    members: &[AppFilter],
    universe: &[IpAddr],
) -> BTreeMap<IpAddr, bool> {
    let listed = kernel::source_filters(ns, device, group);
    let exclude_members = members.iter().filter(|f| f.mode == Mode::Exclude).count() as u32;
    universe
        .iter()
        .map(|s| (*s, kernel_accepts(&listed, exclude_members, *s)))
        .collect()
}

/// Whether a follower filter accepts `source`.
pub fn accepts(filter: &GroupFilter, source: IpAddr) -> bool {
    msfilter::policy::accepts(filter, &addr_of(source))
}

/// `Ip: InReceives` (IPv4, `/proc/net/snmp`) or `Ip6InReceives` (IPv6, `/proc/net/snmp6`):
/// datagrams that reached the IP layer in `ns`.
pub fn in_receives(ns: &Netns, ipv6: bool) -> u64 {
    if ipv6 {
        let text = ns
            .read_proc("/proc/net/snmp6")
            .expect("reading /proc/net/snmp6");
        return text
            .lines()
            .find_map(|l| l.strip_prefix("Ip6InReceives"))
            .and_then(|v| v.trim().parse().ok())
            .expect("Ip6InReceives in /proc/net/snmp6");
    }
    let text = ns
        .read_proc("/proc/net/snmp")
        .expect("reading /proc/net/snmp");
    let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
    let column = names
        .split_whitespace()
        .position(|n| n == "InReceives")
        .expect("InReceives column");
    values
        .split_whitespace()
        .nth(column)
        .unwrap()
        .parse()
        .unwrap()
}
