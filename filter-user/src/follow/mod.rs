//! Follow mode: XDP enforces the kernel's own interface-level source filter, computed over
//! **every** socket of the host's (the follower's) network namespace on the followed
//! interfaces — applications unchanged, msfilter's own client sockets included, IPv4 and
//! IPv6.
//!
//! # What is enforced
//!
//! Per (interface, group) the merge of RFC 3376 §3.2 / RFC 3810 §4.2 of every member
//! socket's filter ([`crate::policy::merge`]): a source passes iff some socket accepts it —
//! exactly the rule of the kernel's `ip_check_mc_rcu()` for IPv4; for IPv6, which has no
//! interface-level check, this gives the host one. Each socket's filter is read from the
//! kernel (`getsockopt(MCAST_MSFILTER)` on the application's own socket): the kernel stays
//! the judge of every option, errors and quirks included; nothing here models it.
//!
//! # How changes are learnt
//!
//! Two cgroup programs (`filter-ebpf/src/follow/`), attached to the root of the cgroup v2
//! hierarchy so they see every socket of the host, and filtering on the network namespace
//! in the kernel:
//!
//! * `cgroup/setsockopt` runs for every `setsockopt(2)` *before* the kernel handles it. For
//!   a membership option (`IP_ADD_MEMBERSHIP` … `MCAST_MSFILTER`, `IPV6_JOIN_GROUP`,
//!   `IPV6_ADDRFORM`; see `msfilter_common::follow::is_membership_option`) it names the
//!   socket (an id in socket-local storage: this program type cannot read socket cookies),
//!   counts the option as begun (`SocketSeq::begun`, a hash map by id) and writes an event
//!   (id, pid/tid, option, first 48 bytes of the value) to a ring buffer.
//! * `cgroup/sock_release` runs when a named socket is released (close, `kill -9`, exit):
//!   forget its counter, write an event.
//!
//! Tracing programs (`fexit` on `ip_setsockopt`, which would report *after* the kernel
//! applied the option, with its return value) would be simpler, but kernels may refuse them
//! (this project's development machine does, with `EPERM`); cgroup programs need only
//! `CAP_BPF` + `CAP_NET_ADMIN`.
//!
//! ## The race: an event read before the kernel finished the call
//!
//! The setsockopt hook runs before the option is applied, so reading the socket as soon as
//! the event arrives could see the old state. An option is taken as finished only once its
//! thread is seen outside it: the thread began a later option (a newer event), or
//! `/proc/<pid>/task/<tid>/syscall` shows it in another system call, not in one, or gone.
//! A thread asleep inside `setsockopt` (waiting for the RTNL lock) shows as such and is
//! waited for. Only a thread seen *running* leaves the question open; one seen only running
//! for [`FollowOptions::settle_cap`] is taken to have finished (the kernel handles the
//! option in microseconds and waits only asleep). Then the socket is read; the read counts
//! ("settled") only if the socket's option count equals the highest the events reported and
//! did not move during the read.
//!
//! ## Knowing every member: the kernel's count as safety net
//!
//! `/proc/net/igmp(6)` counts memberships per (interface, group) (`Users`: one per member
//! socket plus the kernel's own joins). Each check of a set of groups reads the option
//! count of every member of those groups, the kernel's counts, and those option counts
//! again: after events only the groups they touched (and those waiting out the promotion
//! delay), every group each [`FollowOptions::recheck_interval`] and after scans and lost
//! events. A group's merge is enforced only if every known member was read settled and its
//! count did not move around the kernel's count, and the kernel counts exactly as many
//! memberships as there are known members; and, after the two disagreed or for a new group,
//! only once they have agreed for [`FollowOptions::promote_delay`] (the release hook of an
//! IPv6 socket runs just after the kernel dropped its IPv6 memberships; the delay covers
//! that gap). Otherwise the group passes every source (EXCLUDE {}). So a membership the
//! follower does not know — kernel-internal (a VXLAN device's group), a socket not found
//! yet, one in a descriptor table it cannot see — can only make XDP drop less, never a
//! source someone wants. Groups without a known member are left alone (not managed).
//!
//! ## Lost events, start-up, restarts
//!
//! A full ring buffer loses events; the hooks count them (`Stat::Lost`), and the follower
//! then trusts nothing and rescans every process once running options have finished. At
//! start-up the hooks are attached *before* the scan (after [`FollowOptions::startup_grace`],
//! for options that began before the hooks existed): sockets created or changed during the
//! scan are reported. The scan walks `/proc/*/fd`, duplicates each socket (`pidfd_getfd`),
//! keeps the IPv4/IPv6 non-stream ones of this namespace (`SO_NETNS_COOKIE`), names them
//! (socket-local storage, id = `SO_COOKIE`) and reads every group the kernel lists on the
//! followed interfaces. A restarted follower starts the same way; XDP keeps its last
//! filters meanwhile (the controller owns the maps).
//!
//! # What it needs
//!
//! Linux ≥ 5.14 with BTF-less cgroup BPF (cgroup v2 mounted), `CAP_BPF` and `CAP_NET_ADMIN`
//! (load and attach the cgroup programs), `CAP_SYS_PTRACE` (`pidfd_getfd`, other processes'
//! `/proc/<pid>/fd` and `/proc/<pid>/task/<tid>/syscall`), and the host's PID namespace
//! (event pids are the kernel's). Every `setsockopt(2)` on the host pays for the hook
//! (the kernel copies the option value for it; the program returns at once for other
//! options and namespaces); see `docs/follow.md` for the measured cost.
//!
//! # Modules
//!
//! * [`hooks`]: the object, attached; ring buffer, counters, ids.
//! * `peek`: `pidfd_getfd`, finding a socket by id, reading its filter.
//! * `procfs`: `/proc/net/igmp(6)` (opened once, parsed by [`crate::iface::groups`]),
//!   `/proc/*/fd`, thread states, the cgroup v2 mount.
//! * [`table`]: the model (sockets, groups, completeness) — pure.
//! * [`Follower`]: the engine.

mod follower;
pub mod hooks;
mod peek;
mod procfs;
pub mod table;

pub use follower::{FollowOptions, FollowStats, Follower};
pub use hooks::{HookStats, Hooks};
pub use peek::socket_cookie;
pub use procfs::MembershipCounts;
pub use table::{Completeness, FollowedGroup, Member, SocketRecord};

/// Errors of the follow layer.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(
        "this build has no follow object (it was built with AYA_BUILD_SKIP); rebuild without it \
         after `cargo xtask setup`"
    )]
    ObjectMissing,
    #[error("loading the follow hooks failed: {0}")]
    Load(String),
    #[error("attaching {program} to the cgroup {} failed: {detail}", cgroup.display())]
    Attach {
        program: &'static str,
        cgroup: std::path::PathBuf,
        detail: String,
    },
    #[error("map {map}: {detail}")]
    Map { map: &'static str, detail: String },
    #[error("no interface with index {0} in the followed network namespace")]
    NoSuchInterface(u32),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
