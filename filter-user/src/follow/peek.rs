//! Reading an application's own socket: `pidfd_open` + `pidfd_getfd` give this process a
//! descriptor of the same socket, `getsockopt` reads what the kernel holds, and the
//! descriptor is closed at once (held open, it would keep the application's memberships
//! alive after the application closed its socket).
//!
//! Sockets are found by their id in the hooks' socket-local storage, which a descriptor of
//! the socket reads; a per-process cache of socket inodes keeps the search from duplicating
//! the same descriptors again and again.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use msfilter_common::Addr;

use crate::{
    policy::GroupFilter,
    sockopt::{Family, MembershipSocket, SockoptError, addr_of, ip_of},
};

use super::{hooks::Hooks, procfs};

/// A descriptor of another process's socket, closed when dropped.
#[derive(Debug)]
pub struct Peeked {
    pub fd: OwnedFd,
    /// The descriptor's number in its process.
    pub remote_fd: i32,
}

fn syscall_fd(rc: libc::c_long, what: &str) -> io::Result<OwnedFd> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    let raw = i32::try_from(rc).map_err(io::Error::other)?;
    // SAFETY: the system call returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    syscall_fd(rc, "pidfd_open")
}

/// `pidfd_getfd(pidfd, fd, 0)`: a descriptor (close-on-exec) of process's descriptor `fd`.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    syscall_fd(rc, "pidfd_getfd")
}

fn getsockopt_value<T: Copy + Default>(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<T> {
    let mut value = T::default();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a live T of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// What a socket is, read through a descriptor of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketFacts {
    /// `SO_DOMAIN`: `AF_INET`, `AF_INET6`, ...
    pub domain: i32,
    /// `SO_TYPE`: `SOCK_DGRAM`, `SOCK_RAW`, `SOCK_STREAM`, ...
    pub sotype: i32,
    pub cookie: u64,
    pub netns_cookie: u64,
}

impl SocketFacts {
    pub fn read(fd: BorrowedFd<'_>) -> io::Result<Self> {
        Ok(Self {
            domain: getsockopt_value(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?,
            sotype: getsockopt_value(fd, libc::SOL_SOCKET, libc::SO_TYPE)?,
            cookie: getsockopt_value(fd, libc::SOL_SOCKET, libc::SO_COOKIE)?,
            netns_cookie: getsockopt_value(fd, libc::SOL_SOCKET, libc::SO_NETNS_COOKIE)?,
        })
    }

    /// An IPv4 or IPv6 socket that can hold memberships (connection-oriented sockets are
    /// refused every membership option).
    pub fn can_join(&self) -> bool {
        matches!(self.domain, libc::AF_INET | libc::AF_INET6) && self.sotype != libc::SOCK_STREAM
    }

    pub fn family(&self) -> Family {
        if self.domain == libc::AF_INET6 {
            Family::V6
        } else {
            Family::V4
        }
    }
}

/// A socket's cookie (`SO_COOKIE`): how the follower's view names sockets
/// ([`super::Member::cookie`]), e.g. to tell msfilter's own client sockets apart.
pub fn socket_cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    getsockopt_value(fd, libc::SOL_SOCKET, libc::SO_COOKIE)
}

/// The network namespace cookie of the calling thread's namespace (from a socket opened
/// for the purpose).
pub fn own_netns_cookie() -> io::Result<u64> {
    // SAFETY: plain socket(2); the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    getsockopt_value(fd.as_fd(), libc::SOL_SOCKET, libc::SO_NETNS_COOKIE)
}

/// The socket's filter for `group` on `ifindex` (`getsockopt(MCAST_MSFILTER)`), `None`
/// when it is not a member there.
pub fn read_filter(
    fd: BorrowedFd<'_>,
    socket_family: Family,
    ifindex: u32,
    group: Addr,
) -> Result<Option<GroupFilter>, SockoptError> {
    let ip = ip_of(&group);
    let group_family = Family::of(ip);
    if socket_family == Family::V4 && group_family == Family::V6 {
        // An IPv4 socket has no IPv6 memberships.
        return Ok(None);
    }
    let dup = fd
        .try_clone_to_owned()
        .map_err(|e| SockoptError::new("dup", e.raw_os_error().unwrap_or(libc::EIO)))?;
    let socket = MembershipSocket::from_socket(dup, group_family, ifindex);
    match socket.filter(ip) {
        Ok((mode, sources)) => Ok(Some(GroupFilter::new(
            mode,
            sources.into_iter().map(addr_of),
        ))),
        // Not a member; an interface that is gone; a socket that turned IPv4
        // (IPV6_ADDRFORM) and no longer answers at the IPv6 level.
        Err(e)
            if matches!(
                e.errno,
                libc::EADDRNOTAVAIL | libc::ENODEV | libc::ENOPROTOOPT
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// What is known about one socket inode of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inode {
    /// Not a followed socket: another namespace, not IPv4/IPv6, or a stream socket. These
    /// never change, so the socket is never looked at again.
    NotFollowed,
    /// Followed, named with this id.
    Named(u64),
    /// Followed, but not named yet (no membership option has run on it).
    Unnamed,
}

/// A process's descriptor and what its socket inodes are.
#[derive(Debug)]
struct Process {
    pidfd: OwnedFd,
    inodes: HashMap<u64, Inode>,
}

/// A followed socket found in a process.
#[derive(Debug)]
pub struct Found {
    pub peeked: Peeked,
    pub facts: SocketFacts,
    /// Its id, if it has one.
    pub id: Option<u64>,
}

/// The processes whose sockets were looked at.
#[derive(Debug)]
pub struct Processes {
    netns_cookie: u64,
    procs: HashMap<u32, Process>,
}

impl Processes {
    pub fn new(netns_cookie: u64) -> Self {
        Self {
            netns_cookie,
            procs: HashMap::new(),
        }
    }

    fn process(&mut self, pid: u32) -> Option<&mut Process> {
        match self.procs.entry(pid) {
            std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => Some(e.insert(Process {
                pidfd: pidfd_open(pid).ok()?,
                inodes: HashMap::new(),
            })),
        }
    }

    /// Forget a process (it exited, or its pid may have been reused).
    pub fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }

    /// Keep only the processes `keep` says yes to (closing the others' descriptors).
    pub fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        self.procs.retain(|pid, _| keep(*pid));
    }

    /// Duplicate descriptor `fd` of `pid` and check that it still is socket `inode`.
    fn dup(&mut self, pid: u32, fd: i32, inode: u64) -> Option<OwnedFd> {
        let proc = self.process(pid)?;
        match pidfd_getfd(proc.pidfd.as_fd(), fd) {
            Ok(dup) => (fstat_inode(dup.as_fd()) == Some(inode)).then_some(dup),
            Err(e) => {
                if e.raw_os_error() == Some(libc::ESRCH) {
                    self.forget(pid);
                }
                None
            }
        }
    }

    /// The inode of whatever descriptor `fd` of `pid` is now.
    fn inode_at(&mut self, pid: u32, fd: i32) -> Option<u64> {
        let proc = self.process(pid)?;
        let dup = pidfd_getfd(proc.pidfd.as_fd(), fd).ok()?;
        fstat_inode(dup.as_fd())
    }

    /// The socket named `id` in process `pid`, if it is there. `known_fd` is where it was
    /// last seen.
    pub fn find(
        &mut self,
        hooks: &Hooks,
        pid: u32,
        id: u64,
        known_fd: Option<i32>,
    ) -> Option<Found> {
        // Where it was last seen, first: one duplicate, no walk of the process's
        // descriptors (which costs a readlink per descriptor, and receivers may hold many).
        // The id read from the duplicate proves it is the same socket.
        if let Some(fd) = known_fd
            && let Some(inode) = self.inode_at(pid, fd)
            && let Some(found) = self.classify(hooks, pid, fd, inode, Some(id))
        {
            return Some(found);
        }
        let fds = procfs::socket_fds(pid);
        for &(fd, inode) in &fds {
            if Some(fd) == known_fd {
                continue;
            }
            if let Some(found) = self.classify(hooks, pid, fd, inode, Some(id)) {
                return Some(found);
            }
        }
        None
    }

    /// Every followed socket of process `pid` (each duplicated in turn: `f` must not keep
    /// them). The inode cache of the process is rebuilt from what is open now.
    pub fn each_socket(&mut self, hooks: &Hooks, pid: u32, mut f: impl FnMut(Found)) {
        let fds = procfs::socket_fds(pid);
        if let Some(proc) = self.procs.get_mut(&pid) {
            proc.inodes
                .retain(|inode, _| fds.iter().any(|(_, i)| i == inode));
        }
        for (fd, inode) in fds {
            if let Some(found) = self.classify(hooks, pid, fd, inode, None) {
                f(found);
            }
        }
    }

    /// Look at descriptor `fd` (socket `inode`) of `pid`: a followed socket, and (with
    /// `want`) the one named so?
    fn classify(
        &mut self,
        hooks: &Hooks,
        pid: u32,
        fd: i32,
        inode: u64,
        want: Option<u64>,
    ) -> Option<Found> {
        let cached = self
            .procs
            .get(&pid)
            .and_then(|p| p.inodes.get(&inode).copied());
        match (cached, want) {
            (Some(Inode::NotFollowed), _) => return None,
            (Some(Inode::Named(id)), Some(w)) if id != w => return None,
            _ => {}
        }
        let dup = self.dup(pid, fd, inode)?;
        let facts = SocketFacts::read(dup.as_fd()).ok()?;
        let followed = facts.can_join() && facts.netns_cookie == self.netns_cookie;
        let id = if followed {
            hooks.id_of(dup.as_fd())
        } else {
            None
        };
        let state = match (followed, id) {
            (false, _) => Inode::NotFollowed,
            (true, Some(id)) => Inode::Named(id),
            (true, None) => Inode::Unnamed,
        };
        if let Some(proc) = self.procs.get_mut(&pid) {
            proc.inodes.insert(inode, state);
        }
        if !followed || want.is_some_and(|w| id != Some(w)) {
            return None;
        }
        Some(Found {
            peeked: Peeked {
                fd: dup,
                remote_fd: fd,
            },
            facts,
            id,
        })
    }

    /// Note that the socket at `inode` of `pid` is now named `id` (after the follower named
    /// it).
    pub fn named(&mut self, pid: u32, inode: u64, id: u64) {
        if let Some(proc) = self.procs.get_mut(&pid) {
            proc.inodes.insert(inode, Inode::Named(id));
        }
    }
}

/// The inode of an open descriptor.
pub fn fstat_inode(fd: BorrowedFd<'_>) -> Option<u64> {
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &raw mut st) } != 0 {
        return None;
    }
    Some(st.st_ino)
}

/// An address as the sockopt layer takes it.
pub fn ip(addr: &Addr) -> IpAddr {
    ip_of(addr)
}
