//! The maps at full size: the kernel's own memory figure against the budget model in
//! `msfilter_common::limits`, and what happens one entry past capacity.

use std::time::Instant;

use msfilter::{
    datapath::{Capacities, Datapath, DatapathError, LoadOptions},
    policy::GroupFilter,
};
use msfilter_common::{
    Addr, GroupKey, Mode,
    limits::{self, DEFAULT_MAX_GROUPS, DEFAULT_MAX_SOURCES, InUse},
    maps::ipv4_mapped,
};

const MIB: f64 = 1024.0 * 1024.0;

/// Number of possible CPUs, which is what the kernel sizes per-CPU maps by.
fn possible_cpus() -> u64 {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    text.trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

fn group(i: u32) -> Addr {
    let [_, b, c, d] = i.to_be_bytes();
    ipv4_mapped([232, b, c, d])
}

fn source(i: u32) -> Addr {
    let [_, b, c, d] = i.to_be_bytes();
    ipv4_mapped([10, b, c, d])
}

#[test]
#[allow(clippy::cast_precision_loss, reason = "MiB figures for people")]
fn full_maps_cost_what_the_budget_says_and_one_more_entry_is_refused() {
    let mut dp = Datapath::load(&LoadOptions::default()).unwrap();
    let cpus = possible_cpus();

    // Empty maps: only buckets.
    let (g0, s0, r0) = dp.map_memory().unwrap();
    let model = limits::map_memory(
        cpus,
        DEFAULT_MAX_GROUPS.into(),
        InUse::ipv4(0),
        DEFAULT_MAX_SOURCES.into(),
        InUse::ipv4(0),
    );
    println!("empty maps: kernel {g0} + {s0} + {r0} bytes, model {model:?}");

    // Fill both maps to capacity: every group with the same number of sources.
    let per_group = DEFAULT_MAX_SOURCES / DEFAULT_MAX_GROUPS;
    let start = Instant::now();
    let filters = (0..DEFAULT_MAX_GROUPS).map(|g| {
        let sources = (0..per_group).map(|s| source(s + 1));
        (
            GroupKey::new(1, group(g)),
            Some(GroupFilter::new(Mode::Exclude, sources)),
        )
    });
    let change = dp.set_filters(filters).unwrap();
    let fill = start.elapsed();
    assert_eq!(change.groups_added, DEFAULT_MAX_GROUPS as usize);
    assert_eq!(change.sources_added, DEFAULT_MAX_SOURCES as usize);
    assert_eq!(dp.source_entries(), DEFAULT_MAX_SOURCES as usize);

    let (g, s, r) = dp.map_memory().unwrap();
    let kernel = g + s + r;
    // The groups here are IPv4: they fill the IPv4 maps; the IPv6 ones stay empty.
    let here = limits::map_memory(
        cpus,
        DEFAULT_MAX_GROUPS.into(),
        InUse::ipv4(DEFAULT_MAX_GROUPS.into()),
        DEFAULT_MAX_SOURCES.into(),
        InUse::ipv4(DEFAULT_MAX_SOURCES.into()),
    );
    println!(
        "full maps ({} groups, {} sources) written in {fill:?}; kernel reports {:.1} MiB \
         (groups {:.1}, sources {:.1}, reasons {:.3}) on {cpus} CPUs; model says {:.1} MiB",
        DEFAULT_MAX_GROUPS,
        DEFAULT_MAX_SOURCES,
        kernel as f64 / MIB,
        g as f64 / MIB,
        s as f64 / MIB,
        r as f64 / MIB,
        here.total() as f64 / MIB,
    );
    for (what, kernel, model) in [
        ("groups", g, here.groups),
        ("sources", s, here.sources),
        ("reasons", r, here.reasons),
    ] {
        let diff = kernel.abs_diff(model) as f64 / model as f64;
        assert!(
            diff < 0.02,
            "{what}: kernel {kernel} bytes, model {model} bytes ({:.1}% apart)",
            diff * 100.0
        );
    }
    let at64 = limits::map_memory(
        64,
        DEFAULT_MAX_GROUPS.into(),
        InUse::ipv6(DEFAULT_MAX_GROUPS.into()),
        DEFAULT_MAX_SOURCES.into(),
        InUse::ipv6(DEFAULT_MAX_SOURCES.into()),
    );
    println!(
        "at full size: 2 CPUs {:.1} MiB, 64 CPUs {:.1} MiB (budget {:.0} MiB)",
        limits::map_memory(
            2,
            DEFAULT_MAX_GROUPS.into(),
            InUse::ipv6(DEFAULT_MAX_GROUPS.into()),
            DEFAULT_MAX_SOURCES.into(),
            InUse::ipv6(DEFAULT_MAX_SOURCES.into())
        )
        .total() as f64
            / MIB,
        at64.total() as f64 / MIB,
        limits::MEMORY_BUDGET_64_CPUS as f64 / MIB
    );
    assert!(at64.total() <= limits::MEMORY_BUDGET_64_CPUS);

    // One source more: refused, nothing changed.
    let before = dp.installed().get(&GroupKey::new(1, group(0))).cloned();
    let mut more = before.clone().unwrap().filter();
    more.sources.insert(source(9999));
    let err = dp.set_filter(1, group(0), Some(more)).unwrap_err();
    assert!(
        matches!(err, DatapathError::Capacity { map, .. } if map == limits::SOURCES_MAP),
        "{err}"
    );
    println!("one source past capacity: {err}");
    assert_eq!(
        dp.installed().get(&GroupKey::new(1, group(0))).cloned(),
        before
    );
    assert_eq!(dp.source_entries(), DEFAULT_MAX_SOURCES as usize);
    assert_eq!(dp.map_memory().unwrap(), (g, s, r));

    // One group more: refused, nothing changed.
    let err = dp
        .set_filter(
            1,
            ipv4_mapped([239, 255, 255, 255]),
            Some(GroupFilter::new(Mode::Include, [])),
        )
        .unwrap_err();
    assert!(
        matches!(err, DatapathError::Capacity { map, .. } if map == limits::GROUPS_MAP),
        "{err}"
    );
    assert_eq!(dp.installed().len(), DEFAULT_MAX_GROUPS as usize);
}

#[test]
fn capacities_are_settable_at_load_time() {
    let caps = Capacities {
        max_groups: 4,
        max_sources: 8,
    };
    let mut dp = Datapath::load(&LoadOptions {
        capacities: caps,
        ..LoadOptions::default()
    })
    .unwrap();
    let eight = GroupFilter::new(Mode::Exclude, (1..=8).map(source));
    dp.set_filter(1, group(1), Some(eight)).unwrap();
    let err = dp
        .set_filter(
            1,
            group(2),
            Some(GroupFilter::new(Mode::Exclude, [source(1)])),
        )
        .unwrap_err();
    assert!(
        matches!(err, DatapathError::Capacity { needed: 1, .. }),
        "{err}"
    );
    // Switching the full group's mode relists a source of both lists in place: no room needed.
    let change = dp
        .set_filter(
            1,
            group(1),
            Some(GroupFilter::new(Mode::Include, [source(1)])),
        )
        .unwrap();
    assert_eq!(
        (
            change.groups_switched,
            change.sources_added,
            change.sources_removed
        ),
        (1, 0, 7)
    );
    assert_eq!(dp.source_entries(), 1);
    // A new source is written before the old ones go, so it needs room next to them.
    let eight = GroupFilter::new(Mode::Exclude, (1..=8).map(source));
    dp.set_filter(1, group(1), Some(eight)).unwrap();
    let err = dp
        .set_filter(
            1,
            group(1),
            Some(GroupFilter::new(Mode::Include, [source(9)])),
        )
        .unwrap_err();
    assert!(
        matches!(err, DatapathError::Capacity { needed: 1, .. }),
        "{err}"
    );
    assert_eq!(dp.source_entries(), 8, "a refused change changes nothing");
    // Capacity zero is refused with a clear error.
    let err = Datapath::load(&LoadOptions {
        capacities: Capacities {
            max_groups: 0,
            max_sources: 8,
        },
        ..LoadOptions::default()
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("max_groups"), "{err}");
}
