//! Bad input gets a clear error naming the problem, a non-zero exit, and changes nothing:
//! CLI arguments, requests the kernel must never see, garbage and oversized protocol
//! messages, a peer without permission, and the kernel's per-socket source limit.

use std::{
    io::{Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    time::Duration,
};

use msfilter_testbed::{daemon::Daemon, kernel::source_filters, netns::Link};
use serde_json::Value;

/// What the daemon and the kernel hold, to compare before and after a refusal.
fn snapshot(link: &Link, daemon: &Daemon) -> (String, String) {
    let list = daemon.cli_ok(&["list", "-j"]);
    let kernel = format!(
        "{:?}",
        source_filters(&link.receiver, &link.rx, "232.3.3.3".parse().unwrap())
    );
    (list, kernel)
}

#[test]
fn refused_requests_name_the_problem_and_change_nothing() {
    let link = Link::new("bad", &["10.99.0.1/24"]).unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    daemon.cli_ok(&["join", "rx0", "232.3.3.3"]);
    daemon.cli_ok(&["block", "rx0", "232.3.3.3", "10.99.0.7"]);
    let before = snapshot(&link, &daemon);

    let cases: &[(&[&str], &str)] = &[
        (
            &["join", "rx0", "10.1.1.1"],
            "10.1.1.1 is not a multicast address; a group must be multicast",
        ),
        (
            &["block", "rx0", "232.3.3.3", "239.0.0.1"],
            "239.0.0.1 is a multicast address; a source must be unicast",
        ),
        (
            &["block", "rx0", "232.3.3.3", "fd00::1"],
            "fd00::1 is an IPv6 source but the socket is IPv4",
        ),
        (
            &["block", "rx0", "232.3.3.3", "0.0.0.0"],
            "0.0.0.0 is the unspecified address; a source must be unicast",
        ),
        (
            &["block", "rx0", "232.3.3.3", "255.255.255.255"],
            "255.255.255.255 is the IPv4 broadcast address; a source must be unicast",
        ),
        (
            &["join", "nosuch0", "232.3.3.3"],
            "no interface named \"nosuch0\"",
        ),
        (&["join", "999", "232.3.3.3"], "no interface with index 999"),
        (
            &[
                "filter",
                "set",
                "rx0",
                "232.3.3.3",
                "--mode",
                "exclude",
                "10.0.0.1",
                "10.0.0.1",
            ],
            "10.0.0.1 is listed more than once; a filter lists each source once",
        ),
        // The kernel's refusals keep its errno name.
        (
            &["block", "rx0", "232.3.3.3", "10.99.0.7"],
            "EADDRNOTAVAIL: 10.99.0.7 is already blocked on 232.3.3.3 (rx0)",
        ),
        (
            &["unblock", "rx0", "232.3.3.3", "10.99.0.8"],
            "EADDRNOTAVAIL: 10.99.0.8 is not blocked on 232.3.3.3 (rx0)",
        ),
        (
            &["join", "rx0", "232.3.3.3"],
            "EADDRINUSE: 232.3.3.3 is already joined on rx0",
        ),
        (
            &["join-source", "rx0", "232.3.3.3", "10.99.0.1"],
            "EINVAL: 232.3.3.3 (rx0) is joined any-source (EXCLUDE mode): use block/unblock, \
             or set-filter to switch it to INCLUDE",
        ),
        (
            &["leave", "rx0", "232.4.4.4"],
            "EADDRNOTAVAIL: 232.4.4.4 is not joined on rx0",
        ),
    ];
    for (args, message) in cases {
        let out = daemon.cli(args);
        assert_eq!(out.code, Some(1), "{args:?}: {out:?}");
        assert_eq!(
            out.stderr.trim(),
            format!("msfilter: {message}"),
            "{args:?}"
        );
        assert_eq!(
            snapshot(&link, &daemon),
            before,
            "{args:?} changed the state"
        );
    }

    // Arguments the CLI cannot parse never reach the daemon: usage error, exit 2.
    for args in [
        &["block", "rx0", "232.3.3.3", "not-an-address"][..],
        &["filter", "set", "rx0", "232.3.3.3", "--mode", "sometimes"],
        &["join", "rx0"],
    ] {
        let out = daemon.cli(args);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains("error:"), "{args:?}: {}", out.stderr);
    }
    assert_eq!(snapshot(&link, &daemon), before);
}

fn send_raw(stream: &mut UnixStream, len: u32, body: &[u8]) {
    stream.write_all(&len.to_be_bytes()).unwrap();
    stream.write_all(body).unwrap();
}

fn read_reply(stream: &mut UnixStream) -> Option<Value> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(serde_json::from_slice(&body).unwrap())
}

#[test]
fn garbage_and_oversized_messages_get_an_error_and_the_daemon_stays_up() {
    let link = Link::new("garb", &["10.99.0.1/24"]).unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    let mut s = UnixStream::connect(daemon.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    for (body, expect) in [
        (&b"{not json at all"[..], "the message is not JSON"),
        (br#"{"request":"stats"}"#, "the message has no protocol version"),
        (
            br#"{"version":7,"request":"stats"}"#,
            "protocol version 7 is not supported; this daemon speaks version 1",
        ),
        (br#"{"version":1,"request":"explode"}"#, "not a valid request"),
        (
            br#"{"version":1,"request":"membership","iface":"rx0","group":"232.1.1.1","op":"join"}"#,
            "register first",
        ),
    ] {
        send_raw(&mut s, body.len() as u32, body);
        let reply = read_reply(&mut s).expect("a reply");
        assert_eq!(reply["result"], "error", "{reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(message.starts_with(expect), "{message:?} should start with {expect:?}");
    }
    // The connection is still usable after those.
    let stats = br#"{"version":1,"request":"stats"}"#;
    send_raw(&mut s, stats.len() as u32, stats);
    assert_eq!(read_reply(&mut s).unwrap()["result"], "ok");

    // An oversized length: an error reply, then the daemon closes this connection.
    send_raw(&mut s, 100 << 20, b"");
    let reply = read_reply(&mut s).expect("a reply to the oversized message");
    assert_eq!(reply["kind"], "protocol");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("exceeds the limit"),
        "{reply}"
    );
    assert!(read_reply(&mut s).is_none(), "connection closed");

    // A client that stalls mid-message blocks nobody else.
    let mut stalled = UnixStream::connect(daemon.socket()).unwrap();
    stalled.write_all(&[0, 0, 1]).unwrap();
    daemon.cli_ok(&["join", "rx0", "232.5.5.5"]);
    daemon.cli_ok(&["stats"]);
    drop(stalled);
}

#[test]
fn a_peer_without_permission_is_refused() {
    let link = Link::new("perm", &["10.99.0.1/24"]).unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    let nobody = |args: &[&str]| {
        let out = daemon.cli_as(65534, 65534, args);
        (out.code, out.stderr)
    };
    // The socket is root's only (0600) and its directory is private.
    let mode = std::fs::metadata(daemon.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (code, stderr) = nobody(&["stats"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");

    // Even if the file were opened up, the daemon itself checks the peer's credentials.
    for p in [daemon.socket(), daemon.dir().to_path_buf()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let (code, stderr) = nobody(&["join", "rx0", "232.6.6.6"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "msfilter: permission denied: uid 65534 may not change the filter (only root)"
    );
    let (code, stderr) = nobody(&["stats"]);
    assert_eq!(code, Some(0), "reading is allowed: {stderr}");
    assert_eq!(daemon.cli_ok(&["list", "-j"]).trim(), "[]");
}

#[test]
fn the_kernels_source_limit_is_named_and_can_be_raised() {
    let link = Link::new("lim", &["10.99.0.1/24"]).unwrap();
    let mut daemon = Daemon::start(&link.receiver, &[]).unwrap();
    daemon.cli_ok(&["join", "rx0", "232.8.8.8"]);
    // net.ipv4.igmp_max_msf defaults to 10 sources per socket.
    for i in 1..=10 {
        daemon.cli_ok(&["block", "rx0", "232.8.8.8", &format!("10.0.0.{i}")]);
    }
    let out = daemon.cli(&["block", "rx0", "232.8.8.8", "10.0.0.11"]);
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr.trim(),
        "msfilter: ENOBUFS: 232.8.8.8 (rx0) would list more sources than the kernel allows \
         per socket (net.ipv4.igmp_max_msf = 10); start the daemon with \
         --max-sources-per-socket N to raise it"
    );
    let list: Value = serde_json::from_str(&daemon.cli_ok(&["list", "-j"])).unwrap();
    assert_eq!(list[0]["sources"].as_array().unwrap().len(), 10);
    daemon.terminate();

    // Started with a higher limit, the daemon raises the namespace's sysctls.
    let daemon = Daemon::start(&link.receiver, &["--max-sources-per-socket", "64"]).unwrap();
    daemon.cli_ok(&["join", "rx0", "232.8.8.8"]);
    for i in 1..=11 {
        daemon.cli_ok(&["block", "rx0", "232.8.8.8", &format!("10.0.0.{i}")]);
    }
    let limit = link
        .receiver
        .read_proc("/proc/sys/net/ipv4/igmp_max_msf")
        .unwrap();
    assert_eq!(limit.trim(), "64");
}

#[test]
fn members_of_the_configured_group_may_change_the_filter() {
    let link = Link::new("grp", &["10.99.0.1/24"]).unwrap();
    // gid 65534 ("nogroup" on Debian) may change the filter; the socket is 0660 for it.
    let daemon = Daemon::start(&link.receiver, &["--group", "65534"]).unwrap();
    let meta = std::fs::metadata(daemon.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 65534);
    // The socket was bound under a staging name and renamed into place: none is left.
    let staged: Vec<_> = std::fs::read_dir(daemon.socket().parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".new"))
        .collect();
    assert!(staged.is_empty(), "staging sockets left: {staged:?}");
    std::fs::set_permissions(daemon.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_user = |gid: u32, args: &[&str]| {
        let out = daemon.cli_as(65534, gid, args);
        (out.code, out.stderr)
    };
    let (code, stderr) = as_user(65534, &["join", "rx0", "232.7.0.1"]);
    assert_eq!(code, Some(0), "{stderr}");
    let list: Value = serde_json::from_str(&daemon.cli_ok(&["list", "-j"])).unwrap();
    assert_eq!(list[0]["group"], "232.7.0.1");
    // Another group's member cannot even open the socket.
    let (code, stderr) = as_user(1, &["join", "rx0", "232.7.0.2"]);
    assert_eq!(code, Some(3), "{stderr}");
}

/// One request of every kind (every membership op too) on `rx0` and 232.3.3.3, each with a
/// field it does not have: `kep` where `keep` was meant, and the like.
const MISSPELT: &[(&str, &str)] = &[
    (
        r#"{"version":1,"request":"register","client":"cli","persistent":false,"persistant":true}"#,
        "register",
    ),
    (
        r#"{"version":1,"request":"deregister","force":true}"#,
        "deregister",
    ),
    (
        r#"{"version":1,"request":"membership","iface":"rx0","group":"232.3.3.3","op":"join","sorce":"10.99.0.8"}"#,
        "membership join",
    ),
    (
        r#"{"version":1,"request":"membership","iface":"rx0","group":"232.3.3.3","op":"leave","kep":true}"#,
        "membership leave",
    ),
    (
        r#"{"version":1,"request":"membership","iface":"rx0","group":"232.3.3.3","op":"block","source":"10.99.0.8","sources":[]}"#,
        "membership block",
    ),
    (
        r#"{"version":1,"request":"membership","iface":"rx0","group":"232.3.3.3","op":"unblock","source":"10.99.0.7","al":true}"#,
        "membership unblock",
    ),
    (
        r#"{"version":1,"request":"membership","iface":"rx0","group":"232.3.3.3","op":"join-source","source":"10.99.0.8","mode":"include"}"#,
        "membership join-source",
    ),
    (
        r#"{"version":1,"request":"membership","iface":"rx0","group":"232.3.3.3","op":"leave-source","source":"10.99.0.7","x":1}"#,
        "membership leave-source",
    ),
    (
        r#"{"version":1,"request":"membership","iface":"rx0","group":"232.3.3.3","op":"set-filter","mode":"include","sources":["10.99.0.8"],"sorces":[]}"#,
        "membership set-filter",
    ),
    (
        r#"{"version":1,"request":"get-filter","iface":"rx0","group":"232.3.3.3","clinet":"cli"}"#,
        "get-filter",
    ),
    (
        r#"{"version":1,"request":"list-start","filter":{"ifcae":"rx0"}}"#,
        "list-start",
    ),
    (
        r#"{"version":1,"request":"list-next","cursor":1,"pgae":5}"#,
        "list-next",
    ),
    (
        r#"{"version":1,"request":"list-end","cursor":1,"cursr":1}"#,
        "list-end",
    ),
    (r#"{"version":1,"request":"stats","verbose":true}"#, "stats"),
    (
        r#"{"version":1,"request":"attach","iface":"rx0","replcae":true}"#,
        "attach",
    ),
    (
        r#"{"version":1,"request":"detach","iface":"rx0","kep":true}"#,
        "detach",
    ),
    (
        r#"{"version":1,"request":"owner","iface":"rx0","json":true}"#,
        "owner",
    ),
    (
        r#"{"version":1,"request":"reload","path":"/etc/msfilter.toml"}"#,
        "reload",
    ),
];

#[test]
fn a_misspelt_field_is_refused_for_every_request_kind_and_changes_nothing() {
    let link = Link::new("typo", &["10.99.0.1/24"]).unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    daemon.cli_ok(&["join", "rx0", "232.3.3.3"]);
    daemon.cli_ok(&["block", "rx0", "232.3.3.3", "10.99.0.7"]);
    let state = || {
        let owner = daemon.cli_json(&["owner", "rx0", "-j"]);
        let clients = daemon.cli_json(&["stats", "-j"])["clients"].clone();
        (snapshot(&link, &daemon), owner, clients)
    };
    let before = state();
    assert_eq!(before.1["owner"], "msfilter");

    // The raw connection acts for the CLI's client, so a membership request taken without
    // its misspelt field would change what `cli` holds.
    let mut s = UnixStream::connect(daemon.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let register = br#"{"version":1,"request":"register","client":"cli","persistent":true}"#;
    send_raw(&mut s, register.len() as u32, register);
    assert_eq!(read_reply(&mut s).unwrap()["reply"], "registered");

    for (body, kind) in MISSPELT {
        send_raw(&mut s, body.len() as u32, body.as_bytes());
        let reply = read_reply(&mut s).expect("a reply");
        assert_eq!(reply["result"], "error", "{body}: {reply}");
        assert_eq!(reply["kind"], "protocol", "{body}: {reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(
            message.starts_with("unknown field `")
                && message.contains(&format!("in a {kind} request")),
            "{body}: {message}"
        );
    }
    // The connection stays usable, and nothing changed.
    let stats = br#"{"version":1,"request":"stats"}"#;
    send_raw(&mut s, stats.len() as u32, stats);
    assert_eq!(read_reply(&mut s).unwrap()["result"], "ok");
    drop(s);
    assert_eq!(state(), before);
}
