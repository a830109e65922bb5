//! Frames sent as they are out of an interface of a namespace (an `AF_PACKET` raw socket):
//! whatever bytes a test builds, malformed ones included, reach the peer of a veth pair
//! and its XDP program exactly as written.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use crate::netns::Netns;

/// A raw socket bound to one interface; it receives nothing.
pub struct Injector {
    fd: OwnedFd,
}

impl Injector {
    pub fn open(ns: &Netns, iface: &str) -> io::Result<Self> {
        let ifindex = ns.ifindex(iface)?;
        ns.run(|| {
            // SAFETY: plain socket(2); checked below. Protocol 0: no frame is received.
            let raw =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fresh descriptor owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: zeroed sockaddr_ll is valid; fields set below.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            // SAFETY: addr is a valid sockaddr_ll of the given size.
            let ret = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    std::ptr::from_ref(&addr).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if ret != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Self { fd })
        })
    }

    /// Send one frame (Ethernet header included) as it is.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is valid for reads of its length.
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        match sent {
            n if n < 0 => Err(io::Error::last_os_error()),
            n if n as usize != frame.len() => Err(io::Error::other(format!(
                "sent {n} of {} bytes",
                frame.len()
            ))),
            _ => Ok(()),
        }
    }
}
