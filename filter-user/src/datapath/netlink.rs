//! Who holds an interface's XDP hook, and interfaces coming and going: the few rtnetlink
//! and `bpf(2)` requests aya 0.14 does not offer.
//!
//! * [`xdp_attachment`]: the XDP program attached to an interface and its mode
//!   (`RTM_GETLINK`, the nested `IFLA_XDP` attributes).
//! * [`program_summary`]: a program's id, name, tag, load time and type
//!   (`BPF_PROG_GET_FD_BY_ID`, `BPF_OBJ_GET_INFO_BY_FD`).
//! * [`xdp_link_of`]: the bpf_link through which that program is attached, if any.
//! * [`remove_xdp`]: remove whatever XDP program is attached (`BPF_LINK_DETACH` for a link,
//!   `RTM_SETLINK` with `IFLA_XDP_FD = -1` otherwise).
//! * [`interfaces`]: every interface, index and name (`RTM_GETLINK` dump).
//! * [`LinkMonitor`]: interfaces added, renamed, changed and removed (`RTMGRP_LINK`).
//!
//! Interface indexes are those of the calling thread's network namespace: each request opens
//! its netlink socket on the calling thread, and a netlink socket stays in the namespace it
//! was opened in. BPF object ids (programs, links) are global.
//!
//! Errors are `io::Error`s whose message says what failed ("RTM_GETLINK for interface 7:
//! ..."), with the kernel's extended acknowledgement appended when it sent one. A missing
//! interface is `ErrorKind::NotFound`, as is a missing program.

use std::{
    collections::BTreeMap,
    ffi::c_int,
    fmt, io,
    mem::size_of,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::sys::bpf;

// <linux/netlink.h>
const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);
const NLMSGERR_ATTR_MSG: u16 = 1;
const NETLINK_CAP_ACK: c_int = 10;
const NETLINK_EXT_ACK: c_int = 11;

// <linux/rtnetlink.h>
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTMGRP_LINK: u32 = 1;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
/// `struct ifinfomsg`: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;

// <linux/if_link.h>
const IFLA_IFNAME: u16 = 3;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const IFLA_XDP_EXPECTED_FD: u16 = 8;
const XDP_ATTACHED_NONE: u8 = 0;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const XDP_ATTACHED_MULTI: u8 = 4;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;
const XDP_FLAGS_REPLACE: u32 = 1 << 4;

// <linux/bpf.h>
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_LINK_TYPE_XDP: u32 = 6;

/// `bpf_prog_info.type` of XDP programs (`BPF_PROG_TYPE_XDP`).
pub const BPF_PROG_TYPE_XDP: u32 = 6;

/// Receive buffer for one netlink datagram; replies to our requests are far smaller.
const RECV_BUFFER: usize = 64 * 1024;
/// How often a dump the kernel marked inconsistent (`NLM_F_DUMP_INTR`) is retried.
const DUMP_ATTEMPTS: usize = 5;

// ---------------------------------------------------------------------------------------
// XDP attachments

/// Which XDP hook of an interface holds a program (`IFLA_XDP_ATTACHED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XdpAttachedMode {
    /// Native XDP, in the driver.
    Driver,
    /// Generic XDP, on the skb.
    Skb,
    /// Offloaded to the NIC.
    Hardware,
    /// Programs in more than one hook: an offloaded one plus a driver or skb one (the kernel
    /// never runs driver and skb programs on the same interface together).
    Multiple,
}

impl XdpAttachedMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Driver => "driver",
            Self::Skb => "skb",
            Self::Hardware => "hardware",
            Self::Multiple => "multiple",
        }
    }

    /// The `XDP_FLAGS_*_MODE` flag that names this hook (`None` for `Multiple`).
    const fn flag(self) -> Option<u32> {
        match self {
            Self::Driver => Some(XDP_FLAGS_DRV_MODE),
            Self::Skb => Some(XDP_FLAGS_SKB_MODE),
            Self::Hardware => Some(XDP_FLAGS_HW_MODE),
            Self::Multiple => None,
        }
    }
}

impl fmt::Display for XdpAttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The XDP program(s) attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct XdpAttachment {
    /// The program: the only one, or with [`XdpAttachedMode::Multiple`] the driver or skb
    /// one (the hook msfilter attaches to), the offloaded one being in `hardware`.
    pub prog_id: u32,
    pub mode: XdpAttachedMode,
    /// The program in each hook, as the kernel reports them.
    pub driver: Option<u32>,
    pub skb: Option<u32>,
    pub hardware: Option<u32>,
}

impl XdpAttachment {
    /// Every attached program with its hook (never `Multiple`).
    pub fn programs(&self) -> impl Iterator<Item = (XdpAttachedMode, u32)> + use<> {
        [
            (XdpAttachedMode::Driver, self.driver),
            (XdpAttachedMode::Skb, self.skb),
            (XdpAttachedMode::Hardware, self.hardware),
        ]
        .into_iter()
        .filter_map(|(mode, id)| Some((mode, id?)))
    }
}

/// The XDP program attached to interface `ifindex`, if any.
///
/// # Errors
///
/// `NotFound` if there is no such interface; otherwise whatever netlink reported.
pub fn xdp_attachment(ifindex: u32) -> io::Result<Option<XdpAttachment>> {
    let what = || format!("RTM_GETLINK for interface {ifindex}");
    let mut request = Request::new(RTM_GETLINK, NLM_F_ACK, libc::AF_UNSPEC as u8, ifindex);
    request.attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    let mut found = None;
    let mut socket = Socket::open(0).map_err(|e| context(what(), e))?;
    socket
        .transact(request, |ty, payload| {
            if ty != RTM_NEWLINK {
                return Ok(());
            }
            if let Some(link) = LinkMessage::parse(payload)
                && link.ifindex == ifindex
            {
                found = Some(link.xdp()?);
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

/// What the kernel says about a loaded BPF program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramSummary {
    pub id: u32,
    /// The name given at load time (at most 15 bytes; empty if none was given).
    pub name: String,
    /// The program's tag (a hash of its instructions) in hex, as `bpftool` shows it.
    pub tag: String,
    pub loaded_at: SystemTime,
    /// `bpf_prog_info.type` (`BPF_PROG_TYPE_*`; [`BPF_PROG_TYPE_XDP`] for XDP).
    pub prog_type: u32,
}

/// The id, name, tag, load time and type of BPF program `prog_id`.
///
/// # Errors
///
/// `NotFound` if there is no such program.
pub fn program_summary(prog_id: u32) -> io::Result<ProgramSummary> {
    let fd = prog_fd_by_id(prog_id)
        .map_err(|e| context(format!("BPF_PROG_GET_FD_BY_ID for program {prog_id}"), e))?;
    let mut info = ProgInfo::default();
    obj_info(fd.as_fd(), &mut info)
        .map_err(|e| context(format!("BPF_OBJ_GET_INFO_BY_FD for program {prog_id}"), e))?;
    let name_len = info.name.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(ProgramSummary {
        id: info.id,
        name: String::from_utf8_lossy(&info.name[..name_len]).into_owned(),
        tag: info.tag.iter().map(|b| format!("{b:02x}")).collect(),
        loaded_at: boot_time() + Duration::from_nanos(info.load_time),
        prog_type: info.prog_type,
    })
}

/// The id of the bpf_link through which the XDP program on `ifindex` is attached; `None`
/// when no program is attached or it was attached through netlink.
///
/// Links are global while interface indexes are per namespace, and an XDP link tells only
/// its interface index. A link counts when its index is `ifindex` and its program is the
/// one `RTM_GETLINK` reports for `ifindex` in this namespace.
///
/// # Errors
///
/// `NotFound` if there is no such interface. An error, too, if the same program is attached
/// through links to interfaces with this index in several namespaces: which link is this
/// namespace's cannot be told then.
pub fn xdp_link_of(ifindex: u32) -> io::Result<Option<u32>> {
    match xdp_attachment(ifindex)? {
        None => Ok(None),
        Some(attachment) => link_of(ifindex, attachment.prog_id),
    }
}

/// Remove every XDP program attached to `ifindex`: a program attached through a bpf_link
/// by detaching the link (`BPF_LINK_DETACH`; the link's holder keeps a defunct link), one
/// attached through netlink by `RTM_SETLINK` with `IFLA_XDP_FD = -1` in its mode, on the
/// condition that it is still that program (`XDP_FLAGS_REPLACE`). Nothing attached: `Ok`.
///
/// # Errors
///
/// `NotFound` if there is no such interface; otherwise what the kernel refused, such as a
/// program attached in the meantime.
pub fn remove_xdp(ifindex: u32) -> io::Result<()> {
    let Some(attachment) = xdp_attachment(ifindex)? else {
        return Ok(());
    };
    for (mode, prog_id) in attachment.programs() {
        match link_of(ifindex, prog_id)? {
            Some(link_id) => detach_link(link_id).map_err(|e| {
                context(
                    format!("BPF_LINK_DETACH of link {link_id} (interface {ifindex})"),
                    e,
                )
            })?,
            None => detach_netlink(ifindex, mode, prog_id).map_err(|e| {
                context(
                    format!(
                        "RTM_SETLINK removing XDP program {prog_id} ({mode} mode) from \
                         interface {ifindex}"
                    ),
                    e,
                )
            })?,
        }
    }
    Ok(())
}

fn detach_netlink(ifindex: u32, mode: XdpAttachedMode, prog_id: u32) -> io::Result<()> {
    // The program's fd, so the kernel removes it only if it is still the one attached.
    let expected = match prog_fd_by_id(prog_id) {
        Ok(fd) => fd,
        // Gone: an attached program cannot be, so it was removed in the meantime.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    RouteSocket::open()?.set_xdp(ifindex, None, mode, Some(expected.as_fd()))
}

/// A NETLINK_ROUTE socket of the namespace of the thread that opened it: requests through
/// it act on that namespace's interfaces whichever thread sends them.
#[derive(Debug)]
pub struct RouteSocket(Socket);

impl RouteSocket {
    pub fn open() -> io::Result<Self> {
        Socket::open(0).map(Self)
    }

    /// `RTM_SETLINK` with `IFLA_XDP`: attach `program` in `mode` (`None`: remove what is
    /// attached in that mode). With `expected`, only if that program is the one attached
    /// (`XDP_FLAGS_REPLACE`).
    pub fn set_xdp(
        &mut self,
        ifindex: u32,
        program: Option<BorrowedFd<'_>>,
        mode: XdpAttachedMode,
        expected: Option<BorrowedFd<'_>>,
    ) -> io::Result<()> {
        let Some(mode_flag) = mode.flag() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "XDP is set in one mode at a time",
            ));
        };
        let mut request = Request::new(RTM_SETLINK, NLM_F_ACK, libc::AF_UNSPEC as u8, ifindex);
        let nest = request.nest_start(IFLA_XDP);
        request.attr_i32(IFLA_XDP_FD, program.map_or(-1, |fd| fd.as_raw_fd()));
        match expected {
            Some(expected) => {
                request.attr_u32(IFLA_XDP_FLAGS, mode_flag | XDP_FLAGS_REPLACE);
                request.attr_i32(IFLA_XDP_EXPECTED_FD, expected.as_raw_fd());
            }
            None => request.attr_u32(IFLA_XDP_FLAGS, mode_flag),
        }
        request.nest_end(nest);
        self.0.transact(request, |_, _| Ok(()))
    }
}

fn detach_link(link_id: u32) -> io::Result<()> {
    let fd = match link_fd_by_id(link_id) {
        Ok(fd) => fd,
        // Released in the meantime, and with it the attachment.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut attr = LinkDetachAttr {
        link_fd: fd.as_raw_fd() as u32,
    };
    // SAFETY: a link-detach attribute holding a live link descriptor.
    unsafe { bpf(BPF_LINK_DETACH, &mut attr) }.map(drop)
}

/// The XDP link attached to `ifindex` (in any namespace) running `prog_id`.
fn link_of(ifindex: u32, prog_id: u32) -> io::Result<Option<u32>> {
    let links: Vec<u32> = xdp_links()?
        .into_iter()
        .filter(|l| l.ifindex == ifindex && l.prog_id == prog_id)
        .map(|l| l.id)
        .collect();
    match links[..] {
        [] => Ok(None),
        [id] => Ok(Some(id)),
        _ => Err(io::Error::other(format!(
            "program {prog_id} is attached through links {links:?} to interfaces with index \
             {ifindex} in several network namespaces; the kernel does not say which link is \
             this namespace's"
        ))),
    }
}

struct XdpLink {
    id: u32,
    prog_id: u32,
    ifindex: u32,
}

/// Every XDP link on the host (detached ones report interface index 0).
fn xdp_links() -> io::Result<Vec<XdpLink>> {
    let mut links = Vec::new();
    let mut id = 0;
    loop {
        let mut attr = IdAttr {
            id,
            ..IdAttr::default()
        };
        // SAFETY: an id-iteration attribute, no pointers.
        match unsafe { bpf(BPF_LINK_GET_NEXT_ID, &mut attr) } {
            Ok(_) => id = attr.next_id,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(links),
            Err(e) => return Err(context("BPF_LINK_GET_NEXT_ID", e)),
        }
        let fd = match link_fd_by_id(id) {
            Ok(fd) => fd,
            // Released between the two calls.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(context(format!("BPF_LINK_GET_FD_BY_ID for link {id}"), e)),
        };
        let mut info = LinkInfo::default();
        obj_info(fd.as_fd(), &mut info)
            .map_err(|e| context(format!("BPF_OBJ_GET_INFO_BY_FD for link {id}"), e))?;
        if info.link_type == BPF_LINK_TYPE_XDP {
            links.push(XdpLink {
                id: info.id,
                prog_id: info.prog_id,
                ifindex: info.union[0],
            });
        }
    }
}

// ---------------------------------------------------------------------------------------
// Interfaces and their events

/// Every interface of the namespace: index and name, by index.
pub fn interfaces() -> io::Result<Vec<(u32, String)>> {
    let mut socket =
        Socket::open(0).map_err(|e| context("RTM_GETLINK dump of all interfaces", e))?;
    dump_interfaces(&mut socket)
}

/// Every interface of `socket`'s namespace.
fn dump_interfaces(socket: &mut Socket) -> io::Result<Vec<(u32, String)>> {
    let what = "RTM_GETLINK dump of all interfaces";
    for _ in 0..DUMP_ATTEMPTS {
        // AF_PACKET asks for the links alone; AF_UNSPEC would add every family's dump
        // (bridge ports, for instance).
        let mut request = Request::new(RTM_GETLINK, NLM_F_DUMP, libc::AF_PACKET as u8, 0);
        request.attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        let mut found = BTreeMap::new();
        let interrupted = socket
            .dump(request, |ty, payload| {
                if ty == RTM_NEWLINK
                    && let Some(link) = LinkMessage::parse(payload)
                    && link.family == libc::AF_UNSPEC as u8
                    && let Some(name) = link.name()
                {
                    found.insert(link.ifindex, name);
                }
                Ok(())
            })
            .map_err(|e| context(what, e))?;
        if !interrupted {
            return Ok(found.into_iter().collect());
        }
    }
    Err(io::Error::other(format!(
        "{what}: interfaces kept changing during {DUMP_ATTEMPTS} attempts"
    )))
}

/// What happened to an interface, as seen by a [`LinkMonitor`].
///
/// The kernel sends `RTM_NEWLINK` both for a new interface and for any change to an
/// existing one; the monitor tells them apart by remembering the interfaces it knows
/// (starting from a dump when it is created). Events are therefore transitions of that
/// view: an interface is `Added` once and `Removed` once, and a new interface with an old
/// name (re-created) is a `Removed` and an `Added` with different indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A new interface (created, or moved into this namespace).
    Added { ifindex: u32, name: String },
    /// An interface's name changed.
    Renamed {
        ifindex: u32,
        old_name: String,
        name: String,
    },
    /// Anything else about the interface changed (state, flags, addresses, ...).
    Changed { ifindex: u32, name: String },
    /// The interface is gone (deleted, or moved to another namespace).
    Removed { ifindex: u32, name: String },
}

/// Interface events of the namespace the monitor was created in (whichever thread reads
/// them): a non-blocking netlink socket subscribed to `RTMGRP_LINK`. Wait for it to become
/// readable (e.g. with tokio's `AsyncFd`), then call [`LinkMonitor::read_events`].
///
/// If the kernel drops events because they were not read in time, the monitor notices
/// (`ENOBUFS`), throws away what is queued, and derives the events from a fresh dump, so
/// the view stays right even though intermediate changes are lost ([`LinkMonitor::overflows`]
/// counts these).
pub struct LinkMonitor {
    socket: Socket,
    /// For the dumps, opened with `socket`, in the same namespace.
    requests: Socket,
    known: BTreeMap<u32, String>,
    overflows: u64,
    /// Events were lost and the view is not yet read afresh.
    stale: bool,
    buf: Vec<u8>,
}

impl LinkMonitor {
    /// Subscribe to the calling thread's namespace's interface events.
    pub fn new() -> io::Result<Self> {
        let what = "subscribing to interface events (RTMGRP_LINK)";
        let socket = Socket::open(RTMGRP_LINK).map_err(|e| context(what, e))?;
        socket.grow_receive_buffer(1 << 20);
        let mut requests = Socket::open(0).map_err(|e| context(what, e))?;
        // Subscribed first, dumped second: nothing falls between the two.
        let known = dump_interfaces(&mut requests)?.into_iter().collect();
        Ok(Self {
            socket,
            requests,
            known,
            overflows: 0,
            stale: false,
            buf: vec![0; RECV_BUFFER],
        })
    }

    /// How many times events were lost and the view was read afresh.
    pub const fn overflows(&self) -> u64 {
        self.overflows
    }

    /// The interfaces as the events so far leave them: index and name.
    pub fn known(&self) -> impl Iterator<Item = (u32, &str)> {
        self.known.iter().map(|(&i, n)| (i, n.as_str()))
    }

    /// Every event queued so far, oldest first; empty if there is none. Never blocks.
    ///
    /// Events already folded into the view are always handed over: if reading fails after
    /// some, they are returned and the failure shows at the next call (a dump that failed
    /// after lost events is retried then).
    pub fn read_events(&mut self) -> io::Result<Vec<LinkEvent>> {
        let mut events = Vec::new();
        match self.read_into(&mut events) {
            Ok(()) => Ok(events),
            Err(e) if !events.is_empty() => {
                log::debug!("reading interface events stopped early: {e}");
                Ok(events)
            }
            Err(e) => Err(context("reading interface events", e)),
        }
    }

    fn read_into(&mut self, events: &mut Vec<LinkEvent>) -> io::Result<()> {
        loop {
            if self.stale {
                self.resync(events)?;
                self.stale = false;
            }
            let len = match self.socket.recv(&mut self.buf) {
                Ok(Some(len)) => len,
                Ok(None) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    log::warn!("interface events were lost; reading the interfaces afresh");
                    self.overflows += 1;
                    self.stale = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for message in Messages::new(&self.buf[..len]) {
                let Ok(message) = message else {
                    log::warn!("skipping a malformed interface event");
                    break;
                };
                if let Some(link) = LinkMessage::parse(message.payload)
                    && link.family == libc::AF_UNSPEC as u8
                {
                    apply(&mut self.known, message.ty, &link, events);
                }
            }
        }
    }

    /// After lost events: drop what is queued (older than the loss), dump, and report the
    /// difference between the dump and the view.
    fn resync(&mut self, events: &mut Vec<LinkEvent>) -> io::Result<()> {
        loop {
            match self.socket.recv(&mut self.buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) => return Err(e),
            }
        }
        let now: BTreeMap<u32, String> = dump_interfaces(&mut self.requests)?.into_iter().collect();
        for (&ifindex, name) in &self.known {
            if !now.contains_key(&ifindex) {
                events.push(LinkEvent::Removed {
                    ifindex,
                    name: name.clone(),
                });
            }
        }
        for (&ifindex, name) in &now {
            match self.known.get(&ifindex) {
                None => events.push(LinkEvent::Added {
                    ifindex,
                    name: name.clone(),
                }),
                Some(old) if old != name => events.push(LinkEvent::Renamed {
                    ifindex,
                    old_name: old.clone(),
                    name: name.clone(),
                }),
                Some(_) => {}
            }
        }
        self.known = now;
        Ok(())
    }
}

/// Fold one link message into the view, recording the event it makes.
fn apply(
    known: &mut BTreeMap<u32, String>,
    ty: u16,
    link: &LinkMessage<'_>,
    events: &mut Vec<LinkEvent>,
) {
    let ifindex = link.ifindex;
    match ty {
        RTM_NEWLINK => {
            let Some(name) = link.name().or_else(|| known.get(&ifindex).cloned()) else {
                return;
            };
            let event = match known.insert(ifindex, name.clone()) {
                None => LinkEvent::Added { ifindex, name },
                Some(old_name) if old_name != name => LinkEvent::Renamed {
                    ifindex,
                    old_name,
                    name,
                },
                Some(_) => LinkEvent::Changed { ifindex, name },
            };
            events.push(event);
        }
        RTM_DELLINK => {
            // Unknown: already reported removed by a resync.
            if let Some(old) = known.remove(&ifindex) {
                let name = link.name().unwrap_or(old);
                events.push(LinkEvent::Removed { ifindex, name });
            }
        }
        _ => {}
    }
}

impl fmt::Debug for LinkMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkMonitor")
            .field("fd", &self.socket.fd)
            .field("known", &self.known)
            .field("overflows", &self.overflows)
            .finish_non_exhaustive()
    }
}

impl AsRawFd for LinkMonitor {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.fd.as_raw_fd()
    }
}

impl AsFd for LinkMonitor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.fd.as_fd()
    }
}

// ---------------------------------------------------------------------------------------
// rtnetlink messages

/// An `RTM_*LINK` message: `struct ifinfomsg` and its attributes.
struct LinkMessage<'a> {
    family: u8,
    ifindex: u32,
    attrs: &'a [u8],
}

impl<'a> LinkMessage<'a> {
    fn parse(payload: &'a [u8]) -> Option<Self> {
        if payload.len() < IFINFOMSG_LEN {
            return None;
        }
        Some(Self {
            family: payload[0],
            ifindex: u32_at(payload, 4)?,
            attrs: &payload[IFINFOMSG_LEN..],
        })
    }

    fn name(&self) -> Option<String> {
        let (_, value) = attrs(self.attrs).find(|&(ty, _)| ty == IFLA_IFNAME)?;
        let len = value.iter().position(|&b| b == 0).unwrap_or(value.len());
        Some(String::from_utf8_lossy(&value[..len]).into_owned())
    }

    /// The nested `IFLA_XDP` attributes.
    fn xdp(&self) -> io::Result<Option<XdpAttachment>> {
        let Some((_, nested)) = attrs(self.attrs).find(|&(ty, _)| ty == IFLA_XDP) else {
            // Kernels without XDP support say nothing.
            return Ok(None);
        };
        let (mut attached, mut prog_id) = (None, None);
        let (mut driver, mut skb, mut hardware) = (None, None, None);
        for (ty, value) in attrs(nested) {
            match ty {
                IFLA_XDP_ATTACHED => attached = value.first().copied(),
                IFLA_XDP_PROG_ID => prog_id = u32_at(value, 0),
                IFLA_XDP_DRV_PROG_ID => driver = u32_at(value, 0),
                IFLA_XDP_SKB_PROG_ID => skb = u32_at(value, 0),
                IFLA_XDP_HW_PROG_ID => hardware = u32_at(value, 0),
                _ => {}
            }
        }
        let mode = match attached {
            None | Some(XDP_ATTACHED_NONE) => return Ok(None),
            Some(XDP_ATTACHED_DRV) => XdpAttachedMode::Driver,
            Some(XDP_ATTACHED_SKB) => XdpAttachedMode::Skb,
            Some(XDP_ATTACHED_HW) => XdpAttachedMode::Hardware,
            Some(XDP_ATTACHED_MULTI) => XdpAttachedMode::Multiple,
            Some(other) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown IFLA_XDP_ATTACHED value {other}"),
                ));
            }
        };
        // The kernel names each hook's program, and the single one again in
        // IFLA_XDP_PROG_ID unless there are several.
        match mode {
            XdpAttachedMode::Driver => driver = driver.or(prog_id),
            XdpAttachedMode::Skb => skb = skb.or(prog_id),
            XdpAttachedMode::Hardware => hardware = hardware.or(prog_id),
            XdpAttachedMode::Multiple => {}
        }
        let Some(prog_id) = prog_id.or(driver).or(skb).or(hardware) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("IFLA_XDP says {mode} mode but names no program"),
            ));
        };
        Ok(Some(XdpAttachment {
            prog_id,
            mode,
            driver,
            skb,
            hardware,
        }))
    }
}

/// A request: `nlmsghdr`, `ifinfomsg`, attributes. Length and sequence number are filled in
/// when it is sent.
struct Request {
    buf: Vec<u8>,
}

impl Request {
    fn new(ty: u16, flags: u16, family: u8, ifindex: u32) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it in
        buf.extend_from_slice(&[family, 0]);
        buf.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
        buf.extend_from_slice(&ifindex.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // ifi_flags
        buf.extend_from_slice(&0u32.to_ne_bytes()); // ifi_change
        Self { buf }
    }

    fn attr(&mut self, ty: u16, value: &[u8]) {
        let len = (NLA_HDRLEN + value.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    fn attr_u32(&mut self, ty: u16, value: u32) {
        self.attr(ty, &value.to_ne_bytes());
    }

    fn attr_i32(&mut self, ty: u16, value: i32) {
        self.attr(ty, &value.to_ne_bytes());
    }

    fn nest_start(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.attr(ty | NLA_F_NESTED, &[]);
        at
    }

    fn nest_end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// One message of a netlink datagram.
struct Message<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The messages of one datagram.
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    const fn new(datagram: &'a [u8]) -> Self {
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
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
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
fn status(message: &Message<'_>) -> io::Result<()> {
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

// ---------------------------------------------------------------------------------------
// The netlink socket

#[derive(Debug)]
struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// A NETLINK_ROUTE socket in the calling thread's namespace, subscribed to `groups`
    /// (non-blocking if subscribed: a monitor reads only what is queued).
    fn open(groups: u32) -> io::Result<Self> {
        let mut ty = libc::SOCK_RAW | libc::SOCK_CLOEXEC;
        if groups != 0 {
            ty |= libc::SOCK_NONBLOCK;
        }
        // SAFETY: plain socket(2); the result is checked before it is used.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, ty, libc::NETLINK_ROUTE) };
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
        for option in [NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
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
    fn grow_receive_buffer(&self, bytes: c_int) {
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

    fn send(&mut self, request: Request) -> io::Result<u32> {
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
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
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
    fn transact(
        &mut self,
        request: Request,
        on_reply: impl FnMut(u16, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.exchange(request, on_reply).map(drop)
    }

    /// Send a dump request; hand every message to `on_reply` until `NLMSG_DONE`. Returns
    /// whether the kernel marked the dump inconsistent (`NLM_F_DUMP_INTR`): interfaces
    /// changed while it was being made, and it should be asked for again.
    fn dump(
        &mut self,
        request: Request,
        on_reply: impl FnMut(u16, &[u8]) -> io::Result<()>,
    ) -> io::Result<bool> {
        self.exchange(request, on_reply)
    }

    fn exchange(
        &mut self,
        request: Request,
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

// ---------------------------------------------------------------------------------------
// bpf(2)

/// `union bpf_attr` for `BPF_*_GET_FD_BY_ID` (`id`) and `BPF_*_GET_NEXT_ID` (`id` is the
/// start, `next_id` the answer).
#[repr(C)]
#[derive(Default)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `union bpf_attr` for `BPF_LINK_DETACH`.
#[repr(C)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// The leading fields of `struct bpf_prog_info`, up to the name. The kernel fills in as
/// much as `info_len` asks for; the pointer fields stay 0 so it copies no arrays.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

/// `struct bpf_link_info`: type, id, program id, then the per-type union (8-byte aligned),
/// which for XDP links starts with the interface index.
#[repr(C)]
#[derive(Default)]
struct LinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    pad: u32,
    union: [u32; 8],
}

const _: () = assert!(size_of::<ProgInfo>() == 80);
const _: () = assert!(size_of::<LinkInfo>() == 48);

fn fd_by_id(cmd: libc::c_long, id: u32) -> io::Result<OwnedFd> {
    let mut attr = IdAttr {
        id,
        ..IdAttr::default()
    };
    // SAFETY: a get-fd-by-id attribute, no pointers.
    let fd = unsafe { bpf(cmd, &mut attr) }?;
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    fd_by_id(BPF_PROG_GET_FD_BY_ID, id)
}

fn link_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    fd_by_id(BPF_LINK_GET_FD_BY_ID, id)
}

/// `BPF_OBJ_GET_INFO_BY_FD` into `info`, a prefix of the object's info struct.
fn obj_info<I>(fd: BorrowedFd<'_>, info: &mut I) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<I>() as u32,
        info: std::ptr::from_mut(info) as u64,
    };
    // SAFETY: an info attribute pointing at `info`, whose length it gives.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }.map(drop)
}

/// When the system booted, in wall-clock time: BPF load times count from boot.
fn boot_time() -> SystemTime {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write; both clocks always exist on Linux.
        unsafe { libc::clock_gettime(clock, &raw mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    };
    let since_boot = now(libc::CLOCK_BOOTTIME);
    let since_epoch = now(libc::CLOCK_REALTIME);
    UNIX_EPOCH + since_epoch.saturating_sub(since_boot)
}

// ---------------------------------------------------------------------------------------
// Helpers

const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// `e` with `what` in front of its message, keeping its kind.
fn context(what: impl fmt::Display, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(ty: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
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

    fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((NLA_HDRLEN + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

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
        let message = Messages::new(&datagram).next().unwrap().unwrap();
        status(&message).unwrap();

        let mut nodev = (-libc::ENODEV).to_ne_bytes().to_vec();
        nodev.extend_from_slice(&[0; NLMSG_HDRLEN]);
        let datagram = message_of(&nodev);
        let e = status(&Messages::new(&datagram).next().unwrap().unwrap()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    fn message_of(payload: &[u8]) -> Vec<u8> {
        message(NLMSG_ERROR, NLM_F_CAPPED, payload)
    }

    fn link_payload(ifindex: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![0u8; IFINFOMSG_LEN];
        p[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        for a in attrs {
            p.extend_from_slice(a);
        }
        p
    }

    /// An offloaded program next to a driver one: the driver one is the attachment's.
    #[test]
    fn multiple_programs_name_the_driver_or_skb_one() {
        let mut xdp = attr(IFLA_XDP_ATTACHED, &[XDP_ATTACHED_MULTI]);
        xdp.extend(attr(IFLA_XDP_DRV_PROG_ID, &11u32.to_ne_bytes()));
        xdp.extend(attr(IFLA_XDP_HW_PROG_ID, &12u32.to_ne_bytes()));
        let payload = link_payload(
            3,
            &[
                attr(IFLA_IFNAME, b"eth0\0"),
                attr(IFLA_XDP | NLA_F_NESTED, &xdp),
            ],
        );
        let link = LinkMessage::parse(&payload).unwrap();
        assert_eq!(link.ifindex, 3);
        assert_eq!(link.name().as_deref(), Some("eth0"));
        let attachment = link.xdp().unwrap().unwrap();
        assert_eq!(attachment.prog_id, 11);
        assert_eq!(attachment.mode, XdpAttachedMode::Multiple);
        assert_eq!(
            attachment.programs().collect::<Vec<_>>(),
            [
                (XdpAttachedMode::Driver, 11),
                (XdpAttachedMode::Hardware, 12)
            ]
        );
    }

    #[test]
    fn no_program_and_unknown_modes() {
        let none = link_payload(
            2,
            &[attr(
                IFLA_XDP,
                &attr(IFLA_XDP_ATTACHED, &[XDP_ATTACHED_NONE]),
            )],
        );
        assert_eq!(LinkMessage::parse(&none).unwrap().xdp().unwrap(), None);
        let absent = link_payload(2, &[]);
        assert_eq!(LinkMessage::parse(&absent).unwrap().xdp().unwrap(), None);
        let odd = link_payload(2, &[attr(IFLA_XDP, &attr(IFLA_XDP_ATTACHED, &[9]))]);
        let e = LinkMessage::parse(&odd).unwrap().xdp().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
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

    /// The events a monitor derives from messages.
    #[test]
    fn events_follow_the_view() {
        let mut known = BTreeMap::from([(1, "lo".to_string())]);
        let mut events = Vec::new();
        let msg =
            |ifindex, name: &str| link_payload(ifindex, &[attr(IFLA_IFNAME, name.as_bytes())]);
        for (ty, payload) in [
            (RTM_NEWLINK, msg(5, "a")),
            (RTM_NEWLINK, msg(5, "a")),
            (RTM_NEWLINK, msg(5, "b")),
            (RTM_DELLINK, msg(5, "b")),
            (RTM_DELLINK, msg(5, "b")),
        ] {
            apply(
                &mut known,
                ty,
                &LinkMessage::parse(&payload).unwrap(),
                &mut events,
            );
        }
        assert_eq!(
            events,
            [
                LinkEvent::Added {
                    ifindex: 5,
                    name: "a".into()
                },
                LinkEvent::Changed {
                    ifindex: 5,
                    name: "a".into()
                },
                LinkEvent::Renamed {
                    ifindex: 5,
                    old_name: "a".into(),
                    name: "b".into()
                },
                LinkEvent::Removed {
                    ifindex: 5,
                    name: "b".into()
                },
            ]
        );
        assert_eq!(known, BTreeMap::from([(1, "lo".to_string())]));
    }
}
