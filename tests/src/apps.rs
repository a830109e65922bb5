//! Unmodified applications: sockets that join groups and set source filters with their own
//! `setsockopt` calls, as feed handlers, IPTV players or iperf do — never through msfilter's
//! library. Two kinds:
//!
//! * [`AppSocket`]: a plain libc socket of this test process (opened on a thread inside a
//!   namespace), with its own encoding of every membership structure (`ip_mreqn`,
//!   `ip_mreq_source`, `ip_msfilter`, `ipv6_mreq`, `group_req`, `group_source_req`,
//!   `group_filter`) and its own `getsockopt(MCAST_MSFILTER)`.
//! * [`PyApp`]: a `python3` process inside a namespace, driven line by line over its stdin,
//!   doing the same with the `socket` module (`ctypes` for the filter read-back). It can be
//!   killed with SIGKILL like any application.
//!
//! Requests use the test bed's vocabulary ([`Request`], [`OptionSet`]); family-specific
//! source options name the interface by its IPv4 address, which the caller gives.

use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    process::{Child, ChildStdin, ChildStdout, Stdio},
};

use msfilter::sockopt::{Family, Mode, Request};

use crate::{netns::Netns, option_sets::OptionSet};

const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const MCAST_INCLUDE: u32 = 1;
const MCAST_EXCLUDE: u32 = 0;

/// A filter as a socket's `getsockopt(MCAST_MSFILTER)` states it (sources sorted).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AppFilter {
    pub mode: Mode,
    pub sources: Vec<IpAddr>,
}

fn storage(ip: IpAddr) -> [u8; 128] {
    let mut s = [0u8; 128];
    match ip {
        IpAddr::V4(a) => {
            s[..2].copy_from_slice(&AF_INET.to_ne_bytes());
            s[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            s[..2].copy_from_slice(&AF_INET6.to_ne_bytes());
            s[8..24].copy_from_slice(&a.octets());
        }
    }
    s
}

fn storage_ip(s: &[u8]) -> Option<IpAddr> {
    match u16::from_ne_bytes([s[0], s[1]]) {
        AF_INET => Some(IpAddr::from(<[u8; 4]>::try_from(&s[4..8]).ok()?)),
        AF_INET6 => Some(IpAddr::from(<[u8; 16]>::try_from(&s[8..24]).ok()?)),
        _ => None,
    }
}

fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

fn fmode(mode: Mode) -> u32 {
    match mode {
        Mode::Include => MCAST_INCLUDE,
        Mode::Exclude => MCAST_EXCLUDE,
    }
}

/// The socket option (level, name, bytes) that carries `req` for `group` on `ifindex`, on
/// a socket speaking `family` (the level: `SOL_IP` or `SOL_IPV6`; an IPv6 socket holds IPv4
/// memberships through `SOL_IP`). `iface_addr` is the interface's IPv4 address, which the
/// `IP_*` source options name the interface by. The family-specific set is used only when
/// every address is of `family` (IPv6 has only `IPV6_JOIN/LEAVE_GROUP` of its own; its other
/// requests, and requests with an address of the other family, are `MCAST_*`).
pub fn encode(
    family: Family,
    group: IpAddr,
    ifindex: u32,
    iface_addr: Ipv4Addr,
    req: &Request,
    set: OptionSet,
) -> (i32, i32, Vec<u8>) {
    let level = match family {
        Family::V4 => SOL_IP,
        Family::V6 => SOL_IPV6,
    };
    let sources: Vec<IpAddr> = match req {
        Request::BlockSource { source: s }
        | Request::UnblockSource { source: s }
        | Request::JoinSourceGroup { source: s }
        | Request::LeaveSourceGroup { source: s } => vec![*s],
        Request::SetFilter { sources, .. } => sources.clone(),
        Request::JoinGroup | Request::LeaveGroup => vec![],
    };
    let same_family = std::iter::once(group)
        .chain(sources.iter().copied())
        .all(|a| Family::of(a) == family);
    let family_specific = set == OptionSet::FamilySpecific && same_family;
    let group_req = || {
        let mut b = Vec::with_capacity(136);
        b.extend_from_slice(&ifindex.to_ne_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&storage(group));
        b
    };
    let source_req = |s: IpAddr| {
        let mut b = group_req();
        b.extend_from_slice(&storage(s));
        b
    };
    match (group, family_specific) {
        (IpAddr::V4(g), true) => {
            let mreqn = || {
                let mut b = Vec::with_capacity(12);
                b.extend_from_slice(&g.octets());
                b.extend_from_slice(&[0; 4]);
                b.extend_from_slice(&(ifindex as i32).to_ne_bytes());
                b
            };
            let mreq_source = |s: IpAddr| {
                let mut b = Vec::with_capacity(12);
                b.extend_from_slice(&g.octets());
                b.extend_from_slice(&iface_addr.octets());
                b.extend_from_slice(&v4(s).unwrap_or(Ipv4Addr::UNSPECIFIED).octets());
                b
            };
            match req {
                Request::JoinGroup => (SOL_IP, libc::IP_ADD_MEMBERSHIP, mreqn()),
                Request::LeaveGroup => (SOL_IP, libc::IP_DROP_MEMBERSHIP, mreqn()),
                Request::BlockSource { source: s } => {
                    (SOL_IP, libc::IP_BLOCK_SOURCE, mreq_source(*s))
                }
                Request::UnblockSource { source: s } => {
                    (SOL_IP, libc::IP_UNBLOCK_SOURCE, mreq_source(*s))
                }
                Request::JoinSourceGroup { source: s } => {
                    (SOL_IP, libc::IP_ADD_SOURCE_MEMBERSHIP, mreq_source(*s))
                }
                Request::LeaveSourceGroup { source: s } => {
                    (SOL_IP, libc::IP_DROP_SOURCE_MEMBERSHIP, mreq_source(*s))
                }
                Request::SetFilter { mode, sources } => {
                    let mut b = Vec::new();
                    b.extend_from_slice(&g.octets());
                    b.extend_from_slice(&iface_addr.octets());
                    b.extend_from_slice(&fmode(*mode).to_ne_bytes());
                    b.extend_from_slice(&(sources.len() as u32).to_ne_bytes());
                    for s in sources {
                        b.extend_from_slice(&v4(*s).unwrap_or(Ipv4Addr::UNSPECIFIED).octets());
                    }
                    if sources.is_empty() {
                        // struct ip_msfilter has room for one source.
                        b.extend_from_slice(&[0; 4]);
                    }
                    (SOL_IP, libc::IP_MSFILTER, b)
                }
            }
        }
        (IpAddr::V6(g), true) if matches!(req, Request::JoinGroup | Request::LeaveGroup) => {
            let mut b = Vec::with_capacity(20);
            b.extend_from_slice(&g.octets());
            b.extend_from_slice(&ifindex.to_ne_bytes());
            let name = if *req == Request::JoinGroup {
                libc::IPV6_ADD_MEMBERSHIP
            } else {
                libc::IPV6_DROP_MEMBERSHIP
            };
            (SOL_IPV6, name, b)
        }
        _ => match req {
            Request::JoinGroup => (level, libc::MCAST_JOIN_GROUP, group_req()),
            Request::LeaveGroup => (level, libc::MCAST_LEAVE_GROUP, group_req()),
            Request::BlockSource { source: s } => (level, libc::MCAST_BLOCK_SOURCE, source_req(*s)),
            Request::UnblockSource { source: s } => {
                (level, libc::MCAST_UNBLOCK_SOURCE, source_req(*s))
            }
            Request::JoinSourceGroup { source: s } => {
                (level, libc::MCAST_JOIN_SOURCE_GROUP, source_req(*s))
            }
            Request::LeaveSourceGroup { source: s } => {
                (level, libc::MCAST_LEAVE_SOURCE_GROUP, source_req(*s))
            }
            Request::SetFilter { mode, sources } => {
                let mut b = group_req();
                b.extend_from_slice(&fmode(*mode).to_ne_bytes());
                b.extend_from_slice(&(sources.len() as u32).to_ne_bytes());
                for s in sources {
                    b.extend_from_slice(&storage(*s));
                }
                (level, libc::MCAST_MSFILTER, b)
            }
        },
    }
}

/// A plain socket of this process, opened inside a namespace.
#[derive(Debug)]
pub struct AppSocket {
    fd: OwnedFd,
    pub family: Family,
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl AppSocket {
    /// An unbound UDP socket of `family` in `ns` (it receives nothing; its memberships
    /// count all the same).
    pub fn udp(ns: &Netns, family: Family) -> Self {
        ns.run(|| Self::udp_here(family))
    }

    /// The same, in the calling thread's namespace.
    pub fn udp_here(family: Family) -> Self {
        let domain = match family {
            Family::V4 => libc::AF_INET,
            Family::V6 => libc::AF_INET6,
        };
        // SAFETY: plain socket(2), checked.
        let raw = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(raw >= 0, "socket: {}", io::Error::last_os_error());
        Self {
            // SAFETY: fresh descriptor.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            family,
        }
    }

    /// A UDP socket bound to `group`:`port` in `ns`, with a large receive buffer (for
    /// counting what arrives).
    pub fn bound(ns: &Netns, group: IpAddr, port: u16) -> Self {
        ns.run(|| {
            let socket = std::net::UdpSocket::bind(SocketAddr::new(group, port))
                .unwrap_or_else(|e| panic!("binding {group}:{port}: {e}"));
            let size: libc::c_int = 8 << 20;
            // SAFETY: an int option on a live socket.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&raw const size).cast(),
                    4,
                )
            };
            Self {
                fd: OwnedFd::from(socket),
                family: Family::of(group),
            }
        })
    }

    /// Apply `req` at the socket's own level; `Err(errno)` when the kernel refuses.
    pub fn apply(
        &self,
        group: IpAddr,
        ifindex: u32,
        iface_addr: Ipv4Addr,
        req: &Request,
        set: OptionSet,
    ) -> Result<(), i32> {
        self.apply_as(self.family, group, ifindex, iface_addr, req, set)
    }

    /// Apply `req` at the level of `family` (an IPv6 socket joins IPv4 groups at `SOL_IP`).
    pub fn apply_as(
        &self,
        family: Family,
        group: IpAddr,
        ifindex: u32,
        iface_addr: Ipv4Addr,
        req: &Request,
        set: OptionSet,
    ) -> Result<(), i32> {
        let (level, name, bytes) = encode(family, group, ifindex, iface_addr, req, set);
        // SAFETY: `bytes` is a live buffer of its length.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                bytes.as_ptr().cast(),
                bytes.len() as libc::socklen_t,
            )
        };
        if rc == 0 { Ok(()) } else { Err(last_errno()) }
    }

    /// The socket's filter for `group` on `ifindex` (`None`: not a member), read at the
    /// group's level.
    pub fn filter(&self, group: IpAddr, ifindex: u32) -> Result<Option<AppFilter>, i32> {
        read_filter(self.fd.as_fd(), group, ifindex)
    }

    /// Close the socket (its memberships end with it).
    pub fn close(self) {
        drop(self);
    }

    /// `SO_COOKIE`.
    pub fn cookie(&self) -> u64 {
        socket_cookie(self.fd.as_fd())
    }

    /// The receive side: datagrams waiting now, by source (non-blocking).
    pub fn drain_sources(&self) -> Vec<IpAddr> {
        let socket = std::net::UdpSocket::from(self.fd.try_clone().expect("dup"));
        socket.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            out.push(from.ip());
        }
        out
    }
}

impl AsFd for AppSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `SO_COOKIE` of a socket.
pub fn socket_cookie(fd: BorrowedFd<'_>) -> u64 {
    let mut cookie: u64 = 0;
    let mut len = 8 as libc::socklen_t;
    // SAFETY: a u64 option into a live u64.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "SO_COOKIE: {}", io::Error::last_os_error());
    cookie
}

/// `getsockopt(MCAST_MSFILTER)` for `group` on `ifindex`, with this module's own
/// `group_filter` layout.
pub fn read_filter(
    fd: BorrowedFd<'_>,
    group: IpAddr,
    ifindex: u32,
) -> Result<Option<AppFilter>, i32> {
    const ROOM: usize = 1100;
    let level = if group.is_ipv4() { SOL_IP } else { SOL_IPV6 };
    // 8-byte aligned room for the header (144 bytes) and ROOM sources.
    let mut words = vec![0u64; (144 + ROOM * 128) / 8];
    let buf: &mut [u8] = bytemuck_bytes(&mut words);
    buf[..4].copy_from_slice(&ifindex.to_ne_bytes());
    buf[8..136].copy_from_slice(&storage(group));
    buf[140..144].copy_from_slice(&(ROOM as u32).to_ne_bytes());
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is `len` writable bytes; the kernel writes at most gf_numsrc sources.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            libc::MCAST_MSFILTER,
            buf.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        let e = last_errno();
        return if e == libc::EADDRNOTAVAIL {
            Ok(None)
        } else {
            Err(e)
        };
    }
    let mode = match u32::from_ne_bytes(buf[136..140].try_into().unwrap()) {
        MCAST_INCLUDE => Mode::Include,
        _ => Mode::Exclude,
    };
    let n = (u32::from_ne_bytes(buf[140..144].try_into().unwrap()) as usize).min(ROOM);
    let mut sources: Vec<IpAddr> = (0..n)
        .filter_map(|i| storage_ip(&buf[144 + i * 128..144 + (i + 1) * 128]))
        .collect();
    sources.sort();
    Ok(Some(AppFilter { mode, sources }))
}

fn bytemuck_bytes(words: &mut [u64]) -> &mut [u8] {
    let len = std::mem::size_of_val(words);
    // SAFETY: u64 has no invalid bit patterns and u8 no alignment; same memory, same length.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
}

// ---------------------------------------------------------------------------------------
// python3

/// The application: one line in, one line out (`ok ...` or `err <errno>`).
const PY_APP: &str = r#"
import ctypes, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
SOL_IP, SOL_IPV6 = 0, 41
socks = {}

def storage(ip):
    if ':' in ip:
        return struct.pack('=H', socket.AF_INET6) + b'\0' * 6 + socket.inet_pton(socket.AF_INET6, ip) + b'\0' * 104
    return struct.pack('=H', socket.AF_INET) + b'\0\0' + socket.inet_aton(ip) + b'\0' * 120

def encode(req, group, ifindex, ifaddr, fs, sources):
    v6 = ':' in group
    level = SOL_IPV6 if v6 else SOL_IP
    if fs and not v6:
        g, a = socket.inet_aton(group), socket.inet_aton(ifaddr)
        src = lambda s: g + a + socket.inet_aton(s)
        if req == 'join':   return SOL_IP, 35, g + b'\0' * 4 + struct.pack('=i', ifindex)
        if req == 'leave':  return SOL_IP, 36, g + b'\0' * 4 + struct.pack('=i', ifindex)
        if req == 'block':  return SOL_IP, 38, src(sources[0])
        if req == 'unblock': return SOL_IP, 37, src(sources[0])
        if req == 'join-source': return SOL_IP, 39, src(sources[0])
        if req == 'leave-source': return SOL_IP, 40, src(sources[0])
        mode = 1 if req == 'include' else 0
        body = b''.join(socket.inet_aton(s) for s in sources) or b'\0' * 4
        return SOL_IP, 41, g + a + struct.pack('=II', mode, len(sources)) + body
    if fs and v6 and req in ('join', 'leave'):
        return SOL_IPV6, 20 if req == 'join' else 21, socket.inet_pton(socket.AF_INET6, group) + struct.pack('=I', ifindex)
    head = struct.pack('=I', ifindex) + b'\0' * 4 + storage(group)
    names = {'join': 42, 'block': 43, 'unblock': 44, 'leave': 45, 'join-source': 46, 'leave-source': 47}
    if req in names:
        return level, names[req], head + (storage(sources[0]) if sources else b'')
    mode = 1 if req == 'include' else 0
    return level, 48, head + struct.pack('=II', mode, len(sources)) + b''.join(storage(s) for s in sources)

def read_filter(s, group, ifindex):
    room = 64
    v6 = ':' in group
    buf = ctypes.create_string_buffer(struct.pack('=I', ifindex) + b'\0' * 4 + storage(group) + struct.pack('=II', 0, room) + b'\0' * (128 * room))
    n = ctypes.c_uint32(len(buf.raw))
    if libc.getsockopt(s.fileno(), SOL_IPV6 if v6 else SOL_IP, 48, buf, ctypes.byref(n)) != 0:
        return 'err %d' % ctypes.get_errno()
    raw = buf.raw
    mode, count = struct.unpack_from('=II', raw, 136)
    out = []
    for i in range(min(count, room)):
        off = 144 + 128 * i
        fam = struct.unpack_from('=H', raw, off)[0]
        if fam == socket.AF_INET6:
            out.append(socket.inet_ntop(socket.AF_INET6, raw[off + 8:off + 24]))
        else:
            out.append(socket.inet_ntoa(raw[off + 4:off + 8]))
    return 'ok %s %s' % ('include' if mode == 1 else 'exclude', ' '.join(out))

for line in sys.stdin:
    f = line.split()
    try:
        if f[0] == 'pid':
            print('ok', os.getpid())
        elif f[0] == 'open':
            s = socket.socket(socket.AF_INET6 if f[1] == 'v6' else socket.AF_INET, socket.SOCK_DGRAM)
            n = len(socks)
            socks[n] = s
            print('ok', n)
        elif f[0] == 'apply':
            # apply N REQ GROUP IFINDEX IFADDR pi|fs [SOURCES...]
            s = socks[int(f[1])]
            level, name, value = encode(f[2], f[3], int(f[4]), f[5], f[6] == 'fs', f[7:])
            try:
                s.setsockopt(level, name, value)
                print('ok')
            except OSError as e:
                print('err', e.errno)
        elif f[0] == 'filter':
            print(read_filter(socks[int(f[1])], f[2], int(f[3])))
        elif f[0] == 'cookie':
            print('ok', struct.unpack('=Q', socks[int(f[1])].getsockopt(socket.SOL_SOCKET, 57, 8))[0])
        elif f[0] == 'close':
            socks.pop(int(f[1])).close()
            print('ok')
        else:
            print('err', 22)
    except Exception as e:
        print('err', 5, repr(e).replace('\n', ' '))
    sys.stdout.flush()
"#;

/// A `python3` application inside a namespace.
pub struct PyApp {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
}

/// A socket of a [`PyApp`] (its index there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PySocket(pub usize);

impl PyApp {
    pub fn start(ns: &Netns) -> Self {
        let mut child = ns
            .command("python3")
            .args(["-u", "-c", PY_APP])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting python3");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut app = Self {
            pid: child.id(),
            child,
            stdin,
            stdout,
        };
        let pid: u32 = app.ask("pid").parse().expect("pid");
        assert_eq!(
            pid, app.pid,
            "ip netns exec runs python3 in its own process"
        );
        app
    }

    /// Send one command; the text after `ok`, or a panic on anything else.
    fn ask(&mut self, line: &str) -> String {
        match self.try_ask(line) {
            Ok(rest) => rest,
            Err(errno) => panic!("python app: {line:?} failed with errno {errno}"),
        }
    }

    fn try_ask(&mut self, line: &str) -> Result<String, i32> {
        writeln!(self.stdin, "{line}").expect("writing to python3");
        let mut reply = String::new();
        self.stdout
            .read_line(&mut reply)
            .expect("reading from python3");
        let reply = reply.trim_end();
        if let Some(rest) = reply.strip_prefix("ok") {
            return Ok(rest.trim_start().to_string());
        }
        let errno = reply
            .strip_prefix("err ")
            .and_then(|e| e.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("python app: {line:?} answered {reply:?}"));
        Err(errno)
    }

    pub fn open(&mut self, family: Family) -> PySocket {
        let f = if family == Family::V6 { "v6" } else { "v4" };
        PySocket(self.ask(&format!("open {f}")).parse().unwrap())
    }

    pub fn apply(
        &mut self,
        socket: PySocket,
        group: IpAddr,
        ifindex: u32,
        iface_addr: Ipv4Addr,
        req: &Request,
        set: OptionSet,
    ) -> Result<(), i32> {
        let (word, sources): (&str, Vec<IpAddr>) = match req {
            Request::JoinGroup => ("join", vec![]),
            Request::LeaveGroup => ("leave", vec![]),
            Request::BlockSource { source: s } => ("block", vec![*s]),
            Request::UnblockSource { source: s } => ("unblock", vec![*s]),
            Request::JoinSourceGroup { source: s } => ("join-source", vec![*s]),
            Request::LeaveSourceGroup { source: s } => ("leave-source", vec![*s]),
            Request::SetFilter {
                mode: Mode::Include,
                sources,
            } => ("include", sources.clone()),
            Request::SetFilter {
                mode: Mode::Exclude,
                sources,
            } => ("exclude", sources.clone()),
        };
        let set = if set == OptionSet::FamilySpecific {
            "fs"
        } else {
            "pi"
        };
        let mut line = format!(
            "apply {} {word} {group} {ifindex} {iface_addr} {set}",
            socket.0
        );
        for s in sources {
            line.push_str(&format!(" {s}"));
        }
        self.try_ask(&line).map(drop)
    }

    /// The socket's filter as the application itself reads it.
    pub fn filter(
        &mut self,
        socket: PySocket,
        group: IpAddr,
        ifindex: u32,
    ) -> Result<Option<AppFilter>, i32> {
        match self.try_ask(&format!("filter {} {group} {ifindex}", socket.0)) {
            Ok(rest) => {
                let mut words = rest.split_whitespace();
                let mode = match words.next() {
                    Some("include") => Mode::Include,
                    _ => Mode::Exclude,
                };
                let mut sources: Vec<IpAddr> = words.map(|w| w.parse().unwrap()).collect();
                sources.sort();
                Ok(Some(AppFilter { mode, sources }))
            }
            Err(libc::EADDRNOTAVAIL) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn cookie(&mut self, socket: PySocket) -> u64 {
        self.ask(&format!("cookie {}", socket.0)).parse().unwrap()
    }

    pub fn close(&mut self, socket: PySocket) {
        self.ask(&format!("close {}", socket.0));
    }

    /// SIGKILL, and wait until the process is gone (its sockets released).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
