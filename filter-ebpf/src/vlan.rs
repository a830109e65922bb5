//! 802.1Q sub-interfaces enforced on their parent: a frame whose outer 802.1Q tag carries a
//! VLAN id that `limits::VLANS_MAP` maps on the ingress interface is judged by that
//! sub-interface's entries. Untagged frames cost no lookup.

use aya_ebpf::{macros::map, maps::HashMap};
use msfilter_common::{VlanKey, limits::MAX_VLANS};

use crate::keys::vlan_key;

/// `limits::VLANS_MAP`: (parent ifindex, VLAN id) → sub-interface ifindex.
#[map]
pub(crate) static MSF_VLANS: HashMap<VlanKey, u32> = HashMap::with_max_entries(MAX_VLANS, 0);

/// The interface whose entries judge a frame that arrived on `ingress` with the mappable
/// VLAN id `vlan` (`parse::Frame::vlan`).
#[inline(always)]
pub(crate) fn judged_ifindex(ingress: u32, vlan: Option<u16>) -> u32 {
    let Some(vid) = vlan else {
        return ingress;
    };
    match MSF_VLANS.get_ptr(vlan_key(ingress, vid)) {
        // SAFETY: a successful lookup's value pointer, read at once; userspace replaces
        // values whole (a u32 write).
        Some(sub) => unsafe { *sub },
        None => ingress,
    }
}
