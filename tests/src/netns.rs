//! Network namespaces for tests, the demo and the benchmark.
//!
//! [`Netns::new`] creates a uniquely named namespace (`msf-<tag>-<pid>-<n>`) with loopback up;
//! dropping it (also while unwinding from a panic) kills what runs inside and deletes it.
//! Namespaces left behind by a process that was killed are removed the next time one is
//! created. Nothing here touches the host's own interfaces: veth pairs are created directly
//! inside the namespaces ([`veth_pair`]).

use std::{
    fs::File,
    io,
    os::fd::AsFd as _,
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

const PREFIX: &str = "msf-";

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// Create a namespace named after `tag` (a few letters saying what it is for).
    pub fn new(tag: &str) -> io::Result<Self> {
        remove_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{tag}-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> <args>`, failing with ip's own message.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args)).map(drop)
    }

    /// A command that runs inside the namespace (`ip netns exec <ns> <program>`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Set a sysctl inside the namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        run(self
            .command("sysctl")
            .args(["-q", "-w", &format!("{key}={value}")]))
        .map(drop)
    }

    /// Read a file as seen from inside the namespace (e.g. `/proc/net/mcfilter`).
    /// `/proc/net` is `/proc/self/net`, which follows the process's first thread; the thread
    /// that entered the namespace sees its own through `/proc/thread-self/net`.
    pub fn read_proc(&self, path: &str) -> io::Result<String> {
        let path = match path.strip_prefix("/proc/net/") {
            Some(rest) => format!("/proc/thread-self/net/{rest}"),
            None => path.to_string(),
        };
        self.run(move || std::fs::read_to_string(path))
    }

    /// Run `f` on a thread that has entered this namespace, and wait for it. Sockets opened
    /// and interfaces resolved inside `f` belong to this namespace; XDP attachments made
    /// inside `f` attach to this namespace's interfaces.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(self.path())
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.path().display()));
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter(&file).unwrap_or_else(|e| panic!("entering namespace: {e}"));
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Enter this namespace on the calling thread for good (for threads that live inside it,
    /// such as a traffic generator).
    pub fn enter_current_thread(&self) -> io::Result<()> {
        enter(&File::open(self.path())?)
    }

    /// Interface index of `iface` inside this namespace.
    pub fn ifindex(&self, iface: &str) -> io::Result<u32> {
        let iface = std::ffi::CString::new(iface).map_err(io::Error::other)?;
        let index = self.run(move || {
            // SAFETY: valid NUL-terminated string.
            unsafe { libc::if_nametoindex(iface.as_ptr()) }
        });
        if index == 0 {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such interface in the namespace",
            ))
        } else {
            Ok(index)
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_pids(&self.name);
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: could not delete namespace {}: {e}", self.name);
        }
    }
}

fn enter(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: setns on a namespace file descriptor; affects only the calling thread.
    if unsafe { libc::setns(file.as_fd().as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn kill_pids(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Delete namespaces of ours whose creating process no longer exists.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let mut parts = rest.rsplitn(3, '-');
        let (_n, pid) = (parts.next(), parts.next());
        let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            kill_pids(&name);
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

/// Run a command; a non-zero exit becomes an error carrying its stderr.
pub fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// A veth pair with one end in each namespace, both up.
pub fn veth_pair(a: &Netns, a_name: &str, b: &Netns, b_name: &str) -> io::Result<()> {
    a.ip(&[
        "link",
        "add",
        a_name,
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_name, "up"])?;
    b.ip(&["link", "set", b_name, "up"])?;
    Ok(())
}

/// Two namespaces joined by a veth pair: traffic goes from `sender` to `receiver`.
#[derive(Debug)]
pub struct Link {
    pub sender: Netns,
    pub receiver: Netns,
    /// Interface in `sender`.
    pub tx: String,
    /// Interface in `receiver`.
    pub rx: String,
}

impl Link {
    /// Namespaces `<tag>s` and `<tag>r` joined by veth `tx0`/`rx0`, with IPv4 `10.99.0.2/24`
    /// and IPv6 `fd99::2/64` on the receiver, and the given source addresses (IPv4 /24 or
    /// IPv6 /64 strings such as "10.99.0.1/24") on the sender. IPv6 addresses skip duplicate
    /// address detection; reverse-path filtering is off on the receiver.
    pub fn new(tag: &str, sender_addrs: &[&str]) -> io::Result<Self> {
        let sender = Netns::new(&format!("{tag}s"))?;
        let receiver = Netns::new(&format!("{tag}r"))?;
        veth_pair(&sender, "tx0", &receiver, "rx0")?;
        for addr in sender_addrs {
            if addr.contains(':') {
                sender.ip(&["addr", "add", addr, "dev", "tx0", "nodad"])?;
            } else {
                sender.ip(&["addr", "add", addr, "dev", "tx0"])?;
            }
        }
        receiver.ip(&["addr", "add", "10.99.0.2/24", "dev", "rx0"])?;
        receiver.ip(&["addr", "add", "fd99::2/64", "dev", "rx0", "nodad"])?;
        for ns in [&sender, &receiver] {
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            ns.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        }
        receiver.sysctl("net.ipv4.conf.rx0.rp_filter", "0")?;
        sender.ip(&["route", "add", "224.0.0.0/4", "dev", "tx0"])?;
        sender.ip(&[
            "-6", "route", "add", "ff00::/8", "dev", "tx0", "table", "main",
        ])?;
        Ok(Self {
            sender,
            receiver,
            tx: "tx0".to_string(),
            rx: "rx0".to_string(),
        })
    }
}
