//! The kernel's own report of what XDP each interface's driver supports: the `netdev`
//! generic-netlink family (Linux ≥ 6.3), command `dev-get`, attribute `xdp-features`.
//!
//! Asking the kernel is the only safe way to learn this on a production host: the other
//! way, attaching a test program in driver mode, briefly changes what the NIC does. A kernel
//! without the family gives [`Unavailable`]: the feature set is then unknown.
//!
//! The family id is looked up through the generic-netlink controller (`CTRL_CMD_GETFAMILY`,
//! constants from `libc`); the `netdev` family's own numbers are not in `libc` and stand
//! below as `<linux/netdev.h>` defines them. The replies are parsed by pure functions,
//! tested on samples; [`xdp_features`] is the one function that talks to the kernel.

use std::{collections::BTreeMap, io};

use super::netlink::{GENL_HDRLEN, NLM_F_ACK, NLM_F_DUMP, NetlinkRequest, Socket, attrs};

const GENL_ID_CTRL: u16 = libc::GENL_ID_CTRL as u16;
const CTRL_CMD_GETFAMILY: u8 = libc::CTRL_CMD_GETFAMILY as u8;
const CTRL_ATTR_FAMILY_ID: u16 = libc::CTRL_ATTR_FAMILY_ID as u16;
const CTRL_ATTR_FAMILY_NAME: u16 = libc::CTRL_ATTR_FAMILY_NAME as u16;

// <linux/netdev.h>
const NETDEV_FAMILY_NAME: &str = "netdev";
const NETDEV_FAMILY_VERSION: u8 = 1;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;

/// `NETDEV_XDP_ACT_BASIC`: the driver runs XDP programs natively (XDP_ABORTED, XDP_DROP,
/// XDP_PASS, XDP_TX) — what msfilter's driver mode needs.
pub const XDP_ACT_BASIC: u64 = 1;

/// The `netdev_xdp_act` bits and their names in the kernel's netlink spec.
const XDP_ACT_NAMES: [(u64, &str); 7] = [
    (1, "basic"),
    (2, "redirect"),
    (4, "ndo-xmit"),
    (8, "xsk-zerocopy"),
    (16, "hw-offload"),
    (32, "rx-sg"),
    (64, "ndo-xmit-sg"),
];

/// The names of the feature bits set in `bits` (unknown bits as hex).
pub fn feature_names(bits: u64) -> Vec<String> {
    let mut names: Vec<String> = XDP_ACT_NAMES
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| (*name).to_string())
        .collect();
    let known: u64 = XDP_ACT_NAMES.iter().map(|(bit, _)| bit).sum();
    if bits & !known != 0 {
        names.push(format!("{:#x}", bits & !known));
    }
    names
}

/// Why the feature sets could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

/// The `xdp-features` of every interface of the calling thread's network namespace, by
/// interface index.
pub fn xdp_features() -> Result<BTreeMap<u32, u64>, Unavailable> {
    let mut socket = Socket::generic()
        .map_err(|e| Unavailable(format!("opening a generic netlink socket: {e}")))?;
    let mut family = None;
    match socket.transact(family_request(NETDEV_FAMILY_NAME), |_, payload| {
        family = family.or_else(|| family_id(payload));
        Ok(())
    }) {
        Ok(()) => {}
        // ENOENT: the controller knows no such family.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Unavailable(
                "the kernel has no netdev netlink family (Linux before 6.3)".into(),
            ));
        }
        Err(e) => return Err(Unavailable(format!("looking up the netdev family: {e}"))),
    }
    let family =
        family.ok_or_else(|| Unavailable("the kernel did not name the netdev family".into()))?;
    let mut features = BTreeMap::new();
    socket
        .dump(dev_dump_request(family), |ty, payload| {
            if ty == family
                && let Some((ifindex, bits)) = device_features(payload)
            {
                features.insert(ifindex, bits);
            }
            Ok(())
        })
        .map_err(|e| Unavailable(format!("netdev dev-get dump: {e}")))?;
    Ok(features)
}

/// `CTRL_CMD_GETFAMILY` for the family `name`.
fn family_request(name: &str) -> NetlinkRequest {
    let mut value = name.as_bytes().to_vec();
    value.push(0);
    let mut request = NetlinkRequest::generic(GENL_ID_CTRL, NLM_F_ACK, CTRL_CMD_GETFAMILY, 1);
    request.attr(CTRL_ATTR_FAMILY_NAME, &value);
    request
}

/// `NETDEV_CMD_DEV_GET` as a dump of every device.
fn dev_dump_request(family: u16) -> NetlinkRequest {
    NetlinkRequest::generic(
        family,
        NLM_F_DUMP,
        NETDEV_CMD_DEV_GET,
        NETDEV_FAMILY_VERSION,
    )
}

/// The attributes after the generic-netlink header of a payload.
fn generic_attrs(payload: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    attrs(payload.get(GENL_HDRLEN..).unwrap_or(&[]))
}

/// The family id in a `CTRL_CMD_NEWFAMILY` reply.
fn family_id(payload: &[u8]) -> Option<u16> {
    generic_attrs(payload)
        .find(|(ty, v)| *ty == CTRL_ATTR_FAMILY_ID && v.len() == 2)
        .map(|(_, v)| u16::from_ne_bytes([v[0], v[1]]))
}

/// (interface index, xdp-features) of a `dev-get` reply; a device without the features
/// attribute has none.
fn device_features(payload: &[u8]) -> Option<(u32, u64)> {
    let mut ifindex = None;
    let mut features = 0;
    for (ty, value) in generic_attrs(payload) {
        match (ty, value.len()) {
            (NETDEV_A_DEV_IFINDEX, 4) => {
                ifindex = Some(u32::from_ne_bytes(value.try_into().expect("4 bytes")));
            }
            (NETDEV_A_DEV_XDP_FEATURES, 8) => {
                features = u64::from_ne_bytes(value.try_into().expect("8 bytes"));
            }
            _ => {}
        }
    }
    Some((ifindex?, features))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iface::netlink::{NLA_HDRLEN, NLMSG_HDRLEN, build::attr, u16_at, u32_at};

    #[test]
    fn family_request_layout() {
        let m = family_request("netdev").finish(7);
        assert_eq!(
            m.len(),
            NLMSG_HDRLEN + GENL_HDRLEN + NLA_HDRLEN + 8,
            "header, genl header, attr of 7 bytes + pad"
        );
        assert_eq!(u32_at(&m, 0), Some(m.len() as u32));
        assert_eq!(u16_at(&m, 4), Some(0x10), "GENL_ID_CTRL");
        assert_eq!(
            u16_at(&m, 6),
            Some((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16)
        );
        assert_eq!(u32_at(&m, 8), Some(7));
        assert_eq!(m[16], 3, "CTRL_CMD_GETFAMILY");
        assert_eq!(u16_at(&m, 20), Some(4 + 7));
        assert_eq!(u16_at(&m, 22), Some(2), "CTRL_ATTR_FAMILY_NAME");
        assert_eq!(&m[24..31], b"netdev\0");
        let dump = dev_dump_request(0x22).finish(8);
        assert_eq!(u16_at(&dump, 4), Some(0x22));
        assert_eq!(
            u16_at(&dump, 6),
            Some((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16)
        );
        assert_eq!(dump[16], NETDEV_CMD_DEV_GET);
    }

    #[test]
    fn replies_are_parsed() {
        // A dev-get reply for interface 3 with basic + redirect + rx-sg, and one without
        // the features attribute (reported as none).
        let mut payload = vec![NETDEV_CMD_DEV_GET, 1, 0, 0];
        payload.extend(attr(NETDEV_A_DEV_IFINDEX, &3u32.to_ne_bytes()));
        payload.extend(attr(2, &0u64.to_ne_bytes()));
        payload.extend(attr(NETDEV_A_DEV_XDP_FEATURES, &35u64.to_ne_bytes()));
        assert_eq!(device_features(&payload), Some((3, 35)));
        let mut bare = vec![NETDEV_CMD_DEV_GET, 1, 0, 0];
        bare.extend(attr(NETDEV_A_DEV_IFINDEX, &9u32.to_ne_bytes()));
        assert_eq!(device_features(&bare), Some((9, 0)));
        assert_eq!(device_features(&[1, 1, 0, 0]), None);
        assert_eq!(device_features(&[]), None);

        let mut fam = vec![1, 1, 0, 0];
        fam.extend(attr(CTRL_ATTR_FAMILY_NAME, b"netdev\0"));
        fam.extend(attr(CTRL_ATTR_FAMILY_ID, &0x1fu16.to_ne_bytes()));
        assert_eq!(family_id(&fam), Some(0x1f));
        assert_eq!(family_id(&fam[..4]), None);
    }

    #[test]
    fn features_have_names() {
        assert_eq!(feature_names(35), ["basic", "redirect", "rx-sg"]);
        assert_eq!(feature_names(0), Vec::<String>::new());
        assert_eq!(feature_names(1 | 256), ["basic", "0x100"]);
    }
}
