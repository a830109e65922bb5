//! `msfilter trace`: live per-packet verdicts from the XDP program on an interface the daemon
//! owns. Frames of known fate are sent into rx0 (blocked and allowed sources of an EXCLUDE
//! group, an INCLUDE group, an unmanaged group, control traffic; IPv4 and IPv6); the trace
//! names each with the verdict and reason the policy gives, and with `--group` only that
//! group's. One trace runs at a time; SIGINT ends one and switches the trace off (read back
//! from the pinned switch); `--sample` traces about the share asked for; bad arguments are
//! refused.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, ChildStderr, Command, Stdio},
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use msfilter_common::trace::{TRACE_CONTROL_MAP, TraceControl};
use msfilter_testbed::{
    daemon::{Daemon, msfilter_bin},
    inject::Injector,
    netns::{Link, Netns},
    packet::{Frame, IGMPV3_REPORT, Ipv4, Ipv6, Upper},
};
use serde_json::Value;

const EXCLUDE4: [u8; 4] = [232, 66, 0, 1];
const INCLUDE4: [u8; 4] = [232, 66, 0, 2];
const UNMANAGED4: [u8; 4] = [232, 66, 0, 9];
const BLOCKED4: [u8; 4] = [10, 99, 0, 3];
const OTHER4: [u8; 4] = [10, 99, 0, 7];
const EXCLUDE6: [u8; 16] = [0xff, 0x3e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x66, 0, 1];
const BLOCKED6: [u8; 16] = [0xfd, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
const OTHER6: [u8; 16] = [0xfd, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

fn udp4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    Frame::new(Ipv4::new(src, dst, Upper::udp(b"trace fixture"))).to_bytes()
}

fn udp6(src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    Frame::new(Ipv6::new(src, dst, Upper::udp(b"trace fixture"))).to_bytes()
}

fn ip(a: &[u8]) -> String {
    match a.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(a).unwrap()).to_string(),
        _ => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(a).unwrap()).to_string(),
    }
}

/// A running `msfilter trace` inside the receiver's namespace (nsenter: the interface name
/// resolves there, and /sys keeps the host's bpffs where the pins are).
struct Tracer {
    child: Child,
}

impl Tracer {
    fn start(ns: &Netns, daemon: &Daemon, args: &[&str]) -> (Self, BufReader<ChildStderr>) {
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .arg(msfilter_bin())
            .arg("trace")
            .args(args)
            .arg("--pin-dir")
            .arg(daemon.pin_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running msfilter trace");
        // The trace says on stderr when its switch is on.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(
            line.contains("tracing rx0"),
            "trace did not start: {line:?}"
        );
        (Self { child }, stderr)
    }

    fn interrupt(&self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
    }

    /// Wait for the trace to end (within 10 s) and return its JSON lines.
    fn finish(mut self) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the trace did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = self.child.wait().unwrap();
        let stdout = std::io::read_to_string(self.child.stdout.take().unwrap()).unwrap();
        assert!(status.success(), "trace failed: {status}\n{stdout}");
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The trace switch as pinned by the daemon.
fn switch(pin_dir: &Path) -> TraceControl {
    let data = MapData::from_pin(pin_dir.join(TRACE_CONTROL_MAP)).unwrap();
    let map: Array<MapData, TraceControl> =
        Map::from_map_data(data).and_then(Array::try_from).unwrap();
    map.get(&0, 0).unwrap()
}

/// A frame's expected (group, source, verdict, reason) in the trace.
type Expected = (String, String, &'static str, &'static str);

/// (group, source, verdict, reason) of a trace line.
fn summary(v: &Value) -> (String, String, String, String) {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    (s("group"), s("source"), s("verdict"), s("reason"))
}

#[test]
fn trace_names_each_frame_with_its_verdict_and_reason() {
    let link = Link::new("trce", &["10.99.0.1/24"]).unwrap();
    // Only the injected frames arrive (no IPv6 of the sender's own).
    link.sender
        .sysctl("net.ipv6.conf.tx0.disable_ipv6", "1")
        .unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    for args in [
        vec!["join", "rx0", "232.66.0.1"],
        vec!["block", "rx0", "232.66.0.1", "10.99.0.3"],
        vec!["join-source", "rx0", "232.66.0.2", "10.99.0.3"],
        vec!["join", "rx0", "ff3e::66:1"],
        vec!["block", "rx0", "ff3e::66:1", "fd99::3"],
    ] {
        daemon.cli_ok(&args);
    }
    let injector = Injector::open(&link.sender, &link.tx).unwrap();
    // Anything the link sent when it came up has passed by now.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        switch(daemon.pin_dir()).enabled,
        0,
        "the trace is off by default"
    );

    // Frames of known fate, with how often each is sent.
    let control = Frame::new(Ipv4::new(
        BLOCKED4,
        EXCLUDE4,
        Upper::igmp(IGMPV3_REPORT, EXCLUDE4),
    ))
    .to_bytes();
    let cases: Vec<(Vec<u8>, usize, Expected)> = vec![
        (
            udp4(BLOCKED4, EXCLUDE4),
            4,
            (
                ip(&EXCLUDE4),
                ip(&BLOCKED4),
                "drop",
                "exclude-mode-listed-source",
            ),
        ),
        (
            udp4(OTHER4, EXCLUDE4),
            3,
            (
                ip(&EXCLUDE4),
                ip(&OTHER4),
                "pass",
                "exclude-mode-unlisted-source",
            ),
        ),
        (
            udp4(BLOCKED4, INCLUDE4),
            2,
            (
                ip(&INCLUDE4),
                ip(&BLOCKED4),
                "pass",
                "include-mode-listed-source",
            ),
        ),
        (
            udp4(OTHER4, INCLUDE4),
            2,
            (
                ip(&INCLUDE4),
                ip(&OTHER4),
                "drop",
                "include-mode-unlisted-source",
            ),
        ),
        (
            udp4(OTHER4, UNMANAGED4),
            1,
            (ip(&UNMANAGED4), ip(&OTHER4), "pass", "unmanaged-group"),
        ),
        (control, 1, ("-".into(), "-".into(), "pass", "control")),
        (
            udp6(BLOCKED6, EXCLUDE6),
            2,
            (
                ip(&EXCLUDE6),
                ip(&BLOCKED6),
                "drop",
                "exclude-mode-listed-source",
            ),
        ),
        (
            udp6(OTHER6, EXCLUDE6),
            1,
            (
                ip(&EXCLUDE6),
                ip(&OTHER6),
                "pass",
                "exclude-mode-unlisted-source",
            ),
        ),
    ];
    let total: usize = cases.iter().map(|c| c.1).sum();
    let mut want: BTreeMap<(String, String, String, String), usize> = BTreeMap::new();
    for (_, n, (g, s, v, r)) in &cases {
        *want
            .entry((g.clone(), s.clone(), v.to_string(), r.to_string()))
            .or_default() += n;
    }

    // Everything on rx0, until `total` frames were traced.
    let (tracer, _stderr) = Tracer::start(
        &link.receiver,
        &daemon,
        &["rx0", "-j", "--count", &total.to_string()],
    );
    let on = switch(daemon.pin_dir());
    assert_eq!(
        (on.enabled, on.ifindex),
        (1, link.receiver.ifindex("rx0").unwrap())
    );
    assert_eq!(on.owner_pid, tracer.child.id(), "the trace names its owner");
    for (frame, n, _) in &cases {
        for _ in 0..*n {
            injector.send(frame).unwrap();
        }
    }
    let lines = tracer.finish();
    assert_eq!(lines.len(), total, "{lines:#?}");
    let mut got: BTreeMap<_, usize> = BTreeMap::new();
    for line in &lines {
        assert_eq!(line["iface"], "rx0", "{line}");
        assert!(line["len"].as_u64().unwrap() >= 42, "{line}");
        assert!(
            line["unix_ns"].as_u64().unwrap() > 1_700_000_000_000_000_000,
            "{line}"
        );
        *got.entry(summary(line)).or_default() += 1;
    }
    assert_eq!(got, want);
    assert_eq!(
        switch(daemon.pin_dir()).enabled,
        0,
        "--count ended the trace and its switch"
    );

    // Only one group: the frames to the others are not traced.
    let (tracer, _stderr) = Tracer::start(
        &link.receiver,
        &daemon,
        &["rx0", "-j", "--group", "232.66.0.2", "--count", "4"],
    );
    for (frame, n, _) in &cases {
        for _ in 0..*n {
            injector.send(frame).unwrap();
        }
    }
    let lines = tracer.finish();
    assert_eq!(lines.len(), 4);
    assert!(
        lines.iter().all(|l| l["group"] == "232.66.0.2"),
        "{lines:#?}"
    );

    // One trace at a time; SIGINT ends the running one and switches it off.
    let (first, _stderr) = Tracer::start(&link.receiver, &daemon, &["rx0", "-j"]);
    let second = Command::new("nsenter")
        .arg(format!("--net={}", link.receiver.path().display()))
        .arg(msfilter_bin())
        .args(["trace", "rx0", "--pin-dir"])
        .arg(daemon.pin_dir())
        .output()
        .unwrap();
    let message = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!("already running (process {})", first.child.id())),
        "{message}"
    );
    assert_eq!(switch(daemon.pin_dir()).owner_pid, first.child.id());
    injector.send(&cases[0].0).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    first.interrupt();
    let lines = first.finish();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(switch(daemon.pin_dir()), TraceControl::default());

    // One frame in four, about: 400 frames give 100 expected, 8.7 standard deviation.
    let (sampled, _stderr) =
        Tracer::start(&link.receiver, &daemon, &["rx0", "-j", "--sample", "4"]);
    for _ in 0..400 {
        injector.send(&cases[1].0).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    sampled.interrupt();
    let n = sampled.finish().len();
    assert!(
        (50..=150).contains(&n),
        "{n} of 400 frames traced with --sample 4"
    );

    // A trace killed with SIGKILL cannot switch itself off: `trace --off` does, and leaves a
    // live one alone.
    let off = || {
        Command::new(msfilter_bin())
            .args(["trace", "--off", "--pin-dir"])
            .arg(daemon.pin_dir())
            .output()
            .unwrap()
    };
    let (mut killed, _stderr) = Tracer::start(&link.receiver, &daemon, &["rx0", "-j"]);
    let live = off();
    assert_eq!(live.status.code(), Some(1), "{live:?}");
    assert!(
        String::from_utf8_lossy(&live.stderr).contains("already running"),
        "{live:?}"
    );
    let pid = killed.child.id();
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    assert_eq!(
        (
            switch(daemon.pin_dir()).enabled,
            switch(daemon.pin_dir()).owner_pid
        ),
        (1, pid)
    );
    let done = off();
    assert!(done.status.success(), "{done:?}");
    assert_eq!(
        String::from_utf8_lossy(&done.stdout).trim(),
        format!("switched off the trace of process {pid}, which is gone")
    );
    assert_eq!(switch(daemon.pin_dir()), TraceControl::default());
    assert_eq!(
        String::from_utf8_lossy(&off().stdout).trim(),
        "no trace is on"
    );

    // Lines for people.
    let (tracer, _stderr) = Tracer::start(&link.receiver, &daemon, &["rx0", "--count", "1"]);
    injector.send(&cases[0].0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tracer = tracer;
    while tracer.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = tracer.child.stdout.take().unwrap();
    let text = std::io::read_to_string(out).unwrap();
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(
        &fields[1..],
        [
            "rx0",
            "232.66.0.1",
            "<-",
            "10.99.0.3",
            "drop",
            "exclude-mode-listed-source",
            &cases[0].0.len().to_string(),
            "B"
        ],
        "{text}"
    );
}

#[test]
fn bad_trace_arguments_are_refused() {
    let link = Link::new("trbd", &["10.99.0.1/24"]).unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    daemon.cli_ok(&["join", "rx0", "232.66.0.1"]);
    let trace = |args: &[&str]| {
        Command::new("nsenter")
            .arg(format!("--net={}", link.receiver.path().display()))
            .arg(msfilter_bin())
            .arg("trace")
            .args(args)
            .arg("--pin-dir")
            .arg(daemon.pin_dir())
            .output()
            .unwrap()
    };
    for (args, code, says) in [
        (vec!["rx0", "--count", "0"], 2, "--count"),
        (vec!["rx0", "--sample", "0"], 2, "--sample"),
        (vec!["rx0", "--duration", "soon"], 2, "soon"),
        (
            vec!["rx0", "--group", "10.0.0.1"],
            1,
            "10.0.0.1 is not a multicast address",
        ),
        (vec!["nosuch0"], 1, "no interface named \"nosuch0\""),
        (vec!["lo"], 1, "does not run on lo"),
        (vec!["rx0", "--colour"], 2, "--colour"),
        (vec!["rx0", "--off"], 2, "--off"),
        (vec![], 2, "IFACE"),
    ] {
        let out = trace(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert_eq!(
        switch(daemon.pin_dir()),
        TraceControl::default(),
        "nothing was switched on"
    );
}
