//! The packet trace, userspace side (`msfilter trace`): switch the XDP program's sampled path
//! on for one selection, read the frames it reports, switch it off again.
//!
//! The switch and the ring buffer are maps of the program (`msfilter_common::trace`), pinned
//! next to the others, so a trace works while the daemon runs, after it was killed (XDP
//! keeps enforcing), and on every interface msfilter's program runs on. One trace at a time:
//! the switch names its owner.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    time::Duration,
};

use aya::maps::{Array, Map, MapData, RingBuf};
use msfilter_common::{
    Addr,
    trace::{TRACE_CONTROL_MAP, TRACE_EVENTS_MAP, TraceControl, TraceEvent},
};

use super::{DatapathError, Result, pins};

/// What to trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceSelection {
    /// Only this interface (0: every interface the program runs on).
    pub ifindex: u32,
    /// Only this group (as the maps hold it: IPv4 mapped).
    pub group: Option<Addr>,
    /// One frame in this many, chosen at random (1: every frame).
    pub sample_one_in: u32,
}

/// A running trace. Dropping it switches the trace off.
pub struct Trace {
    control: Array<MapData, TraceControl>,
    events: RingBuf<MapData>,
    selection: TraceSelection,
    /// This handle switched the trace on (and switches it off when dropped).
    owner: bool,
    /// Events found in the ring buffer at the start, left by an earlier trace.
    discarded: u64,
}

fn map_error(
    map: &'static str,
    op: &'static str,
) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |e| DatapathError::Map {
        map,
        op,
        source: io::Error::other(e.to_string()),
    }
}

impl Trace {
    /// Start a trace through the maps pinned in `dir`.
    pub fn start_pinned(dir: &Path, selection: TraceSelection) -> Result<Self> {
        let open = |name: &'static str| {
            open_pinned(dir, name)?.ok_or_else(|| DatapathError::PinnedMap {
                path: pins::map_path(dir, name),
                detail: "not pinned: no msfilter program with a packet trace has run with this \
                         pin directory (start the daemon, or pass its --pin-dir)"
                    .to_string(),
            })
        };
        Self::start(open(TRACE_CONTROL_MAP)?, open(TRACE_EVENTS_MAP)?, selection)
    }

    pub(super) fn start(
        control: MapData,
        events: MapData,
        selection: TraceSelection,
    ) -> Result<Self> {
        let control = Map::from_map_data(control)
            .and_then(Array::try_from)
            .map_err(map_error(TRACE_CONTROL_MAP, "open"))?;
        let events = Map::from_map_data(events)
            .and_then(RingBuf::try_from)
            .map_err(map_error(TRACE_EVENTS_MAP, "open"))?;
        let mut trace = Self {
            control,
            events,
            selection,
            owner: false,
            discarded: 0,
        };
        let now = trace.read_control()?;
        let me = std::process::id();
        if now.enabled != 0 && now.owner_pid != me && process_exists(now.owner_pid) {
            return Err(DatapathError::TraceBusy { pid: now.owner_pid });
        }
        // Events a trace that died left behind are not this trace's.
        while trace.events.next().is_some() {
            trace.discarded += 1;
        }
        let control = TraceControl {
            enabled: 1,
            ifindex: selection.ifindex,
            sample_one_in: selection.sample_one_in.max(1),
            match_group: u32::from(selection.group.is_some()),
            group: selection.group.unwrap_or_default(),
            owner_pid: me,
            reserved: 0,
            lost: 0,
        };
        trace
            .control
            .set(0, control, 0)
            .map_err(map_error(TRACE_CONTROL_MAP, "update"))?;
        trace.owner = true;
        Ok(trace)
    }

    fn read_control(&self) -> Result<TraceControl> {
        self.control
            .get(&0, 0)
            .map_err(map_error(TRACE_CONTROL_MAP, "lookup"))
    }

    /// Events an earlier trace left unread in the ring buffer, discarded at the start.
    pub const fn discarded(&self) -> u64 {
        self.discarded
    }

    pub const fn selection(&self) -> TraceSelection {
        self.selection
    }

    /// The next traced frame, if one is waiting.
    pub fn next_event(&mut self) -> Option<TraceEvent> {
        loop {
            let item = self.events.next()?;
            // Records of another size are not ours (cannot happen with msfilter's program).
            if item.len() == size_of::<TraceEvent>() {
                return Some(bytemuck::pod_read_unaligned(&item));
            }
        }
    }

    /// Wait up to `timeout` for a frame; `Ok(false)` on timeout. Interrupted by a signal:
    /// `Ok(false)` too, so the caller can look at why.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut fds = [libc::pollfd {
            fd: self.events.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        match unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) } {
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
            0 => Ok(false),
            _ => Ok(true),
        }
    }

    /// Frames selected while the ring buffer was full (their events are lost).
    pub fn lost(&self) -> Result<u64> {
        Ok(self.read_control()?.lost)
    }

    /// Switch the trace off; returns how many events were lost.
    pub fn stop(mut self) -> Result<u64> {
        let lost = self.lost()?;
        self.switch_off()?;
        Ok(lost)
    }

    fn switch_off(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.owner) {
            return Ok(());
        }
        if self.read_control()?.owner_pid == std::process::id() {
            self.control
                .set(0, TraceControl::default(), 0)
                .map_err(map_error(TRACE_CONTROL_MAP, "update"))?;
        }
        Ok(())
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if let Err(e) = self.switch_off() {
            log::error!("switching the packet trace off: {e}");
        }
    }
}

/// Map `name` pinned in `dir` (`None`: not pinned there).
fn open_pinned(dir: &Path, name: &str) -> Result<Option<MapData>> {
    let path = pins::map_path(dir, name);
    if !path.exists() {
        return Ok(None);
    }
    MapData::from_pin(&path)
        .map(Some)
        .map_err(|e| DatapathError::PinnedMap {
            path,
            detail: e.to_string(),
        })
}

/// The pinned trace switch of `dir`, opened (`None`: not pinned there).
fn open_pinned_control(dir: &Path) -> Result<Option<Array<MapData, TraceControl>>> {
    let Some(data) = open_pinned(dir, TRACE_CONTROL_MAP)? else {
        return Ok(None);
    };
    Map::from_map_data(data)
        .and_then(Array::try_from)
        .map(Some)
        .map_err(map_error(TRACE_CONTROL_MAP, "open"))
}

/// The trace switch pinned in `dir` (`None`: not pinned there).
pub fn pinned_switch(dir: &Path) -> Result<Option<TraceControl>> {
    let Some(control) = open_pinned_control(dir)? else {
        return Ok(None);
    };
    control
        .get(&0, 0)
        .map(Some)
        .map_err(map_error(TRACE_CONTROL_MAP, "lookup"))
}

/// Whether the process that switched a trace on still exists (a trace killed with SIGKILL
/// cannot switch it off).
pub fn owner_alive(control: &TraceControl) -> bool {
    process_exists(control.owner_pid)
}

/// Switch off a trace whose process is gone; returns that process id, `None` if no trace is
/// on. A live trace is left alone ([`DatapathError::TraceBusy`]).
pub fn switch_off_abandoned(dir: &Path) -> Result<Option<u32>> {
    let Some(mut control) = open_pinned_control(dir)? else {
        return Ok(None);
    };
    let now = control
        .get(&0, 0)
        .map_err(map_error(TRACE_CONTROL_MAP, "lookup"))?;
    if now.enabled == 0 {
        return Ok(None);
    }
    if owner_alive(&now) {
        return Err(DatapathError::TraceBusy { pid: now.owner_pid });
    }
    control
        .set(0, TraceControl::default(), 0)
        .map_err(map_error(TRACE_CONTROL_MAP, "update"))?;
    Ok(Some(now.owner_pid))
}

fn process_exists(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}
