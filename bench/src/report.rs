//! The benchmark's outputs: a Markdown report, the same figures as JSON, and a plot of ns
//! per frame against map size, under `target/bench/`; the targets, each met or missed by
//! how much; and findings: sentences computed from this run's figures only (a sentence
//! whose figures were not measured is left out, never replaced by a fixed one).

use std::{fmt::Write as _, path::Path};

use anyhow::Result;
use serde::Serialize;

use crate::{
    control::ControlReport,
    frames::Shape,
    live::{LiveReport, LiveRow, Profile, Variant},
    program_cost::{BARE, CostRow, DROP, FLOOR, KEY4, KEY20, PASS},
    scaling::{self, ScaleRow},
    trace::{GLOBAL, TraceCost},
};

/// msfilter's drop paths in the live path: at most this many ns above the XDP_DROP floor.
pub const LIVE_TARGET_NS: f64 = 25.0;
/// msfilter's cost above the floor: at most this fraction of an alternative's.
pub const RATIO_TARGET: f64 = 10.0;
/// The trace capability, off: at most this many ns.
pub const TRACE_TARGET_NS: f64 = 1.0;

#[derive(Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub command: String,
}

#[derive(Serialize)]
pub struct ProgramInfo {
    pub verified_instructions: Option<u32>,
    pub translated_bytes: Option<u32>,
    pub jited_bytes: u32,
}

#[derive(Serialize)]
pub struct Target {
    pub what: String,
    pub target: String,
    pub measured: String,
    /// `None`: nothing to judge (what it needs is absent from this build).
    pub met: Option<bool>,
}

#[derive(Serialize)]
pub struct Report {
    pub machine: Machine,
    pub program: ProgramInfo,
    pub program_cost: Vec<CostRow>,
    pub trace: Option<TraceCost>,
    pub live: LiveReport,
    pub scaling: Vec<ScaleRow>,
    pub control: Option<ControlReport>,
    pub follow: Option<crate::follow::FollowReport>,
    pub targets: Vec<Target>,
}

fn cost(rows: &[CostRow], shape: Shape, pairs: u32, variant: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r.shape == shape && r.pairs == pairs && r.variant == variant)
        .map(|r| r.ns)
}

fn live(
    rows: &[LiveRow],
    shape: Shape,
    profile: Profile,
    variant: Variant,
    pairs: u32,
) -> Option<&LiveRow> {
    let pairs = if variant.has_policy() { pairs } else { 0 };
    rows.iter().find(|r| {
        r.shape == shape && r.profile == profile && r.variant == variant && r.pairs == pairs
    })
}

/// Policy sizes measured in the live path.
fn live_sizes(rows: &[LiveRow]) -> Vec<u32> {
    let mut v: Vec<u32> = rows
        .iter()
        .filter(|r| r.variant.has_policy())
        .map(|r| r.pairs)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn pairs_label(p: u32) -> String {
    if p == 1 {
        "1 pair".into()
    } else {
        format!("{p} pairs")
    }
}

const fn alternative_name(v: Variant) -> &'static str {
    match v {
        Variant::Nftables => "nftables",
        Variant::Socket => "the socket filter",
        _ => "?",
    }
}

/// Evaluate the targets the project set itself.
pub fn targets(
    costs: &[CostRow],
    lives: &LiveReport,
    trace: Option<&TraceCost>,
    control: Option<&ControlReport>,
) -> Vec<Target> {
    let mut out = Vec::new();
    let rows = &lives.rows;
    let sizes = live_sizes(rows);
    for shape in [Shape::Ipv4, Shape::Ipv6] {
        for path in [Variant::Msfilter, Variant::MsfilterInclude] {
            let found: Vec<(u32, f64)> = sizes
                .iter()
                .filter_map(|&p| {
                    live(rows, shape, Profile::Plain, path, p).map(|r| (p, r.above_floor))
                })
                .collect();
            if found.is_empty() {
                continue;
            }
            out.push(Target {
                what: format!(
                    "live path {}: {}, above the floor",
                    shape.name(),
                    path.name()
                ),
                target: format!("≤ {LIVE_TARGET_NS:.0} ns"),
                measured: found
                    .iter()
                    .map(|(p, ns)| format!("{}: {ns:+.0} ns", pairs_label(*p)))
                    .collect::<Vec<_>>()
                    .join("; "),
                met: Some(found.iter().all(|(_, ns)| *ns <= LIVE_TARGET_NS)),
            });
        }
    }
    for profile in Profile::ALL {
        for shape in [Shape::Ipv4, Shape::Ipv6] {
            for alt in [Variant::Nftables, Variant::Socket] {
                let mut parts = Vec::new();
                let mut met = true;
                let mut any = false;
                for &p in &sizes {
                    let m = live(rows, shape, profile, Variant::Msfilter, p);
                    let o = live(rows, shape, profile, alt, p);
                    match (m, o) {
                        (Some(m), Some(o)) => {
                            any = true;
                            let ratio = o.above_floor / m.above_floor.max(0.5);
                            met &= m.above_floor * RATIO_TARGET <= o.above_floor;
                            parts.push(format!(
                                "{}: {:.0} vs {:.0} ns, 1/{ratio:.1}",
                                pairs_label(p),
                                m.above_floor,
                                o.above_floor
                            ));
                        }
                        (Some(_), None)
                            if lives.skipped.iter().any(|s| {
                                s.shape == shape
                                    && s.profile == profile
                                    && s.variant == alt
                                    && s.pairs == p
                            }) =>
                        {
                            parts.push(format!("{}: not allowed by the kernel", pairs_label(p)));
                        }
                        _ => {}
                    }
                }
                if !any {
                    continue;
                }
                out.push(Target {
                    what: format!(
                        "live path {}, {}: msfilter vs {}, cost above the floor",
                        shape.name(),
                        profile.name(),
                        alternative_name(alt)
                    ),
                    target: format!("≤ 1/{RATIO_TARGET:.0}"),
                    measured: parts.join("; "),
                    met: Some(met),
                });
            }
        }
    }
    let small = costs
        .iter()
        .map(|r| r.pairs)
        .filter(|&p| p > 0)
        .min()
        .unwrap_or(0);
    let large = costs.iter().map(|r| r.pairs).max().unwrap_or(0);
    for path in [DROP, PASS] {
        if let (Some(p), Some(f)) = (
            cost(costs, Shape::Ipv4, small, path),
            cost(costs, Shape::Ipv4, small, FLOOR),
        ) {
            out.push(Target {
                what: format!("program cost, {path}, IPv4, {small} pairs: above the floor"),
                target: "≤ 40 ns".into(),
                measured: format!("{:.0} ns", p - f),
                met: Some(p - f <= 40.0),
            });
        }
        // Against one bare lookup of the same key: at 1,000 pairs (the size) and at
        // the largest table.
        let sizes = if small == large {
            vec![small]
        } else {
            vec![small, large]
        };
        for pairs in sizes {
            if let (Some(p), Some(b)) = (
                cost(costs, Shape::Ipv4, pairs, path),
                cost(costs, Shape::Ipv4, pairs, BARE),
            ) {
                out.push(Target {
                    what: format!("program cost, {path}, IPv4, {pairs} pairs: vs the bare lookup"),
                    target: "≤ 1.2×".into(),
                    measured: format!("{p:.0} vs {b:.0} ns: {:.2}×", p / b),
                    met: Some(p <= 1.2 * b),
                });
            }
        }
    }
    out.extend(trace_targets(trace));
    let Some(control) = control else {
        return out;
    };
    out.push(Target {
        what: format!("load {} rules through the daemon API", control.rules_loaded),
        target: "< 1 s".into(),
        measured: format!("{:.3} s", control.load_seconds),
        met: Some(control.load_seconds < 1.0),
    });
    out.push(Target {
        what: format!(
            "single block/unblock round trip, p99 of {}",
            control.requests
        ),
        target: "< 1 ms".into(),
        measured: format!("{:.0} µs", control.latency_p99_us),
        met: Some(control.latency_p99_us < 1000.0),
    });
    out
}

/// The trace capability's cost when off, per family; or that the object has no such global.
pub fn trace_targets(trace: Option<&TraceCost>) -> Vec<Target> {
    let what = |shape: Option<Shape>| {
        format!(
            "program cost, msfilter drop path{}: as loaded vs {GLOBAL} = 0 (trace path \
             compiled out)",
            shape.map_or_else(String::new, |s| format!(", {}", s.name()))
        )
    };
    let target = format!("≤ {TRACE_TARGET_NS:.0} ns");
    match trace {
        None => Vec::new(),
        Some(TraceCost::NotInObject) => vec![Target {
            what: what(None),
            target,
            measured: format!("not in this object ({GLOBAL} is absent)"),
            met: None,
        }],
        Some(TraceCost::Measured(rows)) => rows
            .iter()
            .map(|t| Target {
                what: what(Some(t.shape)),
                target: target.clone(),
                measured: format!(
                    "{:.1} vs {:.1} ns: {:+.1} ns",
                    t.as_loaded_ns,
                    t.off_ns,
                    t.difference()
                ),
                met: Some(t.difference() <= TRACE_TARGET_NS),
            })
            .collect(),
    }
}

/// Where msfilter's cost above the floor goes, per family, from this run's figures: the
/// live path at one pair (perf stat, the bare lookup, perf record) and the cached lookups by
/// key width.
pub fn breakdown(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let rows = &r.live.rows;
    for shape in [Shape::Ipv4, Shape::Ipv6] {
        let (Some(f), Some(m)) = (
            live(rows, shape, Profile::Plain, Variant::Floor, 0),
            live(rows, shape, Profile::Plain, Variant::Msfilter, 1),
        ) else {
            continue;
        };
        let above = m.above_floor;
        let mut s = format!(
            "{}: msfilter's EXCLUDE drop path costs {:.0} ns per frame in the live path at one \
             pair, {above:.0} ns above the floor's {:.0} ns: {}.",
            shape.name(),
            m.ns,
            f.ns,
            if above <= LIVE_TARGET_NS {
                format!("within the {LIVE_TARGET_NS:.0} ns target")
            } else {
                format!(
                    "{:.0} ns over the {LIVE_TARGET_NS:.0} ns target",
                    above - LIVE_TARGET_NS
                )
            }
        );
        if let (Some(mi), Some(mc), Some(fi), Some(fc)) =
            (m.instructions, m.cycles, f.instructions, f.cycles)
        {
            let _ = write!(
                s,
                " perf stat on the measuring CPU: {:+.0} instructions and {:+.0} cycles per \
                 frame over the floor ({:.2} cycles per ns measured).",
                mi - fi,
                mc - fc,
                mc / m.ns
            );
        }
        if m.instructions.is_none()
            && let Some(said) = &r.live.perf_stat
        {
            let _ = write!(
                s,
                " perf stat counted no instructions or cycles on this machine (perf: \"{said}\")."
            );
        }
        if let Some(b) = live(rows, shape, Profile::Plain, Variant::Bare, 0) {
            let _ = write!(
                s,
                " The bare lookup program (one lookup of the same {}-byte key) costs {:.0} ns \
                 above the floor{}",
                match shape {
                    Shape::Ipv4 | Shape::Ipv4Vlan => size_of::<msfilter_common::SourceKey4>(),
                    Shape::Ipv6 => size_of::<msfilter_common::SourceKey>(),
                },
                b.above_floor,
                match (b.instructions, b.cycles, f.instructions, f.cycles) {
                    (Some(bi), Some(bc), Some(fi), Some(fc)) => format!(
                        " ({:+.0} instructions, {:+.0} cycles per frame)",
                        bi - fi,
                        bc - fc
                    ),
                    _ => String::new(),
                },
            );
            if b.above_floor <= above {
                let _ = write!(
                    s,
                    "; msfilter's drop of a listed source does that one lookup, {:.0}% of its \
                     {above:.0} ns, the rest being its own work.",
                    100.0 * b.above_floor / above.max(0.5)
                );
            } else {
                let _ = write!(
                    s,
                    "; msfilter, which does that one lookup and more, measured {:.0} ns less in \
                     this run: its rounds spread over {:.0} ns, the bare lookup's over {:.0} ns.",
                    b.above_floor - above,
                    m.spread(),
                    b.spread()
                );
            }
            if b.above_floor > LIVE_TARGET_NS {
                let _ = write!(
                    s,
                    " The bare lookup alone is over the {LIVE_TARGET_NS:.0} ns target here: on \
                     this machine no program that looks this key up meets it."
                );
            }
        }
        if let Some(p) = r.live.profiled.iter().find(|p| p.shape == shape) {
            let _ = write!(
                s,
                " perf record ({} cpu-clock samples on the measuring CPU over {} frames of \
                 msfilter's drop path): {:.1} ns per frame in the kernel's hash-table code ({:.1} \
                 ns of it hashing the keys, htab_map_hash) and {:.1} ns in msfilter's program \
                 itself, together {:.0}% of its {above:.0} ns above the floor",
                p.samples,
                p.frames,
                p.hash_ns,
                p.jhash_ns,
                p.program_ns,
                100.0 * (p.hash_ns + p.program_ns) / above.max(0.5),
            );
            match p.floor_busy_ns {
                Some(fb) => {
                    let extra = p.busy_ns - fb;
                    let _ = write!(
                        s,
                        "; the CPU was busy {:.0} ns per frame with msfilter and {fb:.0} ns with \
                         the floor, {extra:+.0} ns, of which {:.0} ns lie outside those two",
                        p.busy_ns,
                        extra - p.hash_ns - p.program_ns
                    );
                }
                None => {
                    let _ = write!(s, "; the CPU was busy {:.0} ns per frame", p.busy_ns);
                }
            }
            let top: Vec<String> = p
                .top
                .iter()
                .map(|(name, ns)| format!("{name} {ns:.1} ns"))
                .collect();
            if top.is_empty() {
                s.push('.');
            } else {
                let _ = write!(
                    s,
                    ". Most time per frame in msfilter's run: {}.",
                    top.join(", ")
                );
            }
            if let Some(b) = p.bare {
                let _ = write!(
                    s,
                    " The same recording of the bare lookup program: {:.1} ns per frame in its \
                     own program (it too reads the frame's addresses, the first touch of the \
                     frame's data, which the floor never makes) and {:.1} ns in the hash-table \
                     code; msfilter's program itself takes {:+.1} ns over that, its hash-table \
                     code {:+.1} ns.",
                    b.program_ns,
                    b.hash_ns,
                    p.program_ns - b.program_ns,
                    p.hash_ns - b.hash_ns
                );
            }
        }
        out.push(s);
    }
    let c = &r.program_cost;
    if let (Some(f), Some(k4), Some(k12), Some(k20), Some(f6), Some(k40)) = (
        cost(c, Shape::Ipv4, 0, FLOOR),
        cost(c, Shape::Ipv4, 0, KEY4),
        cost(c, Shape::Ipv4, 0, BARE),
        cost(c, Shape::Ipv4, 0, KEY20),
        cost(c, Shape::Ipv6, 0, FLOOR),
        cost(c, Shape::Ipv6, 0, BARE),
    ) {
        out.push(format!(
            "Key width (BPF_PROG_TEST_RUN, one cached key, same map type): a lookup costs \
             {:.1} ns above the floor with a 4-byte key, {:.1} ns with msfilter's 12-byte IPv4 \
             source key, {:.1} ns with a 20-byte key (the IPv6 group key), and {:.1} ns with \
             the 36-byte IPv6 pair key (on IPv6 frames, above their own floor); hashing \
             (jhash) and comparing the wider keys adds {:.1} ns (12 bytes), {:.1} ns (20 bytes) \
             and {:.1} ns (36 bytes) over the 4-byte key.",
            k4 - f,
            k12 - f,
            k20 - f,
            k40 - f6,
            k12 - k4,
            k20 - k4,
            (k40 - f6) - (k4 - f)
        ));
    }
    if let Some(v) = r.program.verified_instructions {
        out.push(format!(
            "The kernel's program info for msfilter: the verifier processed {v} \
             instructions; {} bytes translated ({} BPF instructions), {} bytes JIT-compiled.",
            r.program
                .translated_bytes
                .map_or_else(|| "?".to_string(), |b| b.to_string()),
            r.program
                .translated_bytes
                .map_or_else(|| "?".to_string(), |b| (b / 8).to_string()),
            r.program.jited_bytes
        ));
    }
    out
}

/// What connection tracking changed, per family and variant, against the rounds' spread.
pub fn conntrack_effect(rows: &[LiveRow]) -> Vec<String> {
    let mut out = Vec::new();
    for shape in [Shape::Ipv4, Shape::Ipv6] {
        for variant in [Variant::Msfilter, Variant::Nftables, Variant::Socket] {
            let mut parts = Vec::new();
            for p in live_sizes(rows) {
                let (Some(a), Some(b)) = (
                    live(rows, shape, Profile::Plain, variant, p),
                    live(rows, shape, Profile::Conntrack, variant, p),
                ) else {
                    continue;
                };
                // Compared above each profile's own floor.
                let delta = b.above_floor - a.above_floor;
                let noise = a.spread().max(b.spread());
                parts.push(format!(
                    "{} {delta:+.0} ns{}",
                    pairs_label(p),
                    if delta.abs() <= noise {
                        format!(" (within the rounds' spread of {noise:.0} ns)")
                    } else {
                        String::new()
                    }
                ));
            }
            if !parts.is_empty() {
                out.push(format!(
                    "{}, {}: with connection tracking loaded, the cost above the floor changes \
                     by {}.",
                    shape.name(),
                    variant.name(),
                    parts.join(", ")
                ));
            }
        }
    }
    out
}

fn relative_spread(row: &ScaleRow) -> f64 {
    let max = row.rounds.iter().copied().fold(f64::MIN, f64::max);
    let min = row.rounds.iter().copied().fold(f64::MAX, f64::min);
    ((max - min) / row.total_mpps).max(0.0)
}

/// Scaling over CPUs and whether the shared source counters contend, from the figures.
pub fn scaling_findings(rows: &[ScaleRow]) -> Vec<String> {
    let mut out = Vec::new();
    let many = rows.iter().map(|r| r.cpus).max().unwrap_or(1);
    if many < 2 {
        return out;
    }
    let find =
        |v: scaling::Variant, cpus: usize| rows.iter().find(|r| r.variant == v && r.cpus == cpus);
    let mut factors = Vec::new();
    for v in scaling::Variant::ALL {
        let one = find(
            if v == scaling::Variant::MsfilterShared {
                scaling::Variant::MsfilterDistinct
            } else {
                v
            },
            1,
        );
        if let (Some(one), Some(all)) = (one, find(v, many)) {
            factors.push(format!(
                "{} {:.2}×",
                v.name(),
                all.total_mpps / one.total_mpps
            ));
        }
    }
    if !factors.is_empty() {
        out.push(format!(
            "{many} CPUs against one, total rate: {}.",
            factors.join(", ")
        ));
    }
    if let (Some(shared), Some(distinct)) = (
        find(scaling::Variant::MsfilterShared, many),
        find(scaling::Variant::MsfilterDistinct, many),
    ) {
        let change = shared.per_core_mpps / distinct.per_core_mpps - 1.0;
        let noise = relative_spread(shared).max(relative_spread(distinct));
        let verdict = if change >= -noise {
            format!(
                "within the rounds' spread ({:.0}%): on {many} CPUs this run measures no \
                 contention on the shared source counters beyond its own scatter",
                100.0 * noise
            )
        } else {
            format!(
                "beyond the rounds' spread ({:.0}%): on {many} CPUs the shared source counters \
                 are measured as a point of contention",
                100.0 * noise
            )
        };
        out.push(format!(
            "All {many} CPUs counting on one shared source entry: {:.2} Mpps per core, against \
             {:.2} with each CPU on its own entry ({:+.0}%), {verdict}.",
            shared.per_core_mpps,
            distinct.per_core_mpps,
            100.0 * change
        ));
    }
    out
}

/// For each missed live-path ratio target, the figures behind it at its worst size.
pub fn missed_ratios(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let rows = &r.live.rows;
    for profile in Profile::ALL {
        for shape in [Shape::Ipv4, Shape::Ipv6] {
            for alt in [Variant::Nftables, Variant::Socket] {
                let worst = live_sizes(rows)
                    .into_iter()
                    .filter_map(|p| {
                        let m = live(rows, shape, profile, Variant::Msfilter, p)?;
                        let o = live(rows, shape, profile, alt, p)?;
                        let ratio = o.above_floor / m.above_floor.max(0.5);
                        (ratio < RATIO_TARGET).then_some((p, m.above_floor, o.above_floor, ratio))
                    })
                    .min_by(|a, b| a.3.total_cmp(&b.3));
                if let Some((p, m, o, ratio)) = worst {
                    out.push(format!(
                        "{}, {}, {}: {} costs {o:.0} ns above the floor, a tenth of that is \
                         {:.0} ns; msfilter costs {m:.0} ns, {:.0} ns more than that tenth \
                         (1/{ratio:.1}).",
                        shape.name(),
                        profile.name(),
                        pairs_label(p),
                        alternative_name(alt),
                        o / RATIO_TARGET,
                        m - o / RATIO_TARGET
                    ));
                }
            }
        }
    }
    out
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "?".to_string(), |n| n.to_string())
}

/// The Markdown report.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## msfilter benchmark\n");
    let _ = writeln!(
        s,
        "`{}` on {} ({} CPUs), Linux {}. msfilter's program (kernel prog info): {} \
         instructions verified, {} bytes translated, {} bytes JIT-compiled.\n",
        r.machine.command,
        r.machine.cpu_model,
        r.machine.cpus,
        r.machine.kernel,
        opt(r.program.verified_instructions),
        opt(r.program.translated_bytes),
        r.program.jited_bytes
    );
    live_section(&mut s, r);
    if !r.scaling.is_empty() {
        let many = r.scaling.iter().map(|x| x.cpus).max().unwrap_or(1);
        let _ = writeln!(
            s,
            "\n### Multi-queue scaling (IPv4, 1000 pairs, Mpps, median of {} runs; one \
             generator thread and one veth queue per CPU)\n",
            r.scaling.first().map_or(0, |x| x.rounds.len())
        );
        let _ = writeln!(
            s,
            "| variant | 1 CPU | {many} CPUs total | {many} CPUs per core |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|");
        for v in scaling::Variant::ALL {
            let get = |cpus| r.scaling.iter().find(|x| x.variant == v && x.cpus == cpus);
            let one = get(1).map_or_else(|| "–".to_string(), |x| format!("{:.2}", x.total_mpps));
            let (total, per) = get(many).map_or_else(
                || ("–".to_string(), "–".to_string()),
                |x| {
                    (
                        format!("{:.2}", x.total_mpps),
                        format!("{:.2}", x.per_core_mpps),
                    )
                },
            );
            let _ = writeln!(s, "| {} | {one} | {total} | {per} |", v.name());
        }
    }
    program_cost_section(&mut s, r);
    if let Some(c) = &r.control {
        let _ = writeln!(s, "\n### Control plane (daemon API)\n");
        let _ = writeln!(s, "| measure | value |");
        let _ = writeln!(s, "|---|---:|");
        let _ = writeln!(
            s,
            "| load {} (group, source) rules (full-state filters of 1,000) | {:.3} s |",
            c.rules_loaded, c.load_seconds
        );
        let _ = writeln!(
            s,
            "| block/unblock round trip, p50 / p99 of {} | {:.0} / {:.0} µs |",
            c.requests, c.latency_p50_us, c.latency_p99_us
        );
        let _ = writeln!(
            s,
            "| load up to {} pairs | {:.2} s |",
            c.pairs_at_scale, c.scale_load_seconds
        );
        let _ = writeln!(
            s,
            "| daemon resident memory at {} pairs | {:.1} MiB |",
            c.pairs_at_scale, c.daemon_rss_mib
        );
        let _ = writeln!(
            s,
            "| kernel map memory at {} pairs | {:.1} MiB |",
            c.pairs_at_scale, c.map_memory_mib
        );
    }
    if let Some(f) = &r.follow {
        let _ = write!(s, "\n{}", crate::follow::markdown(f));
    }
    let _ = writeln!(s, "\n### Targets\n");
    let _ = writeln!(s, "| target | goal | measured | |");
    let _ = writeln!(s, "|---|---|---|---|");
    for t in &r.targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            t.what,
            t.target,
            t.measured,
            match t.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            }
        );
    }
    let sections = [
        ("Where msfilter's cost goes", breakdown(r)),
        ("Missed ratios", missed_ratios(r)),
        ("Connection tracking", conntrack_effect(&r.live.rows)),
        ("Scaling", scaling_findings(&r.scaling)),
    ];
    for (title, lines) in sections {
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n### {title}\n");
        for line in lines {
            let _ = writeln!(s, "- {line}");
        }
    }
    s
}

fn live_section(s: &mut String, r: &Report) {
    let rows = &r.live.rows;
    if rows.is_empty() {
        return;
    }
    let sizes = live_sizes(rows);
    let skipped = |shape: Shape, profile: Profile, v: Variant, p: u32| {
        r.live
            .skipped
            .iter()
            .any(|k| k.shape == shape && k.profile == profile && k.variant == v && k.pairs == p)
    };
    for profile in Profile::ALL {
        if !rows.iter().any(|l| l.profile == profile) {
            continue;
        }
        let _ = writeln!(
            s,
            "### Live path, {} (ns per 64-byte frame, one CPU, median of {} interleaved runs)\n",
            profile.name(),
            rows.first().map_or(0, |l| l.rounds.len())
        );
        let _ = writeln!(
            s,
            "| variant | policy | IPv4 | above floor | IPv6 | above floor |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        for variant in Variant::ALL {
            let each: Vec<u32> = if variant.has_policy() {
                sizes.clone()
            } else {
                vec![0]
            };
            for p in each {
                let cell = |shape| match live(rows, shape, profile, variant, p) {
                    Some(l) => format!("| {:.0} | {:+.0} ", l.ns, l.above_floor),
                    None if skipped(shape, profile, variant, p) => "| not allowed | – ".to_string(),
                    None => "| – | – ".to_string(),
                };
                if [Shape::Ipv4, Shape::Ipv6]
                    .iter()
                    .all(|&sh| live(rows, sh, profile, variant, p).is_none())
                    && ![Shape::Ipv4, Shape::Ipv6]
                        .iter()
                        .any(|&sh| skipped(sh, profile, variant, p))
                {
                    continue;
                }
                let _ = writeln!(
                    s,
                    "| {} | {} {}{}|",
                    variant.name(),
                    if variant.has_policy() {
                        pairs_label(p)
                    } else {
                        "–".into()
                    },
                    cell(Shape::Ipv4),
                    cell(Shape::Ipv6)
                );
            }
        }
        let _ = writeln!(s);
    }
    // Ratios: the alternative's cost above the floor over msfilter's.
    let _ = writeln!(
        s,
        "Cost above the floor, msfilter (EXCLUDE) against each alternative at the same policy \
         size (1/n: msfilter costs an n-th of it):\n"
    );
    let _ = writeln!(
        s,
        "| profile | policy | IPv4 vs nftables | IPv4 vs socket filter | IPv6 vs nftables | \
         IPv6 vs socket filter |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for profile in Profile::ALL {
        for &p in &sizes {
            let mut line = format!("| {} | {} ", profile.name(), pairs_label(p));
            let mut any = false;
            for shape in [Shape::Ipv4, Shape::Ipv6] {
                for alt in [Variant::Nftables, Variant::Socket] {
                    let cell = match (
                        live(rows, shape, profile, Variant::Msfilter, p),
                        live(rows, shape, profile, alt, p),
                    ) {
                        (Some(m), Some(o)) => {
                            any = true;
                            format!("1/{:.1}", o.above_floor / m.above_floor.max(0.5))
                        }
                        _ if skipped(shape, profile, alt, p) => "not allowed".into(),
                        _ => "–".into(),
                    };
                    let _ = write!(line, "| {cell} ");
                }
            }
            if any {
                let _ = writeln!(s, "{line}|");
            }
        }
    }
    for k in &r.live.skipped {
        let _ = writeln!(
            s,
            "\nNot allowed: {} over {} at {}, {}: {}.",
            k.variant.name(),
            k.shape.name(),
            pairs_label(k.pairs),
            k.profile.name(),
            k.reason
        );
    }
    if !r.live.raised.is_empty() {
        let _ = writeln!(
            s,
            "\nRaised inside the receiving namespace for the socket filter, restored after each \
             run: {}.",
            r.live.raised.join(", ")
        );
    }
    if rows.iter().any(|l| l.instructions.is_some()) {
        let _ = writeln!(
            s,
            "\nProfile of the last run (`perf stat` on the measuring CPU, per frame, including \
             the generator's own work), {}:\n",
            Profile::Plain.name()
        );
        let _ = writeln!(
            s,
            "| variant | policy | IPv4 instructions | cycles | IPv6 instructions | cycles |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        for variant in Variant::ALL {
            let each: Vec<u32> = if variant.has_policy() {
                sizes.clone()
            } else {
                vec![0]
            };
            for p in each {
                let cell = |shape| match live(rows, shape, Profile::Plain, variant, p) {
                    Some(LiveRow {
                        instructions: Some(i),
                        cycles: Some(c),
                        ..
                    }) => Some(format!("| {i:.0} | {c:.0} ")),
                    _ => None,
                };
                let (a, b) = (cell(Shape::Ipv4), cell(Shape::Ipv6));
                if a.is_none() && b.is_none() {
                    continue;
                }
                let dash = || "| – | – ".to_string();
                let _ = writeln!(
                    s,
                    "| {} | {} {}{}|",
                    variant.name(),
                    if variant.has_policy() {
                        pairs_label(p)
                    } else {
                        "–".into()
                    },
                    a.unwrap_or_else(dash),
                    b.unwrap_or_else(dash)
                );
            }
        }
    }
}

fn program_cost_section(s: &mut String, r: &Report) {
    if r.program_cost.is_empty() {
        return;
    }
    let sizes: Vec<u32> = {
        let mut v: Vec<u32> = r.program_cost.iter().map(|c| c.pairs).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let _ = writeln!(
        s,
        "\n### Program cost (BPF_PROG_TEST_RUN, ns per frame; a random key per frame, except \
         the first column: one frame repeated, its key in cache)\n"
    );
    let _ = write!(s, "| frames | variant |");
    for p in &sizes {
        let _ = if *p == 0 {
            write!(s, " one cached key |")
        } else {
            write!(s, " {p} pairs |")
        };
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "|---|---|{}", "---:|".repeat(sizes.len()));
    for shape in [Shape::Ipv4, Shape::Ipv6, Shape::Ipv4Vlan] {
        for variant in [FLOOR, KEY4, KEY20, BARE, DROP, PASS] {
            if sizes
                .iter()
                .all(|p| cost(&r.program_cost, shape, *p, variant).is_none())
            {
                continue;
            }
            let _ = write!(s, "| {} | {variant} |", shape.name());
            for p in &sizes {
                let _ = match cost(&r.program_cost, shape, *p, variant) {
                    Some(ns) => write!(s, " {ns:.0} |"),
                    None => write!(s, " – |"),
                };
            }
            let _ = writeln!(s);
        }
    }
    match &r.trace {
        None => {}
        Some(TraceCost::NotInObject) => {
            let _ = writeln!(
                s,
                "\nTrace capability off ({GLOBAL} = 0) against as loaded: not in this object."
            );
        }
        Some(TraceCost::Measured(rows)) => {
            let _ = writeln!(
                s,
                "\n| msfilter drop path, one cached key, ns (mean of {} interleaved rounds) | as \
                 loaded | {GLOBAL} = 0 | difference |",
                rows.first().map_or(0, |t| t.rounds_as_loaded.len())
            );
            let _ = writeln!(s, "|---|---:|---:|---:|");
            for t in rows {
                let _ = writeln!(
                    s,
                    "| {} | {:.1} | {:.1} | {:+.1} |",
                    t.shape.name(),
                    t.as_loaded_ns,
                    t.off_ns,
                    t.difference()
                );
            }
        }
    }
}

/// A line plot of ns per frame against map size (log scale), one line per variant.
pub fn svg(rows: &[CostRow]) -> String {
    let series: Vec<(String, Vec<(u32, f64)>)> = [
        (Shape::Ipv4, FLOOR),
        (Shape::Ipv4, BARE),
        (Shape::Ipv4, DROP),
        (Shape::Ipv4, PASS),
        (Shape::Ipv6, DROP),
        (Shape::Ipv4Vlan, DROP),
    ]
    .into_iter()
    .filter_map(|(shape, variant)| {
        let mut points: Vec<(u32, f64)> = rows
            .iter()
            .filter(|r| r.shape == shape && r.variant == variant && r.pairs > 0)
            .map(|r| (r.pairs, r.ns))
            .collect();
        points.sort_by_key(|p| p.0);
        (!points.is_empty()).then(|| (format!("{variant} ({})", shape.name()), points))
    })
    .collect();
    let (w, h, left, right, top, bottom) = (760.0, 420.0, 70.0, 250.0, 30.0, 50.0);
    let rows: Vec<&CostRow> = rows.iter().filter(|r| r.pairs > 0).collect();
    let xs: Vec<f64> = rows.iter().map(|r| f64::from(r.pairs).log10()).collect();
    let (x0, x1) = (
        xs.iter().copied().fold(f64::MAX, f64::min),
        xs.iter().copied().fold(f64::MIN, f64::max),
    );
    let y1 = rows.iter().map(|r| r.ns).fold(0.0, f64::max) * 1.1;
    let px = |pairs: u32| {
        left + (f64::from(pairs).log10() - x0) / (x1 - x0).max(1e-9) * (w - left - right)
    };
    let py = |ns: f64| h - bottom - ns / y1.max(1e-9) * (h - top - bottom);
    let colours = [
        "#777777", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
    ];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"{left}\" y=\"18\" font-size=\"14\">msfilter program cost: ns \
         per frame against (group, source) pairs</text>\n"
    );
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" \
         y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for i in 0..=5 {
        let ns = y1 * f64::from(i) / 5.0;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{ns:.0}</text>",
            left - 6.0,
            py(ns) + 4.0
        );
    }
    let mut sizes: Vec<u32> = rows.iter().map(|r| r.pairs).collect();
    sizes.sort_unstable();
    sizes.dedup();
    for p in sizes {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{p}</text>",
            px(p),
            h - bottom + 18.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">pairs (log scale)</text>\n<text x=\"16\" \
         y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">ns per frame</text>",
        left + (w - left - right) / 2.0,
        h - 12.0,
        h / 2.0,
        h / 2.0
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(p, ns)| format!("{:.1},{:.1}", px(*p), py(*ns)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for (p, ns) in points {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                px(*p),
                py(*ns)
            );
        }
        let y = top + 20.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" \
             stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{name}</text>",
            w - right + 10.0,
            w - right + 30.0,
            w - right + 36.0,
            y + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

pub fn write(dir: &Path, report: &Report) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("bench.md"), markdown(report))?;
    std::fs::write(
        dir.join("bench.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    std::fs::write(dir.join("ns-per-frame.svg"), svg(&report.program_cost))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        live::{BareProfile, Profiled, Skipped},
        trace::TraceRow,
    };

    fn cost_row(shape: Shape, pairs: u32, variant: &'static str, ns: f64) -> CostRow {
        CostRow {
            shape,
            pairs,
            variant,
            ns,
            rounds: vec![ns],
        }
    }

    fn live_row(
        shape: Shape,
        profile: Profile,
        variant: Variant,
        pairs: u32,
        ns: f64,
        floor: f64,
    ) -> LiveRow {
        LiveRow {
            shape,
            profile,
            variant,
            pairs: if variant.has_policy() { pairs } else { 0 },
            ns,
            above_floor: ns - floor,
            rounds: vec![ns - 1.0, ns, ns + 1.0],
            check: String::new(),
            instructions: Some(ns * 10.0),
            cycles: Some(ns * 3.0),
        }
    }

    /// A run: msfilter at `msfilter_live` ns (floor 50), alternatives at 200/250 ns plus
    /// `ct_extra` with connection tracking.
    fn report(msfilter_live: f64, drop_1k: f64, ct_extra: f64) -> Report {
        let mut costs = Vec::new();
        for (pairs, floor, bare, drop, pass) in [
            (0, 4.0, 30.0, 42.0, 33.0),
            (1_000, 33.0, 73.0, drop_1k, 70.0),
            (1_048_576, 34.0, 490.0, 560.0, 420.0),
        ] {
            for (v, ns) in [(FLOOR, floor), (BARE, bare), (DROP, drop), (PASS, pass)] {
                costs.push(cost_row(Shape::Ipv4, pairs, v, ns));
            }
        }
        costs.push(cost_row(Shape::Ipv4, 0, KEY4, 20.0));
        costs.push(cost_row(Shape::Ipv4, 0, KEY20, 35.0));
        costs.push(cost_row(Shape::Ipv6, 0, FLOOR, 5.0));
        costs.push(cost_row(Shape::Ipv6, 0, BARE, 50.0));
        let mut rows = Vec::new();
        for profile in Profile::ALL {
            let extra = if profile == Profile::Conntrack {
                ct_extra
            } else {
                0.0
            };
            for shape in [Shape::Ipv4, Shape::Ipv6] {
                for (v, ns) in [
                    (Variant::Floor, 50.0),
                    (Variant::Bare, 65.0),
                    (Variant::Delivered, 400.0),
                ] {
                    rows.push(live_row(shape, profile, v, 0, ns, 50.0));
                }
                for pairs in [1, 1_000] {
                    for (v, ns) in [
                        (Variant::Msfilter, msfilter_live),
                        (Variant::MsfilterInclude, msfilter_live + 2.0),
                        (Variant::Nftables, 200.0 + extra),
                        (Variant::Socket, 250.0 + extra),
                    ] {
                        if shape == Shape::Ipv6 && v == Variant::Socket && pairs == 1_000 {
                            continue;
                        }
                        rows.push(live_row(shape, profile, v, pairs, ns, 50.0));
                    }
                }
            }
        }
        let skipped = Profile::ALL
            .into_iter()
            .map(|profile| Skipped {
                shape: Shape::Ipv6,
                profile,
                variant: Variant::Socket,
                pairs: 1_000,
                reason: "a socket may list at most 64 sources".into(),
            })
            .collect();
        let live = LiveReport {
            rows,
            skipped,
            profiled: vec![Profiled {
                shape: Shape::Ipv4,
                samples: 1000,
                frames: 2_000_000,
                hash_ns: 27.5,
                jhash_ns: 9.5,
                program_ns: 13.7,
                busy_ns: 105.0,
                floor_busy_ns: Some(50.0),
                top: vec![("__htab_map_lookup_elem".into(), 27.5)],
                bare: Some(BareProfile {
                    program_ns: 5.2,
                    hash_ns: 20.0,
                }),
            }],
            perf_stat: None,
            raised: vec!["net.ipv4.igmp_max_msf 10 → 1000".into()],
        };
        let control = ControlReport {
            rules_loaded: 100_000,
            load_seconds: 0.2,
            requests: 10_000,
            latency_p50_us: 50.0,
            latency_p99_us: 70.0,
            pairs_at_scale: 1_048_576,
            scale_load_seconds: 1.5,
            daemon_rss_mib: 50.0,
            map_memory_mib: 145.0,
        };
        let trace = TraceCost::NotInObject;
        let targets = targets(&costs, &live, Some(&trace), Some(&control));
        Report {
            machine: Machine {
                kernel: "6.18".into(),
                cpus: 2,
                cpu_model: "test".into(),
                command: "cargo xtask bench".into(),
            },
            program: ProgramInfo {
                verified_instructions: Some(1000),
                translated_bytes: Some(4000),
                jited_bytes: 3000,
            },
            program_cost: costs,
            trace: Some(trace),
            live,
            scaling: Vec::new(),
            control: Some(control),
            follow: None,
            targets,
        }
    }

    fn target<'a>(r: &'a Report, what: &str) -> &'a Target {
        r.targets
            .iter()
            .find(|t| t.what.contains(what))
            .unwrap_or_else(|| panic!("no target {what}"))
    }

    #[test]
    fn targets_are_judged_against_the_goals() {
        // 60 ns above a 50 ns floor: over 25 ns, and 1/2.5 of nftables' 150.
        let r = report(110.0, 95.0, 0.0);
        let drop4 = target(&r, "live path IPv4: msfilter, EXCLUDE-listed source");
        assert_eq!(drop4.met, Some(false));
        assert_eq!(drop4.measured, "1 pair: +60 ns; 1000 pairs: +60 ns");
        let ratios: Vec<&Target> = r
            .targets
            .iter()
            .filter(|t| t.what.contains("msfilter vs"))
            .collect();
        // Two profiles, two families, two alternatives.
        assert_eq!(ratios.len(), 8);
        assert!(ratios.iter().all(|t| t.met == Some(false)));
        let v6_socket = target(
            &r,
            "live path IPv6, namespace without netfilter rules: msfilter vs the socket filter",
        );
        assert!(
            v6_socket
                .measured
                .contains("1000 pairs: not allowed by the kernel"),
            "{}",
            v6_socket.measured
        );
        assert!(!target(&r, "drop path, IPv4, 1000 pairs").met.unwrap());
        assert!(target(&r, "drop path, IPv4, 1048576 pairs").met.unwrap());
        // Against the bare lookup at 1,000 pairs too: 95 vs 73 ns is 1.30×.
        let bare_1k = target(&r, "drop path, IPv4, 1000 pairs: vs the bare lookup");
        assert_eq!(bare_1k.measured, "95 vs 73 ns: 1.30×");
        assert_eq!(bare_1k.met, Some(false));
        // 10 ns above the floor: within 25 ns and a tenth of 150 and 200; include at +12.
        let r = report(60.0, 70.0, 0.0);
        assert!(
            r.targets
                .iter()
                .filter(|t| t.what.starts_with("live path"))
                .all(|t| t.met == Some(true))
        );
        assert_eq!(
            target(&r, "live path IPv6: msfilter, INCLUDE-unlisted source").measured,
            "1 pair: +12 ns; 1000 pairs: +12 ns"
        );
        assert!(target(&r, "drop path, IPv4, 1000 pairs").met.unwrap());
        assert!(
            target(&r, "drop path, IPv4, 1000 pairs: vs the bare lookup")
                .met
                .unwrap()
        );
    }

    #[test]
    fn the_trace_row_says_when_the_global_is_absent_and_judges_it_when_present() {
        let absent = trace_targets(Some(&TraceCost::NotInObject));
        assert_eq!(absent.len(), 1);
        assert_eq!(absent[0].met, None);
        assert!(absent[0].measured.contains("not in this object"));
        let row = |shape, loaded: f64, off: f64| TraceRow {
            shape,
            as_loaded_ns: loaded,
            off_ns: off,
            rounds_as_loaded: vec![loaded],
            rounds_off: vec![off],
        };
        let measured = trace_targets(Some(&TraceCost::Measured(vec![
            row(Shape::Ipv4, 40.5, 40.0),
            row(Shape::Ipv6, 43.0, 41.0),
        ])));
        assert_eq!(measured.len(), 2);
        assert_eq!(measured[0].met, Some(true));
        assert_eq!(measured[0].measured, "40.5 vs 40.0 ns: +0.5 ns");
        assert_eq!(measured[1].met, Some(false), "2 ns is over 1 ns");
        assert!(trace_targets(None).is_empty());
        let text = markdown(&report(60.0, 70.0, 0.0));
        assert!(text.contains("not in this object"), "{text}");
    }

    #[test]
    fn the_breakdown_is_computed_from_the_run() {
        let r = report(110.0, 95.0, 0.0);
        let lines = breakdown(&r);
        let v4 = lines.iter().find(|l| l.starts_with("IPv4:")).unwrap();
        // 110 − 50 = 60 above the floor, 35 over the target; perf stat ×10 and ×3.
        assert!(v4.contains("60 ns above the floor's 50 ns"), "{v4}");
        assert!(v4.contains("35 ns over the 25 ns target"), "{v4}");
        assert!(v4.contains("+600 instructions and +180 cycles"), "{v4}");
        // The bare lookup: 15 ns, 25% of 60.
        assert!(v4.contains("costs 15 ns above the floor"), "{v4}");
        assert!(
            v4.contains("does that one lookup, 25% of its 60 ns"),
            "{v4}"
        );
        assert!(!v4.contains("no program that looks this key up"), "{v4}");
        // msfilter measured below the bare lookup: said as such, with both spreads.
        let low = report(60.0, 95.0, 0.0);
        let low = breakdown(&low);
        let low4 = low.iter().find(|l| l.starts_with("IPv4:")).unwrap();
        assert!(
            low4.contains("measured 5 ns less in this run: its rounds spread over"),
            "{low4}"
        );
        // perf record: 27.5 + 13.7 of 60 ns is 69%.
        assert!(
            v4.contains(
                "27.5 ns per frame in the kernel's hash-table code (9.5 ns of it hashing the \
                 keys, htab_map_hash) and 13.7 ns"
            ),
            "{v4}"
        );
        assert!(
            v4.contains("together 69% of its 60 ns above the floor"),
            "{v4}"
        );
        // The bare lookup's recording: 13.7 − 5.2 and 27.5 − 20.0.
        assert!(
            v4.contains("5.2 ns per frame in its own program")
                && v4.contains(
                    "msfilter's program itself takes +8.5 ns over that, its \
                     hash-table code +7.5 ns"
                ),
            "{v4}"
        );
        // Busy 105 against the floor's 50: +55, of which 55 − 41.2 = 14 elsewhere.
        assert!(
            v4.contains("busy 105 ns per frame with msfilter and 50 ns with the floor, +55 ns, of which 14 ns lie outside"),
            "{v4}"
        );
        assert!(v4.contains("__htab_map_lookup_elem 27.5 ns."), "{v4}");
        let v6 = lines.iter().find(|l| l.starts_with("IPv6:")).unwrap();
        assert!(!v6.contains("perf record"), "no IPv6 profile: {v6}");
        assert!(!v6.contains("counted no instructions"), "{v6}");
        // Without counts, perf's own words are quoted instead.
        let mut r = report(110.0, 95.0, 0.0);
        for row in &mut r.live.rows {
            row.instructions = None;
            row.cycles = None;
        }
        r.live.perf_stat = Some("<not supported>,,instructions,0,100.00,,".into());
        let v4 = breakdown(&r).into_iter().next().unwrap();
        assert!(!v4.contains("perf stat on the measuring CPU"), "{v4}");
        assert!(
            v4.contains("perf stat counted no instructions or cycles on this machine (perf: \"<not supported>"),
            "{v4}"
        );
        let widths = lines.iter().find(|l| l.starts_with("Key width")).unwrap();
        // IPv4 floor 4: 16 (4 bytes), 26 (12), 31 (20) above it; IPv6 floor 5: 45 (36).
        assert!(
            widths.contains(
                "16.0 ns above the floor with a 4-byte key, 26.0 ns with msfilter's 12-byte \
                 IPv4 source key, 31.0 ns with a 20-byte key"
            ),
            "{widths}"
        );
        assert!(
            widths.contains("45.0 ns with the 36-byte IPv6 pair key"),
            "{widths}"
        );
        assert!(
            widths.contains("adds 10.0 ns (12 bytes), 15.0 ns (20 bytes) and 29.0 ns (36 bytes)"),
            "{widths}"
        );
        // Within the target the sentence says so, with the new figure.
        let r = report(60.0, 70.0, 0.0);
        let v4 = breakdown(&r).into_iter().next().unwrap();
        assert!(v4.contains("10 ns above the floor's 50 ns: within the 25 ns target"));
        // No fixed explanations are left anywhere in the report.
        let text = markdown(&report(110.0, 95.0, 0.0));
        for fixed in [
            "IPv4 drops at route input",
            "builds an skb",
            "out of cache after",
        ] {
            assert!(!text.contains(fixed), "{fixed}");
        }
    }

    #[test]
    fn missed_ratios_name_the_figures() {
        let r = report(110.0, 95.0, 0.0);
        let lines = missed_ratios(&r);
        // 150 ns for nftables: a tenth is 15, msfilter's 60 is 45 over it.
        assert!(
            lines.iter().any(|l| l.contains(
                "nftables costs 150 ns above the floor, a tenth of that is 15 ns; msfilter \
                 costs 60 ns, 45 ns more"
            )),
            "{lines:?}"
        );
        assert!(missed_ratios(&report(60.0, 70.0, 0.0)).is_empty());
    }

    #[test]
    fn conntrack_changes_are_told_against_the_spread() {
        // The rounds spread by 2 ns: +1 ns is within it, +40 ns is not.
        let small = conntrack_effect(&report(110.0, 95.0, 1.0).live.rows);
        let line = small
            .iter()
            .find(|l| l.starts_with("IPv4, XDP_PASS + nftables"))
            .unwrap();
        assert!(
            line.contains("1 pair +1 ns (within the rounds' spread of 2 ns)"),
            "{line}"
        );
        let big = conntrack_effect(&report(110.0, 95.0, 40.0).live.rows);
        let line = big
            .iter()
            .find(|l| l.starts_with("IPv4, XDP_PASS + socket"))
            .unwrap();
        assert!(line.contains("1 pair +40 ns,"), "{line}");
        assert!(!line.contains("within"), "{line}");
        let msf = big
            .iter()
            .find(|l| l.starts_with("IPv4, msfilter"))
            .unwrap();
        assert!(msf.contains("+0 ns (within"), "{msf}");
    }

    fn scale_row(variant: scaling::Variant, cpus: usize, total: f64, spread: f64) -> ScaleRow {
        ScaleRow {
            variant,
            cpus,
            total_mpps: total,
            per_core_mpps: total / cpus as f64,
            rounds: vec![total - spread / 2.0, total, total + spread / 2.0],
        }
    }

    #[test]
    fn contention_is_judged_from_shared_against_distinct() {
        let rows = |shared: f64| {
            vec![
                scale_row(scaling::Variant::Floor, 1, 10.0, 0.2),
                scale_row(scaling::Variant::Floor, 2, 19.0, 0.2),
                scale_row(scaling::Variant::MsfilterDistinct, 1, 6.0, 0.1),
                scale_row(scaling::Variant::MsfilterDistinct, 2, 12.0, 0.24),
                scale_row(scaling::Variant::MsfilterShared, 2, shared, 0.24),
            ]
        };
        // 11.9 against 12 Mpps: −1%, within a 2% spread.
        let lines = scaling_findings(&rows(11.9));
        assert!(lines[0].contains("XDP_DROP floor 1.90×"), "{}", lines[0]);
        assert!(
            lines[1].contains("5.95 Mpps per core, against 6.00"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("measures no contention on the shared source counters"));
        // 9 against 12: −25%, beyond the spread.
        let lines = scaling_findings(&rows(9.0));
        assert!(lines[1].contains("(-25%)"), "{}", lines[1]);
        assert!(lines[1].contains("are measured as a point of contention"));
        assert!(scaling_findings(&[]).is_empty());
    }

    #[test]
    fn the_markdown_has_every_section_and_ratio() {
        let text = markdown(&report(110.0, 95.0, 0.0));
        assert!(text.contains("### Live path, namespace without netfilter rules"));
        assert!(text.contains("### Live path, connection tracking loaded"));
        assert!(text.contains("| msfilter, EXCLUDE-listed source | 1000 pairs | 110 | +60 "));
        assert!(
            text.contains(
                "| XDP_PASS + socket join + block | 1000 pairs | 250 | +200 | not allowed | – |"
            ),
            "{text}"
        );
        // 150/60 = 2.5, 200/60 = 3.3.
        assert!(
            text.contains("| 1 pair | 1/2.5 | 1/3.3 | 1/2.5 | 1/3.3 |"),
            "{text}"
        );
        assert!(text.contains("Not allowed: XDP_PASS + socket join + block over IPv6"));
        assert!(text.contains("net.ipv4.igmp_max_msf 10 → 1000"));
        assert!(text.contains("### Where msfilter's cost goes"));
        assert!(text.contains("| one cached key | 1000 pairs | 1048576 pairs |"));
        assert!(text.contains("4000 bytes translated"));
    }

    #[test]
    fn the_plot_has_one_line_per_variant_and_skips_cached_rows() {
        let svg = svg(&report(110.0, 95.0, 0.0).program_cost);
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("1048576"));
        assert!(svg.contains("text-anchor=\"middle\">1000<"));
        assert!(
            !svg.contains("text-anchor=\"middle\">0<"),
            "no point at 0 pairs on a log scale"
        );
    }
}
