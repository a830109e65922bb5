//! The follow object's maps and its one global. Names and sizes come from
//! `msfilter_common::follow`.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use msfilter_common::{
    follow::{EVENTS_BYTES, MAX_SOCKETS, SockStore, SocketSeq, Stat},
    unjoined::GATE_ENTRIES,
};

/// `follow::NETNS_COOKIE_GLOBAL`: set by the loader to the followed namespace's cookie.
#[unsafe(no_mangle)]
pub(crate) static MSF_FOLLOW_NETNS_COOKIE: u64 = 0;

/// `follow::EVENTS_MAP`: one `Event` per membership option and per release of a followed
/// socket.
#[map]
pub(crate) static MSF_FOLLOW_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// `follow::SOCK_STORE_MAP`: the id of each followed socket, stored with the socket (freed
/// by the kernel with it).
#[btf_map]
pub(crate) static MSF_FOLLOW_SOCKID: SkStorage<SockStore> = SkStorage::new();

/// `follow::SOCKETS_MAP`: socket id → options begun on it. Not preallocated: memory follows
/// the sockets that use membership options.
#[map]
pub(crate) static MSF_FOLLOW_SOCKETS: HashMap<u64, SocketSeq> =
    HashMap::with_max_entries(MAX_SOCKETS, BPF_F_NO_PREALLOC);

/// `follow::STATS_MAP`: per-CPU counters by `Stat`.
#[map]
pub(crate) static MSF_FOLLOW_STATS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(Stat::COUNT as u32, 0);

/// `unjoined::GATE_MAP`, shared with the XDP program through the pin directory: the hooks
/// count every membership option begun.
#[map]
pub(crate) static MSF_UNJOINED_GATE: Array<u64> = Array::with_max_entries(GATE_ENTRIES, 0);
