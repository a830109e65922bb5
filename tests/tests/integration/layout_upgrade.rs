//! A daemon that finds the maps of the earlier layout pinned takes them over. That layout had
//! sources maps keyed by a generation (`MSF_SOURCES`, `MSF_SOURCES4`) and the generation in
//! the group state's second bit. The entries of each group's generation in force become pair
//! entries with their counters, the other generation's are dropped, the old pins go, and the
//! program judges as before.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::Path;

use aya::maps::{HashMap, Map, MapData, PerCpuHashMap, PerCpuValues};
use msfilter::{
    datapath::{Capacities, Datapath, LoadOptions},
    policy::GroupFilter,
};
use msfilter_common::{
    Counter, GroupKey, GroupKey4, GroupState, GroupValue, Mode, Reason,
    limits::{EPOCH_MAP, GROUPS_MAP, GROUPS4_MAP, RETIRED_MAP, SOURCES_MAP, SOURCES4_MAP},
    maps::ipv4_mapped,
};
use msfilter_testbed::{
    daemon::PinDir,
    model::judge_kernel,
    packet::{Frame, Ipv4, Ipv6, Upper},
};

const LO: u32 = 1;
const G4: [u8; 4] = [232, 7, 7, 7];
const S4: [u8; 4] = [10, 7, 0, 1];
const S4_SECOND: [u8; 4] = [10, 7, 0, 2];
/// Listed only under the generation not in force: must not survive.
const S4_STALE: [u8; 4] = [10, 7, 0, 3];
const G6: [u8; 16] = [0xff, 0x3e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 7, 7];
const S6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 1];
const S6_OTHER: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 2];

fn load(dir: &Path) -> Datapath {
    Datapath::load(&LoadOptions {
        capacities: Capacities {
            max_groups: 64,
            max_sources: 256,
        },
        pin_dir: Some(dir.to_path_buf()),
    })
    .expect("loading the datapath with a pin directory (run as root)")
}

/// `union bpf_attr` for `BPF_MAP_CREATE`, up to `map_flags`.
#[repr(C)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `union bpf_attr` for `BPF_OBJ_PIN`.
#[repr(C)]
struct PinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> OwnedFd {
    // SAFETY: `attr` is the prefix of `union bpf_attr` that `cmd` reads.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>(),
        )
    };
    assert!(ret >= 0, "bpf({cmd}): {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor that nothing else owns (BPF_OBJ_PIN returns 0: see below).
    unsafe { OwnedFd::from_raw_fd(ret as i32) }
}

/// Create a hash map shaped like the earlier layout's sources map and pin it as `name`.
fn pin_legacy_sources<const N: usize>(
    dir: &Path,
    name: &str,
) -> HashMap<MapData, [u8; N], Counter> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    let fd = bpf(
        BPF_MAP_CREATE,
        &mut CreateAttr {
            map_type: 1, // BPF_MAP_TYPE_HASH
            key_size: N as u32,
            value_size: size_of::<Counter>() as u32,
            max_entries: 256,
            map_flags: 1, // BPF_F_NO_PREALLOC
        },
    );
    let path = CString::new(dir.join(name).into_os_string().into_encoded_bytes()).unwrap();
    let mut attr = PinAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    // BPF_OBJ_PIN returns 0, not a descriptor: keep it from being closed as one.
    std::mem::forget(bpf(BPF_OBJ_PIN, &mut attr));
    drop(fd);
    let data = MapData::from_pin(dir.join(name)).expect("opening the legacy pin");
    HashMap::try_from(Map::HashMap(data)).expect("a hash map")
}

/// The earlier layout's IPv6 sources key: ifindex, generation, three reserved bytes, group,
/// source.
fn legacy_key6(generation: u8, group: [u8; 16], source: [u8; 16]) -> [u8; 40] {
    let mut key = [0; 40];
    key[..4].copy_from_slice(&LO.to_ne_bytes());
    key[4] = generation;
    key[8..24].copy_from_slice(&group);
    key[24..].copy_from_slice(&source);
    key
}

/// The earlier layout's IPv4 sources key: ifindex with the generation in bit 31, group,
/// source.
fn legacy_key4(generation: u32, group: [u8; 4], source: [u8; 4]) -> [u8; 12] {
    let mut key = [0; 12];
    key[..4].copy_from_slice(&(LO | (generation << 31)).to_ne_bytes());
    key[4..8].copy_from_slice(&group);
    key[8..].copy_from_slice(&source);
    key
}

/// Set the earlier layout's generation bit in every CPU's copy of a group's state.
fn set_generation_bit<K: aya::Pod>(dir: &Path, map: &str, key: K) {
    let data = MapData::from_pin(dir.join(map)).unwrap();
    let mut groups: PerCpuHashMap<MapData, K, GroupValue> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(data)).unwrap();
    let values: Vec<GroupValue> = groups.get(&key, 0).unwrap().iter().copied().collect();
    let values: Vec<GroupValue> = values
        .into_iter()
        .map(|mut v| {
            v.state = GroupState(v.state.0 | 0b10);
            v
        })
        .collect();
    groups
        .insert(key, PerCpuValues::try_from(values).unwrap(), 0)
        .unwrap();
}

fn udp4(source: [u8; 4], group: [u8; 4]) -> Vec<u8> {
    Frame::new(Ipv4::new(source, group, Upper::udp(&[0; 8]))).to_bytes()
}

fn udp6(source: [u8; 16], group: [u8; 16]) -> Vec<u8> {
    Frame::new(Ipv6::new(source, group, Upper::udp(&[0; 8]))).to_bytes()
}

#[test]
fn pinned_maps_of_the_generation_layout_are_taken_over() {
    let dir = PinDir::new("layout");
    let g4 = ipv4_mapped(G4);
    // A run of this version writes the groups (and pins every map) ...
    let mut dp = load(&dir.0);
    dp.set_filter(LO, g4, Some(GroupFilter::new(Mode::Exclude, [])))
        .unwrap();
    dp.set_filter(LO, G6, Some(GroupFilter::new(Mode::Include, [])))
        .unwrap();
    drop(dp);
    // ... which then look as the earlier layout left them: both groups on generation 1, the
    // sources in generation-keyed maps, no pairs maps, no epoch, no retired counters.
    for map in [SOURCES_MAP, SOURCES4_MAP, EPOCH_MAP, RETIRED_MAP] {
        std::fs::remove_file(dir.0.join(map)).unwrap();
    }
    set_generation_bit(
        &dir.0,
        GROUPS4_MAP,
        GroupKey4::of(&GroupKey::new(LO, g4)).unwrap(),
    );
    set_generation_bit(&dir.0, GROUPS_MAP, GroupKey::new(LO, G6));
    let mut legacy4 = pin_legacy_sources(&dir.0, "MSF_SOURCES4");
    let counted = Counter {
        packets: 5,
        bytes: 500,
    };
    legacy4.insert(legacy_key4(1, G4, S4), counted, 0).unwrap();
    legacy4
        .insert(legacy_key4(1, G4, S4_SECOND), Counter::ZERO, 0)
        .unwrap();
    legacy4
        .insert(legacy_key4(0, G4, S4_STALE), counted, 0)
        .unwrap();
    let mut legacy6 = pin_legacy_sources(&dir.0, "MSF_SOURCES");
    let counted6 = Counter {
        packets: 3,
        bytes: 300,
    };
    legacy6.insert(legacy_key6(1, G6, S6), counted6, 0).unwrap();
    legacy6
        .insert(legacy_key6(0, G6, S6_OTHER), counted6, 0)
        .unwrap();
    drop((legacy4, legacy6));

    let dp = load(&dir.0);
    for legacy in ["MSF_SOURCES", "MSF_SOURCES4"] {
        assert!(!dir.0.join(legacy).exists(), "{legacy} is unpinned");
    }
    for map in [SOURCES_MAP, SOURCES4_MAP, EPOCH_MAP, RETIRED_MAP] {
        assert!(dir.0.join(map).exists(), "{map} is pinned");
    }
    let installed = &dp.installed()[&GroupKey::new(LO, g4)];
    assert_eq!(installed.state, GroupState::new(Mode::Exclude));
    assert_eq!(
        installed.sources,
        [ipv4_mapped(S4), ipv4_mapped(S4_SECOND)].into(),
        "the generation in force, without the other's entry"
    );
    assert_eq!(dp.installed()[&GroupKey::new(LO, G6)].sources, [S6].into());
    assert_eq!(
        dp.source_counter(LO, g4, ipv4_mapped(S4)).unwrap(),
        Some(counted),
        "counters come along"
    );
    assert_eq!(dp.source_counter(LO, G6, S6).unwrap(), Some(counted6));
    for (what, frame, expected) in [
        ("S4", udp4(S4, G4), Reason::Excluded),
        ("S4_SECOND", udp4(S4_SECOND, G4), Reason::Excluded),
        ("S4_STALE", udp4(S4_STALE, G4), Reason::NotExcluded),
        ("S6", udp6(S6, G6), Reason::Included),
        ("S6_OTHER", udp6(S6_OTHER, G6), Reason::NotIncluded),
    ] {
        assert_eq!(
            judge_kernel(&dp, &frame, LO),
            (expected.verdict(), expected),
            "{what}"
        );
    }
    let totals = dp.group_counters(LO, g4).unwrap().unwrap();
    assert_eq!(
        totals.dropped.packets,
        counted.packets + 2,
        "the migrated count and the two drops since"
    );
    dp.shutdown(false);
    assert!(
        !dir.0.join(SOURCES_MAP).exists(),
        "shutdown removes the pins"
    );
}
