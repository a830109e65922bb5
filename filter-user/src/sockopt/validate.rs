//! Checks made before any kernel call (pure): what the kernel would accept but msfilter must
//! not (a multicast or broadcast source, an IPv4-mapped address on an IPv6 socket, the same
//! source twice in one filter), and what is plainly wrong (a unicast group, the other family).
//!
//! Every refusal says in words what is wrong, e.g.
//! `239.1.1.1 is a multicast address; a source must be unicast`.

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use super::{Family, Request};

/// Whether an address was given as the group or as a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Group,
    Source,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Group => "group",
            Role::Source => "source",
        })
    }
}

/// A request refused before it reached the kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    #[error("{0} is not a multicast address; a group must be multicast")]
    GroupNotMulticast(IpAddr),
    #[error("{0} is a multicast address; a source must be unicast")]
    SourceMulticast(IpAddr),
    #[error("{0} is the unspecified address; a source must be unicast")]
    SourceUnspecified(IpAddr),
    #[error("{0} is the IPv4 broadcast address; a source must be unicast")]
    SourceBroadcast(Ipv4Addr),
    #[error(
        "{addr} is an IPv4-mapped IPv6 address; give the {role} as {} on an IPv4 socket",
        mapped_ipv4(addr)
    )]
    Ipv4Mapped { addr: IpAddr, role: Role },
    #[error("{addr} is an {} {role} but the socket is {socket}", Family::of(*addr))]
    WrongFamily {
        addr: IpAddr,
        role: Role,
        socket: Family,
    },
    #[error("{0} is listed more than once; a filter lists each source once")]
    DuplicateSource(IpAddr),
}

fn mapped_ipv4(addr: &IpAddr) -> String {
    match addr {
        IpAddr::V6(a) => a
            .to_ipv4_mapped()
            .map_or_else(|| a.to_string(), |v4| v4.to_string()),
        IpAddr::V4(a) => a.to_string(),
    }
}

/// The family checks shared by groups and sources.
fn check_family(socket: Family, addr: IpAddr, role: Role) -> Result<(), InvalidRequest> {
    if let IpAddr::V6(a) = addr
        && a.to_ipv4_mapped().is_some()
    {
        // Whatever the socket's family: the kernel would treat it as an IPv6 address that
        // can never match an IPv6 packet, and on an IPv4 socket it is the wrong family.
        return Err(InvalidRequest::Ipv4Mapped { addr, role });
    }
    if Family::of(addr) != socket {
        return Err(InvalidRequest::WrongFamily { addr, role, socket });
    }
    Ok(())
}

/// A group for a socket of family `socket`: same family, multicast.
pub fn validate_group(socket: Family, group: IpAddr) -> Result<(), InvalidRequest> {
    check_family(socket, group, Role::Group)?;
    if !group.is_multicast() {
        return Err(InvalidRequest::GroupNotMulticast(group));
    }
    Ok(())
}

/// A source for a socket of family `socket`: same family, unicast (not multicast, not
/// unspecified, not the IPv4 broadcast address, not IPv4-mapped).
pub fn validate_source(socket: Family, source: IpAddr) -> Result<(), InvalidRequest> {
    check_family(socket, source, Role::Source)?;
    if source.is_multicast() {
        return Err(InvalidRequest::SourceMulticast(source));
    }
    if source.is_unspecified() {
        return Err(InvalidRequest::SourceUnspecified(source));
    }
    if let IpAddr::V4(a) = source
        && a.is_broadcast()
    {
        return Err(InvalidRequest::SourceBroadcast(a));
    }
    Ok(())
}

/// The whole request on `group` for a socket of family `socket`.
pub fn validate(socket: Family, group: IpAddr, req: &Request) -> Result<(), InvalidRequest> {
    validate_group(socket, group)?;
    match req {
        Request::JoinGroup | Request::LeaveGroup => Ok(()),
        Request::BlockSource { source: s }
        | Request::UnblockSource { source: s }
        | Request::JoinSourceGroup { source: s }
        | Request::LeaveSourceGroup { source: s } => validate_source(socket, *s),
        Request::SetFilter { sources, .. } => {
            let mut seen = HashSet::with_capacity(sources.len());
            for &s in sources {
                validate_source(socket, s)?;
                if !seen.insert(s) {
                    return Err(InvalidRequest::DuplicateSource(s));
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use msfilter_common::Mode;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn msg(family: Family, group: &str, req: Request) -> String {
        validate(family, ip(group), &req).unwrap_err().to_string()
    }

    #[test]
    fn accepts_well_formed_requests() {
        let v4 = [
            Request::JoinGroup,
            Request::LeaveGroup,
            Request::BlockSource {
                source: ip("10.0.0.1"),
            },
            Request::UnblockSource {
                source: ip("192.0.2.7"),
            },
            Request::JoinSourceGroup {
                source: ip("10.0.0.1"),
            },
            Request::LeaveSourceGroup {
                source: ip("10.0.0.1"),
            },
            Request::SetFilter {
                mode: Mode::Include,
                sources: vec![],
            },
            Request::SetFilter {
                mode: Mode::Exclude,
                sources: vec![ip("10.0.0.1"), ip("10.0.0.2")],
            },
        ];
        for req in &v4 {
            for group in ["232.1.1.1", "239.255.0.1", "224.0.1.1"] {
                assert_eq!(validate(Family::V4, ip(group), req), Ok(()), "{req:?}");
            }
        }
        let v6 = [
            Request::JoinGroup,
            Request::BlockSource {
                source: ip("fd00::1"),
            },
            Request::JoinSourceGroup {
                source: ip("2001:db8::1"),
            },
            Request::LeaveSourceGroup {
                source: ip("fe80::1"),
            },
            Request::SetFilter {
                mode: Mode::Include,
                sources: vec![ip("fd00::1"), ip("fd00::2")],
            },
        ];
        for req in &v6 {
            for group in ["ff3e::1234", "ff15::1"] {
                assert_eq!(validate(Family::V6, ip(group), req), Ok(()), "{req:?}");
            }
        }
    }

    #[test]
    fn group_must_be_multicast() {
        assert_eq!(
            msg(Family::V4, "10.1.1.1", Request::JoinGroup),
            "10.1.1.1 is not a multicast address; a group must be multicast"
        );
        assert_eq!(
            msg(Family::V6, "fd00::1", Request::LeaveGroup),
            "fd00::1 is not a multicast address; a group must be multicast"
        );
        assert_eq!(
            validate(Family::V4, ip("255.255.255.255"), &Request::JoinGroup),
            Err(InvalidRequest::GroupNotMulticast(ip("255.255.255.255")))
        );
    }

    #[test]
    fn source_must_be_unicast() {
        assert_eq!(
            msg(
                Family::V4,
                "232.1.1.1",
                Request::BlockSource {
                    source: ip("239.1.1.1")
                }
            ),
            "239.1.1.1 is a multicast address; a source must be unicast"
        );
        assert_eq!(
            msg(
                Family::V4,
                "232.1.1.1",
                Request::JoinSourceGroup {
                    source: ip("0.0.0.0")
                }
            ),
            "0.0.0.0 is the unspecified address; a source must be unicast"
        );
        assert_eq!(
            msg(
                Family::V4,
                "232.1.1.1",
                Request::UnblockSource {
                    source: ip("255.255.255.255")
                }
            ),
            "255.255.255.255 is the IPv4 broadcast address; a source must be unicast"
        );
        assert_eq!(
            msg(
                Family::V6,
                "ff3e::1",
                Request::BlockSource {
                    source: ip("ff02::1")
                }
            ),
            "ff02::1 is a multicast address; a source must be unicast"
        );
        assert_eq!(
            msg(
                Family::V6,
                "ff3e::1",
                Request::LeaveSourceGroup { source: ip("::") }
            ),
            ":: is the unspecified address; a source must be unicast"
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_refused_on_ipv6() {
        assert_eq!(
            msg(
                Family::V6,
                "ff3e::1",
                Request::JoinSourceGroup {
                    source: ip("::ffff:10.0.0.1")
                }
            ),
            "::ffff:10.0.0.1 is an IPv4-mapped IPv6 address; give the source as 10.0.0.1 on an \
             IPv4 socket"
        );
        assert_eq!(
            msg(Family::V6, "::ffff:239.1.1.1", Request::JoinGroup),
            "::ffff:239.1.1.1 is an IPv4-mapped IPv6 address; give the group as 239.1.1.1 on an \
             IPv4 socket"
        );
        assert!(matches!(
            validate(Family::V4, ip("::ffff:239.1.1.1"), &Request::JoinGroup),
            Err(InvalidRequest::Ipv4Mapped { .. })
        ));
    }

    #[test]
    fn families_must_match_the_socket() {
        assert_eq!(
            msg(Family::V4, "ff3e::1", Request::JoinGroup),
            "ff3e::1 is an IPv6 group but the socket is IPv4"
        );
        assert_eq!(
            msg(Family::V6, "232.1.1.1", Request::JoinGroup),
            "232.1.1.1 is an IPv4 group but the socket is IPv6"
        );
        assert_eq!(
            msg(
                Family::V4,
                "232.1.1.1",
                Request::BlockSource {
                    source: ip("fd00::1")
                }
            ),
            "fd00::1 is an IPv6 source but the socket is IPv4"
        );
        assert_eq!(
            msg(
                Family::V6,
                "ff3e::1",
                Request::SetFilter {
                    mode: Mode::Exclude,
                    sources: vec![ip("fd00::1"), ip("10.0.0.1")]
                }
            ),
            "10.0.0.1 is an IPv4 source but the socket is IPv6"
        );
    }

    #[test]
    fn filter_sources_are_listed_once() {
        assert_eq!(
            msg(
                Family::V4,
                "232.1.1.1",
                Request::SetFilter {
                    mode: Mode::Include,
                    sources: vec![ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.1")]
                }
            ),
            "10.0.0.1 is listed more than once; a filter lists each source once"
        );
    }

    #[test]
    fn group_is_checked_before_sources() {
        assert_eq!(
            validate(
                Family::V4,
                ip("10.0.0.9"),
                &Request::BlockSource {
                    source: ip("239.1.1.1")
                }
            ),
            Err(InvalidRequest::GroupNotMulticast(ip("10.0.0.9")))
        );
    }
}
