//! The multicast groups the kernel has joined on each interface, with how many memberships
//! hold each (and, for IPv4, the IGMP version in use): `/proc/net/igmp` and
//! `/proc/net/igmp6` of the calling thread's network namespace. Unlike `/proc/net/mcfilter*`, these listings walk every group of every
//! interface, so they are complete (docs/kernel.md).

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// One group joined on one interface.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JoinedGroup {
    pub ifindex: u32,
    pub device: String,
    pub group: IpAddr,
    /// Memberships the kernel counts for the group on this interface: one per socket that
    /// joined it, plus the kernel's own (the all-hosts groups, for instance).
    pub users: u32,
}

/// `/proc/net/igmp` as parsed: every group, and each interface's IGMP version in use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IgmpListing {
    pub groups: Vec<JoinedGroup>,
    /// The `Querier` column by interface name: `V1`, `V2` or `V3`, which the kernel derives
    /// from `force_igmp_version` and the queriers it heard.
    pub versions: BTreeMap<String, String>,
}

/// Every group joined in this thread's network namespace, IPv4 then IPv6.
pub fn joined() -> io::Result<Vec<JoinedGroup>> {
    let v4 = std::fs::read_to_string("/proc/thread-self/net/igmp")?;
    let mut groups = parse_igmp(&v4)?;
    // Without IPv6 there is no igmp6 file: no IPv6 groups.
    match std::fs::read_to_string("/proc/thread-self/net/igmp6") {
        Ok(v6) => groups.extend(parse_igmp6(&v6)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(groups)
}

fn bad(line: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected line in the kernel's group listing: {line:?}"),
    )
}

/// The groups of `/proc/net/igmp` ([`parse_igmp_listing`] without the versions).
pub fn parse_igmp(text: &str) -> io::Result<Vec<JoinedGroup>> {
    parse_igmp_listing(text).map(|listing| listing.groups)
}

/// One group line of `/proc/net/igmp` or `/proc/net/igmp6`: its interface and group
/// decoded, its count not yet (a reader after a few groups skips the others cheaply).
#[derive(Clone, Copy, Debug)]
pub struct GroupLine<'a> {
    pub ifindex: u32,
    pub device: &'a str,
    pub group: IpAddr,
    users: &'a str,
    line: &'a str,
}

impl GroupLine<'_> {
    /// The kernel's membership count of the group on the interface (`Users`).
    pub fn users(&self) -> io::Result<u32> {
        self.users.parse().map_err(|_| bad(self.line))
    }

    fn joined(&self) -> io::Result<JoinedGroup> {
        Ok(JoinedGroup {
            ifindex: self.ifindex,
            device: self.device.to_string(),
            group: self.group,
            users: self.users()?,
        })
    }
}

/// `/proc/net/igmp`: a header, then an interface line (`Idx Device : Count Querier`, the
/// name padded to ten characters before the colon, or not at all when longer), then one
/// indented line per group (`Group Users Timer Reporter`). The group is the `__be32` printed
/// as a native integer in hex.
pub fn parse_igmp_listing(text: &str) -> io::Result<IgmpListing> {
    let mut out = IgmpListing::default();
    let mut groups = Vec::new();
    walk_igmp(
        text,
        |device, querier| {
            out.versions.insert(device.to_string(), querier.to_string());
        },
        |line| {
            groups.push(line.joined()?);
            Ok(())
        },
    )?;
    out.groups = groups;
    Ok(out)
}

/// Walk `/proc/net/igmp` (see [`parse_igmp_listing`]): `interface(device, querier)` for
/// each interface line, `group` for each group line.
pub fn walk_igmp<'a>(
    text: &'a str,
    mut interface: impl FnMut(&'a str, &'a str),
    mut group: impl FnMut(GroupLine<'a>) -> io::Result<()>,
) -> io::Result<()> {
    let mut current: Option<(u32, &str)> = None;
    for line in text.lines().skip(1) {
        if !line.starts_with(char::is_whitespace) {
            // Interface names cannot hold a colon; the count and querier follow it.
            let (head, tail) = line.split_once(':').ok_or_else(|| bad(line))?;
            let (Some(index), Some(device), Some(querier)) = (
                head.split_whitespace().next(),
                head.split_whitespace().nth(1),
                tail.split_whitespace().nth(1),
            ) else {
                return Err(bad(line));
            };
            interface(device, querier);
            current = Some((index.parse().map_err(|_| bad(line))?, device));
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some((ifindex, device)), Some(hex), Some(users)) =
            (current, fields.next(), fields.next())
        else {
            return Err(bad(line));
        };
        let raw = u32::from_str_radix(hex, 16).map_err(|_| bad(line))?;
        group(GroupLine {
            ifindex,
            device,
            group: IpAddr::V4(Ipv4Addr::from(raw.to_ne_bytes())),
            users,
            line,
        })?;
    }
    Ok(())
}

/// `/proc/net/igmp6`: one line per group: `ifindex device group(32 hex) users flags timer`.
pub fn parse_igmp6(text: &str) -> io::Result<Vec<JoinedGroup>> {
    let mut groups = Vec::new();
    walk_igmp6(text, |line| {
        groups.push(line.joined()?);
        Ok(())
    })?;
    Ok(groups)
}

/// Walk `/proc/net/igmp6` (see [`parse_igmp6`]): `group` for each line.
pub fn walk_igmp6<'a>(
    text: &'a str,
    mut group: impl FnMut(GroupLine<'a>) -> io::Result<()>,
) -> io::Result<()> {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let (Some(index), Some(device), Some(hex), Some(users)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad(line));
        };
        if hex.len() != 32 {
            return Err(bad(line));
        }
        let raw = u128::from_str_radix(hex, 16).map_err(|_| bad(line))?;
        group(GroupLine {
            ifindex: index.parse().map_err(|_| bad(line))?,
            device,
            group: IpAddr::V6(Ipv6Addr::from(raw)),
            users,
            line,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IGMP: &str = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n\
                        1\tlo        :     1      V3\n\
                        \t\t\t\t010000E0     1 0:00000000\t\t0\n\
                        3\tva        :     3      V2\n\
                        \t\t\t\t020101E8     2 0:00000000\t\t0\n\
                        \t\t\t\t010000E0     1 0:00000000\t\t0\n\
                        4\tfifteen-chars-x:     0      V3\n";

    #[test]
    fn parses_the_ipv4_listing() {
        let listing = parse_igmp_listing(IGMP).unwrap();
        assert_eq!(parse_igmp(IGMP).unwrap(), listing.groups);
        let groups = &listing.groups;
        assert_eq!(groups.len(), 3);
        let va: Vec<_> = groups.iter().filter(|g| g.device == "va").collect();
        assert_eq!(va[0].ifindex, 3);
        if cfg!(target_endian = "little") {
            assert_eq!(va[0].group, "232.1.1.2".parse::<IpAddr>().unwrap());
            assert_eq!(groups[0].group, "224.0.0.1".parse::<IpAddr>().unwrap());
        }
        assert_eq!((va[0].users, va[1].users), (2, 1));
        assert_eq!(
            listing.versions,
            BTreeMap::from([
                ("lo".to_string(), "V3".to_string()),
                ("va".to_string(), "V2".to_string()),
                ("fifteen-chars-x".to_string(), "V3".to_string()),
            ])
        );
        assert_eq!(parse_igmp_listing("").unwrap(), IgmpListing::default());
    }

    #[test]
    fn a_walk_decodes_each_line_and_parses_counts_only_when_asked() {
        let mut seen = Vec::new();
        let mut interfaces = Vec::new();
        walk_igmp(
            IGMP,
            |device, querier| interfaces.push((device, querier)),
            |line| {
                seen.push((line.ifindex, line.device, line.group));
                Ok(())
            },
        )
        .unwrap();
        let parsed = parse_igmp(IGMP).unwrap();
        assert_eq!(
            seen,
            parsed
                .iter()
                .map(|g| (g.ifindex, g.device.as_str(), g.group))
                .collect::<Vec<_>>()
        );
        assert_eq!(interfaces[1], ("va", "V2"));
        // A count that is not a number is an error only for a caller that reads it.
        let text = "3    va              ff3e0000000000000000000080000001     x 00000004 0\n";
        assert!(walk_igmp6(text, |_| Ok(())).is_ok());
        assert!(walk_igmp6(text, |line| line.users().map(drop)).is_err());
        assert!(parse_igmp6(text).is_err());
    }

    #[test]
    fn refuses_what_is_not_the_listing() {
        // A group line before any interface line, an interface line without a colon, a
        // group that is not hex.
        for text in [
            "header\n\t\t\t\t010000E0 1 0:0 0\n",
            "header\n3 va 3 V3\n",
            "header\n3\tva : 1 V3\n\t\t\t\tnothex 1 0:0 0\n",
        ] {
            assert!(parse_igmp(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn parses_the_ipv6_listing() {
        let text = "1    lo              ff020000000000000000000000000001     1 0000000C 0\n\
                    3    va              ff3e0000000000000000000080000001     3 00000004 0\n";
        let groups = parse_igmp6(text).unwrap();
        assert_eq!(groups[0].group, "ff02::1".parse::<IpAddr>().unwrap());
        assert_eq!(groups[1].group, "ff3e::8000:1".parse::<IpAddr>().unwrap());
        assert_eq!((groups[1].ifindex, groups[1].users), (3, 3));
        assert_eq!(groups[1].device, "va");
        assert!(parse_igmp6("3 va ff3e 2 0 0\n").is_err());
        assert!(parse_igmp6("").unwrap().is_empty());
    }
}
