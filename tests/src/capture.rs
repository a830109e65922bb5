//! Capturing the membership reports a host sends: IGMPv3 (RFC 3376 §4.2) and MLDv2
//! (RFC 3810 §5.2) group records, read from an AF_PACKET socket on an interface.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use crate::netns::Netns;

/// Group record types.
pub const MODE_IS_INCLUDE: u8 = 1;
pub const MODE_IS_EXCLUDE: u8 = 2;
pub const CHANGE_TO_INCLUDE: u8 = 3;
pub const CHANGE_TO_EXCLUDE: u8 = 4;
pub const ALLOW_NEW_SOURCES: u8 = 5;
pub const BLOCK_OLD_SOURCES: u8 = 6;

/// One group record of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    pub kind: u8,
    pub group: IpAddr,
    pub sources: Vec<IpAddr>,
}

/// An `AF_PACKET` raw socket of `ns` bound to `iface`, receiving the frames of `protocol`
/// (an ethertype; 0: none).
pub(crate) fn packet_socket(ns: &Netns, iface: &str, protocol: u16) -> io::Result<OwnedFd> {
    let ifindex = ns.ifindex(iface)?;
    ns.run(|| {
        // SAFETY: plain socket(2); checked below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol.to_be();
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: addr is a valid sockaddr_ll of the given size.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    })
}

/// An AF_PACKET socket receiving every frame on one interface of a namespace.
pub struct Capture {
    fd: OwnedFd,
}

const ETH_P_ALL: u16 = 0x0003;

impl Capture {
    pub fn open(ns: &Netns, iface: &str) -> io::Result<Self> {
        packet_socket(ns, iface, ETH_P_ALL).map(|fd| Self { fd })
    }

    /// Read frames until one carries a record satisfying `want`, or `timeout` passes.
    /// Returns every record seen on the way (for failure messages) and whether it matched.
    pub fn wait_for(
        &self,
        timeout: Duration,
        want: impl Fn(&GroupRecord) -> bool,
    ) -> (bool, Vec<GroupRecord>) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut buf = [0u8; 2048];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let tv = libc::timeval {
                tv_sec: left.as_secs() as libc::time_t,
                tv_usec: libc::suseconds_t::from(left.subsec_micros()).max(1),
            };
            // SAFETY: valid timeval for SO_RCVTIMEO.
            unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    std::ptr::from_ref(&tv).cast(),
                    size_of::<libc::timeval>() as u32,
                );
            }
            // SAFETY: buf is writable for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            for record in parse_report(&buf[..n as usize]) {
                let hit = want(&record);
                seen.push(record);
                if hit {
                    return (true, seen);
                }
            }
        }
        (false, seen)
    }
}

/// The group records of an IGMPv3 or MLDv2 report in an Ethernet frame (none if the frame
/// is something else).
pub fn parse_report(frame: &[u8]) -> Vec<GroupRecord> {
    let Some(ethertype) = frame.get(12..14) else {
        return Vec::new();
    };
    match u16::from_be_bytes([ethertype[0], ethertype[1]]) {
        0x0800 => {
            let ip = &frame[14..];
            let Some(&first) = ip.first() else {
                return Vec::new();
            };
            let ihl = usize::from(first & 0x0f) * 4;
            if ip.len() < ihl || ip.get(9) != Some(&2) {
                return Vec::new();
            }
            records(&ip[ihl..], 0x22, 4)
        }
        0x86dd => {
            let ip = &frame[14..];
            if ip.len() < 40 {
                return Vec::new();
            }
            let (mut next, mut off) = (ip[6], 40);
            // Reports carry a hop-by-hop header (router alert) before ICMPv6.
            while next == 0 || next == 60 {
                let Some(len) = ip.get(off + 1) else {
                    return Vec::new();
                };
                next = ip[off];
                off += (usize::from(*len) + 1) * 8;
            }
            if next != 58 || off > ip.len() {
                return Vec::new();
            }
            records(&ip[off..], 143, 16)
        }
        _ => Vec::new(),
    }
}

/// Records of a report message whose first byte must be `report_type`; addresses are
/// `addr_len` bytes (4 for IGMPv3, 16 for MLDv2).
fn records(msg: &[u8], report_type: u8, addr_len: usize) -> Vec<GroupRecord> {
    let mut out = Vec::new();
    if msg.first() != Some(&report_type) || msg.len() < 8 {
        return out;
    }
    let count = usize::from(u16::from_be_bytes([msg[6], msg[7]]));
    let addr = |b: &[u8]| -> IpAddr {
        if addr_len == 4 {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            IpAddr::V6(Ipv6Addr::from(a))
        }
    };
    let mut off = 8;
    for _ in 0..count {
        let Some(head) = msg.get(off..off + 4 + addr_len) else {
            break;
        };
        let (kind, aux_words) = (head[0], usize::from(head[1]));
        let sources = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let group = addr(&head[4..]);
        let start = off + 4 + addr_len;
        let Some(list) = msg.get(start..start + sources * addr_len) else {
            break;
        };
        out.push(GroupRecord {
            kind,
            group,
            sources: list.chunks_exact(addr_len).map(addr).collect(),
        });
        off = start + sources * addr_len + aux_words * 4;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_igmpv3_report() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[0x46, 0, 0, 40, 0, 0, 0, 0, 1, 2, 0, 0]);
        frame.extend_from_slice(&[10, 0, 0, 2, 224, 0, 0, 22, 0x94, 4, 0, 0]); // + router alert
        frame.extend_from_slice(&[0x22, 0, 0, 0, 0, 0, 0, 1]);
        frame.extend_from_slice(&[BLOCK_OLD_SOURCES, 0, 0, 1, 232, 1, 1, 1, 10, 0, 0, 5]);
        assert_eq!(
            parse_report(&frame),
            vec![GroupRecord {
                kind: BLOCK_OLD_SOURCES,
                group: "232.1.1.1".parse().unwrap(),
                sources: vec!["10.0.0.5".parse().unwrap()],
            }]
        );
    }
}
