//! `msfilter doctor` on a test namespace with a running daemon: each provoked problem is
//! reported with its status (strict rp_filter, IGMPv2 forced, igmp_max_msf below a managed
//! group's source list, a socket joined outside msfilter, another XDP program), the exit
//! status follows the worst finding, and `-j` has the documented shape. Without a daemon
//! the local checks still run and the daemon is reported unreachable.

use std::{net::IpAddr, path::Path};

use msfilter::datapath::AttachMode;
use msfilter_testbed::{
    daemon::{Daemon, TempDir, msfilter_bin},
    foreign::{ForeignXdp, Via},
    netns::{Link, veth_pair},
    traffic::Receiver,
    unit::command_in,
};
use serde_json::Value;

/// A group on rx0 with twelve sources: more than the default igmp_max_msf of 10.
const MANY: &str = "232.50.0.1";
/// An any-source group on rx0.
const ANY: &str = "232.50.0.2";

fn config() -> String {
    let sources: Vec<String> = (10..22).map(|i| format!("\"10.99.0.{i}\"")).collect();
    format!(
        "[interface.rx0]\n\
         [[interface.rx0.group]]\naddress = \"{MANY}\"\nmode = \"include\"\nsources = [{}]\n\
         [[interface.rx0.group]]\naddress = \"{ANY}\"\nmode = \"exclude\"\n",
        sources.join(", ")
    )
}

struct Run {
    code: Option<i32>,
    report: Value,
    text: String,
}

/// `msfilter doctor` inside the receiver namespace, as JSON and as text.
fn doctor(link: &Link, socket: &Path, pin_dir: &Path, args: &[&str]) -> Run {
    let run = |json: bool| {
        command_in(&link.receiver, msfilter_bin())
            .arg("--socket")
            .arg(socket)
            .arg("doctor")
            .arg("--pin-dir")
            .arg(pin_dir)
            .args(json.then_some("-j"))
            .args(args)
            .env_remove("MSFILTER_CONFIG")
            .output()
            .unwrap()
    };
    let json = run(true);
    let text = run(false);
    assert_eq!(json.status.code(), text.status.code());
    let report: Value = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor -j printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&json.stdout),
            String::from_utf8_lossy(&json.stderr)
        )
    });
    Run {
        code: json.status.code(),
        report,
        text: String::from_utf8_lossy(&text.stdout).into_owned(),
    }
}

impl Run {
    fn findings(&self, check: &str, subject: Option<&str>) -> Vec<&Value> {
        self.report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["check"] == check && subject.is_none_or(|s| f["subject"] == s))
            .collect()
    }

    /// The status of the one finding of `check` about `subject`.
    fn status(&self, check: &str, subject: Option<&str>) -> String {
        let found = self.findings(check, subject);
        assert_eq!(
            found.len(),
            1,
            "{check} {subject:?}: {found:?}\n{}",
            self.text
        );
        found[0]["status"].as_str().unwrap().to_string()
    }

    fn found(&self, check: &str, subject: Option<&str>) -> String {
        self.findings(check, subject)[0]["found"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// The documented shape: status, summary counts that add up, each finding with check,
/// status, found and action (null exactly when ok), subject optional.
fn assert_shape(run: &Run) {
    let r = &run.report;
    let findings = r["findings"].as_array().unwrap();
    let count = |s: &str| findings.iter().filter(|f| f["status"] == s).count();
    for s in ["ok", "warn", "fail"] {
        assert_eq!(r["summary"][s].as_u64().unwrap() as usize, count(s), "{r}");
    }
    let worst = ["fail", "warn", "ok"]
        .into_iter()
        .find(|s| count(s) > 0)
        .unwrap();
    assert_eq!(r["status"], worst);
    for f in findings {
        let keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        for key in ["check", "status", "found", "action"] {
            assert!(keys.contains(&key), "{f}");
        }
        assert!(
            keys.iter()
                .all(|k| ["check", "status", "subject", "found", "action"].contains(k)),
            "{f}"
        );
        assert_eq!(f["action"].is_null(), f["status"] == "ok", "{f}");
        assert!(!f["found"].as_str().unwrap().is_empty(), "{f}");
    }
    // The text report has a line per finding and the summary.
    assert!(
        run.text.ends_with(&format!(
            "{} ok, {} warn, {} fail\n",
            count("ok"),
            count("warn"),
            count("fail")
        )),
        "{}",
        run.text
    );
    assert_eq!(run.code, Some(if count("fail") > 0 { 1 } else { 0 }));
}

#[test]
fn provoked_problems_are_each_reported_with_their_status() {
    let link = Link::new("doc", &["10.99.0.1/24"]).unwrap();
    veth_pair(&link.receiver, "rx1", &link.sender, "tx1").unwrap();
    let dir = TempDir::new("doctor").unwrap();
    let config_path = dir.path().join("msfilter.toml");
    std::fs::write(&config_path, config()).unwrap();
    let config_arg = config_path.to_str().unwrap();
    // Raises igmp_max_msf in the namespace so the twelve sources are accepted.
    let daemon = Daemon::start(
        &link.receiver,
        &["--config", config_arg, "--max-sources-per-socket", "16"],
    )
    .unwrap();
    let pin_dir = daemon.pin_dir().to_path_buf();
    let socket = daemon.socket();

    // Before anything is provoked: nothing fails, and rx0 is msfilter's.
    let clean = doctor(&link, &socket, &pin_dir, &["--config", config_arg]);
    assert_shape(&clean);
    assert_eq!(clean.code, Some(0), "{}", clean.text);
    assert_eq!(clean.status("daemon", None), "ok");
    assert_eq!(clean.status("bpffs", pin_dir.to_str()), "ok");
    assert_eq!(clean.status("config", Some(config_arg)), "ok");
    assert_eq!(clean.status("igmp-max-msf", None), "ok");
    assert!(
        clean.found("igmp-max-msf", None).contains("has 12 sources"),
        "{}",
        clean.text
    );
    assert_eq!(clean.status("xdp-program", Some("rx0")), "ok");
    assert_eq!(clean.status("rp-filter", Some("rx0")), "ok");
    assert_eq!(clean.status("igmp-version", Some("rx0")), "ok");
    assert_eq!(clean.status("outside-members", None), "ok");
    assert!(
        clean.findings("rp-filter", Some("rx1")).is_empty(),
        "only managed interfaces by default: {}",
        clean.text
    );

    // Provoke.
    link.receiver
        .sysctl("net.ipv4.conf.rx0.rp_filter", "1")
        .unwrap();
    link.receiver
        .sysctl("net.ipv4.conf.rx0.force_igmp_version", "2")
        .unwrap();
    link.receiver.sysctl("net.ipv4.igmp_max_msf", "8").unwrap();
    let rx0 = link.receiver.ifindex("rx0").unwrap();
    let group: IpAddr = ANY.parse().unwrap();
    let outsider = Receiver::new(&link.receiver, group, rx0);
    let rx1 = link.receiver.ifindex("rx1").unwrap();
    let foreign = link
        .receiver
        .run(|| ForeignXdp::attach("foreign_doc", rx1, Via::Link, AttachMode::Skb))
        .unwrap();

    let run = doctor(
        &link,
        &socket,
        &pin_dir,
        &["--config", config_arg, "rx0", "rx1"],
    );
    assert_shape(&run);
    assert_eq!(run.code, Some(1), "{}", run.text);
    assert_eq!(run.status("rp-filter", Some("rx0")), "warn");
    assert!(
        run.found("rp-filter", Some("rx0"))
            .starts_with("strict reverse-path filtering")
    );
    assert_eq!(run.status("igmp-version", Some("rx0")), "warn");
    assert!(
        run.found("igmp-version", Some("rx0"))
            .starts_with("IGMPv2 forced (net.ipv4.conf.rx0.force_igmp_version = 2)"),
        "{}",
        run.text
    );
    assert_eq!(run.status("igmp-max-msf", None), "fail");
    assert!(
        run.found("igmp-max-msf", None).contains(&format!(
            "net.ipv4.igmp_max_msf = 8, but group {MANY} on rx0"
        )),
        "{}",
        run.text
    );
    let outside = format!("rx0 {ANY}");
    assert_eq!(run.status("outside-members", Some(&outside)), "warn");
    assert!(
        run.found("outside-members", Some(&outside))
            .starts_with("1 socket(s) joined outside msfilter"),
        "{}",
        run.text
    );
    assert_eq!(run.status("xdp-program", Some("rx1")), "warn");
    assert!(
        run.found("xdp-program", Some("rx1")).contains(&format!(
            "program {} (foreign_doc, skb mode)",
            foreign.prog_id
        )),
        "{}",
        run.text
    );
    assert_eq!(run.status("xdp-program", Some("rx0")), "ok");
    // The kernel's report of driver-mode support, or msfilter's own driver attachment.
    assert_eq!(
        run.status("xdp-driver-mode", Some("rx0")),
        "ok",
        "{}",
        run.text
    );

    // An interface msfilter is configured to own but another program holds: a failure.
    let wants_rx1 = dir.path().join("wants-rx1.toml");
    std::fs::write(&wants_rx1, format!("{}[interface.rx1]\n", config())).unwrap();
    let run = doctor(
        &link,
        &socket,
        &pin_dir,
        &["--config", wants_rx1.to_str().unwrap()],
    );
    assert_shape(&run);
    assert_eq!(
        run.status("xdp-program", Some("rx1")),
        "fail",
        "{}",
        run.text
    );

    // An invalid configuration fails, named.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[interface.rx0]\nxdp = 1\n").unwrap();
    let run = doctor(
        &link,
        &socket,
        &pin_dir,
        &["--config", bad.to_str().unwrap()],
    );
    assert_eq!(run.status("config", bad.to_str()), "fail");
    assert!(
        run.found("config", bad.to_str())
            .contains("unknown field `xdp`")
    );

    // Undone, the findings go back to ok.
    drop(outsider);
    drop(foreign);
    link.receiver
        .sysctl("net.ipv4.conf.rx0.rp_filter", "0")
        .unwrap();
    link.receiver
        .sysctl("net.ipv4.conf.rx0.force_igmp_version", "0")
        .unwrap();
    link.receiver.sysctl("net.ipv4.igmp_max_msf", "16").unwrap();
    let run = doctor(&link, &socket, &pin_dir, &["rx0", "rx1"]);
    assert_shape(&run);
    assert_eq!(run.code, Some(0), "{}", run.text);
    for (check, subject) in [
        ("rp-filter", Some("rx0")),
        ("igmp-version", Some("rx0")),
        ("igmp-max-msf", None),
        ("xdp-program", Some("rx1")),
        ("outside-members", None),
    ] {
        assert_eq!(run.status(check, subject), "ok", "{check}: {}", run.text);
    }
    drop(daemon);
}

#[test]
fn without_a_daemon_the_local_checks_run() {
    let link = Link::new("dond", &["10.99.0.1/24"]).unwrap();
    let dir = TempDir::new("doctor").unwrap();
    let socket = dir.path().join("nobody.sock");
    link.receiver
        .sysctl("net.ipv4.conf.rx0.rp_filter", "1")
        .unwrap();
    let run = doctor(
        &link,
        &socket,
        Path::new("/sys/fs/bpf/msfilter-doctor-test"),
        &[],
    );
    assert_shape(&run);
    assert_eq!(run.code, Some(0), "warnings only: {}", run.text);
    assert_eq!(run.status("daemon", None), "warn");
    assert!(
        run.found("daemon", None)
            .starts_with(&format!("not reachable at {}", socket.display())),
        "{}",
        run.text
    );
    assert_eq!(run.status("kernel", None), "ok");
    assert_eq!(
        run.status("bpffs", Some("/sys/fs/bpf/msfilter-doctor-test")),
        "ok"
    );
    // No daemon and no configuration: every interface but loopback.
    assert_eq!(run.status("rp-filter", Some("rx0")), "warn");
    assert!(run.findings("rp-filter", Some("lo")).is_empty());
    assert!(run.findings("outside-members", None).is_empty());

    // Pins on a file system that is not bpffs: a failure, exit status 1.
    let run = doctor(&link, &socket, &dir.path().join("pins"), &[]);
    assert_shape(&run);
    assert_eq!(run.code, Some(1));
    let subject = dir.path().join("pins");
    assert_eq!(run.status("bpffs", subject.to_str()), "fail");

    // A named interface that does not exist is bad usage of the doctor, said plainly.
    let out = command_in(&link.receiver, msfilter_bin())
        .args(["--socket", socket.to_str().unwrap(), "doctor", "nosuch0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "msfilter: no interface named \"nosuch0\""
    );
}
