//! Where the maps are written.
//!
//! [`FilterMaps`] keeps a mirror of every group entry and source list this process wrote
//! (rebuilt from the maps when they were pinned by an earlier run), so a desired filter turns
//! into the difference only. The program looks up the (group, source) pair first and judges a
//! listed source by that entry alone, which carries the mode it is listed under; the group
//! entry decides only for sources without one. A batch of changes is written in five steps:
//!
//! 1. write pair entries: every newly listed source, and for a group that switches mode every
//!    source of its new list (one already listed is relisted under the new mode in place);
//! 2. if any group is published (new, or switching mode), increment the publication epoch;
//! 3. write group entries: new groups, and the mode switches, stamped with that epoch;
//! 4. delete the entries of groups that are no longer managed;
//! 5. delete pair entries that are no longer listed.
//!
//! So each frame is judged by the old filter or the new one, never a mix: a source listed in
//! both changes verdict with its own entry; a source listed only in the old list keeps its
//! entry until the group has switched, and that entry's verdict is the new mode's verdict for
//! an unlisted source anyway (EXCLUDE-listed and INCLUDE-unlisted both drop); an unlisted
//! source follows the group entry. A frame whose pair lookup missed just before step 1 and
//! that then reads the group written in step 3 sees an epoch newer than its own and looks
//! again (`limits::EPOCH_MAP`). Capacity is checked before step 1, so a change that would not
//! fit changes nothing; a kernel error in steps 1–3 is rolled back.
//!
//! Counters: a listed source's frames are counted on its pair entry, other frames on the
//! group's per-CPU values. When a pair entry goes (step 5, read and deleted in one system
//! call) or is relisted under another mode, what it counted is added to the group's retired
//! counters (`limits::RETIRED_MAP`), so a group's totals never go backwards.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd as _, BorrowedFd};
use std::path::Path;

use aya::maps::MapData;
use msfilter_common::{
    Addr, Counter, GroupKey, GroupKey4, GroupState, GroupValue, Mode, SourceKey, SourceKey4,
    limits::{
        EPOCH_MAP, GROUPS_MAP, GROUPS4_MAP, LEGACY_SOURCES_MAPS, REASONS_MAP, RETIRED_MAP,
        SOURCES_MAP, SOURCES4_MAP,
    },
    maps::{Retired, SourceValue},
};

use super::{
    Capacities, Datapath, DatapathError, GroupFilter, Result, pins,
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

/// The groups and pairs maps of one key shape.
pub(super) struct FamilyMaps {
    pub(super) groups: MapData,
    pub(super) sources: MapData,
}

/// The maps beside the two families: reasons, the publication epoch, the retired counters.
pub(super) struct SharedMaps {
    pub(super) reasons: MapData,
    pub(super) epoch: MapData,
    pub(super) retired: MapData,
}

/// A key as the map of its family stores it: the compact IPv4 form, or the wide one.
enum KeyBytes<N, W> {
    V4(N),
    Wide(W),
}

impl<N: bytemuck::Pod, W: bytemuck::Pod> KeyBytes<N, W> {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::V4(k) => bytemuck::bytes_of(k),
            Self::Wide(k) => bytemuck::bytes_of(k),
        }
    }
}

type GroupBytes = KeyBytes<GroupKey4, GroupKey>;
type PairBytes = KeyBytes<SourceKey4, SourceKey>;

impl GroupBytes {
    fn of(key: &GroupKey) -> Self {
        GroupKey4::of(key).map_or(Self::Wide(*key), Self::V4)
    }
}

impl PairBytes {
    fn of(key: &SourceKey) -> Self {
        SourceKey4::of(key).map_or(Self::Wide(*key), Self::V4)
    }
}

/// Pair entries split by the map that holds them.
#[derive(Default)]
struct SplitPairs {
    v4: (Vec<SourceKey4>, Vec<SourceValue>),
    wide: (Vec<SourceKey>, Vec<SourceValue>),
}

impl SplitPairs {
    fn of<'a>(entries: impl IntoIterator<Item = &'a (SourceKey, SourceValue)>) -> Self {
        let mut out = Self::default();
        for (key, value) in entries {
            match SourceKey4::of(key) {
                Some(k) => {
                    out.v4.0.push(k);
                    out.v4.1.push(*value);
                }
                None => {
                    out.wide.0.push(*key);
                    out.wide.1.push(*value);
                }
            }
        }
        out
    }
}

pub(super) struct FilterMaps {
    /// IPv6 groups (20- and 36-byte keys).
    wide: FamilyMaps,
    /// IPv4 groups (8- and 12-byte keys).
    v4: FamilyMaps,
    shared: SharedMaps,
    /// The publication epoch last written to `limits::EPOCH_MAP`.
    epoch: u32,
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

/// Where a pair entry's count goes when the entry is retired: a source listed under EXCLUDE
/// counted drops, one listed under INCLUDE passes.
fn retire(retired: &mut Retired, mode: Mode, counted: Counter) {
    match mode {
        Mode::Exclude => retired.dropped = retired.dropped.plus(counted),
        Mode::Include => retired.passed = retired.passed.plus(counted),
    }
}

impl FilterMaps {
    /// Take the maps and read back whatever they already hold (pinned maps of an earlier
    /// run). Pair entries that disagree with their group are leftovers of an interrupted
    /// change and are deleted. With `pin_dir`, the sources maps of the earlier layout are
    /// copied into the pairs maps and unpinned.
    pub(super) fn open(
        wide: FamilyMaps,
        v4: FamilyMaps,
        shared: SharedMaps,
        capacities: Capacities,
        pin_dir: Option<&Path>,
    ) -> Result<Self> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| map_err(GROUPS_MAP, "counting possible CPUs")(e))?;
        let mut this = Self {
            wide,
            v4,
            shared,
            epoch: 0,
            installed: BTreeMap::new(),
            source_entries: 0,
            capacities,
            cpus,
        };
        this.epoch = this.read_epoch()?;
        this.read_back(pin_dir)?;
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

    fn epoch_fd(&self) -> BorrowedFd<'_> {
        self.shared.epoch.fd().as_fd()
    }

    fn retired_fd(&self) -> BorrowedFd<'_> {
        self.shared.retired.fd().as_fd()
    }

    /// The groups map of `key`'s family, its name, and the key as that map stores it.
    fn group_map(&self, key: &GroupKey) -> (BorrowedFd<'_>, &'static str, GroupBytes) {
        match GroupBytes::of(key) {
            k @ GroupBytes::V4(_) => (self.groups4_fd(), GROUPS4_MAP, k),
            k @ GroupBytes::Wide(_) => (self.groups_fd(), GROUPS_MAP, k),
        }
    }

    /// The pairs map of `key`'s family, its name, and the key as that map stores it.
    fn pair_map(&self, key: &SourceKey) -> (BorrowedFd<'_>, &'static str, PairBytes) {
        match PairBytes::of(key) {
            k @ PairBytes::V4(_) => (self.sources4_fd(), SOURCES4_MAP, k),
            k @ PairBytes::Wide(_) => (self.sources_fd(), SOURCES_MAP, k),
        }
    }

    fn delete_group(&self, key: &GroupKey) -> Result<()> {
        let (fd, name, bytes) = self.group_map(key);
        sys::delete(fd, bytes.bytes())
            .map(drop)
            .map_err(map_err(name, "delete"))?;
        sys::delete(self.retired_fd(), bytemuck::bytes_of(key))
            .map(drop)
            .map_err(map_err(RETIRED_MAP, "delete"))
    }

    pub(super) fn reasons_fd(&self) -> BorrowedFd<'_> {
        self.shared.reasons.fd().as_fd()
    }

    pub(super) const fn cpus(&self) -> usize {
        self.cpus
    }

    fn read_epoch(&self) -> Result<u32> {
        let mut value = 0u32;
        sys::lookup(
            self.epoch_fd(),
            &0u32.to_ne_bytes(),
            bytemuck::bytes_of_mut(&mut value),
        )
        .map_err(map_err(EPOCH_MAP, "lookup"))?;
        Ok(value)
    }

    /// Start a new publication epoch: the groups written after this are stamped with it.
    fn next_epoch(&mut self) -> Result<u32> {
        let next = self.epoch.wrapping_add(1);
        sys::update(
            self.epoch_fd(),
            &0u32.to_ne_bytes(),
            &next.to_ne_bytes(),
            BPF_ANY,
        )
        .map_err(map_err(EPOCH_MAP, "update"))?;
        self.epoch = next;
        Ok(next)
    }

    fn read_back(&mut self, pin_dir: Option<&Path>) -> Result<()> {
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
        // The raw state byte: an earlier layout kept a generation in bit 1.
        let mut raw_states = BTreeMap::new();
        for key in keys {
            if let Some(values) = self.group_values(&key)? {
                raw_states.insert(key, values[0].state);
                self.installed.insert(
                    key,
                    Installed {
                        state: GroupState::new(values[0].state.mode()),
                        sources: BTreeSet::new(),
                    },
                );
            }
        }
        if let Some(dir) = pin_dir {
            self.migrate_legacy_sources(dir, &raw_states)?;
        }
        let mut stale = Vec::new();
        let mut entries = all_pairs::<SourceKey, SourceValue>(self.sources_fd(), SOURCES_MAP)?;
        entries.extend(
            all_pairs::<SourceKey4, SourceValue>(self.sources4_fd(), SOURCES4_MAP)?
                .into_iter()
                .map(|(k, v)| (k.key(), v)),
        );
        for (key, value) in entries {
            match self.installed.get_mut(&key.group_key()) {
                Some(group) if group.state.mode() == value.listed.mode() => {
                    group.sources.insert(key.source);
                    self.source_entries += 1;
                }
                _ => stale.push(key),
            }
        }
        self.delete_pairs(&stale)?;
        if !stale.is_empty() {
            log::info!(
                "deleted {} stale pair entries left by an interrupted change",
                stale.len()
            );
        }
        // Retired counters of groups no longer managed (a removal interrupted between its
        // group and its retired entry).
        for key in all_keys::<GroupKey>(self.retired_fd(), RETIRED_MAP)? {
            if !self.installed.contains_key(&key) {
                sys::delete(self.retired_fd(), bytemuck::bytes_of(&key))
                    .map_err(map_err(RETIRED_MAP, "delete"))?;
            }
        }
        Ok(())
    }

    /// Copy the source entries of the earlier layout's pinned maps (those of each group's
    /// generation in force, with their counters) into the pairs maps, then unpin the old
    /// maps. A program still attached from the earlier run keeps reading them until this
    /// process's program takes over its link.
    fn migrate_legacy_sources(
        &self,
        dir: &Path,
        raw_states: &BTreeMap<GroupKey, GroupState>,
    ) -> Result<()> {
        let generation = |key: &GroupKey| raw_states.get(key).map(|s| (s.0 >> 1) & 1);
        let mut pairs: Vec<(SourceKey, SourceValue)> = Vec::new();
        for (name, ipv4) in [
            (LEGACY_SOURCES_MAPS[0], false),
            (LEGACY_SOURCES_MAPS[1], true),
        ] {
            let path = pins::map_path(dir, name);
            if !path.exists() {
                continue;
            }
            let legacy = MapData::from_pin(&path).map_err(|e| DatapathError::PinnedMap {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            let fd = legacy.fd().as_fd();
            let entries: Vec<(SourceKey, u8, Counter)> = if ipv4 {
                all_pairs::<[u32; 3], Counter>(fd, name)?
                    .into_iter()
                    .map(|([first, group, source], counter)| {
                        let key = SourceKey4 {
                            ifindex: first & !(1 << 31),
                            group: group.to_ne_bytes(),
                            source: source.to_ne_bytes(),
                        };
                        (key.key(), (first >> 31) as u8, counter)
                    })
                    .collect()
            } else {
                all_pairs::<LegacySourceKey, Counter>(fd, name)?
                    .into_iter()
                    .map(|(k, counter)| {
                        (
                            SourceKey::new(k.ifindex, k.group, k.source),
                            k.generation,
                            counter,
                        )
                    })
                    .collect()
            };
            for (key, gen_of_entry, counter) in entries {
                let group = key.group_key();
                if generation(&group) != Some(gen_of_entry & 1) {
                    continue;
                }
                let Some(installed) = self.installed.get(&group) else {
                    continue;
                };
                let mut value = SourceValue::new(installed.state.mode());
                value.matched = counter;
                pairs.push((key, value));
            }
            drop(legacy);
            pins::unpin(&path).map_err(|e| DatapathError::PinnedMap {
                path: path.clone(),
                detail: format!("removing it after copying its entries: {e}"),
            })?;
        }
        if !pairs.is_empty() {
            self.write_pairs(&pairs)?;
            log::info!(
                "copied {} source entries of the earlier map layout into the pairs maps",
                pairs.len()
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

    /// Write a group's state and publication epoch into every CPU's value, keeping each CPU's
    /// counters.
    fn set_group_state(&self, key: &GroupKey, state: GroupState, published: u32) -> Result<()> {
        let mut values = self
            .group_values(key)?
            .unwrap_or_else(|| vec![GroupValue::default(); self.cpus]);
        for v in &mut values {
            v.state = state;
            v.published = published;
        }
        self.write_group(key, &values, BPF_EXIST)
    }

    fn insert_group(&self, key: &GroupKey, state: GroupState, published: u32) -> Result<()> {
        let values = vec![GroupValue::new(state, published); self.cpus];
        self.write_group(key, &values, BPF_NOEXIST)
    }

    /// A pair entry's value, if it exists.
    fn pair_value(&self, key: &SourceKey) -> Result<Option<SourceValue>> {
        self.read_pair(key, sys::lookup, "lookup")
    }

    /// Read one pair entry with `read` (a lookup, or a lookup that also deletes).
    fn read_pair(
        &self,
        key: &SourceKey,
        read: fn(BorrowedFd<'_>, &[u8], &mut [u8]) -> std::io::Result<bool>,
        op: &'static str,
    ) -> Result<Option<SourceValue>> {
        let mut value = SourceValue::default();
        let (fd, name, bytes) = self.pair_map(key);
        let found = read(fd, bytes.bytes(), bytemuck::bytes_of_mut(&mut value))
            .map_err(map_err(name, op))?;
        Ok(found.then_some(value))
    }

    /// Write pair entries (new or replacing), a batch syscall per [`BATCH`] entries per map.
    fn write_pairs(&self, entries: &[(SourceKey, SourceValue)]) -> Result<()> {
        let split = SplitPairs::of(entries);
        write_batch(self.sources4_fd(), SOURCES4_MAP, &split.v4.0, &split.v4.1)?;
        write_batch(self.sources_fd(), SOURCES_MAP, &split.wide.0, &split.wide.1)
    }

    fn delete_pairs(&self, keys: &[SourceKey]) -> Result<()> {
        let mut v4 = Vec::new();
        let mut wide = Vec::new();
        for key in keys {
            match SourceKey4::of(key) {
                Some(k) => v4.push(k),
                None => wide.push(*key),
            }
        }
        delete_batch(self.sources4_fd(), SOURCES4_MAP, &v4)?;
        delete_batch(self.sources_fd(), SOURCES_MAP, &wide)
    }

    /// Delete one pair entry, returning what it had counted.
    fn take_pair(&self, key: &SourceKey) -> Result<Option<SourceValue>> {
        self.read_pair(key, sys::lookup_and_delete, "lookup and delete")
    }

    /// Undo step 1: delete the new entries, put relisted ones back as they were.
    fn restore_pairs(&self, inserted: &[SourceKey], relisted: &[(SourceKey, SourceValue)]) {
        if let Err(e) = self
            .delete_pairs(inserted)
            .and_then(|()| self.write_pairs(relisted))
        {
            log::error!("rolling back pair entries failed: {e}");
        }
    }

    /// A group's retired counters (zero if it has none).
    pub(super) fn retired(&self, key: &GroupKey) -> Result<Retired> {
        let mut value = Retired::default();
        sys::lookup(
            self.retired_fd(),
            bytemuck::bytes_of(key),
            bytemuck::bytes_of_mut(&mut value),
        )
        .map_err(map_err(RETIRED_MAP, "lookup"))?;
        Ok(value)
    }

    fn add_retired(&self, additions: &BTreeMap<GroupKey, Retired>) -> Result<()> {
        for (key, add) in additions {
            let have = self.retired(key)?;
            let sum = Retired {
                passed: have.passed.plus(add.passed),
                dropped: have.dropped.plus(add.dropped),
            };
            sys::update(
                self.retired_fd(),
                bytemuck::bytes_of(key),
                bytemuck::bytes_of(&sum),
                BPF_ANY,
            )
            .map_err(map_err(RETIRED_MAP, "update"))?;
        }
        Ok(())
    }

    /// Make the maps hold `changes` (group → desired filter, `None` = unmanaged).
    #[allow(
        clippy::too_many_lines,
        reason = "the five steps read best in order, in one place"
    )]
    pub(super) fn apply(
        &mut self,
        changes: &BTreeMap<GroupKey, Option<GroupFilter>>,
    ) -> Result<FilterChange> {
        // Step 1's entries: new keys, and keys relisted under another mode.
        let mut inserts: Vec<(SourceKey, SourceValue)> = Vec::new();
        let mut relists: Vec<(SourceKey, SourceValue)> = Vec::new();
        // Step 5: pairs leaving a group that stays managed (their counts are retired), and
        // pairs of groups no longer managed.
        let mut retiring: Vec<(SourceKey, Mode)> = Vec::new();
        let mut dropped_with_group: Vec<SourceKey> = Vec::new();
        let mut new_groups: Vec<(GroupKey, GroupState)> = Vec::new();
        let mut switched: Vec<(GroupKey, GroupState, GroupState)> = Vec::new();
        let mut removed: Vec<GroupKey> = Vec::new();
        let mut summary = FilterChange::default();

        for (key, want) in changes {
            let pair = |s: &Addr| SourceKey::new(key.ifindex, key.group, *s);
            let have = self.installed.get(key);
            match (have, want) {
                (None, None) => {}
                (None, Some(want)) => {
                    let value = SourceValue::new(want.mode);
                    inserts.extend(want.sources.iter().map(|s| (pair(s), value)));
                    new_groups.push((*key, GroupState::new(want.mode)));
                }
                (Some(have), None) => {
                    dropped_with_group.extend(have.sources.iter().map(pair));
                    removed.push(*key);
                }
                (Some(have), Some(want)) => {
                    let old = have.state.mode();
                    let value = SourceValue::new(want.mode);
                    inserts.extend(
                        want.sources
                            .difference(&have.sources)
                            .map(|s| (pair(s), value)),
                    );
                    retiring.extend(
                        have.sources
                            .difference(&want.sources)
                            .map(|s| (pair(s), old)),
                    );
                    if old != want.mode {
                        relists.extend(
                            want.sources
                                .intersection(&have.sources)
                                .map(|s| (pair(s), value)),
                        );
                        switched.push((*key, have.state, GroupState::new(want.mode)));
                    }
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

        // 1. Pair entries: new ones, then the relisted ones (what they counted under the old
        // mode is retired).
        let mut retired: BTreeMap<GroupKey, Retired> = BTreeMap::new();
        let mut relisted_before: Vec<(SourceKey, SourceValue)> = Vec::new();
        for (key, _) in &relists {
            if let Some(before) = self.pair_value(key)? {
                relisted_before.push((*key, before));
            }
        }
        let inserted: Vec<SourceKey> = inserts.iter().map(|(k, _)| *k).collect();
        if let Err(e) = self
            .write_pairs(&inserts)
            .and_then(|()| self.write_pairs(&relists))
        {
            self.restore_pairs(&inserted, &relisted_before);
            return Err(e);
        }
        for (key, before) in &relisted_before {
            let entry = retired.entry(key.group_key()).or_default();
            retire(entry, before.listed.mode(), before.matched);
        }
        // 2. A new epoch for the groups published below.
        let published = if new_groups.is_empty() && switched.is_empty() {
            self.epoch
        } else {
            match self.next_epoch() {
                Ok(epoch) => epoch,
                Err(e) => {
                    self.restore_pairs(&inserted, &relisted_before);
                    return Err(e);
                }
            }
        };
        // 3. Group entries: new groups, then mode switches.
        let mut written: Vec<(GroupKey, Option<GroupState>)> = Vec::new();
        let step3 = new_groups
            .iter()
            .map(|(k, s)| (*k, None, *s))
            .chain(switched.iter().map(|(k, old, new)| (*k, Some(*old), *new)));
        for (key, old, new) in step3 {
            let result = match old {
                None => self.insert_group(&key, new, published),
                Some(_) => self.set_group_state(&key, new, published),
            };
            if let Err(e) = result {
                for (key, old) in written.iter().rev() {
                    // Stamped with this epoch still: at worst a frame looks twice.
                    let undo = match old {
                        None => self.delete_group(key),
                        Some(old) => self.set_group_state(key, *old, published),
                    };
                    if let Err(undo) = undo {
                        log::error!("rolling back group entry {key:?} failed: {undo}");
                    }
                }
                self.restore_pairs(&inserted, &relisted_before);
                return Err(e);
            }
            written.push((key, old));
        }
        // 4. Groups no longer managed.
        for key in &removed {
            self.delete_group(key)?;
        }
        // 5. Pairs no longer listed: those of removed groups in batches, the others one by
        // one, each read as it is deleted so that its count is kept.
        self.delete_pairs(&dropped_with_group)?;
        for (key, mode) in &retiring {
            if let Some(value) = self.take_pair(key)? {
                retire(
                    retired.entry(key.group_key()).or_default(),
                    *mode,
                    value.matched,
                );
            }
        }
        self.add_retired(&retired)?;

        // The mirror follows.
        self.source_entries =
            self.source_entries + inserts.len() - retiring.len() - dropped_with_group.len();
        for (key, want) in changes {
            match want {
                None => {
                    self.installed.remove(key);
                }
                Some(want) => {
                    self.installed.insert(
                        *key,
                        Installed {
                            state: GroupState::new(want.mode),
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
        summary.sources_removed = retiring.len() + dropped_with_group.len();
        Ok(summary)
    }

    pub(super) const fn installed(&self) -> &BTreeMap<GroupKey, Installed> {
        &self.installed
    }

    pub(super) const fn source_entries(&self) -> usize {
        self.source_entries
    }

    /// Packets and bytes counted on one pair entry.
    pub(super) fn source_counter(&self, key: &SourceKey) -> Result<Option<Counter>> {
        Ok(self.pair_value(key)?.map(|v| v.matched))
    }

    pub(super) fn memlock(&self) -> Result<(u64, u64, u64)> {
        let read = |fd, map| sys::map_memlock(fd).map_err(map_err(map, "reading fdinfo"));
        Ok((
            read(self.groups_fd(), GROUPS_MAP)?
                + read(self.groups4_fd(), GROUPS4_MAP)?
                + read(self.retired_fd(), RETIRED_MAP)?,
            read(self.sources_fd(), SOURCES_MAP)? + read(self.sources4_fd(), SOURCES4_MAP)?,
            read(self.reasons_fd(), REASONS_MAP)?,
        ))
    }
}

/// Key of the IPv6 sources map of the earlier layout (with a generation byte), read once to
/// copy its entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct LegacySourceKey {
    ifindex: u32,
    generation: u8,
    reserved: [u8; 3],
    group: Addr,
    source: Addr,
}

/// Every key of a map.
fn all_keys<K: bytemuck::Pod + Default>(fd: BorrowedFd<'_>, map: &'static str) -> Result<Vec<K>> {
    sys::keys(fd).map_err(map_err(map, "listing keys"))
}

/// Every entry of a (non-per-CPU) map.
fn all_pairs<K: bytemuck::Pod + Default, V: bytemuck::Pod + Default>(
    fd: BorrowedFd<'_>,
    map: &'static str,
) -> Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    for key in all_keys::<K>(fd, map)? {
        let mut value = V::default();
        if sys::lookup(
            fd,
            bytemuck::bytes_of(&key),
            bytemuck::bytes_of_mut(&mut value),
        )
        .map_err(map_err(map, "lookup"))?
        {
            out.push((key, value));
        }
    }
    Ok(out)
}

/// Write entries, a batch syscall per [`BATCH`] keys.
fn write_batch<K: bytemuck::Pod, V: bytemuck::Pod>(
    fd: BorrowedFd<'_>,
    map: &'static str,
    keys: &[K],
    values: &[V],
) -> Result<()> {
    for (chunk, values) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
        sys::update_batch(
            fd,
            bytemuck::cast_slice(chunk),
            bytemuck::cast_slice(values),
            chunk.len(),
            // Batches accept no BPF_NOEXIST; the mirror says which keys are new.
            BPF_ANY,
        )
        .map_err(|e| {
            log::debug!(
                "batch write into {map} stopped after {} of {} keys",
                e.done,
                chunk.len()
            );
            map_err(map, "batch write")(e.error)
        })?;
    }
    Ok(())
}

/// Delete entries, a batch syscall per [`BATCH`] keys.
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
        if !self
            .maps
            .installed()
            .get(&GroupKey::new(ifindex, group))
            .is_some_and(|i| i.sources.contains(&source))
        {
            return Ok(None);
        }
        self.maps
            .source_counter(&SourceKey::new(ifindex, group, source))
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

    /// A new group and a mode switch start a publication epoch and stamp the group with it
    /// (the program's second look depends on it); a same-mode change does neither. Pair
    /// entries carry their group's mode. Needs root (CAP_BPF), as every test of this
    /// project that loads the program.
    #[test]
    fn groups_are_published_in_a_new_epoch_only_when_their_mode_is_new() {
        use msfilter_common::maps::ipv4_mapped;

        use crate::datapath::LoadOptions;

        let mut dp = Datapath::load(&LoadOptions {
            capacities: Capacities {
                max_groups: 8,
                max_sources: 16,
            },
            pin_dir: None,
        })
        .expect("loading the program (run as root)");
        let g = ipv4_mapped([232, 1, 1, 1]);
        let (s1, s2) = (ipv4_mapped([10, 0, 0, 1]), ipv4_mapped([10, 0, 0, 2]));
        let key = GroupKey::new(1, g);
        let state = |dp: &Datapath| {
            let values = dp.maps.group_values(&key).unwrap().unwrap();
            assert!(values.windows(2).all(|w| w[0].published == w[1].published));
            (dp.maps.read_epoch().unwrap(), values[0].published)
        };
        let listed = |dp: &Datapath, s| {
            dp.maps
                .pair_value(&SourceKey::new(1, g, s))
                .unwrap()
                .map(|v| v.listed.mode())
        };
        let start = dp.maps.read_epoch().unwrap();
        let filter = |mode, sources: &[Addr]| Some(GroupFilter::new(mode, sources.iter().copied()));

        dp.set_filter(1, g, filter(Mode::Include, &[s1])).unwrap();
        assert_eq!(state(&dp), (start + 1, start + 1), "a new group");
        dp.set_filter(1, g, filter(Mode::Include, &[s1, s2]))
            .unwrap();
        assert_eq!(
            state(&dp),
            (start + 1, start + 1),
            "same mode, another list"
        );
        assert_eq!(listed(&dp, s2), Some(Mode::Include));
        dp.set_filter(1, g, filter(Mode::Exclude, &[s2])).unwrap();
        assert_eq!(state(&dp), (start + 2, start + 2), "a mode switch");
        assert_eq!(
            listed(&dp, s2),
            Some(Mode::Exclude),
            "relisted under the new mode"
        );
        assert_eq!(listed(&dp, s1), None, "only in the old list: deleted");
        dp.set_filter(1, g, None).unwrap();
        assert!(dp.maps.group_values(&key).unwrap().is_none());
        assert_eq!(listed(&dp, s2), None);
    }
}
