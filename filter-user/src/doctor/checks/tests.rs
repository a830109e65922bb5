//! Every evaluation on sample inputs: kernel text, sysctl values, daemon views.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use super::*;
use crate::{daemon::config, doctor::Status};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn iface(name: &str, ifindex: u32) -> Interface {
    Interface {
        name: name.into(),
        ifindex,
        loopback: name == "lo",
        rp_filter: Sysctl::Value(0),
        force_igmp: Sysctl::Value(0),
        force_mld: Sysctl::Value(0),
        xdp: Ok(None),
    }
}

fn owner(iface: &str, owner: &str, mode: &str) -> OwnerView {
    OwnerView {
        iface: iface.into(),
        ifindex: 3,
        owner: owner.into(),
        program_id: Some(42),
        program_name: Some(
            if owner == "other" {
                "foreign"
            } else {
                "msfilter"
            }
            .into(),
        ),
        mode: Some(mode.into()),
        since: Some(1),
        pid: Some(7),
        adopted: false,
        replaced: false,
        followed: false,
        drop_unjoined: None,
        carrier: None,
        groups: 1,
        sources: 2,
    }
}

fn group(iface: &str, g: &str, mode: Mode, sources: usize, members: u32) -> ManagedGroup {
    ManagedGroup {
        iface: iface.into(),
        group: ip(g),
        mode,
        sources,
        members,
    }
}

const MOUNTINFO: &str = "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                         23 27 0:22 / /sys rw - sysfs sysfs rw\n\
                         45 23 0:40 / /sys/fs/bpf rw - bpf bpf rw\n";

/// A healthy host with a daemon owning rx0 and one group with a member.
fn healthy() -> Facts {
    Facts {
        osrelease: Ok("6.18.44-fc\n".into()),
        btf: true,
        mountinfo: Ok(MOUNTINFO.into()),
        pin_dir: PathBuf::from("/sys/fs/bpf/msfilter"),
        pinned_links: Some(1),
        trace: None,
        sysctls: Sysctls {
            igmp_max_msf: Sysctl::Value(10),
            mld_max_msf: Sysctl::Value(64),
            optmem_max: Sysctl::Value(131_072),
            rp_filter_all: Sysctl::Value(0),
            force_igmp_all: Sysctl::Value(0),
            force_mld_all: Sysctl::Value(0),
        },
        interfaces: vec![iface("lo", 1), iface("rx0", 3), iface("eth9", 4)],
        selected: vec![],
        xdp_features: Ok(BTreeMap::from([(1, 0), (3, 35), (4, 0)])),
        igmp: Ok(
            "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n\
                  3\trx0       :     2      V3\n\
                  \t\t\t\t010101E8     1 0:00000000\t\t0\n\
                  \t\t\t\t010000E0     1 0:00000000\t\t0\n"
                .into(),
        ),
        igmp6: Ok(String::new()),
        config: None,
        daemon: DaemonFacts::Reachable(Box::new(DaemonView {
            socket: PathBuf::from("/run/msfilter.sock"),
            pid: Some(7),
            capabilities: Some(0xc0_0000_1000),
            clients: 1,
            groups: vec![group("rx0", "232.1.1.1", Mode::Exclude, 2, 1)],
            owners: vec![owner("rx0", "msfilter", "driver"), owner("lo", "none", "")],
            problems: vec![],
        })),
    }
}

fn find<'a>(report: &'a Report, check: &str) -> Vec<&'a Finding> {
    report
        .findings
        .iter()
        .filter(|f| f.check == check)
        .collect()
}

fn only<'a>(report: &'a Report, check: &str) -> &'a Finding {
    let found = find(report, check);
    assert_eq!(found.len(), 1, "{check}: {found:#?}");
    found[0]
}

#[test]
fn a_healthy_host_has_no_warning() {
    let report = evaluate(&healthy());
    assert_eq!(report.status, Status::Ok, "{}", report.to_text());
    assert_eq!(report.summary.warn + report.summary.fail, 0);
    // Only the managed interface is looked at.
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.subject.as_deref() != Some("eth9")),
        "{}",
        report.to_text()
    );
    let xdp = only(&report, "xdp-program");
    assert_eq!(xdp.subject.as_deref(), Some("rx0"));
    assert!(
        xdp.found
            .contains("msfilter's program 42 (msfilter, driver mode)"),
        "{xdp:?}"
    );
    assert!(
        only(&report, "xdp-driver-mode")
            .found
            .contains("basic, redirect, rx-sg")
    );
    assert!(
        only(&report, "outside-members")
            .found
            .starts_with("1 managed groups")
    );
    let text = report.to_text();
    assert!(
        text.ends_with(&format!("{} ok, 0 warn, 0 fail\n", report.summary.ok)),
        "{text}"
    );
}

#[test]
fn kernel_versions() {
    assert_eq!(kernel(&Ok("5.8.0".into())).status, Status::Fail);
    assert_eq!(kernel(&Ok("5.9.1".into())).status, Status::Ok);
    assert_eq!(kernel(&Ok("6.18.44-fc".into())).status, Status::Ok);
    assert_eq!(kernel(&Ok("weird".into())).status, Status::Warn);
    assert_eq!(kernel(&Err("denied".into())).status, Status::Warn);
    assert_eq!(btf(false).status, Status::Warn);
    assert_eq!(btf(true).status, Status::Ok);
}

#[test]
fn bpffs_where_the_pins_go() {
    let pins = PathBuf::from("/sys/fs/bpf/msfilter");
    assert_eq!(bpffs(&Ok(MOUNTINFO.into()), &pins).status, Status::Ok);
    let without = "27 1 254:0 / / rw - ext4 /dev/vda rw\n23 27 0:22 / /sys rw - sysfs sysfs rw\n";
    let f = bpffs(&Ok(without.into()), &pins);
    assert_eq!(f.status, Status::Fail);
    assert!(f.found.contains("sysfs mounted at /sys"), "{f:?}");
    assert!(
        f.action
            .as_ref()
            .unwrap()
            .contains("mount -t bpf bpf /sys/fs/bpf")
    );
    assert_eq!(
        bpffs(&Ok(MOUNTINFO.into()), &PathBuf::from("/tmp/pins")).status,
        Status::Fail
    );
    // Pinned links with no daemon: a frozen policy.
    assert_eq!(pins_finding(Some(2), false), Some(Status::Warn));
    assert_eq!(pins_finding(Some(2), true), None);
    assert_eq!(pins_finding(Some(0), false), None);
    assert_eq!(pins_finding(None, false), None);
}

fn pins_finding(links: Option<usize>, up: bool) -> Option<Status> {
    pins(links, &PathBuf::from("/p"), up).map(|f| f.status)
}

#[test]
fn the_daemon_unreachable_is_a_warning_and_local_checks_still_run() {
    let mut facts = healthy();
    facts.daemon = DaemonFacts::Unreachable {
        socket: "/run/msfilter.sock".into(),
        error: "No such file or directory".into(),
    };
    let report = evaluate(&facts);
    let d = only(&report, "daemon");
    assert_eq!(d.status, Status::Warn);
    assert!(
        d.found.contains("not reachable at /run/msfilter.sock"),
        "{d:?}"
    );
    assert!(find(&report, "outside-members").is_empty());
    // Without a daemon or a configuration, every interface but loopback is looked at.
    assert!(
        find(&report, "xdp-driver-mode")
            .iter()
            .any(|f| f.subject.as_deref() == Some("eth9"))
    );
    assert!(
        find(&report, "xdp-driver-mode")
            .iter()
            .all(|f| f.subject.as_deref() != Some("lo"))
    );
    // And a pinned link without a daemon is reported.
    assert_eq!(only(&report, "pins").status, Status::Warn);
}

#[test]
fn capabilities_of_the_daemon() {
    assert_eq!(daemon_capabilities(0xc0_0000_1000).status, Status::Ok);
    assert!(
        daemon_capabilities(0xc0_0000_1000)
            .found
            .contains("without CAP_SYS_ADMIN")
    );
    let f = daemon_capabilities(0x40_0000_1000);
    assert_eq!(f.status, Status::Fail);
    assert!(f.found.contains("lacks CAP_BPF"), "{f:?}");
    // Follow mode's own needs are noted, not failed.
    let f = daemon_capabilities(0xc0_0000_1000);
    assert!(
        f.found.contains(
            "follow mode (attach --follow) also needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"
        ),
        "{f:?}"
    );
    let f = daemon_capabilities(0xc0_0008_1004);
    assert!(!f.found.contains("follow mode"), "{f:?}");
}

#[test]
fn a_configuration_is_checked_and_absent_interfaces_named() {
    let good = config::parse(
        "[interface.rx0]\n[[interface.rx0.group]]\naddress = \"232.1.1.1\"\nmode = \"exclude\"\n\
         [interface.gone0]\n",
    )
    .unwrap();
    let facts = ConfigFacts {
        path: "/etc/msfilter.toml".into(),
        config: Ok(good),
    };
    let out = configuration(&facts, &[iface("rx0", 3)]);
    assert_eq!(out[0].status, Status::Ok);
    assert_eq!(out[0].found, "valid: 2 interfaces, 1 groups");
    assert_eq!(out[1].status, Status::Warn);
    assert_eq!(out[1].subject.as_deref(), Some("gone0"));
    let bad = ConfigFacts {
        path: "/etc/msfilter.toml".into(),
        config: Err("line 3: unknown field `xdp`".into()),
    };
    assert_eq!(configuration(&bad, &[])[0].status, Status::Fail);
}

fn need(sources: usize, g: &str, certain: bool) -> Need {
    Need {
        sources,
        iface: "rx0".into(),
        group: ip(g),
        origin: "managed by the daemon",
        certain,
    }
}

#[test]
fn source_limits_against_the_lists_msfilter_holds() {
    let key = "net.ipv4.igmp_max_msf";
    let small = need(3, "232.1.1.1", true);
    let big = need(12, "232.1.1.2", true);
    let f = source_limit("igmp-max-msf", key, &Sysctl::Value(10), 10, &[&small]);
    assert_eq!(f.status, Status::Ok);
    assert!(f.found.contains("has 3 sources"), "{f:?}");
    let f = source_limit("igmp-max-msf", key, &Sysctl::Value(10), 10, &[&small, &big]);
    assert_eq!(f.status, Status::Fail);
    assert!(f.found.contains("group 232.1.1.2 on rx0"), "{f:?}");
    assert!(
        f.action
            .as_ref()
            .unwrap()
            .contains("sysctl -w net.ipv4.igmp_max_msf=12")
    );
    // The same group configured and managed counts once; two groups are named as two.
    let configured = Need {
        origin: "configured",
        ..big.clone()
    };
    let f = source_limit(
        "igmp-max-msf",
        key,
        &Sysctl::Value(10),
        10,
        &[&big, &configured],
    );
    assert!(!f.found.contains("groups are over the limit"), "{f:?}");
    let other = need(11, "232.1.1.9", true);
    let f = source_limit("igmp-max-msf", key, &Sysctl::Value(10), 10, &[&big, &other]);
    assert!(f.found.ends_with("; 2 groups are over the limit"), "{f:?}");
    // An INCLUDE union of several members may overstate any one socket's list.
    let union = need(12, "232.1.1.3", false);
    let f = source_limit("igmp-max-msf", key, &Sysctl::Value(10), 10, &[&union]);
    assert_eq!(f.status, Status::Warn);
    assert_eq!(
        source_limit("igmp-max-msf", key, &Sysctl::Value(10), 10, &[]).status,
        Status::Ok
    );
    // mld_max_msf outside the initial namespace.
    let key6 = "net.ipv6.mld_max_msf";
    let v6 = need(70, "ff3e::1", true);
    let f = source_limit("mld-max-msf", key6, &Sysctl::Absent, 64, &[&v6]);
    assert_eq!(f.status, Status::Warn);
    assert!(
        f.found.contains("not visible in this network namespace"),
        "{f:?}"
    );
    let v6 = need(7, "ff3e::1", true);
    assert_eq!(
        source_limit("mld-max-msf", key6, &Sysctl::Absent, 64, &[&v6]).status,
        Status::Ok
    );
    assert_eq!(
        source_limit(
            "mld-max-msf",
            key6,
            &Sysctl::Unreadable("x".into()),
            64,
            &[]
        )
        .status,
        Status::Warn
    );
}

#[test]
fn needs_come_from_the_configuration_and_the_daemon() {
    let c = config::parse(
        "[interface.rx0]\n[[interface.rx0.group]]\naddress = \"232.1.1.1\"\nmode = \"include\"\n\
         sources = [\"10.0.0.1\", \"10.0.0.2\"]\n",
    )
    .unwrap();
    let view = match healthy().daemon {
        DaemonFacts::Reachable(v) => *v,
        DaemonFacts::Unreachable { .. } => unreachable!(),
    };
    let mut v = view.clone();
    v.groups
        .push(group("rx0", "232.9.9.9", Mode::Include, 30, 2));
    let needs = source_needs(Some(&c), Some(&v));
    assert_eq!(needs.len(), 3);
    assert_eq!((needs[0].sources, needs[0].origin), (2, "configured"));
    assert!(needs[1].certain, "EXCLUDE: an intersection, a lower bound");
    assert!(!needs[2].certain, "INCLUDE of two members: a union");
}

#[test]
fn optmem_against_the_largest_full_state_filter() {
    let f = optmem(&Sysctl::Value(131_072), &[need(100, "232.1.1.1", true)]);
    assert_eq!(f.status, Status::Ok);
    let f = optmem(&Sysctl::Value(131_072), &[need(2000, "232.1.1.1", true)]);
    assert_eq!(f.status, Status::Fail);
    let bytes = filter_option_size(2000);
    assert!(
        f.action
            .as_ref()
            .unwrap()
            .contains(&format!("optmem_max={bytes}")),
        "{f:?}"
    );
    assert_eq!(
        optmem(&Sysctl::Value(131_072), &[need(2000, "232.1.1.1", false)]).status,
        Status::Warn
    );
    let f = optmem(&Sysctl::Value(131_072), &[]);
    assert_eq!(f.status, Status::Ok);
    let most = (131_072 - filter_option_size(0)) / (filter_option_size(1) - filter_option_size(0));
    assert!(filter_option_size(most) <= 131_072 && filter_option_size(most + 1) > 131_072);
    assert!(f.found.contains(&format!("up to {most} sources")), "{f:?}");
}

#[test]
fn driver_mode_from_the_kernels_report() {
    let rx = iface("rx0", 3);
    let known = Ok(BTreeMap::from([(3, 1 | 2)]));
    assert_eq!(xdp_driver_mode(&rx, &known, None).status, Status::Ok);
    let none = Ok(BTreeMap::from([(3, 0)]));
    let f = xdp_driver_mode(&rx, &none, None);
    assert_eq!(f.status, Status::Warn);
    assert!(f.found.contains("xdp-features: none"), "{f:?}");
    let unknown = Err("the kernel has no netdev netlink family (Linux before 6.3)".into());
    let f = xdp_driver_mode(&rx, &unknown, None);
    assert_eq!(f.status, Status::Warn);
    assert!(f.found.starts_with("unknown: "), "{f:?}");
    // Unknown, but msfilter's program runs there in driver mode: that settles it.
    let o = owner("rx0", "msfilter", "driver");
    assert_eq!(xdp_driver_mode(&rx, &unknown, Some(&o)).status, Status::Ok);
    assert_eq!(
        xdp_driver_mode(&rx, &Ok(BTreeMap::new()), None).status,
        Status::Warn
    );
}

#[test]
fn xdp_programs_msfilters_kept_foreign_and_none() {
    let rx = iface("rx0", 3);
    let f = xdp_program(&rx, Some(&owner("rx0", "msfilter", "skb")), true, true);
    assert_eq!(f.status, Status::Ok);
    let f = xdp_program(
        &rx,
        Some(&owner("rx0", "msfilter-kept", "skb")),
        true,
        false,
    );
    assert_eq!(f.status, Status::Warn);
    assert!(f.found.contains("frozen"), "{f:?}");
    let f = xdp_program(&rx, Some(&owner("rx0", "other", "driver")), true, false);
    assert_eq!(f.status, Status::Warn);
    assert!(
        f.found.contains("program 42 (foreign, driver mode)"),
        "{f:?}"
    );
    assert_eq!(
        xdp_program(&rx, Some(&owner("rx0", "other", "driver")), true, true).status,
        Status::Fail,
        "another program on an interface msfilter is configured to own"
    );
    assert_eq!(
        xdp_program(&rx, Some(&owner("rx0", "none", "")), true, false).status,
        Status::Ok
    );
    assert_eq!(
        xdp_program(&rx, Some(&owner("rx0", "none", "")), true, true).status,
        Status::Warn
    );
    // Without a daemon: what the kernel reports.
    let mut local = rx.clone();
    local.xdp = Ok(Some(XdpProgram {
        id: 9,
        name: Some("msfilter".into()),
        mode: "driver".into(),
    }));
    let f = xdp_program(&local, None, false, false);
    assert_eq!(f.status, Status::Warn);
    assert!(f.found.contains("no daemon answers"), "{f:?}");
    local.xdp = Ok(Some(XdpProgram {
        id: 9,
        name: None,
        mode: "skb".into(),
    }));
    let f = xdp_program(&local, None, false, true);
    assert_eq!(f.status, Status::Fail);
    assert!(f.found.contains("CAP_SYS_ADMIN"), "{f:?}");
    local.xdp = Err("RTM_GETLINK: boom".into());
    assert_eq!(xdp_program(&local, None, false, false).status, Status::Warn);
    assert_eq!(xdp_program(&rx, None, false, false).status, Status::Ok);
}

#[test]
fn forced_igmp_and_mld_versions() {
    let mut rx = iface("rx0", 3);
    let zero = Sysctl::Value(0);
    assert_eq!(
        igmp_version(&rx, &zero, Some("V3")).unwrap().status,
        Status::Ok
    );
    rx.force_igmp = Sysctl::Value(2);
    let f = igmp_version(&rx, &zero, Some("V2")).unwrap();
    assert_eq!(f.status, Status::Warn);
    assert!(
        f.found
            .starts_with("IGMPv2 forced (net.ipv4.conf.rx0.force_igmp_version = 2)")
    );
    // all = 1 wins over the interface's 2, as in the kernel.
    let f = igmp_version(&rx, &Sysctl::Value(1), Some("V1")).unwrap();
    assert!(
        f.found.starts_with("IGMPv1 forced (net.ipv4.conf.all."),
        "{f:?}"
    );
    rx.force_igmp = Sysctl::Value(3);
    assert_eq!(
        igmp_version(&rx, &zero, Some("V3")).unwrap().status,
        Status::Ok
    );
    // An IGMPv2 querier heard, nothing forced: what msfilter is for.
    rx.force_igmp = zero.clone();
    let f = igmp_version(&rx, &zero, Some("V2")).unwrap();
    assert_eq!(f.status, Status::Ok);
    assert!(f.found.starts_with("IGMPv2 in use"), "{f:?}");
    rx.force_igmp = Sysctl::Absent;
    assert!(igmp_version(&rx, &zero, None).is_none());

    let mut rx = iface("rx0", 3);
    assert_eq!(mld_version(&rx, &zero).unwrap().status, Status::Ok);
    rx.force_mld = Sysctl::Value(1);
    assert_eq!(mld_version(&rx, &zero).unwrap().status, Status::Warn);
    rx.force_mld = Sysctl::Value(2);
    assert_eq!(mld_version(&rx, &zero).unwrap().status, Status::Ok);
    assert_eq!(
        mld_version(&rx, &Sysctl::Value(1)).unwrap().status,
        Status::Warn
    );
    rx.force_mld = Sysctl::Absent;
    assert!(mld_version(&rx, &zero).is_none());
}

#[test]
fn reverse_path_filtering() {
    let mut rx = iface("rx0", 3);
    let zero = Sysctl::Value(0);
    assert_eq!(rp_filter(&rx, &zero).unwrap().status, Status::Ok);
    rx.rp_filter = Sysctl::Value(1);
    let f = rp_filter(&rx, &zero).unwrap();
    assert_eq!(f.status, Status::Warn);
    assert!(
        f.found.starts_with("strict reverse-path filtering"),
        "{f:?}"
    );
    rx.rp_filter = Sysctl::Value(2);
    assert_eq!(rp_filter(&rx, &zero).unwrap().status, Status::Ok);
    // The higher of all and the interface applies.
    rx.rp_filter = Sysctl::Value(0);
    assert_eq!(
        rp_filter(&rx, &Sysctl::Value(1)).unwrap().status,
        Status::Warn
    );
    assert_eq!(
        rp_filter(&rx, &Sysctl::Value(2)).unwrap().status,
        Status::Ok
    );
    rx.rp_filter = Sysctl::Absent;
    assert!(rp_filter(&rx, &zero).is_none());
}

#[test]
fn sockets_joined_outside_msfilter() {
    let igmp = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n\
                3\trx0       :     3      V3\n\
                \t\t\t\t010101E8     2 0:00000000\t\t0\n\
                \t\t\t\t020101E8     1 0:00000000\t\t0\n";
    let igmp6 = "3    rx0             ff3e0000000000000000000080000001     1 00000004 0\n";
    let mut kernel = groups::parse_igmp(igmp).unwrap();
    kernel.extend(groups::parse_igmp6(igmp6).unwrap());
    let managed = [
        group("rx0", "232.1.1.1", Mode::Exclude, 0, 1),
        group("rx0", "232.1.1.2", Mode::Exclude, 0, 1),
        group("rx0", "ff3e::8000:1", Mode::Include, 1, 1),
        group("rx0", "232.1.1.3", Mode::Include, 1, 1),
    ];
    let out = outside_members(&managed, Ok(&kernel));
    assert_eq!(out[0].status, Status::Ok);
    assert_eq!(
        out[0].found,
        "2 managed groups: the kernel counts exactly msfilter's members"
    );
    let outside = out
        .iter()
        .find(|f| f.subject.as_deref() == Some("rx0 232.1.1.1"))
        .unwrap();
    assert_eq!(outside.status, Status::Warn);
    assert!(
        outside
            .found
            .starts_with("1 socket(s) joined outside msfilter"),
        "{outside:?}"
    );
    let missing = out
        .iter()
        .find(|f| f.subject.as_deref() == Some("rx0 232.1.1.3"))
        .unwrap();
    assert_eq!(missing.status, Status::Fail);
    assert_eq!(out.len(), 3);
    let e = "denied".to_string();
    assert_eq!(outside_members(&managed, Err(&e))[0].status, Status::Warn);
    // Many differing groups: twenty listed, the rest counted.
    let many: Vec<ManagedGroup> = (0..30)
        .map(|i| group("rx0", &format!("232.2.0.{i}"), Mode::Exclude, 0, 1))
        .collect();
    let out = outside_members(&many, Ok(&[]));
    assert_eq!(out.len(), 21);
    assert!(out[20].found.starts_with("10 more groups"), "{:?}", out[20]);
}

#[test]
fn groups_of_followed_interfaces_are_not_outside_members() {
    let mut followed = owner("rx0", "msfilter", "driver");
    followed.followed = true;
    let view = DaemonView {
        socket: "/run/msfilter.sock".into(),
        pid: Some(7),
        capabilities: None,
        clients: 1,
        groups: vec![
            group("rx0", "232.1.1.1", Mode::Exclude, 0, 1),
            group("rx1", "232.1.1.2", Mode::Exclude, 0, 1),
        ],
        owners: vec![followed, owner("rx1", "msfilter", "driver")],
        problems: vec![],
    };
    let (managed, findings) = split_followed(&view);
    assert_eq!(
        managed,
        vec![group("rx1", "232.1.1.2", Mode::Exclude, 0, 1)]
    );
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].status, Status::Ok);
    assert_eq!(findings[0].subject.as_deref(), Some("rx0"));
    assert!(
        findings[0].found.starts_with("followed"),
        "{:?}",
        findings[0]
    );
}

#[test]
fn the_report_in_json() {
    let mut facts = healthy();
    facts.sysctls.rp_filter_all = Sysctl::Value(1);
    let report = evaluate(&facts);
    assert_eq!(report.status, Status::Warn);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["status"], "warn");
    assert_eq!(json["summary"]["warn"], 1);
    let rp = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "rp-filter")
        .unwrap();
    assert_eq!(rp["status"], "warn");
    assert_eq!(rp["subject"], "rx0");
    assert!(rp["action"].as_str().unwrap().contains("rp_filter=2"));
    let kernel = &json["findings"][0];
    assert_eq!(kernel["check"], "kernel");
    assert!(kernel["action"].is_null());
    assert!(kernel.get("subject").is_none());
}

#[test]
fn pages_of_one_group_are_merged() {
    use crate::daemon::protocol::{CounterView, GroupEntry, SourceEntry};
    let entry = |continued: bool, n: u8| GroupEntry {
        iface: "rx0".into(),
        ifindex: 3,
        group: ip("232.1.1.1"),
        mode: Mode::Exclude,
        sources: (0..n)
            .map(|i| SourceEntry {
                source: ip(&format!("10.0.0.{i}")),
                matched: CounterView::default(),
            })
            .collect(),
        passed: CounterView::default(),
        dropped: CounterView::default(),
        members: if continued { 0 } else { 2 },
        continued,
    };
    let merged = crate::doctor::host::merge_pages(vec![entry(false, 3), entry(true, 4)]);
    assert_eq!(merged, [group("rx0", "232.1.1.1", Mode::Exclude, 7, 2)]);
}

#[test]
fn a_trace_left_on_by_a_killed_process_is_a_warning() {
    assert!(
        find(&evaluate(&healthy()), "trace").is_empty(),
        "off: no finding"
    );
    let running = Facts {
        trace: Some((4242, true)),
        ..healthy()
    };
    assert_eq!(only(&evaluate(&running), "trace").status, Status::Ok);
    let abandoned = Facts {
        trace: Some((4242, false)),
        ..healthy()
    };
    let report = evaluate(&abandoned);
    let finding = only(&report, "trace");
    assert_eq!(finding.status, Status::Warn);
    assert!(finding.found.contains("4242"), "{finding:?}");
    assert_eq!(
        finding.action.as_deref(),
        Some("switch it off: msfilter trace --off")
    );
}
