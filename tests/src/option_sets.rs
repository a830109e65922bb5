//! The kernel oracle for option sets: a membership request applied as the
//! protocol-independent `MCAST_*` option (what msfilter sets) or as the family-specific one
//! (`IP_ADD_MEMBERSHIP`, `IP_BLOCK_SOURCE`, `IP_MSFILTER`, `IPV6_JOIN_GROUP`, …), validated as
//! the daemon validates or not at all. The sequence and equivalence tests run every script
//! with both sets and expect the kernel to judge them alike.
//!
//! | request | protocol-independent | IPv4 family-specific | IPv6 family-specific |
//! |---|---|---|---|
//! | join group | `MCAST_JOIN_GROUP` | `IP_ADD_MEMBERSHIP` (`ip_mreqn`, by index) | `IPV6_JOIN_GROUP` |
//! | leave group | `MCAST_LEAVE_GROUP` | `IP_DROP_MEMBERSHIP` (`ip_mreqn`, by index) | `IPV6_LEAVE_GROUP` |
//! | block / unblock | `MCAST_(UN)BLOCK_SOURCE` | `IP_(UN)BLOCK_SOURCE` | `MCAST_*` |
//! | join / leave (S,G) | `MCAST_JOIN/LEAVE_SOURCE_GROUP` | `IP_ADD/DROP_SOURCE_MEMBERSHIP` | `MCAST_*` |
//! | set filter | `MCAST_MSFILTER` | `IP_MSFILTER` | `MCAST_*` |
//!
//! IPv6 has no family-specific source options, so `MCAST_*` serve both sets there.
//! `ip_mreq_source` and `ip_msfilter` name the interface by its IPv4 *address*, not its
//! index: the interface's primary address is looked up (`SIOCGIFADDR`) at each request. When
//! the interface has no IPv4 address (or no longer exists), the family-specific source
//! requests are carried by their `MCAST_*` equivalents, which take the index and on which
//! the kernel behaves identically; [`SockoptError::option`] says which one was used. A
//! wrong-family address always goes in the protocol-independent form.

use std::{
    mem::{offset_of, size_of},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
};

use msfilter::sockopt::{
    ApplyError, Family, MembershipSocket, Request, SockoptError, fmode, in_addr_of, setsockopt,
    setsockopt_raw, validate,
};

/// Which vocabulary of socket options carries a request (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OptionSet {
    /// `MCAST_*` (RFC 3678 protocol-independent), at `SOL_IP` or `SOL_IPV6`: msfilter's.
    #[default]
    ProtocolIndependent,
    /// `IP_*` for IPv4 and `IPV6_JOIN_GROUP`/`IPV6_LEAVE_GROUP` for IPv6 (`MCAST_*` where
    /// the family has nothing else).
    FamilySpecific,
}

/// Membership requests in either option set, on msfilter's [`MembershipSocket`].
pub trait OptionSets {
    /// Validate `req` as msfilter does, then apply it in option set `set`.
    fn apply_with(&self, group: IpAddr, req: &Request, set: OptionSet) -> Result<(), ApplyError>;

    /// Apply `req` in option set `set` without validating it: the kernel's own verdict.
    fn apply_unchecked(
        &self,
        group: IpAddr,
        req: &Request,
        set: OptionSet,
    ) -> Result<(), SockoptError>;
}

impl OptionSets for MembershipSocket {
    fn apply_with(&self, group: IpAddr, req: &Request, set: OptionSet) -> Result<(), ApplyError> {
        validate(self.family(), group, req)?;
        Ok(self.apply_unchecked(group, req, set)?)
    }

    fn apply_unchecked(
        &self,
        group: IpAddr,
        req: &Request,
        set: OptionSet,
    ) -> Result<(), SockoptError> {
        match (set, self.family(), group) {
            (OptionSet::FamilySpecific, Family::V4, IpAddr::V4(g)) => {
                if let Some(result) = ipv4_specific(self, g, req) {
                    return result;
                }
            }
            (OptionSet::FamilySpecific, Family::V6, IpAddr::V6(g)) => {
                if let Some(result) = ipv6_specific(self, g, req) {
                    return result;
                }
            }
            _ => {}
        }
        self.set_option(group, req)
    }
}

/// `IPV6_JOIN_GROUP` / `IPV6_LEAVE_GROUP`, or `None` for the requests IPv6 carries as
/// `MCAST_*` only.
fn ipv6_specific(
    socket: &MembershipSocket,
    group: Ipv6Addr,
    req: &Request,
) -> Option<Result<(), SockoptError>> {
    let (name, option) = match req {
        Request::JoinGroup => (libc::IPV6_ADD_MEMBERSHIP, "IPV6_JOIN_GROUP"),
        Request::LeaveGroup => (libc::IPV6_DROP_MEMBERSHIP, "IPV6_LEAVE_GROUP"),
        _ => return None,
    };
    let mreq = libc::ipv6_mreq {
        ipv6mr_multiaddr: libc::in6_addr {
            s6_addr: group.octets(),
        },
        ipv6mr_interface: socket.ifindex(),
    };
    Some(setsockopt(
        socket.as_fd(),
        libc::SOL_IPV6,
        name,
        &mreq,
        option,
    ))
}

/// The `IP_*` form of `req`, or `None` when it must go as `MCAST_*` (a source of the wrong
/// family, or a source request on an interface without an IPv4 address).
fn ipv4_specific(
    socket: &MembershipSocket,
    g: Ipv4Addr,
    req: &Request,
) -> Option<Result<(), SockoptError>> {
    let fd = socket.as_fd();
    let membership = |name, option| {
        let mreq = libc::ip_mreqn {
            imr_multiaddr: in_addr_of(g),
            imr_address: in_addr_of(Ipv4Addr::UNSPECIFIED),
            imr_ifindex: socket.ifindex() as libc::c_int,
        };
        setsockopt(fd, libc::SOL_IP, name, &mreq, option)
    };
    let (name, option, source) = match req {
        Request::JoinGroup => {
            return Some(membership(libc::IP_ADD_MEMBERSHIP, "IP_ADD_MEMBERSHIP"));
        }
        Request::LeaveGroup => {
            return Some(membership(libc::IP_DROP_MEMBERSHIP, "IP_DROP_MEMBERSHIP"));
        }
        Request::SetFilter { mode, sources } => {
            let sources = sources
                .iter()
                .map(|s| match s {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                })
                .collect::<Option<Vec<_>>>()?;
            let interface = interface_ipv4(socket)?;
            let buf = IpMsfilterBuf::new(g, interface, fmode(*mode), &sources);
            // SAFETY: `buf` holds `buf.option_len()` initialised bytes.
            return Some(unsafe {
                setsockopt_raw(
                    fd,
                    libc::SOL_IP,
                    libc::IP_MSFILTER,
                    buf.as_ptr(),
                    buf.option_len(),
                    "IP_MSFILTER",
                )
            });
        }
        Request::BlockSource { source } => (libc::IP_BLOCK_SOURCE, "IP_BLOCK_SOURCE", source),
        Request::UnblockSource { source } => (libc::IP_UNBLOCK_SOURCE, "IP_UNBLOCK_SOURCE", source),
        Request::JoinSourceGroup { source } => (
            libc::IP_ADD_SOURCE_MEMBERSHIP,
            "IP_ADD_SOURCE_MEMBERSHIP",
            source,
        ),
        Request::LeaveSourceGroup { source } => (
            libc::IP_DROP_SOURCE_MEMBERSHIP,
            "IP_DROP_SOURCE_MEMBERSHIP",
            source,
        ),
    };
    let IpAddr::V4(source) = *source else {
        return None;
    };
    let interface = interface_ipv4(socket)?;
    let mreq = libc::ip_mreq_source {
        imr_multiaddr: in_addr_of(g),
        imr_interface: in_addr_of(interface),
        imr_sourceaddr: in_addr_of(source),
    };
    Some(setsockopt(fd, libc::SOL_IP, name, &mreq, option))
}

/// The interface's primary IPv4 address, if it has one.
fn interface_ipv4(socket: &MembershipSocket) -> Option<Ipv4Addr> {
    primary_ipv4(socket.as_fd(), socket.ifindex()).ok()
}

fn last_error(option: &'static str) -> SockoptError {
    SockoptError::new(
        option,
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

/// The primary IPv4 address of interface `ifindex` (`SIOCGIFNAME` then `SIOCGIFADDR` on an
/// IPv4 socket), in the socket's network namespace.
fn primary_ipv4(fd: BorrowedFd<'_>, ifindex: u32) -> Result<Ipv4Addr, SockoptError> {
    // SAFETY: ifreq is plain data (a name array and a union of plain data).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_ifru.ifru_ifindex = libc::c_int::try_from(ifindex)
        .map_err(|_| SockoptError::new("SIOCGIFNAME", libc::ENODEV))?;
    // SAFETY: SIOCGIFNAME reads ifr_ifindex and writes ifr_name inside the ifreq we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFNAME, &raw mut ifr) } != 0 {
        return Err(last_error("SIOCGIFNAME"));
    }
    // SAFETY: SIOCGIFADDR reads ifr_name and writes ifr_addr inside the ifreq we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFADDR, &raw mut ifr) } != 0 {
        return Err(last_error("SIOCGIFADDR"));
    }
    // SAFETY: after a successful SIOCGIFADDR the union holds ifru_addr, an AF_INET
    // sockaddr; sockaddr and sockaddr_in have the same size and the union is aligned for
    // both (it also holds pointers and ints).
    let sin = unsafe {
        std::ptr::from_ref(&ifr.ifr_ifru.ifru_addr)
            .cast::<libc::sockaddr_in>()
            .read()
    };
    if i32::from(sin.sin_family) != libc::AF_INET {
        return Err(SockoptError::new("SIOCGIFADDR", libc::EAFNOSUPPORT));
    }
    Ok(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()))
}

/// `struct ip_msfilter` (`<linux/in.h>`): IPv4 full-state filter. `imsf_interface` is the
/// interface's *address*, not its index.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(non_camel_case_types)]
struct ip_msfilter {
    imsf_multiaddr: libc::in_addr,
    imsf_interface: libc::in_addr,
    imsf_fmode: u32,
    imsf_numsrc: u32,
    imsf_slist: [libc::in_addr; 1],
}

/// `IP_MSFILTER_SIZE(n)`: bytes of an `ip_msfilter` carrying `n` sources.
const fn ip_msfilter_size(n: usize) -> usize {
    offset_of!(ip_msfilter, imsf_slist) + n * size_of::<libc::in_addr>()
}

/// An `ip_msfilter` with its source list, for `setsockopt(IP_MSFILTER)`.
struct IpMsfilterBuf {
    words: Vec<libc::in_addr>,
    numsrc: usize,
}

impl IpMsfilterBuf {
    fn new(group: Ipv4Addr, interface: Ipv4Addr, fmode: u32, sources: &[Ipv4Addr]) -> Self {
        let header = offset_of!(ip_msfilter, imsf_slist) / size_of::<libc::in_addr>();
        let mut words = vec![libc::in_addr { s_addr: 0 }; header + sources.len().max(1)];
        words[0] = in_addr_of(group);
        words[1] = in_addr_of(interface);
        words[2] = libc::in_addr { s_addr: fmode };
        words[3] = libc::in_addr {
            s_addr: sources.len() as u32,
        };
        for (w, s) in words[header..].iter_mut().zip(sources) {
            *w = in_addr_of(*s);
        }
        Self {
            words,
            numsrc: sources.len(),
        }
    }

    /// Bytes that carry the sources (the option length to pass).
    fn option_len(&self) -> usize {
        ip_msfilter_size(self.numsrc)
    }

    fn as_ptr(&self) -> *const libc::c_void {
        self.words.as_ptr().cast()
    }
}

#[cfg(test)]
mod tests {
    use msfilter::sockopt::Mode;

    use super::*;

    /// Sizes from the kernel's UAPI headers (64-bit), checked with a C compiler against
    /// `<netinet/in.h>` / `<linux/in.h>`.
    #[test]
    fn layouts_match_the_kernel() {
        assert_eq!(size_of::<libc::ip_mreqn>(), 12);
        assert_eq!(size_of::<libc::ip_mreq_source>(), 12);
        assert_eq!(size_of::<libc::ipv6_mreq>(), 20);
        assert_eq!(size_of::<ip_msfilter>(), 20);
        assert_eq!(ip_msfilter_size(0), 16);
        assert_eq!(ip_msfilter_size(2), 24);
    }

    #[test]
    fn ip_msfilter_buffer_is_the_kernel_layout() {
        let buf = IpMsfilterBuf::new(
            Ipv4Addr::new(232, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 9),
            fmode(Mode::Exclude),
            &[Ipv4Addr::new(10, 0, 0, 1)],
        );
        assert_eq!(buf.option_len(), 20);
        assert_eq!(buf.words[0].s_addr.to_ne_bytes(), [232, 0, 0, 1]);
        assert_eq!(buf.words[1].s_addr.to_ne_bytes(), [10, 0, 0, 9]);
        assert_eq!(buf.words[2].s_addr, libc::MCAST_EXCLUDE as u32);
        assert_eq!(buf.words[3].s_addr, 1);
        assert_eq!(buf.words[4].s_addr.to_ne_bytes(), [10, 0, 0, 1]);
        assert_eq!(
            IpMsfilterBuf::new(Ipv4Addr::new(232, 0, 0, 1), Ipv4Addr::UNSPECIFIED, 1, &[])
                .option_len(),
            16
        );
    }
}
