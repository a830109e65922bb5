//! `msfilter top`: live rates (packets and bytes per second, passed and dropped) in total, per
//! interface, per group and per listed source, from successive `stats` and `list` answers
//! of the daemon. The view redraws in place (ANSI: cursor home, clear screen); with `-j`
//! each refresh is one JSON object on a line of its own.
//!
//! Rates are differences of the daemon's counters over the time measured between two
//! samples. A group's interface figures are the sums of its groups (the datapath counts
//! frames by reason for the whole host, and per group); a counter that went back (a group
//! removed and managed again) counts from zero.

use std::{
    collections::BTreeMap,
    io::{self, Write as _},
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use clap::Args;
use msfilter::{
    client::{Client, ClientError},
    daemon::protocol::{CounterView, GroupEntry, ListFilter, StatsView},
    policy::{Mode, mode_name},
};
use serde::Serialize;

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// Seconds between refreshes (a fraction is fine: 0.5).
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_interval)]
    interval: Duration,
    /// Stop after N refreshes (default: until interrupted).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Only this interface (name or index).
    #[arg(long)]
    iface: Option<String>,
    /// Only this group.
    #[arg(long)]
    group: Option<IpAddr>,
    /// Rows of each table in the live view, the busiest first (-j has every row).
    #[arg(long, value_name = "N", default_value_t = 15)]
    rows: usize,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.05..=3600.0).contains(&seconds) {
        return Err(format!(
            "{text} s is out of range: the interval is 0.05 to 3600 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// What one look at the daemon found.
struct Sample {
    at: Instant,
    stats: StatsView,
    /// By (interface, group), continued entries merged.
    groups: BTreeMap<(String, IpAddr), Group>,
}

struct Group {
    mode: Mode,
    passed: CounterView,
    dropped: CounterView,
    sources: BTreeMap<IpAddr, CounterView>,
}

async fn sample(client: &mut Client, filter: &ListFilter) -> Result<Sample, ClientError> {
    let at = Instant::now();
    let stats = client.stats().await?;
    let mut groups: BTreeMap<(String, IpAddr), Group> = BTreeMap::new();
    client
        .list(filter.clone(), None, |entries: Vec<GroupEntry>| {
            for e in entries {
                let group = groups
                    .entry((e.iface.clone(), e.group))
                    .or_insert_with(|| Group {
                        mode: e.mode,
                        passed: e.passed,
                        dropped: e.dropped,
                        sources: BTreeMap::new(),
                    });
                group
                    .sources
                    .extend(e.sources.iter().map(|s| (s.source, s.matched)));
            }
        })
        .await?;
    Ok(Sample { at, stats, groups })
}

/// A counter's change over one interval, and as rates.
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Rate {
    packets: u64,
    bytes: u64,
    packets_per_second: f64,
    bytes_per_second: f64,
}

impl Rate {
    fn between(before: Option<CounterView>, now: CounterView, seconds: f64) -> Self {
        let before = before.unwrap_or_default();
        // A counter that went back started again from zero.
        let delta = |b: u64, n: u64| if n >= b { n - b } else { n };
        Self::of(
            delta(before.packets, now.packets),
            delta(before.bytes, now.bytes),
            seconds,
        )
    }

    fn of(packets: u64, bytes: u64, seconds: f64) -> Self {
        Self {
            packets,
            bytes,
            packets_per_second: packets as f64 / seconds,
            bytes_per_second: bytes as f64 / seconds,
        }
    }

    fn plus(self, other: Self, seconds: f64) -> Self {
        Self::of(
            self.packets + other.packets,
            self.bytes + other.bytes,
            seconds,
        )
    }
}

#[derive(Debug, Serialize)]
struct Both {
    passed: Rate,
    dropped: Rate,
}

#[derive(Debug, Serialize)]
struct InterfaceRates {
    iface: String,
    passed: Rate,
    dropped: Rate,
}

#[derive(Debug, Serialize)]
struct GroupRates {
    iface: String,
    group: IpAddr,
    mode: Mode,
    passed: Rate,
    dropped: Rate,
}

#[derive(Debug, Serialize)]
struct SourceRates {
    iface: String,
    group: IpAddr,
    source: IpAddr,
    /// Frames matching the source: dropped in EXCLUDE mode, passed in INCLUDE mode.
    matched: Rate,
}

/// One refresh: the rates between two samples.
#[derive(Debug, Serialize)]
struct Refresh {
    /// Seconds since the Unix epoch at the later sample.
    time: f64,
    /// Seconds between the two samples.
    interval: f64,
    total: Both,
    interfaces: Vec<InterfaceRates>,
    groups: Vec<GroupRates>,
    sources: Vec<SourceRates>,
}

fn refresh(before: &Sample, now: &Sample) -> Refresh {
    let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-9);
    let mut interfaces: BTreeMap<String, (Rate, Rate)> = now
        .stats
        .attachments
        .iter()
        .map(|a| {
            (
                a.iface.clone(),
                (Rate::of(0, 0, seconds), Rate::of(0, 0, seconds)),
            )
        })
        .collect();
    let mut groups = Vec::new();
    let mut sources = Vec::new();
    for ((iface, group), g) in &now.groups {
        let old = before.groups.get(&(iface.clone(), *group));
        let passed = Rate::between(old.map(|o| o.passed), g.passed, seconds);
        let dropped = Rate::between(old.map(|o| o.dropped), g.dropped, seconds);
        let sums = interfaces
            .entry(iface.clone())
            .or_insert((Rate::of(0, 0, seconds), Rate::of(0, 0, seconds)));
        *sums = (sums.0.plus(passed, seconds), sums.1.plus(dropped, seconds));
        groups.push(GroupRates {
            iface: iface.clone(),
            group: *group,
            mode: g.mode,
            passed,
            dropped,
        });
        for (source, matched) in &g.sources {
            sources.push(SourceRates {
                iface: iface.clone(),
                group: *group,
                source: *source,
                matched: Rate::between(
                    old.and_then(|o| o.sources.get(source).copied()),
                    *matched,
                    seconds,
                ),
            });
        }
    }
    let time = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        - now.at.elapsed().as_secs_f64();
    Refresh {
        time,
        interval: seconds,
        total: Both {
            passed: Rate::between(Some(before.stats.passed), now.stats.passed, seconds),
            dropped: Rate::between(Some(before.stats.dropped), now.stats.dropped, seconds),
        },
        interfaces: interfaces
            .into_iter()
            .map(|(iface, (passed, dropped))| InterfaceRates {
                iface,
                passed,
                dropped,
            })
            .collect(),
        groups,
        sources,
    }
}

/// Run until `--count` refreshes are shown (or forever).
pub(crate) async fn run(
    args: TopArgs,
    socket: &std::path::Path,
    json: bool,
) -> Result<(), ClientError> {
    let mut client = Client::connect(socket).await?;
    let filter = ListFilter {
        iface: args.iface.clone(),
        group: args.group,
    };
    let mut ticks = tokio::time::interval(args.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut before = sample(&mut client, &filter).await?;
    let mut shown = 0;
    while args.count.is_none_or(|n| shown < n) {
        ticks.tick().await;
        let now = sample(&mut client, &filter).await?;
        let r = refresh(&before, &now);
        shown += 1;
        let mut out = io::stdout().lock();
        let written = if json {
            serde_json::to_writer(&mut out, &r)
                .map_err(io::Error::from)
                .and_then(|()| writeln!(out))
        } else {
            draw(&mut out, &r, &args, shown)
        };
        // A closed pipe (`| head`) ends the view.
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
        before = now;
    }
    Ok(())
}

/// Cursor home, then clear the screen: the next frame draws over the last.
const REDRAW: &str = "\x1b[H\x1b[2J";

fn si(value: f64, unit: &str) -> String {
    let (scaled, prefix) = match value {
        v if v >= 1e9 => (v / 1e9, "G"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    format!("{scaled:.1} {prefix}{unit}")
}

fn rate_cells(r: &Rate) -> String {
    format!(
        "{:>12} {:>12}",
        si(r.packets_per_second, "pps"),
        si(r.bytes_per_second, "B/s")
    )
}

/// Rows ordered busiest first.
fn busiest<T>(rows: &[T], weight: impl Fn(&T) -> f64, n: usize) -> Vec<&T> {
    let mut rows: Vec<&T> = rows.iter().collect();
    rows.sort_by(|a, b| weight(b).total_cmp(&weight(a)));
    rows.truncate(n);
    rows
}

fn draw(out: &mut impl io::Write, r: &Refresh, args: &TopArgs, shown: u64) -> io::Result<()> {
    write!(out, "{REDRAW}")?;
    let of = args.count.map_or_else(String::new, |n| format!("/{n}"));
    writeln!(
        out,
        "msfilter top: refresh {shown}{of}, every {:.2} s (measured {:.3} s)",
        args.interval.as_secs_f64(),
        r.interval
    )?;
    writeln!(
        out,
        "all frames   passed {}   dropped {}",
        rate_cells(&r.total.passed),
        rate_cells(&r.total.dropped)
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<16} {:>25} {:>25}",
        "INTERFACE", "PASSED", "DROPPED"
    )?;
    for i in &r.interfaces {
        writeln!(
            out,
            "{:<16} {} {}",
            i.iface,
            rate_cells(&i.passed),
            rate_cells(&i.dropped)
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<16} {:<28} {:<8} {:>25} {:>25}",
        "INTERFACE", "GROUP", "MODE", "PASSED", "DROPPED"
    )?;
    let pps = |g: &GroupRates| g.passed.packets_per_second + g.dropped.packets_per_second;
    for g in busiest(&r.groups, pps, args.rows) {
        writeln!(
            out,
            "{:<16} {:<28} {:<8} {} {}",
            g.iface,
            g.group.to_string(),
            mode_name(g.mode),
            rate_cells(&g.passed),
            rate_cells(&g.dropped)
        )?;
    }
    if r.groups.len() > args.rows {
        writeln!(out, "... {} more groups", r.groups.len() - args.rows)?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<16} {:<28} {:<40} {:>25}",
        "INTERFACE", "GROUP", "SOURCE", "MATCHED"
    )?;
    for s in busiest(&r.sources, |s| s.matched.packets_per_second, args.rows) {
        writeln!(
            out,
            "{:<16} {:<28} {:<40} {}",
            s.iface,
            s.group.to_string(),
            s.source.to_string(),
            rate_cells(&s.matched)
        )?;
    }
    if r.sources.len() > args.rows {
        writeln!(out, "... {} more sources", r.sources.len() - args.rows)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(packets: u64) -> CounterView {
        CounterView {
            packets,
            bytes: packets * 100,
        }
    }

    fn stats(passed: u64, dropped: u64) -> StatsView {
        StatsView {
            reasons: vec![],
            passed: c(passed),
            dropped: c(dropped),
            clients: 1,
            groups: 1,
            source_entries: 1,
            attachments: vec![],
            map_memory: 0,
            unrestored: vec![],
            follow: None,
        }
    }

    fn sample(at: Instant, passed: u64, dropped: u64, matched: u64) -> Sample {
        let g: IpAddr = "232.1.1.1".parse().unwrap();
        Sample {
            at,
            stats: stats(passed + 7, dropped),
            groups: BTreeMap::from([(
                ("rx0".to_string(), g),
                Group {
                    mode: Mode::Exclude,
                    passed: c(passed),
                    dropped: c(dropped),
                    sources: BTreeMap::from([("10.0.0.1".parse().unwrap(), c(matched))]),
                },
            )]),
        }
    }

    #[test]
    fn rates_are_differences_over_the_measured_time() {
        let t0 = Instant::now();
        let before = sample(t0, 10, 20, 20);
        let now = sample(t0 + Duration::from_secs(2), 30, 120, 120);
        let r = refresh(&before, &now);
        assert_eq!(r.interval, 2.0);
        assert_eq!(
            (r.groups[0].passed.packets, r.groups[0].dropped.packets),
            (20, 100)
        );
        assert_eq!(r.groups[0].dropped.bytes, 10_000);
        assert_eq!(r.groups[0].dropped.packets_per_second, 50.0);
        assert_eq!(r.sources[0].matched.bytes_per_second, 5000.0);
        assert_eq!(r.interfaces[0].iface, "rx0");
        assert_eq!(r.interfaces[0].dropped.packets, 100);
        assert_eq!(r.total.passed.packets, 20);
        // A counter that went back (the group managed anew) counts from zero.
        let reset = sample(t0 + Duration::from_secs(3), 5, 1, 1);
        let r = refresh(&now, &reset);
        assert_eq!(
            (r.groups[0].passed.packets, r.sources[0].matched.packets),
            (5, 1)
        );
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        for bad in ["0", "-1", "x", "NaN", "1e9"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_view_redraws_from_the_top() {
        let t0 = Instant::now();
        let r = refresh(
            &sample(t0, 0, 0, 0),
            &sample(t0 + Duration::from_secs(1), 1500, 2, 2),
        );
        let args = TopArgs {
            interval: Duration::from_secs(1),
            count: Some(3),
            iface: None,
            group: None,
            rows: 15,
        };
        let mut out = Vec::new();
        draw(&mut out, &r, &args, 2).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(REDRAW), "{text}");
        assert!(text.contains("refresh 2/3"), "{text}");
        assert!(text.contains("232.1.1.1"), "{text}");
        assert!(text.contains("1.5 kpps"), "{text}");
    }
}
