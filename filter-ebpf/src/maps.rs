//! The maps the program reads. Names and default capacities come from
//! `msfilter_common::limits`; userspace may resize the hash maps at load time.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use msfilter_common::{
    Counter, GroupKey, GroupKey4, GroupValue, Reason, SourceKey, SourceKey4,
    limits::{DEFAULT_MAX_GROUPS, DEFAULT_MAX_SOURCES},
    maps::{Retired, SourceValue},
    trace::{TRACE_RING_BYTES, TraceControl},
    unjoined::{GATE_ENTRIES, MAX_UNJOINED_INTERFACES},
};

/// `limits::GROUPS_MAP`: mode, publication epoch and per-CPU counters of each managed group.
/// Not preallocated: memory follows the groups in use (the per-CPU values are the map's
/// biggest cost on many-core hosts).
#[map]
pub(crate) static MSF_GROUPS: PerCpuHashMap<GroupKey, GroupValue> =
    PerCpuHashMap::with_max_entries(DEFAULT_MAX_GROUPS, BPF_F_NO_PREALLOC);

/// `limits::SOURCES_MAP`: listed sources of each managed group, each with the mode it is
/// listed under and shared counters.
#[map]
pub(crate) static MSF_PAIRS: HashMap<SourceKey, SourceValue> =
    HashMap::with_max_entries(DEFAULT_MAX_SOURCES, BPF_F_NO_PREALLOC);

/// `limits::GROUPS4_MAP`: [`MSF_GROUPS`] for IPv4 groups, with 8-byte keys.
#[map]
pub(crate) static MSF_GROUPS4: PerCpuHashMap<GroupKey4, GroupValue> =
    PerCpuHashMap::with_max_entries(DEFAULT_MAX_GROUPS, BPF_F_NO_PREALLOC);

/// `limits::SOURCES4_MAP`: [`MSF_PAIRS`] for IPv4 groups, with 12-byte keys.
#[map]
pub(crate) static MSF_PAIRS4: HashMap<SourceKey4, SourceValue> =
    HashMap::with_max_entries(DEFAULT_MAX_SOURCES, BPF_F_NO_PREALLOC);

/// `limits::EPOCH_MAP`: the publication epoch, read before the pair lookup.
#[map]
pub(crate) static MSF_EPOCH: Array<u32> = Array::with_max_entries(1, 0);

/// `limits::RETIRED_MAP`: counters of deleted pair entries. Userspace's alone; declared here
/// so that it is created and pinned with the others.
#[map]
pub(crate) static MSF_RETIRED: HashMap<GroupKey, Retired> =
    HashMap::with_max_entries(DEFAULT_MAX_GROUPS, BPF_F_NO_PREALLOC);

/// `limits::REASONS_MAP`: per-CPU packets and bytes by `Reason`.
#[map]
pub(crate) static MSF_REASONS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(Reason::COUNT as u32, 0);

/// `trace::TRACE_CONTROL_MAP`: the packet trace's switch and selection (one element).
#[map]
pub(crate) static MSF_TRACE_CTL: Array<TraceControl> = Array::with_max_entries(1, 0);

/// `trace::TRACE_EVENTS_MAP`: traced frames, while a trace runs.
#[map]
pub(crate) static MSF_TRACE: RingBuf = RingBuf::with_byte_size(TRACE_RING_BYTES, 0);

/// `unjoined::UNJOINED_MAP`: interfaces that drop groups nobody joined, by family bit.
#[map]
pub(crate) static MSF_UNJOINED: HashMap<u32, u32> =
    HashMap::with_max_entries(MAX_UNJOINED_INTERFACES, 0);

/// `unjoined::GATE_MAP`: options begun, options reflected, and the daemon's lease.
#[map]
pub(crate) static MSF_UNJOINED_GATE: Array<u64> = Array::with_max_entries(GATE_ENTRIES, 0);
