//! Frames sent as they are out of an interface of a namespace (an `AF_PACKET` raw socket):
//! whatever bytes a test builds, malformed ones included, reach the peer of a veth pair
//! and its XDP program exactly as written.

use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
};

use crate::netns::Netns;

/// A raw socket bound to one interface; it receives nothing.
pub struct Injector {
    fd: OwnedFd,
}

impl Injector {
    pub fn open(ns: &Netns, iface: &str) -> io::Result<Self> {
        crate::capture::packet_socket(ns, iface, 0).map(|fd| Self { fd })
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
