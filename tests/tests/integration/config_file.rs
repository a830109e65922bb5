//! The declarative configuration and the persisted state: invalid files are refused with
//! their line and reason and change nothing; reload and SIGHUP apply only the difference;
//! an owned interface that is deleted and re-created is released and, being configured,
//! taken again; a corrupt or foreign state file is refused and kept aside.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use msfilter_testbed::{
    daemon::Daemon,
    netns::Link,
    traffic::{Receiver, Sender},
};

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const CONFIG: &str = r#"
[interface.rx0]

[[interface.rx0.group]]
address = "232.50.0.1"
mode = "exclude"
sources = ["10.99.0.3"]

[[interface.rx0.group]]
address = "ff3e::50:1"
mode = "include"
sources = ["fd99::1"]
"#;

fn groups(daemon: &Daemon) -> Vec<(String, String, Vec<String>)> {
    daemon
        .cli_json(&["list", "-j"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["group"].as_str().unwrap().to_string(),
                e["mode"].as_str().unwrap().to_string(),
                e["sources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["source"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// Under `CONFIG`, an application on 232.50.0.1 hears 10.99.0.1 and never 10.99.0.3.
fn assert_configured_policy_filters(link: &Link) {
    let tx = link.sender.ifindex("tx0").unwrap();
    let g = "232.50.0.1".parse().unwrap();
    let app = Receiver::passive(&link.receiver, g);
    let mut allowed = Sender::new(&link.sender, "10.99.0.1".parse().unwrap(), g, tx, 32);
    let mut blocked = Sender::new(&link.sender, "10.99.0.3".parse().unwrap(), g, tx, 32);
    for _ in 0..10 {
        allowed.send().unwrap();
        blocked.send().unwrap();
    }
    let got = app.take_when_quiet(Duration::from_millis(250));
    assert_eq!(got.get(&"10.99.0.1".parse().unwrap()), Some(&10), "{got:?}");
    assert_eq!(got.get(&"10.99.0.3".parse().unwrap()), None, "{got:?}");
    assert_eq!(got.len(), 1, "{got:?}");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn configuration_is_applied_reloaded_by_difference_and_invalid_files_change_nothing() {
    let link = Link::new("cfg", &["10.99.0.1/24", "10.99.0.3/24", "fd99::1/64"]).unwrap();
    let dir = msfilter_testbed::daemon::TempDir::new("cfg").unwrap();
    let config = dir.path().join("msfilter.toml");

    // An invalid file at start: the daemon does not start, and says where and why.
    write(&config, &CONFIG.replace("10.99.0.3", "239.9.9.9"));
    let config_arg = config.to_str().unwrap();
    let err = Daemon::start(&link.receiver, &["--config", config_arg]).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "{config_arg} line 7: 239.9.9.9 is a multicast address; a source must be unicast"
        )),
        "{message}"
    );

    write(&config, CONFIG);
    let mut daemon = Daemon::start(&link.receiver, &["--config", config_arg]).unwrap();
    let configured = vec![
        (
            "232.50.0.1".into(),
            "exclude".into(),
            vec!["10.99.0.3".into()],
        ),
        (
            "ff3e::50:1".into(),
            "include".into(),
            vec!["fd99::1".into()],
        ),
    ];
    assert_eq!(groups(&daemon), configured);
    assert_eq!(
        daemon.cli_json(&["owner", "rx0", "-j"])["owner"],
        "msfilter"
    );

    // The configured policy drops the blocked source at XDP.
    assert_configured_policy_filters(&link);

    // An invalid file on reload: refused with line and reason, the policy stays.
    write(&config, &format!("{CONFIG}\n[interface.rx0.bogus]\n"));
    let out = daemon.cli(&["reload"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("line 14"), "{}", out.stderr);
    assert!(
        out.stderr.contains("the running policy stays"),
        "{}",
        out.stderr
    );
    assert_eq!(groups(&daemon), configured);

    // A valid change: only the difference is applied.
    let changed = CONFIG
        .replace(r#"sources = ["10.99.0.3"]"#, r#"sources = ["10.99.0.3", "10.99.0.4"]"#)
        .replace(
            "[[interface.rx0.group]]\naddress = \"ff3e::50:1\"\nmode = \"include\"\nsources = [\"fd99::1\"]\n",
            "",
        );
    write(&config, &changed);
    let out = daemon.cli_ok(&["reload"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "rx0 232.50.0.1: EXCLUDE {10.99.0.3, 10.99.0.4}",
            "rx0 ff3e::50:1: removed"
        ]
    );
    assert_eq!(
        groups(&daemon),
        vec![(
            "232.50.0.1".to_string(),
            "exclude".to_string(),
            vec!["10.99.0.3".to_string(), "10.99.0.4".to_string()]
        )]
    );
    assert_eq!(daemon.cli_ok(&["reload"]).trim(), "configuration unchanged");

    // SIGHUP does the same.
    write(&config, CONFIG);
    // SAFETY: plain kill(2) on the daemon.
    unsafe { libc::kill(daemon.pid().unwrap() as i32, libc::SIGHUP) };
    wait_until("SIGHUP reloads", || groups(&daemon) == configured);

    // The configuration client is not persisted: the file is its source.
    daemon.terminate();
    let state = std::fs::read_to_string(daemon.state_dir().join("state.json")).unwrap();
    assert!(!state.contains("config-file"), "{state}");
}

#[test]
fn a_configured_interface_deleted_and_recreated_is_taken_again() {
    let link = Link::new("recr", &["10.99.0.1/24", "10.99.0.3/24"]).unwrap();
    let dir = msfilter_testbed::daemon::TempDir::new("recr").unwrap();
    let config = dir.path().join("msfilter.toml");
    write(&config, CONFIG);
    let daemon = Daemon::start(&link.receiver, &["--config", config.to_str().unwrap()]).unwrap();
    let first = daemon.cli_json(&["owner", "rx0", "-j"]);
    assert_eq!(first["owner"], "msfilter");

    // Deleting rx0 deletes its peer tx0 too.
    link.receiver.ip(&["link", "del", "rx0"]).unwrap();
    wait_until("the daemon released rx0", || {
        daemon.log().contains("interface rx0 (index")
            && daemon
                .cli_json(&["list", "-j"])
                .as_array()
                .unwrap()
                .is_empty()
    });

    // Re-created (with another index): configured, so taken again with its groups.
    msfilter_testbed::netns::veth_pair(&link.sender, "tx0", &link.receiver, "rx0").unwrap();
    link.sender
        .ip(&["addr", "add", "10.99.0.1/24", "dev", "tx0"])
        .unwrap();
    link.sender
        .ip(&["addr", "add", "10.99.0.3/24", "dev", "tx0"])
        .unwrap();
    link.sender
        .ip(&["route", "add", "224.0.0.0/4", "dev", "tx0"])
        .unwrap();
    link.receiver
        .ip(&["addr", "add", "10.99.0.2/24", "dev", "rx0"])
        .unwrap();
    wait_until("the daemon took rx0 again", || {
        let owner = daemon.cli_json(&["owner", "rx0", "-j"]);
        owner["owner"] == "msfilter" && owner["ifindex"] != first["ifindex"]
    });
    wait_until("its configured groups are back", || {
        groups(&daemon).len() == 2
    });

    // And it filters.
    assert_configured_policy_filters(&link);
}

#[test]
fn an_unconfigured_interface_deleted_and_recreated_stays_released() {
    let link = Link::new("recu", &["10.99.0.1/24"]).unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    daemon.cli_ok(&["join", "rx0", "232.51.0.1"]);
    link.receiver.ip(&["link", "del", "rx0"]).unwrap();
    wait_until("released", || {
        daemon.cli_json(&["stats", "-j"])["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    msfilter_testbed::netns::veth_pair(&link.sender, "tx0", &link.receiver, "rx0").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(daemon.cli_json(&["owner", "rx0", "-j"])["owner"], "none");
    assert_eq!(daemon.cli_ok(&["list", "-j"]).trim(), "[]");
}

#[test]
fn a_corrupt_or_foreign_state_file_is_refused_and_kept_aside() {
    let link = Link::new("stf", &["10.99.0.1/24"]).unwrap();
    let mut daemon = Daemon::start(&link.receiver, &[]).unwrap();
    daemon.cli_ok(&["join", "rx0", "232.52.0.1"]);
    assert_eq!(daemon.terminate(), Some(0));
    let state = daemon.state_dir().join("state.json");

    for (body, why) in [
        (
            "{\"format\": \"msfilter-state\", \"vers",
            "is not valid JSON",
        ),
        ("{\"users\": [\"alice\"]}", "is not an msfilter state file"),
    ] {
        write(&state, body);
        let err = daemon.restart().unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
        assert!(err.contains("moved aside"), "{err}");
        assert!(!state.exists(), "the file was moved, not overwritten");
        let aside: Vec<_> = std::fs::read_dir(daemon.state_dir())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("state.json.rejected-")
            })
            .collect();
        assert!(
            aside
                .iter()
                .any(|e| std::fs::read_to_string(e.path()).unwrap() == body),
            "kept aside as it was"
        );
        for e in aside {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    // Started again without a state file: an empty state, and a fresh file is written.
    daemon.restart().unwrap();
    assert_eq!(daemon.cli_ok(&["list", "-j"]).trim(), "[]");
    assert!(state.exists());
}
