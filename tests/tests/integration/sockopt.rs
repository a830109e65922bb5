//! The socket-option layer against the kernel, in a namespace with a veth interface `d0`
//! (`10.77.0.1/24`, `fd77::1/64`): every request, both families, both option sets. After
//! every step the socket's filter (`getsockopt(MCAST_MSFILTER)`), the interface-level
//! source filter (`/proc/net/mcfilter*`) and the interface's memberships (`/proc/net/igmp*`)
//! must all agree with what the request asked for.
//!
//! (The kernel has no dummy interfaces here, so `d0` is one end of a veth pair.)

use std::{
    collections::{BTreeMap, BTreeSet},
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, AsRawFd as _},
};

use msfilter::sockopt::{
    ApplyError, Family, InvalidRequest, Limit, MembershipSocket, Mode, Request,
};
use msfilter_testbed::{
    kernel::source_filters,
    netns::Netns,
    option_sets::{OptionSet, OptionSets as _},
    sequences::Bed,
};

const SETS: [OptionSet; 2] = [OptionSet::ProtocolIndependent, OptionSet::FamilySpecific];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn groups(family: Family) -> [IpAddr; 2] {
    match family {
        Family::V4 => [ip("232.1.1.1"), ip("239.1.1.1")],
        Family::V6 => [ip("ff3e::1"), ip("ff15::1")],
    }
}

fn sources(family: Family) -> [IpAddr; 3] {
    match family {
        Family::V4 => [ip("10.77.1.1"), ip("10.77.1.2"), ip("10.77.1.3")],
        Family::V6 => [ip("fd77:1::1"), ip("fd77:1::2"), ip("fd77:1::3")],
    }
}

/// Groups joined on interface `device` and their user counts, from `/proc/net/igmp` or
/// `/proc/net/igmp6` of the namespace.
fn memberships(ns: &Netns, family: Family, device: &str) -> BTreeMap<IpAddr, u32> {
    let mut out = BTreeMap::new();
    match family {
        Family::V4 => {
            // Device lines "3\td0        :     2      V3", then group lines
            // "\t\t\t\t010101E8     1 0:00000000\t\t0" (the address printed as a host-order
            // integer of its network-order bytes).
            let text = ns.read_proc("/proc/net/igmp").unwrap();
            let mut current = String::new();
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if line.starts_with('\t') {
                    if current == device {
                        let raw = u32::from_str_radix(fields[0], 16).unwrap();
                        let group = IpAddr::V4(Ipv4Addr::from(raw.to_ne_bytes()));
                        out.insert(group, fields[1].parse().unwrap());
                    }
                } else {
                    current = fields[1].trim_end_matches(':').to_string();
                }
            }
        }
        Family::V6 => {
            // "3    d0              ff3e0000000000000000000000000001     1 00000004 0"
            let text = ns.read_proc("/proc/net/igmp6").unwrap();
            for line in text.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.get(1) == Some(&device) {
                    let group = Ipv6Addr::from(u128::from_str_radix(fields[2], 16).unwrap());
                    out.insert(IpAddr::V6(group), fields[3].parse().unwrap());
                }
            }
        }
    }
    out
}

/// What a group's state must be after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    NotJoined,
    Filter(Mode, Vec<IpAddr>),
}

/// Check the socket's own view and the kernel's interface-level view of `group`.
fn check(
    ns: &Netns,
    socket: &MembershipSocket,
    device: &str,
    group: IpAddr,
    want: &Want,
    at: &str,
) {
    let family = socket.family();
    let got = ns.run(|| socket.filter(group));
    let joined = memberships(ns, family, device);
    let kernel_sources = source_filters(ns, device, group);
    match want {
        Want::NotJoined => {
            let err = got.expect_err(at);
            assert_eq!(err.errno_name(), "EADDRNOTAVAIL", "{at}: {err}");
            assert!(
                !joined.contains_key(&group),
                "{at}: {group} still on {device}: {joined:?}"
            );
            assert!(kernel_sources.is_empty(), "{at}: {kernel_sources:?}");
        }
        Want::Filter(mode, srcs) => {
            let (got_mode, got_sources) = got.unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(got_mode, *mode, "{at}: mode");
            let got_set: BTreeSet<IpAddr> = got_sources.iter().copied().collect();
            let want_set: BTreeSet<IpAddr> = srcs.iter().copied().collect();
            assert_eq!(got_set, want_set, "{at}: sources");
            assert_eq!(got_sources.len(), srcs.len(), "{at}: no duplicates");
            assert_eq!(
                joined.get(&group),
                Some(&1),
                "{at}: one user of {group} on {device}"
            );
            // One socket: every listed source counts once, in the socket's mode.
            let (inc, exc) = match mode {
                Mode::Include => (1, 0),
                Mode::Exclude => (0, 1),
            };
            let want_kernel: BTreeSet<(IpAddr, u32, u32)> =
                srcs.iter().map(|&s| (s, inc, exc)).collect();
            let file = match family {
                Family::V4 => "/proc/net/mcfilter",
                Family::V6 => "/proc/net/mcfilter6",
            };
            assert_eq!(
                kernel_sources,
                want_kernel,
                "{at}: {file}:\n{}",
                ns.read_proc(file).unwrap_or_default()
            );
        }
    }
}

/// Every request in turn, each followed by the state it must produce.
fn script(family: Family) -> Vec<(Request, Want)> {
    let [s1, s2, s3] = sources(family);
    let ex = |s: &[IpAddr]| Want::Filter(Mode::Exclude, s.to_vec());
    let inc = |s: &[IpAddr]| Want::Filter(Mode::Include, s.to_vec());
    vec![
        (Request::JoinGroup, ex(&[])),
        (Request::BlockSource { source: s1 }, ex(&[s1])),
        (Request::BlockSource { source: s2 }, ex(&[s1, s2])),
        (Request::UnblockSource { source: s1 }, ex(&[s2])),
        (Request::LeaveGroup, Want::NotJoined),
        (Request::JoinSourceGroup { source: s1 }, inc(&[s1])),
        (Request::JoinSourceGroup { source: s2 }, inc(&[s1, s2])),
        (Request::LeaveSourceGroup { source: s1 }, inc(&[s2])),
        (
            Request::SetFilter {
                mode: Mode::Exclude,
                sources: vec![s1, s3],
            },
            ex(&[s1, s3]),
        ),
        (
            Request::SetFilter {
                mode: Mode::Include,
                sources: vec![s2, s3],
            },
            inc(&[s2, s3]),
        ),
        (Request::LeaveSourceGroup { source: s2 }, inc(&[s3])),
        (Request::LeaveSourceGroup { source: s3 }, Want::NotJoined),
        (Request::JoinGroup, ex(&[])),
        (
            Request::SetFilter {
                mode: Mode::Include,
                sources: vec![],
            },
            Want::NotJoined,
        ),
        (Request::JoinGroup, ex(&[])),
        (Request::LeaveGroup, Want::NotJoined),
    ]
}

fn every_request(family: Family) {
    let bed = Bed::new("so").expect("namespace with d0");
    // One group at a time: `/proc/net/mcfilter*` lists nothing for an interface whose most
    // recently joined group has no sources (the listing starts with each interface's first
    // group only), so two of our groups side by side would hide each other's sources there.
    for group in groups(family) {
        for set in SETS {
            let socket = bed
                .ns
                .run(|| MembershipSocket::open(family, bed.ifindex).unwrap());
            for (i, (req, want)) in script(family).iter().enumerate() {
                let at = format!("{family} {set:?} step {} `{req}` on {group}", i + 1);
                bed.ns
                    .run(|| socket.apply_with(group, req, set))
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                check(&bed.ns, &socket, "d0", group, want, &at);
            }
        }
    }
}

#[test]
fn every_request_ipv4() {
    every_request(Family::V4);
}

#[test]
fn every_request_ipv6() {
    every_request(Family::V6);
}

/// The family-specific set really uses `IP_*`/`IPV6_*` options where they exist (the
/// failing option's name says which one carried the request).
#[test]
fn family_specific_requests_use_the_family_options() {
    let bed = Bed::new("sofs").expect("namespace with d0");
    let fs = OptionSet::FamilySpecific;
    let kernel_error = |r: Result<(), ApplyError>| match r {
        Err(ApplyError::Kernel(e)) => (e.option, e.errno_name()),
        other => panic!("expected a kernel error, got {other:?}"),
    };
    bed.ns.run(|| {
        let g = ip("232.1.1.1");
        let [s1, ..] = sources(Family::V4);
        let v4 = MembershipSocket::open(Family::V4, bed.ifindex).unwrap();
        let filter = Request::SetFilter {
            mode: Mode::Exclude,
            sources: vec![s1],
        };
        assert_eq!(
            kernel_error(v4.apply_with(g, &filter, fs)),
            ("IP_MSFILTER", "EINVAL")
        );
        assert_eq!(
            kernel_error(v4.apply_with(g, &Request::LeaveGroup, fs)),
            ("IP_DROP_MEMBERSHIP", "EADDRNOTAVAIL")
        );
        v4.apply_with(g, &Request::JoinGroup, fs).unwrap();
        assert_eq!(
            kernel_error(v4.apply_with(g, &Request::JoinGroup, fs)),
            ("IP_ADD_MEMBERSHIP", "EADDRINUSE")
        );
        v4.apply_with(g, &Request::BlockSource { source: s1 }, fs)
            .unwrap();
        assert_eq!(
            kernel_error(v4.apply_with(g, &Request::BlockSource { source: s1 }, fs)),
            ("IP_BLOCK_SOURCE", "EADDRNOTAVAIL")
        );
        assert_eq!(
            kernel_error(v4.apply_with(
                g,
                &Request::UnblockSource {
                    source: ip("10.77.1.9")
                },
                fs
            )),
            ("IP_UNBLOCK_SOURCE", "EADDRNOTAVAIL")
        );
        assert_eq!(
            kernel_error(v4.apply_with(
                g,
                &Request::JoinSourceGroup {
                    source: ip("10.77.1.9")
                },
                fs
            )),
            ("IP_ADD_SOURCE_MEMBERSHIP", "EINVAL")
        );
        assert_eq!(
            kernel_error(v4.apply_with(g, &Request::LeaveSourceGroup { source: s1 }, fs)),
            ("IP_DROP_SOURCE_MEMBERSHIP", "EINVAL")
        );
        // The same requests through the protocol-independent set name MCAST_* options.
        assert_eq!(
            kernel_error(v4.apply_with(
                g,
                &Request::BlockSource { source: s1 },
                OptionSet::ProtocolIndependent
            )),
            ("MCAST_BLOCK_SOURCE", "EADDRNOTAVAIL")
        );

        let g6 = ip("ff3e::1");
        let [s6, ..] = sources(Family::V6);
        let v6 = MembershipSocket::open(Family::V6, bed.ifindex).unwrap();
        assert_eq!(
            kernel_error(v6.apply_with(g6, &Request::LeaveGroup, fs)),
            ("IPV6_LEAVE_GROUP", "EADDRNOTAVAIL")
        );
        v6.apply_with(g6, &Request::JoinGroup, fs).unwrap();
        assert_eq!(
            kernel_error(v6.apply_with(g6, &Request::JoinGroup, fs)),
            ("IPV6_JOIN_GROUP", "EADDRINUSE")
        );
        // IPv6 has no family-specific source options: MCAST_* carries them.
        v6.apply_with(g6, &Request::BlockSource { source: s6 }, fs)
            .unwrap();
        assert_eq!(
            kernel_error(v6.apply_with(g6, &Request::BlockSource { source: s6 }, fs)),
            ("MCAST_BLOCK_SOURCE", "EADDRNOTAVAIL")
        );
    });
}

/// `ip_mreq_source`/`ip_msfilter` name the interface by address; on an interface without
/// an IPv4 address the family-specific source requests go as `MCAST_*`, and still act on
/// that interface.
#[test]
fn ipv4_source_requests_without_an_interface_address_use_mcast_options() {
    let bed = Bed::new("sonoaddr").expect("namespace with d0");
    let fs = OptionSet::FamilySpecific;
    let g = ip("239.1.1.1");
    let [s1, s2, _] = sources(Family::V4);
    let socket = bed
        .ns
        .run(|| MembershipSocket::open(Family::V4, bed.peer_ifindex).unwrap());
    bed.ns.run(|| {
        socket.apply_with(g, &Request::JoinGroup, fs).unwrap();
        socket
            .apply_with(g, &Request::BlockSource { source: s1 }, fs)
            .unwrap();
        match socket.apply_with(g, &Request::BlockSource { source: s1 }, fs) {
            Err(ApplyError::Kernel(e)) => {
                assert_eq!(
                    (e.option, e.errno_name()),
                    ("MCAST_BLOCK_SOURCE", "EADDRNOTAVAIL")
                );
            }
            other => panic!("{other:?}"),
        }
    });
    check(
        &bed.ns,
        &socket,
        "d0p",
        g,
        &Want::Filter(Mode::Exclude, vec![s1]),
        "block on d0p",
    );
    let filter = Request::SetFilter {
        mode: Mode::Include,
        sources: vec![s2],
    };
    bed.ns.run(|| socket.apply_with(g, &filter, fs)).unwrap();
    check(
        &bed.ns,
        &socket,
        "d0p",
        g,
        &Want::Filter(Mode::Include, vec![s2]),
        "filter on d0p",
    );
    assert!(!memberships(&bed.ns, Family::V4, "d0").contains_key(&g));
}

/// `filter()` starts with room for 16 sources and grows when the kernel reports more; the
/// sources come back in the kernel's order (for a full-state filter: as given).
#[test]
fn filter_reads_long_source_lists() {
    let bed = Bed::new("solong").expect("namespace with d0");
    bed.ns.run(|| {
        let _raised = Limit::IgmpMaxMsf.set_scoped(100).unwrap();
        for (family, group, n) in [
            (Family::V4, ip("232.1.1.1"), 70u16),
            (Family::V6, ip("ff3e::1"), 40),
        ] {
            let list: Vec<IpAddr> = (1..=n)
                .rev()
                .map(|i| match family {
                    Family::V4 => IpAddr::V4(Ipv4Addr::new(10, 77, 2, i as u8)),
                    Family::V6 => IpAddr::V6(Ipv6Addr::new(0xfd77, 2, 0, 0, 0, 0, 0, i)),
                })
                .collect();
            for set in SETS {
                let socket = MembershipSocket::open(family, bed.ifindex).unwrap();
                socket.apply_with(group, &Request::JoinGroup, set).unwrap();
                let req = Request::SetFilter {
                    mode: Mode::Exclude,
                    sources: list.clone(),
                };
                socket.apply_with(group, &req, set).unwrap();
                assert_eq!(
                    socket.filter(group).unwrap(),
                    (Mode::Exclude, list.clone()),
                    "{family} {set:?}"
                );
            }
        }
    });
}

/// The socket is never bound (it receives nothing) and does not take the traffic of groups
/// other sockets joined.
#[test]
fn sockets_are_unbound_with_multicast_all_off() {
    let bed = Bed::new("soopen").expect("namespace with d0");
    bed.ns.run(|| {
        for (family, level, option) in [
            (Family::V4, libc::SOL_IP, libc::IP_MULTICAST_ALL),
            (Family::V6, libc::SOL_IPV6, libc::IPV6_MULTICAST_ALL),
        ] {
            let socket = MembershipSocket::open(family, bed.ifindex).unwrap();
            assert_eq!(socket.family(), family);
            assert_eq!(socket.ifindex(), bed.ifindex);
            let fd = socket.as_fd().as_raw_fd();
            let mut value: libc::c_int = -1;
            let mut len = size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt into a live c_int with its size.
            let rc = unsafe {
                libc::getsockopt(fd, level, option, (&raw mut value).cast(), &raw mut len)
            };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            assert_eq!(value, 0, "{family}: multicast-all is off");
            // SAFETY: sockaddr_storage is plain data; getsockname writes at most `len` bytes.
            let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: as above.
            let rc = unsafe { libc::getsockname(fd, (&raw mut addr).cast(), &raw mut len) };
            assert_eq!(rc, 0);
            // Port 0 in both sockaddr_in and sockaddr_in6 (same offset): never bound.
            // SAFETY: reading the port field of the kernel-written address.
            let port = unsafe { (*(&raw const addr).cast::<libc::sockaddr_in>()).sin_port };
            assert_eq!(port, 0, "{family}: not bound");
        }
    });
}

/// Dropping the socket leaves every group it joined.
#[test]
fn closing_the_socket_leaves_its_groups() {
    let bed = Bed::new("soclose").expect("namespace with d0");
    for family in [Family::V4, Family::V6] {
        let [g, h] = groups(family);
        let [s1, ..] = sources(family);
        let socket = bed
            .ns
            .run(|| MembershipSocket::open(family, bed.ifindex).unwrap());
        bed.ns.run(|| {
            socket
                .apply_with(
                    g,
                    &Request::JoinSourceGroup { source: s1 },
                    OptionSet::ProtocolIndependent,
                )
                .unwrap();
            socket
                .apply_with(h, &Request::JoinGroup, OptionSet::FamilySpecific)
                .unwrap();
        });
        let joined = memberships(&bed.ns, family, "d0");
        assert!(
            joined.contains_key(&g) && joined.contains_key(&h),
            "{joined:?}"
        );
        drop(socket);
        let joined = memberships(&bed.ns, family, "d0");
        assert!(
            !joined.contains_key(&g) && !joined.contains_key(&h),
            "{joined:?}"
        );
        assert!(source_filters(&bed.ns, "d0", g).is_empty());
    }
}

/// Validation refuses before the kernel is asked: nothing changes.
#[test]
fn invalid_requests_never_reach_the_kernel() {
    let bed = Bed::new("soinval").expect("namespace with d0");
    bed.ns.run(|| {
        let socket = MembershipSocket::open(Family::V4, bed.ifindex).unwrap();
        let g = ip("232.1.1.1");
        socket
            .apply_with(g, &Request::JoinGroup, OptionSet::ProtocolIndependent)
            .unwrap();
        for set in SETS {
            let err = socket
                .apply_with(
                    g,
                    &Request::BlockSource {
                        source: ip("239.1.1.1"),
                    },
                    set,
                )
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "invalid request: 239.1.1.1 is a multicast address; a source must be unicast"
            );
            let dup = Request::SetFilter {
                mode: Mode::Include,
                sources: vec![ip("10.77.1.1"), ip("10.77.1.1")],
            };
            assert_eq!(
                socket.apply_with(g, &dup, set),
                Err(ApplyError::Invalid(InvalidRequest::DuplicateSource(ip(
                    "10.77.1.1"
                ))))
            );
        }
        assert_eq!(socket.filter(g).unwrap(), (Mode::Exclude, vec![]));
        // The kernel alone would have taken the multicast source.
        socket
            .apply_unchecked(
                g,
                &Request::BlockSource {
                    source: ip("239.1.1.1"),
                },
                OptionSet::ProtocolIndependent,
            )
            .unwrap();
        assert_eq!(
            socket.filter(g).unwrap(),
            (Mode::Exclude, vec![ip("239.1.1.1")])
        );
    });
}

/// `igmp_max_msf` and `igmp_max_memberships` are per namespace (through the calling
/// thread's `/proc/sys`); `mld_max_msf` is global and absent inside other namespaces.
#[test]
fn limits_are_read_and_set_per_namespace() {
    let host_msf = Limit::IgmpMaxMsf.read().unwrap();
    let host_memberships = Limit::IgmpMaxMemberships.read().unwrap();
    let ns = Netns::new("solim").expect("namespace");
    ns.run(|| {
        assert_eq!(
            Limit::IgmpMaxMsf.read().unwrap(),
            Limit::IgmpMaxMsf.kernel_default()
        );
        {
            let guard = Limit::IgmpMaxMsf.set_scoped(host_msf + 7).unwrap();
            assert_eq!(guard.previous(), Limit::IgmpMaxMsf.kernel_default());
            Limit::IgmpMaxMemberships.set(3).unwrap();
            assert_eq!(Limit::IgmpMaxMsf.read().unwrap(), host_msf + 7);
            assert_eq!(Limit::IgmpMaxMemberships.read().unwrap(), 3);
        }
        assert_eq!(
            Limit::IgmpMaxMsf.read().unwrap(),
            Limit::IgmpMaxMsf.kernel_default()
        );
        let err = Limit::MldMaxMsf.read().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("global"), "{err}");
    });
    assert_eq!(Limit::IgmpMaxMsf.read().unwrap(), host_msf);
    assert_eq!(Limit::IgmpMaxMemberships.read().unwrap(), host_memberships);
    assert!(!Limit::MldMaxMsf.is_per_namespace());
    // Readable from the initial namespace (this thread), not changed here.
    Limit::MldMaxMsf.read().unwrap();
}
