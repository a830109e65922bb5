//! The datapath layer: the XDP object, where it is attached, and what its maps hold.
//!
//! * [`Datapath::load`]: load the embedded object with the chosen map capacities.
//! * [`Datapath::attach`] / [`Datapath::detach`]: driver mode first, generic (skb) mode as
//!   fallback; detach deletes every map entry of that interface.
//! * [`Datapath::set_filter`] / [`Datapath::set_filters`]: make a group's entries equal a
//!   desired filter, writing only the difference, in batches, in an order that never shows
//!   the program a mix of two filters' modes (see `maps.rs`).
//! * [`Datapath::reason_counters`], [`Datapath::group_counters`],
//!   [`Datapath::source_counters`]: counters summed over CPUs.
//! * [`Datapath::test_run`]: run the program on a frame through `BPF_PROG_TEST_RUN`.
//! * [`Datapath::set_vlan`] / [`Datapath::remove_vlan`]: which 802.1Q sub-interface's
//!   entries judge a VLAN's frames on the interface carrying the program (`vlans.rs`).
//!
//! Interfaces are given by index ([`crate::iface`] resolves names); what a group's entries
//! must hold is a [`GroupFilter`] of the policy model.

mod attach;
mod counters;
mod maps;
mod pins;
pub mod sys;
mod trace;
mod unjoined;
mod vlans;

use std::{io, path::PathBuf};

pub use attach::{AttachMode, Attachment, Replaced, VlanCarrier};
use aya::{Ebpf, EbpfLoader, maps::MapData, programs::Xdp};
pub use counters::{GroupCounters, ReasonCounters};
pub use maps::{FilterChange, Installed};
use msfilter_common::limits::{
    DEFAULT_MAX_GROUPS, DEFAULT_MAX_SOURCES, EPOCH_MAP, GROUPS_MAP, GROUPS4_MAP, MIN_MAX_GROUPS,
    MIN_MAX_SOURCES, PROGRAM_NAME, REASONS_MAP, RETIRED_MAP, SOURCES_MAP, SOURCES4_MAP, VLANS_MAP,
};
pub use trace::{Trace, TraceSelection, owner_alive, pinned_switch, switch_off_abandoned};
pub use unjoined::{Gate, monotonic_ns};
pub use vlans::MAX_VLAN_ID;

// What a group's entries must hold: the policy model's filter.
use msfilter_common::unjoined::{GATE_MAP, UNJOINED_MAP};

use crate::policy::GroupFilter;

/// The XDP object built from `filter-ebpf` by `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/msfilter-xdp"));

/// Errors of the datapath layer.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "this build has no XDP object (it was built with AYA_BUILD_SKIP); rebuild without it \
         after `cargo xtask setup`"
    )]
    ObjectMissing,
    #[error("map capacity {name} = {value} is out of range (at least {min})")]
    InvalidCapacity {
        name: &'static str,
        value: u32,
        min: u32,
    },
    #[error("loading the XDP object failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the XDP object has no {kind} named {name}")]
    MissingInObject {
        kind: &'static str,
        name: &'static str,
    },
    #[error("loading the XDP program into the kernel failed: {0}")]
    LoadProgram(#[source] Box<aya::programs::ProgramError>),
    #[error(transparent)]
    NoSuchInterface(#[from] crate::iface::NoSuchInterface),
    #[error("msfilter is already attached to {iface} (mode {mode})")]
    AlreadyAttached { iface: String, mode: AttachMode },
    #[error("msfilter is not attached to interface index {0}")]
    NotAttached(u32),
    #[error("attaching to {iface} failed: {detail}")]
    Attach { iface: String, detail: String },
    #[error("detaching from {iface} failed: {detail}")]
    Detach { iface: String, detail: String },
    #[error(
        "the {map} map is full: capacity {capacity}, {in_use} in use, this change needs \
         {needed} more; nothing was changed (raise the capacity at load time)"
    )]
    Capacity {
        map: &'static str,
        capacity: u32,
        in_use: usize,
        needed: usize,
    },
    #[error("{op} on the {map} map failed: {source}")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("running the program on a test frame failed: {0}")]
    TestRun(#[source] Box<aya::programs::ProgramError>),
    #[error(
        "{iface} already runs XDP program {id} ({name}, {mode} mode) that msfilter did not \
         attach; refusing to take it over (attach with --replace to replace it)"
    )]
    ForeignProgram {
        iface: String,
        id: u32,
        name: String,
        mode: String,
    },
    #[error("pin directory {dir}: {detail}")]
    PinDir { dir: PathBuf, detail: String },
    #[error("pinned map {path}: {detail}")]
    PinnedMap { path: PathBuf, detail: String },
    #[error("pinning {what}: {detail}")]
    Pin { what: String, detail: String },
    #[error("this needs a pin directory (the daemon always has one)")]
    NotPinned,
    #[error("a packet trace is already running (process {pid}); one trace at a time")]
    TraceBusy { pid: u32 },
    #[error("VLAN id {vid} is out of range (0 to 4095)")]
    InvalidVlan { vid: u16 },
    #[error("{iface}: {detail}")]
    Vlan { iface: String, detail: String },
}

pub type Result<T, E = DatapathError> = std::result::Result<T, E>;

/// Map capacities, chosen at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    pub max_groups: u32,
    pub max_sources: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Self {
            max_groups: DEFAULT_MAX_GROUPS,
            max_sources: DEFAULT_MAX_SOURCES,
        }
    }
}

/// Options for [`Datapath::load`].
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub capacities: Capacities,
    /// Where to pin (or find already pinned) maps; `None` keeps them private to this process.
    pub pin_dir: Option<PathBuf>,
}

/// The program's size in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramSize {
    pub verified_instructions: Option<u32>,
    pub translated_bytes: Option<u32>,
    pub jited_bytes: u32,
}

/// The loaded XDP program, its maps, and what this process wrote into them.
pub struct Datapath {
    ebpf: Ebpf,
    maps: maps::FilterMaps,
    unjoined: unjoined::UnjoinedMaps,
    vlans: vlans::VlanMap,
    attachments: attach::Attachments,
    capacities: Capacities,
    pin_dir: Option<PathBuf>,
}

impl Datapath {
    /// Load the embedded XDP object with the given map capacities. With a pin directory,
    /// maps already pinned there (by an earlier run) are reused with everything they hold —
    /// their capacities win — and new ones are pinned; the program is pinned too.
    pub fn load(options: &LoadOptions) -> Result<Self> {
        if OBJECT.is_empty() {
            return Err(DatapathError::ObjectMissing);
        }
        let Capacities {
            max_groups,
            max_sources,
        } = options.capacities;
        for (name, value, min) in [
            ("max_groups", max_groups, MIN_MAX_GROUPS),
            ("max_sources", max_sources, MIN_MAX_SOURCES),
        ] {
            if value < min {
                return Err(DatapathError::InvalidCapacity { name, value, min });
            }
        }
        raise_memlock_limit();
        let mut capacities = options.capacities;
        if let Some(dir) = &options.pin_dir {
            pins::prepare(dir)?;
            if let Some((g, s)) = pins::pinned_capacities(dir)? {
                if (g, s) != (max_groups, max_sources) {
                    log::warn!(
                        "the pinned maps in {} hold {g} groups and {s} sources, not the {max_groups} \
                         and {max_sources} asked for; keeping them (remove the pins to resize)",
                        dir.display()
                    );
                }
                capacities = Capacities {
                    max_groups: g,
                    max_sources: s,
                };
            }
        }
        let mut ebpf = load_object(OBJECT, capacities, options.pin_dir.as_deref())?;
        program_mut(&mut ebpf)?
            .load()
            .map_err(|e| DatapathError::LoadProgram(Box::new(e)))?;
        if let Some(dir) = &options.pin_dir {
            let path = pins::program_path(dir, None);
            let _ = pins::unpin(&path);
            program_mut(&mut ebpf)?
                .pin(&path)
                .map_err(|e| DatapathError::Pin {
                    what: "the program".into(),
                    detail: e.to_string(),
                })?;
        }

        let mut take = |name: &'static str| -> Result<MapData> {
            let map = ebpf
                .take_map(name)
                .ok_or(DatapathError::MissingInObject { kind: "map", name })?;
            Ok(match map {
                aya::maps::Map::HashMap(d)
                | aya::maps::Map::PerCpuHashMap(d)
                | aya::maps::Map::PerCpuArray(d)
                | aya::maps::Map::Array(d) => d,
                _ => {
                    return Err(DatapathError::MissingInObject {
                        kind: "map of the expected type",
                        name,
                    });
                }
            })
        };
        let wide = maps::FamilyMaps {
            groups: take(GROUPS_MAP)?,
            sources: take(SOURCES_MAP)?,
        };
        let v4 = maps::FamilyMaps {
            groups: take(GROUPS4_MAP)?,
            sources: take(SOURCES4_MAP)?,
        };
        let shared = maps::SharedMaps {
            reasons: take(REASONS_MAP)?,
            epoch: take(EPOCH_MAP)?,
            retired: take(RETIRED_MAP)?,
        };
        let unjoined = unjoined::UnjoinedMaps {
            flags: take(UNJOINED_MAP)?,
            gate: take(GATE_MAP)?,
        };
        let maps =
            maps::FilterMaps::open(wide, v4, shared, capacities, options.pin_dir.as_deref())?;
        let vlans = vlans::VlanMap::open(take(VLANS_MAP)?)?;
        Ok(Self {
            ebpf,
            maps,
            unjoined,
            vlans,
            attachments: attach::Attachments::default(),
            capacities,
            pin_dir: options.pin_dir.clone(),
        })
    }

    /// Start a packet trace on this datapath's own program (the CLI uses the pinned maps,
    /// [`Trace::start_pinned`]).
    pub fn trace(&self, selection: TraceSelection) -> Result<Trace> {
        let reopen = |name: &'static str| -> Result<MapData> {
            let data = match self.ebpf.map(name) {
                Some(aya::maps::Map::Array(d) | aya::maps::Map::RingBuf(d)) => d,
                _ => return Err(DatapathError::MissingInObject { kind: "map", name }),
            };
            let fail = |e: aya::maps::MapError| DatapathError::Map {
                map: name,
                op: "open",
                source: io::Error::other(e.to_string()),
            };
            MapData::from_id(data.info().map_err(fail)?.id()).map_err(fail)
        };
        Trace::start(
            reopen(msfilter_common::trace::TRACE_CONTROL_MAP)?,
            reopen(msfilter_common::trace::TRACE_EVENTS_MAP)?,
            selection,
        )
    }

    /// Another instance of the program (`object`, or this build's own), loaded against the
    /// same pinned maps.
    fn load_instance(&self, object: Option<&[u8]>) -> Result<Ebpf> {
        let dir = self.pin_dir.as_deref().ok_or(DatapathError::NotPinned)?;
        // The object must be 8-byte aligned for the ELF parser.
        let aligned: Vec<u64>;
        let bytes = match object {
            None => OBJECT,
            Some(bytes) => {
                aligned = bytes
                    .chunks(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b[..c.len()].copy_from_slice(c);
                        u64::from_ne_bytes(b)
                    })
                    .collect();
                &bytemuck::cast_slice::<u64, u8>(&aligned)[..bytes.len()]
            }
        };
        let mut ebpf = load_object(bytes, self.capacities, Some(dir))?;
        program_mut(&mut ebpf)?
            .load()
            .map_err(|e| DatapathError::LoadProgram(Box::new(e)))?;
        Ok(ebpf)
    }

    /// The shut-down sequence. Without `keep`, every owned interface is released (program
    /// detached, entries deleted) and the pins this process created are removed. With `keep`,
    /// everything stays attached and pinned: XDP keeps enforcing the last policy until a
    /// daemon adopts it again.
    pub fn shutdown(mut self, keep: bool) {
        if keep {
            log::info!("keeping XDP attached and pinned");
            return;
        }
        let owned: Vec<u32> = self.attachments.0.keys().copied().collect();
        for ifindex in owned {
            match self.detach(ifindex, false) {
                Ok(n) => log::info!("released interface {ifindex} ({n} entries deleted)"),
                Err(e) => log::error!("releasing interface {ifindex}: {e}"),
            }
        }
        if let Some(dir) = self.pin_dir.take() {
            if !pins::pinned_links(&dir).unwrap_or_default().is_empty() {
                log::info!(
                    "interfaces released with --keep stay enforcing; their pins and the maps stay \
                     in {}",
                    dir.display()
                );
                return;
            }
            let maps = pins::MAPS.iter().map(|m| pins::map_path(&dir, m));
            for path in std::iter::once(pins::program_path(&dir, None)).chain(maps) {
                if let Err(e) = pins::unpin(&path) {
                    log::error!("removing {}: {e}", path.display());
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }

    /// The program's size as the kernel holds it: what the verifier processed, and the
    /// translated and JIT-compiled sizes.
    pub fn program_size(&self) -> Result<ProgramSize> {
        let info = self
            .program()?
            .info()
            .map_err(|e| DatapathError::LoadProgram(Box::new(e)))?;
        Ok(ProgramSize {
            verified_instructions: info.verified_instruction_count(),
            translated_bytes: info.size_translated(),
            jited_bytes: info.size_jitted(),
        })
    }

    /// The pin directory, if any.
    pub fn pin_dir(&self) -> Option<&std::path::Path> {
        self.pin_dir.as_deref()
    }

    pub const fn capacities(&self) -> Capacities {
        self.capacities
    }

    fn program(&self) -> Result<&Xdp> {
        self.ebpf
            .program(PROGRAM_NAME)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .ok_or(DatapathError::MissingInObject {
                kind: "XDP program",
                name: PROGRAM_NAME,
            })
    }

    /// The kernel's memory figure for each map: (groups, sources, reasons), in bytes.
    pub fn map_memory(&self) -> Result<(u64, u64, u64)> {
        self.maps.memlock()
    }
}

/// Interfaces with a link pinned in `dir`: those an msfilter daemon attached (and, after a
/// `detach --keep` or a kill, those its program still enforces on).
pub fn pinned_interfaces(dir: &std::path::Path) -> io::Result<Vec<u32>> {
    pins::pinned_links(dir)
}

/// Parse an object and create (or, with `pin_dir`, reuse or pin) its maps.
fn load_object(
    bytes: &[u8],
    capacities: Capacities,
    pin_dir: Option<&std::path::Path>,
) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(GROUPS_MAP, capacities.max_groups)
        .map_max_entries(SOURCES_MAP, capacities.max_sources)
        .map_max_entries(GROUPS4_MAP, capacities.max_groups)
        .map_max_entries(SOURCES4_MAP, capacities.max_sources);
    if let Some(dir) = pin_dir {
        for map in pins::MAPS {
            loader.map_pin_path(map, pins::map_path(dir, map));
        }
    }
    loader
        .load(bytes)
        .map_err(|e| DatapathError::Load(Box::new(e)))
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(PROGRAM_NAME)
        .and_then(|p| <&mut Xdp>::try_from(p).ok())
        .ok_or(DatapathError::MissingInObject {
            kind: "XDP program",
            name: PROGRAM_NAME,
        })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it where allowed.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "could not lift RLIMIT_MEMLOCK: {}",
            io::Error::last_os_error()
        );
    }
}

// Tests and the daemon hand the datapath to threads inside network namespaces.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Datapath>();
};
