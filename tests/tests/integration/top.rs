//! `msfilter top`: with traffic of a known count sent between two of its samples, the JSON
//! lines' counts add up to what was sent (per source, group, interface and in total) and
//! their rates are those counts over the measured interval; the live view redraws from the
//! top (cursor home, clear) once per refresh and ends after `--count`.

use std::{
    io::{BufRead as _, BufReader},
    net::IpAddr,
    process::{Command, Stdio},
    time::Duration,
};

use msfilter_testbed::{
    daemon::{Daemon, msfilter_bin},
    netns::Link,
    traffic::{Receiver, Sender},
};
use serde_json::Value;

const GROUP: &str = "232.64.0.1";
const BLOCKED: &str = "10.99.0.3";
const ALLOWED: &str = "10.99.0.1";

fn top(daemon: &Daemon, args: &[&str]) -> Command {
    let mut command = Command::new(msfilter_bin());
    command
        .arg("--socket")
        .arg(daemon.socket())
        .arg("top")
        .args(args);
    command
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The sum of `field` (e.g. `dropped`) `what` (`packets`, `bytes`) over the lines, in the
/// rows of `table` that `pick` selects.
fn sum(lines: &[Value], table: &str, pick: impl Fn(&Value) -> bool, path: &[&str]) -> u64 {
    lines
        .iter()
        .flat_map(|l| l[table].as_array().unwrap().iter())
        .filter(|row| pick(row))
        .map(|row| n(path.iter().fold(row, |v, k| &v[*k])))
        .sum()
}

#[test]
fn json_lines_count_what_was_sent_between_samples() {
    let link = Link::new("top", &[&format!("{ALLOWED}/24"), &format!("{BLOCKED}/24")]).unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    daemon.cli_ok(&["join", "rx0", GROUP]);
    daemon.cli_ok(&["block", "rx0", GROUP, BLOCKED]);
    let group: IpAddr = GROUP.parse().unwrap();
    let tx = link.sender.ifindex(&link.tx).unwrap();
    let mut blocked = Sender::new(&link.sender, BLOCKED.parse().unwrap(), group, tx, 100);
    let mut allowed = Sender::new(&link.sender, ALLOWED.parse().unwrap(), group, tx, 100);
    let app = Receiver::passive(&link.receiver, group);

    let mut child = top(&daemon, &["-j", "--interval", "1", "--count", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines: Vec<Value> = Vec::new();
    let mut next = |lines: &mut Vec<Value>| {
        let line = stdout.next().expect("a line of msfilter top").unwrap();
        lines.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
    };
    // The first refresh is over; what follows falls between later samples.
    next(&mut lines);
    for _ in 0..50 {
        blocked.send().unwrap();
    }
    for _ in 0..20 {
        allowed.send().unwrap();
    }
    assert_eq!(app.take_when_quiet(Duration::from_millis(200)).len(), 1);
    next(&mut lines);
    next(&mut lines);
    assert!(stdout.next().is_none(), "more than --count lines");
    let status = child.wait().unwrap();
    assert!(status.success(), "msfilter top: {status}");

    let after = &lines[1..];
    let in_group = |row: &Value| row["iface"] == "rx0" && row["group"] == GROUP;
    assert_eq!(
        sum(&lines[..1], "groups", in_group, &["dropped", "packets"]),
        0
    );
    assert_eq!(sum(after, "groups", in_group, &["dropped", "packets"]), 50);
    assert_eq!(sum(after, "groups", in_group, &["passed", "packets"]), 20);
    assert_eq!(
        sum(after, "groups", in_group, &["dropped", "bytes"]),
        50 * blocked.frame_len()
    );
    let listed = |row: &Value| in_group(row) && row["source"] == BLOCKED;
    assert_eq!(sum(after, "sources", listed, &["matched", "packets"]), 50);
    let rx0 = |row: &Value| row["iface"] == "rx0";
    assert_eq!(sum(after, "interfaces", rx0, &["dropped", "packets"]), 50);
    assert_eq!(
        sum(after, "interfaces", rx0, &["passed", "bytes"]),
        20 * allowed.frame_len()
    );
    // Only this traffic is dropped; the kernel's own frames may pass besides it.
    let total =
        |field: &str| -> u64 { after.iter().map(|l| n(&l["total"][field]["packets"])).sum() };
    assert_eq!(total("dropped"), 50);
    assert!(total("passed") >= 20);

    // Rates: each line's counts over its measured interval, about the one asked for.
    for line in &lines {
        let interval = line["interval"].as_f64().unwrap();
        assert!((0.8..3.0).contains(&interval), "{line}");
        for row in line["groups"].as_array().unwrap() {
            for field in ["passed", "dropped"] {
                let r = &row[field];
                let expected = n(&r["packets"]) as f64 / interval;
                let got = r["packets_per_second"].as_f64().unwrap();
                assert!((got - expected).abs() <= 1e-9 * expected.max(1.0), "{row}");
                let expected = n(&r["bytes"]) as f64 / interval;
                let got = r["bytes_per_second"].as_f64().unwrap();
                assert!((got - expected).abs() <= 1e-9 * expected.max(1.0), "{row}");
            }
        }
    }
}

#[test]
fn the_live_view_redraws_and_ends_after_count() {
    let link = Link::new("topv", &[&format!("{ALLOWED}/24")]).unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    daemon.cli_ok(&["join", "rx0", GROUP]);
    let out = top(&daemon, &["--interval", "0.2", "--count", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("\x1b[H\x1b[2J").count(), 3, "{stdout:?}");
    assert!(stdout.starts_with("\x1b[H\x1b[2J"), "{stdout:?}");
    assert!(stdout.contains("refresh 3/3"), "{stdout:?}");
    let last = stdout.rsplit("\x1b[H\x1b[2J").next().unwrap();
    assert!(last.contains("rx0") && last.contains(GROUP), "{last}");

    for (args, says) in [
        (&["--interval", "0"][..], "out of range"),
        (&["--interval", "soon"], "is not a number of seconds"),
        (&["--count", "0"], "--count"),
    ] {
        let out = top(&daemon, args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
