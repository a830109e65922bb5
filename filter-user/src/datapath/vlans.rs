//! The VLAN map: which 802.1Q sub-interface's entries judge a VLAN's frames on the interface
//! that carries the program. [`VlanMap`] mirrors what the map holds (read back from pinned
//! maps of an earlier run), like the groups map's mirror in `maps.rs`.

use std::collections::BTreeMap;
use std::os::fd::{AsFd as _, BorrowedFd};

use aya::maps::MapData;
use msfilter_common::{
    VlanKey,
    limits::{MAX_VLANS, VLANS_MAP},
};

use super::{
    Datapath, DatapathError, Result,
    sys::{self, BPF_ANY},
};

/// Largest VLAN id (12 bits).
pub const MAX_VLAN_ID: u16 = 0x0fff;

pub(super) struct VlanMap {
    map: MapData,
    mirror: BTreeMap<VlanKey, u32>,
}

fn map_err(op: &'static str) -> impl FnOnce(std::io::Error) -> DatapathError {
    move |source| DatapathError::Map {
        map: VLANS_MAP,
        op,
        source,
    }
}

impl VlanMap {
    pub(super) fn open(map: MapData) -> Result<Self> {
        let mut this = Self {
            map,
            mirror: BTreeMap::new(),
        };
        for key in sys::keys::<VlanKey>(this.fd()).map_err(map_err("listing keys"))? {
            let mut sub = 0u32;
            if sys::lookup(
                this.fd(),
                bytemuck::bytes_of(&key),
                bytemuck::bytes_of_mut(&mut sub),
            )
            .map_err(map_err("lookup"))?
            {
                this.mirror.insert(key, sub);
            }
        }
        Ok(this)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }
}

impl Datapath {
    /// Judge frames of VLAN `vid` (outer 802.1Q tag) arriving on `parent` by the entries of
    /// interface `sub`. Replaces an earlier mapping of the same VLAN.
    pub fn set_vlan(&mut self, parent: u32, vid: u16, sub: u32) -> Result<()> {
        if vid > MAX_VLAN_ID {
            return Err(DatapathError::InvalidVlan { vid });
        }
        let key = VlanKey::new(parent, vid);
        let map = &mut self.vlans;
        if !map.mirror.contains_key(&key) && map.mirror.len() >= MAX_VLANS as usize {
            return Err(DatapathError::Capacity {
                map: VLANS_MAP,
                capacity: MAX_VLANS,
                in_use: map.mirror.len(),
                needed: 1,
            });
        }
        sys::update(
            map.fd(),
            bytemuck::bytes_of(&key),
            &sub.to_ne_bytes(),
            BPF_ANY,
        )
        .map_err(map_err("update"))?;
        map.mirror.insert(key, sub);
        Ok(())
    }

    /// Stop mapping VLAN `vid` on `parent`: its frames are judged by `parent`'s entries again.
    /// Returns whether there was a mapping.
    pub fn remove_vlan(&mut self, parent: u32, vid: u16) -> Result<bool> {
        let key = VlanKey::new(parent, vid);
        let map = &mut self.vlans;
        if map.mirror.remove(&key).is_none() {
            return Ok(false);
        }
        sys::delete(map.fd(), bytemuck::bytes_of(&key)).map_err(map_err("delete"))?;
        Ok(true)
    }

    /// What the VLAN map holds: (parent, VLAN id) → sub-interface.
    pub fn vlans(&self) -> &BTreeMap<VlanKey, u32> {
        &self.vlans.mirror
    }

    /// Delete every mapping that involves `ifindex`, as parent or as sub-interface; returns
    /// how many.
    pub(super) fn remove_vlans_of(&mut self, ifindex: u32) -> Result<usize> {
        let keys: Vec<VlanKey> = self
            .vlans
            .mirror
            .iter()
            .filter(|(k, sub)| k.ifindex == ifindex || **sub == ifindex)
            .map(|(k, _)| *k)
            .collect();
        for key in &keys {
            self.remove_vlan(key.ifindex, key.vid)?;
        }
        Ok(keys.len())
    }
}
