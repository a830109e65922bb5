//! `-j` on the CLI's verbs: every answer is one JSON document of the shape docs/cli.md
//! gives, for changes (join, block, attach, detach, reload) as for reads; without `-j` the
//! answer is lines for people, not Rust debug output.

use msfilter_testbed::{
    daemon::{Daemon, TempDir},
    netns::Link,
};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[interface.rx0]

[[interface.rx0.group]]
address = "232.60.0.1"
mode = "exclude"
sources = ["10.99.0.3"]
"#;

#[test]
fn every_verb_answers_in_json_with_j() {
    let link = Link::new("cjson", &["10.99.0.1/24"]).unwrap();
    let dir = TempDir::new("cjson").unwrap();
    let config = dir.path().join("msfilter.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let daemon = Daemon::start(&link.receiver, &["--config", config.to_str().unwrap()]).unwrap();
    let rx = link.receiver.ifindex(&link.rx).unwrap();

    // Membership changes: the client's filter afterwards.
    assert_eq!(
        daemon.cli_json(&["join", "rx0", "232.60.0.2", "-j"]),
        json!({"iface": "rx0", "group": "232.60.0.2", "client": "cli",
               "filter": {"mode": "exclude", "sources": []}})
    );
    assert_eq!(
        daemon.cli_json(&["-j", "block", "rx0", "232.60.0.2", "10.99.0.7"]),
        json!({"iface": "rx0", "group": "232.60.0.2", "client": "cli",
               "filter": {"mode": "exclude", "sources": ["10.99.0.7"]}})
    );
    assert_eq!(
        daemon.cli_json(&["leave", "rx0", "232.60.0.2", "-j"])["filter"],
        Value::Null
    );

    // Ownership: released, then taken again.
    assert_eq!(
        daemon.cli_json(&["detach", "rx0", "-j"]),
        json!({"iface": "rx0", "deleted": 2, "kept": false})
    );
    let attached = daemon.cli_json(&["attach", "rx0", "--mode", "skb", "-j"]);
    assert_eq!(attached["result"], "attached", "{attached}");
    assert_eq!(attached["iface"], "rx0");
    assert_eq!(attached["ifindex"], rx);
    assert_eq!(attached["mode"], "skb");
    assert_eq!(attached["adopted"], false);
    assert_eq!(
        (&attached["groups"], &attached["sources"]),
        (&json!(1), &json!(1))
    );
    let program = attached["program_id"].as_u64().unwrap();
    assert!(program > 0, "{attached}");
    let replaced = daemon.cli_json(&["attach", "rx0", "--replace", "-j"]);
    assert_eq!(replaced["result"], "replaced", "{replaced}");
    assert_eq!(replaced["old_program"], program);
    assert_ne!(replaced["new_program"], program);

    // Reload: one line per change.
    std::fs::write(&config, CONFIG.replace("10.99.0.3", "10.99.0.4")).unwrap();
    assert_eq!(
        daemon.cli_json(&["reload", "-j"]),
        json!({"changes": ["rx0 232.60.0.1: EXCLUDE {10.99.0.4}"]})
    );
    assert_eq!(daemon.cli_json(&["reload", "-j"]), json!({"changes": []}));

    // Reads.
    assert_eq!(
        daemon.cli_json(&["owner", "rx0", "-j"])["owner"],
        "msfilter"
    );
    assert_eq!(daemon.cli_json(&["stats", "-j"])["groups"], 1);
    assert_eq!(daemon.cli_json(&["list", "-j"])[0]["group"], "232.60.0.1");
    let get = daemon.cli_json(&["filter", "get", "rx0", "232.60.0.1", "-j"]);
    assert_eq!(
        get["interface_filter"],
        json!({"mode": "exclude", "sources": ["10.99.0.4"]})
    );

    // Without -j: sentences, never debug output.
    for (args, expect) in [
        (
            &["detach", "rx0"][..],
            "released rx0: detached, 2 entries deleted\n",
        ),
        (&["reload"][..], "configuration unchanged\n"),
        (
            &["join", "rx0", "232.60.0.3"][..],
            "rx0 232.60.0.3: EXCLUDE {}\n",
        ),
    ] {
        assert_eq!(daemon.cli_ok(args), expect, "{args:?}");
    }
    let attached = daemon.cli_ok(&["attach", "rx0"]);
    assert!(
        attached.starts_with("attached to rx0 (index "),
        "{attached}"
    );
    assert!(!attached.contains('{'), "{attached}");

    // The daemon verb has no answer to format.
    let out = daemon.cli(&["daemon", "-j"]);
    assert_eq!(out.code, Some(2), "{out:?}");
}
