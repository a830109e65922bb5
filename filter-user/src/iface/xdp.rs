//! Who holds an interface's XDP hook: the attached program and its mode (`RTM_GETLINK`,
//! the nested `IFLA_XDP` attributes), what that program is (aya's program info), the
//! bpf_link it is attached through, attaching or removing a program through netlink
//! (`RTM_SETLINK`), and removing whatever is attached.
//!
//! Interface indexes are those of the calling thread's network namespace: each request opens
//! its netlink socket on the calling thread, and a netlink socket stays in the namespace it
//! was opened in. BPF object ids (programs, links) are global.
//!
//! Errors are `io::Error`s whose message says what failed ("RTM_GETLINK for interface 7:
//! ..."), with the kernel's extended acknowledgement appended when it sent one. A missing
//! interface is `ErrorKind::NotFound`, as is a missing program.

use std::{
    fmt, io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::programs::loaded_programs;
use aya_obj::generated::{
    self as uapi, XDP_FLAGS_DRV_MODE, XDP_FLAGS_HW_MODE, XDP_FLAGS_REPLACE, XDP_FLAGS_SKB_MODE,
    bpf_attr, bpf_cmd, bpf_link_info, bpf_link_type, bpf_prog_type,
};

use super::netlink::{
    LinkMessage, NLM_F_ACK, NetlinkRequest, Socket, attrs, context, get_link, u32_at,
};
use crate::datapath::sys::bpf;

/// `bpf_prog_info.type` of XDP programs (`BPF_PROG_TYPE_XDP`).
pub const BPF_PROG_TYPE_XDP: u32 = bpf_prog_type::BPF_PROG_TYPE_XDP as u32;

// The nested `IFLA_XDP` attributes, as netlink attribute types.
const IFLA_XDP_FD: u16 = uapi::IFLA_XDP_FD as u16;
const IFLA_XDP_ATTACHED: u16 = uapi::IFLA_XDP_ATTACHED as u16;
const IFLA_XDP_FLAGS: u16 = uapi::IFLA_XDP_FLAGS as u16;
const IFLA_XDP_PROG_ID: u16 = uapi::IFLA_XDP_PROG_ID as u16;
const IFLA_XDP_DRV_PROG_ID: u16 = uapi::IFLA_XDP_DRV_PROG_ID as u16;
const IFLA_XDP_SKB_PROG_ID: u16 = uapi::IFLA_XDP_SKB_PROG_ID as u16;
const IFLA_XDP_HW_PROG_ID: u16 = uapi::IFLA_XDP_HW_PROG_ID as u16;
const IFLA_XDP_EXPECTED_FD: u16 = uapi::IFLA_XDP_EXPECTED_FD as u16;

// `IFLA_XDP_ATTACHED` values (`<linux/if_link.h>`), which neither libc nor aya's bindings
// define.
const XDP_ATTACHED_NONE: u8 = 0;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const XDP_ATTACHED_MULTI: u8 = 4;

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
    pub const fn flag(self) -> Option<u32> {
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
    get_link(ifindex, xdp_of)
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

/// The id, name, tag, load time and type of BPF program `prog_id` (from aya's
/// [`loaded_programs`]).
///
/// # Errors
///
/// `NotFound` if there is no such program.
pub fn program_summary(prog_id: u32) -> io::Result<ProgramSummary> {
    let info = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("program {prog_id}: no such BPF program is loaded"),
            )
        })?;
    Ok(ProgramSummary {
        id: info.id(),
        name: info.name_as_str().unwrap_or_default().to_string(),
        tag: format!("{:016x}", info.tag()),
        loaded_at: info.loaded_at().unwrap_or(UNIX_EPOCH),
        prog_type: info.program_type() as u32,
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
        let mut request =
            NetlinkRequest::new(libc::RTM_SETLINK, NLM_F_ACK, libc::AF_UNSPEC as u8, ifindex);
        let nest = request.nest_start(libc::IFLA_XDP);
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
    let mut attr = zeroed_attr();
    attr.link_detach.link_fd = fd.as_raw_fd() as u32;
    // SAFETY: a link-detach attribute holding a live link descriptor.
    unsafe { bpf(bpf_cmd::BPF_LINK_DETACH as libc::c_long, &mut attr) }.map(drop)
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
        let mut attr = zeroed_attr();
        attr.__bindgen_anon_6.__bindgen_anon_1.start_id = id;
        // SAFETY: an id-iteration attribute, no pointers.
        match unsafe { bpf(bpf_cmd::BPF_LINK_GET_NEXT_ID as libc::c_long, &mut attr) } {
            // SAFETY: the kernel answered in the member it was asked in.
            Ok(_) => id = unsafe { attr.__bindgen_anon_6.next_id },
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(links),
            Err(e) => return Err(context("BPF_LINK_GET_NEXT_ID", e)),
        }
        let fd = match link_fd_by_id(id) {
            Ok(fd) => fd,
            // Released between the two calls.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(context(format!("BPF_LINK_GET_FD_BY_ID for link {id}"), e)),
        };
        // SAFETY: bpf_link_info is plain data (integers and a union of integers).
        let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
        link_info(fd.as_fd(), &mut info)
            .map_err(|e| context(format!("BPF_OBJ_GET_INFO_BY_FD for link {id}"), e))?;
        if info.type_ == bpf_link_type::BPF_LINK_TYPE_XDP as u32 {
            links.push(XdpLink {
                id: info.id,
                prog_id: info.prog_id,
                // SAFETY: an XDP link's info holds the xdp member of the union.
                ifindex: unsafe { info.__bindgen_anon_1.xdp.ifindex },
            });
        }
    }
}

/// `union bpf_attr`, all zeroes (what every command expects of the members it ignores).
fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a union of plain-data structures; all zeroes is valid for each.
    unsafe { std::mem::zeroed() }
}

fn fd_by_id(cmd: bpf_cmd, id: u32) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_6.__bindgen_anon_1.prog_id = id;
    // SAFETY: a get-fd-by-id attribute (program and link ids share the member), no pointers.
    let fd = unsafe { bpf(cmd as libc::c_long, &mut attr) }?;
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    fd_by_id(bpf_cmd::BPF_PROG_GET_FD_BY_ID, id)
}

fn link_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    fd_by_id(bpf_cmd::BPF_LINK_GET_FD_BY_ID, id)
}

/// `BPF_OBJ_GET_INFO_BY_FD` of a link into `info`.
fn link_info(fd: BorrowedFd<'_>, info: &mut bpf_link_info) -> io::Result<()> {
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = size_of::<bpf_link_info>() as u32;
    attr.info.info = std::ptr::from_mut(info) as u64;
    // SAFETY: an info attribute pointing at `info`, whose length it gives.
    unsafe { bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long, &mut attr) }.map(drop)
}

/// The nested `IFLA_XDP` attributes of a link message.
fn xdp_of(link: &LinkMessage<'_>) -> io::Result<Option<XdpAttachment>> {
    let Some((_, nested)) = link.attrs().find(|&(ty, _)| ty == libc::IFLA_XDP) else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iface::netlink::{NLA_F_NESTED, build::*};

    /// An offloaded program next to a driver one: the driver one is the attachment's.
    #[test]
    fn multiple_programs_name_the_driver_or_skb_one() {
        let mut xdp = attr(IFLA_XDP_ATTACHED, &[XDP_ATTACHED_MULTI]);
        xdp.extend(attr(IFLA_XDP_DRV_PROG_ID, &11u32.to_ne_bytes()));
        xdp.extend(attr(IFLA_XDP_HW_PROG_ID, &12u32.to_ne_bytes()));
        let payload = link_payload(
            3,
            &[
                attr(libc::IFLA_IFNAME, b"eth0\0"),
                attr(libc::IFLA_XDP | NLA_F_NESTED, &xdp),
            ],
        );
        let link = LinkMessage::parse(&payload).unwrap();
        assert_eq!(link.ifindex, 3);
        assert_eq!(link.name().as_deref(), Some("eth0"));
        let attachment = xdp_of(&link).unwrap().unwrap();
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
        let attached = |value: u8| attr(IFLA_XDP_ATTACHED, &[value]);
        let none = link_payload(2, &[attr(libc::IFLA_XDP, &attached(XDP_ATTACHED_NONE))]);
        assert_eq!(xdp_of(&LinkMessage::parse(&none).unwrap()).unwrap(), None);
        let absent = link_payload(2, &[]);
        assert_eq!(xdp_of(&LinkMessage::parse(&absent).unwrap()).unwrap(), None);
        let odd = link_payload(2, &[attr(libc::IFLA_XDP, &attached(9))]);
        let e = xdp_of(&LinkMessage::parse(&odd).unwrap()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn bindings_have_the_layout_this_module_relies_on() {
        // The per-type union (whose XDP member starts with the interface index) follows
        // type, id and program id, 8-byte aligned.
        assert_eq!(std::mem::offset_of!(bpf_link_info, __bindgen_anon_1), 16);
        assert_eq!(XdpAttachedMode::Skb.flag(), Some(1 << 1));
        assert_eq!(XdpAttachedMode::Driver.flag(), Some(1 << 2));
    }
}
