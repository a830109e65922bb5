//! The service manager's readiness protocol (`sd_notify(3)`), without libsystemd: one
//! datagram of `KEY=VALUE` lines to the `AF_UNIX` socket named by `$NOTIFY_SOCKET` — a path,
//! or an abstract name written with a leading `@`. Without the variable nothing is sent.
//!
//! The daemon says `READY=1` once its API serves (socket bound, pinned links adopted, maps
//! reconciled), `RELOADING=1` then `READY=1` around a SIGHUP reload, and `STOPPING=1` when
//! it begins to shut down, each with a `STATUS=` line for `systemctl status`.

use std::{
    io,
    os::unix::net::{SocketAddr, UnixDatagram},
    path::Path,
};

/// Where `$NOTIFY_SOCKET` points.
fn address(value: &str) -> io::Result<SocketAddr> {
    if let Some(name) = value.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt as _;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if value.starts_with('/') {
        SocketAddr::from_pathname(Path::new(value))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET={value:?} is neither a path nor an abstract name (@...)"),
        ))
    }
}

/// The datagram for `state` lines and an optional status text (one line: newlines in it
/// would start new assignments).
fn message(state: &[&str], status: Option<&str>) -> String {
    let mut lines: Vec<String> = state.iter().map(ToString::to_string).collect();
    if let Some(s) = status {
        lines.push(format!("STATUS={}", s.replace('\n', " ")));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Send `state` (and `status`) to the service manager, if there is one. A failure is
/// logged: the daemon works the same without a service manager.
fn send(state: &[&str], status: Option<&str>) {
    let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let value = value.to_string_lossy();
    let sent = address(&value).and_then(|addr| {
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(message(state, status).as_bytes(), &addr)
    });
    if let Err(e) = sent {
        log::warn!("telling the service manager {state:?} through NOTIFY_SOCKET={value}: {e}");
    }
}

/// The daemon serves.
pub(super) fn ready(status: &str) {
    send(&["READY=1"], Some(status));
}

/// A reload begins (`READY=1` follows when it is done).
pub(super) fn reloading() {
    let usec = monotonic_usec();
    send(
        &["RELOADING=1", &format!("MONOTONIC_USEC={usec}")],
        Some("reloading the configuration"),
    );
}

/// The shut-down sequence begins.
pub(super) fn stopping(status: &str) {
    send(&["STOPPING=1"], Some(status));
}

/// `CLOCK_MONOTONIC` in microseconds, which systemd matches against its own reload time.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lines() {
        assert_eq!(
            message(&["READY=1"], Some("serving /run/msfilter.sock")),
            "READY=1\nSTATUS=serving /run/msfilter.sock\n"
        );
        assert_eq!(
            message(&["STOPPING=1"], Some("two\nlines")),
            "STOPPING=1\nSTATUS=two lines\n"
        );
        assert_eq!(
            message(&["RELOADING=1", "MONOTONIC_USEC=5"], None),
            "RELOADING=1\nMONOTONIC_USEC=5\n"
        );
    }

    #[test]
    fn addresses_path_and_abstract() {
        use std::os::linux::net::SocketAddrExt as _;
        let a = address("@msfilter/notify").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"msfilter/notify"[..]));
        let p = address("/run/systemd/notify").unwrap();
        assert_eq!(p.as_pathname(), Some(Path::new("/run/systemd/notify")));
        assert!(address("relative").is_err());
    }

    #[test]
    fn a_datagram_reaches_a_listening_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("msfilter-notify-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let socket = UnixDatagram::unbound().unwrap();
        socket
            .send_to_addr(
                message(&["READY=1"], Some("ok")).as_bytes(),
                &address(&format!("@{name}")).unwrap(),
            )
            .unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok\n");
        assert!(monotonic_usec() > 0);
    }
}
