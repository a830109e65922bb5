//! What follow mode costs, measured the same way by the `follow_latency` test and by
//! `cargo xtask bench`:
//!
//! * [`latency`]: how long after an application's `setsockopt` returns the follower holds
//!   the socket's new filter (read back, settled), and the XDP maps hold the group's new
//!   enforced filter (the follower's change written with `msfilter::datapath::Datapath::set_filters`), while
//!   `others` further unmodified sockets on the same interface are followed too. The
//!   application alternates blocking and unblocking one source and waits for each change to
//!   reach the maps before the next, as a receiver waits for its next datagram.
//! * [`hook_cost`]: what the hook adds to every `setsockopt` on the host: the same option
//!   calls timed with the hooks attached and not, interleaved in one run (a membership
//!   option, and an option the hook ignores).

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use msfilter::{
    follow::{Follower, Hooks},
    sockopt::{Family, Request, addr_of},
};
use msfilter_common::GroupKey;

use crate::{
    apps::AppSocket, followed, model::load_datapath, option_sets::OptionSet, sequences::Bed,
};

/// The address `Bed` gives its interface.
const IFACE_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// p50, p99 and the largest of a set of durations.
#[derive(Clone, Copy, Debug)]
pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    fn of(mut values: Vec<Duration>) -> Self {
        values.sort();
        let at = |p: f64| values[((values.len() as f64 - 1.0) * p).round() as usize];
        Self {
            p50: at(0.5),
            p99: at(0.99),
            max: *values.last().expect("at least one value"),
        }
    }
}

/// [`latency`]'s figures.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub changes: usize,
    /// Other followed sockets on the interface.
    pub others: usize,
    /// `setsockopt` returned → the follower holds the socket's new filter.
    pub to_follower: Percentiles,
    /// `setsockopt` returned → the maps hold the group's new enforced filter.
    pub to_map: Percentiles,
    /// Events the hooks' ring buffer lost meanwhile (0 unless overrun).
    pub lost_events: u64,
    /// What the follower judged during the changes (`FollowStats`): full rechecks, and the
    /// groups judged and option counters read by the incremental rechecks in between.
    pub full_rechecks: u64,
    pub group_checks: u64,
    pub seq_reads: u64,
}

/// Measure [`Latency`] over `changes` changes, with `others` further followed sockets (each
/// a member of its own group with one blocked source) on `bed`'s interface.
pub fn latency(bed: &Bed, changes: usize, others: usize) -> Latency {
    let group: IpAddr = "232.6.6.6".parse().unwrap();
    let source: IpAddr = "10.77.1.6".parse().unwrap();
    let key = GroupKey::new(bed.ifindex, addr_of(group));
    let app = AppSocket::udp(&bed.ns, Family::V4);
    apply(
        bed,
        &app,
        group,
        &Request::JoinGroup,
        OptionSet::ProtocolIndependent,
    );
    let cookie = app.cookie();
    let background: Vec<AppSocket> = (0..others)
        .map(|i| {
            let other = AppSocket::udp(&bed.ns, Family::V4);
            let g = IpAddr::V4(Ipv4Addr::new(232, 7, (i / 250) as u8, (i % 250) as u8 + 1));
            apply(
                bed,
                &other,
                g,
                &Request::JoinGroup,
                OptionSet::ProtocolIndependent,
            );
            let block = Request::BlockSource { source };
            apply(bed, &other, g, &block, OptionSet::ProtocolIndependent);
            other
        })
        .collect();

    let mut follower = followed::start(&bed.ns, &[bed.ifindex]);
    let mut dp = load_datapath();
    followed::settle_until(&mut follower, |f| {
        f.group(&key).is_some_and(|g| g.completeness.is_complete())
    });
    dp.set_filters(follower.take_changes())
        .expect("writing the first filters");
    let stats_before = follower.stats();

    let stop = Arc::new(AtomicBool::new(false));
    let (record_tx, record_rx) = mpsc::channel::<(bool, Instant)>();
    let (map_tx, map_rx) = mpsc::channel::<(bool, Instant)>();
    let watcher = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut last_record, mut last_map) = (Some(false), Some(false));
            while !stop.load(Ordering::Relaxed) {
                follower.wait_and_process(Duration::from_millis(1)).unwrap();
                let record = follower
                    .socket_by_cookie(cookie)
                    .filter(|r| r.read_seq.is_some())
                    .and_then(|r| r.memberships.get(&key))
                    .map(|f| !f.sources.is_empty());
                let recorded = Instant::now();
                if let Some(blocked) = record
                    && record != last_record
                {
                    last_record = record;
                    let _ = record_tx.send((blocked, recorded));
                }
                let changes = follower.take_changes();
                if changes.is_empty() {
                    continue;
                }
                dp.set_filters(changes)
                    .expect("writing the follower's changes");
                let written = Instant::now();
                let in_map = dp.installed().get(&key).map(|g| !g.sources.is_empty());
                if let Some(blocked) = in_map
                    && in_map != last_map
                {
                    last_map = in_map;
                    let _ = map_tx.send((blocked, written));
                }
            }
            follower
        })
    };
    let wait_for = |rx: &mpsc::Receiver<(bool, Instant)>, blocked: bool| -> Instant {
        loop {
            let (state, at) = rx
                .recv_timeout(Duration::from_secs(5))
                .expect("the follower saw the change within 5 s");
            if state == blocked {
                return at;
            }
        }
    };
    let (mut to_follower, mut to_map) = (Vec::new(), Vec::new());
    for i in 0..changes {
        let blocked = i.is_multiple_of(2);
        let change = block_or_unblock(i, source);
        apply(bed, &app, group, &change, OptionSet::FamilySpecific);
        let returned = Instant::now();
        to_follower.push(wait_for(&record_rx, blocked).saturating_duration_since(returned));
        to_map.push(wait_for(&map_rx, blocked).saturating_duration_since(returned));
    }
    stop.store(true, Ordering::Relaxed);
    let follower: Follower = watcher.join().expect("the follower thread");
    drop(background);
    let stats = follower.stats();
    Latency {
        changes,
        others,
        to_follower: Percentiles::of(to_follower),
        to_map: Percentiles::of(to_map),
        lost_events: stats.hooks.lost,
        full_rechecks: stats.full_rechecks - stats_before.full_rechecks,
        group_checks: stats.group_checks - stats_before.group_checks,
        seq_reads: stats.seq_reads - stats_before.seq_reads,
    }
}

/// One option's cost with the hooks attached and not, ns per call: medians over the
/// rounds, and the range of the per-round differences.
#[derive(Clone, Copy, Debug)]
pub struct OptionCost {
    pub off_ns: i128,
    pub on_ns: i128,
    /// Median of the per-round differences.
    pub added_ns: i128,
    pub added_low_ns: i128,
    pub added_high_ns: i128,
}

/// [`hook_cost`]'s figures.
#[derive(Clone, Copy, Debug)]
pub struct HookCost {
    pub rounds: usize,
    pub calls_per_round: usize,
    /// `IP_BLOCK_SOURCE` / `IP_UNBLOCK_SOURCE`: reported by the hook.
    pub membership: OptionCost,
    /// `IP_TOS`: ignored by the hook.
    pub other: OptionCost,
}

/// Measure [`HookCost`]: `rounds` rounds of `calls` calls each, hooks off then on.
pub fn hook_cost(bed: &Bed, calls: usize, rounds: usize) -> HookCost {
    let group: IpAddr = "232.6.6.7".parse().unwrap();
    let source: IpAddr = "10.77.1.7".parse().unwrap();
    let app = AppSocket::udp(&bed.ns, Family::V4);
    apply(
        bed,
        &app,
        group,
        &Request::JoinGroup,
        OptionSet::ProtocolIndependent,
    );
    let netns = netns_cookie(bed);
    let cgroup = cgroup2();
    let time_calls = |membership: bool| -> Duration {
        let started = Instant::now();
        for i in 0..calls {
            if membership {
                let change = block_or_unblock(i, source);
                apply(bed, &app, group, &change, OptionSet::FamilySpecific);
            } else {
                set_tos(&app, (i % 2) as i32 * 0x10);
            }
        }
        started.elapsed() / calls as u32
    };
    let measure = |membership: bool| -> OptionCost {
        let (mut off, mut on, mut added) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let a = time_calls(membership);
            let mut hooks = Hooks::attach(&cgroup, netns, None).expect("attaching the hooks");
            let b = time_calls(membership);
            let mut events = 0;
            hooks.drain(|_| events += 1);
            assert_eq!(hooks.stats().unwrap().lost, 0, "the hooks lost events");
            let expected = if membership { calls } else { 0 };
            assert_eq!(
                events, expected,
                "one event per membership option, none for others"
            );
            drop(hooks);
            off.push(a.as_nanos() as i128);
            on.push(b.as_nanos() as i128);
            added.push(b.as_nanos() as i128 - a.as_nanos() as i128);
        }
        for v in [&mut off, &mut on, &mut added] {
            v.sort_unstable();
        }
        OptionCost {
            off_ns: off[rounds / 2],
            on_ns: on[rounds / 2],
            added_ns: added[rounds / 2],
            added_low_ns: added[0],
            added_high_ns: added[rounds - 1],
        }
    };
    HookCost {
        rounds,
        calls_per_round: calls,
        membership: measure(true),
        other: measure(false),
    }
}

/// Apply `request` to `app` on `bed`'s interface; the kernel must accept it.
fn apply(bed: &Bed, app: &AppSocket, group: IpAddr, request: &Request, set: OptionSet) {
    app.apply(group, bed.ifindex, IFACE_V4, request, set)
        .unwrap_or_else(|e| panic!("{request:?} on {group}: {e:?}"));
}

/// The `i`th change of a socket that alternately blocks and unblocks `source`.
fn block_or_unblock(i: usize, source: IpAddr) -> Request {
    if i.is_multiple_of(2) {
        Request::BlockSource { source }
    } else {
        Request::UnblockSource { source }
    }
}

fn set_tos(app: &AppSocket, tos: i32) {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    // SAFETY: an int option on a live socket.
    let rc = unsafe {
        libc::setsockopt(
            app.as_fd().as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_TOS,
            (&raw const tos).cast(),
            4,
        )
    };
    assert_eq!(rc, 0, "IP_TOS");
}

fn netns_cookie(bed: &Bed) -> u64 {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let socket = AppSocket::udp(&bed.ns, Family::V4);
    let mut cookie: u64 = 0;
    let mut len = 8 as libc::socklen_t;
    // SAFETY: a u64 option into a live u64.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "SO_NETNS_COOKIE");
    cookie
}

/// The cgroup v2 mount, as the follower finds it.
fn cgroup2() -> std::path::PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).unwrap().into())
        })
        .expect("a cgroup2 mount")
}
