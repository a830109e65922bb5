//! Conversions between [`IpAddr`] and the 16-byte [`Addr`] of the map keys (IPv4 stored as
//! IPv4-mapped `::ffff:a.b.c.d`).
//!
//! The mapping is lossless for every address validation lets through: IPv4-mapped IPv6
//! addresses are refused on IPv6 sockets ([`super::validate`]), so an [`Addr`] in the
//! IPv4-mapped range always stands for an IPv4 address.

use std::net::{IpAddr, Ipv6Addr};

use msfilter_common::{
    Addr,
    maps::{ipv4_mapped, ipv4_unmapped},
};

/// The map-key form of `ip` (IPv4 becomes `::ffff:a.b.c.d`).
pub fn addr_of(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(a) => ipv4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The address a map key stands for (IPv4-mapped becomes IPv4).
pub fn ip_of(addr: &Addr) -> IpAddr {
    match ipv4_unmapped(addr) {
        Some(v4) => IpAddr::from(v4),
        None => IpAddr::V6(Ipv6Addr::from(*addr)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in ["232.1.2.3", "10.0.0.1", "ff3e::1", "fd77::1", "::1", "::"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(ip_of(&addr_of(ip)), ip, "{s}");
        }
        assert_eq!(
            addr_of("239.1.1.1".parse().unwrap()),
            ipv4_mapped([239, 1, 1, 1])
        );
        // An IPv4-mapped IPv6 address comes back as IPv4 (validation refuses those).
        assert_eq!(
            ip_of(&addr_of("::ffff:10.0.0.1".parse().unwrap())),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
