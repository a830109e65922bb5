//! The few `bpf(2)` map commands aya 0.14 does not offer: batched update and delete, plus
//! plain element operations on raw byte buffers (per-CPU values are `cpus × round8(size)`
//! bytes) and the kernel's memory figure for a map.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, BorrowedFd},
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

pub(crate) const BPF_ANY: u64 = 0;
pub(crate) const BPF_NOEXIST: u64 = 1;
pub(crate) const BPF_EXIST: u64 = 2;

/// `union bpf_attr` for the element commands.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

/// `union bpf_attr` for the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `bpf(cmd, attr, sizeof attr)`: the non-negative result (a file descriptor for the
/// commands that return one).
///
/// # Safety
///
/// `attr` must be laid out as the prefix of `union bpf_attr` that `cmd` reads, and every
/// pointer in it valid for the length the command uses.
pub unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: the caller vouches for `attr`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<A>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// [`bpf`] for this module's element and batch commands, whose attributes are built here
/// from slices of the right sizes.
fn map_command<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<()> {
    // SAFETY: every caller below passes an ElemAttr or BatchAttr whose pointers come from
    // live slices of the sizes the map declares.
    unsafe { bpf(cmd, attr) }.map(drop)
}

fn raw(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd() as u32
}

/// Look up `key`; `value` must hold the map's value (all CPUs' values for per-CPU maps).
/// Returns `Ok(false)` when the key is absent.
pub(crate) fn lookup(fd: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut attr = ElemAttr {
        map_fd: raw(fd),
        key: key.as_ptr() as u64,
        value_or_next_key: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    match map_command(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

pub(crate) fn update(fd: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: raw(fd),
        key: key.as_ptr() as u64,
        value_or_next_key: value.as_ptr() as u64,
        flags,
        ..Default::default()
    };
    map_command(BPF_MAP_UPDATE_ELEM, &mut attr)
}

/// Delete `key`; `Ok(false)` when it was absent.
pub(crate) fn delete(fd: BorrowedFd<'_>, key: &[u8]) -> io::Result<bool> {
    let mut attr = ElemAttr {
        map_fd: raw(fd),
        key: key.as_ptr() as u64,
        ..Default::default()
    };
    match map_command(BPF_MAP_DELETE_ELEM, &mut attr) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The key after `key` (the first key when `key` is `None`), or `None` at the end.
pub(crate) fn next_key(
    fd: BorrowedFd<'_>,
    key: Option<&[u8]>,
    next: &mut [u8],
) -> io::Result<bool> {
    let mut attr = ElemAttr {
        map_fd: raw(fd),
        key: key.map_or(0, |k| k.as_ptr() as u64),
        value_or_next_key: next.as_mut_ptr() as u64,
        ..Default::default()
    };
    match map_command(BPF_MAP_GET_NEXT_KEY, &mut attr) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A batch command that stopped early: how many elements it had processed, and why.
#[derive(Debug)]
pub(crate) struct BatchError {
    pub(crate) done: usize,
    pub(crate) error: io::Error,
}

/// Update `count` elements at once. `keys` and `values` are packed arrays.
pub(crate) fn update_batch(
    fd: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: usize,
    elem_flags: u64,
) -> Result<(), BatchError> {
    if count == 0 {
        return Ok(());
    }
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: count as u32,
        map_fd: raw(fd),
        elem_flags,
        ..Default::default()
    };
    match map_command(BPF_MAP_UPDATE_BATCH, &mut attr) {
        Ok(()) => Ok(()),
        Err(error) => Err(BatchError {
            done: attr.count as usize,
            error,
        }),
    }
}

/// Delete `count` elements at once. `keys` is a packed array.
pub(crate) fn delete_batch(
    fd: BorrowedFd<'_>,
    keys: &[u8],
    count: usize,
) -> Result<(), BatchError> {
    if count == 0 {
        return Ok(());
    }
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        count: count as u32,
        map_fd: raw(fd),
        ..Default::default()
    };
    match map_command(BPF_MAP_DELETE_BATCH, &mut attr) {
        Ok(()) => Ok(()),
        Err(error) => Err(BatchError {
            done: attr.count as usize,
            error,
        }),
    }
}

/// The kernel's own figure for the memory a map uses (`memlock:` in its fdinfo).
pub fn map_memlock(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no memlock line in the map's fdinfo"))
}
