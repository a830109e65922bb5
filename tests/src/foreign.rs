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
//! Loading the program and creating the bpf_link are this module's own `bpf(2)` calls; the
//! netlink attachment and its removal use msfilter's [`RouteSocket`], the same request
//! msfilter sends to take over or release a netlink-attached program.

use std::{
    ffi::c_int,
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
};

use msfilter::datapath::{
    AttachMode,
    netlink::{RouteSocket, XdpAttachedMode},
    sys::bpf,
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

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
        let flags = match mode {
            AttachMode::Driver => XDP_FLAGS_DRV_MODE,
            AttachMode::Skb => XDP_FLAGS_SKB_MODE,
        };
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

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` (the XDP part: no extra fields).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
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
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: PROGRAM.len() as u32,
        insns: PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        ..ProgLoadAttr::default()
    };
    // SAFETY: a program-load attribute pointing at `PROGRAM`, the license and the name,
    // all alive for the call.
    unsafe { bpf(BPF_PROG_LOAD, &mut attr) }
        .map(owned)
        .map_err(|e| io::Error::new(e.kind(), format!("BPF_PROG_LOAD of {name}: {e}")))
}

/// The kernel id of a program or link: the second `u32` of both info structs.
fn object_id(fd: &OwnedFd, what: &str) -> io::Result<u32> {
    let mut info = [0u32; 2];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<[u32; 2]>() as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: an info attribute pointing at `info`, whose length it gives.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }
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
    let mut attr = LinkCreateAttr {
        prog_fd: program.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
    };
    // SAFETY: a link-create attribute with live program descriptor, no pointers.
    unsafe { bpf(BPF_LINK_CREATE, &mut attr) }
        .map(owned)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("BPF_LINK_CREATE (XDP) on interface {ifindex}: {e}"),
            )
        })
}
