//! Map names, capacities, parser bounds, and the kernel memory the maps cost.

use core::mem::size_of;

use crate::maps::{
    Counter, GroupKey, GroupKey4, GroupValue, Retired, SourceKey, SourceKey4, SourceValue,
};
use crate::verdict::Reason;

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "msfilter";

/// Groups map: `GroupKey` → per-CPU `GroupValue` (mode, publication epoch, counters of the
/// frames without a pair entry), for IPv6 groups.
pub const GROUPS_MAP: &str = "MSF_GROUPS";
/// Pairs map: `SourceKey` → `SourceValue` (listed sources, each with the mode it is listed
/// under and its counters), for IPv6 groups. The program looks here first: a listed source's
/// frame is judged by this one lookup.
pub const SOURCES_MAP: &str = "MSF_PAIRS";
/// The groups map of IPv4 groups, keyed by the 8-byte `GroupKey4`.
pub const GROUPS4_MAP: &str = "MSF_GROUPS4";
/// The pairs map of IPv4 groups, keyed by the 12-byte `SourceKey4`.
pub const SOURCES4_MAP: &str = "MSF_PAIRS4";
/// The sources maps of the earlier layout (keys with a generation, values without a mode).
/// A daemon that finds them pinned copies their entries into the pairs maps.
pub const LEGACY_SOURCES_MAPS: [&str; 2] = ["MSF_SOURCES", "MSF_SOURCES4"];
/// Array of one `u32`: the publication epoch. Userspace increments it after writing the pair
/// entries of a group it is about to publish (a new group, or a mode switch), then writes
/// the group with `GroupValue::published` set to the new epoch. The program reads the epoch
/// before its pair lookup; a frame that found no pair entry but a group published after its
/// epoch looks for the pair again, so it never judges a fresh group state by a pair table
/// read before that state's entries were written.
pub const EPOCH_MAP: &str = "MSF_EPOCH";
/// `GroupKey` → `Retired`: what the pair entries that no longer exist had counted, so that a
/// group's counters never go backwards when a source leaves its list. Written by userspace
/// only; the program never reads it.
pub const RETIRED_MAP: &str = "MSF_RETIRED";
/// Per-CPU array indexed by [`Reason`]: how many frames were passed or dropped for each reason.
pub const REASONS_MAP: &str = "MSF_REASONS";
/// VLAN map: `VlanKey` (parent interface, VLAN id) → `u32` index of the 802.1Q sub-interface
/// whose entries judge that VLAN's frames on the parent.
pub const VLANS_MAP: &str = "MSF_VLANS";
/// Capacity of the VLAN map: VLAN sub-interfaces enforced at once, over all parents.
pub const MAX_VLANS: u32 = 4096;

/// Default capacity of the groups map (settable at load time).
pub const DEFAULT_MAX_GROUPS: u32 = 65_536;
/// Default capacity of the pairs map (settable at load time).
pub const DEFAULT_MAX_SOURCES: u32 = 1_048_576;
// The capacities the design promises.
const _: () = assert!(DEFAULT_MAX_SOURCES >= 1_048_576 && DEFAULT_MAX_GROUPS >= 65_536);

/// Smallest capacities the loader accepts.
pub const MIN_MAX_GROUPS: u32 = 1;
pub const MIN_MAX_SOURCES: u32 = 1;

/// VLAN tags the parser steps over (802.1Q and 802.1ad, e.g. QinQ). A frame with more is
/// passed unjudged ([`Reason::TooManyVlanTags`]).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers the parser walks to find the upper-layer protocol. A longer chain
/// is passed unjudged ([`Reason::ExtensionChainTooLong`]).
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// Kernel-side sizes used by the hash table (kernel/bpf/hashtab.c, 64-bit). The integration
/// test `map_memory` checks the estimate below against what the kernel reports.
const HTAB_STRUCT: u64 = 896; // struct bpf_htab (measured on 6.18: an empty map's memlock)
const ARRAY_STRUCT: u64 = 312; // struct bpf_array (measured on 6.18)
const HTAB_ELEM_HEADER: u64 = 48; // struct htab_elem without the key
const HTAB_BUCKET: u64 = 16; // struct bucket
const LLIST_NODE: u64 = 8; // bpf_mem_alloc's per-object header for non-preallocated elements
const POINTER: u64 = 8;

const fn round_up_8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

const fn next_pow2(n: u64) -> u64 {
    if n <= 1 { 1 } else { n.next_power_of_two() }
}

/// Kernel memory of a `BPF_F_NO_PREALLOC` hash map holding `entries` elements.
pub const fn hash_map_bytes(
    key_size: u64,
    value_size: u64,
    percpu: bool,
    max_entries: u64,
    entries: u64,
    cpus: u64,
) -> u64 {
    let buckets = HTAB_STRUCT + next_pow2(max_entries) * HTAB_BUCKET;
    let elem = if percpu {
        HTAB_ELEM_HEADER + round_up_8(key_size) + POINTER
    } else {
        HTAB_ELEM_HEADER + round_up_8(key_size) + round_up_8(value_size)
    };
    let mut per_entry = elem + LLIST_NODE;
    if percpu {
        per_entry += LLIST_NODE + POINTER + round_up_8(value_size) * cpus;
    }
    buckets + per_entry * entries
}

/// Kernel memory of a per-CPU array.
pub const fn percpu_array_bytes(value_size: u64, entries: u64, cpus: u64) -> u64 {
    ARRAY_STRUCT + entries * (POINTER + round_up_8(value_size) * cpus)
}

/// Kernel memory of msfilter's maps, by map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapMemory {
    /// The groups maps and the retired counters (one entry per group at most).
    pub groups: u64,
    pub sources: u64,
    pub reasons: u64,
}

impl MapMemory {
    pub const fn total(&self) -> u64 {
        self.groups + self.sources + self.reasons
    }
}

/// Entries in use, by family: IPv4 groups live in the compact IPv4 maps, IPv6 groups in the
/// wide ones. Each map is created with the full capacity (the capacity bounds both together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InUse {
    pub ipv4: u64,
    pub ipv6: u64,
    /// Retired-counter entries (groups only: groups whose list lost a source).
    pub retired: u64,
}

impl InUse {
    pub const fn ipv4(n: u64) -> Self {
        Self {
            ipv4: n,
            ipv6: 0,
            retired: 0,
        }
    }

    /// The larger case: all of them IPv6.
    pub const fn ipv6(n: u64) -> Self {
        Self {
            ipv4: 0,
            ipv6: n,
            retired: 0,
        }
    }

    /// With `n` retired-counter entries too (groups).
    #[must_use]
    pub const fn retired(self, n: u64) -> Self {
        Self { retired: n, ..self }
    }
}

/// Kernel memory of the maps when `groups` and `sources` entries are in use, on a host with
/// `cpus` possible CPUs. Full size is `map_memory(cpus, max, InUse::ipv6(max), max,
/// InUse::ipv6(max))` (IPv6 entries are the larger).
pub const fn map_memory(
    cpus: u64,
    max_groups: u64,
    groups: InUse,
    max_sources: u64,
    sources: InUse,
) -> MapMemory {
    MapMemory {
        groups: hash_map_bytes(
            size_of::<GroupKey>() as u64,
            size_of::<GroupValue>() as u64,
            true,
            max_groups,
            groups.ipv6,
            cpus,
        ) + hash_map_bytes(
            size_of::<GroupKey4>() as u64,
            size_of::<GroupValue>() as u64,
            true,
            max_groups,
            groups.ipv4,
            cpus,
        ) + hash_map_bytes(
            size_of::<GroupKey>() as u64,
            size_of::<Retired>() as u64,
            false,
            max_groups,
            groups.retired,
            cpus,
        ),
        sources: hash_map_bytes(
            size_of::<SourceKey>() as u64,
            size_of::<SourceValue>() as u64,
            false,
            max_sources,
            sources.ipv6,
            cpus,
        ) + hash_map_bytes(
            size_of::<SourceKey4>() as u64,
            size_of::<SourceValue>() as u64,
            false,
            max_sources,
            sources.ipv4,
            cpus,
        ),
        reasons: percpu_array_bytes(size_of::<Counter>() as u64, Reason::COUNT as u64, cpus),
    }
}

/// What the maps may cost at full default size on a 64-CPU host.
pub const MEMORY_BUDGET_64_CPUS: u64 = 512 * 1024 * 1024;

#[cfg(test)]
mod tests {
    extern crate std;
    use std::println;

    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    fn full(cpus: u64) -> MapMemory {
        let g = DEFAULT_MAX_GROUPS as u64;
        let s = DEFAULT_MAX_SOURCES as u64;
        map_memory(cpus, g, InUse::ipv6(g).retired(g), s, InUse::ipv6(s))
    }

    #[test]
    #[allow(clippy::cast_precision_loss, reason = "MiB figures for people")]
    fn memory_budget_at_full_size() {
        for cpus in [2, 64] {
            let m = full(cpus);
            println!(
                "maps at full size, {cpus} CPUs: groups {:.1} MiB, sources {:.1} MiB, reasons {:.3} MiB, total {:.1} MiB",
                m.groups as f64 / MIB,
                m.sources as f64 / MIB,
                m.reasons as f64 / MIB,
                m.total() as f64 / MIB
            );
        }
        // Per-CPU group values are the only part that grows with the CPU count; the sources
        // map (1M entries) does not, which is why its counters are shared, not per-CPU.
        assert_eq!(full(2).sources, full(64).sources);
        assert!(full(64).groups > full(2).groups);
        assert!(full(64).total() <= MEMORY_BUDGET_64_CPUS, "{:?}", full(64));
        // An empty map costs only its buckets (two maps: IPv4 and IPv6; three for groups,
        // with the retired counters).
        let empty = map_memory(64, 65_536, InUse::ipv4(0), 1_048_576, InUse::ipv4(0));
        assert_eq!(empty.sources, 2 * (HTAB_STRUCT + 1_048_576 * HTAB_BUCKET));
        assert_eq!(empty.groups, 3 * (HTAB_STRUCT + 65_536 * HTAB_BUCKET));
        // An IPv4 entry costs less than an IPv6 one.
        let v4 = map_memory(2, 65_536, InUse::ipv4(10), 1_048_576, InUse::ipv4(10));
        let v6 = map_memory(2, 65_536, InUse::ipv6(10), 1_048_576, InUse::ipv6(10));
        assert!(v4.sources < v6.sources && v4.groups < v6.groups);
    }
}
