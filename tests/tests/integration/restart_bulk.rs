//! SIGKILL in the middle of a bulk load, then a restart: the kernel's membership state, the
//! XDP maps (as `msfilter list` shows them) and the requests the daemon acknowledged must all
//! agree afterwards, and an allowed source's traffic must be delivered, every time.
//!
//! A persistent client streams `join` + `filter set exclude` (400 sources) for up to 200
//! IPv4 groups; the daemon is killed after a random 0.4–1.2 s and started again. The kernel's
//! view is read independently of the daemon: `/proc/net/igmp` (groups and their member
//! counts) and the interface-level source entries (`kernel::all_source_filters`, which reads
//! `/proc/net/mcfilter` completely — see docs/kernel.md for why a plain read can show
//! nothing). Repeated [`RUNS`] times, enough to catch a failure that shows in one run of
//! three. `MSFILTER_SEED` replays a run's kill times.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use msfilter::client::Client;
use msfilter_common::Mode;
use msfilter_testbed::{
    daemon::Daemon,
    kernel::all_source_filters,
    netns::Link,
    rng::Rng,
    traffic::{Receiver, Sender},
};

const RUNS: usize = 20;
const GROUPS: u8 = 200;
const SOURCES: usize = 400;
const ALLOWED: &str = "10.99.0.1";
const BLOCKED: &str = "10.99.0.3";

fn group(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(232, 77, 1, n))
}

/// The exclude list of every group: `BLOCKED` and 399 addresses no one sends from.
fn excluded() -> BTreeSet<IpAddr> {
    let mut sources: BTreeSet<IpAddr> = (0..SOURCES - 1)
        .map(|i| IpAddr::V4(Ipv4Addr::new(10, 60, (i / 250) as u8, (i % 250 + 1) as u8)))
        .collect();
    sources.insert(BLOCKED.parse().unwrap());
    sources
}

type Filter = (Mode, BTreeSet<IpAddr>);

/// What the loader got acknowledged, and the request it had sent but not heard back about.
#[derive(Default)]
struct Loaded {
    acknowledged: BTreeMap<IpAddr, Filter>,
    in_flight: Option<(IpAddr, Filter)>,
}

/// Stream join + exclude-filter requests until the daemon goes away.
fn load(
    socket: std::path::PathBuf,
    loaded: Arc<Mutex<Loaded>>,
    started: std::sync::mpsc::Sender<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut client = Client::register_persistent(&socket, "bulk").await.unwrap();
        started.send(()).unwrap();
        let sources: Vec<IpAddr> = excluded().into_iter().collect();
        for n in 1..=GROUPS {
            let g = group(n);
            let steps = [
                (Mode::Exclude, BTreeSet::new()),
                (Mode::Exclude, sources.iter().copied().collect()),
            ];
            for (i, want) in steps.into_iter().enumerate() {
                loaded.lock().unwrap().in_flight = Some((g, want.clone()));
                let result = if i == 0 {
                    client.join("rx0", g).await
                } else {
                    client
                        .set_filter("rx0", g, Mode::Exclude, sources.clone())
                        .await
                };
                if result.is_err() {
                    return; // killed
                }
                let mut l = loaded.lock().unwrap();
                l.in_flight = None;
                l.acknowledged.insert(g, want);
            }
        }
    });
}

/// What `msfilter list -j` says XDP enforces on rx0.
fn listed(daemon: &Daemon) -> BTreeMap<IpAddr, Filter> {
    let list = daemon.cli_json(&["list", "--iface", "rx0", "-j"]);
    let entries = list
        .as_array()
        .or_else(|| list["entries"].as_array())
        .unwrap_or_else(|| panic!("unexpected list output: {list}"));
    let mut out: BTreeMap<IpAddr, Filter> = BTreeMap::new();
    for e in entries {
        let g: IpAddr = e["group"].as_str().unwrap().parse().unwrap();
        let mode = match e["mode"].as_str().unwrap().to_ascii_lowercase().as_str() {
            "include" => Mode::Include,
            "exclude" => Mode::Exclude,
            other => panic!("mode {other}"),
        };
        let entry = out.entry(g).or_insert_with(|| (mode, BTreeSet::new()));
        for s in e["sources"].as_array().unwrap() {
            entry
                .1
                .insert(s["source"].as_str().unwrap().parse().unwrap());
        }
    }
    out
}

/// Groups joined on `device` and their member counts, from `/proc/net/igmp` (complete).
fn igmp_groups(link: &Link, device: &str) -> BTreeMap<IpAddr, u32> {
    let text = link.receiver.read_proc("/proc/net/igmp").unwrap();
    let mut out = BTreeMap::new();
    let mut current = None::<String>;
    for line in text.lines().skip(1) {
        if !line.starts_with('\t') {
            current = line.split_whitespace().nth(1).map(str::to_string);
            continue;
        }
        if current.as_deref() != Some(device) {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        // The address is printed as the kernel's __be32 in host order (little-endian here).
        let raw = u32::from_str_radix(f[0], 16).unwrap();
        let g = Ipv4Addr::from(raw.swap_bytes());
        out.insert(IpAddr::V4(g), f[1].parse().unwrap());
    }
    out
}

/// The kernel's interface-level filter of rx0 as the listing gives it: for each group with
/// source entries, the sources every member excludes (one member here: exclude count 1).
fn kernel_excluded(link: &Link) -> BTreeMap<IpAddr, BTreeSet<IpAddr>> {
    let mut out: BTreeMap<IpAddr, BTreeSet<IpAddr>> = BTreeMap::new();
    for row in all_source_filters(&link.receiver, "rx0", true) {
        assert_eq!(
            (row.include, row.exclude),
            (0, 1),
            "{row:?}: one member excluding the source"
        );
        out.entry(row.group).or_default().insert(row.source);
    }
    out
}

fn xdp_dropped(daemon: &Daemon) -> u64 {
    daemon.cli_json(&["stats", "-j"])["dropped"]["packets"]
        .as_u64()
        .unwrap()
}

fn one_run(run: usize, rng: &mut Rng) {
    let link = Link::new("bk", &[&format!("{ALLOWED}/24"), &format!("{BLOCKED}/24")]).unwrap();
    let mut daemon = Daemon::start(&link.receiver, &["--max-sources-per-socket", "1000"]).unwrap();
    let loaded = Arc::new(Mutex::new(Loaded::default()));
    let (started_tx, started) = std::sync::mpsc::channel();
    let loader = {
        let (socket, loaded) = (daemon.socket(), Arc::clone(&loaded));
        std::thread::spawn(move || load(socket, loaded, started_tx))
    };
    started.recv().unwrap();
    let kill_after = Duration::from_millis(rng.range(400..1200u64));
    std::thread::sleep(kill_after);
    daemon.kill9();
    loader.join().unwrap();
    let restarting = Instant::now();
    daemon.restart().unwrap();
    let ready = restarting.elapsed();

    let Loaded {
        acknowledged,
        in_flight,
    } = std::mem::take(&mut *loaded.lock().unwrap());
    let listed = listed(&daemon);
    let kernel_groups = igmp_groups(&link, "rx0");
    let kernel = kernel_excluded(&link);
    let raw_rows = msfilter_testbed::kernel::parse_mcfilter(
        &link.receiver.read_proc("/proc/net/mcfilter").unwrap(),
    )
    .into_iter()
    .filter(|r| r.device == "rx0")
    .count();
    let context = format!(
        "run {run}: killed after {kill_after:?}, {} groups acknowledged (in flight: {:?})\ndaemon log:\n{}",
        acknowledged.len(),
        in_flight.as_ref().map(|(g, f)| (g, f.1.len())),
        daemon.log()
    );
    assert!(!acknowledged.is_empty(), "{context}");

    // The maps hold every acknowledged filter, and at most the one in flight besides.
    for (g, want) in &acknowledged {
        let got = listed.get(g);
        let in_flight_result = in_flight.as_ref().filter(|(ig, _)| ig == g).map(|(_, f)| f);
        assert!(
            got == Some(want) || (got.is_some() && got == in_flight_result),
            "{g}: listed {:?}, acknowledged {:?}\n{context}",
            got.map(|f| f.1.len()),
            want.1.len()
        );
    }
    for g in listed.keys() {
        assert!(
            acknowledged.contains_key(g) || in_flight.as_ref().is_some_and(|(ig, _)| ig == g),
            "{g} is listed but was never asked for\n{context}"
        );
    }
    // The kernel holds exactly what the maps hold: each listed group joined by one socket,
    // its excluded sources excluded at the interface, and nothing else.
    for (g, (mode, sources)) in &listed {
        assert_eq!(*mode, Mode::Exclude, "{g}\n{context}");
        assert_eq!(
            kernel_groups.get(g),
            Some(&1),
            "{g} joined once in /proc/net/igmp\n{context}"
        );
        let empty = BTreeSet::new();
        assert_eq!(
            kernel.get(g).unwrap_or(&empty),
            sources,
            "{g}: the kernel's excluded sources equal the listed ones\n{context}"
        );
    }
    for g in kernel.keys() {
        assert!(
            listed.contains_key(g),
            "{g} has kernel source entries but is not listed\n{context}"
        );
    }
    for g in kernel_groups
        .keys()
        .filter(|g| g.to_string().starts_with("232.77."))
    {
        assert!(
            listed.contains_key(g),
            "{g} is joined in the kernel but not listed\n{context}"
        );
    }

    // Traffic: on the last fully loaded group, the allowed source is delivered and the
    // blocked one dropped at XDP.
    let (g, _) = listed
        .iter()
        .rfind(|(_, (_, s))| s.len() == SOURCES)
        .unwrap_or_else(|| panic!("no group was fully loaded\n{context}"));
    let app = Receiver::passive(&link.receiver, *g);
    let tx = link.sender.ifindex(&link.tx).unwrap();
    let mut allowed = Sender::new(&link.sender, ALLOWED.parse().unwrap(), *g, tx, 32);
    let mut blocked = Sender::new(&link.sender, BLOCKED.parse().unwrap(), *g, tx, 32);
    let dropped_before = xdp_dropped(&daemon);
    for _ in 0..50 {
        allowed.send().unwrap();
        blocked.send().unwrap();
    }
    let heard = app.take_when_quiet(Duration::from_millis(200));
    assert_eq!(
        heard.get(&ALLOWED.parse::<IpAddr>().unwrap()).copied(),
        Some(50),
        "the allowed source is delivered after the restart on {g}\n{context}"
    );
    assert_eq!(
        heard.get(&BLOCKED.parse::<IpAddr>().unwrap()),
        None,
        "{context}"
    );
    assert_eq!(xdp_dropped(&daemon) - dropped_before, 50, "{context}");
    let complete_rows: usize = kernel.values().map(BTreeSet::len).sum();
    println!(
        "run {run}: killed after {kill_after:?} with {} groups acknowledged; ready again in \
         {ready:?}; kernel, maps and acknowledgements agree on {} groups; a plain read of \
         /proc/net/mcfilter showed {raw_rows} of the {complete_rows} source entries",
        acknowledged.len(),
        listed.len()
    );
}

#[test]
fn sigkill_during_a_bulk_load_then_restart_keeps_kernel_maps_and_list_equal() {
    let seed = Rng::seed_from_env_or_clock("MSFILTER_SEED");
    println!("MSFILTER_SEED={seed}");
    let mut rng = Rng::new(seed);
    for run in 1..=RUNS {
        one_run(run, &mut rng);
    }
}
