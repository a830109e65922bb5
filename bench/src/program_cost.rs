//! Program cost through BPF_PROG_TEST_RUN: ns per frame for the XDP_DROP floor, a bare hash
//! lookup with msfilter's key width, and msfilter's drop and pass paths, at several map
//! sizes, each frame carrying a different (group, source) key drawn at random from the
//! installed pairs, so lookups do not all hit one cached bucket.

use anyhow::{Result, bail, ensure};
use msfilter::{
    datapath::{Capacities, Datapath, LoadOptions},
    policy::GroupFilter,
};
use msfilter_common::{Addr, GroupKey, Mode, SourceKey, maps::ipv4_mapped};
use msfilter_testbed::rng::Rng;
use serde::Serialize;

use crate::{
    frames::{Shape, udp},
    median,
    reference::{self, Reference},
};

/// Interface index the test runs arrive on: without a context, the kernel uses loopback.
const LOOPBACK: u32 = 1;

#[derive(Clone, Debug, Serialize)]
pub struct CostRow {
    pub shape: Shape,
    /// Pairs in the maps; 0 marks a run of one frame repeated (one key, in cache): what the
    /// code itself costs.
    pub pairs: u32,
    pub variant: &'static str,
    /// Median over rounds of the mean kernel time per run.
    pub ns: f64,
    pub rounds: Vec<f64>,
}

pub const FLOOR: &str = "XDP_DROP floor";
pub const BARE: &str = "bare hash lookup";
pub const DROP: &str = "msfilter drop path";
pub const PASS: &str = "msfilter pass path";
/// Cached lookups by key width (one frame repeated), IPv4 frames.
pub const KEY4: &str = "lookup, 4-byte key";
pub const KEY20: &str = "lookup, 20-byte key (IPv6 group key)";

pub(crate) fn group(shape: Shape, i: u32) -> Addr {
    let [_, a, b, c] = i.to_be_bytes();
    if shape.is_ipv6() {
        let mut g = [0u8; 16];
        g[0] = 0xff;
        g[1] = 0x3e;
        g[13] = a;
        g[14] = b;
        g[15] = c;
        g
    } else {
        ipv4_mapped([232, a, b, c])
    }
}

/// Source `i` of a group; `listed` ones are in the filter, the others are not.
pub(crate) fn source(shape: Shape, i: u32, listed: bool) -> Addr {
    let [_, a, b, c] = i.to_be_bytes();
    if shape.is_ipv6() {
        let mut s = [0u8; 16];
        s[0] = 0xfd;
        s[1] = if listed { 0 } else { 1 };
        s[13] = a;
        s[14] = b;
        s[15] = c;
        s
    } else {
        ipv4_mapped([if listed { 10 } else { 11 }, a, b, c])
    }
}

/// `pairs` split into groups of this many sources.
const fn per_group(pairs: u32) -> u32 {
    if pairs.is_multiple_of(1024) {
        1024
    } else {
        1000
    }
}

pub struct Settings {
    pub sizes: Vec<u32>,
    pub frames: usize,
    pub rounds: usize,
    pub seed: u64,
}

pub fn run(settings: &Settings) -> Result<Vec<CostRow>> {
    let mut rows = Vec::new();
    for &pairs in &settings.sizes {
        let mut reference = Reference::load(pairs)?;
        let per = per_group(pairs);
        let groups = pairs / per;
        ensure!(
            groups * per == pairs,
            "{pairs} pairs do not split into groups of {per}"
        );
        let mut bare_filled = false;
        for family in [Shape::Ipv4, Shape::Ipv6] {
            let mut dp = Datapath::load(&LoadOptions {
                capacities: Capacities {
                    max_groups: groups + 1,
                    max_sources: pairs,
                },
                pin_dir: None,
            })?;
            dp.set_filters((0..groups).map(|g| {
                let sources = (0..per).map(|s| source(family, s, true));
                (
                    GroupKey::new(LOOPBACK, group(family, g)),
                    Some(GroupFilter::new(Mode::Exclude, sources)),
                )
            }))?;
            if family == Shape::Ipv4 && !bare_filled {
                let keys: Vec<SourceKey> = (0..groups)
                    .flat_map(|g| {
                        (0..per).map(move |s| {
                            SourceKey::new(LOOPBACK, group(family, g), source(family, s, true))
                        })
                    })
                    .collect();
                reference.fill_lookup(&keys)?;
                // The cached runs' frame: group 0, listed source 0.
                reference.fill_group_lookup(&GroupKey::new(LOOPBACK, group(family, 0)))?;
                let [_, _, _, _, _, _, _, _, _, _, _, _, a, b, c, d] = source(family, 0, true);
                reference.fill_u32_lookup(u32::from_be_bytes([a, b, c, d]))?;
                bare_filled = true;
            }
            if family == Shape::Ipv6 {
                // The cached run's key for the 36-byte bare lookup (its map holds no other).
                reference.fill_lookup(&[SourceKey::new(
                    LOOPBACK,
                    group(family, 0),
                    source(family, 0, true),
                )])?;
            }
            let shapes: &[Shape] = if family == Shape::Ipv4 {
                &[Shape::Ipv4, Shape::Ipv4Vlan]
            } else {
                &[Shape::Ipv6]
            };
            for &shape in shapes {
                // Fresh keys for every shape and round: a key looked up before would be in
                // cache and flatter the large tables.
                let mut rng = Rng::new(settings.seed ^ u64::from(pairs) ^ (shape as u64) << 32);
                let mut frames = |listed: bool| -> Vec<Vec<u8>> {
                    (0..settings.frames)
                        .map(|_| {
                            let g = rng.below(u64::from(groups)) as u32;
                            let s = rng.below(u64::from(per)) as u32;
                            udp(shape, &group(family, g), &source(family, s, listed))
                        })
                        .collect()
                };
                let mut floor = Vec::new();
                let mut bare = Vec::new();
                let mut drop = Vec::new();
                let mut pass = Vec::new();
                for _ in 0..settings.rounds {
                    let (drop_frames, pass_frames) = (frames(true), frames(false));
                    floor.push(
                        reference::test_run_each(
                            reference.program(reference::DROP)?,
                            &drop_frames,
                        )?
                        .0,
                    );
                    if shape == Shape::Ipv4 {
                        let (ns, actions) = reference::test_run_each(
                            reference.program(reference::LOOKUP)?,
                            &drop_frames,
                        )?;
                        ensure!(
                            actions.iter().all(|&a| a == 1),
                            "the bare lookup missed a key"
                        );
                        bare.push(ns);
                    }
                    drop.push(msfilter_each(&dp, &drop_frames, 1)?);
                    pass.push(msfilter_each(&dp, &pass_frames, 2)?);
                }
                for (variant, runs) in [(FLOOR, floor), (BARE, bare), (DROP, drop), (PASS, pass)] {
                    if runs.is_empty() {
                        continue;
                    }
                    rows.push(CostRow {
                        shape,
                        pairs,
                        variant,
                        ns: median(&runs),
                        rounds: runs,
                    });
                }
                if pairs == settings.sizes[0] {
                    rows.extend(cached(&reference, &dp, shape, family, settings.rounds)?);
                }
                eprintln!("  program cost: {} at {pairs} pairs measured", shape.name());
            }
        }
    }
    Ok(rows)
}

/// The same frame run many times: its key stays in cache, so this is the code's own cost.
fn cached(
    reference: &Reference,
    dp: &Datapath,
    shape: Shape,
    family: Shape,
    rounds: usize,
) -> Result<Vec<CostRow>> {
    const REPEAT: u32 = 200_000;
    let drop_frame = udp(shape, &group(family, 0), &source(family, 0, true));
    let pass_frame = udp(shape, &group(family, 0), &source(family, 0, false));
    let repeated = |name: &str, frame: &[u8]| -> Result<f64> {
        use aya::programs::{TestRun as _, TestRunOptions};
        let r = reference.program(name)?.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: REPEAT,
            ..TestRunOptions::default()
        })?;
        // Every program here drops this frame (the lookups find their key).
        ensure!(r.return_value == 1, "{name} did not drop the cached frame");
        Ok(r.duration.as_nanos() as f64)
    };
    let mut runs: [Vec<f64>; 6] = Default::default();
    for _ in 0..rounds {
        runs[0].push(repeated(reference::DROP, &drop_frame)?);
        if shape == Shape::Ipv4 {
            runs[1].push(repeated(reference::LOOKUP, &drop_frame)?);
            runs[4].push(repeated(reference::LOOKUP_U32, &drop_frame)?);
            runs[5].push(repeated(reference::LOOKUP_GROUP, &drop_frame)?);
        }
        if shape == Shape::Ipv6 {
            // The 36-byte key, for the key-width comparison.
            runs[1].push(repeated(reference::LOOKUP6, &drop_frame)?);
        }
        runs[2].push(dp.test_run_repeat(&drop_frame, None, REPEAT)?.1.as_nanos() as f64);
        runs[3].push(dp.test_run_repeat(&pass_frame, None, REPEAT)?.1.as_nanos() as f64);
    }
    Ok([FLOOR, BARE, DROP, PASS, KEY4, KEY20]
        .into_iter()
        .zip(runs)
        .filter(|(_, r)| !r.is_empty())
        .map(|(variant, r)| CostRow {
            shape,
            pairs: 0,
            variant,
            ns: median(&r),
            rounds: r,
        })
        .collect())
}

/// Mean ns per run of msfilter over `frames`, checking every action is `expect`.
fn msfilter_each(dp: &Datapath, frames: &[Vec<u8>], expect: u32) -> Result<f64> {
    let mut total = 0u128;
    for frame in frames {
        let (action, duration) = dp.test_run_repeat(frame, None, 1)?;
        if action != expect {
            bail!("msfilter returned {action} where {expect} was expected");
        }
        total += duration.as_nanos();
    }
    Ok(total as f64 / frames.len() as f64)
}
