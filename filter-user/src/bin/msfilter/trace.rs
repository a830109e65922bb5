//! `msfilter trace IFACE [--group G] [--count N] [--sample N]`: live per-packet verdicts from
//! the XDP program's sampled path (`msfilter::datapath::Trace`): interface, group, source,
//! verdict, reason and length of each traced frame, as lines or (`-j`) JSON lines.
//!
//! The trace reads the program's pinned maps directly, so it needs the daemon's privileges
//! (root, or CAP_BPF) but not the daemon: it also works while XDP enforces a policy with no
//! daemon running. It ends after `--count` frames, `--duration`, Ctrl-C (SIGINT), SIGTERM or
//! a closed output, and switches the trace off on the way out.

use std::{
    io::{self, Write as _},
    net::IpAddr,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use clap::Args;
use msfilter::{
    daemon::DEFAULT_PIN_DIR,
    datapath::{self, Trace, TraceSelection},
    iface,
    sockopt::{addr_of, ip_of},
};
use msfilter_common::{Verdict, trace::TraceEvent};
use serde::Serialize;

#[derive(Debug, Args)]
pub(crate) struct TraceArgs {
    /// Interface name or index; msfilter's program must run there.
    #[arg(required_unless_present = "off")]
    iface: Option<String>,
    /// Switch off a trace whose process was killed (SIGKILL leaves the switch on); a live
    /// trace is left alone.
    #[arg(long, conflicts_with_all = ["iface", "group", "count", "sample", "duration"])]
    off: bool,
    /// Only frames to this multicast group.
    #[arg(long)]
    group: Option<IpAddr>,
    /// Stop after this many frames.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Trace one frame in N, chosen at random (for high rates).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    sample: u32,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Where the daemon pins its maps (its --pin-dir).
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let s: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(s > 0.0 && s <= 86_400.0) {
        return Err(format!("{text} s is out of range: 0 to 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

/// One traced frame as `-j` prints it.
#[derive(Serialize)]
struct Line<'a> {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    unix_ns: u128,
    iface: &'a str,
    ifindex: u32,
    group: Option<IpAddr>,
    source: Option<IpAddr>,
    verdict: &'static str,
    reason: &'static str,
    len: u32,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM end the trace (without SA_RESTART: the wait returns at once).
fn catch_stop_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&raw mut action.sa_mask);
            libc::sigaction(signal, &raw const action, std::ptr::null_mut());
        }
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock of `bpf_ktime_get_ns`).
fn monotonic_ns() -> u128 {
    // SAFETY: zeroed timespec is a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// `HH:MM:SS.micro` (UTC) of a Unix time in nanoseconds.
fn clock(unix_ns: u128) -> String {
    let secs = unix_ns / 1_000_000_000;
    let micros = (unix_ns % 1_000_000_000) / 1_000;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{micros:06}",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Drop => "drop",
    }
}

pub(crate) fn run(args: &TraceArgs, json: bool) -> anyhow::Result<()> {
    let Some(name) = &args.iface else {
        let gone = datapath::switch_off_abandoned(&args.pin_dir)?;
        if json {
            println!("{}", serde_json::json!({ "switched_off_for": gone }));
        } else {
            match gone {
                Some(pid) => println!("switched off the trace of process {pid}, which is gone"),
                None => println!("no trace is on"),
            }
        }
        return Ok(());
    };
    let interface = iface::resolve(name)?;
    if let Some(g) = args.group
        && !g.is_multicast()
    {
        bail!("--group {g} is not a multicast address");
    }
    let pinned = datapath::pinned_interfaces(&args.pin_dir)
        .with_context(|| format!("reading the pin directory {}", args.pin_dir.display()))?;
    // A VLAN sub-interface is traced on its parent's program: its frames carry its index.
    let carried = iface::vlan::vlan_link(interface.index)
        .ok()
        .flatten()
        .is_some_and(|v| pinned.contains(&v.parent));
    if !pinned.contains(&interface.index) && !carried {
        bail!(
            "msfilter's program does not run on {interface} (no link pinned in {}): attach it \
             first, or pass the daemon's --pin-dir",
            args.pin_dir.display()
        );
    }
    let selection = TraceSelection {
        ifindex: interface.index,
        group: args.group.map(addr_of),
        sample_one_in: args.sample,
    };
    catch_stop_signals();
    let mut trace = Trace::start_pinned(&args.pin_dir, selection)?;
    eprintln!(
        "msfilter: tracing {interface} ({}, {}); Ctrl-C to stop",
        args.group
            .map_or_else(|| "every frame".to_string(), |g| format!("group {g}")),
        if args.sample == 1 {
            "all of them".to_string()
        } else {
            format!("one in {} at random", args.sample)
        }
    );
    // Wall clock = monotonic + offset, fixed at the start.
    let offset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .saturating_sub(monotonic_ns());
    let started = Instant::now();
    let mut shown = 0u64;
    let mut out = io::stdout().lock();
    'trace: loop {
        while let Some(event) = trace.next_event() {
            if show(&mut out, &event, offset, &interface.name, json).is_err() {
                break 'trace; // a closed pipe (`| head`) ends the trace
            }
            shown += 1;
            if args.count.is_some_and(|n| shown >= n) {
                break 'trace;
            }
        }
        if out.flush().is_err() || STOP.load(Ordering::Relaxed) {
            break;
        }
        let left = match args.duration {
            Some(d) => match d.checked_sub(started.elapsed()) {
                Some(left) => left,
                None => break,
            },
            None => Duration::from_secs(1),
        };
        trace
            .wait(left.min(Duration::from_millis(200)))
            .context("waiting for traced frames")?;
    }
    let _ = out.flush();
    let lost = trace.stop()?;
    if lost > 0 {
        eprintln!(
            "msfilter: {lost} traced frames were lost (the ring buffer was full; try --sample)"
        );
    }
    Ok(())
}

fn show(
    out: &mut impl io::Write,
    e: &TraceEvent,
    offset: u128,
    iface: &str,
    json: bool,
) -> io::Result<()> {
    let (Some(reason), Some(verdict)) = (e.reason(), e.verdict()) else {
        return Ok(()); // not an event of this program's layout
    };
    let addresses = (e.addressed != 0).then(|| (ip_of(&e.group), ip_of(&e.source)));
    let unix_ns = u128::from(e.time_ns) + offset;
    if json {
        let line = Line {
            unix_ns,
            iface,
            ifindex: e.ifindex,
            group: addresses.map(|a| a.0),
            source: addresses.map(|a| a.1),
            verdict: verdict_name(verdict),
            reason: reason.name(),
            len: e.len,
        };
        serde_json::to_writer(&mut *out, &line)?;
        writeln!(out)
    } else {
        let what = match addresses {
            Some((g, s)) => format!("{g} <- {s}"),
            None => "-".to_string(),
        };
        writeln!(
            out,
            "{} {iface} {what} {} {} {} B",
            clock(unix_ns),
            verdict_name(verdict),
            reason.name(),
            e.len
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_of_a_unix_time() {
        // 2026-12-03 10:18:41.123456789 UTC
        let t = 1_796_293_121_123_456_789u128;
        assert_eq!(clock(t), "10:18:41.123456");
    }

    #[test]
    fn durations_are_checked() {
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
    }
}
