//! What the follower reads from `/proc`: the kernel's membership counts per interface and
//! group (`/proc/net/igmp`, `/proc/net/igmp6`, parsed by [`crate::iface::groups`]), the
//! processes and their socket descriptors, process names, and which system call a thread is
//! in.
//!
//! `/proc/net/igmp` and `igmp6` list every group of every interface with its `Users` count
//! (memberships: one per socket that joined, plus the kernel's own); unlike
//! `/proc/net/mcfilter*` their listing is complete (see `docs/kernel.md`). The follower
//! never reads the `mcfilter` files.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, Read as _, Seek as _, SeekFrom},
    path::Path,
};

use msfilter_common::GroupKey;

use crate::{iface::groups, sockopt::addr_of};

/// `/proc/net/igmp` and `/proc/net/igmp6` of one network namespace, opened once (a
/// `/proc/net` file shows the namespace of the thread that opened it, whoever reads it
/// later) and read again from the start each time, into a buffer kept from the last read
/// (so that the kernel can fill it in one or two reads).
#[derive(Debug)]
pub struct MembershipCounts {
    igmp: File,
    igmp6: Option<File>,
    text: String,
}

impl MembershipCounts {
    /// Open both files for the calling thread's network namespace. `igmp6` is absent when
    /// IPv6 is disabled.
    pub fn open() -> io::Result<Self> {
        let igmp = File::open("/proc/thread-self/net/igmp")?;
        let igmp6 = match File::open("/proc/thread-self/net/igmp6") {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Self {
            igmp,
            igmp6,
            text: String::new(),
        })
    }

    /// The kernel's membership count of every (interface, group), both families.
    pub fn read(&mut self) -> io::Result<BTreeMap<GroupKey, u32>> {
        self.read_some(|_| true)
    }

    /// The kernel's membership counts of the (interface, group)s `wanted` says yes to (the
    /// listings are read whole; only those lines are parsed further).
    pub fn read_some(
        &mut self,
        mut wanted: impl FnMut(&GroupKey) -> bool,
    ) -> io::Result<BTreeMap<GroupKey, u32>> {
        let mut counts = BTreeMap::new();
        let mut keep = |line: groups::GroupLine<'_>| -> io::Result<()> {
            let key = GroupKey::new(line.ifindex, addr_of(line.group));
            if wanted(&key) {
                counts.insert(key, line.users()?);
            }
            Ok(())
        };
        read_from_start(&mut self.igmp, &mut self.text)?;
        groups::walk_igmp(&self.text, |_, _| {}, &mut keep)?;
        if let Some(f) = &mut self.igmp6 {
            read_from_start(f, &mut self.text)?;
            groups::walk_igmp6(&self.text, &mut keep)?;
        }
        Ok(counts)
    }
}

fn read_from_start(f: &mut File, text: &mut String) -> io::Result<()> {
    f.seek(SeekFrom::Start(0))?;
    text.clear();
    f.read_to_string(text)?;
    Ok(())
}

/// Every process id in `/proc`.
pub fn processes() -> io::Result<Vec<u32>> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// The socket descriptors of process `pid`: `(fd, socket inode)`. A process that is gone
/// has none.
pub fn socket_fds(pid: u32) -> Vec<(i32, u64)> {
    let dir = format!("/proc/{pid}/fd");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let inode = socket_inode(&target)?;
            Some((fd, inode))
        })
        .collect()
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The command name of process `pid` (`/proc/<pid>/comm`), empty if it is gone.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// Where a thread is, from `/proc/<tgid>/task/<tid>/syscall`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ThreadState {
    /// On a CPU right now: the kernel cannot say where.
    Running,
    /// Blocked inside system call `nr` with these arguments.
    InSyscall { nr: i64, args: [u64; 6] },
    /// Blocked, but not in a system call.
    NotInSyscall,
    /// The thread no longer exists.
    Gone,
}

/// Parse the text of `/proc/<pid>/task/<tid>/syscall`.
pub fn parse_thread_state(text: &str) -> Option<ThreadState> {
    let text = text.trim();
    if text == "running" {
        return Some(ThreadState::Running);
    }
    let mut fields = text.split_whitespace();
    let nr: i64 = fields.next()?.parse().ok()?;
    if nr < 0 {
        return Some(ThreadState::NotInSyscall);
    }
    let mut args = [0u64; 6];
    for a in &mut args {
        *a = u64::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some(ThreadState::InSyscall { nr, args })
}

/// Where thread `tid` of process `tgid` is now.
pub fn thread_state(tgid: u32, tid: u32) -> io::Result<ThreadState> {
    match std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/syscall")) {
        Ok(text) => parse_thread_state(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected /proc/{tgid}/task/{tid}/syscall: {text:?}"),
            )
        }),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
            Ok(ThreadState::Gone)
        }
        Err(e) => Err(e),
    }
}

/// The cgroup v2 mount point, from `/proc/self/mountinfo` (the first `cgroup2` file system).
pub fn cgroup2_mount() -> io::Result<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    parse_cgroup2_mount(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no cgroup2 file system is mounted (see /proc/self/mountinfo)",
        )
    })
}

/// The mount point of the first `cgroup2` line of a `mountinfo` text.
pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<std::path::PathBuf> {
    mountinfo.lines().find_map(|line| {
        // id parent major:minor root mount-point options [optional...] - fstype source ...
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(unescape_octal)
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> std::path::PathBuf {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStringExt as _;
    std::path::PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_thread_states() {
        assert_eq!(parse_thread_state("running\n"), Some(ThreadState::Running));
        assert_eq!(
            parse_thread_state("-1 0x7ffd1234 0x7f00aa\n"),
            Some(ThreadState::NotInSyscall)
        );
        assert_eq!(
            parse_thread_state("54 0x3 0x0 0x23 0x7ffc5e0 0xc 0x0 0x7ffc5d8 0x7f1e2\n"),
            Some(ThreadState::InSyscall {
                nr: 54,
                args: [3, 0, 0x23, 0x7ffc5e0, 0xc, 0]
            })
        );
        assert_eq!(parse_thread_state("garbage"), None);
    }

    #[test]
    fn finds_the_cgroup2_mount() {
        let mountinfo = "25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw\n\
                         40 35 0:35 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                         41 35 0:36 / /sys/fs/cgroup/uni\\040fied rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(mountinfo),
            Some("/sys/fs/cgroup/uni fied".into())
        );
        assert_eq!(
            parse_cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }

    #[test]
    fn socket_links_name_their_inode() {
        assert_eq!(socket_inode(Path::new("socket:[4242]")), Some(4242));
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
        assert_eq!(socket_inode(Path::new("pipe:[7]")), None);
    }
}
