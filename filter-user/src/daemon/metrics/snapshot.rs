//! What one scrape reports, taken by the controller thread in one step: the counters the
//! datapath holds (by reason, per group, per listed source), how full the maps are, the
//! clients, and the request counts. No request is applied while it is taken, so the
//! per-group counters belong to the groups the maps hold at that moment, and `msfilter
//! stats` and `msfilter list` asked just before or after a quiet moment show the same
//! numbers.
//!
//! Per-group and per-source series are capped ([`Capped`]): the first `max_series` in the
//! maps' order (interface index, then group, then source) get series of their own, the
//! rest are summed per interface, so the number of series stays bounded however many
//! groups and sources the maps hold.

use std::{collections::BTreeMap, net::IpAddr};

use msfilter_common::{Counter, Reason};

use super::requests::RequestCounts;
use crate::{
    daemon::controller::Controller,
    datapath::{AttachMode, DatapathError, GroupCounters},
    iface,
    sockopt::ip_of,
};

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

impl Controller {
    /// The values of one scrape, with at most `max_series` groups and `max_series` sources
    /// reported one by one.
    pub(in crate::daemon) fn metrics(
        &self,
        max_series: usize,
        requests: RequestCounts,
    ) -> Result<Snapshot, DatapathError> {
        let counters = self.datapath.reason_counters()?;
        let mut names: BTreeMap<u32, String> = BTreeMap::new();
        let mut groups = Capped::new(max_series);
        let mut sources = Capped::new(max_series);
        for (key, installed) in self.datapath.installed() {
            let iface = names
                .entry(key.ifindex)
                .or_insert_with(|| iface::label(key.ifindex));
            let group = ip_of(&key.group);
            let counts = self
                .datapath
                .group_counters(key.ifindex, key.group)?
                .unwrap_or_default();
            groups.push(
                iface,
                || GroupLabels {
                    iface: iface.clone(),
                    group,
                },
                counts,
            );
            for source in &installed.sources {
                let matched = self
                    .datapath
                    .source_counter(key.ifindex, key.group, *source)?
                    .unwrap_or_default();
                sources.push(
                    iface,
                    || SourceLabels {
                        iface: iface.clone(),
                        group,
                        source: ip_of(source),
                    },
                    matched,
                );
            }
        }
        let (g, s, r) = self.datapath.map_memory()?;
        let capacities = self.datapath.capacities();
        Ok(Snapshot {
            reasons: Reason::ALL.iter().map(|r| (*r, counters.get(*r))).collect(),
            groups,
            sources,
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
        })
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
