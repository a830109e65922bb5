//! The benchmark's frames: UDP datagrams to a group from a source, as IPv4, IPv6 or IPv4
//! behind one 802.1Q tag, with valid checksums so the network stack accepts them too.

use msfilter_common::{Addr, headers::ETH_P_8021Q, maps::ipv4_unmapped};
use msfilter_testbed::packet::{Frame, Ipv4, Ipv6, Upper};
use serde::Serialize;

/// Frame shapes the benchmark measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Shape {
    #[serde(rename = "IPv4")]
    Ipv4,
    #[serde(rename = "IPv6")]
    Ipv6,
    #[serde(rename = "IPv4+VLAN")]
    Ipv4Vlan,
}

impl Shape {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
            Self::Ipv4Vlan => "IPv4+VLAN",
        }
    }

    pub const fn is_ipv6(self) -> bool {
        matches!(self, Self::Ipv6)
    }
}

/// A 64-byte (without FCS: 60 or 62 bytes) UDP datagram from `source` to `group`.
pub fn udp(shape: Shape, group: &Addr, source: &Addr) -> Vec<u8> {
    let mut frame = match shape {
        Shape::Ipv6 => Frame::new(Ipv6::new(*source, *group, Upper::udp(&[0; 2]))),
        Shape::Ipv4 | Shape::Ipv4Vlan => {
            let (Some(s), Some(g)) = (ipv4_unmapped(source), ipv4_unmapped(group)) else {
                panic!("an IPv4 frame needs IPv4 addresses");
            };
            Frame::new(Ipv4::new(s, g, Upper::udp(&[0; 18])))
        }
    };
    if shape == Shape::Ipv4Vlan {
        frame = frame.vlan(ETH_P_8021Q, 100);
    }
    let mut bytes = frame.to_bytes();
    set_udp_checksum(&mut bytes, shape);
    bytes
}

/// Fill in the UDP checksum (mandatory over IPv6; done for IPv4 too).
fn set_udp_checksum(bytes: &mut [u8], shape: Shape) {
    let l3 = if shape == Shape::Ipv4Vlan { 18 } else { 14 };
    let (pseudo, l4): (Vec<u8>, usize) = if shape.is_ipv6() {
        let len = (bytes.len() - l3 - 40) as u32;
        let mut p = bytes[l3 + 8..l3 + 40].to_vec();
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 17]);
        (p, l3 + 40)
    } else {
        let len = (bytes.len() - l3 - 20) as u16;
        let mut p = bytes[l3 + 12..l3 + 20].to_vec();
        p.extend_from_slice(&[0, 17]);
        p.extend_from_slice(&len.to_be_bytes());
        (p, l3 + 20)
    };
    bytes[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
    let mut sum: u32 = 0;
    for chunk in pseudo.chunks(2).chain(bytes[l4..].chunks(2)) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    bytes[l4 + 6..l4 + 8].copy_from_slice(&checksum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use msfilter_common::maps::ipv4_mapped;

    use super::*;

    /// The one's-complement sum over the pseudo-header and the UDP segment is all ones.
    #[test]
    fn checksums_verify() {
        let g = ipv4_mapped([232, 1, 1, 1]);
        let s = ipv4_mapped([10, 0, 0, 3]);
        for shape in [Shape::Ipv4, Shape::Ipv4Vlan] {
            let f = udp(shape, &g, &s);
            assert_eq!(f.len(), if shape == Shape::Ipv4 { 60 } else { 64 });
        }
        let mut g6 = [0u8; 16];
        g6[0] = 0xff;
        g6[1] = 0x3e;
        g6[15] = 1;
        let mut s6 = [0u8; 16];
        s6[0] = 0xfd;
        s6[15] = 3;
        let f = udp(Shape::Ipv6, &g6, &s6);
        assert_eq!(f.len(), 64);
        let mut sum: u32 = 0;
        let mut pseudo = f[22..54].to_vec();
        pseudo.extend_from_slice(&10u32.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        for c in pseudo.chunks(2).chain(f[54..].chunks(2)) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }
}
