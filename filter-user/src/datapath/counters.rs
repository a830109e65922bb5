//! Counter reads, summed over CPUs.

use msfilter_common::{Addr, Counter, GroupKey, Mode, Reason, SourceKey, limits::REASONS_MAP};

use super::{Datapath, DatapathError, Result, sys};

/// Frames by reason, summed over CPUs (index = `Reason as usize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReasonCounters(pub [Counter; Reason::COUNT]);

impl ReasonCounters {
    pub const fn get(&self, reason: Reason) -> Counter {
        self.0[reason as usize]
    }

    /// Frames counted in `self` but not in `earlier`.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let mut out = Self::default();
        for (i, c) in out.0.iter_mut().enumerate() {
            c.packets = self.0[i].packets.wrapping_sub(earlier.0[i].packets);
            c.bytes = self.0[i].bytes.wrapping_sub(earlier.0[i].bytes);
        }
        out
    }

    /// All frames, and the dropped ones.
    pub fn totals(&self) -> (Counter, Counter) {
        let mut all = Counter::ZERO;
        let mut dropped = Counter::ZERO;
        for reason in Reason::ALL {
            let c = self.get(reason);
            all = all.plus(c);
            if reason.verdict() == msfilter_common::Verdict::Drop {
                dropped = dropped.plus(c);
            }
        }
        (all, dropped)
    }
}

/// A group's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCounters {
    pub passed: Counter,
    pub dropped: Counter,
}

impl Datapath {
    /// Frames seen by the program, by reason.
    pub fn reason_counters(&self) -> Result<ReasonCounters> {
        let cpus = self.maps.cpus();
        let stride = size_of::<Counter>();
        let mut buf = vec![0u8; stride * cpus];
        let mut out = ReasonCounters::default();
        for reason in Reason::ALL {
            let index = reason as u32;
            sys::lookup(self.maps.reasons_fd(), &index.to_ne_bytes(), &mut buf).map_err(
                |source| DatapathError::Map {
                    map: REASONS_MAP,
                    op: "lookup",
                    source,
                },
            )?;
            out.0[reason as usize] = buf
                .chunks_exact(stride)
                .map(bytemuck::pod_read_unaligned::<Counter>)
                .fold(Counter::ZERO, Counter::plus);
        }
        Ok(out)
    }

    /// Passed and dropped frames of a managed group, or `None` if it is not managed: those
    /// of unlisted sources (the group's per-CPU values), those its listed sources' pair
    /// entries counted, and those of pair entries since retired.
    pub fn group_counters(&self, ifindex: u32, group: Addr) -> Result<Option<GroupCounters>> {
        let key = GroupKey::new(ifindex, group);
        let Some(values) = self.maps.group_values(&key)? else {
            return Ok(None);
        };
        let retired = self.maps.retired(&key)?;
        let mut out = values.iter().fold(
            GroupCounters {
                passed: retired.passed,
                dropped: retired.dropped,
            },
            |acc, v| GroupCounters {
                passed: acc.passed.plus(v.passed),
                dropped: acc.dropped.plus(v.dropped),
            },
        );
        if let Some(installed) = self.maps.installed().get(&key) {
            for source in &installed.sources {
                // The mirror lists the source: read its pair entry without asking again.
                let pair = SourceKey::new(ifindex, group, *source);
                let Some(counted) = self.maps.source_counter(&pair)? else {
                    continue;
                };
                match installed.state.mode() {
                    Mode::Exclude => out.dropped = out.dropped.plus(counted),
                    Mode::Include => out.passed = out.passed.plus(counted),
                }
            }
        }
        Ok(Some(out))
    }
}
