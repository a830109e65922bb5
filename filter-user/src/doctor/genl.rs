//! The kernel's own report of what XDP each interface's driver supports: the `netdev`
//! generic-netlink family (Linux ≥ 6.3), command `dev-get`, attribute `xdp-features`.
//!
//! Asking the kernel is the only safe way to learn this on a production host: the other
//! way, attaching a test program in driver mode, briefly changes what the NIC does. A kernel
//! without the family gives [`Unavailable`]: the feature set is then unknown.
//!
//! Message building and parsing are pure functions over byte buffers, tested on samples;
//! [`xdp_features`] is the one function that talks to the kernel.

use std::{
    collections::BTreeMap,
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

// <linux/netlink.h>
const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = !((1 << 15) | (1 << 14));

// <linux/genetlink.h>
const GENL_HDRLEN: usize = 4;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

// <linux/netdev.h>
const NETDEV_FAMILY_NAME: &str = "netdev";
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
    let mut socket =
        GenlSocket::open().map_err(|e| Unavailable(format!("opening a netlink socket: {e}")))?;
    let family = match socket.exchange(&family_request(NETDEV_FAMILY_NAME, 1)) {
        Ok(replies) => replies
            .iter()
            .find_map(|payload| family_id(payload))
            .ok_or_else(|| Unavailable("the kernel did not name the netdev family".into()))?,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            return Err(Unavailable(
                "the kernel has no netdev netlink family (Linux before 6.3)".into(),
            ));
        }
        Err(e) => return Err(Unavailable(format!("looking up the netdev family: {e}"))),
    };
    let replies = socket
        .exchange(&dev_dump_request(family, 2))
        .map_err(|e| Unavailable(format!("netdev dev-get dump: {e}")))?;
    Ok(replies
        .iter()
        .filter_map(|payload| device_features(payload))
        .collect())
}

/// A netlink message: header, generic-netlink header, attributes.
fn message(ty: u16, flags: u16, seq: u32, cmd: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut buf = vec![0u8; NLMSG_HDRLEN];
    buf.extend_from_slice(&[cmd, 1, 0, 0]);
    for (attr, value) in attrs {
        let len = NLA_HDRLEN + value.len();
        buf.extend_from_slice(&(len as u16).to_ne_bytes());
        buf.extend_from_slice(&attr.to_ne_bytes());
        buf.extend_from_slice(value);
        buf.resize(align4(buf.len()), 0);
    }
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf[4..6].copy_from_slice(&ty.to_ne_bytes());
    buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    buf
}

/// `CTRL_CMD_GETFAMILY` for the family `name`.
fn family_request(name: &str, seq: u32) -> Vec<u8> {
    let mut value = name.as_bytes().to_vec();
    value.push(0);
    message(
        GENL_ID_CTRL,
        NLM_F_ACK,
        seq,
        CTRL_CMD_GETFAMILY,
        &[(CTRL_ATTR_FAMILY_NAME, &value)],
    )
}

/// `NETDEV_CMD_DEV_GET` as a dump of every device.
fn dev_dump_request(family: u16, seq: u32) -> Vec<u8> {
    message(family, NLM_F_DUMP, seq, NETDEV_CMD_DEV_GET, &[])
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One message of a received datagram.
#[derive(Debug, PartialEq, Eq)]
struct Message<'a> {
    ty: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The messages of one datagram; a truncated or malformed one ends it with an error.
fn messages(buf: &[u8]) -> Result<Vec<Message<'_>>, io::Error> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a netlink message claims {len} bytes of {}", rest.len()),
            ));
        }
        out.push(Message {
            ty: u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes")),
            seq: u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes")),
            payload: &rest[NLMSG_HDRLEN..len],
        });
        rest = rest.get(align4(len)..).unwrap_or(&[]);
    }
    Ok(out)
}

/// The attributes after the generic-netlink header of a payload: (type, value).
fn attributes(payload: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = payload.get(GENL_HDRLEN..).unwrap_or(&[]);
    while rest.len() >= NLA_HDRLEN {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > rest.len() {
            break;
        }
        out.push((ty, &rest[NLA_HDRLEN..len]));
        rest = rest.get(align4(len)..).unwrap_or(&[]);
    }
    out
}

/// The family id in a `CTRL_CMD_NEWFAMILY` reply.
fn family_id(payload: &[u8]) -> Option<u16> {
    attributes(payload)
        .into_iter()
        .find(|(ty, v)| *ty == CTRL_ATTR_FAMILY_ID && v.len() == 2)
        .map(|(_, v)| u16::from_ne_bytes([v[0], v[1]]))
}

/// (interface index, xdp-features) of a `dev-get` reply.
fn device_features(payload: &[u8]) -> Option<(u32, u64)> {
    let attrs = attributes(payload);
    let ifindex = attrs
        .iter()
        .find(|(ty, v)| *ty == NETDEV_A_DEV_IFINDEX && v.len() == 4)
        .map(|(_, v)| u32::from_ne_bytes((*v).try_into().expect("4 bytes")))?;
    let features = attrs
        .iter()
        .find(|(ty, v)| *ty == NETDEV_A_DEV_XDP_FEATURES && v.len() == 8)
        .map_or(0, |(_, v)| {
            u64::from_ne_bytes((*v).try_into().expect("8 bytes"))
        });
    Some((ifindex, features))
}

/// The errno of an `NLMSG_ERROR` payload (0: an acknowledgement).
fn error_code(payload: &[u8]) -> i32 {
    payload.get(0..4).map_or(-libc::EBADMSG, |b| {
        i32::from_ne_bytes(b.try_into().expect("4 bytes"))
    })
}

/// A `NETLINK_GENERIC` socket in the calling thread's network namespace.
struct GenlSocket {
    fd: OwnedFd,
}

impl GenlSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// Send `request`; collect the payloads of the replies until the acknowledgement or the
    /// end of the dump. A kernel error becomes an `io::Error` with its errno.
    fn exchange(&mut self, request: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let seq = u32::from_ne_bytes(request[8..12].try_into().expect("4 bytes"));
        // SAFETY: sockaddr_nl is plain data; zeroes address the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `request` is valid for its length and `kernel` is a sockaddr_nl.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
                std::ptr::from_ref(&kernel).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut replies = Vec::new();
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let len =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if len < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for m in messages(&buf[..len as usize])? {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_ERROR | NLMSG_DONE => {
                        let code = error_code(m.payload);
                        return if code == 0 {
                            Ok(replies)
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    _ => replies.push(m.payload.to_vec()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ((NLA_HDRLEN + value.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(value);
        v.resize(align4(v.len()), 0);
        v
    }

    #[test]
    fn family_request_layout() {
        let m = family_request("netdev", 7);
        assert_eq!(
            m.len(),
            16 + 4 + 4 + 8,
            "header, genl header, attr of 7 bytes + pad"
        );
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), GENL_ID_CTRL);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(m[16], CTRL_CMD_GETFAMILY);
        assert_eq!(u16::from_ne_bytes([m[20], m[21]]), 4 + 7);
        assert_eq!(u16::from_ne_bytes([m[22], m[23]]), CTRL_ATTR_FAMILY_NAME);
        assert_eq!(&m[24..31], b"netdev\0");
        let dump = dev_dump_request(0x22, 8);
        assert_eq!(
            u16::from_ne_bytes([dump[6], dump[7]]),
            NLM_F_REQUEST | NLM_F_DUMP
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

        let mut fam = vec![1, 1, 0, 0];
        fam.extend(attr(CTRL_ATTR_FAMILY_NAME, b"netdev\0"));
        fam.extend(attr(CTRL_ATTR_FAMILY_ID, &0x1fu16.to_ne_bytes()));
        assert_eq!(family_id(&fam), Some(0x1f));

        // Two messages in one datagram, the second a DONE.
        let mut dgram = message(0x1f, 0, 5, 1, &[]);
        dgram.truncate(16);
        dgram.extend_from_slice(&payload);
        let len = dgram.len() as u32;
        dgram[0..4].copy_from_slice(&len.to_ne_bytes());
        let mut done = vec![0u8; 20];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        done[8..12].copy_from_slice(&5u32.to_ne_bytes());
        dgram.extend_from_slice(&done);
        let ms = messages(&dgram).unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].payload, &payload[..]);
        assert_eq!(ms[1].ty, NLMSG_DONE);
        assert_eq!(error_code(ms[1].payload), 0);
        // A message claiming more than there is.
        let mut bad = dgram.clone();
        bad[0..4].copy_from_slice(&4096u32.to_ne_bytes());
        assert!(messages(&bad).is_err());
    }

    #[test]
    fn features_have_names() {
        assert_eq!(feature_names(35), ["basic", "redirect", "rx-sg"]);
        assert_eq!(feature_names(0), Vec::<String>::new());
        assert_eq!(feature_names(1 | 256), ["basic", "0x100"]);
    }
}
