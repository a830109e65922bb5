//! `msfilter explain`: frames built with the test bed's packet builder are judged by the
//! reference model under the policy the daemon enforces on rx0, and the same frames are sent
//! as they are into rx0, where the XDP program judges them. For every case (EXCLUDE and
//! INCLUDE, listed and unlisted, an unmanaged group, control traffic, malformed and
//! truncated datagrams, not IP; IPv4 and IPv6) explain's verdict and reason are the ones
//! XDP's reason counters record. Bad input is refused naming the line or record.

use std::{collections::BTreeMap, process::Command, time::Duration};

use msfilter_testbed::{
    daemon::{Daemon, TempDir, msfilter_bin},
    inject::Injector,
    netns::Link,
    packet::{Frame, IGMPV3_REPORT, Ipv4, Ipv6, Network, Upper},
};
use serde_json::Value;

const REPEAT: u64 = 8;

const EXCLUDE4: [u8; 4] = [232, 65, 0, 1];
const INCLUDE4: [u8; 4] = [232, 65, 0, 2];
const UNMANAGED4: [u8; 4] = [232, 65, 0, 9];
const LISTED4: [u8; 4] = [10, 99, 0, 3];
const OTHER4: [u8; 4] = [10, 99, 0, 7];

const fn v6(last: u8, prefix: [u8; 2]) -> [u8; 16] {
    let mut a = [0; 16];
    a[0] = prefix[0];
    a[1] = prefix[1];
    a[15] = last;
    a
}
const EXCLUDE6: [u8; 16] = v6(1, [0xff, 0x3e]);
const INCLUDE6: [u8; 16] = v6(2, [0xff, 0x3e]);
const UNMANAGED6: [u8; 16] = v6(9, [0xff, 0x3e]);
const LISTED6: [u8; 16] = v6(3, [0xfd, 0x99]);
const OTHER6: [u8; 16] = v6(7, [0xfd, 0x99]);

fn ip4(a: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

fn ip6(a: [u8; 16]) -> String {
    std::net::Ipv6Addr::from(a).to_string()
}

fn udp4(src: [u8; 4], dst: [u8; 4]) -> Ipv4 {
    Ipv4::new(src, dst, Upper::udp(b"explain fixture"))
}

fn udp6(src: [u8; 16], dst: [u8; 16]) -> Ipv6 {
    Ipv6::new(src, dst, Upper::udp(b"explain fixture"))
}

/// The sources and groups of one family's cases, as indexes of its address tables.
#[derive(Clone, Copy)]
enum Source {
    Listed = 0,
    Other = 1,
}

#[derive(Clone, Copy)]
enum Group {
    Exclude = 0,
    Include = 1,
    Unmanaged = 2,
}

const SOURCES4: [[u8; 4]; 2] = [LISTED4, OTHER4];
const GROUPS4: [[u8; 4]; 3] = [EXCLUDE4, INCLUDE4, UNMANAGED4];
const SOURCES6: [[u8; 16]; 2] = [LISTED6, OTHER6];
const GROUPS6: [[u8; 16]; 3] = [EXCLUDE6, INCLUDE6, UNMANAGED6];

/// One family's cases: `udp` builds its datagrams from a source to a group, `control` is its
/// control message from the excluded source to the EXCLUDE group, `bad_version` and
/// `too_long` a malformed and a truncated datagram to that group.
fn family_cases(
    family: &str,
    udp: impl Fn(Source, Group) -> Frame,
    control: Frame,
    bad_version: Frame,
    too_long: Frame,
) -> Vec<(String, Vec<u8>)> {
    use {Group::*, Source::*};
    [
        ("excluded source", udp(Listed, Exclude)),
        ("other source, exclude", udp(Other, Exclude)),
        ("included source", udp(Listed, Include)),
        ("other source, include", udp(Other, Include)),
        ("unmanaged group", udp(Listed, Unmanaged)),
        ("control from the excluded source", control),
        ("bad IP version", bad_version),
        ("length past the frame", too_long),
    ]
    .into_iter()
    .map(|(name, frame)| (format!("{family} {name}"), frame.to_bytes()))
    .collect()
}

/// The cases: a name and the frame.
fn cases() -> Vec<(String, Vec<u8>)> {
    let mut cases = family_cases(
        "v4",
        |s, g| Frame::new(udp4(SOURCES4[s as usize], GROUPS4[g as usize])),
        Frame::new(Ipv4::new(
            LISTED4,
            EXCLUDE4,
            Upper::igmp(IGMPV3_REPORT, EXCLUDE4),
        )),
        Frame::new(udp4(LISTED4, EXCLUDE4).version(5)),
        Frame::new(udp4(LISTED4, EXCLUDE4).total_len(300)),
    );
    cases.extend(family_cases(
        "v6",
        |s, g| Frame::new(udp6(SOURCES6[s as usize], GROUPS6[g as usize])),
        Frame::new(Ipv6::new(LISTED6, EXCLUDE6, Upper::mld(131, EXCLUDE6))),
        Frame::new(udp6(LISTED6, EXCLUDE6).version(7)),
        Frame::new(udp6(LISTED6, EXCLUDE6).payload_len(400)),
    ));
    cases.push(("ARP".into(), Frame::arp().to_bytes()));
    cases.push((
        "unicast UDP".into(),
        Frame::new(Network::Ipv4(udp4(LISTED4, [10, 99, 0, 2]))).to_bytes(),
    ));
    cases
}

/// The frames as a hex file, every other one with colons, with comments.
fn hex_file(frames: &[(String, Vec<u8>)]) -> String {
    let mut out = String::from("# frames for msfilter explain\n\n");
    for (i, (name, bytes)) in frames.iter().enumerate() {
        let sep = if i % 2 == 0 { " " } else { ":" };
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!("{}  # {name}\n", hex.join(sep)));
    }
    out
}

/// The frames as a classic pcap file, big-endian with nanosecond timestamps.
fn pcap_file(frames: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(0xa1b2_3c4du32.to_be_bytes());
    out.extend(2u16.to_be_bytes());
    out.extend(4u16.to_be_bytes());
    out.extend([0; 8]);
    out.extend(65535u32.to_be_bytes());
    out.extend(1u32.to_be_bytes());
    for (i, (_, bytes)) in frames.iter().enumerate() {
        out.extend((1_700_000_000 + i as u32).to_be_bytes());
        out.extend(123_456_789u32.to_be_bytes());
        out.extend((bytes.len() as u32).to_be_bytes());
        out.extend((bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

fn explain(daemon: &Daemon, args: &[&str]) -> msfilter_testbed::daemon::CliOutput {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    daemon.cli(&all)
}

/// Frames by reason, from the daemon.
fn reasons(daemon: &Daemon) -> BTreeMap<String, u64> {
    daemon.cli_json(&["stats", "-j"])["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap().to_string(),
                r["packets"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Send `frame` REPEAT times into rx0 and return how many frames XDP counted per reason
/// meanwhile.
fn xdp_reasons(daemon: &Daemon, injector: &Injector, frame: &[u8]) -> BTreeMap<String, u64> {
    let before = reasons(daemon);
    for _ in 0..REPEAT {
        injector.send(frame).unwrap();
    }
    let mut after = reasons(daemon);
    for _ in 0..40 {
        let counted: u64 = after.values().sum::<u64>() - before.values().sum::<u64>();
        if counted >= REPEAT {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        after = reasons(daemon);
    }
    after
        .into_iter()
        .map(|(reason, n)| {
            let delta = n - before[&reason];
            (reason, delta)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn explain_says_what_xdp_does() {
    let link = Link::new("expl", &["10.99.0.1/24"]).unwrap();
    // Only the injected frames arrive: no IPv6 of the sender's own (MLD, router
    // solicitations) to count among them.
    link.sender
        .sysctl("net.ipv6.conf.tx0.disable_ipv6", "1")
        .unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    for args in [
        vec!["join", "rx0", "232.65.0.1"],
        vec!["block", "rx0", "232.65.0.1", "10.99.0.3"],
        vec!["join-source", "rx0", "232.65.0.2", "10.99.0.3"],
        vec!["join", "rx0", "ff3e::1"],
        vec!["block", "rx0", "ff3e::1", "fd99::3"],
        vec!["join-source", "rx0", "ff3e::2", "fd99::3"],
    ] {
        daemon.cli_ok(&args);
    }
    let cases = cases();
    let dir = TempDir::new("expl").unwrap();
    let hex = dir.path().join("frames.hex");
    std::fs::write(&hex, hex_file(&cases)).unwrap();
    let pcap = dir.path().join("frames.pcap");
    std::fs::write(&pcap, pcap_file(&cases)).unwrap();

    let from_hex = explain(&daemon, &["rx0", hex.to_str().unwrap(), "-j"]);
    assert!(from_hex.ok(), "{from_hex:?}");
    let from_hex: Value = serde_json::from_str(&from_hex.stdout).unwrap();
    assert_eq!(from_hex["iface"], "rx0");
    assert_eq!(from_hex["attached"], true);
    let judged = from_hex["frames"].as_array().unwrap();
    assert_eq!(judged.len(), cases.len());
    let from_pcap: Value = serde_json::from_str(&daemon.cli_ok(&[
        "explain",
        "rx0",
        "--pcap",
        pcap.to_str().unwrap(),
        "-j",
    ]))
    .unwrap();
    for (h, p) in judged.iter().zip(from_pcap["frames"].as_array().unwrap()) {
        for field in ["verdict", "reason", "group", "source", "length"] {
            assert_eq!(h[field], p[field], "{h} vs {p}");
        }
    }

    // What XDP does with each frame: the reason it counts it under, REPEAT times.
    let injector = Injector::open(&link.sender, &link.tx).unwrap();
    // Let anything the link itself sent when it came up pass first.
    std::thread::sleep(Duration::from_millis(300));
    let mut seen = BTreeMap::new();
    for ((name, frame), j) in cases.iter().zip(judged) {
        let counted = xdp_reasons(&daemon, &injector, frame);
        let reason = j["reason"].as_str().unwrap();
        let got = counted.get(reason).copied().unwrap_or(0);
        assert!(
            (REPEAT..=REPEAT + 2).contains(&got),
            "{name}: explain says {reason}, XDP counted {counted:?}"
        );
        assert!(
            counted.iter().all(|(r, n)| r == reason || *n < REPEAT),
            "{name}: explain says {reason}, XDP counted {counted:?}"
        );
        *seen.entry(reason.to_string()).or_insert(0) += 1;
    }
    // Every rule the cases are meant to reach was reached.
    for reason in [
        "exclude-mode-listed-source",
        "exclude-mode-unlisted-source",
        "include-mode-listed-source",
        "include-mode-unlisted-source",
        "unmanaged-group",
        "control",
        "malformed",
        "truncated",
        "not-ip",
        "not-multicast",
    ] {
        assert!(
            seen.contains_key(reason),
            "no case judged {reason}: {seen:?}"
        );
    }
    assert_eq!(seen["exclude-mode-listed-source"], 2);

    // Addresses where the frame has them, and the words for people.
    assert_eq!(judged[0]["verdict"], "drop");
    assert_eq!(judged[0]["group"], ip4(EXCLUDE4));
    assert_eq!(judged[0]["source"], ip4(LISTED4));
    assert_eq!(judged[11]["group"], ip6(INCLUDE6));
    assert_eq!(judged[11]["source"], ip6(OTHER6));
    assert!(judged[5].get("group").is_none(), "{}", judged[5]);
    let text = daemon.cli_ok(&["explain", "rx0", hex.to_str().unwrap()]);
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "frame 1 (line 3, {} bytes): drop exclude-mode-listed-source  group {} source {}",
            cases[0].1.len(),
            ip4(EXCLUDE4),
            ip4(LISTED4)
        )
    );
    assert_eq!(text.lines().count(), cases.len());

    // An interface without msfilter's program: every frame unmanaged, and a note.
    let lo = daemon.cli_ok(&["explain", "lo", hex.to_str().unwrap()]);
    assert!(
        lo.starts_with("note: msfilter's program is not attached to lo"),
        "{lo}"
    );
    assert!(lo.lines().skip(1).all(|l| !l.contains("drop ")), "{lo}");
}

#[test]
fn bad_input_is_refused_naming_the_line_or_record() {
    let link = Link::new("exbd", &["10.99.0.1/24"]).unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    let dir = TempDir::new("exbd").unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    };
    let frame = Frame::new(udp4(LISTED4, EXCLUDE4)).to_bytes();
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let odd = file("odd.hex", format!("# ok\n{hex}\n{hex}0\n").as_bytes());
    let not_hex = file("nothex.hex", b"01 02 zz\n");
    let empty = file("empty.hex", b"# nothing here\n\n");
    let pcap = pcap_file(&[("a".into(), frame.clone()), ("b".into(), frame.clone())]);
    let cut = file("cut.pcap", &pcap[..pcap.len() - 5]);
    let mut sll = pcap.clone();
    sll[20..24].copy_from_slice(&113u32.to_be_bytes());
    let sll = file("sll.pcap", &sll);
    let pcapng = file(
        "capture.pcapng",
        &[
            0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a,
        ],
    );
    for (args, says) in [
        (
            vec!["rx0", odd.as_str()],
            format!("{odd}: line 3: an odd number of hex digits"),
        ),
        (
            vec!["rx0", not_hex.as_str()],
            format!("{not_hex}: line 1: 'z' is not a hex digit"),
        ),
        (vec!["rx0", empty.as_str()], "no frames".to_string()),
        (
            vec!["rx0", "--pcap", cut.as_str()],
            format!(
                "{cut}: record 2: it claims {} bytes, the file has {} left",
                frame.len(),
                frame.len() - 5
            ),
        ),
        (
            vec!["rx0", "--pcap", sll.as_str()],
            "link type 113 (Linux cooked capture) is not Ethernet".to_string(),
        ),
        (
            vec!["rx0", "--pcap", pcapng.as_str()],
            "a pcapng file".to_string(),
        ),
        (
            vec!["rx0", "/nonexistent/frames.hex"],
            "reading /nonexistent/frames.hex".to_string(),
        ),
    ] {
        let out = explain(&daemon, &args);
        assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
        assert!(out.stderr.contains(&says), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
    // Usage: one input, not both, and an interface the daemon knows.
    let good = file("good.hex", format!("{hex}\n").as_bytes());
    for args in [
        vec!["rx0"],
        vec!["rx0", good.as_str(), "--pcap", cut.as_str()],
    ] {
        assert_eq!(explain(&daemon, &args).code, Some(2), "{args:?}");
    }
    let unknown = explain(&daemon, &["nosuch0", good.as_str()]);
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert!(
        unknown.stderr.contains("no interface named \"nosuch0\""),
        "{unknown:?}"
    );
    // Standard input.
    let out = Command::new(msfilter_bin())
        .arg("--socket")
        .arg(daemon.socket())
        .args(["explain", "rx0", "-", "-j"])
        .stdin(std::fs::File::open(&good).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["frames"][0]["reason"], "unmanaged-group");
}
