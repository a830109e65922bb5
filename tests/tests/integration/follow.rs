//! The follower against the kernel, with unmodified applications (plain libc sockets of
//! this process, and python3 processes) in a namespace: after every step the follower's
//! view of each socket equals what `getsockopt` on the application's own socket says, and
//! its merge of a group equals the kernel's interface-level filter (`/proc/net/mcfilter*`
//! read completely, with the kernel's membership count from `/proc/net/igmp*`).

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use msfilter::{
    follow::Completeness,
    sockopt::{Family, Limit, MembershipSocket, Mode, Request, addr_of, errno_name},
};
use msfilter_common::GroupKey;
use msfilter_testbed::{
    apps::{AppFilter, AppSocket, PyApp, PySocket},
    followed::{self, accepts, followed_filter, igmp_users, kernel_view, settle},
    netns::Netns,
    option_sets::OptionSet,
    sequences::{
        Bed, Expect, Interface, Layout, MISSING_IFINDEX, Sequence, StepOutcome,
        shared_socket_table, table,
    },
};

/// `d0`'s IPv4 address in a [`Bed`]: the family-specific source options name it.
const IFACE_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// An address no interface has: family-specific options on the missing interface name it.
const NO_IFACE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// What the application's own socket says: `None` when it is not a member, also when the
/// level cannot hold the group at all (an IPv6 group on an IPv4 socket).
/// The kernel keeps a source listed twice in a full-state filter twice; as a filter it is
/// the same set, which is what the follower holds.
fn own_view(result: Result<Option<AppFilter>, i32>, what: &str) -> Option<AppFilter> {
    match result {
        Ok(f) => f.map(|mut f| {
            f.sources.dedup();
            f
        }),
        Err(e) if e == libc::ENOPROTOOPT || e == libc::EINVAL || e == libc::EOPNOTSUPP => None,
        Err(e) => panic!("{what}: getsockopt failed: {}", errno_name(e)),
    }
}

/// The sources a group's checks look at: every source the sequence names, plus one none
/// of them does.
fn universe(seq: &Sequence) -> Vec<IpAddr> {
    let mut all: BTreeSet<IpAddr> = seq
        .steps
        .iter()
        .flat_map(|s| match &s.request {
            Request::BlockSource { source: a }
            | Request::UnblockSource { source: a }
            | Request::JoinSourceGroup { source: a }
            | Request::LeaveSourceGroup { source: a } => vec![*a],
            Request::SetFilter { sources, .. } => sources.clone(),
            Request::JoinGroup | Request::LeaveGroup => vec![],
        })
        .filter(|a| Family::of(*a) == seq.family)
        .collect();
    all.insert(match seq.family {
        Family::V4 => ip("10.77.8.8"),
        Family::V6 => ip("fd77:8::8"),
    });
    all.into_iter().collect()
}

/// Check the follower's merge of `group` against the kernel's interface view and count,
/// given the members' own filters.
fn check_group(
    ns: &Netns,
    follower: &msfilter::follow::Follower,
    ifindex: u32,
    group: IpAddr,
    members: &[AppFilter],
    universe: &[IpAddr],
    what: &str,
) {
    let key = GroupKey::new(ifindex, addr_of(group));
    let users = igmp_users(ns).get(&(ifindex, group)).copied().unwrap_or(0);
    assert_eq!(
        users as usize,
        members.len(),
        "{what}: the kernel counts {users} memberships of {group}, the apps hold {}",
        members.len()
    );
    let Some(view) = follower.group(&key) else {
        assert!(
            members.is_empty(),
            "{what}: the follower has no group {group}, the apps hold {members:?}"
        );
        return;
    };
    assert!(
        !members.is_empty(),
        "{what}: the follower still has {group}: {view:?}"
    );
    assert_eq!(view.users, users, "{what}: users of {group}");
    assert_eq!(
        view.completeness,
        Completeness::Complete,
        "{what}: {group} is not complete: {view:?}"
    );
    assert_eq!(
        view.enforced, view.merged,
        "{what}: {group} enforces its merge"
    );
    let kernel = kernel_view(ns, "d0", group, members, universe);
    for (source, kernel_accepts) in kernel {
        assert_eq!(
            accepts(&view.merged, source),
            kernel_accepts,
            "{what}: source {source} of {group}: the kernel {} it, the follower's merge {:?} \
             does not agree (members {members:?})",
            if kernel_accepts { "accepts" } else { "drops" },
            view.merged
        );
    }
}

/// The kernel's verdict a step must get (applications are not validated).
fn expected(step: &msfilter_testbed::sequences::Step) -> Expect {
    step.expect.kernel()
}

fn outcome(result: Result<(), i32>) -> StepOutcome {
    match result {
        Ok(()) => StepOutcome::Ok,
        Err(e) => StepOutcome::Errno(errno_name(e)),
    }
}

/// Set a sequence's limits in the namespace; returns the previous values.
fn set_limits(ns: &Netns, seq: &Sequence) -> Vec<(Limit, u32)> {
    ns.run(|| {
        seq.limits
            .iter()
            .map(|&(limit, value)| {
                let previous = limit.read().unwrap();
                limit.set(value).unwrap();
                (limit, previous)
            })
            .collect()
    })
}

fn restore_limits(ns: &Netns, previous: &[(Limit, u32)]) {
    ns.run(|| {
        for &(limit, value) in previous {
            limit.set(value).unwrap();
        }
    });
}

/// Play every sequence on plain libc sockets, with one follower watching the namespace;
/// after every step compare each socket and each group with the kernel.
fn run_sequences(sequences: &[Sequence]) {
    let bed = Bed::new("fseq").unwrap();
    let mut follower = followed::start(&bed.ns, &[bed.ifindex]);
    let mut failures = Vec::new();
    for seq in sequences {
        let previous = set_limits(&bed.ns, seq);
        let (ifindex, iface) = match seq.interface {
            Interface::Given => (bed.ifindex, IFACE_V4),
            Interface::Missing => (MISSING_IFINDEX, NO_IFACE_V4),
        };
        let sockets: Vec<AppSocket> = match seq.layout {
            Layout::SocketPerGroup => seq
                .groups
                .iter()
                .map(|_| AppSocket::udp(&bed.ns, seq.family))
                .collect(),
            Layout::OneSocket => vec![AppSocket::udp(&bed.ns, seq.family)],
        };
        let socket_of = |name: &str| match seq.layout {
            Layout::SocketPerGroup => {
                &sockets[seq.groups.iter().position(|(n, _)| n == name).unwrap()]
            }
            Layout::OneSocket => &sockets[0],
        };
        let universe = universe(seq);
        for (i, step) in seq.steps.iter().enumerate() {
            let what = format!("{} step {} `{}`", seq.name, i + 1, step.line);
            let socket = socket_of(&step.group);
            let group = seq.group_addr(&step.group);
            let got = outcome(socket.apply(group, ifindex, iface, &step.request, step.set));
            if !expected(step).matches(&got) {
                failures.push(format!("{what}: expected {}, got {got}", expected(step)));
            }
            settle(&mut follower);
            for (name, addr) in &seq.groups {
                let s = socket_of(name);
                let own = own_view(s.filter(*addr, ifindex), &what);
                let followed = followed_filter(&follower, s.cookie(), ifindex, *addr);
                if own != followed {
                    failures.push(format!(
                        "{what}: {name} ({addr}): the socket says {own:?}, the follower {followed:?}"
                    ));
                }
            }
            if seq.interface == Interface::Given {
                for (_, addr) in &seq.groups {
                    if Family::of(*addr) != seq.family {
                        continue;
                    }
                    let members: Vec<AppFilter> = sockets
                        .iter()
                        .filter_map(|s| own_view(s.filter(*addr, ifindex), &what))
                        .collect();
                    check_group(
                        &bed.ns, &follower, ifindex, *addr, &members, &universe, &what,
                    );
                }
            }
        }
        let cookies: Vec<u64> = sockets.iter().map(AppSocket::cookie).collect();
        drop(sockets);
        restore_limits(&bed.ns, &previous);
        followed::settle_until(&mut follower, |f| {
            cookies.iter().all(|c| f.socket_by_cookie(*c).is_none()) && f.groups().count() == 0
        });
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let stats = follower.stats();
    assert_eq!(stats.hooks.lost, 0, "{stats:?}");
}

fn family(tag: &str) -> Vec<Sequence> {
    table()
        .into_iter()
        .filter(|s| s.name.contains(tag))
        .collect()
}

/// Every option family (`MCAST_*`, `IP_*` with `IP_MSFILTER`, `IPV6_JOIN/LEAVE_GROUP`) and
/// every misordered sequence of the kernel's errno table, IPv4.
#[test]
fn ipv4_sequences_on_plain_sockets() {
    run_sequences(&family("/v4/"));
}

#[test]
fn ipv6_sequences_on_plain_sockets() {
    run_sequences(&family("/v6/"));
}

/// One socket holding many groups (`igmp_max_memberships`).
#[test]
fn shared_socket_sequences_on_plain_sockets() {
    run_sequences(&shared_socket_table());
}

/// The same sequences from python3 processes (their own encoding of every structure),
/// where every address is of the sequence's family.
#[test]
fn sequences_from_python_apps() {
    let sequences: Vec<Sequence> = table()
        .into_iter()
        .filter(|s| s.layout == Layout::SocketPerGroup && s.interface == Interface::Given)
        .filter(all_of_its_family)
        .collect();
    assert!(sequences.len() > 100, "{} sequences", sequences.len());
    let bed = Bed::new("fpy").unwrap();
    let mut follower = followed::start(&bed.ns, &[bed.ifindex]);
    let mut app = PyApp::start(&bed.ns);
    let mut failures = Vec::new();
    for seq in &sequences {
        let previous = set_limits(&bed.ns, seq);
        let sockets: Vec<PySocket> = seq.groups.iter().map(|_| app.open(seq.family)).collect();
        let socket_of =
            |name: &str| sockets[seq.groups.iter().position(|(n, _)| n == name).unwrap()];
        for (i, step) in seq.steps.iter().enumerate() {
            let what = format!("python {} step {} `{}`", seq.name, i + 1, step.line);
            let group = seq.group_addr(&step.group);
            let got = outcome(app.apply(
                socket_of(&step.group),
                group,
                bed.ifindex,
                IFACE_V4,
                &step.request,
                step.set,
            ));
            if !expected(step).matches(&got) {
                failures.push(format!("{what}: expected {}, got {got}", expected(step)));
            }
            settle(&mut follower);
            for (name, addr) in &seq.groups {
                let s = socket_of(name);
                let own = own_view(app.filter(s, *addr, bed.ifindex), &what);
                let cookie = app.cookie(s);
                let followed = followed_filter(&follower, cookie, bed.ifindex, *addr);
                if own != followed {
                    failures.push(format!(
                        "{what}: {name} ({addr}): the socket says {own:?}, the follower {followed:?}"
                    ));
                }
            }
        }
        for s in sockets {
            app.close(s);
        }
        restore_limits(&bed.ns, &previous);
    }
    followed::settle_until(&mut follower, |f| f.groups().count() == 0);
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every group a real multicast group of the sequence's family, every source of it too.
fn all_of_its_family(seq: &Sequence) -> bool {
    let groups = seq
        .groups
        .iter()
        .all(|(_, a)| Family::of(*a) == seq.family && a.is_multicast_like());
    let sources = seq.steps.iter().all(|s| match &s.request {
        Request::BlockSource { source: a }
        | Request::UnblockSource { source: a }
        | Request::JoinSourceGroup { source: a }
        | Request::LeaveSourceGroup { source: a } => Family::of(*a) == seq.family,
        Request::SetFilter { sources, .. } => sources.iter().all(|a| Family::of(*a) == seq.family),
        Request::JoinGroup | Request::LeaveGroup => true,
    });
    groups && sources
}

trait MulticastLike {
    fn is_multicast_like(&self) -> bool;
}

impl MulticastLike for IpAddr {
    /// A real multicast group of its own family (not an IPv4-mapped one).
    fn is_multicast_like(&self) -> bool {
        match self {
            IpAddr::V4(a) => a.is_multicast(),
            IpAddr::V6(a) => a.is_multicast() && a.to_ipv4_mapped().is_none(),
        }
    }
}

/// Two unmodified applications and one socket of msfilter's library on one group, with
/// INCLUDE and EXCLUDE lists mixed: the follower's merge is the kernel's, source by source.
#[test]
fn two_apps_and_a_library_socket_merge_as_the_kernel_does() {
    for (family, g, s) in [
        (
            Family::V4,
            "232.7.7.7",
            [
                "10.77.1.1",
                "10.77.1.2",
                "10.77.1.3",
                "10.77.1.4",
                "10.77.1.5",
            ],
        ),
        (
            Family::V6,
            "ff3e::7:7",
            [
                "fd77:1::1",
                "fd77:1::2",
                "fd77:1::3",
                "fd77:1::4",
                "fd77:1::5",
            ],
        ),
    ] {
        let bed = Bed::new("fmrg").unwrap();
        let mut follower = followed::start(&bed.ns, &[bed.ifindex]);
        let (g, s) = (ip(g), s.map(ip));
        let what = format!("{family}");
        // python: INCLUDE {S1, S2} (two source joins, family-specific for IPv4).
        let mut py = PyApp::start(&bed.ns);
        let a = py.open(family);
        for src in [s[0], s[1]] {
            py.apply(
                a,
                g,
                bed.ifindex,
                IFACE_V4,
                &Request::JoinSourceGroup { source: src },
                OptionSet::FamilySpecific,
            )
            .unwrap();
        }
        // libc: EXCLUDE {S2, S3} in one full-state filter.
        let b = AppSocket::udp(&bed.ns, family);
        b.apply(
            g,
            bed.ifindex,
            IFACE_V4,
            &Request::JoinGroup,
            OptionSet::ProtocolIndependent,
        )
        .unwrap();
        b.apply(
            g,
            bed.ifindex,
            IFACE_V4,
            &Request::SetFilter {
                mode: Mode::Exclude,
                sources: vec![s[1], s[2]],
            },
            OptionSet::FamilySpecific,
        )
        .unwrap();
        // msfilter's library: EXCLUDE {S3, S4} by blocks.
        let c = bed
            .ns
            .run(|| MembershipSocket::open(family, bed.ifindex))
            .unwrap();
        c.apply(g, &Request::JoinGroup).unwrap();
        for src in [s[2], s[3]] {
            c.apply(g, &Request::BlockSource { source: src }).unwrap();
        }
        settle(&mut follower);
        let members = vec![
            py.filter(a, g, bed.ifindex).unwrap().unwrap(),
            b.filter(g, bed.ifindex).unwrap().unwrap(),
            msfilter_testbed::apps::read_filter(std::os::fd::AsFd::as_fd(&c), g, bed.ifindex)
                .unwrap()
                .unwrap(),
        ];
        let mut universe = s.to_vec();
        universe.push(match family {
            Family::V4 => ip("10.77.9.1"),
            Family::V6 => ip("fd77:9::1"),
        });
        check_group(
            &bed.ns,
            &follower,
            bed.ifindex,
            g,
            &members,
            &universe,
            &what,
        );
        // EXCLUDE ({S2,S3} ∩ {S3,S4}) − {S1,S2} = EXCLUDE {S3}.
        let view = follower
            .group(&GroupKey::new(bed.ifindex, addr_of(g)))
            .unwrap();
        assert_eq!(
            followed::app_filter(&view.merged, g),
            AppFilter {
                mode: Mode::Exclude,
                sources: vec![s[2]]
            },
            "{what}"
        );
        assert_eq!(view.members.len(), 3, "{what}: {view:?}");
        let pids: BTreeSet<u32> = view.members.iter().map(|m| m.pid).collect();
        assert!(
            pids.contains(&py.pid) && pids.contains(&std::process::id()),
            "{pids:?}"
        );
        assert!(view.members.iter().any(|m| m.comm == "python3"), "{view:?}");
        // The python app leaves: EXCLUDE ({S2,S3} ∩ {S3,S4}) = EXCLUDE {S3} still, and S1
        // is no longer included by anyone but passes (EXCLUDE lists do not name it).
        py.close(a);
        settle(&mut follower);
        let members = vec![members[1].clone(), members[2].clone()];
        check_group(
            &bed.ns,
            &follower,
            bed.ifindex,
            g,
            &members,
            &universe,
            &what,
        );
    }
}

/// An IPv6 socket holding an IPv4 membership (`SOL_IP` options on an `AF_INET6` socket)
/// counts for the IPv4 group.
#[test]
fn an_ipv6_socket_can_hold_ipv4_memberships() {
    let bed = Bed::new("fdual").unwrap();
    let mut follower = followed::start(&bed.ns, &[bed.ifindex]);
    let g = ip("232.8.8.8");
    let v6 = AppSocket::udp(&bed.ns, Family::V6);
    v6.apply_as(
        Family::V4,
        g,
        bed.ifindex,
        IFACE_V4,
        &Request::JoinGroup,
        OptionSet::FamilySpecific,
    )
    .unwrap();
    v6.apply_as(
        Family::V4,
        g,
        bed.ifindex,
        IFACE_V4,
        &Request::BlockSource {
            source: ip("10.77.1.1"),
        },
        OptionSet::ProtocolIndependent,
    )
    .unwrap();
    settle(&mut follower);
    let own = v6.filter(g, bed.ifindex).unwrap().unwrap();
    assert_eq!(own.sources, vec![ip("10.77.1.1")]);
    assert_eq!(
        followed_filter(&follower, v6.cookie(), bed.ifindex, g),
        Some(own.clone())
    );
    check_group(
        &bed.ns,
        &follower,
        bed.ifindex,
        g,
        &[own],
        &[ip("10.77.1.1"), ip("10.77.1.2")],
        "dual",
    );
    let record = follower.socket_by_cookie(v6.cookie()).unwrap();
    assert_eq!(record.family, Family::V6);
}

/// Closing a socket, and `kill -9` of the application holding the others, end their
/// contribution; the groups they alone held leave the follower's output.
#[test]
fn close_and_kill_end_a_sockets_contribution() {
    let bed = Bed::new("fkill").unwrap();
    let mut follower = followed::start(&bed.ns, &[bed.ifindex]);
    let (g, h) = (ip("232.2.2.2"), ip("ff3e::2:2"));
    let mut py = PyApp::start(&bed.ns);
    let a = py.open(Family::V4);
    let b = py.open(Family::V6);
    py.apply(
        a,
        g,
        bed.ifindex,
        IFACE_V4,
        &Request::JoinSourceGroup {
            source: ip("10.77.1.1"),
        },
        OptionSet::FamilySpecific,
    )
    .unwrap();
    py.apply(
        b,
        h,
        bed.ifindex,
        IFACE_V4,
        &Request::JoinGroup,
        OptionSet::FamilySpecific,
    )
    .unwrap();
    let other = AppSocket::udp(&bed.ns, Family::V4);
    other
        .apply(
            g,
            bed.ifindex,
            IFACE_V4,
            &Request::JoinSourceGroup {
                source: ip("10.77.1.2"),
            },
            OptionSet::ProtocolIndependent,
        )
        .unwrap();
    settle(&mut follower);
    let (ca, cb) = (py.cookie(a), py.cookie(b));
    let key_g = GroupKey::new(bed.ifindex, addr_of(g));
    let key_h = GroupKey::new(bed.ifindex, addr_of(h));
    assert_eq!(follower.group(&key_g).unwrap().members.len(), 2);
    assert!(follower.group(&key_h).is_some());
    let _ = follower.take_changes();

    py.close(a);
    followed::settle_until(&mut follower, |f| f.socket_by_cookie(ca).is_none());
    let view = follower.group(&key_g).unwrap();
    assert_eq!(view.members.len(), 1);
    assert_eq!(
        followed::app_filter(&view.enforced, g),
        AppFilter {
            mode: Mode::Include,
            sources: vec![ip("10.77.1.2")]
        }
    );
    let changes = follower.take_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].0, key_g);

    py.kill();
    followed::settle_until(&mut follower, |f| f.socket_by_cookie(cb).is_none());
    assert!(
        follower.group(&key_h).is_none(),
        "the killed app's group is gone"
    );
    assert_eq!(follower.take_changes(), vec![(key_h, None)]);
    assert_eq!(igmp_users(&bed.ns).get(&(bed.ifindex, h)), None);
    other.close();
    followed::settle_until(&mut follower, |f| f.groups().count() == 0);
    assert_eq!(follower.take_changes(), vec![(key_g, None)]);
}

/// Sockets that joined before the follower started are found by its start-up scan, with
/// their filters, and the groups are complete at once.
#[test]
fn sockets_from_before_the_follower_are_found() {
    let bed = Bed::new("fpre").unwrap();
    let (g, h) = (ip("232.3.3.3"), ip("ff3e::3:3"));
    let mut py = PyApp::start(&bed.ns);
    let a = py.open(Family::V6);
    py.apply(
        a,
        h,
        bed.ifindex,
        IFACE_V4,
        &Request::JoinGroup,
        OptionSet::FamilySpecific,
    )
    .unwrap();
    py.apply(
        a,
        h,
        bed.ifindex,
        IFACE_V4,
        &Request::BlockSource {
            source: ip("fd77:1::9"),
        },
        OptionSet::ProtocolIndependent,
    )
    .unwrap();
    let b = AppSocket::udp(&bed.ns, Family::V4);
    b.apply(
        g,
        bed.ifindex,
        IFACE_V4,
        &Request::SetFilter {
            mode: Mode::Include,
            sources: vec![],
        },
        OptionSet::FamilySpecific,
    )
    .unwrap_err();
    b.apply(
        g,
        bed.ifindex,
        IFACE_V4,
        &Request::JoinSourceGroup {
            source: ip("10.77.1.3"),
        },
        OptionSet::FamilySpecific,
    )
    .unwrap();
    let mut follower = followed::start(&bed.ns, &[bed.ifindex]);
    // Found by the scan: known at once, enforced after the promotion delay.
    assert!(follower.socket_by_cookie(b.cookie()).is_some());
    assert!(follower.socket_by_cookie(py.cookie(a)).is_some());
    settle(&mut follower);
    assert_eq!(
        followed_filter(&follower, py.cookie(a), bed.ifindex, h),
        py.filter(a, h, bed.ifindex).unwrap()
    );
    assert_eq!(
        followed_filter(&follower, b.cookie(), bed.ifindex, g),
        b.filter(g, bed.ifindex).unwrap()
    );
    for (group, member) in [
        (h, py.filter(a, h, bed.ifindex).unwrap().unwrap()),
        (g, b.filter(g, bed.ifindex).unwrap().unwrap()),
    ] {
        let universe = [
            ip("10.77.1.3"),
            ip("10.77.1.4"),
            ip("fd77:1::9"),
            ip("fd77:1::8"),
        ]
        .into_iter()
        .filter(|s| s.is_ipv4() == group.is_ipv4())
        .collect::<Vec<_>>();
        check_group(
            &bed.ns,
            &follower,
            bed.ifindex,
            group,
            &[member],
            &universe,
            "pre-existing",
        );
    }
    // The sockets found by the scan are followed from then on like any other.
    b.apply(
        g,
        bed.ifindex,
        IFACE_V4,
        &Request::JoinSourceGroup {
            source: ip("10.77.1.4"),
        },
        OptionSet::FamilySpecific,
    )
    .unwrap();
    settle(&mut follower);
    assert_eq!(
        followed_filter(&follower, b.cookie(), bed.ifindex, g),
        b.filter(g, bed.ifindex).unwrap()
    );
    assert_eq!(
        followed_filter(&follower, b.cookie(), bed.ifindex, g)
            .unwrap()
            .sources,
        vec![ip("10.77.1.3"), ip("10.77.1.4")]
    );
    drop(follower);
    // A second follower (a restart) finds the same.
    let follower = followed::start(&bed.ns, &[bed.ifindex]);
    assert_eq!(
        followed_filter(&follower, b.cookie(), bed.ifindex, g),
        b.filter(g, bed.ifindex).unwrap()
    );
}

/// When the kernel counts more memberships than the follower knows sockets for — here a
/// VXLAN device's own join of the group, and a socket in a descriptor table the follower
/// cannot see — the group passes every source (EXCLUDE {}); once the counts agree the merge
/// is enforced again.
#[test]
fn unknown_members_make_a_group_pass_every_source() {
    let bed = Bed::new("funk").unwrap();
    let mut follower = followed::start(&bed.ns, &[bed.ifindex]);
    let g = ip("239.4.4.4");
    let key = GroupKey::new(bed.ifindex, addr_of(g));
    let app = AppSocket::udp(&bed.ns, Family::V4);
    app.apply(
        g,
        bed.ifindex,
        IFACE_V4,
        &Request::JoinSourceGroup {
            source: ip("10.77.1.1"),
        },
        OptionSet::FamilySpecific,
    )
    .unwrap();
    settle(&mut follower);
    let include_s1 = AppFilter {
        mode: Mode::Include,
        sources: vec![ip("10.77.1.1")],
    };
    assert_eq!(
        followed::app_filter(&follower.group(&key).unwrap().enforced, g),
        include_s1
    );

    // A kernel-internal membership: VXLAN joins its group on the underlay device.
    bed.ns
        .ip(&[
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "42",
            "group",
            "239.4.4.4",
            "dev",
            "d0",
            "dstport",
            "4789",
        ])
        .unwrap();
    bed.ns.ip(&["link", "set", "vx0", "up"]).unwrap();
    // No socket option ran: the periodic re-count (due within the recheck interval, 1 s)
    // finds it.
    let added = std::time::Instant::now();
    assert!(follower.next_deadline() <= added + Duration::from_secs(1));
    followed::settle_until(&mut follower, |f| {
        f.group(&key).is_some_and(|g| !g.completeness.is_complete())
    });
    assert!(
        added.elapsed() < Duration::from_secs(2),
        "{:?}",
        added.elapsed()
    );
    let view = follower.group(&key).unwrap();
    assert_eq!(
        view.completeness,
        Completeness::UnknownMembers { users: 2, known: 1 },
        "{view:?}"
    );
    assert_eq!(
        followed::app_filter(&view.enforced, g),
        AppFilter {
            mode: Mode::Exclude,
            sources: vec![]
        }
    );
    assert_eq!(
        followed::app_filter(&view.merged, g),
        include_s1,
        "the known part"
    );
    bed.ns.ip(&["link", "del", "vx0"]).unwrap();
    // An option on any socket brings a re-count at once.
    app.apply(
        g,
        bed.ifindex,
        IFACE_V4,
        &Request::JoinSourceGroup {
            source: ip("10.77.1.1"),
        },
        OptionSet::FamilySpecific,
    )
    .unwrap_err();
    settle(&mut follower);
    assert_eq!(
        followed::app_filter(&follower.group(&key).unwrap().enforced, g),
        include_s1
    );

    // A socket in a thread with its own descriptor table: pidfd_getfd cannot reach it.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (joined_tx, joined_rx) = std::sync::mpsc::channel();
    let ns_path = bed.ns.path();
    let ifindex = bed.ifindex;
    let hidden = std::thread::spawn(move || {
        let ns = std::fs::File::open(ns_path).unwrap();
        // SAFETY: setns and unshare affect only this thread.
        unsafe {
            assert_eq!(
                libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET),
                0
            );
            assert_eq!(libc::unshare(libc::CLONE_FILES), 0);
        }
        let s = AppSocket::udp_here(Family::V4);
        s.apply(
            g,
            ifindex,
            IFACE_V4,
            &Request::JoinGroup,
            OptionSet::FamilySpecific,
        )
        .unwrap();
        joined_tx.send(()).unwrap();
        rx.recv().unwrap();
        drop(s);
    });
    joined_rx.recv().unwrap();
    settle(&mut follower);
    let view = follower.group(&key).unwrap();
    assert_eq!(
        view.completeness,
        Completeness::UnknownMembers { users: 2, known: 1 },
        "{view:?}"
    );
    assert_eq!(view.enforced.mode, Mode::Exclude);
    assert!(view.enforced.sources.is_empty());
    assert!(follower.stats().unreachable >= 1);
    tx.send(()).unwrap();
    hidden.join().unwrap();
    // Its release is reported; a re-count finds the counts agree again.
    followed::settle_until(&mut follower, |f| {
        f.group(&key).is_some_and(|g| g.completeness.is_complete())
    });
    assert_eq!(
        followed::app_filter(&follower.group(&key).unwrap().enforced, g),
        include_s1
    );
}

/// More options than the ring buffer holds, without the follower reading: events are
/// lost, the hooks count it, the follower rescans and ends where the kernel is.
#[test]
fn lost_events_are_detected_and_rescanned() {
    let bed = Bed::new("flost").unwrap();
    let mut follower = followed::start(&bed.ns, &[bed.ifindex]);
    let g = ip("232.5.5.5");
    let app = AppSocket::udp(&bed.ns, Family::V4);
    app.apply(
        g,
        bed.ifindex,
        IFACE_V4,
        &Request::JoinGroup,
        OptionSet::ProtocolIndependent,
    )
    .unwrap();
    let s = ip("10.77.1.5");
    // 12,000 options (the ring holds about 8,700), ending blocked.
    for i in 0..12_000 {
        let req = if i % 2 == 0 {
            Request::BlockSource { source: s }
        } else {
            Request::UnblockSource { source: s }
        };
        app.apply(g, bed.ifindex, IFACE_V4, &req, OptionSet::FamilySpecific)
            .unwrap();
    }
    app.apply(
        g,
        bed.ifindex,
        IFACE_V4,
        &Request::BlockSource { source: s },
        OptionSet::FamilySpecific,
    )
    .unwrap();
    settle(&mut follower);
    let stats = follower.stats();
    assert!(stats.hooks.lost > 0, "{stats:?}");
    assert!(stats.scans >= 2, "a rescan after the loss: {stats:?}");
    let own = app.filter(g, bed.ifindex).unwrap().unwrap();
    assert_eq!(own.sources, vec![s]);
    assert_eq!(
        followed_filter(&follower, app.cookie(), bed.ifindex, g),
        Some(own.clone())
    );
    check_group(
        &bed.ns,
        &follower,
        bed.ifindex,
        g,
        &[own],
        &[s, ip("10.77.1.6")],
        "after loss",
    );
}

/// Bad input is refused with a clear error and nothing attached: an interface that does
/// not exist, a directory that is not a cgroup.
#[test]
fn bad_options_are_refused() {
    use msfilter::follow::{FollowOptions, Follower};
    let bed = Bed::new("fbad").unwrap();
    let missing = FollowOptions {
        interfaces: [MISSING_IFINDEX].into(),
        ..FollowOptions::default()
    };
    let err = bed.ns.run(|| Follower::start(missing)).err().unwrap();
    assert_eq!(
        err.to_string(),
        "no interface with index 999999 in the followed network namespace"
    );
    let not_a_cgroup = FollowOptions {
        interfaces: [bed.ifindex].into(),
        cgroup: Some("/proc".into()),
        ..FollowOptions::default()
    };
    let err = bed.ns.run(|| Follower::start(not_a_cgroup)).err().unwrap();
    let text = err.to_string();
    assert!(
        text.starts_with("attaching msf_release to the cgroup /proc failed:"),
        "{text}"
    );
    // A follower that starts fine refuses a missing interface later, and keeps following.
    let mut follower = followed::start(&bed.ns, &[bed.ifindex]);
    let err = bed.ns.run(|| follower.follow(MISSING_IFINDEX)).unwrap_err();
    assert!(matches!(
        err,
        msfilter::follow::FollowError::NoSuchInterface(999_999)
    ));
    assert_eq!(
        follower.interfaces().iter().copied().collect::<Vec<_>>(),
        vec![bed.ifindex]
    );
}
