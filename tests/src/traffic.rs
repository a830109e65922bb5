//! Real multicast traffic between namespaces: a sender that transmits UDP datagrams to a
//! group from a chosen source address, and a receiving application that counts what it gets
//! per source.

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::netns::Netns;

/// UDP port used for test traffic.
pub const PORT: u16 = 5001;

fn setsockopt<T>(socket: &UdpSocket, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a valid T for the duration of the call.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A socket in the sender namespace sending to `group` from `source` out of `ifindex`.
pub struct Sender {
    socket: UdpSocket,
    to: SocketAddr,
    sequence: u64,
    payload: usize,
}

impl Sender {
    /// Open the sending socket inside `ns`. `payload` is the UDP payload size (≥ 16).
    pub fn new(ns: &Netns, source: IpAddr, group: IpAddr, ifindex: u32, payload: usize) -> Self {
        assert_eq!(source.is_ipv4(), group.is_ipv4(), "families differ");
        ns.run(|| {
            let socket = UdpSocket::bind(SocketAddr::new(source, 0))
                .unwrap_or_else(|e| panic!("binding {source}: {e}"));
            match group {
                IpAddr::V4(_) => {
                    let mreqn = libc::ip_mreqn {
                        imr_multiaddr: libc::in_addr { s_addr: 0 },
                        imr_address: libc::in_addr { s_addr: 0 },
                        imr_ifindex: ifindex as i32,
                    };
                    setsockopt(&socket, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreqn).unwrap();
                    socket.set_multicast_ttl_v4(1).unwrap();
                    socket.set_multicast_loop_v4(false).unwrap();
                }
                IpAddr::V6(_) => {
                    let index = ifindex as i32;
                    setsockopt(&socket, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &index)
                        .unwrap();
                    socket.set_multicast_loop_v6(false).unwrap();
                }
            }
            Self {
                socket,
                to: SocketAddr::new(group, PORT),
                sequence: 0,
                payload: payload.max(16),
            }
        })
    }

    /// Send one datagram (the payload starts with a sequence number).
    pub fn send(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; self.payload];
        buf[..8].copy_from_slice(&self.sequence.to_be_bytes());
        self.sequence += 1;
        self.socket.send_to(&buf, self.to).map(drop)
    }

    /// Bytes of the Ethernet frame each datagram becomes (what XDP counts).
    pub fn frame_len(&self) -> u64 {
        let ip = if self.to.is_ipv4() { 20 } else { 40 };
        (14 + ip + 8 + self.payload) as u64
    }
}

/// A receiving application in the receiver namespace: an any-source member of `group` on
/// `ifindex`, reading continuously on its own thread (as an application would, so its socket
/// buffer never overflows) and counting datagrams by source address.
pub struct Receiver {
    state: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Tally {
    counts: BTreeMap<IpAddr, u64>,
    last: Option<Instant>,
}

impl Receiver {
    /// An application that joins `group` itself (any-source) on `ifindex`.
    pub fn new(ns: &Netns, group: IpAddr, ifindex: u32) -> Self {
        Self::start(ns.run(|| join(group, ifindex, true)))
    }

    /// An application that listens on `group`:[`PORT`] but leaves memberships to msfilter:
    /// with `IP_MULTICAST_ALL` on (the default) it gets whatever the host accepts for the
    /// group, so it hears exactly what the interface-level filter and XDP let through.
    pub fn passive(ns: &Netns, group: IpAddr) -> Self {
        Self::start(ns.run(|| join(group, 0, false)))
    }

    fn start(socket: UdpSocket) -> Self {
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let state = Arc::new(Mutex::new(Tally::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, from)) = socket.recv_from(&mut buf) {
                        let mut tally = state.lock().unwrap();
                        *tally.counts.entry(from.ip()).or_insert(0) += 1;
                        tally.last = Some(Instant::now());
                    }
                }
            })
        };
        Self {
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Wait until nothing arrived for `quiet`, then return the counts so far and start over.
    pub fn take_when_quiet(&self, quiet: Duration) -> BTreeMap<IpAddr, u64> {
        let started = Instant::now();
        loop {
            std::thread::sleep(quiet / 4);
            let mut tally = self.state.lock().unwrap();
            let since = tally.last.map_or(started, |t| t.max(started));
            if since.elapsed() >= quiet {
                tally.last = None;
                return std::mem::take(&mut tally.counts);
            }
        }
    }

    /// The counts so far, starting over.
    pub fn take(&self) -> BTreeMap<IpAddr, u64> {
        std::mem::take(&mut self.state.lock().unwrap().counts)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A UDP socket bound to `group`:[`PORT`], joined (any-source) on `ifindex` if `member`.
fn join(group: IpAddr, ifindex: u32, member: bool) -> UdpSocket {
    let socket = UdpSocket::bind(SocketAddr::new(group, PORT)).unwrap();
    // Room for every datagram a test sends even if this thread is scheduled late.
    let size: libc::c_int = 8 << 20;
    setsockopt(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size).unwrap();
    if !member {
        return socket;
    }
    match group {
        IpAddr::V4(g) => {
            let mreqn = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr {
                    s_addr: u32::from(g).to_be(),
                },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: ifindex as i32,
            };
            setsockopt(&socket, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreqn).unwrap();
        }
        IpAddr::V6(g) => socket.join_multicast_v6(&g, ifindex).unwrap(),
    }
    socket
}
