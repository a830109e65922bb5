//! Interface ownership: another XDP program is refused (named) unless replaced; detach
//! deletes the interface's entries and keeps memberships; `--keep` leaves the program
//! enforcing; requests racing an attach are all applied exactly once.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use msfilter::{datapath::AttachMode, iface::xdp};
use msfilter_testbed::{
    daemon::Daemon,
    foreign::{ForeignXdp, Via},
    kernel::source_filters,
    netns::Link,
    traffic::{Receiver, Sender},
};
use serde_json::Value;

#[test]
fn another_xdp_program_is_refused_by_name_unless_replaced() {
    for (tag, via, mode, mode_name) in [
        ("fgl", Via::Link, AttachMode::Driver, "driver"),
        ("fgn", Via::Netlink, AttachMode::Skb, "skb"),
    ] {
        let link = Link::new(tag, &["10.99.0.1/24"]).unwrap();
        let rx = link.receiver.ifindex(&link.rx).unwrap();
        let foreign = link
            .receiver
            .run(|| ForeignXdp::attach("foreign_pass", rx, via, mode))
            .unwrap();
        let daemon = Daemon::start(&link.receiver, &[]).unwrap();

        let owner = daemon.cli_json(&["owner", "rx0", "-j"]);
        assert_eq!(owner["owner"], "other", "{owner}");
        assert_eq!(owner["program_id"], foreign.prog_id);
        assert_eq!(owner["program_name"], "foreign_pass");
        assert_eq!(owner["mode"], mode_name);

        let refusal = format!(
            "msfilter: rx0 already runs XDP program {} (foreign_pass, {mode_name} mode) that \
             msfilter did not attach; refusing to take it over (attach with --replace to replace \
             it)",
            foreign.prog_id
        );
        let out = daemon.cli(&["attach", "rx0"]);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert_eq!(out.stderr.trim(), refusal);

        // A membership that would need the interface is refused the same way and undone.
        let out = daemon.cli(&["join", "rx0", "232.30.0.1"]);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains("foreign_pass"), "{}", out.stderr);
        assert!(
            out.stderr.ends_with("the request was undone\n"),
            "{}",
            out.stderr
        );
        assert_eq!(daemon.cli_ok(&["list", "-j"]).trim(), "[]");
        let igmp = link.receiver.read_proc("/proc/net/igmp").unwrap();
        assert!(
            !igmp.contains("01001EE8"),
            "the kernel membership was undone: {igmp}"
        );
        let still = link.receiver.run(|| xdp::xdp_attachment(rx)).unwrap();
        assert_eq!(still.map(|x| x.prog_id), Some(foreign.prog_id));

        // --replace takes the interface over.
        let out = daemon.cli_ok(&["attach", "rx0", "--replace"]);
        assert!(out.starts_with("attached to rx0"), "{out}");
        let owner = daemon.cli_json(&["owner", "rx0", "-j"]);
        assert_eq!(owner["owner"], "msfilter", "{owner}");
        assert_eq!(owner["program_name"], "msfilter");
        assert_eq!(owner["pid"], daemon.pid().unwrap());
        let now = link.receiver.run(|| xdp::xdp_attachment(rx)).unwrap();
        assert_ne!(now.map(|x| x.prog_id), Some(foreign.prog_id));
        daemon.cli_ok(&["join", "rx0", "232.30.0.1"]);
    }
}

#[test]
fn detach_deletes_entries_keeps_memberships_and_keep_leaves_the_program() {
    let link = Link::new("det", &["10.99.0.1/24", "10.99.0.3/24"]).unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    let (g, blocked): (IpAddr, IpAddr) =
        ("232.31.0.1".parse().unwrap(), "10.99.0.3".parse().unwrap());
    daemon.cli_ok(&["join", "rx0", "232.31.0.1"]);
    daemon.cli_ok(&["block", "rx0", "232.31.0.1", "10.99.0.3"]);
    daemon.cli_ok(&["block", "rx0", "232.31.0.1", "10.99.0.4"]);

    let out = daemon.cli_ok(&["detach", "rx0"]);
    assert_eq!(out.trim(), "released rx0: detached, 3 entries deleted");
    assert_eq!(daemon.cli_ok(&["list", "-j"]).trim(), "[]");
    assert_eq!(daemon.cli_json(&["owner", "rx0", "-j"])["owner"], "none");
    // The memberships stay with the kernel's own filter.
    let kernel = source_filters(&link.receiver, "rx0", g);
    assert!(kernel.contains(&(blocked, 0, 1)), "{kernel:?}");
    // A released interface is not taken again by a membership request.
    daemon.cli_ok(&["block", "rx0", "232.31.0.1", "10.99.0.5"]);
    assert_eq!(daemon.cli_json(&["owner", "rx0", "-j"])["owner"], "none");

    // attach fills the entries from the policy before the program runs.
    let out = daemon.cli_ok(&["attach", "rx0"]);
    assert!(out.ends_with("1 groups, 3 sources\n"), "{out}");

    // --keep: released, but the program keeps dropping the blocked source.
    let out = daemon.cli_ok(&["detach", "rx0", "--keep"]);
    assert_eq!(
        out.trim(),
        "released rx0; its program keeps enforcing the last policy"
    );
    assert_eq!(
        daemon.cli_json(&["owner", "rx0", "-j"])["owner"],
        "msfilter-kept"
    );
    let tx = link.sender.ifindex("tx0").unwrap();
    let mut sender = Sender::new(&link.sender, blocked, g, tx, 32);
    let app = Receiver::passive(&link.receiver, g);
    let before: Value = daemon.cli_json(&["stats", "-j"]);
    for _ in 0..25 {
        sender.send().unwrap();
    }
    assert!(app.take_when_quiet(Duration::from_millis(200)).is_empty());
    let after: Value = daemon.cli_json(&["stats", "-j"]);
    let dropped = |v: &Value| v["dropped"]["packets"].as_u64().unwrap();
    assert_eq!(
        dropped(&after) - dropped(&before),
        25,
        "dropped at XDP while kept"
    );

    // attach again adopts the kept program.
    let out = daemon.cli_ok(&["attach", "rx0"]);
    assert!(out.starts_with("adopted rx0"), "{out}");
}

#[test]
fn fifty_requests_racing_an_attach_are_applied_exactly_once() {
    let link = Link::new("race", &["10.99.0.1/24"]).unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    // Owned once and released: memberships do not attach it by themselves.
    daemon.cli_ok(&["attach", "rx0"]);
    daemon.cli_ok(&["detach", "rx0"]);

    let sources: Vec<String> = (1..=50).map(|i| format!("10.98.0.{i}")).collect();
    std::thread::scope(|s| {
        let attach = s.spawn(|| daemon.cli(&["attach", "rx0"]));
        let requests: Vec<_> = sources
            .iter()
            .enumerate()
            .map(|(i, source)| {
                let client = format!("c{i}");
                let daemon = &daemon;
                s.spawn(move || {
                    daemon.cli(&[
                        "--client",
                        &client,
                        "join-source",
                        "rx0",
                        "232.32.0.1",
                        source,
                    ])
                })
            })
            .collect();
        for r in requests {
            let out = r.join().unwrap();
            assert!(out.ok(), "{out:?}");
        }
        let out = attach.join().unwrap();
        assert!(out.ok(), "{out:?}");
    });

    let list = daemon.cli_json(&["list", "-j"]);
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{list}");
    assert_eq!(entries[0]["members"], 50);
    assert_eq!(entries[0]["mode"], "include");
    let listed: Vec<String> = entries[0]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(listed.len(), 50);
    assert_eq!(unique.len(), 50);
    let kernel = source_filters(&link.receiver, "rx0", "232.32.0.1".parse().unwrap());
    assert_eq!(kernel.len(), 50);
    assert!(
        kernel.iter().all(|&(_, inc, exc)| inc == 1 && exc == 0),
        "{kernel:?}"
    );
}
