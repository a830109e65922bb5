//! Pure parsers of the kernel's text files the doctor reads: `/proc/sys/kernel/osrelease`,
//! `/proc/self/mountinfo` and the capability lines of `/proc/PID/status`. The group
//! listings (`/proc/net/igmp`, `/proc/net/igmp6`) are parsed by [`crate::iface::groups`].

use std::path::{Component, Path, PathBuf};

/// `major.minor.patch` of a kernel release string such as `6.18.44-fc-v1045`.
pub fn kernel_version(release: &str) -> Option<(u32, u32, u32)> {
    let numeric: String = release
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numeric.split('.').filter(|p| !p.is_empty());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// A mount, as `/proc/self/mountinfo` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    pub fstype: String,
}

/// Undo mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if bytes[i] == b'\\'
            && let Some(digits) = octal
        {
            out.push(
                digits
                    .iter()
                    .fold(0u8, |v, d| v.wrapping_mul(8).wrapping_add(d - b'0')),
            );
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every mount of a `/proc/self/mountinfo` text, in order (later mounts stack on earlier).
pub fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options [optional...] - fstype source ...
            let (before, after) = line.split_once(" - ")?;
            let point = before.split_whitespace().nth(4)?;
            let fstype = after.split_whitespace().next()?;
            Some(Mount {
                point: PathBuf::from(unescape(point)),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

/// The mount `path` lives on: the last-mounted one with the longest mount point that
/// contains it (by path components, so `/sys/fs/bpfx` is not under `/sys/fs/bpf`).
pub fn mount_of(mountinfo: &str, path: &Path) -> Option<Mount> {
    let path: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    let mut best: Option<Mount> = None;
    for m in mounts(mountinfo) {
        if path.starts_with(&m.point)
            && best
                .as_ref()
                .is_none_or(|b| m.point.components().count() >= b.point.components().count())
        {
            best = Some(m);
        }
    }
    best
}

/// The `CapEff:` mask of a `/proc/PID/status` text.
pub fn effective_capabilities(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v1045\n"), Some((6, 18, 44)));
        assert_eq!(kernel_version("5.9.0"), Some((5, 9, 0)));
        assert_eq!(kernel_version("6.3-rc1"), Some((6, 3, 0)));
        assert_eq!(kernel_version("4.19.0-25-amd64"), Some((4, 19, 0)));
        assert_eq!(kernel_version("garbage"), None);
        assert_eq!(kernel_version("6"), None);
    }

    const MOUNTINFO: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
45 23 0:40 / /sys/fs/bpf rw,relatime shared:5 - bpf bpf rw
46 27 0:41 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn mounts_and_where_a_path_lives() {
        let m = mount_of(MOUNTINFO, Path::new("/sys/fs/bpf/msfilter")).unwrap();
        assert_eq!(m.point, Path::new("/sys/fs/bpf"));
        assert_eq!(m.fstype, "bpf");
        let m = mount_of(MOUNTINFO, Path::new("/sys/fs/bpfx/msfilter")).unwrap();
        assert_eq!(
            (m.point.as_path(), m.fstype.as_str()),
            (Path::new("/sys"), "sysfs")
        );
        let m = mount_of(MOUNTINFO, Path::new("/var/lib/msfilter")).unwrap();
        assert_eq!(m.fstype, "ext4");
        let m = mount_of(MOUNTINFO, Path::new("/mnt/with space/x")).unwrap();
        assert_eq!(m.fstype, "tmpfs");
        // A later mount on the same point hides the earlier one.
        let stacked = format!("{MOUNTINFO}50 45 0:50 / /sys/fs/bpf rw - tmpfs none rw\n");
        let m = mount_of(&stacked, Path::new("/sys/fs/bpf/msfilter")).unwrap();
        assert_eq!(m.fstype, "tmpfs");
        assert_eq!(mount_of("", Path::new("/x")), None);
    }

    #[test]
    fn capabilities_of_a_status_file() {
        let status = "Name:\tmsfilter\nCapInh:\t0000000000000000\nCapPrm:\t000000c000001000\n\
                      CapEff:\t000000c000001000\nCapBnd:\t000000c000001000\n";
        assert_eq!(effective_capabilities(status), Some(0xc0_0000_1000));
        assert_eq!(effective_capabilities("Name: x\n"), None);
    }
}
