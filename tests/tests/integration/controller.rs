//! The controller with real traffic: every CLI verb, IPv4 and IPv6. After each request,
//! three sources send datagrams; what the receiving application hears, what XDP dropped,
//! and what the kernel shows in /proc/net/mcfilter(6) must all agree with the request.

use std::{collections::BTreeSet, net::IpAddr};

use msfilter_testbed::{kernel::source_filters, scene::Scene};
use serde_json::Value;

const PER_SOURCE: u64 = 20;

struct Bench(Scene);

impl Bench {
    fn new(tag: &str, group: &str, sources: [&str; 3], prefix: &str) -> Self {
        Self(Scene::new(tag, group, &sources, prefix, &[]))
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
        let scene = &mut self.0;
        scene.daemon.cli_ok(args);
        let before = scene.dropped();
        let got = scene.send_and_listen(PER_SOURCE);
        assert_eq!(
            got,
            scene.expect(heard, PER_SOURCE),
            "after {args:?}: the application heard the wrong sources"
        );

        let dropped = scene.dropped() - before;
        let expected = if managed {
            PER_SOURCE * (3 - heard.len() as u64)
        } else {
            0
        };
        assert_eq!(dropped, expected, "after {args:?}: XDP dropped {dropped}");

        let rows = source_filters(&scene.link.receiver, &scene.link.rx, scene.group);
        let want: BTreeSet<(IpAddr, u32, u32)> = kernel
            .iter()
            .map(|&(i, inc, exc)| (scene.sources[i], inc, exc))
            .collect();
        assert_eq!(rows, want, "after {args:?}: /proc/net/mcfilter disagrees");
    }

    fn run(&mut self) {
        let g = self.0.group.to_string();
        let s: Vec<String> = self.0.sources.iter().map(ToString::to_string).collect();
        let rx = self.0.link.rx.clone();
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
            serde_json::from_str(&self.0.daemon.cli_ok(&["filter", "get", rx, g, "-j"])).unwrap();
        for which in ["client_filter", "interface_filter"] {
            assert_eq!(got[which]["mode"], "exclude", "{got}");
            assert_eq!(got[which]["sources"], serde_json::json!([s2]), "{got}");
        }

        // list: one enforced group whose counters add up to everything judged above.
        let list: Value = serde_json::from_str(&self.0.daemon.cli_ok(&["list", "-j"])).unwrap();
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
        let list: Value = serde_json::from_str(&self.0.daemon.cli_ok(&["list", "-j"])).unwrap();
        assert_eq!(list, serde_json::json!([]));
        let stats: Value = serde_json::from_str(&self.0.daemon.cli_ok(&["stats", "-j"])).unwrap();
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
