//! Follow mode (`msfilter attach IFACE --follow`): with N unmodified sockets followed on one
//! interface, the time from an application's `setsockopt` to the XDP map update (p50/p99),
//! and what the hook adds to every `setsockopt` on the host. Measured by the test bed's
//! `follow_cost` module, which the `follow_latency` test uses too.

use anyhow::Result;
use msfilter_testbed::{
    follow_cost::{self, OptionCost, Percentiles},
    sequences::Bed,
};
use serde::Serialize;

use crate::report::Target;

/// Other followed sockets, besides the one that changes its filter.
const OTHERS: [usize; 2] = [0, 200];
/// The latency target (setsockopt → map update, p99).
const TARGET_P99_US: f64 = 1000.0;

#[derive(Clone, Copy, Debug, Serialize)]
pub struct LatencyRow {
    pub others: usize,
    pub changes: usize,
    pub to_follower_p50_us: f64,
    pub to_follower_p99_us: f64,
    pub to_map_p50_us: f64,
    pub to_map_p99_us: f64,
    pub to_map_max_us: f64,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct HookRow {
    pub option: &'static str,
    pub off_ns: i128,
    pub on_ns: i128,
    pub added_ns: i128,
    pub added_low_ns: i128,
    pub added_high_ns: i128,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FollowReport {
    pub latency: Vec<LatencyRow>,
    pub hooks: Vec<HookRow>,
    pub rounds: usize,
    pub calls_per_round: usize,
}

pub struct Settings {
    pub changes: usize,
    pub calls: usize,
    pub rounds: usize,
}

fn us(p: &Percentiles) -> (f64, f64, f64) {
    let f = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    (f(p.p50), f(p.p99), f(p.max))
}

pub fn run(settings: &Settings) -> Result<FollowReport> {
    let mut report = FollowReport {
        rounds: settings.rounds,
        calls_per_round: settings.calls,
        ..FollowReport::default()
    };
    for others in OTHERS {
        let bed = Bed::new("bfol")?;
        let l = follow_cost::latency(&bed, settings.changes, others);
        anyhow::ensure!(
            l.lost_events == 0,
            "the hooks lost {} events during the latency run",
            l.lost_events
        );
        let (f50, f99, _) = us(&l.to_follower);
        let (m50, m99, mmax) = us(&l.to_map);
        report.latency.push(LatencyRow {
            others,
            changes: l.changes,
            to_follower_p50_us: f50,
            to_follower_p99_us: f99,
            to_map_p50_us: m50,
            to_map_p99_us: m99,
            to_map_max_us: mmax,
        });
    }
    let bed = Bed::new("bhok")?;
    let cost = follow_cost::hook_cost(&bed, settings.calls, settings.rounds);
    let row = |option, c: &OptionCost| HookRow {
        option,
        off_ns: c.off_ns,
        on_ns: c.on_ns,
        added_ns: c.added_ns,
        added_low_ns: c.added_low_ns,
        added_high_ns: c.added_high_ns,
    };
    report.hooks = vec![
        row("IP_BLOCK/UNBLOCK_SOURCE (reported)", &cost.membership),
        row("IP_TOS (ignored by the hook)", &cost.other),
    ];
    Ok(report)
}

/// The latency target, judged for each N measured.
pub fn targets(r: &FollowReport) -> Vec<Target> {
    r.latency
        .iter()
        .map(|l| Target {
            what: format!(
                "follow: setsockopt → XDP map update, p99, {} other followed sockets",
                l.others
            ),
            target: format!("< {TARGET_P99_US:.0} µs"),
            measured: format!("{:.0} µs", l.to_map_p99_us),
            met: Some(l.to_map_p99_us < TARGET_P99_US),
        })
        .collect()
}

pub fn markdown(r: &FollowReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if r.latency.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "### Follow mode\n\nAn unmodified socket alternately blocks and unblocks a source \
         ({} changes per row), waiting for each change to reach the XDP maps; N other \
         unmodified sockets on the interface are followed too. µs from `setsockopt` \
         returning:\n\n| N others | to the follower p50 | p99 | to the map update p50 | p99 | max |\n\
         |---:|---:|---:|---:|---:|---:|",
        r.latency[0].changes
    );
    for l in &r.latency {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            l.others,
            l.to_follower_p50_us,
            l.to_follower_p99_us,
            l.to_map_p50_us,
            l.to_map_p99_us,
            l.to_map_max_us
        );
    }
    let _ = writeln!(
        out,
        "\nWhat the hook adds to every `setsockopt(2)` on the host: {} rounds of {} calls, \
         hooks off then on; ns per call (medians; added: median of the per-round differences, \
         and their range):\n\n| option | hooks off | hooks on | added | range |\n|---|---:|---:|---:|---|",
        r.rounds, r.calls_per_round
    );
    for h in &r.hooks {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} … {} |",
            h.option, h.off_ns, h.on_ns, h.added_ns, h.added_low_ns, h.added_high_ns
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(others: usize, p99: f64) -> LatencyRow {
        LatencyRow {
            others,
            changes: 10,
            to_follower_p50_us: 100.0,
            to_follower_p99_us: p99 - 50.0,
            to_map_p50_us: 120.0,
            to_map_p99_us: p99,
            to_map_max_us: p99 + 1.0,
        }
    }

    #[test]
    fn the_latency_target_is_judged_per_row_from_the_measured_p99() {
        let r = FollowReport {
            latency: vec![row(0, 700.0), row(200, 1500.0)],
            ..FollowReport::default()
        };
        let t = targets(&r);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].met, Some(true));
        assert_eq!(t[1].met, Some(false));
        assert_eq!(t[1].measured, "1500 µs");
        let md = markdown(&r);
        assert!(
            md.contains("| 200 | 100 | 1450 | 120 | 1500 | 1501 |"),
            "{md}"
        );
        assert!(markdown(&FollowReport::default()).is_empty());
    }
}
