//! The pin directory: where the maps, the program and one link per owned interface are
//! pinned, so XDP keeps enforcing when the daemon dies and a restarted daemon finds them.
//!
//! Layout: `<dir>/MSF_GROUPS`, `<dir>/MSF_PAIRS`, `<dir>/MSF_GROUPS4`, `<dir>/MSF_PAIRS4`,
//! `<dir>/MSF_REASONS`, `<dir>/MSF_EPOCH`, `<dir>/MSF_RETIRED`, `<dir>/MSF_TRACE_CTL`,
//! `<dir>/MSF_TRACE`, `<dir>/MSF_VLANS`, `<dir>/MSF_UNJOINED`, `<dir>/MSF_UNJOINED_GATE` (maps;
//! newer ones appear beside older pins on first load; the gate is shared with the follow
//! hooks; the sources maps of the earlier layout, `MSF_SOURCES` and `MSF_SOURCES4`, are
//! copied into the pairs maps and removed),
//! `<dir>/program` (the program the daemon loaded), `<dir>/link-<ifindex>` (the XDP link of an
//! owned interface), `<dir>/program-<ifindex>` (a program that replaced it on that interface).

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use aya::maps::MapData;
use msfilter_common::{
    limits::{
        EPOCH_MAP, GROUPS_MAP, GROUPS4_MAP, LEGACY_SOURCES_MAPS, REASONS_MAP, RETIRED_MAP,
        SOURCES_MAP, SOURCES4_MAP, VLANS_MAP,
    },
    trace::{TRACE_CONTROL_MAP, TRACE_EVENTS_MAP},
    unjoined::{GATE_MAP, UNJOINED_MAP},
};

use super::DatapathError;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The maps that are pinned, all shared by every program instance loaded with this directory.
pub(super) const MAPS: [&str; 12] = [
    GROUPS_MAP,
    SOURCES_MAP,
    GROUPS4_MAP,
    SOURCES4_MAP,
    REASONS_MAP,
    EPOCH_MAP,
    RETIRED_MAP,
    TRACE_CONTROL_MAP,
    TRACE_EVENTS_MAP,
    UNJOINED_MAP,
    GATE_MAP,
    VLANS_MAP,
];

/// Where the maps are pinned.
pub(super) fn map_path(dir: &Path, map: &str) -> PathBuf {
    dir.join(map)
}

pub(super) fn link_path(dir: &Path, ifindex: u32) -> PathBuf {
    dir.join(format!("link-{ifindex}"))
}

pub(super) fn program_path(dir: &Path, ifindex: Option<u32>) -> PathBuf {
    match ifindex {
        Some(i) => dir.join(format!("program-{i}")),
        None => dir.join("program"),
    }
}

/// Interface indexes with a pinned link in `dir`.
pub(super) fn pinned_links(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let name = entry?.file_name();
                if let Some(i) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("link-"))
                    .and_then(|n| n.parse().ok())
                {
                    out.push(i);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort_unstable();
    Ok(out)
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Make sure `dir` exists on a BPF filesystem. `/sys/fs/bpf` is mounted if it is not yet
/// (as systemd does at boot); any other place must already be on bpffs.
pub(super) fn prepare(dir: &Path) -> Result<(), DatapathError> {
    let fail = |detail: String| DatapathError::PinDir {
        dir: dir.to_path_buf(),
        detail,
    };
    let standard = Path::new("/sys/fs/bpf");
    if dir.starts_with(standard) && !is_bpffs(standard).unwrap_or(false) {
        let (src, target, fstype) = (c"bpf", c"/sys/fs/bpf", c"bpf");
        // SAFETY: mount(2) with valid NUL-terminated strings and no data.
        let ret = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if ret != 0 {
            return Err(fail(format!(
                "mounting bpffs on /sys/fs/bpf: {}",
                io::Error::last_os_error()
            )));
        }
        log::info!("mounted bpffs on /sys/fs/bpf");
    }
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating it: {e}")))?;
    match is_bpffs(dir) {
        Ok(true) => Ok(()),
        Ok(false) => Err(fail(
            "it is not on a BPF filesystem (mount one with `mount -t bpf bpf <dir>`)".into(),
        )),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Expected shape of each pinned map: (name, key size, value size). The last two are the
/// sources maps of the earlier layout, whose capacity the pairs maps take over.
fn expected_shapes() -> [(&'static str, u32, u32); 7] {
    use msfilter_common::{
        Counter, GroupKey, GroupKey4, GroupValue, SourceKey, SourceKey4, maps::SourceValue,
    };
    [
        (
            GROUPS_MAP,
            size_of::<GroupKey>() as u32,
            size_of::<GroupValue>() as u32,
        ),
        (
            SOURCES_MAP,
            size_of::<SourceKey>() as u32,
            size_of::<SourceValue>() as u32,
        ),
        (REASONS_MAP, 4, size_of::<Counter>() as u32),
        (
            GROUPS4_MAP,
            size_of::<GroupKey4>() as u32,
            size_of::<GroupValue>() as u32,
        ),
        (
            SOURCES4_MAP,
            size_of::<SourceKey4>() as u32,
            size_of::<SourceValue>() as u32,
        ),
        (LEGACY_SOURCES_MAPS[0], 40, size_of::<Counter>() as u32),
        (LEGACY_SOURCES_MAPS[1], 12, size_of::<Counter>() as u32),
    ]
}

/// Capacities of maps already pinned in `dir` (`None` when nothing is pinned there yet).
/// A pinned map of another shape belongs to an incompatible msfilter: refuse rather than
/// guess.
pub(super) fn pinned_capacities(dir: &Path) -> Result<Option<(u32, u32)>, DatapathError> {
    let mut capacities = Vec::new();
    for (name, key, value) in expected_shapes() {
        let path = map_path(dir, name);
        if !path.exists() {
            capacities.push(None);
            continue;
        }
        let map = MapData::from_pin(&path).map_err(|e| DatapathError::PinnedMap {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let info = map.info().map_err(|e| DatapathError::PinnedMap {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        if info.key_size() != key || info.value_size() != value {
            return Err(DatapathError::PinnedMap {
                path,
                detail: format!(
                    "key/value sizes {}/{} where this msfilter uses {key}/{value}: it was pinned \
                     by an incompatible version; remove it to start afresh",
                    info.key_size(),
                    info.value_size()
                ),
            });
        }
        if name == REASONS_MAP && info.max_entries() != msfilter_common::Reason::COUNT as u32 {
            // Pinned by a version with fewer reasons: only counters are lost by replacing it.
            log::warn!(
                "{} counts {} reasons where this msfilter has {}; replacing it (the counters \
                 by reason restart from zero)",
                path.display(),
                info.max_entries(),
                msfilter_common::Reason::COUNT
            );
            drop(map);
            unpin(&path).map_err(|e| DatapathError::PinnedMap {
                path: path.clone(),
                detail: format!("removing it: {e}"),
            })?;
        }
        capacities.push(Some(info.max_entries()));
    }
    match capacities.as_slice() {
        [Some(g), Some(s), Some(_), Some(_), Some(_), None, None] => Ok(Some((*g, *s))),
        // Pins of the earlier layouts (sources maps with generations, with or without the IPv4
        // maps): the pairs maps are created with their capacity.
        [Some(g), None, Some(_), Some(_), None, Some(s), Some(_)]
        | [Some(g), None, Some(_), None, None, Some(s), None] => Ok(Some((*g, *s))),
        [None, None, None, None, None, None, None] => Ok(None),
        _ => Err(DatapathError::PinnedMap {
            path: dir.to_path_buf(),
            detail: "only some of msfilter's maps are pinned there; remove them to start afresh"
                .into(),
        }),
    }
}

/// Remove a pin, ignoring one that is already gone.
pub(super) fn unpin(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
