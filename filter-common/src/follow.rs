//! What the follow-mode hooks (`filter-ebpf/src/follow/`) and the follower
//! (`filter-user/src/follow/`) share: program and map names, map sizes, the layout of a
//! ring-buffer event, the per-socket ids and change counters, and the pure decoding of a
//! membership option's bytes into the (group, interface) it names.
//!
//! The hooks never interpret a socket's filter: they say *that* a membership option is about
//! to run on a socket (and which group its bytes name, as a hint) and when a followed socket
//! is released. The follower then reads the socket's filter from the kernel. See
//! `docs/follow.md`.

use crate::maps::{Addr, ipv4_mapped};

/// `SOL_IP` (`<linux/in.h>`).
pub const SOL_IP: i32 = 0;
/// `SOL_IPV6` (`<linux/in6.h>`).
pub const SOL_IPV6: i32 = 41;

// Option numbers (`<linux/in.h>`, `<linux/in6.h>`): the same on every architecture.
pub const IP_ADD_MEMBERSHIP: i32 = 35;
pub const IP_DROP_MEMBERSHIP: i32 = 36;
pub const IP_UNBLOCK_SOURCE: i32 = 37;
pub const IP_BLOCK_SOURCE: i32 = 38;
pub const IP_ADD_SOURCE_MEMBERSHIP: i32 = 39;
pub const IP_DROP_SOURCE_MEMBERSHIP: i32 = 40;
pub const IP_MSFILTER: i32 = 41;
pub const MCAST_JOIN_GROUP: i32 = 42;
pub const MCAST_BLOCK_SOURCE: i32 = 43;
pub const MCAST_UNBLOCK_SOURCE: i32 = 44;
pub const MCAST_LEAVE_GROUP: i32 = 45;
pub const MCAST_JOIN_SOURCE_GROUP: i32 = 46;
pub const MCAST_LEAVE_SOURCE_GROUP: i32 = 47;
pub const MCAST_MSFILTER: i32 = 48;
/// Turns an IPv6 socket into an IPv4 one; the kernel drops its IPv6 memberships on the way.
pub const IPV6_ADDRFORM: i32 = 1;
pub const IPV6_ADD_MEMBERSHIP: i32 = 20;
pub const IPV6_DROP_MEMBERSHIP: i32 = 21;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Whether `setsockopt(level, optname)` can change a socket's multicast memberships or
/// source filters. Every other option leaves them alone, so the hooks ignore it.
///
/// An IPv6 socket can hold IPv4 memberships too (`SOL_IP` options on an `AF_INET6`
/// socket), so both levels count whatever the socket's family.
#[inline(always)]
pub const fn is_membership_option(level: i32, optname: i32) -> bool {
    match level {
        SOL_IP => optname >= IP_ADD_MEMBERSHIP && optname <= MCAST_MSFILTER,
        SOL_IPV6 => {
            optname == IPV6_ADDRFORM
                || optname == IPV6_ADD_MEMBERSHIP
                || optname == IPV6_DROP_MEMBERSHIP
                || (optname >= MCAST_JOIN_GROUP && optname <= MCAST_MSFILTER)
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Programs and maps

/// The `cgroup/setsockopt` program: runs for every `setsockopt(2)` on a socket of the
/// cgroup it is attached to (and its descendants), *before* the kernel handles the option.
pub const SETSOCKOPT_PROGRAM: &str = "msf_setsockopt";
/// The `cgroup/sock_release` program: runs when an IPv4 or IPv6 socket is released, before
/// the kernel drops its IPv4 memberships (its IPv6 ones are dropped just before it runs).
pub const RELEASE_PROGRAM: &str = "msf_release";
/// Read-only global of the object: the network namespace (its cookie, `SO_NETNS_COOKIE`)
/// whose sockets are followed. The hooks ignore every other namespace's sockets.
pub const NETNS_COOKIE_GLOBAL: &str = "MSF_FOLLOW_NETNS_COOKIE";

/// Ring buffer of [`Event`]s.
pub const EVENTS_MAP: &str = "MSF_FOLLOW_EVENTS";
/// Bytes of the ring buffer (a power of two, a multiple of the page size). One event takes
/// `size_of::<Event>()` + 8 bytes of header: about 8,700 events fit.
pub const EVENTS_BYTES: u32 = 1 << 20;
/// Socket-local storage ([`SockStore`]): the id the follower knows a socket by.
pub const SOCK_STORE_MAP: &str = "MSF_FOLLOW_SOCKID";
/// Socket id → [`SocketSeq`].
pub const SOCKETS_MAP: &str = "MSF_FOLLOW_SOCKETS";
/// Sockets whose changes can be tracked at once. A socket that does not fit counts as
/// untracked ([`Stat::Untracked`]): the follower never trusts its filter (its groups pass
/// every source).
pub const MAX_SOCKETS: u32 = 65_536;
/// Per-CPU array of `u64` counters indexed by [`Stat`].
pub const STATS_MAP: &str = "MSF_FOLLOW_STATS";

/// Ids the hooks give sockets have this bit set; ids the follower gives (the socket's
/// cookie, which the kernel counts up from 1) have it clear, so the two never meet.
pub const HOOK_ID_BIT: u64 = 1 << 63;

/// Counters the hooks keep (per CPU; the follower sums them).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Events written to the ring buffer.
    Events = 0,
    /// Events that did not fit in the ring buffer (the follower must rescan).
    Lost = 1,
    /// Membership options on sockets that did not fit in the sockets map or could not get
    /// socket storage.
    Untracked = 2,
    /// Followed sockets released.
    Closes = 3,
}

impl Stat {
    pub const COUNT: usize = 4;
    pub const ALL: [Stat; Stat::COUNT] = [Stat::Events, Stat::Lost, Stat::Untracked, Stat::Closes];
}

// ---------------------------------------------------------------------------------------
// Map values and events

/// The socket-local storage of a followed socket: the id the follower knows it by. The
/// `cgroup/setsockopt` program cannot get a socket's cookie, so the id is given by whoever
/// sees the socket first: the hook (random, [`HOOK_ID_BIT`] set) or the follower's scan (the
/// socket's cookie). The follower reads it through a descriptor of the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SockStore {
    pub id: u64,
}

/// How many membership options have begun on one socket.
///
/// The hook counts before the kernel looks at the option, so a socket's memberships can
/// only change after `begun` moved: a filter read while `begun` stayed the same, after every
/// option counted so far has returned, is the socket's state for that whole time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SocketSeq {
    pub begun: u64,
}

/// Bytes of the option value copied into an event: enough for the group and interface of
/// every membership structure (`group_req` and friends carry them in their first 36 bytes;
/// 48 is a length `bytemuck` derives `Pod` for).
pub const OPTVAL_PREFIX: usize = 48;

/// [`Event::kind`]: a membership option is about to be handled (`cgroup/setsockopt`).
pub const EVENT_SETSOCKOPT: u32 = 1;
/// [`Event::kind`]: a followed socket is being released (`cgroup/sock_release`).
pub const EVENT_RELEASE: u32 = 2;

/// One ring-buffer record. No implicit padding (checked below).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Event {
    /// The socket's id ([`SockStore`]).
    pub id: u64,
    /// The socket's cookie (`SO_COOKIE`) for a release; 0 for a setsockopt (the hook cannot
    /// get it there).
    pub cookie: u64,
    /// `bpf_get_current_pid_tgid()`: process id (tgid) in the high half, thread id low.
    pub pid_tgid: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the hook ran.
    pub ktime_ns: u64,
    /// The socket's [`SocketSeq::begun`] after this option was counted (0 for a release).
    pub seq: u64,
    /// [`EVENT_SETSOCKOPT`] or [`EVENT_RELEASE`].
    pub kind: u32,
    pub level: i32,
    pub optname: i32,
    /// The length the caller passed.
    pub optlen: i32,
    /// Bytes of `optval` copied (at most [`OPTVAL_PREFIX`]).
    pub copied: u32,
    pub reserved: u32,
    pub optval: [u8; OPTVAL_PREFIX],
}

impl Event {
    pub const ZERO: Self = Self {
        id: 0,
        cookie: 0,
        pid_tgid: 0,
        ktime_ns: 0,
        seq: 0,
        kind: 0,
        level: 0,
        optname: 0,
        optlen: 0,
        copied: 0,
        reserved: 0,
        optval: [0; OPTVAL_PREFIX],
    };

    /// The process id (thread-group id) that made the call.
    pub const fn tgid(&self) -> u32 {
        (self.pid_tgid >> 32) as u32
    }

    /// The thread id that made the call.
    pub const fn tid(&self) -> u32 {
        self.pid_tgid as u32
    }

    /// What the option names, decoded from the copied bytes.
    pub fn target(&self) -> Target {
        let copied = (self.copied as usize).min(OPTVAL_PREFIX);
        let optlen = if self.optlen < 0 {
            0
        } else {
            self.optlen as u32
        };
        decode_target(self.level, self.optname, optlen, &self.optval[..copied])
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) plain data without implicit padding (size tests below).
    unsafe impl aya::Pod for super::SocketSeq {}
    unsafe impl aya::Pod for super::SockStore {}
    unsafe impl aya::Pod for super::Event {}
}

// ---------------------------------------------------------------------------------------
// Decoding option bytes

/// The group a membership option names, and the interface if the bytes give its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `ifindex` is `None` when the option names the interface by address
    /// (`ip_mreq`, `ip_mreq_source`, `ip_msfilter`) or lets the kernel choose (index 0).
    Group { group: Addr, ifindex: Option<u32> },
    /// `IPV6_ADDRFORM`: the socket turned IPv4; all its IPv6 memberships are gone.
    AddressForm,
    /// The bytes do not say (too short, a family that does not match the level, a
    /// layout this decoder does not know): every group may have changed.
    Unknown,
}

fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at + 4)?;
    Some(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
}

fn u16_ne(b: &[u8], at: usize) -> Option<u16> {
    let w = b.get(at..at + 2)?;
    Some(u16::from_ne_bytes([w[0], w[1]]))
}

fn ipv4_at(b: &[u8], at: usize) -> Option<Addr> {
    let w = b.get(at..at + 4)?;
    Some(ipv4_mapped([w[0], w[1], w[2], w[3]]))
}

fn ipv6_at(b: &[u8], at: usize) -> Option<Addr> {
    let w = b.get(at..at + 16)?;
    let mut a = [0u8; 16];
    a.copy_from_slice(w);
    Some(a)
}

const fn nonzero(ifindex: u32) -> Option<u32> {
    if ifindex == 0 { None } else { Some(ifindex) }
}

/// A `sockaddr_storage` at `at` holding an address of `family`: the address.
fn storage_addr(b: &[u8], at: usize, family: u16) -> Option<Addr> {
    if u16_ne(b, at)? != family {
        return None;
    }
    match family {
        // sockaddr_in: family, port, address at 4.
        AF_INET => ipv4_at(b, at + 4),
        // sockaddr_in6: family, port, flowinfo, address at 8.
        _ => ipv6_at(b, at + 8),
    }
}

/// `group_req` / `group_source_req` / `group_filter` (`MCAST_*`): the interface index
/// first, the group as a `sockaddr_storage` at offset 8 (64-bit layout) or 4 (the packed
/// 32-bit compat layout).
fn decode_mcast(b: &[u8], family: u16) -> Target {
    let Some(ifindex) = u32_ne(b, 0) else {
        return Target::Unknown;
    };
    match storage_addr(b, 8, family).or_else(|| storage_addr(b, 4, family)) {
        Some(group) => Target::Group {
            group,
            ifindex: nonzero(ifindex),
        },
        None => Target::Unknown,
    }
}

/// Decode the group (and interface index, if given) from the first bytes of a membership
/// option's value. `optlen` is the length the caller passed; `bytes` what was copied of it.
///
/// The hooks copy the bytes after the kernel has read them, from the caller's memory; a
/// caller that changes its buffer in between could mislead this decoder, which is why the
/// result is only a hint of where to read: the socket's filter itself is read from the
/// kernel, and groups the socket was already known to be a member of are read again anyway.
pub fn decode_target(level: i32, optname: i32, optlen: u32, bytes: &[u8]) -> Target {
    let len = (optlen as usize).min(bytes.len());
    let b = &bytes[..len];
    let group_only = |group: Option<Addr>| match group {
        Some(group) => Target::Group {
            group,
            ifindex: None,
        },
        None => Target::Unknown,
    };
    match (level, optname) {
        (SOL_IP, IP_ADD_MEMBERSHIP | IP_DROP_MEMBERSHIP) => {
            // ip_mreqn (12 bytes: group, address, index) or ip_mreq (8: group, address).
            let Some(group) = ipv4_at(b, 0) else {
                return Target::Unknown;
            };
            let ifindex = if optlen >= 12 {
                u32_ne(b, 8).and_then(nonzero)
            } else {
                None
            };
            Target::Group { group, ifindex }
        }
        // ip_mreq_source (group, interface address, source) and ip_msfilter (group,
        // interface address, mode, count, sources): group first.
        (
            SOL_IP,
            IP_BLOCK_SOURCE
            | IP_UNBLOCK_SOURCE
            | IP_ADD_SOURCE_MEMBERSHIP
            | IP_DROP_SOURCE_MEMBERSHIP
            | IP_MSFILTER,
        ) => group_only(ipv4_at(b, 0)),
        (SOL_IP, MCAST_JOIN_GROUP..=MCAST_MSFILTER) => decode_mcast(b, AF_INET),
        (SOL_IPV6, IPV6_ADD_MEMBERSHIP | IPV6_DROP_MEMBERSHIP) => {
            // ipv6_mreq: 16-byte group, then the interface index.
            match (ipv6_at(b, 0), u32_ne(b, 16)) {
                (Some(group), Some(ifindex)) => Target::Group {
                    group,
                    ifindex: nonzero(ifindex),
                },
                (Some(group), None) => group_only(Some(group)),
                _ => Target::Unknown,
            }
        }
        (SOL_IPV6, MCAST_JOIN_GROUP..=MCAST_MSFILTER) => decode_mcast(b, AF_INET6),
        (SOL_IPV6, IPV6_ADDRFORM) => Target::AddressForm,
        _ => Target::Unknown,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use core::mem::{offset_of, size_of};
    use std::vec::Vec;

    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<SocketSeq>(), 8);
        assert_eq!(size_of::<SockStore>(), 8);
        assert_eq!(
            size_of::<Event>(),
            8 * 5 + 4 * 6 + OPTVAL_PREFIX,
            "no padding in Event"
        );
        assert_eq!(offset_of!(Event, optval), 64);
        assert_eq!(size_of::<Event>() % 8, 0);
        // The ring buffer holds thousands of events.
        assert!(EVENTS_BYTES as usize / (size_of::<Event>() + 8) > 8_000);
        assert!(EVENTS_BYTES.is_power_of_two());
    }

    #[test]
    fn membership_options_are_exactly_the_ones_that_change_filters() {
        for name in 35..=48 {
            assert!(is_membership_option(SOL_IP, name), "SOL_IP {name}");
        }
        for name in [1, 2, 32, 33, 34, 49, 50] {
            // IP_TOS, IP_TTL, IP_MULTICAST_IF/TTL/LOOP, IP_MULTICAST_ALL, ...
            assert!(!is_membership_option(SOL_IP, name), "SOL_IP {name}");
        }
        for name in [1, 20, 21, 42, 43, 44, 45, 46, 47, 48] {
            assert!(is_membership_option(SOL_IPV6, name), "SOL_IPV6 {name}");
        }
        // IPV6_MULTICAST_IF/HOPS/LOOP, IPV6_JOIN_ANYCAST, IPV6_MULTICAST_ALL, IPV6_V6ONLY.
        for name in [17, 18, 19, 26, 27, 28, 29] {
            assert!(!is_membership_option(SOL_IPV6, name), "SOL_IPV6 {name}");
        }
        assert!(!is_membership_option(1, 42), "SOL_SOCKET");
        assert!(!is_membership_option(17, 42), "SOL_UDP");
        for name in [SETSOCKOPT_PROGRAM, RELEASE_PROGRAM] {
            assert!(name.len() <= 15, "{name} fits BPF_OBJ_NAME_LEN");
        }
    }

    fn storage4(a: [u8; 4]) -> [u8; 128] {
        let mut s = [0u8; 128];
        s[..2].copy_from_slice(&AF_INET.to_ne_bytes());
        s[4..8].copy_from_slice(&a);
        s
    }

    fn storage6(a: [u8; 16]) -> [u8; 128] {
        let mut s = [0u8; 128];
        s[..2].copy_from_slice(&AF_INET6.to_ne_bytes());
        s[8..24].copy_from_slice(&a);
        s
    }

    /// The bytes the kernel would see, truncated to what the hook copies.
    fn decode(level: i32, optname: i32, full: &[u8]) -> Target {
        let copied = &full[..full.len().min(OPTVAL_PREFIX)];
        decode_target(level, optname, full.len() as u32, copied)
    }

    const G4: [u8; 4] = [232, 1, 1, 1];
    const G6: [u8; 16] = [0xff, 0x3e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    #[test]
    fn ipv4_family_specific_layouts() {
        let group = ipv4_mapped(G4);
        // ip_mreqn with an index.
        let mut mreqn = Vec::new();
        mreqn.extend_from_slice(&G4);
        mreqn.extend_from_slice(&[0; 4]);
        mreqn.extend_from_slice(&7u32.to_ne_bytes());
        assert_eq!(
            decode(SOL_IP, IP_ADD_MEMBERSHIP, &mreqn),
            Target::Group {
                group,
                ifindex: Some(7)
            }
        );
        // ip_mreqn with index 0 (the kernel chooses) and ip_mreq (by address).
        mreqn[8..].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(
            decode(SOL_IP, IP_DROP_MEMBERSHIP, &mreqn),
            Target::Group {
                group,
                ifindex: None
            }
        );
        assert_eq!(
            decode(SOL_IP, IP_ADD_MEMBERSHIP, &mreqn[..8]),
            Target::Group {
                group,
                ifindex: None
            }
        );
        // ip_mreq_source: group, interface address, source.
        let mut mreqs = Vec::new();
        mreqs.extend_from_slice(&G4);
        mreqs.extend_from_slice(&[10, 0, 0, 1]);
        mreqs.extend_from_slice(&[10, 0, 0, 9]);
        for name in [
            IP_BLOCK_SOURCE,
            IP_UNBLOCK_SOURCE,
            IP_ADD_SOURCE_MEMBERSHIP,
            IP_DROP_SOURCE_MEMBERSHIP,
        ] {
            assert_eq!(
                decode(SOL_IP, name, &mreqs),
                Target::Group {
                    group,
                    ifindex: None
                }
            );
        }
        // ip_msfilter with 9 sources: longer than the copied prefix.
        let mut msf = Vec::new();
        msf.extend_from_slice(&G4);
        msf.extend_from_slice(&[10, 0, 0, 1]);
        msf.extend_from_slice(&1u32.to_ne_bytes());
        msf.extend_from_slice(&9u32.to_ne_bytes());
        msf.extend_from_slice(&[7; 36]);
        assert_eq!(
            decode(SOL_IP, IP_MSFILTER, &msf),
            Target::Group {
                group,
                ifindex: None
            }
        );
        // Too short to hold a group.
        assert_eq!(decode(SOL_IP, IP_ADD_MEMBERSHIP, &G4[..3]), Target::Unknown);
    }

    fn group_req(ifindex: u32, storage: [u8; 128], tail: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&ifindex.to_ne_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&storage);
        v.extend(core::iter::repeat_n(0xaa, tail));
        v
    }

    #[test]
    fn protocol_independent_layouts_both_families() {
        for name in MCAST_JOIN_GROUP..=MCAST_MSFILTER {
            // group_req (136), group_source_req (264), group_filter (144 + sources).
            let v4 = group_req(3, storage4(G4), 128);
            assert_eq!(
                decode(SOL_IP, name, &v4),
                Target::Group {
                    group: ipv4_mapped(G4),
                    ifindex: Some(3)
                },
                "v4 {name}"
            );
            let v6 = group_req(0, storage6(G6), 0);
            assert_eq!(
                decode(SOL_IPV6, name, &v6),
                Target::Group {
                    group: G6,
                    ifindex: None
                },
                "v6 {name}"
            );
            // A family that does not match the level says nothing.
            assert_eq!(decode(SOL_IPV6, name, &v4), Target::Unknown);
            assert_eq!(decode(SOL_IP, name, &v6), Target::Unknown);
        }
        // The 32-bit compat layout: the storage right after the 4-byte index.
        let mut compat = Vec::new();
        compat.extend_from_slice(&5u32.to_ne_bytes());
        compat.extend_from_slice(&storage4(G4));
        assert_eq!(
            decode(SOL_IP, MCAST_JOIN_GROUP, &compat),
            Target::Group {
                group: ipv4_mapped(G4),
                ifindex: Some(5)
            }
        );
    }

    #[test]
    fn ipv6_family_specific_layouts() {
        let mut mreq = Vec::new();
        mreq.extend_from_slice(&G6);
        mreq.extend_from_slice(&4u32.to_ne_bytes());
        for name in [IPV6_ADD_MEMBERSHIP, IPV6_DROP_MEMBERSHIP] {
            assert_eq!(
                decode(SOL_IPV6, name, &mreq),
                Target::Group {
                    group: G6,
                    ifindex: Some(4)
                }
            );
        }
        assert_eq!(
            decode(SOL_IPV6, IPV6_ADDRFORM, &2i32.to_ne_bytes()),
            Target::AddressForm
        );
        assert_eq!(
            decode(SOL_IPV6, IPV6_ADD_MEMBERSHIP, &G6[..8]),
            Target::Unknown
        );
    }

    #[test]
    fn events_decode_their_own_bytes() {
        let mut ev = Event::ZERO;
        ev.level = SOL_IPV6;
        ev.optname = MCAST_JOIN_GROUP;
        let bytes = group_req(9, storage6(G6), 0);
        ev.optlen = bytes.len() as i32;
        ev.copied = OPTVAL_PREFIX as u32;
        ev.optval.copy_from_slice(&bytes[..OPTVAL_PREFIX]);
        ev.pid_tgid = (1234u64 << 32) | 1240;
        assert_eq!(ev.tgid(), 1234);
        assert_eq!(ev.tid(), 1240);
        assert_eq!(
            ev.target(),
            Target::Group {
                group: G6,
                ifindex: Some(9)
            }
        );
        // A failed copy leaves nothing to decode.
        ev.copied = 0;
        assert_eq!(ev.target(), Target::Unknown);
    }
}
