//! Persisted memberships that a restart cannot restore as persisted: the daemon enforces only
//! what the kernel confirms, says which memberships are missing and why (`stats`), keeps them
//! in its persisted state, and restores them once it can (the next start, or the interface
//! coming back).

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use msfilter_testbed::{
    daemon::Daemon,
    kernel::source_filters,
    netns::Link,
    traffic::{Receiver, Sender},
};

const ALLOWED: &str = "10.99.0.1";
const BLOCKED: &str = "10.99.0.3";

fn unrestored(daemon: &Daemon) -> Vec<serde_json::Value> {
    daemon.cli_json(&["stats", "-j"])["unrestored"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn listed_sources(daemon: &Daemon, iface: &str, group: &str) -> Option<BTreeSet<String>> {
    let list = daemon.cli_json(&["list", "--iface", iface, "--group", group, "-j"]);
    let entries = list.as_array().expect("list -j is an array");
    if entries.is_empty() {
        return None;
    }
    Some(
        entries
            .iter()
            .flat_map(|e| e["sources"].as_array().cloned().unwrap_or_default())
            .map(|s| s["source"].as_str().unwrap().to_string())
            .collect(),
    )
}

fn igmp_users(link: &Link, device: &str, group: IpAddr) -> Option<u32> {
    let groups = link
        .receiver
        .run(msfilter::iface::groups::joined)
        .expect("reading /proc/net/igmp*");
    groups
        .into_iter()
        .find(|g| g.device == device && g.group == group)
        .map(|g| g.users)
}

/// Datagrams heard from (allowed, blocked) after sending `n` from each.
fn heard(link: &Link, group: IpAddr, n: u64) -> (u64, u64) {
    let app = Receiver::passive(&link.receiver, group);
    let tx = link.sender.ifindex(&link.tx).unwrap();
    let mut a = Sender::new(&link.sender, ALLOWED.parse().unwrap(), group, tx, 32);
    let mut b = Sender::new(&link.sender, BLOCKED.parse().unwrap(), group, tx, 32);
    for _ in 0..n {
        a.send().unwrap();
        b.send().unwrap();
    }
    let got = app.take_when_quiet(Duration::from_millis(200));
    let count = |s: &str| got.get(&s.parse::<IpAddr>().unwrap()).copied().unwrap_or(0);
    (count(ALLOWED), count(BLOCKED))
}

#[test]
fn a_filter_the_kernel_refuses_at_restart_is_reported_kept_and_restored_later() {
    const GROUP: &str = "232.78.0.1";
    let g: IpAddr = GROUP.parse().unwrap();
    let link = Link::new("ur", &[&format!("{ALLOWED}/24"), &format!("{BLOCKED}/24")]).unwrap();
    let mut daemon = Daemon::start(&link.receiver, &["--max-sources-per-socket", "100"]).unwrap();
    let mut sources: Vec<String> = (1..50).map(|i| format!("10.61.0.{i}")).collect();
    sources.push(BLOCKED.to_string());
    daemon.cli_ok(&["join", "rx0", GROUP]);
    let mut args = vec!["filter", "set", "rx0", GROUP, "--mode", "exclude"];
    args.extend(sources.iter().map(String::as_str));
    daemon.cli_ok(&args);
    let want: BTreeSet<String> = sources.iter().cloned().collect();
    assert_eq!(listed_sources(&daemon, "rx0", GROUP), Some(want.clone()));

    // The kernel now takes at most 10 sources per socket, and the restarted daemon does not
    // raise the limit: the persisted filter of 50 cannot be restored.
    daemon.kill9();
    link.receiver.sysctl("net.ipv4.igmp_max_msf", "10").unwrap();
    daemon.restart_with(&[]).unwrap();
    let missing = unrestored(&daemon);
    assert_eq!(missing.len(), 1, "{missing:?}\n{}", daemon.log());
    assert_eq!(missing[0]["client"], "cli");
    assert_eq!(missing[0]["group"], GROUP);
    assert!(
        missing[0]["reason"].as_str().unwrap().contains("ENOBUFS"),
        "{missing:?}"
    );
    // What is enforced is what the kernel holds: the group joined, nothing excluded.
    assert_eq!(igmp_users(&link, "rx0", g), Some(1));
    assert!(source_filters(&link.receiver, "rx0", g).is_empty());
    assert_eq!(listed_sources(&daemon, "rx0", GROUP), Some(BTreeSet::new()));
    assert_eq!(
        heard(&link, g, 20),
        (20, 20),
        "XDP drops nothing the kernel accepts"
    );
    let human = daemon.cli_ok(&["stats"]);
    assert!(human.contains("not restored at start-up"), "{human}");
    // The persisted state still holds the filter as the client asked for it.
    let state = std::fs::read_to_string(daemon.state_dir().join("state.json")).unwrap();
    assert!(
        state.contains("10.61.0.49") && state.contains(BLOCKED),
        "{state}"
    );

    // With the limit back, the next start restores it whole.
    daemon.kill9();
    link.receiver
        .sysctl("net.ipv4.igmp_max_msf", "100")
        .unwrap();
    daemon.restart_with(&[]).unwrap();
    assert!(unrestored(&daemon).is_empty(), "{}", daemon.log());
    assert_eq!(listed_sources(&daemon, "rx0", GROUP), Some(want));
    assert_eq!(source_filters(&link.receiver, "rx0", g).len(), 50);
    assert_eq!(heard(&link, g, 20), (20, 0));
}

#[test]
fn a_membership_on_a_missing_interface_waits_for_it() {
    const GROUP: &str = "232.78.0.2";
    let g: IpAddr = GROUP.parse().unwrap();
    let link = Link::new("um", &[&format!("{ALLOWED}/24")]).unwrap();
    let add_rx1 = || {
        link.receiver
            .ip(&["link", "add", "rx1", "type", "veth", "peer", "name", "rx1p"])
            .unwrap();
        link.receiver.ip(&["link", "set", "rx1", "up"]).unwrap();
        link.receiver.ip(&["link", "set", "rx1p", "up"]).unwrap();
    };
    add_rx1();
    let mut daemon = Daemon::start(&link.receiver, &[]).unwrap();
    daemon.cli_ok(&["join", "rx1", GROUP]);
    daemon.cli_ok(&["block", "rx1", GROUP, BLOCKED]);

    daemon.kill9();
    link.receiver.ip(&["link", "del", "rx1"]).unwrap();
    daemon.restart().unwrap();
    let missing = unrestored(&daemon);
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no interface rx1"),
        "{missing:?}"
    );
    let state = std::fs::read_to_string(daemon.state_dir().join("state.json")).unwrap();
    assert!(
        state.contains("rx1") && state.contains(BLOCKED),
        "kept: {state}"
    );

    // The interface comes back while the daemon runs: the membership is restored then.
    add_rx1();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !unrestored(&daemon).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(unrestored(&daemon).is_empty(), "{}", daemon.log());
    assert_eq!(
        listed_sources(&daemon, "rx1", GROUP),
        Some([BLOCKED.to_string()].into_iter().collect())
    );
    assert_eq!(igmp_users(&link, "rx1", g), Some(1));
    assert_eq!(
        source_filters(&link.receiver, "rx1", g),
        [(BLOCKED.parse().unwrap(), 0, 1)].into_iter().collect()
    );
}
