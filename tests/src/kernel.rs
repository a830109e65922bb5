//! The kernel's own view of multicast filters: `/proc/net/mcfilter` (IPv4) and
//! `/proc/net/mcfilter6` (IPv6), as seen inside a namespace.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::netns::Netns;

/// One interface-level source filter entry: how many sockets include and exclude `source`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceFilter {
    pub device: String,
    pub group: IpAddr,
    pub source: IpAddr,
    pub include: u32,
    pub exclude: u32,
}

fn hex_v4(s: &str) -> Option<IpAddr> {
    let v = u32::from_str_radix(s.trim_start_matches("0x"), 16).ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(v)))
}

fn hex_v6(s: &str) -> Option<IpAddr> {
    Some(IpAddr::V6(Ipv6Addr::from(
        u128::from_str_radix(s, 16).ok()?,
    )))
}

/// Parse `/proc/net/mcfilter` or `/proc/net/mcfilter6` text (header lines are skipped).
pub fn parse_mcfilter(text: &str) -> Vec<SourceFilter> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 6 || f[0] == "Idx" {
                return None;
            }
            let (group, source) = if f[2].starts_with("0x") {
                (hex_v4(f[2])?, hex_v4(f[3])?)
            } else {
                (hex_v6(f[2])?, hex_v6(f[3])?)
            };
            Some(SourceFilter {
                device: f[1].to_string(),
                group,
                source,
                include: f[4].parse().ok()?,
                exclude: f[5].parse().ok()?,
            })
        })
        .collect()
}

/// The kernel's source filter entries for `group` on `device`, as (source, include,
/// exclude) triples.
pub fn source_filters(ns: &Netns, device: &str, group: IpAddr) -> BTreeSet<(IpAddr, u32, u32)> {
    let path = if group.is_ipv4() {
        "/proc/net/mcfilter"
    } else {
        "/proc/net/mcfilter6"
    };
    let text = ns
        .read_proc(path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"));
    parse_mcfilter(&text)
        .into_iter()
        .filter(|f| f.device == device && f.group == group)
        .map(|f| (f.source, f.include, f.exclude))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_files() {
        let v4 = "Idx Device        MCA        SRC    INC    EXC\n  3     d0 0xe8010101 0x0a000005      0      1\n";
        let rows = parse_mcfilter(v4);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].group, "232.1.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(rows[0].source, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!((rows[0].include, rows[0].exclude), (0, 1));
        let v6 = "Idx Device                Multicast Address                   Source Address    INC    EXC\n  3     d0 ff3e0000000000000000000000000001 fd050000000000000000000000000009      0      1\n";
        let rows = parse_mcfilter(v6);
        assert_eq!(rows[0].group, "ff3e::1".parse::<IpAddr>().unwrap());
        assert_eq!(rows[0].source, "fd05::9".parse::<IpAddr>().unwrap());
    }
}
