//! What the kernel said: a failed socket option and its errno, with symbolic names.

use std::io;

/// A socket option (or the system call around it) that the kernel refused.
///
/// `option` names what was attempted, spelled as in the C headers (`"MCAST_BLOCK_SOURCE"`,
/// `"IP_ADD_MEMBERSHIP"`, `"socket"`); `errno` is the kernel's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{option}: {} ({})", errno_name(*errno), describe(*errno))]
pub struct SockoptError {
    pub option: &'static str,
    pub errno: i32,
}

impl SockoptError {
    pub const fn new(option: &'static str, errno: i32) -> Self {
        Self { option, errno }
    }

    /// The error of the system call that just failed on this thread.
    pub(crate) fn last(option: &'static str) -> Self {
        Self::new(
            option,
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }

    /// The symbolic name of the errno (`"EADDRNOTAVAIL"`, or `"E<number>"` for one not listed).
    pub fn errno_name(&self) -> &'static str {
        errno_name(self.errno)
    }
}

impl From<SockoptError> for io::Error {
    fn from(e: SockoptError) -> Self {
        io::Error::new(io::Error::from_raw_os_error(e.errno).kind(), e)
    }
}

/// The C library's description of `errno`, without std's " (os error N)" suffix.
fn describe(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.strip_suffix(&format!(" (os error {errno})")) {
        Some(plain) => plain.to_string(),
        None => text,
    }
}

/// Errno values and their names, as in `<asm-generic/errno*.h>` (Linux).
const NAMES: &[(i32, &str)] = &[
    (libc::EPERM, "EPERM"),
    (libc::ENOENT, "ENOENT"),
    (libc::ESRCH, "ESRCH"),
    (libc::EINTR, "EINTR"),
    (libc::EIO, "EIO"),
    (libc::ENXIO, "ENXIO"),
    (libc::E2BIG, "E2BIG"),
    (libc::EBADF, "EBADF"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EACCES, "EACCES"),
    (libc::EFAULT, "EFAULT"),
    (libc::EBUSY, "EBUSY"),
    (libc::EEXIST, "EEXIST"),
    (libc::ENODEV, "ENODEV"),
    (libc::EINVAL, "EINVAL"),
    (libc::ENFILE, "ENFILE"),
    (libc::EMFILE, "EMFILE"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::ERANGE, "ERANGE"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::ENOTSOCK, "ENOTSOCK"),
    (libc::ENOPROTOOPT, "ENOPROTOOPT"),
    (libc::EPROTONOSUPPORT, "EPROTONOSUPPORT"),
    (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    (libc::EAFNOSUPPORT, "EAFNOSUPPORT"),
    (libc::EADDRINUSE, "EADDRINUSE"),
    (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (libc::ENETDOWN, "ENETDOWN"),
    (libc::ENETUNREACH, "ENETUNREACH"),
    (libc::ENOBUFS, "ENOBUFS"),
    (libc::EHOSTUNREACH, "EHOSTUNREACH"),
];

/// The symbolic name of `errno` (`"E<number>"` for one not in the list).
pub fn errno_name(errno: i32) -> &'static str {
    match NAMES.iter().find(|(n, _)| *n == errno) {
        Some((_, name)) => name,
        None => unnamed(errno),
    }
}

/// `"E<number>"`, made once per value and kept: errno values are few (the kernel's are below
/// 4096), and this keeps the result `&'static str` like the named ones.
fn unnamed(errno: i32) -> &'static str {
    use std::{
        collections::HashMap,
        sync::{Mutex, OnceLock},
    };
    static MADE: OnceLock<Mutex<HashMap<i32, &'static str>>> = OnceLock::new();
    let mut made = MADE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    made.entry(errno)
        .or_insert_with(|| Box::leak(format!("E{errno}").into_boxed_str()))
}

/// The errno called `name` (`"EINVAL"` → 22; also accepts `"E<number>"`).
pub fn errno_from_name(name: &str) -> Option<i32> {
    NAMES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(e, _)| *e)
        .or_else(|| name.strip_prefix('E')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_errors_membership_options_return() {
        assert_eq!(errno_name(libc::EADDRNOTAVAIL), "EADDRNOTAVAIL");
        assert_eq!(errno_name(libc::EINVAL), "EINVAL");
        assert_eq!(errno_name(libc::EADDRINUSE), "EADDRINUSE");
        assert_eq!(errno_name(libc::ENOBUFS), "ENOBUFS");
        assert_eq!(errno_name(libc::ENODEV), "ENODEV");
        assert_eq!(errno_name(libc::EPERM), "EPERM");
        assert_eq!(errno_name(libc::ENOMEM), "ENOMEM");
        assert_eq!(errno_name(4242), "E4242");
    }

    #[test]
    fn names_round_trip() {
        for &(errno, name) in NAMES {
            assert_eq!(errno_from_name(name), Some(errno), "{name}");
        }
        assert_eq!(errno_from_name("E4242"), Some(4242));
        assert_eq!(errno_from_name("nonsense"), None);
    }

    #[test]
    fn names_are_unique() {
        for (i, (a, na)) in NAMES.iter().enumerate() {
            for (b, nb) in &NAMES[i + 1..] {
                assert!(a != b && na != nb, "{na} / {nb}");
            }
        }
    }

    #[test]
    fn display_says_option_and_name() {
        let e = SockoptError::new("MCAST_BLOCK_SOURCE", libc::EADDRNOTAVAIL);
        let s = e.to_string();
        assert_eq!(
            s,
            "MCAST_BLOCK_SOURCE: EADDRNOTAVAIL (Cannot assign requested address)"
        );
        assert_eq!(e.errno_name(), "EADDRNOTAVAIL");
    }
}
