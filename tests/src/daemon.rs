//! A real `msfilter daemon` process inside a namespace, and the `msfilter` CLI against it.
//!
//! The daemon runs as its own process (`msfilter daemon --socket ...` inside the namespace), so
//! tests see exactly what a user sees, including exit statuses and what happens when the
//! process is killed. Its socket lives in a private temporary directory; its log is kept and
//! printed when a test using it fails.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::netns::Netns;

/// The `msfilter` binary of this build: `target/<profile>/msfilter`, found next to the
/// running executable (a test in `target/<profile>/deps`, or the demo in `target/<profile>`).
/// `cargo xtask test` and `cargo xtask demo` build it first.
pub fn msfilter_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("msfilter"))
        .collect();
    candidates
        .iter()
        .find(|bin| bin.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the msfilter binary is missing (looked at {candidates:?}): build it first \
                 (`cargo build`, which `cargo xtask test` does)"
            )
        })
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A private directory under /tmp, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> io::Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("msf-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a CLI invocation did.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// A daemon process in a namespace; killed on drop. Each has its own socket, state
/// directory and pin directory (on the host's bpffs), kept across restarts and removed on
/// drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    ns: String,
    dir: TempDir,
    pin_dir: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl Daemon {
    /// Start `msfilter daemon` in `ns` with extra arguments, and wait until it answers.
    pub fn start(ns: &Netns, args: &[&str]) -> io::Result<Self> {
        remove_stale_pins();
        let dir = TempDir::new("daemon")?;
        let log = dir.path().join("daemon.log");
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/{PIN_PREFIX}{}-{n}",
            std::process::id()
        ));
        let mut daemon = Self {
            child: None,
            ns: ns.name().to_string(),
            dir,
            pin_dir,
            args: args.iter().map(ToString::to_string).collect(),
            log,
        };
        daemon.spawn()?;
        Ok(daemon)
    }

    /// Spawn the daemon inside the namespace. It enters the namespace with setns(2) between
    /// fork and exec rather than through `ip netns exec`, which would also give it a private
    /// /sys without the host's bpffs (where the daemon pins its objects).
    fn spawn(&mut self) -> io::Result<()> {
        use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
        let log = File::options().create(true).append(true).open(&self.log)?;
        let netns = File::open(Path::new("/run/netns").join(&self.ns))?;
        let netns_fd = netns.as_raw_fd();
        let mut command = Command::new(msfilter_bin());
        // SAFETY: only async-signal-safe setns(2) runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(netns_fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        let child = command
            .arg("--socket")
            .arg(self.socket())
            .arg("daemon")
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(&self.args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        drop(netns);
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                return Err(io::Error::other(format!(
                    "the daemon exited ({status}) before answering:\n{}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::other(format!(
            "the daemon did not answer within 20 s:\n{}",
            self.log()
        )))
    }

    /// The daemon's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("msfilter.sock")
    }

    /// A directory for this daemon's files that tests may use.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The daemon's pin directory (on bpffs).
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Start again with other arguments (same socket, state and pins).
    pub fn restart_with(&mut self, args: &[&str]) -> io::Result<()> {
        self.kill9();
        self.args = args.iter().map(ToString::to_string).collect();
        self.spawn()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run `msfilter --socket <this daemon> <args>`.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let out = Command::new(msfilter_bin())
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("running msfilter");
        CliOutput::from(out)
    }

    /// Run the CLI as another user. The binary is run from a copy in a world-readable
    /// directory: the build tree may sit under a private one (`mktemp -d` is 0700), where
    /// any other user's exec fails with EACCES before msfilter even starts.
    pub fn cli_as(&self, uid: u32, gid: u32, args: &[&str]) -> CliOutput {
        use std::os::unix::{fs::PermissionsExt as _, process::CommandExt as _};
        let public = TempDir::new("cli").expect("creating a directory for the CLI copy");
        let bin = public.path().join("msfilter");
        std::fs::copy(msfilter_bin(), &bin).expect("copying the msfilter binary");
        for (path, mode) in [(public.path(), 0o755), (bin.as_path(), 0o755)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .expect("opening the CLI copy to other users");
        }
        // Another test thread that forks while the copy is open for writing hands the
        // write descriptor to its child until that child's exec closes it; exec of the
        // copy meanwhile fails with ETXTBSY. The window is the child's fork-to-exec time.
        let mut attempts = 0;
        let out = loop {
            match Command::new(&bin)
                .arg("--socket")
                .arg(self.socket())
                .args(args)
                .uid(uid)
                .gid(gid)
                .output()
            {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                result => break result.expect("running msfilter as another user"),
            }
        };
        CliOutput::from(out)
    }

    /// Run the CLI and require success; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.ok(),
            "msfilter {args:?} failed ({:?}): {}\ndaemon log:\n{}",
            out.code,
            out.stderr,
            self.log()
        );
        out.stdout
    }

    /// Run the CLI, require success, and parse its JSON output.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli_ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("msfilter {args:?}: {e}: {out}"))
    }

    /// Send SIGTERM and wait for the process; returns its exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().ok().and_then(|s| s.code())
    }

    /// SIGKILL the daemon (no shutdown sequence).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the daemon again with the same arguments and socket.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill9();
        self.spawn()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

const PIN_PREFIX: &str = "msf-test-";

/// Remove pin directories of test daemons whose test process no longer exists (a run that
/// was killed before its drops ran): their pinned maps would hold kernel memory until boot.
fn remove_stale_pins() {
    let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PIN_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove_pins(&entry.path());
        }
    }
}

/// A pin directory on the host's bpffs under the test bed's prefix (so a killed run's is
/// removed by the next daemon test), removed with what is pinned there on drop, also on panic.
pub struct PinDir(pub PathBuf);

impl PinDir {
    /// A new, unique directory name (`tag` says which test it belongs to); nothing is created.
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/{PIN_PREFIX}{}-{tag}{n}",
            std::process::id()
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        remove_pins(&self.0);
    }
}

fn remove_pins(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- msfilter daemon log ({}) ---\n{}", self.ns, self.log());
        }
        // Pins outlive a killed daemon (that is their point); remove them with the test.
        remove_pins(&self.pin_dir);
    }
}
