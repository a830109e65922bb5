//! `cargo xtask bench`: what msfilter costs, measured against the alternatives in one run.
//!
//! 1. Program cost (`program_cost`): BPF_PROG_TEST_RUN, ns per frame, random keys, at
//!    several map sizes: the XDP_DROP floor, a bare hash lookup, msfilter's drop and pass
//!    paths; IPv4, IPv6 and VLAN-tagged IPv4; cached lookups by key width; and (`trace`)
//!    the drop path as loaded against the trace path compiled out.
//! 2. Live path (`live`): frames through a veth pair on one CPU: the floor, a bare lookup,
//!    msfilter, nftables, the kernel's socket filter, and plain delivery; IPv4 and IPv6; at
//!    1, 1,000 and 100,000 (group, source) pairs; without netfilter rules and with
//!    connection tracking loaded; `perf stat` and `perf record` on the measuring CPU.
//! 3. Scaling (`scaling`): frames over every CPU through a multi-queue veth.
//! 4. Control plane (`control`): the daemon's API under load, and memory at 1M pairs.
//! 5. Follow mode (`follow`): setsockopt → XDP map update with N followed sockets, and what
//!    the hook adds to every setsockopt.
//!
//! Figures are reported as measured, with the targets met or missed; outputs go to
//! `target/bench/` (Markdown, JSON, SVG).

mod control;
mod follow;
mod frames;
mod live;
mod perf;
mod program_cost;
mod reference;
mod report;
mod scaling;
mod trace;

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Measure msfilter against the XDP floor, nftables and the kernel's socket filter"
)]
struct Args {
    /// A short run: fewer frames and requests (same phases and sizes).
    #[arg(long)]
    quick: bool,
    /// Where the report goes.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Random seed for the program-cost keys.
    #[arg(long, default_value_t = 0x6d73_6669)]
    seed: u64,
    /// Also replace the benchmark section of this README (between its `bench:start` and
    /// `bench:end` markers) with the report.
    #[arg(long, value_name = "README")]
    update_readme: Option<PathBuf>,
    /// Run only these phases (the report then holds only them).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    Cost,
    Live,
    Scaling,
    Control,
    Follow,
}

/// The median of a few measurements.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the benchmark needs root (BPF, network namespaces); run `cargo xtask bench` as root"
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let command = if args.quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    eprintln!("msfilter benchmark ({command})");

    let wanted = |p: Phase| args.only.is_empty() || args.only.contains(&p);
    let started = std::time::Instant::now();
    let lap = |phase: &str| eprintln!("  {phase} done at {:.0} s", started.elapsed().as_secs_f64());
    eprintln!("program cost…");
    let costs = if !wanted(Phase::Cost) {
        Vec::new()
    } else {
        program_cost::run(&program_cost::Settings {
            sizes: vec![1_000, 100_000, 1_048_576],
            frames: if args.quick { 4_000 } else { 20_000 },
            rounds: 3,
            seed: args.seed,
        })?
    };
    let trace = if wanted(Phase::Cost) {
        Some(trace::run(if args.quick { 11 } else { 31 })?)
    } else {
        None
    };
    lap("program cost");
    eprintln!("live path…");
    let lives = if !wanted(Phase::Live) {
        live::LiveReport::default()
    } else {
        live::run(&live::Settings {
            frames: if args.quick { 300_000 } else { 1_000_000 },
            rounds: if args.quick { 3 } else { 5 },
            cpu: cpus - 1,
            sizes: vec![1, 1_000, 100_000],
        })?
    };
    lap("live path");
    eprintln!("scaling…");
    let scaling = if !wanted(Phase::Scaling) {
        Vec::new()
    } else {
        scaling::run(&scaling::Settings {
            frames: if args.quick { 300_000 } else { 1_000_000 },
            rounds: if args.quick { 3 } else { 5 },
            cpus,
        })?
    };
    lap("scaling");
    eprintln!("control plane…");
    let control = if !wanted(Phase::Control) {
        None
    } else {
        Some(control::run(&control::Settings { requests: 10_000 })?)
    };

    lap("control plane");
    eprintln!("follow mode…");
    let follow = if wanted(Phase::Follow) {
        Some(follow::run(&follow::Settings {
            changes: if args.quick { 300 } else { 2_000 },
            calls: 2_000,
            rounds: if args.quick { 5 } else { 15 },
        })?)
    } else {
        None
    };
    lap("follow mode");
    let program = {
        let dp = msfilter::datapath::Datapath::load(&Default::default())?;
        let size = dp.program_size()?;
        report::ProgramInfo {
            verified_instructions: size.verified_instructions,
            translated_bytes: size.translated_bytes,
            jited_bytes: size.jited_bytes,
        }
    };
    let mut targets = report::targets(&costs, &lives, trace.as_ref(), control.as_ref());
    targets.extend(follow.iter().flat_map(follow::targets));
    let report = report::Report {
        machine: report::Machine {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")?
                .trim()
                .to_string(),
            cpus,
            cpu_model: std::fs::read_to_string("/proc/cpuinfo")?
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_default(),
            command: command.to_string(),
        },
        program,
        program_cost: costs,
        trace,
        live: lives,
        scaling,
        control,
        follow,
        targets,
    };
    report::write(&args.out, &report).context("writing the report")?;
    println!("{}", report::markdown(&report));
    println!(
        "written: {}/bench.md, bench.json, ns-per-frame.svg",
        args.out.display()
    );
    if let Some(readme) = &args.update_readme {
        update_readme(readme, &report::markdown(&report))?;
        println!("updated the benchmark section of {}", readme.display());
    }
    Ok(())
}

/// Replace what lies between the README's `<!-- bench:start -->` and `<!-- bench:end -->`.
fn update_readme(path: &std::path::Path, table: &str) -> Result<()> {
    const START: &str = "<!-- bench:start -->";
    const END: &str = "<!-- bench:end -->";
    let text = std::fs::read_to_string(path)?;
    let (Some(a), Some(b)) = (text.find(START), text.find(END)) else {
        bail!("{} has no {START} ... {END} section", path.display());
    };
    let body = table.replacen("## msfilter benchmark\n\n", "", 1);
    let updated = format!("{}{START}\n{body}{}", &text[..a], &text[b..]);
    std::fs::write(path, updated)?;
    Ok(())
}
