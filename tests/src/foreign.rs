//! A "foreign" XDP program: one msfilter did not load, for the tests of interface
//! ownership.
//!
//! [`ForeignXdp::attach`] loads a two-instruction program (`r0 = XDP_PASS; exit`) under a
//! name the caller chooses, through a raw `BPF_PROG_LOAD`, and attaches it to an interface
//! of the calling thread's network namespace the way another tool would: through a
//! bpf_link (`BPF_LINK_CREATE`, as libxdp and aya do) or through netlink (`RTM_SETLINK`
//! with `IFLA_XDP_FD`, as `ip link set dev X xdp` does), in driver or skb mode. Dropping it
//! detaches: the link by closing its descriptor, the netlink attachment by `RTM_SETLINK`
//! with `IFLA_XDP_FD = -1`, on the condition that the program there is still this one.
//!
//! Loading the program and creating the bpf_link are this module's own `bpf(2)` calls, with
//! the commands, attributes and flags of aya's generated kernel bindings; the netlink
//! attachment and its removal use msfilter's [`RouteSocket`], the same request msfilter
//! sends to take over or release a netlink-attached program.

use std::{
    ffi::c_int,
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
};

use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_prog_type};
use msfilter::{
    datapath::{AttachMode, sys::bpf},
    iface::xdp::{RouteSocket, XdpAttachedMode},
};

/// `r0 = 2 (XDP_PASS); exit`, as `struct bpf_insn`s: opcode, registers, offset, immediate.
const PROGRAM: [u64; 2] = [
    0xb7 | (2 << 32), // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm 2
    0x95,             // BPF_JMP | BPF_EXIT
];

/// How the foreign program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A bpf_link: only detaching the link (or closing its last descriptor) removes it.
    Link,
    /// Netlink: stays until someone attaches over it or removes it.
    Netlink,
}

/// A foreign XDP program attached to one interface; detached on drop.
#[derive(Debug)]
pub struct ForeignXdp {
    /// The program's kernel id.
    pub prog_id: u32,
    /// The link's kernel id (`Via::Link` only).
    pub link_id: Option<u32>,
    pub ifindex: u32,
    pub mode: AttachMode,
    pub via: Via,
    program: OwnedFd,
    attachment: Attached,
}

#[derive(Debug)]
enum Attached {
    /// Held only to be closed on drop.
    Link(#[expect(dead_code, reason = "held for its drop")] OwnedFd),
    /// A route socket opened in the interface's namespace, so the drop can use it from any
    /// thread.
    Netlink(RouteSocket),
}

const fn xdp_mode(mode: AttachMode) -> XdpAttachedMode {
    match mode {
        AttachMode::Driver => XdpAttachedMode::Driver,
        AttachMode::Skb => XdpAttachedMode::Skb,
    }
}

impl ForeignXdp {
    /// Load a pass-everything XDP program named `name` (at most 15 characters: letters,
    /// digits, `_`, `.`) and attach it to `ifindex` in the calling thread's namespace.
    pub fn attach(name: &str, ifindex: u32, via: Via, mode: AttachMode) -> io::Result<Self> {
        let program = load(name)?;
        let prog_id = program_id(&program)?;
        let flags = xdp_mode(mode).flag().expect("one mode");
        let (attachment, link_id) = match via {
            Via::Link => {
                let link = link_create(&program, ifindex, flags)?;
                let link_id = link_id(&link)?;
                (Attached::Link(link), Some(link_id))
            }
            Via::Netlink => {
                let mut socket = RouteSocket::open()?;
                socket
                    .set_xdp(ifindex, Some(program.as_fd()), xdp_mode(mode), None)
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("RTM_SETLINK attaching {name} to interface {ifindex}: {e}"),
                        )
                    })?;
                (Attached::Netlink(socket), None)
            }
        };
        Ok(Self {
            prog_id,
            link_id,
            ifindex,
            mode,
            via,
            program,
            attachment,
        })
    }
}

impl Drop for ForeignXdp {
    fn drop(&mut self) {
        match &mut self.attachment {
            // Closing the last descriptor of an unpinned link detaches it (if nobody did).
            Attached::Link(_) => {}
            Attached::Netlink(socket) => {
                // Fails harmlessly if the program was removed already (or replaced: then
                // the replacement stays) or the interface is gone.
                let _ = socket.set_xdp(
                    self.ifindex,
                    None,
                    xdp_mode(self.mode),
                    Some(self.program.as_fd()),
                );
            }
        }
    }
}

/// `union bpf_attr`, all zeroes (what every command expects of the members it ignores).
fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a union of plain-data structures; all zeroes is valid for each.
    unsafe { std::mem::zeroed() }
}

fn bpf_call(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<libc::c_long> {
    // SAFETY: every caller fills the members `cmd` reads, with pointers that live for the
    // call.
    unsafe { bpf(cmd as libc::c_long, attr) }
}

/// A descriptor the kernel just returned.
fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: a new descriptor from the kernel; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as c_int) }
}

fn load(name: &str) -> io::Result<OwnedFd> {
    if name.len() > 15
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a BPF object name (15 letters, digits, _ or .)"),
        ));
    }
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    prog_name[..name.len()].copy_from_slice(name.as_bytes());
    let mut attr = zeroed_attr();
    // SAFETY: writing plain-data members of the program-load part of the union.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = bpf_prog_type::BPF_PROG_TYPE_XDP as u32;
    load.insn_cnt = PROGRAM.len() as u32;
    load.insns = PROGRAM.as_ptr() as u64;
    load.license = license.as_ptr() as u64;
    for (d, s) in load.prog_name.iter_mut().zip(prog_name) {
        *d = s as libc::c_char;
    }
    // A program-load attribute pointing at `PROGRAM` and the license, both alive for the
    // call.
    bpf_call(bpf_cmd::BPF_PROG_LOAD, &mut attr)
        .map(owned)
        .map_err(|e| io::Error::new(e.kind(), format!("BPF_PROG_LOAD of {name}: {e}")))
}

/// The kernel id of a program or link: the second `u32` of both info structs.
fn object_id(fd: &OwnedFd, what: &str) -> io::Result<u32> {
    let mut info = [0u32; 2];
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = size_of::<[u32; 2]>() as u32;
    attr.info.info = info.as_mut_ptr() as u64;
    // An info attribute pointing at `info`, whose length it gives.
    bpf_call(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)
        .map_err(|e| io::Error::new(e.kind(), format!("BPF_OBJ_GET_INFO_BY_FD ({what}): {e}")))?;
    Ok(info[1])
}

fn program_id(program: &OwnedFd) -> io::Result<u32> {
    object_id(program, "program")
}

fn link_id(link: &OwnedFd) -> io::Result<u32> {
    object_id(link, "link")
}

fn link_create(program: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    attr.link_create.__bindgen_anon_1.prog_fd = program.as_raw_fd() as u32;
    attr.link_create.__bindgen_anon_2.target_ifindex = ifindex;
    attr.link_create.attach_type = bpf_attach_type::BPF_XDP as u32;
    attr.link_create.flags = flags;
    // A link-create attribute with a live program descriptor, no pointers.
    bpf_call(bpf_cmd::BPF_LINK_CREATE, &mut attr)
        .map(owned)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("BPF_LINK_CREATE (XDP) on interface {ifindex}: {e}"),
            )
        })
}
