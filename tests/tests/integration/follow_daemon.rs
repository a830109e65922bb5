//! Follow mode through the daemon and the CLI, with real traffic: `msfilter attach rx0
//! --follow` makes XDP enforce the kernel's merge over every socket on the interface —
//! unmodified applications (plain sockets of this test process, a python3 process) and
//! msfilter's own clients alike. `msfilter list` names the sockets that contribute; the
//! follow flag survives a SIGKILL of the daemon without losing a wanted datagram; bad
//! input is refused with nothing changed.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr},
    os::unix::net::UnixStream,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use msfilter::sockopt::{Family, Mode, Request};
use msfilter_testbed::{
    apps::{AppFilter, AppSocket, PyApp},
    daemon::Daemon,
    followed,
    netns::Link,
    option_sets::OptionSet,
    traffic::{PORT, Sender},
};
use serde_json::Value;

/// `rx0`'s IPv4 address (family-specific source options name the interface by it).
const RX_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const PER_SOURCE: u64 = 200;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A group and four sources of one family.
struct Plan {
    group: IpAddr,
    sources: [IpAddr; 4],
}

impl Plan {
    fn new(family: Family, group_v4: &str, group_v6: &str) -> Self {
        match family {
            Family::V4 => Self {
                group: ip(group_v4),
                sources: [
                    ip("10.99.0.1"),
                    ip("10.99.0.3"),
                    ip("10.99.0.4"),
                    ip("10.99.0.5"),
                ],
            },
            Family::V6 => Self {
                group: ip(group_v6),
                sources: [ip("fd99::1"), ip("fd99::3"), ip("fd99::4"), ip("fd99::5")],
            },
        }
    }

    fn link(&self, tag: &str) -> Link {
        let addrs: Vec<String> = self
            .sources
            .iter()
            .map(|s| match s {
                IpAddr::V4(_) => format!("{s}/24"),
                IpAddr::V6(_) => format!("{s}/64"),
            })
            .collect();
        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        Link::new(tag, &addrs).unwrap()
    }
}

/// The `list -j` entry of `group` (its first page entry), if XDP holds one.
fn entry(daemon: &Daemon, group: IpAddr) -> Option<Value> {
    let list = daemon.cli_json(&["list", "-j"]);
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["group"] == group.to_string() && e.get("continued").is_none())
        .cloned()
}

fn entry_filter(e: &Value) -> AppFilter {
    let mode = match e["mode"].as_str().unwrap() {
        "include" => Mode::Include,
        _ => Mode::Exclude,
    };
    let mut sources: Vec<IpAddr> = e["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap().parse().unwrap())
        .collect();
    sources.sort();
    AppFilter { mode, sources }
}

fn filter(mode: Mode, sources: &[IpAddr]) -> AppFilter {
    let mut sources = sources.to_vec();
    sources.sort();
    AppFilter { mode, sources }
}

/// Wait until XDP enforces `want` for `group` and the follower calls the group complete
/// with `sockets` members; returns the entry.
fn wait_enforced(daemon: &Daemon, group: IpAddr, want: &AppFilter, sockets: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = entry(daemon, group);
        if let Some(e) = &e
            && entry_filter(e) == *want
            && e["follow"]["complete"] == true
            && e["follow"]["sockets"].as_array().map(Vec::len) == Some(sockets)
        {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{group}: XDP does not enforce {want:?} with {sockets} sockets: {e:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn dropped(daemon: &Daemon) -> u64 {
    daemon.cli_json(&["stats", "-j"])["dropped"]["packets"]
        .as_u64()
        .unwrap()
}

fn received(app: &AppSocket) -> BTreeMap<IpAddr, u64> {
    let mut out = BTreeMap::new();
    for s in app.drain_sources() {
        *out.entry(s).or_insert(0) += 1;
    }
    out
}

fn senders(link: &Link, plan: &Plan) -> Vec<Sender> {
    let tx = link.sender.ifindex(&link.tx).unwrap();
    plan.sources
        .iter()
        .map(|s| Sender::new(&link.sender, *s, plan.group, tx, 32))
        .collect()
}

fn send_each(senders: &mut [Sender], n: u64) {
    for _ in 0..n {
        for s in senders.iter_mut() {
            s.send().unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(300));
}

/// The sockets of a followed entry, by cookie.
fn sockets(e: &Value) -> BTreeMap<u64, Value> {
    e["follow"]["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["cookie"].as_u64().unwrap(), s.clone()))
        .collect()
}

fn socket_filter(s: &Value) -> AppFilter {
    let f = &s["filter"];
    let mode = match f["mode"].as_str().unwrap() {
        "include" => Mode::Include,
        _ => Mode::Exclude,
    };
    let sources: Vec<IpAddr> = f["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().parse().unwrap())
        .collect();
    filter(mode, &sources)
}

fn own_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim_end()
        .to_string()
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

/// An unmodified receiver (a plain socket of this process) on a followed interface: its
/// excluded source is dropped at XDP and never reaches it, the wanted ones all do.
fn unmodified_receiver(tag: &str, family: Family) {
    let plan = Plan::new(family, "232.50.0.1", "ff3e::50:1");
    let link = plan.link(tag);
    let rx = link.receiver.ifindex("rx0").unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    let attached = daemon.cli_json(&["attach", "rx0", "--follow", "-j"]);
    assert_eq!(attached["followed"], true, "{attached}");
    let owner = daemon.cli_json(&["owner", "rx0", "-j"]);
    assert_eq!(
        (&owner["owner"], &owner["followed"]),
        (&Value::from("msfilter"), &Value::from(true)),
        "{owner}"
    );
    assert!(daemon.cli_ok(&["owner", "rx0"]).contains("followed"));

    let [wanted, unwanted, other, _] = plan.sources;
    let app = AppSocket::bound(&link.receiver, plan.group, PORT);
    app.apply(
        plan.group,
        rx,
        RX_V4,
        &Request::JoinGroup,
        OptionSet::ProtocolIndependent,
    )
    .unwrap();
    app.apply(
        plan.group,
        rx,
        RX_V4,
        &Request::BlockSource { source: unwanted },
        OptionSet::ProtocolIndependent,
    )
    .unwrap();
    let e = wait_enforced(&daemon, plan.group, &filter(Mode::Exclude, &[unwanted]), 1);
    let s = sockets(&e);
    let s = s
        .get(&app.cookie())
        .expect("the application's socket is listed");
    assert_eq!(s["pid"], std::process::id(), "{s}");
    assert_eq!(s["command"], own_comm(), "{s}");
    assert_eq!(s["origin"], "followed", "{s}");
    assert_eq!(s["family"], family_name(family), "{s}");
    assert_eq!(socket_filter(s), filter(Mode::Exclude, &[unwanted]));
    let text = daemon.cli_ok(&["list"]);
    assert!(
        text.contains(&format!("pid {}", std::process::id())) && text.contains("[followed]"),
        "{text}"
    );

    let stats = daemon.cli_json(&["stats", "-j"]);
    let f = &stats["follow"];
    assert_eq!(f["interfaces"], Value::from(vec!["rx0"]), "{stats}");
    assert_eq!(
        (&f["groups"], &f["complete"]),
        (&Value::from(1), &Value::from(1)),
        "{f}"
    );
    assert!(f["events"].as_u64().unwrap() >= 2, "{f}");
    // The start-up scan rechecked every group (the follow_latency test checks the
    // incremental rechecks' counts).
    assert!(f["full_rechecks"].as_u64().unwrap() >= 1, "{f}");

    let mut send = senders(&link, &plan);
    let before = dropped(&daemon);
    send_each(&mut send[..3], PER_SOURCE);
    assert_eq!(
        dropped(&daemon) - before,
        PER_SOURCE,
        "{family}: XDP dropped exactly the excluded source"
    );
    let e = entry(&daemon, plan.group).unwrap();
    assert_eq!(
        e["sources"][0]["matched"]["packets"], PER_SOURCE,
        "{family}: {e}"
    );
    assert_eq!(
        received(&app),
        [(wanted, PER_SOURCE), (other, PER_SOURCE)].into(),
        "{family}: every wanted datagram, none of the excluded source"
    );

    // The application changes its mind: XDP follows without anyone asking msfilter.
    app.apply(
        plan.group,
        rx,
        RX_V4,
        &Request::UnblockSource { source: unwanted },
        OptionSet::ProtocolIndependent,
    )
    .unwrap();
    let changed = Instant::now();
    wait_enforced(&daemon, plan.group, &filter(Mode::Exclude, &[]), 1);
    println!(
        "{family}: setsockopt → `msfilter list` shows the new filter: {:?} (list polled every \
         20 ms)",
        changed.elapsed()
    );
    let before = dropped(&daemon);
    send_each(&mut send[1..2], PER_SOURCE);
    assert_eq!(dropped(&daemon) - before, 0);
    assert_eq!(received(&app), [(unwanted, PER_SOURCE)].into());

    // Detach unfollows and deletes the entries like any detach.
    let detached = daemon.cli_json(&["detach", "rx0", "-j"]);
    assert!(detached["deleted"].as_u64().unwrap() >= 1, "{detached}");
    assert!(entry(&daemon, plan.group).is_none());
    let owner = daemon.cli_json(&["owner", "rx0", "-j"]);
    assert_eq!(owner["followed"], false, "{owner}");
    // The last followed interface gone, the follower (and its hooks) stopped.
    let stats = daemon.cli_json(&["stats", "-j"]);
    assert!(stats.get("follow").is_none(), "{stats}");
    // Not followed any more: the application's next change writes nothing.
    app.apply(
        plan.group,
        rx,
        RX_V4,
        &Request::BlockSource { source: unwanted },
        OptionSet::ProtocolIndependent,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(entry(&daemon, plan.group).is_none());
}

#[test]
fn ipv4_unmodified_receiver_on_a_followed_interface() {
    unmodified_receiver("fd4u", Family::V4);
}

#[test]
fn ipv6_unmodified_receiver_on_a_followed_interface() {
    unmodified_receiver("fd6u", Family::V6);
}

/// Two unmodified applications and one msfilter client on one group, INCLUDE and EXCLUDE
/// mixed: XDP enforces exactly the kernel's interface-level merge, and `list` names each
/// socket with its pid, command and whether it is msfilter's.
fn mixed(tag: &str, family: Family) {
    let plan = Plan::new(family, "232.50.0.2", "ff3e::50:2");
    let link = plan.link(tag);
    let rx = link.receiver.ifindex("rx0").unwrap();
    let daemon = Daemon::start(&link.receiver, &[]).unwrap();
    daemon.cli_ok(&["attach", "rx0", "--follow"]);
    let [s1, s2, s3, s4] = plan.sources;
    let g = plan.group.to_string();

    // A: INCLUDE {s1} (this process, bound: it receives).
    let a = AppSocket::bound(&link.receiver, plan.group, PORT);
    a.apply(
        plan.group,
        rx,
        RX_V4,
        &Request::JoinSourceGroup { source: s1 },
        OptionSet::FamilySpecific,
    )
    .unwrap();
    // B: EXCLUDE {s1, s3, s4} (python3).
    let mut py = PyApp::start(&link.receiver);
    let b = py.open(family);
    for req in [
        Request::JoinGroup,
        Request::SetFilter {
            mode: Mode::Exclude,
            sources: vec![s1, s3, s4],
        },
    ] {
        py.apply(
            b,
            plan.group,
            rx,
            RX_V4,
            &req,
            OptionSet::ProtocolIndependent,
        )
        .unwrap();
    }
    // The msfilter client: EXCLUDE {s2, s3}.
    daemon.cli_ok(&["join", "rx0", &g]);
    daemon.cli_ok(&["block", "rx0", &g, &s2.to_string()]);
    daemon.cli_ok(&["block", "rx0", &g, &s3.to_string()]);

    let members = [
        filter(Mode::Include, &[s1]),
        filter(Mode::Exclude, &[s1, s3, s4]),
        filter(Mode::Exclude, &[s2, s3]),
    ];
    // RFC 3376 §3.2: EXCLUDE (({s1,s3,s4} ∩ {s2,s3}) − {s1}) = EXCLUDE {s3}.
    let e = wait_enforced(&daemon, plan.group, &filter(Mode::Exclude, &[s3]), 3);
    let kernel = followed::kernel_view(&link.receiver, "rx0", plan.group, &members, &plan.sources);
    let xdp = entry_filter(&e);
    for s in plan.sources {
        let passes = match xdp.mode {
            Mode::Include => xdp.sources.contains(&s),
            Mode::Exclude => !xdp.sources.contains(&s),
        };
        assert_eq!(
            passes, kernel[&s],
            "{family}: {s}: XDP {xdp:?}, kernel {kernel:?}"
        );
    }

    // Who contributes.
    let listed = sockets(&e);
    let a_row = &listed[&a.cookie()];
    assert_eq!(
        (&a_row["pid"], &a_row["command"], &a_row["origin"]),
        (
            &Value::from(std::process::id()),
            &Value::from(own_comm()),
            &Value::from("followed")
        ),
        "{a_row}"
    );
    assert_eq!(socket_filter(a_row), members[0]);
    let b_row = &listed[&py.cookie(b)];
    assert_eq!(
        (&b_row["pid"], &b_row["command"], &b_row["origin"]),
        (
            &Value::from(py.pid),
            &Value::from("python3"),
            &Value::from("followed")
        ),
        "{b_row}"
    );
    assert_eq!(socket_filter(b_row), members[1]);
    let client_rows: Vec<&Value> = listed
        .values()
        .filter(|s| s["origin"] == "client")
        .collect();
    assert_eq!(client_rows.len(), 1, "{listed:?}");
    let c = client_rows[0];
    assert_eq!(c["client"], "cli", "{c}");
    assert_eq!(c["pid"], daemon.pid().unwrap(), "{c}");
    assert_eq!(c["command"], "msfilter", "{c}");
    assert_eq!(socket_filter(c), members[2]);
    assert_eq!(e["follow"]["kernel_memberships"], 3, "{e}");

    // Traffic: XDP drops s3 only; A hears only what it asked for.
    let mut send = senders(&link, &plan);
    let before = dropped(&daemon);
    send_each(&mut send, PER_SOURCE);
    assert_eq!(
        dropped(&daemon) - before,
        PER_SOURCE,
        "{family}: only s3 dropped"
    );
    assert_eq!(received(&a), [(s1, PER_SOURCE)].into());

    // B leaves: the merge is the client's EXCLUDE {s2, s3} less A's s1.
    py.close(b);
    wait_enforced(&daemon, plan.group, &filter(Mode::Exclude, &[s2, s3]), 2);
    let before = dropped(&daemon);
    send_each(&mut send, PER_SOURCE);
    assert_eq!(dropped(&daemon) - before, 2 * PER_SOURCE);
    py.kill();
}

#[test]
fn ipv4_two_unmodified_apps_and_a_client_get_exactly_the_kernel_merge() {
    mixed("fd4m", Family::V4);
}

#[test]
fn ipv6_two_unmodified_apps_and_a_client_get_exactly_the_kernel_merge() {
    mixed("fd6m", Family::V6);
}

/// SIGKILL of the daemon while a wanted and an excluded source stream: the pinned entry
/// keeps enforcing, the restarted daemon follows again from its persisted state (no
/// `--follow` given again), and not one wanted datagram is lost — although msfilter's own
/// client asks for a narrower filter (INCLUDE {other}), which a restart writing the
/// clients' merge would enforce.
fn restart(tag: &str, family: Family) {
    let plan = Plan::new(family, "232.50.0.3", "ff3e::50:3");
    let link = plan.link(tag);
    let rx = link.receiver.ifindex("rx0").unwrap();
    let mut daemon = Daemon::start(&link.receiver, &[]).unwrap();
    daemon.cli_ok(&["attach", "rx0", "--follow"]);
    let [wanted, unwanted, narrower, _] = plan.sources;
    let g = plan.group.to_string();
    let app = AppSocket::bound(&link.receiver, plan.group, PORT);
    for req in [
        Request::JoinGroup,
        Request::BlockSource { source: unwanted },
    ] {
        app.apply(plan.group, rx, RX_V4, &req, OptionSet::ProtocolIndependent)
            .unwrap();
    }
    daemon.cli_ok(&["join-source", "rx0", &g, &narrower.to_string()]);
    let want = filter(Mode::Exclude, &[unwanted]);
    wait_enforced(&daemon, plan.group, &want, 2);

    let dropped_before = dropped(&daemon);
    let stop = Arc::new(AtomicBool::new(false));
    let mut send = senders(&link, &plan);
    let streaming = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                send[0].send().unwrap();
                send[1].send().unwrap();
                sent += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    daemon.restart().unwrap();
    let owner = daemon.cli_json(&["owner", "rx0", "-j"]);
    assert_eq!(owner["followed"], true, "{family}: followed again: {owner}");
    let e = wait_enforced(&daemon, plan.group, &want, 2);
    println!(
        "{family}: SIGKILL to following and enforcing again: {:?}",
        started.elapsed()
    );
    assert_eq!(
        e["follow"]["sockets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["origin"] == "client")
            .count(),
        1,
        "{e}"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let sent = streaming.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        received(&app),
        [(wanted, sent)].into(),
        "{family}: every wanted datagram across the SIGKILL and restart"
    );
    // The application's socket would drop the excluded source itself: XDP's counters
    // (pinned, they survive the restart) show that XDP dropped every one of them, while the
    // daemon was away and while the restarted one proved the group again.
    assert_eq!(
        dropped(&daemon) - dropped_before,
        sent,
        "{family}: XDP dropped every excluded datagram across the SIGKILL and restart"
    );
    // Still following: the application's next change reaches XDP.
    app.apply(
        plan.group,
        rx,
        RX_V4,
        &Request::SetFilter {
            mode: Mode::Include,
            sources: vec![unwanted],
        },
        OptionSet::ProtocolIndependent,
    )
    .unwrap();
    wait_enforced(
        &daemon,
        plan.group,
        &filter(Mode::Include, &[unwanted, narrower]),
        2,
    );

    // The application leaves while the daemon is away: the restarted daemon proves the group
    // again with the one member left (msfilter's client) and narrows XDP to its filter.
    daemon.kill9();
    app.close();
    daemon.restart().unwrap();
    let e = wait_enforced(&daemon, plan.group, &filter(Mode::Include, &[narrower]), 1);
    assert_eq!(e["follow"]["sockets"][0]["origin"], "client", "{e}");
}

#[test]
fn ipv4_sigkill_and_restart_keep_following_and_lose_no_wanted_source() {
    restart("fd4r", Family::V4);
}

#[test]
fn ipv6_sigkill_and_restart_keep_following_and_lose_no_wanted_source() {
    restart("fd6r", Family::V6);
}

pub(crate) fn send_raw(stream: &mut UnixStream, body: &[u8]) -> Value {
    stream
        .write_all(&(body.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(body).unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply).unwrap();
    serde_json::from_slice(&reply).unwrap()
}

/// A misspelt follow field, a follow on a missing interface, `follow = "yes"` in the
/// configuration: each refused, named, with nothing changed. `follow = true` in the file
/// follows; a reload to `false` gives the interface back to the clients' merge.
#[test]
fn bad_follow_input_is_refused_and_the_config_file_follows() {
    let link = Link::new("fdbad", &["10.99.0.1/24"]).unwrap();
    let config = msfilter_testbed::daemon::TempDir::new("fdcfg").unwrap();
    let path = config.path().join("msfilter.toml");
    std::fs::write(&path, "[interface.rx0]\nfollow = true\n").unwrap();
    let path_arg = path.to_str().unwrap().to_string();
    let daemon = Daemon::start(&link.receiver, &["--config", &path_arg]).unwrap();
    let owner = daemon.cli_json(&["owner", "rx0", "-j"]);
    assert_eq!(
        (&owner["owner"], &owner["followed"]),
        (&Value::from("msfilter"), &Value::from(true)),
        "{owner}"
    );
    let state = || {
        (
            daemon.cli_json(&["owner", "rx0", "-j"]),
            daemon.cli_json(&["list", "-j"]),
        )
    };
    let before = state();

    // The protocol refuses a misspelt field and names it.
    let mut s = UnixStream::connect(daemon.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let reply = send_raw(
        &mut s,
        br#"{"version":1,"request":"attach","iface":"rx0","folow":true}"#,
    );
    assert_eq!(
        (&reply["result"], &reply["kind"]),
        (&Value::from("error"), &Value::from("protocol")),
        "{reply}"
    );
    let message = reply["message"].as_str().unwrap();
    assert!(
        message.contains("unknown field `folow`") && message.contains("follow"),
        "{message}"
    );
    let reply = send_raw(
        &mut s,
        br#"{"version":1,"request":"attach","iface":"rx0","follow":"yes"}"#,
    );
    assert_eq!(reply["kind"], "protocol", "{reply}");
    drop(s);

    // The CLI: a misspelt flag is bad usage; a missing interface is refused.
    let out = daemon.cli(&["attach", "rx0", "--folow"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    let out = daemon.cli(&["attach", "nosuch0", "--follow"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("nosuch0"), "{}", out.stderr);
    // Already owned and followed.
    let out = daemon.cli(&["attach", "rx0", "--follow"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("already owns rx0"), "{}", out.stderr);

    // A configuration with `follow = "yes"` is refused by reload, naming the key.
    std::fs::write(&path, "[interface.rx0]\nfollow = \"yes\"\n").unwrap();
    let out = daemon.cli(&["reload"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains(r#"line 2: follow must be true or false, not "yes""#),
        "{}",
        out.stderr
    );
    assert_eq!(state(), before, "nothing changed");

    // ... and by a daemon starting with it.
    let other = Link::new("fdbad2", &["10.99.0.1/24"]).unwrap();
    let err = Daemon::start(&other.receiver, &["--config", &path_arg]).unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"follow must be true or false, not "yes""#),
        "{err}"
    );

    // Reload to `follow = false`: still owned, no longer followed; a client's merge is
    // what XDP enforces there again.
    std::fs::write(&path, "[interface.rx0]\nfollow = false\n").unwrap();
    let reloaded = daemon.cli_json(&["reload", "-j"]);
    assert_eq!(
        reloaded["changes"],
        Value::from(vec!["rx0: no longer followed"]),
        "{reloaded}"
    );
    let owner = daemon.cli_json(&["owner", "rx0", "-j"]);
    assert_eq!(
        (&owner["owner"], &owner["followed"]),
        (&Value::from("msfilter"), &Value::from(false)),
        "{owner}"
    );
    daemon.cli_ok(&["join", "rx0", "232.50.0.9"]);
    daemon.cli_ok(&["block", "rx0", "232.50.0.9", "10.99.0.1"]);
    let e = entry(&daemon, ip("232.50.0.9")).expect("the client's merge is enforced");
    assert_eq!(entry_filter(&e), filter(Mode::Exclude, &[ip("10.99.0.1")]));
    assert!(e.get("follow").is_none(), "{e}");

    // And back: the follower takes the entries over (the client's socket is one of its
    // members), then a runtime `attach --follow` on an owned interface is refused as
    // already followed.
    std::fs::write(&path, "[interface.rx0]\nfollow = true\n").unwrap();
    let reloaded = daemon.cli_json(&["reload", "-j"]);
    assert_eq!(reloaded["changes"], Value::from(vec!["rx0: followed"]));
    let e = wait_enforced(
        &daemon,
        ip("232.50.0.9"),
        &filter(Mode::Exclude, &[ip("10.99.0.1")]),
        1,
    );
    assert_eq!(e["follow"]["sockets"][0]["origin"], "client", "{e}");
}
