//! The few `bpf(2)` map commands aya 0.14 does not offer: batched update and delete, plus
//! plain element operations on raw byte buffers (per-CPU values are `cpus × round8(size)`
//! bytes) and the kernel's memory figure for a map.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, BorrowedFd},
    thread,
    time::Duration,
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
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

/// How long an insert waits out `ENOMEM` before reporting it: 1 + 2 + 4 + … + 256 ms.
///
/// Maps made with `BPF_F_NO_PREALLOC` allocate each new element inside the system call
/// without sleeping; per-CPU values come from pages the per-CPU allocator has already
/// populated, and a background worker populates more. A burst of inserts from userspace can
/// outrun that worker and get `ENOMEM` while memory is free (seen here filling 65,536 groups
/// in a loop: one run in four). Waiting lets the worker catch up; a real shortage still
/// fails, half a second later.
const ENOMEM_WAITS: [Duration; 9] = [
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(4),
    Duration::from_millis(8),
    Duration::from_millis(16),
    Duration::from_millis(32),
    Duration::from_millis(64),
    Duration::from_millis(128),
    Duration::from_millis(256),
];

fn is_enomem(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOMEM)
}

fn raw(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd() as u32
}

/// Look up `key`; `value` must hold the map's value (all CPUs' values for per-CPU maps).
/// Returns `Ok(false)` when the key is absent.
pub(crate) fn lookup(fd: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    read_elem(BPF_MAP_LOOKUP_ELEM, fd, key, value)
}

/// Read an element's value and delete it in one step (hash maps, Linux 5.14+): nothing the
/// program adds in between is lost. `Ok(false)`: no such key.
pub(crate) fn lookup_and_delete(
    fd: BorrowedFd<'_>,
    key: &[u8],
    value: &mut [u8],
) -> io::Result<bool> {
    read_elem(BPF_MAP_LOOKUP_AND_DELETE_ELEM, fd, key, value)
}

/// An element command that fills `value`; `Ok(false)` for `ENOENT`.
fn read_elem(
    cmd: libc::c_long,
    fd: BorrowedFd<'_>,
    key: &[u8],
    value: &mut [u8],
) -> io::Result<bool> {
    let mut attr = ElemAttr {
        map_fd: raw(fd),
        key: key.as_ptr() as u64,
        value_or_next_key: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    match map_command(cmd, &mut attr) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `ENOMEM` is waited out as [`ENOMEM_WAITS`] says.
pub(crate) fn update(fd: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
    let mut waits = ENOMEM_WAITS.iter();
    loop {
        let mut attr = ElemAttr {
            map_fd: raw(fd),
            key: key.as_ptr() as u64,
            value_or_next_key: value.as_ptr() as u64,
            flags,
            ..Default::default()
        };
        match map_command(BPF_MAP_UPDATE_ELEM, &mut attr) {
            Err(e) if is_enomem(&e) => match waits.next() {
                Some(wait) => thread::sleep(*wait),
                None => return Err(e),
            },
            result => return result,
        }
    }
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

/// Every key of a map, in the kernel's order.
pub(crate) fn keys<K: bytemuck::Pod + Default>(fd: BorrowedFd<'_>) -> io::Result<Vec<K>> {
    let mut keys = Vec::new();
    let mut key = K::default();
    let mut prev: Option<K> = None;
    while next_key(
        fd,
        prev.as_ref().map(bytemuck::bytes_of),
        bytemuck::bytes_of_mut(&mut key),
    )? {
        keys.push(key);
        prev = Some(key);
    }
    Ok(keys)
}

/// A batch command that stopped early: how many elements it had processed, and why.
#[derive(Debug)]
pub(crate) struct BatchError {
    pub(crate) done: usize,
    pub(crate) error: io::Error,
}

/// Update `count` elements at once. `keys` and `values` are packed arrays of `count`
/// elements each. `ENOMEM` is waited out as [`ENOMEM_WAITS`] says, resuming after the
/// elements the kernel had already written; each stall without progress gets the full wait.
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
    let (key_size, value_size) = (keys.len() / count, values.len() / count);
    let mut done = 0;
    let mut waits = ENOMEM_WAITS.iter();
    loop {
        let mut attr = BatchAttr {
            keys: keys[done * key_size..].as_ptr() as u64,
            values: values[done * value_size..].as_ptr() as u64,
            count: (count - done) as u32,
            map_fd: raw(fd),
            elem_flags,
            ..Default::default()
        };
        match map_command(BPF_MAP_UPDATE_BATCH, &mut attr) {
            Ok(()) => return Ok(()),
            Err(error) => {
                if attr.count > 0 {
                    // Progress: the next stall gets the whole wait again.
                    done += attr.count as usize;
                    waits = ENOMEM_WAITS.iter();
                }
                match waits.next() {
                    Some(wait) if is_enomem(&error) => thread::sleep(*wait),
                    _ => return Err(BatchError { done, error }),
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd as _, FromRawFd as _, OwnedFd};

    use super::*;

    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
    const BPF_F_NO_PREALLOC: u32 = 1;

    /// `union bpf_attr` for `BPF_MAP_CREATE`, up to `map_flags`.
    #[repr(C)]
    struct CreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }

    /// A per-CPU hash made like `MSF_GROUPS` (`BPF_F_NO_PREALLOC`), with `value_size`-byte
    /// values. Needs `CAP_BPF`, as every test of this project that touches the kernel.
    fn no_prealloc_percpu_hash(value_size: u32, max_entries: u32) -> OwnedFd {
        let mut attr = CreateAttr {
            map_type: BPF_MAP_TYPE_PERCPU_HASH,
            key_size: 4,
            value_size,
            max_entries,
            map_flags: BPF_F_NO_PREALLOC,
        };
        // SAFETY: `attr` is the prefix of `union bpf_attr` that BPF_MAP_CREATE reads.
        let fd = unsafe { bpf(BPF_MAP_CREATE, &mut attr) }.expect("BPF_MAP_CREATE (run as root)");
        // SAFETY: BPF_MAP_CREATE returned a new descriptor that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    }

    fn key_count(map: BorrowedFd<'_>) -> usize {
        let (mut next, mut at, mut count) = ([0u8; 4], None::<[u8; 4]>, 0);
        while next_key(map, at.as_ref().map(<[u8; 4]>::as_slice), &mut next).unwrap() {
            count += 1;
            at = Some(next);
        }
        count
    }

    /// Inserting back to back into a no-prealloc per-CPU hash outruns the kernel's per-CPU
    /// allocator: with 4 KiB values a plain loop of `BPF_MAP_UPDATE_ELEM` meets `ENOMEM`
    /// hundreds of times in 16,384 keys (kernel 6.18, 2 CPUs, 10 runs of 10). `update` and
    /// `update_batch` wait it out, so every key goes in.
    #[test]
    fn inserts_outrunning_the_per_cpu_allocator_all_land() {
        const VALUE: usize = 4096;
        let cpus = aya::util::nr_cpus().unwrap();
        // 128 MiB of values per map, whatever the CPU count.
        let keys = u32::try_from((128 << 20) / (VALUE * cpus)).unwrap();
        let value = vec![0u8; VALUE * cpus];
        let map = |n| no_prealloc_percpu_hash(VALUE as u32, n);

        // The bare burst meets ENOMEM, or this test proves nothing.
        let bare = map(keys);
        let mut refused = None;
        for key in 0..keys {
            let key_bytes = key.to_ne_bytes();
            let mut attr = ElemAttr {
                map_fd: raw(bare.as_fd()),
                key: key_bytes.as_ptr() as u64,
                value_or_next_key: value.as_ptr() as u64,
                flags: BPF_NOEXIST,
                ..Default::default()
            };
            if let Err(e) = map_command(BPF_MAP_UPDATE_ELEM, &mut attr) {
                assert!(is_enomem(&e), "key {key}: {e}");
                refused = Some(key);
                break;
            }
        }
        assert!(
            refused.is_some(),
            "a bare burst of {keys} inserts never met ENOMEM"
        );
        drop(bare);

        // One by one through `update`.
        let single = map(keys);
        for key in 0..keys {
            update(single.as_fd(), &key.to_ne_bytes(), &value, BPF_NOEXIST)
                .unwrap_or_else(|e| panic!("key {key}: {e}"));
        }
        assert_eq!(key_count(single.as_fd()), keys as usize);
        drop(single);

        // In one batch through `update_batch`.
        let batched = map(keys);
        let packed: Vec<u8> = (0..keys).flat_map(u32::to_ne_bytes).collect();
        let values = value.repeat(keys as usize);
        update_batch(batched.as_fd(), &packed, &values, keys as usize, BPF_ANY)
            .unwrap_or_else(|e| panic!("after {} keys: {}", e.done, e.error));
        assert_eq!(key_count(batched.as_fd()), keys as usize);
    }
}
