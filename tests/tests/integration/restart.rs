//! Lifecycle under continuous traffic: the daemon killed with SIGKILL and restarted, the
//! program swapped through the link, and the shut-down sequence with and without --keep.
//! A blocked source must never reach the application; the allowed one must come back (and,
//! for a swap, lose nothing).

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use msfilter::iface::xdp;
use msfilter_testbed::{
    daemon::Daemon,
    netns::Link,
    traffic::{Receiver, Sender},
};

const ALLOWED: &str = "10.99.0.1";
const BLOCKED: &str = "10.99.0.3";
const GROUP: &str = "232.40.0.1";

/// Both sources sending continuously until stopped; returns how many each sent.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, u64)>,
}

impl Traffic {
    fn start(link: &Link) -> Self {
        let tx = link.sender.ifindex(&link.tx).unwrap();
        let g: IpAddr = GROUP.parse().unwrap();
        let mut allowed = Sender::new(&link.sender, ALLOWED.parse().unwrap(), g, tx, 32);
        let mut blocked = Sender::new(&link.sender, BLOCKED.parse().unwrap(), g, tx, 32);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut sent = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                allowed.send().unwrap();
                blocked.send().unwrap();
                sent.0 += 1;
                sent.1 += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            sent
        });
        Self { stop, thread }
    }

    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// What the application heard, sampled often enough to see gaps.
#[derive(Default)]
struct Heard {
    allowed: u64,
    blocked: u64,
    last_allowed: Option<Instant>,
    longest_gap: Duration,
}

impl Heard {
    fn sample(&mut self, app: &Receiver, for_how_long: Duration) {
        let until = Instant::now() + for_how_long;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
            self.add(app);
        }
    }

    fn add(&mut self, app: &Receiver) {
        let got = app.take();
        let now = Instant::now();
        let a = got
            .get(&ALLOWED.parse::<IpAddr>().unwrap())
            .copied()
            .unwrap_or(0);
        self.blocked += got
            .get(&BLOCKED.parse::<IpAddr>().unwrap())
            .copied()
            .unwrap_or(0);
        if a > 0 {
            if let Some(last) = self.last_allowed {
                self.longest_gap = self.longest_gap.max(now - last);
            }
            self.last_allowed = Some(now);
            self.allowed += a;
        }
    }
}

fn setup(tag: &str, args: &[&str]) -> (Link, Daemon, Receiver) {
    let link = Link::new(tag, &[&format!("{ALLOWED}/24"), &format!("{BLOCKED}/24")]).unwrap();
    let daemon = Daemon::start(&link.receiver, args).unwrap();
    daemon.cli_ok(&["join", "rx0", GROUP]);
    daemon.cli_ok(&["block", "rx0", GROUP, BLOCKED]);
    let app = Receiver::passive(&link.receiver, GROUP.parse().unwrap());
    (link, daemon, app)
}

fn xdp_dropped(daemon: &Daemon) -> u64 {
    daemon.cli_json(&["stats", "-j"])["dropped"]["packets"]
        .as_u64()
        .unwrap()
}

#[test]
fn sigkill_and_restart_under_traffic_never_let_the_blocked_source_through() {
    let (link, mut daemon, app) = setup("k9", &[]);
    let traffic = Traffic::start(&link);
    let mut heard = Heard::default();
    heard.sample(&app, Duration::from_millis(300));
    assert!(heard.allowed > 0, "traffic flows before the kill");

    daemon.kill9();
    // While no daemon runs, XDP keeps enforcing from its pins.
    heard.sample(&app, Duration::from_millis(300));
    let restarting = Instant::now();
    daemon.restart().unwrap();
    let restart = restarting.elapsed();
    let back = heard.allowed;
    heard.sample(&app, Duration::from_millis(700));
    let (sent_allowed, sent_blocked) = traffic.stop();
    std::thread::sleep(Duration::from_millis(200));
    heard.add(&app);

    println!(
        "SIGKILL, 300 ms without a daemon, restart (ready in {restart:?}): memberships were \
         absent for {:?} (the longest gap in the allowed source); {} of {sent_allowed} allowed \
         datagrams delivered, {} of {sent_blocked} blocked ones",
        heard.longest_gap, heard.allowed, heard.blocked
    );
    assert_eq!(heard.blocked, 0, "a blocked datagram was delivered");
    assert!(
        heard.allowed > back,
        "the allowed source came back after the restart"
    );
    assert_eq!(
        xdp_dropped(&daemon),
        sent_blocked,
        "XDP dropped every blocked datagram, with or without a daemon"
    );
    let owner = daemon.cli_json(&["owner", "rx0", "-j"]);
    assert_eq!(owner["adopted"], true, "{owner}");
    let filter = daemon.cli_json(&["filter", "get", "rx0", GROUP, "-j"]);
    assert_eq!(
        filter["client_filter"]["sources"],
        serde_json::json!([BLOCKED])
    );
}

#[test]
fn hitless_program_swap_under_traffic_loses_nothing() {
    let (link, daemon, app) = setup("swap", &[]);
    let object = daemon.dir().join("msfilter-xdp.o");
    std::fs::write(&object, msfilter::datapath::OBJECT).unwrap();
    let object = object.to_str().unwrap().to_string();

    let traffic = Traffic::start(&link);
    let mut heard = Heard::default();
    heard.sample(&app, Duration::from_millis(100));
    let mut programs = vec![daemon.cli_json(&["owner", "rx0", "-j"])["program_id"].clone()];
    for i in 0..6 {
        let out = if i % 2 == 0 {
            daemon.cli_ok(&["attach", "rx0", "--replace"])
        } else {
            daemon.cli_ok(&["attach", "rx0", "--replace", "--object", &object])
        };
        assert!(out.contains("replaced by"), "{out}");
        programs.push(daemon.cli_json(&["owner", "rx0", "-j"])["program_id"].clone());
        heard.sample(&app, Duration::from_millis(50));
    }
    let (sent_allowed, sent_blocked) = traffic.stop();
    std::thread::sleep(Duration::from_millis(200));
    heard.add(&app);

    println!(
        "6 swaps under traffic: {} of {sent_allowed} allowed datagrams delivered, {} of \
         {sent_blocked} blocked ones",
        heard.allowed, heard.blocked
    );
    assert_eq!(
        heard.blocked, 0,
        "a blocked datagram was delivered during a swap"
    );
    assert_eq!(
        heard.allowed, sent_allowed,
        "an allowed datagram was lost during a swap"
    );
    assert_eq!(xdp_dropped(&daemon), sent_blocked);
    let unique: std::collections::BTreeSet<String> =
        programs.iter().map(ToString::to_string).collect();
    assert_eq!(
        unique.len(),
        programs.len(),
        "every swap ran a new program: {programs:?}"
    );
    assert_eq!(daemon.cli_json(&["owner", "rx0", "-j"])["replaced"], true);
}

#[test]
fn sigterm_releases_everything_unless_keep() {
    let (link, mut daemon, _app) = setup("term", &[]);
    let rx = link.receiver.ifindex("rx0").unwrap();
    assert_eq!(daemon.terminate(), Some(0));
    assert!(!daemon.pin_dir().exists(), "pins removed");
    assert!(
        link.receiver
            .run(|| xdp::xdp_attachment(rx))
            .unwrap()
            .is_none()
    );
    let igmp = link.receiver.read_proc("/proc/net/igmp").unwrap();
    assert!(!igmp.contains("010028E8"), "memberships left: {igmp}");
    // The desired state stays for the next start.
    let state = std::fs::read_to_string(daemon.state_dir().join("state.json")).unwrap();
    assert!(state.contains(BLOCKED), "{state}");

    // With --keep the program stays attached and pinned, and the next daemon adopts it and
    // restores the memberships.
    daemon.restart_with(&["--keep"]).unwrap();
    assert_eq!(daemon.terminate(), Some(0));
    let kept = link.receiver.run(|| xdp::xdp_attachment(rx)).unwrap();
    assert!(
        kept.is_some(),
        "XDP still attached after a --keep shut-down"
    );
    assert!(daemon.pin_dir().join(format!("link-{rx}")).exists());
    daemon.restart_with(&[]).unwrap();
    let owner = daemon.cli_json(&["owner", "rx0", "-j"]);
    assert_eq!(owner["adopted"], true, "{owner}");
    let igmp = link.receiver.read_proc("/proc/net/igmp").unwrap();
    assert!(igmp.contains("010028E8"), "membership restored: {igmp}");
}
