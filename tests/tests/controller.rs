//! The controller with real traffic: every CLI verb, IPv4 and IPv6. After each request,
//! three sources send datagrams; what the receiving application hears, what XDP dropped,
//! and what the kernel shows in /proc/net/mcfilter(6) must all agree with the request.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use serde_json::Value;
use testbed::{
    daemon::Daemon,
    kernel::source_filters,
    netns::Link,
    traffic::{Receiver, Sender},
};

const PER_SOURCE: u64 = 20;

struct Bench {
    link: Link,
    daemon: Daemon,
    group: IpAddr,
    sources: [IpAddr; 3],
    senders: Vec<Sender>,
    app: Receiver,
}

impl Bench {
    fn new(tag: &str, group: &str, sources: [&str; 3], prefix: &str) -> Self {
        let addrs: Vec<String> = sources.iter().map(|s| format!("{s}/{prefix}")).collect();
        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let link = Link::new(tag, &addrs).unwrap();
        let daemon = Daemon::start(&link.receiver, &[]).unwrap();
        let group: IpAddr = group.parse().unwrap();
        let sources = sources.map(|s| s.parse::<IpAddr>().unwrap());
        let tx = link.sender.ifindex(&link.tx).unwrap();
        let senders = sources
            .iter()
            .map(|s| Sender::new(&link.sender, *s, group, tx, 32))
            .collect();
        let app = Receiver::passive(&link.receiver, group);
        Self {
            link,
            daemon,
            group,
            sources,
            senders,
            app,
        }
    }

    fn dropped(&self) -> u64 {
        let stats: Value = serde_json::from_str(&self.daemon.cli_ok(&["stats", "-j"])).unwrap();
        stats["dropped"]["packets"].as_u64().unwrap()
    }

    /// Apply `args`, send from every source, and check who got through, how many XDP
    /// dropped, and the kernel's source filter entries `(source index, include, exclude)`.
    fn step(
        &mut self,
        args: &[&str],
        heard: &[usize],
        kernel: &[(usize, u32, u32)],
        managed: bool,
    ) {
        self.daemon.cli_ok(args);
        let before = self.dropped();
        for _ in 0..PER_SOURCE {
            for s in &mut self.senders {
                s.send().unwrap();
            }
        }
        let got = self.app.take_when_quiet(Duration::from_millis(250));
        let want: std::collections::BTreeMap<IpAddr, u64> = heard
            .iter()
            .map(|&i| (self.sources[i], PER_SOURCE))
            .collect();
        assert_eq!(
            got, want,
            "after {args:?}: the application heard the wrong sources"
        );

        let dropped = self.dropped() - before;
        let expected = if managed {
            PER_SOURCE * (3 - heard.len() as u64)
        } else {
            0
        };
        assert_eq!(dropped, expected, "after {args:?}: XDP dropped {dropped}");

        let rows = source_filters(&self.link.receiver, &self.link.rx, self.group);
        let want: BTreeSet<(IpAddr, u32, u32)> = kernel
            .iter()
            .map(|&(i, inc, exc)| (self.sources[i], inc, exc))
            .collect();
        assert_eq!(rows, want, "after {args:?}: /proc/net/mcfilter disagrees");
    }

    fn run(&mut self) {
        let g = self.group.to_string();
        let s: Vec<String> = self.sources.iter().map(ToString::to_string).collect();
        let rx = self.link.rx.clone();
        let (g, rx) = (g.as_str(), rx.as_str());
        let (s0, s1, s2) = (s[0].as_str(), s[1].as_str(), s[2].as_str());

        self.step(&["join", rx, g], &[0, 1, 2], &[], true);
        self.step(&["block", rx, g, s0], &[1, 2], &[(0, 0, 1)], true);
        self.step(&["block", rx, g, s1], &[2], &[(0, 0, 1), (1, 0, 1)], true);
        self.step(&["unblock", rx, g, s0], &[0, 2], &[(1, 0, 1)], true);
        self.step(
            &["filter", "set", rx, g, "--mode", "include", s1],
            &[1],
            &[(1, 1, 0)],
            true,
        );
        self.step(
            &["join-source", rx, g, s2],
            &[1, 2],
            &[(1, 1, 0), (2, 1, 0)],
            true,
        );
        self.step(&["leave-source", rx, g, s1], &[2], &[(2, 1, 0)], true);
        self.step(
            &["filter", "set", rx, g, "--mode", "exclude", s2],
            &[0, 1],
            &[(2, 0, 1)],
            true,
        );

        // filter get: the client's socket and the interface agree.
        let got: Value =
            serde_json::from_str(&self.daemon.cli_ok(&["filter", "get", rx, g, "-j"])).unwrap();
        for which in ["client_filter", "interface_filter"] {
            assert_eq!(got[which]["mode"], "exclude", "{got}");
            assert_eq!(got[which]["sources"], serde_json::json!([s2]), "{got}");
        }

        // list: one enforced group whose counters add up to everything judged above.
        let list: Value = serde_json::from_str(&self.daemon.cli_ok(&["list", "-j"])).unwrap();
        let entries = list.as_array().unwrap();
        assert_eq!(entries.len(), 1, "{list}");
        let e = &entries[0];
        assert_eq!(e["iface"], rx);
        assert_eq!(e["mode"], "exclude");
        assert_eq!(e["members"], 1);
        // Drops per step above: 0, 1, 2, 1, 2, 1, 2, 1 sources' worth.
        assert_eq!(e["dropped"]["packets"], 10 * PER_SOURCE, "{e}");
        assert_eq!(e["passed"]["packets"], 14 * PER_SOURCE, "{e}");
        assert_eq!(e["sources"][0]["source"], s2);
        assert_eq!(e["sources"][0]["matched"]["packets"], PER_SOURCE);

        // Leave: nobody is a member, the kernel delivers nothing, XDP stops judging.
        self.step(&["leave", rx, g], &[], &[], false);
        let list: Value = serde_json::from_str(&self.daemon.cli_ok(&["list", "-j"])).unwrap();
        assert_eq!(list, serde_json::json!([]));
        let stats: Value = serde_json::from_str(&self.daemon.cli_ok(&["stats", "-j"])).unwrap();
        assert_eq!(
            stats["clients"], 0,
            "the CLI client is forgotten once it left everything"
        );
        assert_eq!(stats["attachments"][0]["mode"], "driver");
    }
}

#[test]
fn every_verb_ipv4() {
    Bench::new(
        "cv4",
        "232.7.7.7",
        ["10.99.0.11", "10.99.0.12", "10.99.0.13"],
        "24",
    )
    .run();
}

#[test]
fn every_verb_ipv6() {
    Bench::new(
        "cv6",
        "ff3e::7:7",
        ["fd99::11", "fd99::12", "fd99::13"],
        "64",
    )
    .run();
}
