//! The kernel's own view of multicast filters: `/proc/net/mcfilter` (IPv4) and
//! `/proc/net/mcfilter6` (IPv6), as seen inside a namespace.
//!
//! Both files have a listing defect (see `docs/kernel.md`): the walk starts with each
//! interface's *newest* group only, and when that group has no sources (an any-source join
//! without blocks) it skips the whole interface. A group joined last without sources thus
//! hides every other group's sources on that interface. [`source_filters`] works around it:
//! for the duration of the read it holds a probe membership with one source on the device,
//! which becomes the newest group and so makes the kernel list the device completely.

use std::{
    collections::BTreeSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use msfilter::sockopt::{Family, Request};

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

/// The probe group and source [`source_filters`] joins while it reads (never used by tests).
pub const PROBE_V4: (&str, &str) = ("239.255.77.77", "192.0.2.77");
pub const PROBE_V6: (&str, &str) = ("ff15::77:77", "2001:db8::77");

/// The kernel's source filter entries for `group` on `device`, as (source, include,
/// exclude) triples, read completely whatever else the device has joined (see the module
/// documentation).
pub fn source_filters(ns: &Netns, device: &str, group: IpAddr) -> BTreeSet<(IpAddr, u32, u32)> {
    all_source_filters(ns, device, group.is_ipv4())
        .into_iter()
        .filter(|f| f.group == group)
        .map(|f| (f.source, f.include, f.exclude))
        .collect()
}

/// Every interface-level source filter entry of one family on `device`, read completely.
pub fn all_source_filters(ns: &Netns, device: &str, ipv4: bool) -> Vec<SourceFilter> {
    let (path, (probe_group, probe_source)) = if ipv4 {
        ("/proc/net/mcfilter", PROBE_V4)
    } else {
        ("/proc/net/mcfilter6", PROBE_V6)
    };
    let probe_group: IpAddr = probe_group.parse().expect("probe group");
    let probe_source: IpAddr = probe_source.parse().expect("probe source");
    let device_name = device.to_string();
    let text = ns
        .run(move || {
            let ifindex = interface_index(&device_name)?;
            let probe = msfilter::sockopt::MembershipSocket::open(Family::of(probe_group), ifindex)
                .map_err(io::Error::other)?;
            probe
                .apply(
                    probe_group,
                    &Request::JoinSourceGroup {
                        source: probe_source,
                    },
                )
                .map_err(io::Error::other)?;
            let text = std::fs::read_to_string(format!(
                "/proc/thread-self/net/{}",
                path.trim_start_matches("/proc/net/")
            ));
            drop(probe);
            text
        })
        .unwrap_or_else(|e| panic!("reading {path} for {device}: {e}"));
    parse_mcfilter(&text)
        .into_iter()
        .filter(|f| f.device == device && f.group != probe_group)
        .collect()
}

fn interface_index(device: &str) -> io::Result<u32> {
    let name = std::ffi::CString::new(device).map_err(io::Error::other)?;
    // SAFETY: valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
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
