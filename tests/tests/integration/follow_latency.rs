//! Measurements of follow mode (`msfilter_testbed::follow_cost`), printed (`--nocapture`),
//! asserted only loosely: the benchmark (`cargo xtask bench`) is where the figures are
//! reported against their targets.

use std::time::Duration;

use msfilter_testbed::{
    follow_cost::{self, OptionCost},
    sequences::Bed,
};

const CHANGES: usize = 2000;
const CALLS_PER_ROUND: usize = 2000;
const ROUNDS: usize = 15;
/// Groups an incremental recheck may judge per change of the one changing socket (its
/// group: when the event arrives, when it is read back, and a few reads that saw it move).
const MAX_CHECKS_PER_CHANGE: u64 = 4;

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[test]
fn follow_latency_and_hook_cost() {
    let bed = Bed::new("flat").unwrap();
    let runs: Vec<_> = [0, 200]
        .into_iter()
        .map(|others| follow_cost::latency(&bed, CHANGES, others))
        .collect();
    println!(
        "follow latency over {CHANGES} changes (setsockopt return → ...), µs:\n\
         | other sockets | to | p50 | p99 | max |\n|---:|---|---:|---:|---:|"
    );
    for l in &runs {
        let others = l.others;
        println!(
            "| {others} | the follower holds the socket's filter | {:.0} | {:.0} | {:.0} |\n\
             | {others} | the maps hold the group's enforced filter | {:.0} | {:.0} | {:.0} |",
            micros(l.to_follower.p50),
            micros(l.to_follower.p99),
            micros(l.to_follower.max),
            micros(l.to_map.p50),
            micros(l.to_map.p99),
            micros(l.to_map.max),
        );
    }
    for l in &runs {
        println!(
            "{} others: between full rechecks, per change {:.2} groups judged and {:.2} option \
             counters read ({} full rechecks meanwhile)",
            l.others,
            l.group_checks as f64 / CHANGES as f64,
            l.seq_reads as f64 / CHANGES as f64,
            l.full_rechecks,
        );
    }
    for l in &runs {
        let others = l.others;
        assert_eq!(l.lost_events, 0);
        // Every change reached the maps, and after the follower had it.
        assert!(l.to_map.p50 >= l.to_follower.p50);
        assert!(l.to_map.max < Duration::from_secs(5));
        // Each change was judged by an incremental recheck of its own group (the event
        // makes it change, the read back settles it), not by counting every group again:
        // at most a few groups and counters per change, however many others are followed.
        // (A full recheck of every group runs once per `recheck_interval` besides.)
        let most = CHANGES as u64 * MAX_CHECKS_PER_CHANGE;
        assert!(
            (CHANGES as u64..=most).contains(&l.group_checks),
            "{} groups judged incrementally for {CHANGES} changes with {others} others",
            l.group_checks
        );
        assert!(
            l.seq_reads <= 2 * most,
            "{} option counters read incrementally for {CHANGES} changes with {others} others",
            l.seq_reads
        );
    }

    let cost = follow_cost::hook_cost(&bed, CALLS_PER_ROUND, ROUNDS);
    println!(
        "setsockopt cost, {ROUNDS} rounds of {CALLS_PER_ROUND} calls, each hooks-off then \
         hooks-on, ns per call (medians; added = median of the per-round differences, with \
         its range):\n| option | hooks off | hooks on | added | range |\n|---|---:|---:|---:|---|"
    );
    let row = |name: &str, c: &OptionCost| {
        println!(
            "| {name} | {} | {} | {} | {} … {} |",
            c.off_ns, c.on_ns, c.added_ns, c.added_low_ns, c.added_high_ns
        );
    };
    row("IP_BLOCK/UNBLOCK_SOURCE (reported)", &cost.membership);
    row("IP_TOS (ignored by the hook)", &cost.other);
}
