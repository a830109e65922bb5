//! The Debian package `cargo xtask dist` builds (`cargo xtask test` builds it first): it
//! installs with dpkg into a scratch root (its own dpkg database; nothing on the host
//! changes), holds the binary, the unit, the man pages, the completions and the docs, and
//! the installed binary runs with an environment free of cargo and rustup.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use msfilter_testbed::{daemon::TempDir, netns::Netns, unit::command_in};
use serde_json::Value;

fn dist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dist")
}

/// The package: the one `.deb` in target/dist.
fn package() -> PathBuf {
    let debs: Vec<PathBuf> = std::fs::read_dir(dist_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "deb"))
                .collect()
        })
        .unwrap_or_default();
    match &debs[..] {
        [deb] => deb.clone(),
        [] => panic!(
            "no package in {}: run `cargo xtask dist` (`cargo xtask test` does it first)",
            dist_dir().display()
        ),
        more => panic!("several packages in target/dist: {more:?}"),
    }
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the installed binary sees: a plain system PATH, nothing of cargo or rustup.
fn clean(command: &mut Command) -> &mut Command {
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/nonexistent")
}

/// A scratch root with an empty dpkg database.
fn scratch_root() -> TempDir {
    let root = TempDir::new("pkgroot").unwrap();
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.path().join(file), "").unwrap();
    }
    root
}

const FILES: [&str; 12] = [
    "usr/bin/msfilter",
    "lib/systemd/system/msfilter.service",
    "etc/default/msfilter",
    "usr/share/man/man1/msfilter.1.gz",
    "usr/share/man/man1/msfilter-daemon.1.gz",
    "usr/share/man/man1/msfilter-doctor.1.gz",
    "usr/share/man/man1/msfilter-join.1.gz",
    "usr/share/bash-completion/completions/msfilter",
    "usr/share/zsh/vendor-completions/_msfilter",
    "usr/share/fish/vendor_completions.d/msfilter.fish",
    "usr/share/doc/msfilter/copyright",
    "usr/share/doc/msfilter/msfilter.toml.example",
];

#[test]
fn the_package_installs_into_a_scratch_root_and_runs_without_a_toolchain() {
    let deb = package();
    let control = ok(
        Command::new("dpkg-deb")
            .args(["--field"])
            .arg(&deb)
            .output()
            .unwrap(),
        "dpkg-deb --field",
    );
    assert!(control.contains("Package: msfilter\n"), "{control}");
    assert!(control.contains("\nDepends: libc6 (>= "), "{control}");
    assert!(
        !control.contains("rust") && !control.contains("cargo"),
        "no toolchain dependency: {control}"
    );

    // Install with dpkg into the scratch root. Its database knows no libc6: the
    // dependencies are the host's, so they are not checked there.
    let root = scratch_root();
    let r = root.path();
    ok(
        Command::new("dpkg")
            .arg(format!("--root={}", r.display()))
            .args([
                "--force-depends",
                "--force-script-chrootless",
                "--log=/dev/null",
            ])
            .arg("--install")
            .arg(&deb)
            .output()
            .unwrap(),
        "dpkg --root --install",
    );
    let status = ok(
        Command::new("dpkg")
            .arg(format!("--root={}", r.display()))
            .args(["--status", "msfilter"])
            .output()
            .unwrap(),
        "dpkg --status",
    );
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(
        status.contains("Conffiles:\n /etc/default/msfilter "),
        "{status}"
    );
    let listed = ok(
        Command::new("dpkg")
            .arg(format!("--root={}", r.display()))
            .args(["--listfiles", "msfilter"])
            .output()
            .unwrap(),
        "dpkg --listfiles",
    );
    for file in FILES {
        assert!(
            listed.lines().any(|l| l == format!("/{file}")),
            "{file} not in the package: {listed}"
        );
        assert!(r.join(file).is_file(), "{file} not installed");
    }
    let pages = listed
        .lines()
        .filter(|l| l.starts_with("/usr/share/man/man1/msfilter"))
        .count();
    assert!(pages >= 15, "one man page per command: {listed}");

    // The installed binary: its libraries are the system's, and it runs bare.
    let bin = r.join("usr/bin/msfilter");
    let ldd = ok(Command::new("ldd").arg(&bin).output().unwrap(), "ldd");
    assert!(!ldd.contains("not found"), "{ldd}");
    assert!(
        !ldd.contains(".rustup") && !ldd.contains("target/"),
        "{ldd}"
    );
    let version = ok(
        clean(&mut Command::new(&bin))
            .arg("--version")
            .output()
            .unwrap(),
        "msfilter --version",
    );
    assert_eq!(
        version.trim(),
        format!("msfilter {}", env!("CARGO_PKG_VERSION"))
    );

    // The installed doctor, in a namespace of its own, without a daemon, checking the
    // packaged example configuration.
    let ns = Netns::new("pkg").unwrap();
    let dir = TempDir::new("pkg").unwrap();
    let example = r.join("usr/share/doc/msfilter/msfilter.toml.example");
    let out = clean(&mut command_in(&ns, &bin))
        .env("MSFILTER_SOCKET", dir.path().join("none.sock"))
        .env("MSFILTER_CONFIG", &example)
        .args(["doctor", "-j"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor -j: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let finding = |check: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == check)
            .unwrap_or_else(|| panic!("no {check} finding: {report:#}"))
            .clone()
    };
    assert_eq!(finding("daemon")["status"], "warn");
    assert_eq!(finding("kernel")["status"], "ok");
    let config = finding("config");
    assert_eq!(config["status"], "ok", "{config}");
    assert_eq!(config["found"], "valid: 1 interfaces, 3 groups");

    // The man pages are man pages, the bash completion is valid bash, the unit verifies.
    let page = ok(
        Command::new("gzip")
            .args(["-dc"])
            .arg(r.join("usr/share/man/man1/msfilter-doctor.1.gz"))
            .output()
            .unwrap(),
        "gzip -dc",
    );
    assert!(page.contains(".TH msfilter-doctor 1"), "{page}");
    assert!(page.contains("MSFILTER_CONFIG"), "{page}");
    ok(
        Command::new("bash")
            .arg("-n")
            .arg(r.join("usr/share/bash-completion/completions/msfilter"))
            .output()
            .unwrap(),
        "bash -n on the completion",
    );
    let unit = std::fs::read_to_string(r.join("lib/systemd/system/msfilter.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/msfilter daemon $MSFILTER_DAEMON_OPTS"));
    // systemd-analyze checks the unit offline (it needs the executable at its path).
    let local = dir.path().join("msfilter.service");
    std::fs::write(
        &local,
        unit.replace("/usr/bin/msfilter", bin.to_str().unwrap()),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&local)
        .output();
    match verify {
        Ok(out) => {
            ok(out, "systemd-analyze verify");
        }
        Err(e) => eprintln!("systemd-analyze not available ({e}): the unit's syntax is unchecked"),
    }
}
