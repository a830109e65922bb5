//! 802.1Q sub-interfaces enforced on their parent: a frame whose outer 802.1Q tag carries a
//! VLAN id that `limits::VLANS_MAP` maps on the ingress interface is judged by that
//! sub-interface's entries. Untagged frames cost a 4-byte read and a compare, no lookup.

use aya_ebpf::{macros::map, maps::HashMap, programs::XdpContext};
use msfilter_common::{
    VlanKey,
    headers::{is_vlan, mapped_vlan},
    limits::MAX_VLANS,
};

use crate::{keys::vlan_key, parse};

/// `limits::VLANS_MAP`: (parent ifindex, VLAN id) → sub-interface ifindex.
#[map]
pub(crate) static MSF_VLANS: HashMap<VlanKey, u32> = HashMap::with_max_entries(MAX_VLANS, 0);

/// The interface whose entries judge a multicast datagram that arrived on `ingress`: the
/// sub-interface its outer 802.1Q tag's VLAN maps to, else `ingress`; and whether the frame
/// is that interface's own traffic (untagged, or of a mapped VLAN), which alone may be
/// dropped as unjoined there.
#[inline(always)]
pub(crate) fn judged_ifindex(ctx: &XdpContext, ingress: u32) -> (u32, bool) {
    let Ok(tag) = parse::outer_tag(ctx) else {
        return (ingress, true);
    };
    let tpid = u16::from_be_bytes([tag[0], tag[1]]);
    let Some(vid) = mapped_vlan(tpid, u16::from_be_bytes([tag[2], tag[3]])) else {
        return (ingress, !is_vlan(tpid));
    };
    match MSF_VLANS.get_ptr(vlan_key(ingress, vid)) {
        // SAFETY: a successful lookup's value pointer, read at once; userspace replaces
        // values whole (a u32 write).
        Some(sub) => (unsafe { *sub }, true),
        None => (ingress, false),
    }
}
