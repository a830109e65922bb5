//! The netlink plumbing the rest of [`crate::iface`] builds on: `NETLINK_ROUTE` and
//! `NETLINK_GENERIC` sockets, requests (`nlmsghdr`, the family's header — `ifinfomsg` or
//! `genlmsghdr` — and attributes), the messages of a reply, attributes, and the kernel's
//! acknowledgements with their extended error text.
//!
//! Constants and header sizes come from `libc` (`<linux/netlink.h>`, `<linux/rtnetlink.h>`,
//! `<linux/if_link.h>`, `<linux/genetlink.h>`); the `IFLA_XDP_*` attributes from aya's
//! generated kernel bindings.

use std::{
    ffi::c_int,
    fmt, io,
    mem::size_of,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd},
};

pub(super) const NLMSG_HDRLEN: usize = size_of::<libc::nlmsghdr>();
pub(super) const NLA_HDRLEN: usize = size_of::<libc::nlattr>();
pub(super) const IFINFOMSG_LEN: usize = size_of::<libc::ifinfomsg>();
pub(super) const GENL_HDRLEN: usize = size_of::<libc::genlmsghdr>();
pub(super) const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
pub(super) const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
pub(super) const NLM_F_ACK: u16 = libc::NLM_F_ACK as u16;
pub(super) const NLM_F_DUMP: u16 = libc::NLM_F_DUMP as u16;
const NLM_F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
const NLM_F_DUMP_INTR: u16 = libc::NLM_F_DUMP_INTR as u16;
pub(super) const NLM_F_CAPPED: u16 = libc::NLM_F_CAPPED as u16;
pub(super) const NLM_F_ACK_TLVS: u16 = libc::NLM_F_ACK_TLVS as u16;
pub(super) const NLA_F_NESTED: u16 = libc::NLA_F_NESTED as u16;
const NLA_TYPE_MASK: u16 = libc::NLA_TYPE_MASK as u16;
pub(super) const NLMSGERR_ATTR_MSG: u16 =
    aya_obj::generated::nlmsgerr_attrs::NLMSGERR_ATTR_MSG as u16;
pub(super) const RTMGRP_LINK: u32 = libc::RTMGRP_LINK as u32;
pub(super) const RTEXT_FILTER_SKIP_STATS: u32 = libc::RTEXT_FILTER_SKIP_STATS as u32;

/// Receive buffer for one netlink datagram; replies to our requests are far smaller.
pub(super) const RECV_BUFFER: usize = 64 * 1024;

/// An `RTM_*LINK` message: `struct ifinfomsg` and its attributes.
pub(super) struct LinkMessage<'a> {
    pub(super) family: u8,
    pub(super) ifindex: u32,
    attrs: &'a [u8],
}

impl<'a> LinkMessage<'a> {
    pub(super) fn parse(payload: &'a [u8]) -> Option<Self> {
        if payload.len() < IFINFOMSG_LEN {
            return None;
        }
        Some(Self {
            family: payload[0],
            ifindex: u32_at(payload, 4)?,
            attrs: &payload[IFINFOMSG_LEN..],
        })
    }

    pub(super) fn name(&self) -> Option<String> {
        let (_, value) = attrs(self.attrs).find(|&(ty, _)| ty == libc::IFLA_IFNAME)?;
        let len = value.iter().position(|&b| b == 0).unwrap_or(value.len());
        Some(String::from_utf8_lossy(&value[..len]).into_owned())
    }

    /// The attributes after the `ifinfomsg`.
    pub(super) fn attrs(&self) -> impl Iterator<Item = (u16, &'a [u8])> + use<'a> {
        attrs(self.attrs)
    }
}

/// A request: `nlmsghdr`, the family's header, attributes. Length and sequence number are
/// filled in when it is sent.
pub(super) struct NetlinkRequest {
    buf: Vec<u8>,
}

impl NetlinkRequest {
    /// An rtnetlink link request (`ifinfomsg`).
    pub(super) fn new(ty: u16, flags: u16, family: u8, ifindex: u32) -> Self {
        let mut header = Vec::with_capacity(IFINFOMSG_LEN);
        header.extend_from_slice(&[family, 0]);
        header.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
        header.extend_from_slice(&ifindex.to_ne_bytes());
        header.extend_from_slice(&0u32.to_ne_bytes()); // ifi_flags
        header.extend_from_slice(&0u32.to_ne_bytes()); // ifi_change
        Self::with_header(ty, flags, &header)
    }

    /// A generic-netlink request (`genlmsghdr`) of the family `family` (its id, as the
    /// message type), command `cmd` of version `version`.
    pub(super) fn generic(family: u16, flags: u16, cmd: u8, version: u8) -> Self {
        Self::with_header(family, flags, &[cmd, version, 0, 0])
    }

    fn with_header(ty: u16, flags: u16, header: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it in
        buf.extend_from_slice(header);
        Self { buf }
    }

    pub(super) fn attr(&mut self, ty: u16, value: &[u8]) {
        let len = (NLA_HDRLEN + value.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    pub(super) fn attr_u32(&mut self, ty: u16, value: u32) {
        self.attr(ty, &value.to_ne_bytes());
    }

    pub(super) fn attr_i32(&mut self, ty: u16, value: i32) {
        self.attr(ty, &value.to_ne_bytes());
    }

    pub(super) fn nest_start(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.attr(ty | NLA_F_NESTED, &[]);
        at
    }

    pub(super) fn nest_end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// The message as sent with sequence number `seq`.
    pub(super) fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// One message of a netlink datagram.
pub(super) struct Message<'a> {
    pub(super) ty: u16,
    pub(super) flags: u16,
    pub(super) seq: u32,
    pub(super) payload: &'a [u8],
}

/// The messages of one datagram.
pub(super) struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    pub(super) const fn new(datagram: &'a [u8]) -> Self {
        Self { rest: datagram }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = io::Result<Message<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let len = u32_at(self.rest, 0).unwrap_or(0) as usize;
        if self.rest.len() < NLMSG_HDRLEN || len < NLMSG_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed netlink message",
            )));
        }
        let message = Message {
            ty: u16_at(self.rest, 4)?,
            flags: u16_at(self.rest, 6)?,
            seq: u32_at(self.rest, 8)?,
            payload: &self.rest[NLMSG_HDRLEN..len],
        };
        self.rest = self.rest.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(message))
    }
}

/// The attributes in `buf` (types without the nested / byte-order flags); stops at the
/// first malformed one.
pub(super) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16_at(buf, 0)? as usize;
        let ty = u16_at(buf, 2)? & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > buf.len() {
            return None;
        }
        let value = &buf[NLA_HDRLEN..len];
        buf = buf.get(align4(len)..).unwrap_or(&[]);
        Some((ty, value))
    })
}

/// The error (or acknowledgement, `Ok`) an `NLMSG_ERROR` or `NLMSG_DONE` message carries,
/// with the kernel's extended acknowledgement message if it sent one.
pub(super) fn status(message: &Message<'_>) -> io::Result<()> {
    let errno = u32_at(message.payload, 0).map_or(0, |e| e as i32);
    if errno == 0 {
        return Ok(());
    }
    // NLMSG_ERROR echoes the request header (only the header: NETLINK_CAP_ACK) before the
    // extended acknowledgement attributes; NLMSG_DONE has them right after the error.
    let tlvs = if message.ty == NLMSG_ERROR {
        let echoed = if message.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            u32_at(message.payload, 4).map_or(NLMSG_HDRLEN, |l| align4(l as usize))
        };
        message.payload.get(4 + echoed..)
    } else {
        message.payload.get(4..)
    };
    let text = tlvs
        .filter(|_| message.flags & NLM_F_ACK_TLVS != 0)
        .and_then(|t| attrs(t).find(|&(ty, _)| ty == NLMSGERR_ATTR_MSG))
        .map(|(_, v)| {
            let len = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..len]).into_owned()
        });
    Err(kernel_error(-errno, text))
}

fn kernel_error(errno: i32, text: Option<String>) -> io::Error {
    let os = io::Error::from_raw_os_error(errno);
    let kind = if errno == libc::ENODEV {
        io::ErrorKind::NotFound
    } else {
        os.kind()
    };
    match text {
        Some(text) => io::Error::new(kind, format!("{os}: {text}")),
        None if kind != os.kind() => io::Error::new(kind, os.to_string()),
        None => os,
    }
}

#[derive(Debug)]
pub(super) struct Socket {
    pub(super) fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// A NETLINK_ROUTE socket in the calling thread's namespace, subscribed to `groups`
    /// (non-blocking if subscribed: a monitor reads only what is queued).
    pub(super) fn open(groups: u32) -> io::Result<Self> {
        Self::open_protocol(libc::NETLINK_ROUTE, groups)
    }

    /// A NETLINK_GENERIC socket in the calling thread's namespace.
    pub(super) fn generic() -> io::Result<Self> {
        Self::open_protocol(libc::NETLINK_GENERIC, 0)
    }

    fn open_protocol(protocol: c_int, groups: u32) -> io::Result<Self> {
        let mut ty = libc::SOCK_RAW | libc::SOCK_CLOEXEC;
        if groups != 0 {
            ty |= libc::SOCK_NONBLOCK;
        }
        // SAFETY: plain socket(2); the result is checked before it is used.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, ty, protocol) };
        if raw < 0 {
            return Err(context(
                "opening a netlink socket",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Error messages from the kernel, and acknowledgements without the echoed request.
        // Both are best effort: old kernels lack them and the errno still says what failed.
        for option in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
            setsockopt_int(fd.as_fd(), libc::SOL_NETLINK, option, 1);
        }
        // SAFETY: sockaddr_nl is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = groups;
        // SAFETY: `addr` is a valid sockaddr_nl and the length is its size.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if ret != 0 {
            return Err(context(
                "binding a netlink socket",
                io::Error::last_os_error(),
            ));
        }
        Ok(Self { fd, seq: 0 })
    }

    /// Ask for a larger receive queue (monitors): more room before events are lost.
    pub(super) fn grow_receive_buffer(&self, bytes: c_int) {
        // SO_RCVBUFFORCE passes rmem_max for privileged callers; SO_RCVBUF is capped by it.
        if !setsockopt_int(
            self.fd.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            bytes,
        ) {
            setsockopt_int(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, bytes);
        }
    }

    fn send(&mut self, request: NetlinkRequest) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let buf = request.finish(seq);
        // SAFETY: sockaddr_nl is plain data; all zeroes (port 0) addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `buf` is valid for its length, `kernel` is a valid sockaddr_nl.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                std::ptr::from_ref(&kernel).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(seq)
    }

    /// One datagram from the kernel into `buf`: its length, or `None` if nothing is queued
    /// on a non-blocking socket. Datagrams from anything but the kernel are skipped.
    pub(super) fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: sockaddr_nl is plain data; all zeroes is a valid value.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `buf` is valid for writes of its length; `from` and `from_len` describe
            // a sockaddr_nl the kernel may write.
            let len = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                    std::ptr::from_mut(&mut from).cast(),
                    &raw mut from_len,
                )
            };
            if len < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(None),
                    _ => return Err(e),
                }
            }
            let len = len as usize;
            if len > buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "a netlink message of {len} bytes did not fit the {}-byte buffer",
                        buf.len()
                    ),
                ));
            }
            if from.nl_pid != 0 {
                continue;
            }
            return Ok(Some(len));
        }
    }

    /// Send a request that asks for an acknowledgement; hand every reply to `on_reply`
    /// (type, payload) until the acknowledgement, and return the kernel's verdict.
    pub(super) fn transact(
        &mut self,
        request: NetlinkRequest,
        on_reply: impl FnMut(u16, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.exchange(request, on_reply).map(drop)
    }

    /// Send a dump request; hand every message to `on_reply` until `NLMSG_DONE`. Returns
    /// whether the kernel marked the dump inconsistent (`NLM_F_DUMP_INTR`): interfaces
    /// changed while it was being made, and it should be asked for again.
    pub(super) fn dump(
        &mut self,
        request: NetlinkRequest,
        on_reply: impl FnMut(u16, &[u8]) -> io::Result<()>,
    ) -> io::Result<bool> {
        self.exchange(request, on_reply)
    }

    fn exchange(
        &mut self,
        request: NetlinkRequest,
        mut on_reply: impl FnMut(u16, &[u8]) -> io::Result<()>,
    ) -> io::Result<bool> {
        let seq = self.send(request)?;
        let mut buf = vec![0; RECV_BUFFER];
        let mut interrupted = false;
        loop {
            let Some(len) = self.recv(&mut buf)? else {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "no reply on a non-blocking socket",
                ));
            };
            for message in Messages::new(&buf[..len]) {
                let message = message?;
                if message.seq != seq {
                    continue;
                }
                interrupted |= message.flags & NLM_F_DUMP_INTR != 0;
                match message.ty {
                    NLMSG_ERROR | NLMSG_DONE => return status(&message).map(|()| interrupted),
                    ty => on_reply(ty, message.payload)?,
                }
            }
        }
    }
}

/// Ask the kernel about interface `ifindex` (`RTM_GETLINK`) and read the answer with `parse`.
///
/// # Errors
///
/// `NotFound` if there is no such interface; what `parse` or netlink reported, after
/// "RTM_GETLINK for interface N".
pub(super) fn get_link<T>(
    ifindex: u32,
    mut parse: impl FnMut(&LinkMessage<'_>) -> io::Result<T>,
) -> io::Result<T> {
    let what = || format!("RTM_GETLINK for interface {ifindex}");
    let mut request =
        NetlinkRequest::new(libc::RTM_GETLINK, NLM_F_ACK, libc::AF_UNSPEC as u8, ifindex);
    request.attr_u32(libc::IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    let mut found = None;
    let mut socket = Socket::open(0).map_err(|e| context(what(), e))?;
    socket
        .transact(request, |ty, payload| {
            if ty != libc::RTM_NEWLINK {
                return Ok(());
            }
            if let Some(link) = LinkMessage::parse(payload)
                && link.ifindex == ifindex
            {
                found = Some(parse(&link)?);
            }
            Ok(())
        })
        .map_err(|e| context(what(), e))?;
    found.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: the kernel acknowledged without describing it", what()),
        )
    })
}

/// `setsockopt` with an `int` value; whether it succeeded.
fn setsockopt_int(fd: BorrowedFd<'_>, level: c_int, option: c_int, value: c_int) -> bool {
    // SAFETY: the value is an int and the length is its size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            option,
            std::ptr::from_ref(&value).cast(),
            size_of::<c_int>() as libc::socklen_t,
        ) == 0
    }
}

pub(super) const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

pub(super) fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

pub(super) fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// `e` with `what` in front of its message, keeping its kind.
pub(super) fn context(what: impl fmt::Display, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Netlink messages and attributes built by hand, for the unit tests of this module and its
/// siblings.
#[cfg(test)]
pub(super) mod build {
    use super::{NLA_HDRLEN, NLMSG_HDRLEN, align4};

    pub(crate) fn message(ty: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }

    pub(crate) fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((NLA_HDRLEN + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

    /// An `RTM_*LINK` payload: `ifinfomsg` for `ifindex`, then `attrs`.
    pub(crate) fn link_payload(ifindex: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![0u8; super::IFINFOMSG_LEN];
        p[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        for a in attrs {
            p.extend_from_slice(a);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::{build::*, *};

    /// An error with the echoed request header (capped) and the kernel's message.
    #[test]
    fn error_carries_the_extended_acknowledgement() {
        let mut payload = (-libc::EBUSY).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0; NLMSG_HDRLEN]);
        payload.extend(attr(
            NLMSGERR_ATTR_MSG,
            b"Can't replace active BPF XDP link\0",
        ));
        let datagram = message(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, &payload);
        let message = Messages::new(&datagram).next().unwrap().unwrap();
        let e = status(&message).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
        assert!(
            e.to_string()
                .ends_with("(os error 16): Can't replace active BPF XDP link"),
            "{e}"
        );
    }

    #[test]
    fn acknowledgement_is_ok_and_enodev_is_not_found() {
        let mut ack = 0i32.to_ne_bytes().to_vec();
        ack.extend_from_slice(&[0; NLMSG_HDRLEN]);
        let datagram = message(NLMSG_ERROR, NLM_F_CAPPED, &ack);
        status(&Messages::new(&datagram).next().unwrap().unwrap()).unwrap();

        let mut nodev = (-libc::ENODEV).to_ne_bytes().to_vec();
        nodev.extend_from_slice(&[0; NLMSG_HDRLEN]);
        let datagram = message(NLMSG_ERROR, NLM_F_CAPPED, &nodev);
        let e = status(&Messages::new(&datagram).next().unwrap().unwrap()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for bad in [&[1u8, 2, 3][..], &[8, 0, 0, 0, 0, 0, 0, 0], &[0xff; 20]] {
            let mut messages = Messages::new(bad);
            assert!(messages.next().unwrap().is_err());
            assert!(messages.next().is_none());
        }
        // A truncated attribute ends the list.
        assert_eq!(attrs(&[200, 0, 1, 0, 0]).count(), 0);
    }

    #[test]
    fn header_sizes_are_the_kernels() {
        assert_eq!(
            (NLMSG_HDRLEN, NLA_HDRLEN, IFINFOMSG_LEN, GENL_HDRLEN),
            (16, 4, 16, 4)
        );
    }

    #[test]
    fn requests_carry_their_family_header() {
        let mut link = NetlinkRequest::new(libc::RTM_GETLINK, NLM_F_ACK, 0, 9);
        link.attr_u32(libc::IFLA_EXT_MASK, 1);
        let m = link.finish(3);
        assert_eq!(m.len(), NLMSG_HDRLEN + IFINFOMSG_LEN + 8);
        assert_eq!(u32_at(&m, 0), Some(m.len() as u32));
        assert_eq!(u16_at(&m, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(u32_at(&m, 8), Some(3));
        assert_eq!(u32_at(&m, NLMSG_HDRLEN + 4), Some(9), "ifi_index");
        let generic = NetlinkRequest::generic(0x1f, NLM_F_DUMP, 1, 2).finish(4);
        assert_eq!(generic.len(), NLMSG_HDRLEN + GENL_HDRLEN);
        assert_eq!(u16_at(&generic, 4), Some(0x1f));
        assert_eq!(&generic[NLMSG_HDRLEN..], &[1, 2, 0, 0]);
    }
}
