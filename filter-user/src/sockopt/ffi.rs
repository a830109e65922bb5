//! The C side: option structures byte for byte as the kernel reads them, socket addresses,
//! and the raw `setsockopt` calls.
//!
//! `libc` provides `group_req` and `group_source_req`; `group_filter` (variable-length: a
//! header followed by a source list) is defined here. The size tests at the bottom pin every
//! layout to the sizes of the kernel's UAPI headers on 64-bit Linux.

#![allow(non_camel_case_types)]

use std::{
    mem::{offset_of, size_of},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, BorrowedFd},
};

pub use libc::{group_req, group_source_req, in_addr, sockaddr_storage};

use super::SockoptError;

/// `struct group_filter` (`<linux/in.h>`): RFC 3678 full-state filter, either family.
///
/// `gf_slist` has one element here, as in the header; real requests carry `gf_numsrc`
/// elements. Build them with [`GroupFilterBuf`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct group_filter {
    pub gf_interface: u32,
    /// 8-byte aligned like every `sockaddr_storage`: 4 bytes of padding precede it.
    pub gf_group: sockaddr_storage,
    pub gf_fmode: u32,
    pub gf_numsrc: u32,
    pub gf_slist: [sockaddr_storage; 1],
}

/// `GROUP_FILTER_SIZE(n)`: bytes of a `group_filter` carrying `n` sources.
pub const fn group_filter_size(n: usize) -> usize {
    offset_of!(group_filter, gf_slist) + n * size_of::<sockaddr_storage>()
}

/// `MCAST_INCLUDE` / `MCAST_EXCLUDE` for a mode.
pub const fn fmode(mode: msfilter_common::Mode) -> u32 {
    match mode {
        msfilter_common::Mode::Include => libc::MCAST_INCLUDE as u32,
        msfilter_common::Mode::Exclude => libc::MCAST_EXCLUDE as u32,
    }
}

/// The mode of an `MCAST_INCLUDE` / `MCAST_EXCLUDE` value.
pub const fn mode_of(fmode: u32) -> Option<msfilter_common::Mode> {
    match fmode as i32 {
        libc::MCAST_INCLUDE => Some(msfilter_common::Mode::Include),
        libc::MCAST_EXCLUDE => Some(msfilter_common::Mode::Exclude),
        _ => None,
    }
}

pub fn in_addr_of(a: Ipv4Addr) -> in_addr {
    in_addr {
        s_addr: u32::from_ne_bytes(a.octets()),
    }
}

pub fn ipv4_of(a: in_addr) -> Ipv4Addr {
    Ipv4Addr::from(a.s_addr.to_ne_bytes())
}

fn zeroed_storage() -> sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data (integers and byte arrays); all zeroes is its
    // "unspecified family" value.
    unsafe { std::mem::zeroed() }
}

/// `ip` as a `sockaddr_in` / `sockaddr_in6` inside a `sockaddr_storage`, port 0.
pub fn storage_of(ip: IpAddr) -> sockaddr_storage {
    let mut ss = zeroed_storage();
    match ip {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: in_addr_of(a),
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned at least like sockaddr_in
            // (that is its purpose); the write stays inside `ss`.
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in>(), sin) };
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut ss).cast::<libc::sockaddr_in6>(), sin6) };
        }
    }
    ss
}

/// The address in a `sockaddr_storage` written by the kernel (`None` for another family).
pub fn ip_of_storage(ss: &sockaddr_storage) -> Option<IpAddr> {
    let ptr = std::ptr::from_ref(ss);
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it holds a sockaddr_in, which fits and is aligned.
            let sin = unsafe { &*ptr.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(ipv4_of(sin.sin_addr)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it holds a sockaddr_in6, which fits and is aligned.
            let sin6 = unsafe { &*ptr.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// A `group_filter` with room for a number of sources, in memory aligned for
/// `sockaddr_storage` (the header is 144 bytes, a multiple of 8, so the list is aligned too).
pub struct GroupFilterBuf {
    storage: Vec<sockaddr_storage>,
    capacity: usize,
}

impl GroupFilterBuf {
    /// Room for `capacity` sources, all zero.
    pub fn with_capacity(capacity: usize) -> Self {
        let bytes = group_filter_size(capacity).max(size_of::<group_filter>());
        let elems = bytes.div_ceil(size_of::<sockaddr_storage>());
        Self {
            storage: vec![zeroed_storage(); elems],
            capacity,
        }
    }

    /// A filter ready for `setsockopt(MCAST_MSFILTER)`.
    pub fn new(ifindex: u32, group: IpAddr, fmode: u32, sources: &[IpAddr]) -> Self {
        let mut buf = Self::with_capacity(sources.len());
        let header = buf.header_mut();
        header.gf_interface = ifindex;
        header.gf_group = storage_of(group);
        header.gf_fmode = fmode;
        header.gf_numsrc = sources.len() as u32;
        for (i, s) in sources.iter().enumerate() {
            buf.source_slot(i).write(storage_of(*s));
        }
        buf
    }

    pub fn header(&self) -> &group_filter {
        // SAFETY: the buffer is at least size_of::<group_filter>() bytes (see with_capacity),
        // aligned for sockaddr_storage, which is group_filter's alignment; every field is
        // plain data, valid for any bytes.
        unsafe { &*self.storage.as_ptr().cast::<group_filter>() }
    }

    pub fn header_mut(&mut self) -> &mut group_filter {
        // SAFETY: as in `header`, and we hold the only reference to the buffer.
        unsafe { &mut *self.storage.as_mut_ptr().cast::<group_filter>() }
    }

    fn source_slot(&mut self, i: usize) -> &mut std::mem::MaybeUninit<sockaddr_storage> {
        assert!(i < self.capacity);
        let offset = group_filter_size(i);
        // SAFETY: offset + size_of::<sockaddr_storage>() = group_filter_size(i + 1) <=
        // group_filter_size(capacity) <= buffer length; offset is a multiple of 8, so the
        // slot is aligned for sockaddr_storage; we hold the only reference to the buffer.
        unsafe {
            &mut *self
                .storage
                .as_mut_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<std::mem::MaybeUninit<sockaddr_storage>>()
        }
    }

    /// Source `i` as the kernel wrote it (`i` < capacity).
    pub fn source(&self, i: usize) -> &sockaddr_storage {
        assert!(i < self.capacity);
        let offset = group_filter_size(i);
        // SAFETY: as in `source_slot`; the buffer was zero-initialised, so every slot holds
        // a valid (plain data) sockaddr_storage.
        unsafe {
            &*self
                .storage
                .as_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<sockaddr_storage>()
        }
    }

    /// Bytes that carry `capacity` sources (the option length to pass).
    pub fn option_len(&self) -> usize {
        group_filter_size(self.capacity)
    }

    pub fn as_ptr(&self) -> *const libc::c_void {
        self.storage.as_ptr().cast()
    }

    pub fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.storage.as_mut_ptr().cast()
    }
}

/// `setsockopt(fd, level, name, ptr, len)`, failing as `option`.
///
/// # Safety
/// `ptr` must point to `len` readable bytes.
pub unsafe fn setsockopt_raw(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    ptr: *const libc::c_void,
    len: usize,
    option: &'static str,
) -> Result<(), SockoptError> {
    let len = libc::socklen_t::try_from(len).map_err(|_| SockoptError::new(option, libc::E2BIG))?;
    // SAFETY: the caller guarantees `ptr`/`len`; the fd is open for the borrow's lifetime.
    if unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, ptr, len) } != 0 {
        return Err(SockoptError::last(option));
    }
    Ok(())
}

/// `setsockopt` with a plain structure or integer.
pub fn setsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    value: &T,
    option: &'static str,
) -> Result<(), SockoptError> {
    // SAFETY: `value` is a live reference to size_of::<T>() bytes.
    unsafe {
        setsockopt_raw(
            fd,
            level,
            name,
            std::ptr::from_ref(value).cast(),
            size_of::<T>(),
            option,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::mem::align_of;

    use super::*;

    /// Sizes and offsets from the kernel's UAPI headers (64-bit), checked with a C compiler
    /// against `<netinet/in.h>` / `<linux/in.h>` on the development machine.
    #[test]
    fn layouts_match_the_kernel() {
        assert_eq!(size_of::<sockaddr_storage>(), 128);
        assert_eq!(align_of::<sockaddr_storage>(), 8);
        assert_eq!(size_of::<group_req>(), 136);
        assert_eq!(offset_of!(group_req, gr_group), 8);
        assert_eq!(size_of::<group_source_req>(), 264);
        assert_eq!(offset_of!(group_source_req, gsr_source), 136);
        assert_eq!(size_of::<group_filter>(), 272);
        assert_eq!(offset_of!(group_filter, gf_group), 8);
        assert_eq!(offset_of!(group_filter, gf_fmode), 136);
        assert_eq!(offset_of!(group_filter, gf_numsrc), 140);
        assert_eq!(offset_of!(group_filter, gf_slist), 144);
        assert_eq!(group_filter_size(0), 144);
        assert_eq!(group_filter_size(3), 144 + 3 * 128);
    }

    #[test]
    fn storage_round_trips_both_families() {
        for s in [
            "232.1.2.3",
            "10.0.0.1",
            "ff3e::1",
            "fd77::1",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(ip_of_storage(&storage_of(ip)), Some(ip), "{s}");
        }
        assert_eq!(ip_of_storage(&zeroed_storage()), None);
    }

    #[test]
    fn ipv4_storage_is_network_order() {
        let ss = storage_of("232.1.2.3".parse().unwrap());
        // SAFETY: reading plain bytes of a plain-data structure.
        let bytes: [u8; 8] = unsafe { std::ptr::from_ref(&ss).cast::<[u8; 8]>().read() };
        assert_eq!(&bytes[4..8], &[232, 1, 2, 3]);
        assert_eq!(
            u16::from_ne_bytes([bytes[0], bytes[1]]),
            libc::AF_INET as u16
        );
    }

    #[test]
    fn group_filter_buffer_places_sources_after_the_header() {
        let sources: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let buf = GroupFilterBuf::new(
            7,
            "232.0.0.1".parse().unwrap(),
            fmode(msfilter_common::Mode::Include),
            &sources,
        );
        assert_eq!(buf.option_len(), 144 + 2 * 128);
        assert!(buf.storage.len() * 128 >= buf.option_len());
        let h = buf.header();
        assert_eq!(h.gf_interface, 7);
        assert_eq!(h.gf_numsrc, 2);
        assert_eq!(h.gf_fmode, libc::MCAST_INCLUDE as u32);
        assert_eq!(ip_of_storage(&h.gf_group), "232.0.0.1".parse().ok());
        assert_eq!(ip_of_storage(buf.source(0)), Some(sources[0]));
        assert_eq!(ip_of_storage(buf.source(1)), Some(sources[1]));
        // An empty filter still has the header's room.
        let empty = GroupFilterBuf::with_capacity(0);
        assert_eq!(empty.option_len(), 144);
        assert!(empty.storage.len() * 128 >= size_of::<group_filter>());
    }

    #[test]
    fn modes_convert_both_ways() {
        for m in [
            msfilter_common::Mode::Include,
            msfilter_common::Mode::Exclude,
        ] {
            assert_eq!(mode_of(fmode(m)), Some(m));
        }
        assert_eq!(mode_of(7), None);
    }
}
