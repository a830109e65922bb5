//! A systemd unit file run the way systemd would run it, for hosts where systemd is not
//! PID 1 (as in these tests).
//!
//! [`Unit::parse`] reads a unit file (sections, repeated keys, `\` continuations,
//! comments). [`Service::start`] runs its `ExecStart=` inside a test namespace as systemd
//! does: a clean environment with `PATH`, `Environment=` and `EnvironmentFile=` values
//! (the harness may map the unit's environment file to one of its own, so the same unit
//! runs with private paths), `$VAR` / `${VAR}` expanded, `NOTIFY_SOCKET` pointing at a
//! datagram socket the test reads, the capability bounding set cut to the unit's
//! `CapabilityBoundingSet=` (or any other set), `NoNewPrivileges=`, `LimitMEMLOCK=` (where
//! the test may raise it) and `UMask=` applied between fork and exec. `ExecReload=` runs with `$MAINPID`; stopping
//! sends `KillSignal=` (SIGTERM).
//!
//! Not emulated: the file-system sandbox (`ProtectSystem=`, `ReadWritePaths=`, ...), the
//! system-call filters and the cgroup.

use std::{
    collections::BTreeMap,
    fs::File,
    io,
    os::{
        fd::AsRawFd as _,
        linux::net::SocketAddrExt as _,
        unix::{
            net::{SocketAddr, UnixDatagram},
            process::CommandExt as _,
        },
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::netns::Netns;

/// A parsed unit file: sections in order, each with its assignments in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unit {
    pub sections: Vec<(String, Vec<(String, String)>)>,
}

impl Unit {
    pub fn load(path: &Path) -> io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Self::parse(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut unit = Self::default();
        let mut pending = String::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if pending.is_empty() && (line.is_empty() || line.starts_with(['#', ';'])) {
                continue;
            }
            if let Some(continued) = line.strip_suffix('\\') {
                pending.push_str(continued.trim_end());
                pending.push(' ');
                continue;
            }
            pending.push_str(line);
            let line = std::mem::take(&mut pending);
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                unit.sections.push((name.to_string(), Vec::new()));
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: not KEY=VALUE: {line:?}", n + 1));
            };
            let Some((_, entries)) = unit.sections.last_mut() else {
                return Err(format!("line {}: an assignment before any section", n + 1));
            };
            entries.push((key.trim().to_string(), value.trim().to_string()));
        }
        Ok(unit)
    }

    /// Every value of `key` in `section`, in order (an empty assignment resets the list,
    /// as in systemd).
    pub fn values(&self, section: &str, key: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for (name, entries) in &self.sections {
            if name != section {
                continue;
            }
            for (k, v) in entries {
                if k == key {
                    if v.is_empty() {
                        out.clear();
                    } else {
                        out.push(v.as_str());
                    }
                }
            }
        }
        out
    }

    /// The last value of `key` in `section`.
    pub fn value(&self, section: &str, key: &str) -> Option<&str> {
        self.values(section, key).last().copied()
    }

    /// The capabilities a capability-set key lists (e.g. `CapabilityBoundingSet`).
    pub fn capabilities(&self, key: &str) -> Vec<String> {
        self.values("Service", key)
            .into_iter()
            .flat_map(str::split_whitespace)
            .map(ToString::to_string)
            .collect()
    }

    /// Whether a boolean key of `[Service]` is set to yes.
    pub fn yes(&self, key: &str) -> bool {
        matches!(
            self.value("Service", key),
            Some("yes" | "true" | "on" | "1")
        )
    }
}

/// Split a command line into words as systemd does (double and single quotes, backslash
/// escapes), after dropping the `-@:+!` prefixes of the executable.
pub fn split_command(line: &str) -> Vec<String> {
    let line = line.trim_start_matches(['-', '@', ':', '+', '!']);
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (_, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Expand variables in command words as systemd does: a word that is exactly `$VAR`
/// becomes the variable's value split at whitespace (no word if it is empty or unset);
/// `${VAR}` anywhere becomes the value as it is.
pub fn expand(words: &[String], env: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for w in words {
        if let Some(name) = w.strip_prefix('$')
            && !name.starts_with('{')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            if let Some(v) = env.get(name) {
                out.extend(v.split_whitespace().map(ToString::to_string));
            }
            continue;
        }
        let mut s = w.clone();
        while let Some(start) = s.find("${") {
            let Some(len) = s[start..].find('}') else {
                break;
            };
            let name = &s[start + 2..start + len];
            let value = env.get(name).cloned().unwrap_or_default();
            s.replace_range(start..=start + len, &value);
        }
        out.push(s);
    }
    out
}

/// `KEY=VALUE` lines of an environment file (comments, blank lines and surrounding quotes
/// dropped).
pub fn parse_environment_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';']))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// `Environment=` assignments: `"A=b c" D=e` (quoted as systemd quotes them).
fn parse_environment(value: &str) -> Vec<(String, String)> {
    split_command(value)
        .into_iter()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// The number of a capability named as in unit files (`CAP_NET_ADMIN`).
pub fn capability_number(name: &str) -> Option<u32> {
    const NAMES: [&str; 41] = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

/// A command that runs in `ns` by entering only its network namespace (`setns(2)` between
/// fork and exec), as `nsenter --net` does: unlike `ip netns exec` it keeps the host's
/// `/sys`, with the BPF filesystem.
pub fn command_in(ns: &Netns, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let path = std::ffi::CString::new(ns.path().into_os_string().into_encoded_bytes())
        .expect("a namespace path has no NUL");
    let mut command = Command::new(program);
    // SAFETY: only open(2), setns(2) and close(2) run between fork and exec, on a path
    // prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let ret = libc::setns(fd, libc::CLONE_NEWNET);
            libc::close(fd);
            if ret == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    command
}

/// Where the service's `NOTIFY_SOCKET` points.
#[derive(Clone, Debug)]
pub enum NotifyAt {
    /// A socket file at this path.
    Path(PathBuf),
    /// An abstract socket with this name (`NOTIFY_SOCKET=@name`), in the service's network
    /// namespace (abstract names are per namespace).
    Abstract(String),
}

/// How to run a unit's service.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The binary to run instead of the unit's `ExecStart=` executable (same arguments).
    pub program: PathBuf,
    /// Environment files of the unit mapped to files of the test (unit path → test path).
    pub environment_files: BTreeMap<String, PathBuf>,
    /// The capabilities to keep; `None`: the unit's `CapabilityBoundingSet=`.
    pub capabilities: Option<Vec<String>>,
    pub notify: NotifyAt,
    /// Where the service's stdout and stderr go.
    pub log: PathBuf,
}

/// A unit's service running in a namespace; killed on drop.
#[derive(Debug)]
pub struct Service {
    child: Option<Child>,
    notify: UnixDatagram,
    notify_path: Option<PathBuf>,
    env: BTreeMap<String, String>,
    reload: Vec<String>,
    log: PathBuf,
}

impl Service {
    /// Start the unit's `ExecStart=` in `ns`.
    pub fn start(unit: &Unit, ns: &Netns, launch: &Launch) -> io::Result<Self> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        let unit_type = unit.value("Service", "Type").unwrap_or("simple");
        if unit_type != "notify" {
            return Err(invalid(format!(
                "Type={unit_type}: this harness runs Type=notify units"
            )));
        }
        // The environment systemd gives a system service.
        let mut env = BTreeMap::from([(
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin".to_string(),
        )]);
        for assignment in unit.values("Service", "Environment") {
            env.extend(parse_environment(assignment));
        }
        for file in unit.values("Service", "EnvironmentFile") {
            let (optional, file) = file.strip_prefix('-').map_or((false, file), |f| (true, f));
            let path = launch
                .environment_files
                .get(file)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(file));
            match std::fs::read_to_string(&path) {
                Ok(text) => env.extend(parse_environment_file(&text)),
                Err(e) if optional && e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(invalid(format!("EnvironmentFile={file}: {e}"))),
            }
        }
        let (notify, notify_path, notify_value) = match &launch.notify {
            NotifyAt::Path(p) => {
                let _ = std::fs::remove_file(p);
                (
                    UnixDatagram::bind(p)?,
                    Some(p.clone()),
                    p.display().to_string(),
                )
            }
            // Abstract names belong to a network namespace: bind it in the service's.
            NotifyAt::Abstract(name) => (
                ns.run(|| {
                    UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
                })?,
                None,
                format!("@{name}"),
            ),
        };
        notify.set_read_timeout(Some(Duration::from_millis(100)))?;
        env.insert("NOTIFY_SOCKET".into(), notify_value);

        let start = unit
            .value("Service", "ExecStart")
            .ok_or_else(|| invalid("no ExecStart=".into()))?;
        let words = expand(&split_command(start), &env);
        let reload = unit
            .value("Service", "ExecReload")
            .map(split_command)
            .unwrap_or_default();

        // What runs between fork and exec: computed now (no allocation after fork).
        let names = launch
            .capabilities
            .clone()
            .unwrap_or_else(|| unit.capabilities("CapabilityBoundingSet"));
        let mut keep = Vec::new();
        for name in &names {
            keep.push(
                capability_number(name)
                    .ok_or_else(|| invalid(format!("unknown capability {name}")))?,
            );
        }
        let last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")?
            .trim()
            .parse()
            .map_err(|e| invalid(format!("cap_last_cap: {e}")))?;
        let drop_caps: Vec<u32> = (0..=last_cap).filter(|c| !keep.contains(c)).collect();
        let no_new_privs = unit.yes("NoNewPrivileges");
        let memlock_infinity = unit.value("Service", "LimitMEMLOCK") == Some("infinity");
        let umask = unit
            .value("Service", "UMask")
            .map(|m| u32::from_str_radix(m, 8))
            .transpose()
            .map_err(|e| invalid(format!("UMask: {e}")))?;

        let log = File::options()
            .create(true)
            .append(true)
            .open(&launch.log)?;
        let netns = File::open(ns.path())?;
        let netns_fd = netns.as_raw_fd();
        let mut command = Command::new(&launch.program);
        command
            .args(&words[1..])
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: only async-signal-safe system calls run between fork and exec, on data
        // prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                let check = |ret: libc::c_int| {
                    if ret == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                };
                check(libc::setns(netns_fd, libc::CLONE_NEWNET))?;
                for &cap in &drop_caps {
                    check(libc::prctl(
                        libc::PR_CAPBSET_DROP,
                        cap as libc::c_ulong,
                        0,
                        0,
                        0,
                    ))?;
                }
                if no_new_privs {
                    check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
                }
                if memlock_infinity {
                    let unlimited = libc::rlimit {
                        rlim_cur: libc::RLIM_INFINITY,
                        rlim_max: libc::RLIM_INFINITY,
                    };
                    // Raising the hard limit needs CAP_SYS_RESOURCE, which a container
                    // may lack: then the service keeps the test's own limit.
                    let _ = libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited);
                }
                if let Some(mask) = umask {
                    libc::umask(mask as libc::mode_t);
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(netns);
        Ok(Self {
            child: Some(child),
            notify,
            notify_path,
            env,
            reload,
            log: launch.log.clone(),
        })
    }

    /// The main process's id (`$MAINPID`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The next notification (its lines), if one arrives within `timeout`.
    pub fn next_notification(&self, timeout: Duration) -> Option<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    return Some(
                        String::from_utf8_lossy(&buf[..n])
                            .lines()
                            .map(ToString::to_string)
                            .collect(),
                    );
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Notifications until one holds `line` (e.g. `READY=1`); all of them, in order. An
    /// error if the process exits first or `timeout` passes.
    pub fn wait_for(&mut self, line: &str, timeout: Duration) -> io::Result<Vec<Vec<String>>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(message) = self.next_notification(Duration::from_millis(100)) {
                let done = message.iter().any(|l| l == line);
                seen.push(message);
                if done {
                    return Ok(seen);
                }
                continue;
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                return Err(io::Error::other(format!(
                    "the service exited ({status}) before sending {line} (it sent {seen:?}):\n{}",
                    self.log()
                )));
            }
        }
        Err(io::Error::other(format!(
            "no {line} within {timeout:?} (notifications: {seen:?}):\n{}",
            self.log()
        )))
    }

    /// Run `ExecReload=` with `$MAINPID` set, as systemd does.
    pub fn reload(&self) -> io::Result<ExitStatus> {
        let mut env = self.env.clone();
        env.insert(
            "MAINPID".into(),
            self.pid().map(|p| p.to_string()).unwrap_or_default(),
        );
        let words = expand(&self.reload, &env);
        let Some((program, args)) = words.split_first() else {
            return Err(io::Error::other("the unit has no ExecReload="));
        };
        Command::new(program).args(args).status()
    }

    /// Send the stop signal (SIGTERM, systemd's default `KillSignal=`).
    pub fn stop(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain kill(2) on our child.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }

    /// Wait for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> io::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let Some(child) = &mut self.child else {
            return Err(io::Error::other("not running"));
        };
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::other(format!(
            "still running after {timeout:?}:\n{}",
            self.log()
        )))
    }

    /// What the service printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(p) = &self.notify_path {
            let _ = std::fs::remove_file(p);
        }
        if std::thread::panicking() {
            eprintln!("--- service log ---\n{}", self.log());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_parsed_like_systemd() {
        let unit = Unit::parse(
            "# comment\n[Unit]\nDescription=x\n\n[Service]\nType=notify\n\
             ExecStart=/usr/bin/msfilter daemon \\\n  $OPTS\n\
             CapabilityBoundingSet=CAP_BPF\nCapabilityBoundingSet=CAP_NET_ADMIN CAP_PERFMON\n\
             Environment=\"A=b c\" D=e\nX=1\nX=\nX=2\nNoNewPrivileges=yes\n",
        )
        .unwrap();
        assert_eq!(unit.value("Unit", "Description"), Some("x"));
        assert_eq!(
            unit.value("Service", "ExecStart"),
            Some("/usr/bin/msfilter daemon $OPTS")
        );
        assert_eq!(
            unit.capabilities("CapabilityBoundingSet"),
            ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]
        );
        assert_eq!(unit.values("Service", "X"), ["2"]);
        assert!(unit.yes("NoNewPrivileges"));
        assert_eq!(
            parse_environment(unit.value("Service", "Environment").unwrap()),
            [("A".into(), "b c".into()), ("D".into(), "e".into())]
        );
        assert!(Unit::parse("Key=before a section\n").is_err());
        assert!(Unit::parse("[S]\nno equals sign\n").is_err());
    }

    #[test]
    fn commands_split_and_expand() {
        assert_eq!(
            split_command("-/bin/kill -HUP $MAINPID"),
            ["/bin/kill", "-HUP", "$MAINPID"]
        );
        assert_eq!(
            split_command(r#"a "b c" 'd e' f\ g"#),
            ["a", "b c", "d e", "f g"]
        );
        let env = BTreeMap::from([
            ("OPTS".to_string(), "--keep  --group x".to_string()),
            ("EMPTY".to_string(), String::new()),
            ("P".to_string(), "/run".to_string()),
        ]);
        let words: Vec<String> = ["daemon", "$OPTS", "$EMPTY", "$UNSET", "${P}/s"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            expand(&words, &env),
            ["daemon", "--keep", "--group", "x", "/run/s"]
        );
    }

    #[test]
    fn environment_files() {
        let text = "# c\nA=1\nB=\"two words\"\n  C='x'\n\nbad line\n";
        assert_eq!(
            parse_environment_file(text),
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x".into())
            ]
        );
    }

    #[test]
    fn capability_numbers() {
        assert_eq!(capability_number("CAP_NET_ADMIN"), Some(12));
        assert_eq!(capability_number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(capability_number("CAP_PERFMON"), Some(38));
        assert_eq!(capability_number("CAP_BPF"), Some(39));
        assert_eq!(capability_number("CAP_NOPE"), None);
    }
}
