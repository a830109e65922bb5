//! The metrics endpoint (`msfilter daemon --metrics`): scraped from inside the daemon's
//! namespace after real traffic, parsed by Python's `prometheus_client` (the strict
//! OpenMetrics parser, and the Prometheus text parser for `Accept: text/plain`). Its
//! counters equal what `msfilter stats -j` and `msfilter list -j` say at the same quiet
//! moment; past `--metrics-max-series` groups and sources are summed per interface into
//! the series labelled `other`, as docs/operations.md says; bad `--metrics` values are
//! refused before anything starts.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use msfilter_testbed::{
    daemon::{Daemon, TempDir, msfilter_bin},
    metrics::{Format, by_series, http, key, parse, scrape},
    netns::Link,
    traffic::{Receiver, Sender},
};
use serde_json::Value;

/// Where `--metrics` alone listens.
fn default_addr() -> SocketAddr {
    "127.0.0.1:9464".parse().unwrap()
}

const G4: &str = "232.62.0.1";
const G6: &str = "ff3e::62:1";

/// `count` datagrams from each (sender, count), then wait for the link to go quiet.
fn send(senders: &mut [(&mut Sender, u64)], app: &Receiver) {
    for (sender, count) in senders.iter_mut() {
        for _ in 0..*count {
            sender.send().unwrap();
        }
    }
    app.take_when_quiet(Duration::from_millis(300));
}

/// The value of one series, or a panic naming what the exposition has.
fn value(series: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> u64 {
    let k = key(name, labels);
    let v = series.get(&k).unwrap_or_else(|| {
        let near: Vec<&String> = series.keys().filter(|s| s.starts_with(name)).collect();
        panic!("no series {k}; {name} has {near:#?}")
    });
    *v as u64
}

/// `msfilter_group_packets_total` of `group` on rx0.
fn group_packets(series: &BTreeMap<String, f64>, group: &str, verdict: &str) -> u64 {
    value(
        series,
        "msfilter_group_packets_total",
        &[("iface", "rx0"), ("group", group), ("verdict", verdict)],
    )
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn counters_equal_stats_and_list_at_a_quiet_moment() {
    let link = Link::new(
        "mtr",
        &["10.99.0.1/24", "10.99.0.3/24", "fd99::1/64", "fd99::3/64"],
    )
    .unwrap();
    let daemon = Daemon::start(
        &link.receiver,
        &["--metrics", "--max-groups", "64", "--max-sources", "256"],
    )
    .unwrap();
    // EXCLUDE {10.99.0.3} on the IPv4 group, INCLUDE {fd99::1} on the IPv6 one.
    daemon.cli_ok(&["join", "rx0", G4]);
    daemon.cli_ok(&["block", "rx0", G4, "10.99.0.3"]);
    daemon.cli_ok(&["join-source", "rx0", G6, "fd99::1"]);
    // One refusal of the kernel: the source is blocked already.
    let again = daemon.cli(&["block", "rx0", G4, "10.99.0.3"]);
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(again.stderr.contains("EADDRNOTAVAIL"), "{again:?}");

    let tx = link.sender.ifindex(&link.tx).unwrap();
    let (g4, g6): (IpAddr, IpAddr) = (G4.parse().unwrap(), G6.parse().unwrap());
    let sender =
        |source: &str, group| Sender::new(&link.sender, source.parse().unwrap(), group, tx, 32);
    let (mut allowed4, mut blocked4) = (sender("10.99.0.1", g4), sender("10.99.0.3", g4));
    let (mut included6, mut other6) = (sender("fd99::1", g6), sender("fd99::3", g6));
    let app = Receiver::passive(&link.receiver, g4);
    send(
        &mut [
            (&mut allowed4, 40),
            (&mut blocked4, 30),
            (&mut included6, 20),
            (&mut other6, 10),
        ],
        &app,
    );

    // stats, list, scrape, stats, list: the scrape is taken at a quiet moment when the
    // reads around it agree (a stray frame of the kernel's in between asks for another).
    let (tries, stats, list, metrics) = (0..5)
        .find_map(|t| {
            let stats = daemon.cli_json(&["stats", "-j"]);
            let list = daemon.cli_json(&["list", "-j"]);
            let response = scrape(&link.receiver, default_addr(), None);
            let quiet = daemon.cli_json(&["stats", "-j"])["reasons"] == stats["reasons"]
                && daemon.cli_json(&["list", "-j"]) == list;
            quiet.then_some((t, stats, list, response))
        })
        .expect("five tries without a quiet moment");
    assert_eq!(
        metrics.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let families = parse(&metrics.body, Format::OpenMetrics);
    let series = by_series(&families);

    // Frames by reason: every reason of `stats`, packets and bytes.
    for r in stats["reasons"].as_array().unwrap() {
        let labels = [
            ("reason", r["reason"].as_str().unwrap()),
            ("verdict", r["verdict"].as_str().unwrap()),
        ];
        assert_eq!(
            value(&series, "msfilter_packets_total", &labels),
            n(&r["packets"]),
            "{r}"
        );
        assert_eq!(
            value(&series, "msfilter_bytes_total", &labels),
            n(&r["bytes"]),
            "{r}"
        );
    }
    // Per group and per source: what `list` says, which is what was sent.
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{list}");
    for e in entries {
        let (iface, group) = (e["iface"].as_str().unwrap(), e["group"].as_str().unwrap());
        for (verdict, field) in [("pass", "passed"), ("drop", "dropped")] {
            let labels = [("iface", iface), ("group", group), ("verdict", verdict)];
            assert_eq!(
                value(&series, "msfilter_group_packets_total", &labels),
                n(&e[field]["packets"]),
                "{e}"
            );
            assert_eq!(
                value(&series, "msfilter_group_bytes_total", &labels),
                n(&e[field]["bytes"]),
                "{e}"
            );
        }
        for s in e["sources"].as_array().unwrap() {
            let labels = [
                ("iface", iface),
                ("group", group),
                ("source", s["source"].as_str().unwrap()),
            ];
            assert_eq!(
                value(&series, "msfilter_source_matched_packets_total", &labels),
                n(&s["matched"]["packets"]),
                "{s}"
            );
            assert_eq!(
                value(&series, "msfilter_source_matched_bytes_total", &labels),
                n(&s["matched"]["bytes"]),
                "{s}"
            );
        }
    }
    let group = |g: &str, verdict| group_packets(&series, g, verdict);
    assert_eq!((group(G4, "pass"), group(G4, "drop")), (40, 30));
    assert_eq!((group(G6, "pass"), group(G6, "drop")), (20, 10));
    assert_eq!(
        value(
            &series,
            "msfilter_group_bytes_total",
            &[("iface", "rx0"), ("group", G4), ("verdict", "drop")]
        ),
        30 * blocked4.frame_len()
    );

    // Maps, clients, attachments: what `stats` says.
    let gauge = |name, labels: &[(&str, &str)]| value(&series, name, labels);
    assert_eq!(
        gauge("msfilter_map_entries", &[("map", "groups")]),
        n(&stats["groups"])
    );
    assert_eq!(
        gauge("msfilter_map_entries", &[("map", "sources")]),
        n(&stats["source_entries"])
    );
    assert_eq!(gauge("msfilter_map_capacity", &[("map", "groups")]), 64);
    assert_eq!(gauge("msfilter_map_capacity", &[("map", "sources")]), 256);
    assert_eq!(
        gauge("msfilter_map_memory_bytes", &[]),
        n(&stats["map_memory"])
    );
    assert_eq!(gauge("msfilter_clients", &[]), n(&stats["clients"]));
    let mode = stats["attachments"][0]["mode"].as_str().unwrap();
    assert_eq!(
        gauge("msfilter_attached", &[("iface", "rx0"), ("mode", mode)]),
        1
    );
    assert_eq!(gauge("msfilter_series_folded", &[("series", "group")]), 0);
    assert_eq!(gauge("msfilter_series_folded", &[("series", "source")]), 0);

    // Requests by kind and result, and the kernel's refusal by errno.
    let requests = |kind, result| {
        value(
            &series,
            "msfilter_requests_total",
            &[("kind", kind), ("result", result)],
        )
    };
    assert_eq!(requests("join", "ok"), 1);
    assert_eq!(requests("join-source", "ok"), 1);
    assert_eq!(
        (requests("block", "ok"), requests("block", "kernel")),
        (1, 1)
    );
    assert_eq!(requests("block", "permission"), 0);
    // Each one-shot command registers the persistent client first.
    assert_eq!(requests("register", "ok"), 4);
    // Two stats and two lists per try before this one's scrape, one of each in it.
    assert_eq!(requests("stats", "ok"), 2 * tries + 1);
    assert_eq!(requests("list-start", "ok"), 2 * tries + 1);
    assert_eq!(
        value(
            &series,
            "msfilter_kernel_refusals_total",
            &[("errno", "EADDRNOTAVAIL")]
        ),
        1
    );
    let kinds: Vec<&str> = families.iter().map(|f| f.kind.as_str()).collect();
    assert!(
        kinds.iter().all(|k| ["counter", "gauge"].contains(k)),
        "{kinds:?}"
    );

    // The Prometheus text format: the same families and values (traffic is quiet; the
    // requests counted since differ).
    let plain = scrape(&link.receiver, default_addr(), Some("text/plain"));
    assert_eq!(
        plain.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let plain = by_series(&parse(&plain.body, Format::Prometheus));
    for (k, v) in &series {
        if !["msfilter_packets", "msfilter_bytes", "msfilter_requests"]
            .iter()
            .any(|f| k.starts_with(f))
        {
            assert_eq!(plain.get(k), Some(v), "{k}");
        }
    }

    // Only /metrics is served; the default address is loopback, not the interfaces'.
    let other = http(&link.receiver, default_addr(), "GET", "/", None).unwrap();
    assert_eq!(other.status, 404, "{other:?}");
    let outside: SocketAddr = "10.99.0.2:9464".parse().unwrap();
    let from_sender = link
        .sender
        .run(|| TcpStream::connect_timeout(&outside, Duration::from_secs(2)));
    assert!(from_sender.is_err(), "the endpoint answered on {outside}");
}

#[test]
fn series_past_the_cap_are_summed_per_interface() {
    let link = Link::new(
        "mcap",
        &[
            "10.99.0.1/24",
            "10.99.0.3/24",
            "10.99.0.4/24",
            "10.99.0.5/24",
            "10.99.0.6/24",
        ],
    )
    .unwrap();
    let daemon =
        Daemon::start(&link.receiver, &["--metrics", "--metrics-max-series", "2"]).unwrap();
    // In the maps' order: G1 {.3, .4}, G2 {.5}, G3 {.3, .6}. Two groups and two sources
    // keep their series: G1, G2, and G1's two sources.
    let (g1, g2, g3) = ("232.63.0.1", "232.63.0.2", "232.63.0.3");
    for (g, blocked) in [
        (g1, &["10.99.0.3", "10.99.0.4"][..]),
        (g2, &["10.99.0.5"]),
        (g3, &["10.99.0.3", "10.99.0.6"]),
    ] {
        daemon.cli_ok(&["join", "rx0", g]);
        for s in blocked {
            daemon.cli_ok(&["block", "rx0", g, s]);
        }
    }
    let tx = link.sender.ifindex(&link.tx).unwrap();
    let sender = |source: &str, group: &str| {
        Sender::new(
            &link.sender,
            source.parse().unwrap(),
            group.parse().unwrap(),
            tx,
            32,
        )
    };
    let app = Receiver::passive(&link.receiver, g3.parse().unwrap());
    send(
        &mut [
            (&mut sender("10.99.0.4", g1), 2),
            (&mut sender("10.99.0.5", g2), 3),
            (&mut sender("10.99.0.3", g3), 7),
            (&mut sender("10.99.0.1", g3), 5),
        ],
        &app,
    );

    let list = daemon.cli_json(&["list", "-j"]);
    let series = by_series(&parse(
        &scrape(&link.receiver, default_addr(), None).body,
        Format::OpenMetrics,
    ));
    let groups: Vec<&str> = series
        .keys()
        .filter(|k| k.starts_with("msfilter_group_packets_total{"))
        .filter_map(|k| k.split("group=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(groups, [g1, g1, g2, g2, "other", "other"], "{series:#?}");
    let group = |g: &str, verdict| group_packets(&series, g, verdict);
    assert_eq!((group(g1, "drop"), group(g2, "drop")), (2, 3));
    // G3 folded: the sum of the folded groups of rx0, as `list` gives them.
    let listed = |g: &str, field: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["group"] == g)
            .map(|e| n(&e[field]["packets"]))
            .sum::<u64>()
    };
    assert_eq!(
        (group("other", "pass"), group("other", "drop")),
        (listed(g3, "passed"), listed(g3, "dropped"))
    );
    assert_eq!((group("other", "pass"), group("other", "drop")), (5, 7));

    let sources: Vec<String> = series
        .keys()
        .filter(|k| k.starts_with("msfilter_source_matched_packets_total{"))
        .cloned()
        .collect();
    assert_eq!(
        sources,
        [
            key(
                "msfilter_source_matched_packets_total",
                &[("iface", "rx0"), ("group", g1), ("source", "10.99.0.3")]
            ),
            key(
                "msfilter_source_matched_packets_total",
                &[("iface", "rx0"), ("group", g1), ("source", "10.99.0.4")]
            ),
            key(
                "msfilter_source_matched_packets_total",
                &[("iface", "rx0"), ("group", "other"), ("source", "other")]
            ),
        ]
    );
    // Folded: G2 .5 (3 frames), G3 .3 (7) and G3 .6 (none).
    assert_eq!(
        value(
            &series,
            "msfilter_source_matched_packets_total",
            &[("iface", "rx0"), ("group", "other"), ("source", "other")]
        ),
        3 + 7
    );
    assert_eq!(
        value(&series, "msfilter_series_folded", &[("series", "group")]),
        1
    );
    assert_eq!(
        value(&series, "msfilter_series_folded", &[("series", "source")]),
        3
    );
}

#[test]
fn bad_metrics_values_are_refused() {
    let dir = TempDir::new("mbad").unwrap();
    let socket = dir.path().join("msfilter.sock");
    for (args, says) in [
        (
            &["--metrics", "localhost:9464"][..],
            "is not a metrics address",
        ),
        (
            &["--metrics", "127.0.0.1:99999"],
            "the port must be a number",
        ),
        (&["--metrics", "nonsense"], "is not a metrics address"),
        (&["--metrics-max-series", "10"], "--metrics"),
        (
            &["--metrics", "--metrics-max-series", "many"],
            "invalid value 'many'",
        ),
        (
            &["--metrics", "--metrics-max-series=-1"],
            "invalid value '-1'",
        ),
    ] {
        let out = Command::new(msfilter_bin())
            .arg("--socket")
            .arg(&socket)
            .arg("daemon")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!socket.exists(), "{args:?} started a daemon");
    }

    // An address in use stops the start: no socket, and the daemon already there serves on.
    let link = Link::new("mbsy", &["10.99.0.1/24"]).unwrap();
    let first = Daemon::start(&link.receiver, &["--metrics"]).unwrap();
    let second = Daemon::start(&link.receiver, &["--metrics"])
        .unwrap_err()
        .to_string();
    assert!(
        second.contains("metrics endpoint 127.0.0.1:9464: Address in use")
            || second.contains("metrics endpoint 127.0.0.1:9464: Address already in use"),
        "{second}"
    );
    assert_eq!(scrape(&link.receiver, default_addr(), None).status, 200);
    drop(first);
}
