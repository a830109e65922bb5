//! The kernel's membership limits.
//!
//! They are read and written through `/proc/sys`, which shows the network namespace of the
//! *calling thread* (a thread that entered a namespace with `setns` sees that namespace's
//! values). Writing needs `CAP_NET_ADMIN` over the namespace.
//!
//! * `net.ipv4.igmp_max_msf` (default 10, per namespace): sources per IPv4 group and socket;
//!   one more gives `ENOBUFS`. Large source lists need it raised.
//! * `net.ipv4.igmp_max_memberships` (default 20, per namespace): IPv4 groups per socket.
//!   msfilter holds one socket per (client, interface, group), so it never reaches it.
//! * `net.core.optmem_max` (default 131072 bytes, per namespace): the largest socket option
//!   buffer. A full-state filter (`MCAST_MSFILTER`) carries a 128-byte `sockaddr_storage` per
//!   source, so about 1,000 sources fill it; more gives `ENOBUFS` whatever the source limit.
//! * `net.ipv6.mld_max_msf` (default 64): sources per IPv6 group and socket. **Global**, not
//!   per namespace: the kernel registers it in the initial network namespace only, so it
//!   exists only there (measured on 6.18: `/proc/sys/net/ipv6/mld_max_msf` is absent inside
//!   other namespaces) and changing it affects every namespace of the machine.
//!
//! How the source limit counts (measured): adding single sources (block, join-source) is
//! refused once the socket's list for the group already holds `max` sources, but the first
//! source is always accepted (the list does not exist yet), so a limit of 0 acts as 1 for
//! single additions; a full-state filter (`MCAST_MSFILTER`) with more than `max` sources is
//! refused.

use std::{fmt, io};

use super::Family;

/// One of the kernel's membership limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// `net.ipv4.igmp_max_msf`
    IgmpMaxMsf,
    /// `net.ipv4.igmp_max_memberships`
    IgmpMaxMemberships,
    /// `net.ipv6.mld_max_msf`
    MldMaxMsf,
    /// `net.core.optmem_max`
    OptmemMax,
}

impl Limit {
    pub const ALL: [Limit; 4] = [
        Limit::IgmpMaxMsf,
        Limit::IgmpMaxMemberships,
        Limit::MldMaxMsf,
        Limit::OptmemMax,
    ];

    /// The sysctl key, e.g. `net.ipv4.igmp_max_msf`.
    pub const fn key(self) -> &'static str {
        match self {
            Limit::IgmpMaxMsf => "net.ipv4.igmp_max_msf",
            Limit::IgmpMaxMemberships => "net.ipv4.igmp_max_memberships",
            Limit::MldMaxMsf => "net.ipv6.mld_max_msf",
            Limit::OptmemMax => "net.core.optmem_max",
        }
    }

    /// The file under `/proc/sys`.
    pub const fn path(self) -> &'static str {
        match self {
            Limit::IgmpMaxMsf => "/proc/sys/net/ipv4/igmp_max_msf",
            Limit::IgmpMaxMemberships => "/proc/sys/net/ipv4/igmp_max_memberships",
            Limit::MldMaxMsf => "/proc/sys/net/ipv6/mld_max_msf",
            Limit::OptmemMax => "/proc/sys/net/core/optmem_max",
        }
    }

    /// The kernel's default in a new namespace.
    pub const fn kernel_default(self) -> u32 {
        match self {
            Limit::IgmpMaxMsf => 10,
            Limit::IgmpMaxMemberships => 20,
            Limit::MldMaxMsf => 64,
            Limit::OptmemMax => 131_072,
        }
    }

    /// Whether each network namespace has its own value (`false`: one value for the whole
    /// machine, visible only from the initial namespace).
    pub const fn is_per_namespace(self) -> bool {
        !matches!(self, Limit::MldMaxMsf)
    }

    /// The sources-per-group limit of a family.
    pub const fn max_sources(family: Family) -> Limit {
        match family {
            Family::V4 => Limit::IgmpMaxMsf,
            Family::V6 => Limit::MldMaxMsf,
        }
    }

    /// The current value in the calling thread's network namespace.
    pub fn read(self) -> io::Result<u32> {
        let text = std::fs::read_to_string(self.path()).map_err(|e| self.error("reading", e))?;
        text.trim().parse().map_err(|e| {
            self.error(
                "reading",
                io::Error::new(io::ErrorKind::InvalidData, format!("{text:?}: {e}")),
            )
        })
    }

    /// Set the value in the calling thread's network namespace.
    pub fn set(self, value: u32) -> io::Result<()> {
        std::fs::write(self.path(), format!("{value}\n")).map_err(|e| self.error("setting", e))
    }

    /// Set the value and get a guard that puts the previous one back when dropped.
    ///
    /// The guard restores through `/proc/sys` of the thread that drops it, so drop it on a
    /// thread in the same network namespace.
    pub fn set_scoped(self, value: u32) -> io::Result<LimitGuard> {
        let previous = self.read()?;
        self.set(value)?;
        Ok(LimitGuard {
            limit: self,
            previous,
        })
    }

    fn error(self, doing: &str, e: io::Error) -> io::Error {
        let note = if !self.is_per_namespace() && e.kind() == io::ErrorKind::NotFound {
            " (this limit is global: it exists only in the initial network namespace)"
        } else {
            ""
        };
        io::Error::new(
            e.kind(),
            format!("{doing} {} ({}): {e}{note}", self.key(), self.path()),
        )
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Restores a limit's previous value on drop (see [`Limit::set_scoped`]).
#[derive(Debug)]
#[must_use = "the previous value is restored when the guard is dropped"]
pub struct LimitGuard {
    limit: Limit,
    previous: u32,
}

impl LimitGuard {
    pub fn previous(&self) -> u32 {
        self.previous
    }
}

impl Drop for LimitGuard {
    fn drop(&mut self) {
        if let Err(e) = self.limit.set(self.previous) {
            log::warn!("could not restore {}: {e}", self.limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_paths_agree() {
        for l in Limit::ALL {
            let from_key = format!("/proc/sys/{}", l.key().replace('.', "/"));
            assert_eq!(from_key, l.path());
        }
        assert_eq!(Limit::max_sources(Family::V4), Limit::IgmpMaxMsf);
        assert_eq!(Limit::max_sources(Family::V6), Limit::MldMaxMsf);
    }
}
