//! Header walk: Ethernet, VLAN tags, IPv4, IPv6 and its extension headers.
//!
//! Every read goes through [`ptr_at`], the one bounds check against `data_end` that the
//! verifier sees. Loops over VLAN tags and extension headers have constant bounds
//! (`msfilter_common::limits`). Header arithmetic comes from `msfilter_common::headers`, shared
//! with the reference model.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use msfilter_common::{
    Reason,
    headers::{
        ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_FRAGMENT, IPPROTO_ICMPV6, IPPROTO_PIM,
        IPV4_MIN_HLEN, IPV6_EXT_MIN, IPV6_FRAG_HLEN, IPV6_HLEN, VLAN_HLEN, ipv6_ext_len,
        ipv6_fragment_offset, is_ipv4_control, is_ipv4_multicast, is_ipv6_ext, is_ipv6_multicast,
        is_mld, is_vlan,
    },
    limits::{MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS},
};

use crate::keys::{self, Words};

/// Why a frame is passed without being judged by the policy.
#[derive(Clone, Copy)]
pub(crate) enum Error {
    NotIp,
    Truncated,
    Malformed,
    TooManyVlanTags,
    ExtensionChainTooLong,
    NotMulticast,
    Control,
}

impl Error {
    #[inline(always)]
    pub(crate) const fn reason(self) -> Reason {
        match self {
            Self::NotIp => Reason::NotIp,
            Self::Truncated => Reason::Truncated,
            Self::Malformed => Reason::Malformed,
            Self::TooManyVlanTags => Reason::TooManyVlanTags,
            Self::ExtensionChainTooLong => Reason::ExtensionChainTooLong,
            Self::NotMulticast => Reason::NotMulticast,
            Self::Control => Reason::Control,
        }
    }
}

/// A multicast datagram subject to the filter.
pub(crate) struct Frame {
    pub(crate) group: Words,
    pub(crate) source: Words,
}

/// Offsets never exceed this (a linear XDP buffer is at most a page); the explicit bound
/// keeps the verifier's view of variable offsets small. Beyond it the frame would be
/// truncated anyway.
const MAX_OFFSET: usize = 0x3fff;

/// Frame length in bytes, from the raw 32-bit `xdp_md` fields: subtracting them as `u32`
/// leaves any zero-extension to the (scalar) result; zero-extending the packet pointers
/// first, as `usize` arithmetic would, is pointer arithmetic the verifier rejects.
#[inline(always)]
pub(crate) fn frame_len(ctx: &XdpContext) -> u64 {
    // SAFETY: `ctx.ctx` is the kernel's xdp_md for this run.
    let (start, end) = unsafe { ((*ctx.ctx).data, (*ctx.ctx).data_end) };
    u64::from(end.wrapping_sub(start))
}

/// The only way this program reads the packet: `size_of::<T>()` bytes at `offset`, if the
/// frame has them.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, Error> {
    if offset > MAX_OFFSET {
        return Err(Error::Truncated);
    }
    let p = ctx.data() + offset;
    let past = p + size_of::<T>();
    // For one byte LLVM rewrites `p + 1 > data_end` as `p >= data_end`, which gives the
    // verifier no readable range at `p`; an opaque `past` keeps the comparison as written.
    let past = if size_of::<T>() == 1 {
        core::hint::black_box(past)
    } else {
        past
    };
    if past > ctx.data_end() {
        return Err(Error::Truncated);
    }
    Ok(p as *const T)
}

#[inline(always)]
fn read<const N: usize>(ctx: &XdpContext, offset: usize) -> Result<[u8; N], Error> {
    let p = ptr_at::<[u8; N]>(ctx, offset)?;
    // SAFETY: ptr_at checked that N bytes are inside the frame; [u8; N] has alignment 1.
    Ok(unsafe { *p })
}

/// Read `N` bytes at `offset` inside the datagram ending at `end` (an offset too).
///
/// The datagram's end was already checked against the frame's end, so LLVM can prove the
/// `data_end` check in `ptr_at` redundant and drop it, which the verifier cannot follow.
/// Hiding the offset from the optimizer (the `barrier_var` idiom) keeps that check.
#[inline(always)]
fn read_within<const N: usize>(
    ctx: &XdpContext,
    offset: usize,
    end: usize,
) -> Result<[u8; N], Error> {
    if offset + N > end {
        return Err(Error::Truncated);
    }
    read::<N>(ctx, core::hint::black_box(offset))
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// The frame's first tag (TPID and TCI) or, untagged, its ethertype and two more bytes: read
/// again where the VLAN is needed, after the datagram was found, so that the header walk
/// carries no VLAN state (the verifier would explore it twice). The offset is hidden from
/// the optimizer, as in `read_within`: these bytes were checked before, and LLVM would
/// otherwise fold the check into arithmetic on `data_end` that the verifier rejects.
#[inline(always)]
pub(crate) fn outer_tag(ctx: &XdpContext) -> Result<[u8; VLAN_HLEN], Error> {
    read::<VLAN_HLEN>(ctx, core::hint::black_box(ETH_HLEN - 2))
}

/// Find the group and source of a multicast data datagram, or say why there is none.
#[inline(always)]
pub(crate) fn multicast_datagram(ctx: &XdpContext) -> Result<Frame, Error> {
    let (ethertype, l3) = ethernet(ctx)?;
    match ethertype {
        ETH_P_IPV4 => ipv4(ctx, l3),
        ETH_P_IPV6 => ipv6(ctx, l3),
        _ => Err(Error::NotIp),
    }
}

/// Ethertype after up to `MAX_VLAN_TAGS` tags, and the offset of the L3 header.
#[inline(always)]
fn ethernet(ctx: &XdpContext) -> Result<(u16, usize), Error> {
    let mut ethertype = be16(read::<2>(ctx, ETH_HLEN - 2)?);
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(ethertype) {
            break;
        }
        let tag = read::<VLAN_HLEN>(ctx, off)?;
        ethertype = be16([tag[2], tag[3]]);
        off += VLAN_HLEN;
    }
    if is_vlan(ethertype) {
        return Err(Error::TooManyVlanTags);
    }
    Ok((ethertype, off))
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize) -> Result<Frame, Error> {
    let h = read::<IPV4_MIN_HLEN>(ctx, l3)?;
    if h[0] >> 4 != 4 {
        return Err(Error::Malformed);
    }
    if !is_ipv4_multicast(h[16]) {
        return Err(Error::NotMulticast);
    }
    let header_len = usize::from(h[0] & 0x0f) * 4;
    let total_len = usize::from(be16([h[2], h[3]]));
    if header_len < IPV4_MIN_HLEN || total_len < header_len {
        return Err(Error::Malformed);
    }
    if ctx.data() + l3 + total_len > ctx.data_end() {
        return Err(Error::Truncated);
    }
    if is_ipv4_control(h[9]) {
        return Err(Error::Control);
    }
    Ok(Frame {
        group: keys::ipv4_mapped([h[16], h[17], h[18], h[19]]),
        source: keys::ipv4_mapped([h[12], h[13], h[14], h[15]]),
    })
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize) -> Result<Frame, Error> {
    let fixed = read::<8>(ctx, l3)?;
    // Read the whole fixed header now: its addresses are needed if the walk succeeds.
    let source = read::<16>(ctx, l3 + 8)?;
    let group = read::<16>(ctx, l3 + 24)?;
    if fixed[0] >> 4 != 6 {
        return Err(Error::Malformed);
    }
    if !is_ipv6_multicast(group[0]) {
        return Err(Error::NotMulticast);
    }
    let end = l3 + IPV6_HLEN + usize::from(be16([fixed[4], fixed[5]]));
    if ctx.data() + end > ctx.data_end() {
        return Err(Error::Truncated);
    }

    let mut next_header = fixed[6];
    let mut off = l3 + IPV6_HLEN;
    let mut non_first_fragment = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ipv6_ext(next_header) {
            break;
        }
        if next_header == IPPROTO_FRAGMENT {
            let fragment = read_within::<IPV6_FRAG_HLEN>(ctx, off, end)?;
            next_header = fragment[0];
            if ipv6_fragment_offset(be16([fragment[2], fragment[3]])) != 0 {
                non_first_fragment = true;
                break;
            }
            off += IPV6_FRAG_HLEN;
            continue;
        }
        let ext = read_within::<IPV6_EXT_MIN>(ctx, off, end)?;
        let len = ipv6_ext_len(next_header, ext[1]);
        if off + len > end {
            return Err(Error::Truncated);
        }
        next_header = ext[0];
        off += len;
    }
    if !non_first_fragment && is_ipv6_ext(next_header) {
        return Err(Error::ExtensionChainTooLong);
    }

    if next_header == IPPROTO_PIM {
        return Err(Error::Control);
    }
    if next_header == IPPROTO_ICMPV6 {
        if non_first_fragment {
            return Err(Error::Control);
        }
        let icmp_type = read_within::<1>(ctx, off, end)?;
        if is_mld(icmp_type[0]) {
            return Err(Error::Control);
        }
    }
    Ok(Frame {
        group: keys::ipv6(group),
        source: keys::ipv6(source),
    })
}
