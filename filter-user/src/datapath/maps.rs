//! Where the maps are written.
//!
//! [`FilterMaps`] keeps a mirror of every group entry and source list this process wrote
//! (rebuilt from the maps when they were pinned by an earlier run), so a desired filter turns
//! into the difference only. A batch of changes is written in four steps:
//!
//! 1. insert every new source entry (for a group that switches mode, under the group's
//!    *other* generation, where the program does not look yet);
//! 2. write group entries: new groups, and the mode switches (mode and generation change
//!    together in one byte, so the new mode takes effect with its complete new list);
//! 3. delete the entries of groups that are no longer managed;
//! 4. delete source entries that are no longer listed (and the old generation of switched
//!    groups).
//!
//! So the program never sees a group with a half-written list under a new mode: a new
//! group appears with all its sources, a removed group disappears before its sources, and a
//! single added or removed source flips exactly that source. Capacity is checked before
//! step 1, so a change that would not fit changes nothing; a kernel error in steps 1–2 is
//! rolled back.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd as _, BorrowedFd};

use aya::maps::MapData;
use msfilter_common::{
    Addr, Counter, GroupKey, GroupKey4, GroupState, GroupValue, SourceKey, SourceKey4,
    limits::{GROUPS_MAP, GROUPS4_MAP, REASONS_MAP, SOURCES_MAP, SOURCES4_MAP},
};

use super::{
    Capacities, Datapath, DatapathError, GroupFilter, Result,
    sys::{self, BPF_ANY, BPF_EXIST, BPF_NOEXIST},
};

/// Elements per batch syscall.
const BATCH: usize = 65_536;

/// What the maps hold for one group (as written by this process).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub state: GroupState,
    pub sources: BTreeSet<Addr>,
}

impl Installed {
    pub fn filter(&self) -> GroupFilter {
        GroupFilter {
            mode: self.state.mode(),
            sources: self.sources.clone(),
        }
    }
}

/// What a batch of changes did to the maps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterChange {
    pub groups_added: usize,
    pub groups_removed: usize,
    pub groups_switched: usize,
    pub sources_added: usize,
    pub sources_removed: usize,
}

impl FilterChange {
    pub const fn is_empty(&self) -> bool {
        self.groups_added == 0
            && self.groups_removed == 0
            && self.groups_switched == 0
            && self.sources_added == 0
            && self.sources_removed == 0
    }
}

/// The groups and sources maps of one key shape.
pub(super) struct FamilyMaps {
    pub(super) groups: MapData,
    pub(super) sources: MapData,
}

/// A group key as the map of its family stores it.
enum GroupBytes {
    V4(GroupKey4),
    Wide(GroupKey),
}

impl GroupBytes {
    fn of(key: &GroupKey) -> Self {
        GroupKey4::of(key).map_or(Self::Wide(*key), Self::V4)
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::V4(k) => bytemuck::bytes_of(k),
            Self::Wide(k) => bytemuck::bytes_of(k),
        }
    }
}

/// Source keys split by the map that holds them.
#[derive(Default)]
struct SplitSources {
    v4: Vec<SourceKey4>,
    wide: Vec<SourceKey>,
}

impl SplitSources {
    fn of(keys: &[SourceKey]) -> Self {
        let mut out = Self::default();
        for key in keys {
            match SourceKey4::of(key) {
                Some(k) => out.v4.push(k),
                None => out.wide.push(*key),
            }
        }
        out
    }
}

pub(super) struct FilterMaps {
    /// IPv6 groups (20- and 40-byte keys).
    wide: FamilyMaps,
    /// IPv4 groups (8- and 12-byte keys).
    v4: FamilyMaps,
    reasons: MapData,
    installed: BTreeMap<GroupKey, Installed>,
    source_entries: usize,
    capacities: Capacities,
    cpus: usize,
}

fn map_err(map: &'static str, op: &'static str) -> impl FnOnce(std::io::Error) -> DatapathError {
    move |source| DatapathError::Map { map, op, source }
}

/// Bytes of one per-CPU value slot.
const GROUP_STRIDE: usize = size_of::<GroupValue>().next_multiple_of(8);

impl FilterMaps {
    /// Take the maps and read back whatever they already hold (pinned maps of an earlier
    /// run). Source entries of a group's inactive generation are leftovers of an interrupted
    /// mode switch and are deleted.
    pub(super) fn open(
        wide: FamilyMaps,
        v4: FamilyMaps,
        reasons: MapData,
        capacities: Capacities,
    ) -> Result<Self> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| map_err(GROUPS_MAP, "counting possible CPUs")(e))?;
        let mut this = Self {
            wide,
            v4,
            reasons,
            installed: BTreeMap::new(),
            source_entries: 0,
            capacities,
            cpus,
        };
        this.read_back()?;
        Ok(this)
    }

    fn groups_fd(&self) -> BorrowedFd<'_> {
        self.wide.groups.fd().as_fd()
    }

    fn sources_fd(&self) -> BorrowedFd<'_> {
        self.wide.sources.fd().as_fd()
    }

    fn groups4_fd(&self) -> BorrowedFd<'_> {
        self.v4.groups.fd().as_fd()
    }

    fn sources4_fd(&self) -> BorrowedFd<'_> {
        self.v4.sources.fd().as_fd()
    }

    /// The groups map of `key`'s family, its name, and the key as that map stores it.
    fn group_map(&self, key: &GroupKey) -> (BorrowedFd<'_>, &'static str, GroupBytes) {
        match GroupBytes::of(key) {
            k @ GroupBytes::V4(_) => (self.groups4_fd(), GROUPS4_MAP, k),
            k @ GroupBytes::Wide(_) => (self.groups_fd(), GROUPS_MAP, k),
        }
    }

    fn delete_group(&self, key: &GroupKey) -> Result<()> {
        let (fd, name, bytes) = self.group_map(key);
        sys::delete(fd, bytes.bytes())
            .map(drop)
            .map_err(map_err(name, "delete"))
    }

    pub(super) fn reasons_fd(&self) -> BorrowedFd<'_> {
        self.reasons.fd().as_fd()
    }

    pub(super) const fn cpus(&self) -> usize {
        self.cpus
    }

    fn read_back(&mut self) -> Result<()> {
        // IPv4 groups in the wide maps were written by a version without the IPv4 maps: the
        // program no longer looks there. Drop them; the owner writes them again.
        let (moved, mut keys): (Vec<GroupKey>, Vec<GroupKey>) =
            all_keys::<GroupKey>(self.groups_fd(), GROUPS_MAP)?
                .into_iter()
                .partition(|k| GroupKey4::of(k).is_some());
        for key in &moved {
            sys::delete(self.groups_fd(), bytemuck::bytes_of(key)).map_err(map_err(
                GROUPS_MAP,
                "deleting an IPv4 entry of the old layout",
            ))?;
        }
        if !moved.is_empty() {
            log::info!(
                "deleted {} IPv4 group entries of the old map layout (they are written again in \
                 the IPv4 maps)",
                moved.len()
            );
        }
        keys.extend(
            all_keys::<GroupKey4>(self.groups4_fd(), GROUPS4_MAP)?
                .iter()
                .map(GroupKey4::key),
        );
        for key in keys {
            if let Some(values) = self.group_values(&key)? {
                self.installed.insert(
                    key,
                    Installed {
                        state: values[0].state,
                        sources: BTreeSet::new(),
                    },
                );
            }
        }
        let mut stale = Vec::new();
        let (old_layout, mut source_keys): (Vec<SourceKey>, Vec<SourceKey>) =
            all_keys::<SourceKey>(self.sources_fd(), SOURCES_MAP)?
                .into_iter()
                .partition(|k| SourceKey4::of(k).is_some());
        delete_batch(self.sources_fd(), SOURCES_MAP, &old_layout)?;
        source_keys.extend(
            all_keys::<SourceKey4>(self.sources4_fd(), SOURCES4_MAP)?
                .iter()
                .map(SourceKey4::key),
        );
        for key in source_keys {
            match self.installed.get_mut(&key.group_key()) {
                Some(group) if group.state.generation() == key.generation => {
                    group.sources.insert(key.source);
                    self.source_entries += 1;
                }
                _ => stale.push(key),
            }
        }
        self.delete_sources(&stale)?;
        if !stale.is_empty() {
            log::info!(
                "deleted {} stale source entries left by an interrupted change",
                stale.len()
            );
        }
        Ok(())
    }

    /// All CPUs' values of a group entry.
    pub(super) fn group_values(&self, key: &GroupKey) -> Result<Option<Vec<GroupValue>>> {
        let mut buf = vec![0u8; GROUP_STRIDE * self.cpus];
        let (fd, name, bytes) = self.group_map(key);
        if !sys::lookup(fd, bytes.bytes(), &mut buf).map_err(map_err(name, "lookup"))? {
            return Ok(None);
        }
        Ok(Some(
            buf.chunks_exact(GROUP_STRIDE)
                .map(|c| bytemuck::pod_read_unaligned(&c[..size_of::<GroupValue>()]))
                .collect(),
        ))
    }

    fn write_group(&self, key: &GroupKey, values: &[GroupValue], flags: u64) -> Result<()> {
        let mut buf = vec![0u8; GROUP_STRIDE * self.cpus];
        for (chunk, value) in buf.chunks_exact_mut(GROUP_STRIDE).zip(values) {
            chunk[..size_of::<GroupValue>()].copy_from_slice(bytemuck::bytes_of(value));
        }
        let (fd, name, bytes) = self.group_map(key);
        sys::update(fd, bytes.bytes(), &buf, flags).map_err(map_err(name, "update"))
    }

    /// Write a group's state into every CPU's value, keeping each CPU's counters.
    fn set_group_state(&self, key: &GroupKey, state: GroupState) -> Result<()> {
        let mut values = self
            .group_values(key)?
            .unwrap_or_else(|| vec![GroupValue::default(); self.cpus]);
        for v in &mut values {
            v.state = state;
        }
        self.write_group(key, &values, BPF_EXIST)
    }

    fn insert_group(&self, key: &GroupKey, state: GroupState) -> Result<()> {
        let values = vec![GroupValue::new(state); self.cpus];
        self.write_group(key, &values, BPF_NOEXIST)
    }

    fn insert_sources(&self, keys: &[SourceKey]) -> Result<()> {
        let split = SplitSources::of(keys);
        let result = insert_batch(self.sources4_fd(), SOURCES4_MAP, &split.v4)
            .and_then(|()| insert_batch(self.sources_fd(), SOURCES_MAP, &split.wide));
        if result.is_err() {
            // Undo every insert of this call (absent keys are skipped).
            self.delete_sources_quietly(keys);
        }
        result
    }

    fn delete_sources(&self, keys: &[SourceKey]) -> Result<()> {
        let split = SplitSources::of(keys);
        delete_batch(self.sources4_fd(), SOURCES4_MAP, &split.v4)?;
        delete_batch(self.sources_fd(), SOURCES_MAP, &split.wide)
    }

    fn delete_sources_quietly(&self, keys: &[SourceKey]) {
        if let Err(e) = self.delete_sources(keys) {
            log::error!("rolling back source entries failed: {e}");
        }
    }

    /// Make the maps hold `changes` (group → desired filter, `None` = unmanaged).
    pub(super) fn apply(
        &mut self,
        changes: &BTreeMap<GroupKey, Option<GroupFilter>>,
    ) -> Result<FilterChange> {
        let mut inserts: Vec<SourceKey> = Vec::new();
        let mut deletes: Vec<SourceKey> = Vec::new();
        let mut new_groups: Vec<(GroupKey, GroupState)> = Vec::new();
        let mut switched: Vec<(GroupKey, GroupState, GroupState)> = Vec::new();
        let mut removed: Vec<GroupKey> = Vec::new();
        let mut summary = FilterChange::default();

        for (key, want) in changes {
            let have = self.installed.get(key);
            match (have, want) {
                (None, None) => {}
                (None, Some(want)) => {
                    let state = GroupState::new(want.mode, 0);
                    inserts.extend(want.sources.iter().map(|s| source_key(key, 0, *s)));
                    new_groups.push((*key, state));
                }
                (Some(have), None) => {
                    let g = have.state.generation();
                    deletes.extend(have.sources.iter().map(|s| source_key(key, g, *s)));
                    removed.push(*key);
                }
                (Some(have), Some(want)) if have.state.mode() == want.mode => {
                    let g = have.state.generation();
                    inserts.extend(
                        want.sources
                            .difference(&have.sources)
                            .map(|s| source_key(key, g, *s)),
                    );
                    deletes.extend(
                        have.sources
                            .difference(&want.sources)
                            .map(|s| source_key(key, g, *s)),
                    );
                }
                (Some(have), Some(want)) => {
                    let old = have.state.generation();
                    let new = 1 - old;
                    inserts.extend(want.sources.iter().map(|s| source_key(key, new, *s)));
                    deletes.extend(have.sources.iter().map(|s| source_key(key, old, *s)));
                    switched.push((*key, have.state, GroupState::new(want.mode, new)));
                }
            }
        }

        let groups_after_inserts = self.installed.len() + new_groups.len();
        if groups_after_inserts > self.capacities.max_groups as usize {
            return Err(DatapathError::Capacity {
                map: GROUPS_MAP,
                capacity: self.capacities.max_groups,
                in_use: self.installed.len(),
                needed: new_groups.len(),
            });
        }
        if self.source_entries + inserts.len() > self.capacities.max_sources as usize {
            return Err(DatapathError::Capacity {
                map: SOURCES_MAP,
                capacity: self.capacities.max_sources,
                in_use: self.source_entries,
                needed: inserts.len(),
            });
        }

        // 1. New source entries.
        self.insert_sources(&inserts)?;
        // 2. Group entries: new groups, then mode switches.
        let mut written: Vec<(GroupKey, Option<GroupState>)> = Vec::new();
        let step2 = new_groups
            .iter()
            .map(|(k, s)| (*k, None, *s))
            .chain(switched.iter().map(|(k, old, new)| (*k, Some(*old), *new)));
        for (key, old, new) in step2 {
            let result = match old {
                None => self.insert_group(&key, new),
                Some(_) => self.set_group_state(&key, new),
            };
            if let Err(e) = result {
                for (key, old) in written.iter().rev() {
                    let undo = match old {
                        None => self.delete_group(key),
                        Some(old) => self.set_group_state(key, *old),
                    };
                    if let Err(undo) = undo {
                        log::error!("rolling back group entry {key:?} failed: {undo}");
                    }
                }
                self.delete_sources_quietly(&inserts);
                return Err(e);
            }
            written.push((key, old));
        }
        // 3. Groups no longer managed.
        for key in &removed {
            self.delete_group(key)?;
        }
        // 4. Sources no longer listed, and old generations.
        self.delete_sources(&deletes)?;

        // The mirror follows.
        self.source_entries = self.source_entries + inserts.len() - deletes.len();
        for (key, want) in changes {
            match want {
                None => {
                    self.installed.remove(key);
                }
                Some(want) => {
                    let state = match self.installed.get(key) {
                        Some(have) if have.state.mode() == want.mode => have.state,
                        Some(have) => GroupState::new(want.mode, 1 - have.state.generation()),
                        None => GroupState::new(want.mode, 0),
                    };
                    self.installed.insert(
                        *key,
                        Installed {
                            state,
                            sources: want.sources.clone(),
                        },
                    );
                }
            }
        }
        summary.groups_added = new_groups.len();
        summary.groups_removed = removed.len();
        summary.groups_switched = switched.len();
        summary.sources_added = inserts.len();
        summary.sources_removed = deletes.len();
        Ok(summary)
    }

    pub(super) const fn installed(&self) -> &BTreeMap<GroupKey, Installed> {
        &self.installed
    }

    pub(super) const fn source_entries(&self) -> usize {
        self.source_entries
    }

    /// Packets and bytes counted on one source entry.
    pub(super) fn source_counter(&self, key: &SourceKey) -> Result<Option<Counter>> {
        let mut value = Counter::ZERO;
        let k4 = SourceKey4::of(key);
        let (fd, name, bytes) = match &k4 {
            Some(k) => (self.sources4_fd(), SOURCES4_MAP, bytemuck::bytes_of(k)),
            None => (self.sources_fd(), SOURCES_MAP, bytemuck::bytes_of(key)),
        };
        let found = sys::lookup(fd, bytes, bytemuck::bytes_of_mut(&mut value))
            .map_err(map_err(name, "lookup"))?;
        Ok(found.then_some(value))
    }

    pub(super) fn memlock(&self) -> Result<(u64, u64, u64)> {
        let read = |fd, map| sys::map_memlock(fd).map_err(map_err(map, "reading fdinfo"));
        Ok((
            read(self.groups_fd(), GROUPS_MAP)? + read(self.groups4_fd(), GROUPS4_MAP)?,
            read(self.sources_fd(), SOURCES_MAP)? + read(self.sources4_fd(), SOURCES4_MAP)?,
            read(self.reasons_fd(), REASONS_MAP)?,
        ))
    }
}

/// Every key of a map.
fn all_keys<K: bytemuck::Pod + Default>(fd: BorrowedFd<'_>, map: &'static str) -> Result<Vec<K>> {
    sys::keys(fd).map_err(map_err(map, "listing keys"))
}

/// Insert new source entries with zero counters, a batch syscall per [`BATCH`] keys.
fn insert_batch<K: bytemuck::Pod>(fd: BorrowedFd<'_>, map: &'static str, keys: &[K]) -> Result<()> {
    let zeros = vec![Counter::ZERO; keys.len().min(BATCH)];
    for chunk in keys.chunks(BATCH) {
        sys::update_batch(
            fd,
            bytemuck::cast_slice(chunk),
            bytemuck::cast_slice(&zeros[..chunk.len()]),
            chunk.len(),
            // Batches accept no BPF_NOEXIST; the mirror guarantees these keys are new.
            BPF_ANY,
        )
        .map_err(|e| {
            log::debug!(
                "batch insert into {map} stopped after {} of {} keys",
                e.done,
                chunk.len()
            );
            map_err(map, "batch insert")(e.error)
        })?;
    }
    Ok(())
}

/// Delete source entries, a batch syscall per [`BATCH`] keys.
fn delete_batch<K: bytemuck::Pod>(fd: BorrowedFd<'_>, map: &'static str, keys: &[K]) -> Result<()> {
    for chunk in keys.chunks(BATCH) {
        if sys::delete_batch(fd, bytemuck::cast_slice(chunk), chunk.len()).is_err() {
            // A batch stops at the first absent key; finish one by one.
            for key in chunk {
                sys::delete(fd, bytemuck::bytes_of(key)).map_err(map_err(map, "delete"))?;
            }
        }
    }
    Ok(())
}

const fn source_key(group: &GroupKey, generation: u8, source: Addr) -> SourceKey {
    SourceKey::new(group.ifindex, generation, group.group, source)
}

impl Datapath {
    /// Make one group's entries on `ifindex` equal `filter` (`None`: stop managing the group,
    /// so its traffic passes unjudged).
    pub fn set_filter(
        &mut self,
        ifindex: u32,
        group: Addr,
        filter: Option<GroupFilter>,
    ) -> Result<FilterChange> {
        let mut changes = BTreeMap::new();
        changes.insert(GroupKey::new(ifindex, group), filter);
        self.maps.apply(&changes)
    }

    /// Apply many groups' filters in one batch (see the module documentation for the order).
    pub fn set_filters(
        &mut self,
        changes: impl IntoIterator<Item = (GroupKey, Option<GroupFilter>)>,
    ) -> Result<FilterChange> {
        let changes: BTreeMap<_, _> = changes.into_iter().collect();
        self.maps.apply(&changes)
    }

    /// Delete every entry of one interface; returns how many map entries were removed
    /// (groups plus sources).
    pub fn clear_interface(&mut self, ifindex: u32) -> Result<usize> {
        let changes: BTreeMap<GroupKey, Option<GroupFilter>> = self
            .maps
            .installed()
            .range(GroupKey::new(ifindex, [0; 16])..=GroupKey::new(ifindex, [0xff; 16]))
            .map(|(k, _)| (*k, None))
            .collect();
        let change = self.maps.apply(&changes)?;
        self.set_unjoined(ifindex, 0)?;
        Ok(change.groups_removed + change.sources_removed)
    }

    /// What the maps hold, by group (ordered by interface index, then group).
    pub fn installed(&self) -> &BTreeMap<GroupKey, Installed> {
        self.maps.installed()
    }

    /// Number of source entries in force.
    pub fn source_entries(&self) -> usize {
        self.maps.source_entries()
    }

    /// Packets and bytes matched by one listed source (dropped in EXCLUDE mode, passed in
    /// INCLUDE mode), or `None` if the source is not listed for that group.
    pub fn source_counter(
        &self,
        ifindex: u32,
        group: Addr,
        source: Addr,
    ) -> Result<Option<Counter>> {
        let key = GroupKey::new(ifindex, group);
        let Some(installed) = self.maps.installed().get(&key) else {
            return Ok(None);
        };
        self.maps
            .source_counter(&source_key(&key, installed.state.generation(), source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_stride_matches_the_kernel_layout() {
        assert_eq!(GROUP_STRIDE, 40);
        assert_eq!(size_of::<SourceKey>() % 4, 0);
    }
}
