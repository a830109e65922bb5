//! Whether an interface is an 802.1Q VLAN sub-interface, and of which parent and VLAN
//! (`RTM_GETLINK`: `IFLA_LINK`, and `IFLA_LINKINFO` with kind `"vlan"`, `IFLA_VLAN_ID` and
//! `IFLA_VLAN_PROTOCOL` in its data), so that msfilter can enforce it on its parent.
//!
//! [`parse`] is pure: it reads one link message's attributes, as the kernel's
//! `rtnl_link_info_fill` and `vlan_fill_info` lay them out.

use std::io;

use super::netlink::{LinkMessage, attrs, get_link, u16_at, u32_at};

// `<linux/if_link.h>` attribute numbers that libc does not define for every target.
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VLAN_ID: u16 = 1;
const IFLA_VLAN_PROTOCOL: u16 = 5;

const ETH_P_8021Q: u16 = msfilter_common::headers::ETH_P_8021Q;
const ETH_P_8021AD: u16 = msfilter_common::headers::ETH_P_8021AD;

/// An 802.1Q VLAN sub-interface: the interface it sits on and its VLAN id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VlanLink {
    pub parent: u32,
    pub vid: u16,
}

/// The VLAN that interface `ifindex` is, or `None` if it is no VLAN device.
///
/// # Errors
///
/// `NotFound` if there is no such interface. `InvalidData` if it is a VLAN device msfilter
/// cannot enforce on a parent (802.1ad, parent in another namespace) or the kernel's
/// description leaves its kind or VLAN undetermined; the message says which.
pub fn vlan_link(ifindex: u32) -> io::Result<Option<VlanLink>> {
    get_link(ifindex, |link| {
        parse(link).map_err(|detail| io::Error::new(io::ErrorKind::InvalidData, detail))
    })
}

/// The VLAN a link message describes (see [`vlan_link`]); the error says what is missing or
/// unsupported.
pub(super) fn parse(link: &LinkMessage<'_>) -> Result<Option<VlanLink>, String> {
    let Some((_, info)) = link.attrs().find(|&(ty, _)| ty == IFLA_LINKINFO) else {
        // Devices without link operations (hardware NICs, loopback) describe no kind.
        return Ok(None);
    };
    let Some((_, kind)) = attrs(info).find(|&(ty, _)| ty == IFLA_INFO_KIND) else {
        return Err(
            "its link info names no device kind, so whether it is a VLAN \
                    sub-interface cannot be determined"
                .into(),
        );
    };
    let kind = kind.split(|&b| b == 0).next().unwrap_or_default();
    if kind != b"vlan" {
        return Ok(None);
    }
    let data = attrs(info)
        .find(|&(ty, _)| ty == IFLA_INFO_DATA)
        .map(|(_, d)| d)
        .ok_or("it is a VLAN device whose link info carries no VLAN data")?;
    let vid = attrs(data)
        .find(|&(ty, _)| ty == IFLA_VLAN_ID)
        .and_then(|(_, v)| u16_at(v, 0))
        .ok_or("it is a VLAN device whose link info carries no VLAN id")?;
    if vid > 0x0fff {
        return Err(format!(
            "it is a VLAN device with VLAN id {vid}, beyond 4095"
        ));
    }
    // Kernels before 3.10 send no protocol: they had 802.1Q only.
    let protocol = attrs(data)
        .find(|&(ty, _)| ty == IFLA_VLAN_PROTOCOL)
        .map_or(Some(ETH_P_8021Q), |(_, v)| {
            Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?))
        });
    match protocol {
        Some(ETH_P_8021Q) => {}
        Some(ETH_P_8021AD) => {
            return Err(format!(
                "it is an 802.1ad (QinQ service) VLAN {vid}; only 802.1Q sub-interfaces are \
                 enforced on their parent"
            ));
        }
        Some(other) => {
            return Err(format!(
                "it is a VLAN device of protocol {other:#06x}, not 802.1Q"
            ));
        }
        None => return Err("its VLAN protocol attribute is malformed".into()),
    }
    if link.attrs().any(|(ty, _)| ty == IFLA_LINK_NETNSID) {
        return Err(format!(
            "it is VLAN {vid} of an interface in another network namespace, where msfilter \
             cannot attach"
        ));
    }
    let parent = link
        .attrs()
        .find(|&(ty, _)| ty == IFLA_LINK)
        .and_then(|(_, v)| u32_at(v, 0))
        .filter(|&p| p != 0 && p != link.ifindex)
        .ok_or_else(|| format!("it is VLAN {vid} but the kernel names no parent interface"))?;
    Ok(Some(VlanLink { parent, vid }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iface::netlink::build::{attr, link_payload};

    /// `RTM_NEWLINK` payload of `eth0.100` (index 5) on `eth0` (index 2), laid out as
    /// `rtnl_fill_ifinfo` writes it for a VLAN device (x86-64, host order; the attributes of
    /// no interest here left out): ifinfomsg, IFLA_IFNAME, IFLA_LINK, IFLA_LINKINFO {
    /// IFLA_INFO_KIND "vlan", IFLA_INFO_DATA { IFLA_VLAN_PROTOCOL 0x8100 (big-endian),
    /// IFLA_VLAN_ID 100, IFLA_VLAN_FLAGS REORDER_HDR } }.
    const ETH0_100: [u8; 96] = [
        // ifinfomsg: family, pad, type ARPHRD_ETHER, index 5, flags UP|BROADCAST|MULTICAST|
        // LOWER_UP, change.
        0, 0, 1, 0, 5, 0, 0, 0, 0x43, 0x10, 1, 0, 0, 0, 0, 0, //
        // IFLA_IFNAME "eth0.100"
        13, 0, 3, 0, b'e', b't', b'h', b'0', b'.', b'1', b'0', b'0', 0, 0, 0, 0, //
        // IFLA_MTU 1500
        8, 0, 4, 0, 0xdc, 0x05, 0, 0, //
        // IFLA_LINK 2
        8, 0, 5, 0, 2, 0, 0, 0, //
        // IFLA_LINKINFO (nested), 48 bytes
        48, 0, 18, 0x80, //
        // IFLA_INFO_KIND "vlan"
        9, 0, 1, 0, b'v', b'l', b'a', b'n', 0, 0, 0, 0, //
        // IFLA_INFO_DATA (nested), 32 bytes
        32, 0, 2, 0x80, //
        // IFLA_VLAN_PROTOCOL 0x8100, big-endian
        6, 0, 5, 0, 0x81, 0x00, 0, 0, //
        // IFLA_VLAN_ID 100
        6, 0, 1, 0, 100, 0, 0, 0, //
        // IFLA_VLAN_FLAGS { flags: VLAN_FLAG_REORDER_HDR, mask: all }
        12, 0, 2, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
    ];

    fn parsed(payload: &[u8]) -> Result<Option<VlanLink>, String> {
        parse(&LinkMessage::parse(payload).expect("an ifinfomsg"))
    }

    fn linkinfo(kind: &[u8], data: &[Vec<u8>]) -> Vec<u8> {
        let mut info = attr(IFLA_INFO_KIND, kind);
        if !data.is_empty() {
            info.extend(attr(IFLA_INFO_DATA | 0x8000, &data.concat()));
        }
        attr(IFLA_LINKINFO | 0x8000, &info)
    }

    #[test]
    fn an_8021q_sub_interface_names_its_parent_and_vlan() {
        assert_eq!(
            parsed(&ETH0_100),
            Ok(Some(VlanLink {
                parent: 2,
                vid: 100
            }))
        );
    }

    #[test]
    fn other_devices_are_no_vlans() {
        // A NIC: no link info at all. A veth and a macvlan: IFLA_LINK names the peer or the
        // lower device, but the kind is not "vlan".
        let nic = link_payload(2, &[attr(libc::IFLA_IFNAME, b"eth0\0")]);
        assert_eq!(parsed(&nic), Ok(None));
        for kind in [&b"veth\0"[..], b"macvlan\0", b"vlanx\0", b"vla\0"] {
            let p = link_payload(
                6,
                &[attr(IFLA_LINK, &2u32.to_ne_bytes()), linkinfo(kind, &[])],
            );
            assert_eq!(parsed(&p), Ok(None), "{kind:?}");
        }
    }

    #[test]
    fn what_cannot_be_enforced_on_a_parent_is_an_error_naming_why() {
        let link = attr(IFLA_LINK, &2u32.to_ne_bytes());
        let id = |vid: u16| attr(IFLA_VLAN_ID, &vid.to_ne_bytes());
        let proto = |p: u16| attr(IFLA_VLAN_PROTOCOL, &p.to_be_bytes());
        let cases: [(Vec<Vec<u8>>, &str); 8] = [
            (
                vec![link.clone(), attr(IFLA_LINKINFO | 0x8000, &[])],
                "names no device kind",
            ),
            (
                vec![link.clone(), linkinfo(b"vlan\0", &[])],
                "carries no VLAN data",
            ),
            (
                vec![link.clone(), linkinfo(b"vlan\0", &[proto(ETH_P_8021Q)])],
                "carries no VLAN id",
            ),
            (
                vec![link.clone(), linkinfo(b"vlan\0", &[id(5000)])],
                "VLAN id 5000",
            ),
            (
                vec![
                    link.clone(),
                    linkinfo(b"vlan\0", &[proto(ETH_P_8021AD), id(7)]),
                ],
                "802.1ad",
            ),
            (
                vec![link.clone(), linkinfo(b"vlan\0", &[proto(0x9100), id(7)])],
                "protocol 0x9100",
            ),
            (vec![linkinfo(b"vlan\0", &[id(7)])], "names no parent"),
            (
                vec![
                    link,
                    attr(IFLA_LINK_NETNSID, &0i32.to_ne_bytes()),
                    linkinfo(b"vlan\0", &[id(7)]),
                ],
                "another network namespace",
            ),
        ];
        for (attrs, expected) in cases {
            let e = parsed(&link_payload(6, &attrs)).unwrap_err();
            assert!(e.contains(expected), "{e:?} should say {expected:?}");
        }
        // Without a protocol attribute (kernels before 3.10) a VLAN is 802.1Q.
        let old = link_payload(
            6,
            &[
                attr(IFLA_LINK, &3u32.to_ne_bytes()),
                linkinfo(b"vlan\0", &[id(4095)]),
            ],
        );
        assert_eq!(
            parsed(&old),
            Ok(Some(VlanLink {
                parent: 3,
                vid: 4095
            }))
        );
    }
}
