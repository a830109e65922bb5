//! The follow object in the kernel: its two cgroup programs attached to the root of the
//! cgroup v2 hierarchy, its ring buffer read, its per-socket ids and change counters and
//! its statistics looked up.

use std::{
    fs::File,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf, SkStorage},
    programs::{CgroupAttachMode, CgroupSock, CgroupSockopt},
};
use msfilter_common::{
    follow::{
        EVENTS_MAP, Event, NETNS_COOKIE_GLOBAL, RELEASE_PROGRAM, SETSOCKOPT_PROGRAM,
        SOCK_STORE_MAP, SOCKETS_MAP, STATS_MAP, SockStore, SocketSeq, Stat,
    },
    unjoined::{GATE_BEGUN, GATE_MAP},
};

use super::FollowError;

/// The follow object built from `filter-ebpf/src/follow/` by `build.rs`.
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/msfilter-follow"));

/// Totals of the hooks' counters (summed over CPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookStats {
    pub events: u64,
    pub lost: u64,
    pub untracked: u64,
    pub closes: u64,
}

/// The loaded and attached hooks. Dropping this detaches them and frees the maps.
pub struct Hooks {
    events: RingBuf<MapData>,
    sockets: HashMap<MapData, u64, SocketSeq>,
    ids: SkStorage<MapData, SockStore>,
    stats: PerCpuArray<MapData, u64>,
    gate: Array<MapData, u64>,
    cgroup: PathBuf,
    // Holds the programs and their links (declared last: dropped after the maps).
    _ebpf: Ebpf,
}

fn map_error(name: &'static str) -> impl FnOnce(MapError) -> FollowError {
    move |e| FollowError::Map {
        map: name,
        detail: e.to_string(),
    }
}

impl Hooks {
    /// Load the object for the network namespace whose cookie is `netns_cookie`, attach the
    /// release hook and then the setsockopt hook to the cgroup v2 directory `cgroup` (with
    /// other programs allowed there too), and open the maps.
    ///
    /// With `gate_pin`, the drop-unjoined gate (`msfilter_common::unjoined::GATE_MAP`) is the
    /// one pinned there (by the datapath), so the XDP program sees the options begun.
    pub fn attach(
        cgroup: &Path,
        netns_cookie: u64,
        gate_pin: Option<&Path>,
    ) -> Result<Self, FollowError> {
        if OBJECT.is_empty() {
            return Err(FollowError::ObjectMissing);
        }
        // No kernel BTF: the object has no CO-RE relocations, and parsing the kernel's BTF
        // would be most of the load time.
        let mut loader = EbpfLoader::new();
        loader
            .btf(None)
            .override_global(NETNS_COOKIE_GLOBAL, &netns_cookie, true);
        if let Some(path) = gate_pin {
            loader.map_pin_path(GATE_MAP, path);
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| FollowError::Load(error_chain(&e)))?;
        let dir = File::open(cgroup).map_err(|e| FollowError::Io {
            what: format!("opening the cgroup directory {}", cgroup.display()),
            source: e,
        })?;
        let attach_error = |program: &'static str| {
            move |detail: String| FollowError::Attach {
                program,
                cgroup: cgroup.to_path_buf(),
                detail,
            }
        };
        // Release first: a socket the setsockopt hook names is then always forgotten again.
        {
            let err = attach_error(RELEASE_PROGRAM);
            let prog: &mut CgroupSock = ebpf
                .program_mut(RELEASE_PROGRAM)
                .ok_or_else(|| err("not in the object".into()))?
                .try_into()
                .map_err(|e| err(error_chain(&e)))?;
            prog.load().map_err(|e| err(error_chain(&e)))?;
            prog.attach(&dir, CgroupAttachMode::Single)
                .map_err(|e| err(error_chain(&e)))?;
        }
        {
            let err = attach_error(SETSOCKOPT_PROGRAM);
            let prog: &mut CgroupSockopt = ebpf
                .program_mut(SETSOCKOPT_PROGRAM)
                .ok_or_else(|| err("not in the object".into()))?
                .try_into()
                .map_err(|e| err(error_chain(&e)))?;
            prog.load().map_err(|e| err(error_chain(&e)))?;
            prog.attach(&dir, CgroupAttachMode::Single)
                .map_err(|e| err(error_chain(&e)))?;
        }
        let mut take = |name: &'static str| {
            ebpf.take_map(name).ok_or(FollowError::Map {
                map: name,
                detail: "not in the object".into(),
            })
        };
        let events = RingBuf::try_from(take(EVENTS_MAP)?).map_err(map_error(EVENTS_MAP))?;
        let sockets = HashMap::try_from(take(SOCKETS_MAP)?).map_err(map_error(SOCKETS_MAP))?;
        let ids = SkStorage::try_from(take(SOCK_STORE_MAP)?).map_err(map_error(SOCK_STORE_MAP))?;
        let stats = PerCpuArray::try_from(take(STATS_MAP)?).map_err(map_error(STATS_MAP))?;
        let gate = Array::try_from(take(GATE_MAP)?).map_err(map_error(GATE_MAP))?;
        Ok(Self {
            events,
            sockets,
            ids,
            stats,
            gate,
            cgroup: cgroup.to_path_buf(),
            _ebpf: ebpf,
        })
    }

    /// Membership options begun, as counted for the drop-unjoined gate (every option's event
    /// is in the ring buffer before it is counted).
    pub fn gate_begun(&self) -> Result<u64, FollowError> {
        self.gate.get(&GATE_BEGUN, 0).map_err(map_error(GATE_MAP))
    }

    /// The cgroup directory the hooks are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The ring buffer's descriptor: readable when events are waiting (for epoll or
    /// tokio's `AsyncFd`).
    pub fn events_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    /// Wait up to `timeout` for events; `Ok(true)` when some are waiting.
    pub fn wait(&self, timeout: Duration) -> Result<bool, FollowError> {
        wait_readable(self.events_fd(), timeout)
    }

    /// Take every waiting event, oldest first.
    pub fn drain(&mut self, mut f: impl FnMut(Event)) -> usize {
        let mut n = 0;
        while let Some(item) = self.events.next() {
            if let Some(event) = parse_event(&item) {
                f(event);
            }
            n += 1;
        }
        n
    }

    /// A socket's change counter, `None` if the hooks do not track it (released, never
    /// named, or the map was full).
    pub fn seq(&self, id: u64) -> Option<SocketSeq> {
        self.sockets.get(&id, 0).ok()
    }

    /// The id of the socket `fd` refers to, if it has one.
    pub fn id_of(&self, fd: BorrowedFd<'_>) -> Option<u64> {
        self.ids.get(&fd.as_raw_fd(), 0).ok().map(|s| s.id)
    }

    /// Name a socket found without an event (by a scan) `id` and start counting its options,
    /// unless the hook named it first; returns the id it has. The caller holds `fd`, so the
    /// socket cannot be released (leaving its counter behind) while this runs. `None` when
    /// the maps are full.
    pub fn track(&mut self, fd: BorrowedFd<'_>, id: u64) -> Option<u64> {
        const BPF_NOEXIST: u64 = 1;
        let raw = fd.as_raw_fd();
        let id = match self.ids.insert(&raw, SockStore { id }, BPF_NOEXIST) {
            Ok(()) => id,
            Err(_) => self.id_of(fd)?,
        };
        match self.sockets.insert(id, SocketSeq::default(), BPF_NOEXIST) {
            Ok(()) => Some(id),
            // Already counted (an option ran on it meanwhile), or the map is full.
            Err(_) => self.seq(id).map(|_| id),
        }
    }

    /// The hooks' counters, summed over CPUs.
    pub fn stats(&self) -> Result<HookStats, FollowError> {
        let total = |stat: Stat| -> Result<u64, FollowError> {
            let values = self
                .stats
                .get(&(stat as u32), 0)
                .map_err(map_error(STATS_MAP))?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        Ok(HookStats {
            events: total(Stat::Events)?,
            lost: total(Stat::Lost)?,
            untracked: total(Stat::Untracked)?,
            closes: total(Stat::Closes)?,
        })
    }
}

/// An error with its cause chain (the verifier log or the errno).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn parse_event(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<Event>() {
        log::warn!("follow: short event of {} bytes ignored", bytes.len());
        return None;
    }
    Some(bytemuck::pod_read_unaligned(&bytes[..size_of::<Event>()]))
}

/// `poll(2)` one descriptor for readability.
pub(super) fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> Result<bool, FollowError> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(FollowError::Io {
                what: "polling the event ring".into(),
                source: e,
            });
        }
    }
}
