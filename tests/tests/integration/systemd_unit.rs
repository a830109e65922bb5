//! The packaged systemd unit (dist/systemd/msfilter.service), run as systemd would run it
//! (tests/src/unit.rs): READY=1 only once the API answers and pinned links are adopted;
//! ExecReload gives RELOADING=1 then READY=1 with the new configuration applied; SIGTERM
//! gives STOPPING=1 and a clean exit; the unit's capabilities suffice and each is needed.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use msfilter::iface::xdp;
use msfilter_testbed::{
    daemon::{PinDir, TempDir, msfilter_bin},
    netns::Link,
    unit::{Launch, NotifyAt, Service, Unit, command_in},
};
use serde_json::Value;

const READY_WITHIN: Duration = Duration::from_secs(20);
const ENV_FILE: &str = "/etc/default/msfilter";

fn unit() -> Unit {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd/msfilter.service");
    Unit::load(&path).unwrap()
}

/// A namespace with rx0, private paths for the unit (through its environment file) and a
/// configuration owning rx0 with one group.
struct Bed {
    link: Link,
    dir: TempDir,
    pins: PinDir,
}

const CONFIG: &str = "[interface.rx0]\n\
                      [[interface.rx0.group]]\n\
                      address = \"232.44.0.1\"\n\
                      mode = \"include\"\n\
                      sources = [\"10.99.0.1\"]\n";

impl Bed {
    fn new(tag: &str, daemon_opts: &str) -> Self {
        let link = Link::new(tag, &["10.99.0.1/24"]).unwrap();
        let dir = TempDir::new("unit").unwrap();
        let pins = PinDir::new("unit");
        let bed = Self { link, dir, pins };
        std::fs::write(bed.config(), CONFIG).unwrap();
        std::fs::write(
            bed.env_file(),
            format!(
                "# as an operator would write /etc/default/msfilter\n\
                 MSFILTER_SOCKET={}\nMSFILTER_PIN_DIR={}\nMSFILTER_STATE_DIR={}\n\
                 MSFILTER_CONFIG={}\nMSFILTER_DAEMON_OPTS=\"{daemon_opts}\"\nRUST_LOG=info\n",
                bed.socket().display(),
                bed.pins.0.display(),
                bed.dir.path().join("state").display(),
                bed.config().display()
            ),
        )
        .unwrap();
        bed
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("msfilter.sock")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("msfilter.toml")
    }

    fn env_file(&self) -> PathBuf {
        self.dir.path().join("default-msfilter")
    }

    fn launch(&self, notify: NotifyAt, capabilities: Option<Vec<String>>) -> Launch {
        Launch {
            program: msfilter_bin(),
            environment_files: BTreeMap::from([(ENV_FILE.to_string(), self.env_file())]),
            capabilities,
            notify,
            log: self.dir.path().join("service.log"),
        }
    }

    fn start(&self, notify: NotifyAt) -> Service {
        Service::start(&unit(), &self.link.receiver, &self.launch(notify, None)).unwrap()
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        command_in(&self.link.receiver, msfilter_bin())
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(out.status.success(), "msfilter {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn groups(&self) -> Vec<String> {
        self.cli_json(&["list", "-j"])
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["group"].as_str().unwrap().to_string())
            .collect()
    }
}

fn has(messages: &[Vec<String>], line: &str) -> bool {
    messages.iter().flatten().any(|l| l == line)
}

fn status_of(messages: &[Vec<String>]) -> Vec<&str> {
    messages
        .iter()
        .flatten()
        .filter_map(|l| l.strip_prefix("STATUS="))
        .collect()
}

#[test]
fn ready_only_when_serving_reload_and_stop_as_the_unit_says() {
    let bed = Bed::new("sdu", "--keep");

    // First run: READY=1 once the API answers and rx0 is owned.
    let mut service = bed.start(NotifyAt::Path(bed.dir.path().join("notify")));
    let seen = service.wait_for("READY=1", READY_WITHIN).unwrap();
    std::os::unix::net::UnixStream::connect(bed.socket()).expect("the socket answers at READY=1");
    let owner = bed.cli_json(&["owner", "rx0", "-j"]);
    assert_eq!(owner["owner"], "msfilter", "{owner}");
    assert_eq!(owner["adopted"], false, "{owner}");
    assert!(
        status_of(&seen).iter().any(|s| s.starts_with("serving ")),
        "{seen:?}"
    );
    // Exactly the unit's capabilities: what the daemon runs with.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", service.pid().unwrap())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    let expected: u64 = unit()
        .capabilities("CapabilityBoundingSet")
        .iter()
        .map(|c| 1u64 << msfilter_testbed::unit::capability_number(c).unwrap())
        .sum();
    assert_eq!(u64::from_str_radix(eff, 16).unwrap(), expected, "{status}");

    // SIGTERM: STOPPING=1, a clean exit, and with --keep the link stays pinned.
    service.stop();
    let seen = service.wait_for("STOPPING=1", READY_WITHIN).unwrap();
    assert!(has(&seen, "STOPPING=1"));
    let exit = service.wait_exit(READY_WITHIN).unwrap();
    assert!(exit.success(), "{exit}: {}", service.log());
    drop(service);
    let pinned: Vec<String> = std::fs::read_dir(&bed.pins.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(pinned.iter().any(|p| p.starts_with("link-")), "{pinned:?}");
    // ... and XDP stays attached while no daemon runs (a restart keeps it enforcing).
    let rx0 = bed.link.receiver.ifindex("rx0").unwrap();
    let attached = bed.link.receiver.run(|| xdp::xdp_attachment(rx0)).unwrap();
    assert_eq!(
        attached.map(|a| u64::from(a.prog_id)),
        owner["program_id"].as_u64()
    );

    // Second run, abstract notify socket: at READY=1 the pinned link has been adopted.
    let name = format!("msfilter-unit-test-{}", std::process::id());
    let mut service = bed.start(NotifyAt::Abstract(name));
    service.wait_for("READY=1", READY_WITHIN).unwrap();
    std::os::unix::net::UnixStream::connect(bed.socket()).expect("the socket answers at READY=1");
    let owner = bed.cli_json(&["owner", "rx0", "-j"]);
    assert_eq!(owner["owner"], "msfilter", "{owner}");
    assert_eq!(owner["adopted"], true, "{owner}");
    assert_eq!(bed.groups(), ["232.44.0.1"]);

    // ExecReload with a changed file: RELOADING=1, then READY=1 once it is applied.
    std::fs::write(
        bed.config(),
        format!("{CONFIG}[[interface.rx0.group]]\naddress = \"232.44.0.2\"\nmode = \"exclude\"\n"),
    )
    .unwrap();
    assert!(service.reload().unwrap().success());
    let seen = service.wait_for("READY=1", READY_WITHIN).unwrap();
    let reloading = seen
        .iter()
        .position(|m| m.iter().any(|l| l == "RELOADING=1"));
    let ready = seen.iter().position(|m| m.iter().any(|l| l == "READY=1"));
    assert!(
        matches!((reloading, ready), (Some(a), Some(b)) if a < b),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .flatten()
            .any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{seen:?}"
    );
    assert_eq!(bed.groups(), ["232.44.0.1", "232.44.0.2"]);

    // An invalid file: RELOADING=1, READY=1 saying it was refused, the policy unchanged.
    std::fs::write(bed.config(), "[interface.rx0]\nxdp = 1\n").unwrap();
    assert!(service.reload().unwrap().success());
    let seen = service.wait_for("READY=1", READY_WITHIN).unwrap();
    assert!(has(&seen, "RELOADING=1"), "{seen:?}");
    assert!(
        status_of(&seen)
            .iter()
            .any(|s| s.starts_with("reload refused: ")),
        "{seen:?}"
    );
    assert_eq!(bed.groups(), ["232.44.0.1", "232.44.0.2"]);

    service.stop();
    service.wait_for("STOPPING=1", READY_WITHIN).unwrap();
    assert!(service.wait_exit(READY_WITHIN).unwrap().success());
}

/// The unit's capabilities that only follow mode needs: without one, the daemon serves and
/// `attach --follow` is refused naming it.
const FOLLOW_ONLY: [&str; 2] = ["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"];

/// A process of another user (nobody) in `ns` with a plain IPv4 socket joined to `group` on
/// rx0 (10.99.0.2) and `blocked` blocked, until killed.
fn nobody_receiver(ns: &msfilter_testbed::netns::Netns, group: &str, blocked: &str) -> Child {
    let script = format!(
        "import socket,sys,time\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         g=socket.inet_aton('{group}'); i=socket.inet_aton('10.99.0.2')\n\
         s.setsockopt(socket.IPPROTO_IP, 35, g+i)\n\
         s.setsockopt(socket.IPPROTO_IP, 38, g+i+socket.inet_aton('{blocked}'))\n\
         print('ok', flush=True)\n\
         time.sleep(60)\n"
    );
    let mut child = ns
        .command("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting python3 as nobody");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ok", "the receiver joined");
    child
}

#[test]
fn follow_mode_needs_ptrace_and_dac_read_search_and_works_with_the_units_set() {
    let bed = Bed::new("sdf", "");
    let all = unit().capabilities("CapabilityBoundingSet");
    for cap in FOLLOW_ONLY {
        assert!(all.iter().any(|c| c == cap), "the unit grants {cap}");
        let fewer: Vec<String> = all.iter().filter(|c| *c != cap).cloned().collect();
        let mut launch = bed.launch(NotifyAt::Path(bed.dir.path().join("notify")), Some(fewer));
        launch.log = bed.dir.path().join(format!("without-{cap}.log"));
        let mut service = Service::start(&unit(), &bed.link.receiver, &launch).unwrap();
        service.wait_for("READY=1", READY_WITHIN).unwrap();
        let out = bed.cli(&["attach", "rx0", "--follow"]);
        assert_eq!(out.status.code(), Some(1), "without {cap}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("the daemon lacks {cap}")),
            "without {cap}: {stderr}"
        );
        assert_eq!(bed.cli_json(&["owner", "rx0", "-j"])["followed"], false);
        service.stop();
        assert!(service.wait_exit(READY_WITHIN).unwrap().success());
    }
    // With the unit's set: another user's plain socket is found and its filter enforced.
    let mut service = bed.start(NotifyAt::Path(bed.dir.path().join("notify")));
    service.wait_for("READY=1", READY_WITHIN).unwrap();
    let attached = bed.cli_json(&["attach", "rx0", "--follow", "-j"]);
    assert_eq!(attached["followed"], true, "{attached}");
    let mut app = nobody_receiver(&bed.link.receiver, "232.44.0.7", "10.99.0.5");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = bed.cli_json(&["list", "-j"]);
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["group"] == "232.44.0.7")
            .cloned();
        if let Some(e) = &entry
            && e["follow"]["complete"] == true
        {
            assert_eq!(e["mode"], "exclude", "{e}");
            assert_eq!(e["sources"][0]["source"], "10.99.0.5", "{e}");
            let socket = &e["follow"]["sockets"][0];
            assert_eq!(socket["pid"], app.id(), "{e}");
            assert_eq!(socket["origin"], "followed", "{e}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other user's socket is not enforced: {entry:?}\n{}",
            service.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = app.kill();
    let _ = app.wait();
    service.stop();
    assert!(service.wait_exit(READY_WITHIN).unwrap().success());
}

#[test]
fn the_units_capabilities_suffice_and_each_is_needed() {
    let bed = Bed::new("sdc", "");
    let all = unit().capabilities("CapabilityBoundingSet");
    assert!(!all.is_empty());
    assert_eq!(
        all,
        unit().capabilities("AmbientCapabilities"),
        "the ambient set (for a non-root User=) matches the bounding set"
    );
    for missing in &all {
        if FOLLOW_ONLY.contains(&missing.as_str()) {
            continue;
        }
        let fewer: Vec<String> = all.iter().filter(|c| *c != missing).cloned().collect();
        let log = bed.dir.path().join(format!("without-{missing}.log"));
        let mut launch = bed.launch(
            NotifyAt::Path(bed.dir.path().join("notify")),
            Some(fewer.clone()),
        );
        launch.log = log;
        let mut service = Service::start(&unit(), &bed.link.receiver, &launch).unwrap();
        let exit = service.wait_exit(READY_WITHIN).unwrap();
        assert!(!exit.success(), "without {missing}: {exit}");
        let text = service.log();
        assert!(
            text.contains(&format!("msfilter daemon lacks {missing}")),
            "without {missing} the daemon names it: {text}"
        );
        assert!(
            service
                .next_notification(Duration::from_millis(300))
                .is_none(),
            "no READY=1 without {missing}"
        );
    }
    // And with all of them it serves (the socket answers).
    let mut service = bed.start(NotifyAt::Path(bed.dir.path().join("notify")));
    service.wait_for("READY=1", READY_WITHIN).unwrap();
    assert_eq!(bed.groups(), ["232.44.0.1"]);
    service.stop();
    assert!(service.wait_exit(READY_WITHIN).unwrap().success());
    // Without --keep a stop released the interface: no XDP, nothing left pinned.
    let rx0 = bed.link.receiver.ifindex("rx0").unwrap();
    assert_eq!(
        bed.link.receiver.run(|| xdp::xdp_attachment(rx0)).unwrap(),
        None
    );
    let left: Vec<_> = std::fs::read_dir(&bed.pins.0)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
