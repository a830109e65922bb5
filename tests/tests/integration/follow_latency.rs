//! Measurements of follow mode, printed (`--nocapture`), asserted only loosely: the
//! benchmark is where figures are held to targets.
//!
//! * How long after an application's `setsockopt` returns the follower has the socket's new
//!   filter (read back, settled), and the group's enforced filter shows it: p50/p99 over
//!   2000 changes (alternating block/unblock of one source; the application waits for its
//!   next datagram in between, as receivers do).
//! * What the hook adds to every `setsockopt` on the host: the same option calls timed with
//!   the hooks attached and not, interleaved in one run (a membership option, and an option
//!   the hook ignores).

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
    follow::Hooks,
    sockopt::{Family, Request, addr_of},
};
use msfilter_common::GroupKey;
use msfilter_testbed::{apps::AppSocket, followed, option_sets::OptionSet, sequences::Bed};

const CHANGES: usize = 2000;
const OPS_PER_ROUND: usize = 2000;
const ROUNDS: usize = 15;
const IFACE_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[test]
fn follow_latency_and_hook_cost() {
    let bed = Bed::new("flat").unwrap();
    let group: IpAddr = "232.6.6.6".parse().unwrap();
    let source: IpAddr = "10.77.1.6".parse().unwrap();
    let key = GroupKey::new(bed.ifindex, addr_of(group));
    let app = AppSocket::udp(&bed.ns, Family::V4);
    app.apply(
        group,
        bed.ifindex,
        IFACE_V4,
        &Request::JoinGroup,
        OptionSet::ProtocolIndependent,
    )
    .unwrap();
    let cookie = app.cookie();

    // The follower on a thread of its own, reporting each settled change of the socket's
    // filter and of the group's enforced filter.
    let follower = followed::start(&bed.ns, &[bed.ifindex]);
    let stop = Arc::new(AtomicBool::new(false));
    let (record_tx, record_rx) = mpsc::channel::<(bool, Instant)>();
    let (enforced_tx, enforced_rx) = mpsc::channel::<(bool, Instant)>();
    let watcher = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut follower = follower;
            let (mut last_record, mut last_enforced) = (Some(false), Some(false));
            while !stop.load(Ordering::Relaxed) {
                follower.wait_and_process(Duration::from_millis(1)).unwrap();
                let now = Instant::now();
                let record = follower
                    .socket_by_cookie(cookie)
                    .filter(|r| r.read_seq.is_some())
                    .and_then(|r| r.memberships.get(&key))
                    .map(|f| !f.sources.is_empty());
                if let Some(blocked) = record
                    && record != last_record
                {
                    last_record = record;
                    let _ = record_tx.send((blocked, now));
                }
                let enforced = follower
                    .group(&key)
                    .filter(|g| g.completeness.is_complete() && g.enforced == g.merged)
                    .map(|g| !g.enforced.sources.is_empty());
                if let Some(blocked) = enforced
                    && enforced != last_enforced
                {
                    last_enforced = enforced;
                    let _ = enforced_tx.send((blocked, now));
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
    let (mut to_record, mut to_enforced) = (Vec::new(), Vec::new());
    for i in 0..CHANGES {
        let blocked = i % 2 == 0;
        let req = if blocked {
            Request::BlockSource { source }
        } else {
            Request::UnblockSource { source }
        };
        app.apply(
            group,
            bed.ifindex,
            IFACE_V4,
            &req,
            OptionSet::FamilySpecific,
        )
        .unwrap();
        let returned = Instant::now();
        let recorded = wait_for(&record_rx, blocked);
        let enforced = wait_for(&enforced_rx, blocked);
        to_record.push(recorded.saturating_duration_since(returned));
        to_enforced.push(enforced.saturating_duration_since(returned));
    }
    stop.store(true, Ordering::Relaxed);
    let follower = watcher.join().unwrap();
    to_record.sort();
    to_enforced.sort();
    println!(
        "follow latency over {CHANGES} changes (setsockopt return → follower), µs:\n\
         | to | p50 | p99 | max |\n|---|---:|---:|---:|\n\
         | socket's filter read back | {:.0} | {:.0} | {:.0} |\n\
         | group's enforced filter | {:.0} | {:.0} | {:.0} |",
        micros(percentile(&to_record, 0.5)),
        micros(percentile(&to_record, 0.99)),
        micros(*to_record.last().unwrap()),
        micros(percentile(&to_enforced, 0.5)),
        micros(percentile(&to_enforced, 0.99)),
        micros(*to_enforced.last().unwrap()),
    );
    println!("follower: {:?}", follower.stats());
    assert_eq!(follower.stats().hooks.lost, 0);
    drop(follower);

    // The hook's cost per setsockopt: hooks attached or not, rounds interleaved.
    let netns = follower_netns_cookie(&bed);
    let cgroup = cgroup2();
    let time_ops = |membership: bool| -> Duration {
        let started = Instant::now();
        for i in 0..OPS_PER_ROUND {
            if membership {
                let req = if i % 2 == 0 {
                    Request::BlockSource { source }
                } else {
                    Request::UnblockSource { source }
                };
                app.apply(
                    group,
                    bed.ifindex,
                    IFACE_V4,
                    &req,
                    OptionSet::FamilySpecific,
                )
                .unwrap();
            } else {
                set_tos(&app, (i % 2) as i32 * 0x10);
            }
        }
        started.elapsed() / OPS_PER_ROUND as u32
    };
    let mut rows = Vec::new();
    for membership in [true, false] {
        let (mut off, mut on, mut added) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let a = time_ops(membership);
            let mut hooks = Hooks::attach(&cgroup, netns).unwrap();
            let b = time_ops(membership);
            let mut events = 0;
            hooks.drain(|_| events += 1);
            assert_eq!(hooks.stats().unwrap().lost, 0);
            if membership {
                assert_eq!(events, OPS_PER_ROUND, "one event per membership option");
            } else {
                assert_eq!(events, 0, "other options are not reported");
            }
            drop(hooks);
            off.push(a.as_nanos() as i128);
            on.push(b.as_nanos() as i128);
            added.push(b.as_nanos() as i128 - a.as_nanos() as i128);
        }
        for v in [&mut off, &mut on, &mut added] {
            v.sort_unstable();
        }
        rows.push((
            membership,
            off[ROUNDS / 2],
            on[ROUNDS / 2],
            added[ROUNDS / 2],
            added[0],
            added[ROUNDS - 1],
        ));
    }
    println!(
        "setsockopt cost, {ROUNDS} rounds of {OPS_PER_ROUND} calls, each hooks-off then hooks-on, \
         ns per call (medians; added = median of the per-round differences, with its range):\n\
         | option | hooks off | hooks on | added | range |\n|---|---:|---:|---:|---|"
    );
    for (membership, off, on, added, low, high) in rows {
        let name = if membership {
            "IP_BLOCK/UNBLOCK_SOURCE (reported)"
        } else {
            "IP_TOS (ignored by the hook)"
        };
        println!("| {name} | {off} | {on} | {added} | {low} … {high} |");
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
    assert_eq!(rc, 0);
}

fn follower_netns_cookie(bed: &Bed) -> u64 {
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
    assert_eq!(rc, 0);
    cookie
}

/// The cgroup v2 mount, as the follower finds it.
fn cgroup2() -> std::path::PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).unwrap().into())
        })
        .expect("a cgroup2 mount")
}
