//! The socket-option layer: every membership request is applied as the real socket option
//! on a socket msfilter holds, so the kernel sends the IGMPv3/MLDv2 reports and judges
//! validity; on success the socket's filter is read back ([`MembershipSocket::filter`]) and
//! mirrored exactly as the kernel states it.
//!
//! * [`Request`]: join, leave, block, unblock, join/leave (source, group), set the whole
//!   filter; for IPv4 and IPv6. The same enum is the `op` of the wire protocol's membership
//!   request.
//! * [`MembershipSocket`]: a UDP socket for one family and one interface, never bound to a
//!   port (it never receives data), `IP_MULTICAST_ALL`/`IPV6_MULTICAST_ALL` off. msfilter
//!   uses one per (client, interface, group).
//! * [`validate()`]: checks made before any kernel call, refusing in words.
//! * [`SockoptError`]: the option the kernel refused and its errno (with symbolic names).
//! * [`Limit`]: the per-namespace limits `igmp_max_msf`, `igmp_max_memberships`,
//!   `mld_max_msf`.
//! * [`addr_of`] / [`ip_of`]: [`IpAddr`] ↔ map-key [`Addr`](msfilter_common::Addr).
//!
//! # Which option carries which request
//!
//! msfilter sets the protocol-independent options of RFC 3678 (`MCAST_*`), which take the
//! interface by index, at `SOL_IP` or `SOL_IPV6`:
//!
//! | request | option |
//! |---|---|
//! | join group | `MCAST_JOIN_GROUP` (`group_req`) |
//! | leave group | `MCAST_LEAVE_GROUP` |
//! | block / unblock | `MCAST_BLOCK_SOURCE` / `MCAST_UNBLOCK_SOURCE` (`group_source_req`) |
//! | join / leave (S,G) | `MCAST_JOIN_SOURCE_GROUP` / `MCAST_LEAVE_SOURCE_GROUP` |
//! | set filter | `MCAST_MSFILTER` (`group_filter`) |
//! | get filter | `getsockopt(MCAST_MSFILTER)` |
//!
//! The kernel treats the family-specific options (`IP_ADD_MEMBERSHIP`, `IP_BLOCK_SOURCE`,
//! `IPV6_JOIN_GROUP`, …) the same way; the test bed checks that against these
//! (`tests/src/option_sets.rs`).

mod addr;
mod errno;
mod ffi;
mod limits;
mod validate;

use std::{
    fmt,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

pub use addr::{addr_of, ip_of};
pub use errno::{SockoptError, errno_from_name, errno_name};
/// The raw calls and conversions underneath, for code that sets other options on a
/// membership socket (the test bed's family-specific options).
pub use ffi::{fmode, in_addr_of, setsockopt, setsockopt_raw};
pub use limits::{Limit, LimitGuard};
pub use validate::{InvalidRequest, Role, validate, validate_group, validate_source};

pub use msfilter_common::Mode;

use self::ffi::GroupFilterBuf;

/// An address family of a membership socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of an address.
    pub const fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    const fn domain(self) -> i32 {
        match self {
            Family::V4 => libc::AF_INET,
            Family::V6 => libc::AF_INET6,
        }
    }

    /// `SOL_IP` or `SOL_IPV6`: where the `MCAST_*` options of this family live.
    const fn level(self) -> i32 {
        match self {
            Family::V4 => libc::SOL_IP,
            Family::V6 => libc::SOL_IPV6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A membership request on one group (the group is given alongside).
///
/// On the wire it is the `op` of a membership request, tagged by its protocol name:
/// `{"op": "block", "source": "10.0.0.5"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op")]
pub enum Request {
    /// Any-source join: receive from every source (EXCLUDE {}).
    #[serde(rename = "join")]
    JoinGroup,
    /// Leave the group, dropping all its sources too.
    #[serde(rename = "leave")]
    LeaveGroup,
    /// Any-source: stop receiving from this source.
    #[serde(rename = "block")]
    BlockSource { source: IpAddr },
    /// Any-source: receive from this blocked source again.
    #[serde(rename = "unblock")]
    UnblockSource { source: IpAddr },
    /// Controlled-source: receive from this source (joins the group if needed).
    #[serde(rename = "join-source")]
    JoinSourceGroup { source: IpAddr },
    /// Controlled-source: stop receiving from this source (the last one leaves the group).
    #[serde(rename = "leave-source")]
    LeaveSourceGroup { source: IpAddr },
    /// Replace the whole filter. INCLUDE with no sources is the same as leaving.
    #[serde(rename = "set-filter")]
    SetFilter { mode: Mode, sources: Vec<IpAddr> },
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::JoinGroup => f.write_str("join"),
            Request::LeaveGroup => f.write_str("leave"),
            Request::BlockSource { source: s } => write!(f, "block {s}"),
            Request::UnblockSource { source: s } => write!(f, "unblock {s}"),
            Request::JoinSourceGroup { source: s } => write!(f, "join-source {s}"),
            Request::LeaveSourceGroup { source: s } => write!(f, "leave-source {s}"),
            Request::SetFilter { mode, sources } => {
                let mode = match mode {
                    Mode::Include => "include",
                    Mode::Exclude => "exclude",
                };
                write!(f, "filter {mode} {{")?;
                for (i, s) in sources.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{s}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Why [`MembershipSocket::apply`] failed: refused by validation (the kernel was not asked)
/// or by the kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("invalid request: {0}")]
    Invalid(#[from] InvalidRequest),
    #[error("the kernel refused {0}")]
    Kernel(#[from] SockoptError),
}

impl ApplyError {
    /// The kernel's errno, if the kernel was asked.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ApplyError::Invalid(_) => None,
            ApplyError::Kernel(e) => Some(e.errno),
        }
    }

    /// The symbolic name of the kernel's errno, if the kernel was asked.
    pub fn errno_name(&self) -> Option<&'static str> {
        match self {
            ApplyError::Invalid(_) => None,
            ApplyError::Kernel(e) => Some(e.errno_name()),
        }
    }
}

/// Bytes of the option buffer that sets a full-state filter of `sources` sources
/// (`MCAST_MSFILTER`'s `struct group_filter`); the kernel refuses buffers larger than
/// `net.core.optmem_max` with `ENOBUFS`.
pub const fn filter_option_size(sources: usize) -> usize {
    ffi::group_filter_size(sources)
}

/// Sources room of the first `getsockopt(MCAST_MSFILTER)`; it grows when the kernel reports
/// more.
const INITIAL_FILTER_CAPACITY: usize = 16;

/// A UDP socket holding multicast memberships for one family on one interface.
///
/// It is never bound to a port, so it never receives data, and `IP_MULTICAST_ALL` /
/// `IPV6_MULTICAST_ALL` is off. Memberships live as long as the socket: dropping it leaves
/// every group it joined (the kernel sends the reports).
#[derive(Debug)]
pub struct MembershipSocket {
    fd: OwnedFd,
    family: Family,
    ifindex: u32,
}

impl MembershipSocket {
    /// A socket of `family` for interface `ifindex`, in the calling thread's network
    /// namespace. The interface's existence is not checked here: requests on a missing
    /// interface fail with the kernel's `ENODEV`. Index 0 ("any interface, chosen by
    /// route") is refused with `ENODEV`: the kernel records the interface it picks, so the
    /// socket could not read its own filter back.
    pub fn open(family: Family, ifindex: u32) -> Result<Self, SockoptError> {
        if ifindex == 0 {
            return Err(SockoptError::new("interface index 0", libc::ENODEV));
        }
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                family.domain(),
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::IPPROTO_UDP,
            )
        };
        if raw < 0 {
            return Err(SockoptError::last("socket"));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let off: libc::c_int = 0;
        match family {
            Family::V4 => ffi::setsockopt(
                fd.as_fd(),
                libc::SOL_IP,
                libc::IP_MULTICAST_ALL,
                &off,
                "IP_MULTICAST_ALL",
            )?,
            Family::V6 => ffi::setsockopt(
                fd.as_fd(),
                libc::SOL_IPV6,
                libc::IPV6_MULTICAST_ALL,
                &off,
                "IPV6_MULTICAST_ALL",
            )?,
        }
        Ok(Self {
            fd,
            family,
            ifindex,
        })
    }

    /// Apply membership requests to a socket of the caller's own (an application's bound
    /// UDP socket, whose per-socket filter then decides what it receives). Unlike
    /// [`MembershipSocket::open`], nothing about the socket is changed.
    pub fn from_socket(fd: OwnedFd, family: Family, ifindex: u32) -> Self {
        Self {
            fd,
            family,
            ifindex,
        }
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Validate `req` on `group` ([`validate`]), then apply it as a socket option.
    pub fn apply(&self, group: IpAddr, req: &Request) -> Result<(), ApplyError> {
        validate(self.family, group, req)?;
        Ok(self.set_option(group, req)?)
    }

    /// Set the option that carries `req` without validating it: the kernel's own verdict.
    /// For a request [`validate`] already accepted, and for showing what the kernel says
    /// about requests msfilter refuses.
    pub fn set_option(&self, group: IpAddr, req: &Request) -> Result<(), SockoptError> {
        let fd = self.fd.as_fd();
        let level = self.family.level();
        let group_req = || ffi::group_req {
            gr_interface: self.ifindex,
            gr_group: ffi::storage_of(group),
        };
        let source_req = |source: IpAddr| ffi::group_source_req {
            gsr_interface: self.ifindex,
            gsr_group: ffi::storage_of(group),
            gsr_source: ffi::storage_of(source),
        };
        match req {
            Request::JoinGroup => ffi::setsockopt(
                fd,
                level,
                libc::MCAST_JOIN_GROUP,
                &group_req(),
                "MCAST_JOIN_GROUP",
            ),
            Request::LeaveGroup => ffi::setsockopt(
                fd,
                level,
                libc::MCAST_LEAVE_GROUP,
                &group_req(),
                "MCAST_LEAVE_GROUP",
            ),
            Request::BlockSource { source: s } => ffi::setsockopt(
                fd,
                level,
                libc::MCAST_BLOCK_SOURCE,
                &source_req(*s),
                "MCAST_BLOCK_SOURCE",
            ),
            Request::UnblockSource { source: s } => ffi::setsockopt(
                fd,
                level,
                libc::MCAST_UNBLOCK_SOURCE,
                &source_req(*s),
                "MCAST_UNBLOCK_SOURCE",
            ),
            Request::JoinSourceGroup { source: s } => ffi::setsockopt(
                fd,
                level,
                libc::MCAST_JOIN_SOURCE_GROUP,
                &source_req(*s),
                "MCAST_JOIN_SOURCE_GROUP",
            ),
            Request::LeaveSourceGroup { source: s } => ffi::setsockopt(
                fd,
                level,
                libc::MCAST_LEAVE_SOURCE_GROUP,
                &source_req(*s),
                "MCAST_LEAVE_SOURCE_GROUP",
            ),
            Request::SetFilter { mode, sources } => {
                let buf = GroupFilterBuf::new(self.ifindex, group, ffi::fmode(*mode), sources);
                // SAFETY: `buf` holds `buf.option_len()` initialised bytes.
                unsafe {
                    ffi::setsockopt_raw(
                        fd,
                        level,
                        libc::MCAST_MSFILTER,
                        buf.as_ptr(),
                        buf.option_len(),
                        "MCAST_MSFILTER",
                    )
                }
            }
        }
    }

    /// The socket's filter for `group` on its interface, as the kernel states it
    /// (`getsockopt(MCAST_MSFILTER)`), sources in the kernel's order.
    ///
    /// An any-source membership without blocks is `(Exclude, [])`. A group this socket has
    /// not joined fails with `EADDRNOTAVAIL`.
    pub fn filter(&self, group: IpAddr) -> Result<(Mode, Vec<IpAddr>), SockoptError> {
        const OPTION: &str = "MCAST_MSFILTER (get)";
        let mut capacity = INITIAL_FILTER_CAPACITY;
        // The list only grows if another thread adds sources between two calls; a few
        // rounds settle it.
        for _ in 0..8 {
            let mut buf = GroupFilterBuf::with_capacity(capacity);
            let header = buf.header_mut();
            header.gf_interface = self.ifindex;
            header.gf_group = ffi::storage_of(group);
            // The kernel copies min(this, its count) sources: it must not exceed the room.
            header.gf_numsrc = capacity as u32;
            let mut len = libc::socklen_t::try_from(buf.option_len())
                .map_err(|_| SockoptError::new(OPTION, libc::E2BIG))?;
            // SAFETY: `buf` is `len` writable bytes, holding room for `gf_numsrc` sources,
            // which bounds what the kernel writes; `len` is a live socklen_t.
            let rc = unsafe {
                libc::getsockopt(
                    self.fd.as_raw_fd(),
                    self.family.level(),
                    libc::MCAST_MSFILTER,
                    buf.as_mut_ptr(),
                    &raw mut len,
                )
            };
            if rc != 0 {
                return Err(SockoptError::last(OPTION));
            }
            let header = buf.header();
            let count = header.gf_numsrc as usize;
            if count > capacity {
                capacity = count;
                continue;
            }
            let mode = ffi::mode_of(header.gf_fmode)
                .ok_or_else(|| SockoptError::new(OPTION, libc::EPROTO))?;
            let sources = (0..count)
                .map(|i| ffi::ip_of_storage(buf.source(i)))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| SockoptError::new(OPTION, libc::EAFNOSUPPORT))?;
            return Ok((mode, sources));
        }
        Err(SockoptError::new(OPTION, libc::EAGAIN))
    }
}

impl AsFd for MembershipSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_display_as_short_phrases() {
        let s: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(Request::JoinGroup.to_string(), "join");
        assert_eq!(
            Request::BlockSource { source: s }.to_string(),
            "block 10.0.0.1"
        );
        assert_eq!(
            Request::LeaveSourceGroup { source: s }.to_string(),
            "leave-source 10.0.0.1"
        );
        assert_eq!(
            Request::SetFilter {
                mode: Mode::Exclude,
                sources: vec![s, "10.0.0.2".parse().unwrap()]
            }
            .to_string(),
            "filter exclude {10.0.0.1, 10.0.0.2}"
        );
        assert_eq!(
            Request::SetFilter {
                mode: Mode::Include,
                sources: vec![]
            }
            .to_string(),
            "filter include {}"
        );
    }

    #[test]
    fn interface_index_zero_is_refused() {
        let err = MembershipSocket::open(Family::V4, 0).unwrap_err();
        assert_eq!(err.errno_name(), "ENODEV");
    }

    #[test]
    fn apply_error_exposes_the_errno_only_when_the_kernel_was_asked() {
        let k = ApplyError::from(SockoptError::new("MCAST_JOIN_GROUP", libc::EADDRINUSE));
        assert_eq!(k.errno_name(), Some("EADDRINUSE"));
        let i = ApplyError::from(InvalidRequest::GroupNotMulticast(
            "10.0.0.1".parse().unwrap(),
        ));
        assert_eq!(i.errno(), None);
        assert_eq!(
            i.to_string(),
            "invalid request: 10.0.0.1 is not a multicast address; a group must be multicast"
        );
    }
}
