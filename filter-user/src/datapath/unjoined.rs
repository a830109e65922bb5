//! Where the drop-unjoined maps are written (`msfilter_common::unjoined`): the interfaces'
//! family bits, and the gate's `settled` count and lease. The gate's `begun` count belongs to
//! the follow hooks; this side only reads it.

use std::collections::BTreeMap;
use std::os::fd::{AsFd as _, BorrowedFd};

use aya::maps::MapData;
use msfilter_common::unjoined::{
    GATE_BEGUN, GATE_LEASE, GATE_MAP, GATE_SETTLED, LEASE_NS, UNJOINED_MAP,
};

use super::{
    Datapath, DatapathError, Result,
    sys::{self, BPF_ANY},
};

/// The two maps, as taken from the loaded object.
pub(super) struct UnjoinedMaps {
    pub(super) flags: MapData,
    pub(super) gate: MapData,
}

/// What the gate holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gate {
    pub begun: u64,
    pub settled: u64,
    /// `CLOCK_MONOTONIC` ns until which unjoined groups may be dropped (0: never).
    pub lease_until_ns: u64,
}

fn map_err(map: &'static str, op: &'static str) -> impl FnOnce(std::io::Error) -> DatapathError {
    move |source| DatapathError::Map { map, op, source }
}

/// `CLOCK_MONOTONIC` now, in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

impl UnjoinedMaps {
    fn flags_fd(&self) -> BorrowedFd<'_> {
        self.flags.fd().as_fd()
    }

    fn gate_fd(&self) -> BorrowedFd<'_> {
        self.gate.fd().as_fd()
    }

    fn gate_word(&self, index: u32) -> Result<u64> {
        let mut value = 0u64;
        sys::lookup(
            self.gate_fd(),
            &index.to_ne_bytes(),
            bytemuck::bytes_of_mut(&mut value),
        )
        .map_err(map_err(GATE_MAP, "lookup"))?;
        Ok(value)
    }

    fn set_gate_word(&self, index: u32, value: u64) -> Result<()> {
        sys::update(
            self.gate_fd(),
            &index.to_ne_bytes(),
            &value.to_ne_bytes(),
            BPF_ANY,
        )
        .map_err(map_err(GATE_MAP, "update"))
    }
}

impl Datapath {
    /// Where the gate is pinned, for the follow hooks to share it (`None` without a pin
    /// directory: then drop-unjoined cannot work).
    pub fn gate_pin(&self) -> Option<std::path::PathBuf> {
        self.pin_dir
            .as_deref()
            .map(|dir| super::pins::map_path(dir, GATE_MAP))
    }

    /// Set which families `ifindex` drops unjoined groups of (`unjoined::DROP_IPV4` /
    /// `DROP_IPV6` bits; 0 removes the interface).
    pub fn set_unjoined(&mut self, ifindex: u32, flags: u32) -> Result<()> {
        let fd = self.unjoined.flags_fd();
        if flags == 0 {
            sys::delete(fd, &ifindex.to_ne_bytes()).map_err(map_err(UNJOINED_MAP, "delete"))?;
            return Ok(());
        }
        sys::update(fd, &ifindex.to_ne_bytes(), &flags.to_ne_bytes(), BPF_ANY)
            .map_err(map_err(UNJOINED_MAP, "update"))
    }

    /// Every interface with drop-unjoined bits, and its bits.
    pub fn unjoined(&self) -> Result<BTreeMap<u32, u32>> {
        let fd = self.unjoined.flags_fd();
        let mut out = BTreeMap::new();
        for key in sys::keys::<u32>(fd).map_err(map_err(UNJOINED_MAP, "listing keys"))? {
            let mut flags = 0u32;
            if sys::lookup(fd, &key.to_ne_bytes(), bytemuck::bytes_of_mut(&mut flags))
                .map_err(map_err(UNJOINED_MAP, "lookup"))?
            {
                out.insert(key, flags);
            }
        }
        Ok(out)
    }

    /// What the gate holds now.
    pub fn gate(&self) -> Result<Gate> {
        Ok(Gate {
            begun: self.unjoined.gate_word(GATE_BEGUN)?,
            settled: self.unjoined.gate_word(GATE_SETTLED)?,
            lease_until_ns: self.unjoined.gate_word(GATE_LEASE)?,
        })
    }

    /// Say that the groups map reflects every membership option up to the hooks' count
    /// `settled`, and renew the lease for [`LEASE_NS`] from now.
    pub fn settle_gate(&mut self, settled: u64) -> Result<()> {
        self.unjoined.set_gate_word(GATE_SETTLED, settled)?;
        self.unjoined
            .set_gate_word(GATE_LEASE, monotonic_ns() + LEASE_NS)
    }

    /// End the lease: no unjoined group is dropped until the next [`Datapath::settle_gate`].
    pub fn open_gate(&mut self) -> Result<()> {
        self.unjoined.set_gate_word(GATE_LEASE, 0)
    }

    /// Write the gate whole (tests: a closed gate with a given lease, or an open one).
    pub fn write_gate(&mut self, gate: Gate) -> Result<()> {
        self.unjoined.set_gate_word(GATE_BEGUN, gate.begun)?;
        self.unjoined.set_gate_word(GATE_SETTLED, gate.settled)?;
        self.unjoined.set_gate_word(GATE_LEASE, gate.lease_until_ns)
    }
}
