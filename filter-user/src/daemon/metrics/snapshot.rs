//! What one scrape reports, taken by the controller thread: the counters the datapath holds
//! (by reason, per group, per listed source), how full the maps are, the clients, and the
//! request counts.
//!
//! A scrape starts ([`Controller::start_metrics`]) by reading, at one moment between two
//! requests, everything but the per-group and per-source counters, and the list of groups
//! and sources the maps hold then: that list is the scrape's set of series. Their counters
//! are then read in steps of at most [`STEP`] lookups ([`Taking::step`]); between two
//! steps the controller thread serves the requests that arrived meanwhile, so a scrape of a
//! million sources never holds a request for more than one step. When no request arrives,
//! the whole scrape is one step after another with nothing in between: `msfilter stats`
//! and `msfilter list` asked at a quiet moment show the same numbers. A group a request
//! removed meanwhile reads as zero; one it added shows from the next scrape.
//!
//! Per-group and per-source series are capped ([`Capped`]): the first `max_series` in the
//! maps' order (interface index, then group, then source) get series of their own, the
//! rest are summed per interface, so the number of series stays bounded however many
//! groups and sources the maps hold.

use std::{collections::BTreeMap, net::IpAddr};

use msfilter_common::{Addr, Counter, GroupKey, Reason};

use super::requests::RequestCounts;
use crate::{
    daemon::controller::Controller,
    datapath::{AttachMode, Datapath, DatapathError, GroupCounters},
    iface,
    sockopt::ip_of,
};

/// Counter lookups per step of a scrape (each a system call of a microsecond or two): the
/// longest a request waits for a scrape.
pub(in crate::daemon) const STEP: usize = 4096;

/// One scrape's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::daemon) struct Snapshot {
    /// Frames by reason, every reason present.
    pub(in crate::daemon) reasons: Vec<(Reason, Counter)>,
    pub(in crate::daemon) groups: Capped<GroupLabels, GroupCounters>,
    /// Frames matching each listed source.
    pub(in crate::daemon) sources: Capped<SourceLabels, Counter>,
    pub(in crate::daemon) maps: MapFill,
    pub(in crate::daemon) clients: usize,
    pub(in crate::daemon) attachments: Vec<(String, AttachMode)>,
    /// Persisted memberships the kernel did not confirm at start-up.
    pub(in crate::daemon) unrestored: usize,
    pub(in crate::daemon) requests: RequestCounts,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::daemon) struct GroupLabels {
    pub(in crate::daemon) iface: String,
    pub(in crate::daemon) group: IpAddr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::daemon) struct SourceLabels {
    pub(in crate::daemon) iface: String,
    pub(in crate::daemon) group: IpAddr,
    pub(in crate::daemon) source: IpAddr,
}

/// Entries in use and capacity of the two filter maps, and their kernel memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::daemon) struct MapFill {
    pub(in crate::daemon) groups: usize,
    pub(in crate::daemon) group_capacity: u32,
    pub(in crate::daemon) sources: usize,
    pub(in crate::daemon) source_capacity: u32,
    pub(in crate::daemon) memory: u64,
}

/// Values that are summed when their series are folded.
pub(in crate::daemon) trait Summed: Copy + Default {
    fn accumulate(&mut self, other: Self);
}

impl Summed for Counter {
    fn accumulate(&mut self, other: Self) {
        *self = self.plus(other);
    }
}

impl Summed for GroupCounters {
    fn accumulate(&mut self, other: Self) {
        self.passed.accumulate(other.passed);
        self.dropped.accumulate(other.dropped);
    }
}

/// Series of one kind: at most `cap` of their own, in the order they were pushed; past that,
/// one sum per interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::daemon) struct Capped<L, V> {
    cap: usize,
    pub(in crate::daemon) own: Vec<(L, V)>,
    /// The folded series' sums, by interface name.
    pub(in crate::daemon) other: BTreeMap<String, V>,
    /// How many series were folded.
    pub(in crate::daemon) folded: usize,
}

impl<L, V: Summed> Capped<L, V> {
    pub(in crate::daemon) const fn new(cap: usize) -> Self {
        Self {
            cap,
            own: Vec::new(),
            other: BTreeMap::new(),
            folded: 0,
        }
    }

    /// Add one series of interface `iface`; its labels are made only if it keeps them.
    pub(in crate::daemon) fn push(&mut self, iface: &str, labels: impl FnOnce() -> L, value: V) {
        if self.own.len() < self.cap {
            self.own.push((labels(), value));
            return;
        }
        match self.other.get_mut(iface) {
            Some(sum) => sum.accumulate(value),
            None => {
                self.other.insert(iface.to_string(), value);
            }
        }
        self.folded += 1;
    }
}

/// Where a scrape reads the per-group and per-source counters.
pub(in crate::daemon) trait Counters {
    fn group(&self, key: &GroupKey) -> Result<GroupCounters, DatapathError>;
    fn source(&self, key: &GroupKey, source: &Addr) -> Result<Counter, DatapathError>;
}

/// The maps as they are (an entry removed since the scrape started reads as zero).
impl Counters for Datapath {
    fn group(&self, key: &GroupKey) -> Result<GroupCounters, DatapathError> {
        Ok(self
            .group_counters(key.ifindex, key.group)?
            .unwrap_or_default())
    }

    fn source(&self, key: &GroupKey, source: &Addr) -> Result<Counter, DatapathError> {
        Ok(self
            .source_counter(key.ifindex, key.group, *source)?
            .unwrap_or_default())
    }
}

/// A scrape being taken: what was read when it started, and the counters still to read.
pub(in crate::daemon) struct Taking {
    snapshot: Snapshot,
    /// Every group with its sources, as the maps held them at the start, in their order.
    keys: Vec<(GroupKey, Vec<Addr>)>,
    /// The next group, and the next of its sources (`None`: the group's own counters).
    next: (usize, Option<usize>),
    names: BTreeMap<u32, String>,
}

impl Taking {
    /// Read at most `budget` counters; whether all are read now.
    pub(in crate::daemon) fn step(
        &mut self,
        counters: &impl Counters,
        budget: usize,
    ) -> Result<bool, DatapathError> {
        let mut read = 0;
        while read < budget {
            let Some((key, sources)) = self.keys.get(self.next.0) else {
                return Ok(true);
            };
            let iface = self
                .names
                .entry(key.ifindex)
                .or_insert_with(|| iface::label(key.ifindex));
            let group = ip_of(&key.group);
            match self.next.1 {
                None => {
                    let labels = || GroupLabels {
                        iface: iface.clone(),
                        group,
                    };
                    self.snapshot
                        .groups
                        .push(iface, labels, counters.group(key)?);
                    self.next.1 = Some(0);
                }
                Some(i) => {
                    let Some(source) = sources.get(i) else {
                        self.next = (self.next.0 + 1, None);
                        continue;
                    };
                    let labels = || SourceLabels {
                        iface: iface.clone(),
                        group,
                        source: ip_of(source),
                    };
                    self.snapshot
                        .sources
                        .push(iface, labels, counters.source(key, source)?);
                    self.next.1 = Some(i + 1);
                }
            }
            read += 1;
        }
        Ok(self.next.0 >= self.keys.len())
    }

    /// The snapshot, once [`Taking::step`] said every counter is read.
    pub(in crate::daemon) fn finish(self) -> Snapshot {
        self.snapshot
    }
}

impl Controller {
    /// Start a scrape with at most `max_series` groups and `max_series` sources reported one
    /// by one: everything but the per-group and per-source counters is read now.
    pub(in crate::daemon) fn start_metrics(
        &self,
        max_series: usize,
        requests: RequestCounts,
    ) -> Result<Taking, DatapathError> {
        let counters = self.datapath.reason_counters()?;
        let (g, s, r) = self.datapath.map_memory()?;
        let capacities = self.datapath.capacities();
        let snapshot = Snapshot {
            reasons: Reason::ALL.iter().map(|r| (*r, counters.get(*r))).collect(),
            groups: Capped::new(max_series),
            sources: Capped::new(max_series),
            maps: MapFill {
                groups: self.datapath.installed().len(),
                group_capacity: capacities.max_groups,
                sources: self.datapath.source_entries(),
                source_capacity: capacities.max_sources,
                memory: g + s + r,
            },
            clients: self.clients.len(),
            attachments: self
                .datapath
                .attachments()
                .map(|a| (a.iface.clone(), a.mode))
                .collect(),
            unrestored: self.unrestored.len(),
            requests,
        };
        Ok(Taking {
            snapshot,
            keys: self
                .datapath
                .installed()
                .iter()
                .map(|(key, installed)| (*key, installed.sources.iter().copied().collect()))
                .collect(),
            next: (0, None),
            names: BTreeMap::new(),
        })
    }

    /// The datapath, where a scrape reads its counters.
    pub(in crate::daemon) const fn counters(&self) -> &Datapath {
        &self.datapath
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(packets: u64) -> Counter {
        Counter {
            packets,
            bytes: packets * 100,
        }
    }

    #[test]
    fn series_past_the_cap_are_summed_per_interface() {
        let mut capped: Capped<u32, Counter> = Capped::new(2);
        for (i, iface) in ["a", "a", "a", "b", "a"].iter().enumerate() {
            let i = i as u32;
            capped.push(iface, || i, counter(u64::from(i) + 1));
        }
        assert_eq!(capped.own, [(0, counter(1)), (1, counter(2))]);
        assert_eq!(
            capped.other,
            BTreeMap::from([
                ("a".to_string(), counter(3 + 5)),
                ("b".to_string(), counter(4))
            ])
        );
        assert_eq!(capped.folded, 3);
    }

    /// Counters made up from the keys.
    struct Table;

    impl Counters for Table {
        fn group(&self, key: &GroupKey) -> Result<GroupCounters, DatapathError> {
            Ok(GroupCounters {
                passed: counter(u64::from(key.group[15])),
                dropped: counter(u64::from(key.ifindex)),
            })
        }

        fn source(&self, key: &GroupKey, source: &Addr) -> Result<Counter, DatapathError> {
            Ok(counter(
                u64::from(key.group[15]) * 1000 + u64::from(source[15]),
            ))
        }
    }

    fn taking(max_series: usize) -> Taking {
        let key =
            |ifindex, g| GroupKey::new(ifindex, msfilter_common::maps::ipv4_mapped([232, 0, 0, g]));
        let sources = |n: u8| {
            (1..=n)
                .map(|s| msfilter_common::maps::ipv4_mapped([10, 0, 0, s]))
                .collect()
        };
        Taking {
            snapshot: Snapshot {
                reasons: vec![],
                groups: Capped::new(max_series),
                sources: Capped::new(max_series),
                maps: MapFill {
                    groups: 4,
                    group_capacity: 8,
                    sources: 6,
                    source_capacity: 8,
                    memory: 0,
                },
                clients: 0,
                attachments: vec![],
                unrestored: 0,
                requests: RequestCounts::default(),
            },
            keys: vec![
                (key(1, 1), sources(3)),
                (key(1, 2), vec![]),
                (key(1, 3), sources(1)),
                (key(1, 4), sources(2)),
            ],
            next: (0, None),
            names: BTreeMap::from([(1, "rx0".to_string())]),
        }
    }

    #[test]
    fn a_scrape_in_steps_reads_what_one_step_reads() {
        let mut whole = taking(2);
        assert!(whole.step(&Table, usize::MAX).unwrap());
        let whole = whole.finish();
        assert_eq!(whole.groups.own.len(), 2);
        assert_eq!(whole.groups.folded, 2);
        assert_eq!(whole.sources.folded, 4);
        assert_eq!(
            whole.sources.other["rx0"].packets,
            1003 + 3001 + 4001 + 4002
        );
        // Four groups and six sources: ten lookups, in steps of one to eleven.
        for budget in 1..=11 {
            let mut stepped = taking(2);
            let mut steps = 1;
            while !stepped.step(&Table, budget).unwrap() {
                steps += 1;
            }
            assert_eq!(stepped.finish(), whole, "steps of {budget}");
            assert!(steps <= 10 / budget + 2, "{steps} steps of {budget}");
        }
    }

    #[test]
    fn a_cap_of_zero_folds_everything_and_labels_are_made_only_when_kept() {
        let mut capped: Capped<String, GroupCounters> = Capped::new(0);
        let both = GroupCounters {
            passed: counter(1),
            dropped: counter(2),
        };
        capped.push("a", || unreachable!("folded series need no labels"), both);
        capped.push("a", || unreachable!("folded series need no labels"), both);
        assert!(capped.own.is_empty());
        assert_eq!(capped.other["a"].passed, counter(2));
        assert_eq!(capped.other["a"].dropped, counter(4));
        assert_eq!(capped.folded, 2);
    }
}
