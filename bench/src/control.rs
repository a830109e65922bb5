//! The control plane through the daemon's API: how long 100,000 (group, source) rules take
//! to load, the latency of single block/unblock round trips, and the daemon's resident
//! memory and the kernel's map memory at 1,048,576 pairs.

use std::{net::IpAddr, time::Instant};

use anyhow::{Context as _, Result};
use msfilter::client::Client;
use msfilter_common::Mode;
use msfilter_testbed::{daemon::Daemon, netns::Link};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct ControlReport {
    pub rules_loaded: u32,
    pub load_seconds: f64,
    pub requests: u32,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub pairs_at_scale: u32,
    pub scale_load_seconds: f64,
    pub daemon_rss_mib: f64,
    pub map_memory_mib: f64,
}

pub struct Settings {
    pub requests: u32,
}

fn group(i: u32) -> IpAddr {
    let [_, a, b, c] = i.to_be_bytes();
    IpAddr::from([232, a, b, c])
}

fn sources(count: u32) -> Vec<IpAddr> {
    (1..=count)
        .map(|i| {
            let [_, a, b, c] = i.to_be_bytes();
            IpAddr::from([10, a, b, c])
        })
        .collect()
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}

pub fn run(settings: &Settings) -> Result<ControlReport> {
    const PER_GROUP: u32 = 1000;
    const AT_SCALE: u32 = 1_048_576;
    let link = Link::new("ctl", &[])?;
    let daemon = Daemon::start(
        &link.receiver,
        &[
            "--max-sources-per-socket",
            "1024",
            "--max-sources",
            "1100000",
        ],
    )?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut c = Client::register(daemon.socket(), "bench").await?;
        let rx = "rx0";

        // 100,000 rules: 100 groups of 1,000 sources, each set as one full-state filter.
        let start = Instant::now();
        let list = sources(PER_GROUP);
        for g in 0..100 {
            c.join(rx, group(g)).await?;
            c.set_filter(rx, group(g), Mode::Exclude, list.clone())
                .await?;
        }
        let load = start.elapsed();

        // Single requests: block and unblock one source, alternately.
        let probe = group(0x00ff_fffe);
        let source: IpAddr = "10.200.0.1".parse()?;
        c.join(rx, probe).await?;
        let mut latencies = Vec::with_capacity(settings.requests as usize);
        for i in 0..settings.requests {
            let t = Instant::now();
            if i % 2 == 0 {
                c.block(rx, probe, source).await?;
            } else {
                c.unblock(rx, probe, source).await?;
            }
            latencies.push(t.elapsed());
        }
        latencies.sort();
        let pct = |p: f64| -> f64 {
            let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
            latencies[i].as_secs_f64() * 1e6
        };

        // Scale: up to 1,048,576 pairs (groups of 1,024 and one remainder).
        let start = Instant::now();
        let mut pairs = 100 * PER_GROUP;
        let mut g = 100;
        while pairs < AT_SCALE {
            let n = (AT_SCALE - pairs).min(1024);
            c.join(rx, group(g)).await?;
            c.set_filter(rx, group(g), Mode::Exclude, sources(n))
                .await?;
            pairs += n;
            g += 1;
        }
        let scale_load = start.elapsed();
        let stats = c.stats().await?;
        anyhow::ensure!(
            stats.source_entries == u64::from(AT_SCALE),
            "the maps hold {} source entries, not {AT_SCALE}",
            stats.source_entries
        );
        let rss = rss_mib(daemon.pid().context("daemon pid")?)?;
        Ok(ControlReport {
            rules_loaded: 100 * PER_GROUP,
            load_seconds: load.as_secs_f64(),
            requests: settings.requests,
            latency_p50_us: pct(0.50),
            latency_p99_us: pct(0.99),
            pairs_at_scale: AT_SCALE,
            scale_load_seconds: scale_load.as_secs_f64(),
            daemon_rss_mib: rss,
            map_memory_mib: stats.map_memory as f64 / (1024.0 * 1024.0),
        })
    })
}
