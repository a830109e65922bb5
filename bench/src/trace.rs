//! What the trace capability costs when it is off: msfilter's drop path as the product
//! loads it (`Datapath::load`) against the same object loaded with the read-only global
//! `MSF_TRACE_CAPABLE` set to 0, with which the verifier removes the trace path. Both
//! programs share the same maps (pinned in a directory of the benchmark's own) and run the
//! same cached frame through BPF_PROG_TEST_RUN, interleaved round after round.
//!
//! An object without the global cannot be loaded with it (`must_exist`): that is reported as
//! "not in this object", not as a number.

use std::path::PathBuf;

use anyhow::{Context as _, Result, ensure};
use aya::{
    EbpfLoader,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use msfilter::{
    datapath::{Capacities, Datapath, LoadOptions, OBJECT},
    policy::GroupFilter,
};
use msfilter_common::{
    GroupKey, Mode,
    limits::{GROUPS_MAP, GROUPS4_MAP, PROGRAM_NAME, REASONS_MAP, SOURCES_MAP, SOURCES4_MAP},
    trace::{TRACE_CONTROL_MAP, TRACE_EVENTS_MAP},
};
use serde::Serialize;

use crate::{
    frames::{Shape, udp},
    program_cost::{group, source},
};

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The load-time global that compiles the trace path in (1) or out (0).
pub const GLOBAL: &str = msfilter_common::trace::TRACE_CAPABLE_GLOBAL;

#[derive(Clone, Debug, Serialize)]
pub struct TraceRow {
    pub shape: Shape,
    /// ns per run, mean over rounds, of the program as the product loads it (the kernel
    /// reports whole ns per run; the mean of interleaved rounds resolves below that).
    pub as_loaded_ns: f64,
    /// The same with the global set to 0.
    pub off_ns: f64,
    pub rounds_as_loaded: Vec<f64>,
    pub rounds_off: Vec<f64>,
}

impl TraceRow {
    /// What the capability costs when off: as loaded minus compiled out.
    pub fn difference(&self) -> f64 {
        self.as_loaded_ns - self.off_ns
    }
}

#[derive(Clone, Debug, Serialize)]
pub enum TraceCost {
    /// The object has no such global (the loader refused to set it).
    NotInObject,
    Measured(Vec<TraceRow>),
}

/// Whether a load error says the object lacks the global `global`.
pub fn is_missing_global(e: &aya::EbpfError, global: &str) -> bool {
    matches!(
        e,
        aya::EbpfError::ParseError(aya_obj::ParseError::SymbolNotFound { name }) if name == global
    )
}

/// A pin directory that is removed again, also on an early return.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(rounds: usize) -> Result<TraceCost> {
    compare(GLOBAL, true, rounds)
}

/// The comparison, with the global named `global`; `must_exist` false measures even when the
/// object lacks it (two equal programs: what the tests use to check the mechanics).
fn compare(global: &str, must_exist: bool, rounds: usize) -> Result<TraceCost> {
    const REPEAT: u32 = 200_000;
    const PAIRS: u32 = 1_000;
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/msfbench-trace-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )));
    let capacities = Capacities {
        max_groups: 4,
        max_sources: 2 * PAIRS,
    };
    let mut dp = Datapath::load(&LoadOptions {
        capacities,
        pin_dir: Some(pins.0.clone()),
    })?;
    let families = [Shape::Ipv4, Shape::Ipv6];
    dp.set_filters(families.iter().map(|&family| {
        (
            GroupKey::new(1, group(family, 0)),
            Some(GroupFilter::new(
                Mode::Exclude,
                (0..PAIRS).map(|s| source(family, s, true)),
            )),
        )
    }))?;
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(GROUPS_MAP, capacities.max_groups)
        .map_max_entries(SOURCES_MAP, capacities.max_sources)
        .map_max_entries(GROUPS4_MAP, capacities.max_groups)
        .map_max_entries(SOURCES4_MAP, capacities.max_sources)
        // `override_global` is aya 0.14's name for `set_global`; must_exist = true.
        .override_global(global, &0u8, must_exist);
    // Every map the datapath pins, the trace switch included: both programs see the same.
    for map in [
        GROUPS_MAP,
        SOURCES_MAP,
        GROUPS4_MAP,
        SOURCES4_MAP,
        REASONS_MAP,
        TRACE_CONTROL_MAP,
        TRACE_EVENTS_MAP,
    ] {
        loader.map_pin_path(map, pins.0.join(map));
    }
    let mut off = match loader.load(OBJECT) {
        Err(e) if is_missing_global(&e, global) => {
            dp.shutdown(false);
            return Ok(TraceCost::NotInObject);
        }
        r => r.context("loading msfilter's object with the trace path compiled out")?,
    };
    let program: &mut Xdp = off
        .program_mut(PROGRAM_NAME)
        .and_then(|p| p.try_into().ok())
        .context("no XDP program in msfilter's object")?;
    program
        .load()
        .context("loading the program without trace")?;
    let program: &Xdp = program;
    let mut rows = Vec::new();
    for family in families {
        let frame = udp(family, &group(family, 0), &source(family, PAIRS / 2, true));
        let mut loaded = Vec::new();
        let mut without = Vec::new();
        for _ in 0..rounds {
            let (action, t) = dp.test_run_repeat(&frame, None, REPEAT)?;
            ensure!(action == 1, "msfilter as loaded did not drop");
            loaded.push(t.as_nanos() as f64);
            let r = program.test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: REPEAT,
                ..TestRunOptions::default()
            })?;
            ensure!(r.return_value == 1, "msfilter without trace did not drop");
            without.push(r.duration.as_nanos() as f64);
        }
        rows.push(TraceRow {
            shape: family,
            as_loaded_ns: mean(&loaded),
            off_ns: mean(&without),
            rounds_as_loaded: loaded,
            rounds_off: without,
        });
    }
    drop(off);
    dp.shutdown(false);
    Ok(TraceCost::Measured(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_SUCH: &str = "MSF_BENCH_NO_SUCH_GLOBAL";

    /// The loader's refusal of a missing global is recognised by name, and only by name.
    #[test]
    fn a_missing_global_is_told_apart() {
        let err = EbpfLoader::new()
            .override_global(NO_SUCH, &0u8, true)
            .load(OBJECT)
            .expect_err("the object has no such global");
        assert!(is_missing_global(&err, NO_SUCH), "{err}");
        assert!(!is_missing_global(&err, GLOBAL));
        let TraceCost::NotInObject = compare(NO_SUCH, true, 1).unwrap() else {
            panic!("a missing global must give NotInObject");
        };
    }

    /// (Needs root.) This build's object has the global: the row is a measurement, and the
    /// program without the trace path still drops what the filters list.
    #[test]
    fn this_object_is_measured() {
        let TraceCost::Measured(rows) = run(1).unwrap() else {
            panic!("{GLOBAL} is in filter-ebpf's object");
        };
        assert_eq!(
            rows.iter().map(|r| r.shape).collect::<Vec<_>>(),
            [Shape::Ipv4, Shape::Ipv6]
        );
    }

    /// (Needs root, as the benchmark does.) The second program shares the first one's maps:
    /// `compare` fails unless both drop the listed source, which only the filters written
    /// through the first one's datapath list; and both families are measured.
    #[test]
    fn both_programs_run_on_the_same_maps() {
        let TraceCost::Measured(rows) = compare(NO_SUCH, false, 2).unwrap() else {
            panic!("without must_exist the comparison runs");
        };
        assert_eq!(rows.len(), 2);
        for r in &rows {
            assert_eq!(r.rounds_as_loaded.len(), 2);
            assert!(r.as_loaded_ns > 0.0 && r.off_ns > 0.0, "{r:?}");
        }
    }
}
