//! The Linux capabilities the daemon needs, and why (measured on 6.18 by running the daemon
//! with only a given set; see docs/operations.md):
//!
//! * `CAP_BPF`: create the maps and load the program (without it: `EPERM` creating the
//!   first map).
//! * `CAP_PERFMON`: the verifier accepts the program's packet-pointer arithmetic
//!   (`data_end - data`) only from a caller with it (without it: "pointer -= pointer
//!   prohibited", `EACCES`).
//! * `CAP_NET_ADMIN`: loading an XDP program at all, attaching it to interfaces, and raising
//!   the `net.*` limits (without it: `EPERM` from `BPF_PROG_LOAD`).
//!
//! Follow mode (`attach --follow`, docs/follow.md) needs two more, checked when it starts
//! (measured on 6.18 against a process of another user, with `setpriv` keeping only the
//! capability named):
//!
//! * `CAP_SYS_PTRACE`: `pidfd_getfd(2)` of another process's sockets and reading its
//!   threads' `/proc/PID/task/TID/syscall` (without it: `EPERM`).
//! * `CAP_DAC_READ_SEARCH`: listing `/proc/PID/fd` and opening `.../syscall` of a process
//!   of another user, directories and files of mode 0500/0400 owned by that user (without
//!   it: `EACCES`, also for root). `CAP_DAC_OVERRIDE` grants it too.
//!
//! Without them the follower cannot find other users' sockets: their groups are never
//! proven complete and pass every source.
//!
//! `CAP_SYS_ADMIN` grants the first two as well (the kernel's `bpf_capable()` and
//! `perfmon_capable()` accept it), and is what looking BPF objects up by id needs
//! (`BPF_PROG_GET_FD_BY_ID`, `BPF_LINK_GET_NEXT_ID`): without it the daemon still loads,
//! attaches, adopts its pinned links and filters, but shows other programs without their
//! names and cannot remove another tool's XDP program (`attach --replace`).

use std::io;

/// One capability: its number and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    pub bit: u32,
    pub name: &'static str,
}

pub const CAP_NET_ADMIN: Capability = Capability {
    bit: 12,
    name: "CAP_NET_ADMIN",
};
pub const CAP_SYS_ADMIN: Capability = Capability {
    bit: 21,
    name: "CAP_SYS_ADMIN",
};
pub const CAP_DAC_OVERRIDE: Capability = Capability {
    bit: 1,
    name: "CAP_DAC_OVERRIDE",
};
pub const CAP_DAC_READ_SEARCH: Capability = Capability {
    bit: 2,
    name: "CAP_DAC_READ_SEARCH",
};
pub const CAP_SYS_PTRACE: Capability = Capability {
    bit: 19,
    name: "CAP_SYS_PTRACE",
};
pub const CAP_PERFMON: Capability = Capability {
    bit: 38,
    name: "CAP_PERFMON",
};
pub const CAP_BPF: Capability = Capability {
    bit: 39,
    name: "CAP_BPF",
};

/// What the daemon needs each capability for; the second capability, if any, also grants it.
pub const DAEMON_NEEDS: [(Capability, Option<Capability>, &str); 3] = [
    (
        CAP_BPF,
        Some(CAP_SYS_ADMIN),
        "to create the BPF maps and load the XDP program",
    ),
    (
        CAP_PERFMON,
        Some(CAP_SYS_ADMIN),
        "for the verifier to accept the program's packet-pointer arithmetic",
    ),
    (
        CAP_NET_ADMIN,
        None,
        "to load and attach an XDP program and to raise the net.* limits",
    ),
];

/// What follow mode needs besides [`DAEMON_NEEDS`]; the second capability, if any, also
/// grants it.
pub const FOLLOW_NEEDS: [(Capability, Option<Capability>, &str); 2] = [
    (
        CAP_SYS_PTRACE,
        None,
        "to duplicate other processes' sockets (pidfd_getfd) and read their threads' state",
    ),
    (
        CAP_DAC_READ_SEARCH,
        Some(CAP_DAC_OVERRIDE),
        "to list /proc/PID/fd of other users' processes",
    ),
];

/// Follow mode's needs not met by the effective set `mask`: (capability, why).
pub fn missing_for_follow(mask: u64) -> Vec<(Capability, &'static str)> {
    FOLLOW_NEEDS
        .iter()
        .filter(|(cap, also, _)| !cap.held_in(mask) && !also.is_some_and(|a| a.held_in(mask)))
        .map(|(cap, _, why)| (*cap, *why))
        .collect()
}

/// Check that this process may follow sockets (follow mode); the sentence names what is
/// missing and why. An unreadable status file lets it go on (the kernel still judges).
pub fn check_follow() -> Result<(), String> {
    let Ok(effective) = own_effective() else {
        return Ok(());
    };
    let missing = missing_for_follow(effective);
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "follow mode needs {} (the daemon lacks {})",
        missing
            .iter()
            .map(|(c, why)| format!("{} {why}", c.name))
            .collect::<Vec<_>>()
            .join(", and "),
        missing
            .iter()
            .map(|(c, _)| c.name)
            .collect::<Vec<_>>()
            .join(" and "),
    ))
}

impl Capability {
    pub const fn held_in(self, mask: u64) -> bool {
        mask & (1 << self.bit) != 0
    }
}

/// The daemon's needs not met by the effective set `mask`: (capability, why).
pub fn missing_for_daemon(mask: u64) -> Vec<(Capability, &'static str)> {
    DAEMON_NEEDS
        .iter()
        .filter(|(cap, also, _)| !cap.held_in(mask) && !also.is_some_and(|a| a.held_in(mask)))
        .map(|(cap, _, why)| (*cap, *why))
        .collect()
}

/// The names of the capabilities in `mask` that msfilter cares about, for messages.
pub fn names(mask: u64) -> Vec<&'static str> {
    [CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN]
        .into_iter()
        .filter(|c| c.held_in(mask))
        .map(|c| c.name)
        .collect()
}

/// This process's effective capabilities.
pub fn own_effective() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    super::parse::effective_capabilities(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "/proc/self/status has no CapEff line",
        )
    })
}

/// The daemon lacks capabilities it needs.
#[derive(Debug, thiserror::Error)]
#[error(
    "msfilter daemon lacks {}; it needs {} (this process has {})",
    .missing.iter().map(|(c, _)| c.name).collect::<Vec<_>>().join(" and "),
    .missing.iter().map(|(c, why)| format!("{} {why}", c.name)).collect::<Vec<_>>().join(", "),
    describe(*.effective)
)]
pub struct MissingCapabilities {
    pub missing: Vec<(Capability, &'static str)>,
    pub effective: u64,
}

fn describe(mask: u64) -> String {
    let names = names(mask);
    if names.is_empty() {
        "none of CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN".to_string()
    } else {
        names.join(", ")
    }
}

/// Check, before the daemon starts, that this process holds what the daemon needs, so a
/// unit or container with too few capabilities fails with their names rather than with a
/// bare `EPERM` from the kernel. An unreadable status file lets the start go on (the kernel
/// still judges).
pub fn check_daemon() -> Result<(), MissingCapabilities> {
    let Ok(effective) = own_effective() else {
        return Ok(());
    };
    let missing = missing_for_daemon(effective);
    if missing.is_empty() {
        if !CAP_SYS_ADMIN.held_in(effective) {
            log::info!(
                "running without CAP_SYS_ADMIN: other XDP programs are shown without their \
                 names, and replacing another tool's program (attach --replace) is refused"
            );
        }
        Ok(())
    } else {
        Err(MissingCapabilities { missing, effective })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn mask(caps: &[Capability]) -> u64 {
        let mut m = 0;
        let mut i = 0;
        while i < caps.len() {
            m |= 1 << caps[i].bit;
            i += 1;
        }
        m
    }

    #[test]
    fn what_the_daemon_needs() {
        let unit = mask(&[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]);
        assert_eq!(
            unit, 0xc0_0000_1000,
            "the mask /proc shows for the unit's set"
        );
        assert!(missing_for_daemon(unit).is_empty());
        assert!(missing_for_daemon(u64::MAX).is_empty());
        assert!(missing_for_daemon(mask(&[CAP_SYS_ADMIN, CAP_NET_ADMIN])).is_empty());
        let names = |m| {
            missing_for_daemon(m)
                .into_iter()
                .map(|(c, _)| c.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(mask(&[CAP_PERFMON, CAP_NET_ADMIN])), ["CAP_BPF"]);
        assert_eq!(names(mask(&[CAP_BPF, CAP_NET_ADMIN])), ["CAP_PERFMON"]);
        assert_eq!(names(mask(&[CAP_BPF, CAP_PERFMON])), ["CAP_NET_ADMIN"]);
        assert_eq!(names(mask(&[CAP_SYS_ADMIN])), ["CAP_NET_ADMIN"]);
        assert_eq!(names(0), ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]);
    }

    #[test]
    fn the_error_names_what_is_missing_and_why() {
        let e = MissingCapabilities {
            missing: missing_for_daemon(mask(&[CAP_BPF, CAP_PERFMON])),
            effective: mask(&[CAP_BPF, CAP_PERFMON]),
        };
        assert_eq!(
            e.to_string(),
            "msfilter daemon lacks CAP_NET_ADMIN; it needs CAP_NET_ADMIN to load and attach an \
             XDP program and to raise the net.* limits (this process has CAP_BPF, CAP_PERFMON)"
        );
    }
}
