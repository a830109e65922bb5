//! `cargo xtask setup`: makes this machine able to build, run and test msfilter. Each step checks
//! first and installs only what is missing, so a second run only checks (well under a second
//! after xtask itself is built).

use std::{fs, path::Path, process::Command, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::{bpf_linker, cmd, nightly::Nightly, rust_src, say};

pub const TAG: &str = "setup";

const BPFFS: &str = "/sys/fs/bpf";

pub fn run(root: &Path) -> Result<()> {
    let started = Instant::now();
    rustup()?;
    let nightly = nightly()?;
    rust_src::ensure(&nightly)?;
    bpf_linker::ensure(root, &nightly)?;
    bpffs()?;
    // Only the tests need it: a build goes on without it, `cargo xtask test` does not.
    if let Err(e) = prometheus_parser() {
        say(TAG, format_args!("{e:#}"));
    }
    say(TAG, format_args!("ready ({:.1?})", started.elapsed()));
    Ok(())
}

/// The Python module the metrics test parses the daemon's exposition with.
const PROMETHEUS_MODULE: &str = "prometheus_client";
/// Its package on PyPI, and in Debian.
const PROMETHEUS_PYPI: &str = "prometheus_client";
const PROMETHEUS_DEBIAN: &str = "python3-prometheus-client";

fn prometheus_parser_present() -> bool {
    cmd::output(Command::new("python3").args([
        "-c",
        "import prometheus_client.parser, prometheus_client.openmetrics.parser",
    ]))
    .is_ok()
}

/// `prometheus_client` for `python3`, the parsers the metrics test checks the daemon's
/// exposition with: installed with pip for the `python3` on PATH, else Debian's package
/// (for a system Python that pip may not change).
pub fn prometheus_parser() -> Result<()> {
    if prometheus_parser_present() {
        say(TAG, format_args!("python3 {PROMETHEUS_MODULE}: ok"));
        return Ok(());
    }
    cmd::output(Command::new("python3").arg("--version")).context(
        "python3 is missing: the metrics test parses the daemon's metrics with Python's \
         prometheus_client; install python3 and rerun `cargo xtask setup`",
    )?;
    say(
        TAG,
        format_args!("python3 {PROMETHEUS_MODULE}: missing, installing it"),
    );
    let pip = cmd::run(
        TAG,
        Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            PROMETHEUS_PYPI,
        ]),
    );
    if pip.is_err() && is_root()? {
        let _ = cmd::run(
            TAG,
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "--no-install-recommends",
                    PROMETHEUS_DEBIAN,
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        );
    }
    if !prometheus_parser_present() {
        bail!(
            "python3 {PROMETHEUS_MODULE}: could not be installed; the metrics test needs it \
             (`python3 -m pip install {PROMETHEUS_PYPI}`, or `apt-get install \
             {PROMETHEUS_DEBIAN}` for the system python3), then rerun `cargo xtask setup`"
        );
    }
    say(TAG, format_args!("python3 {PROMETHEUS_MODULE}: installed"));
    Ok(())
}

fn rustup() -> Result<()> {
    let version = cmd::output(Command::new("rustup").arg("--version")).context(
        "rustup is needed (it provides the nightly toolchain the XDP program is built with): \
         install it (https://rustup.rs), then rerun `cargo xtask setup`",
    )?;
    say(TAG, format_args!("{}: ok", version.trim()));
    Ok(())
}

fn nightly() -> Result<Nightly> {
    let nightly = match Nightly::query() {
        Ok(nightly) => nightly,
        Err(_) => {
            say(TAG, "nightly toolchain: missing, installing it");
            cmd::run(
                TAG,
                Command::new("rustup").args([
                    "toolchain",
                    "install",
                    "nightly",
                    "--profile",
                    "minimal",
                ]),
            )
            .context(
                "installing the nightly toolchain failed; fix that and rerun `cargo xtask setup`",
            )?;
            Nightly::query().context("the nightly toolchain does not work after installing it")?
        }
    };
    say(
        TAG,
        format_args!(
            "nightly toolchain: {}, LLVM {}: ok",
            nightly.release, nightly.llvm_version
        ),
    );
    Ok(nightly)
}

/// The BPF filesystem, where msfilter pins its program, link and maps.
fn bpffs() -> Result<()> {
    if bpffs_mounted()? {
        say(TAG, format_args!("bpffs on {BPFFS}: ok"));
    } else if is_root()? {
        say(
            TAG,
            format_args!("bpffs on {BPFFS}: not mounted, mounting it"),
        );
        cmd::run(TAG, Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
            .context("mounting the BPF filesystem failed")?;
    } else {
        say(
            TAG,
            format_args!(
                "bpffs on {BPFFS}: not mounted; msfilter needs it (as root: mount -t bpf bpf {BPFFS})"
            ),
        );
    }
    Ok(())
}

fn bpffs_mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    // Each line: device, mount point, filesystem type, options, ...
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(BPFFS) && fields.next() == Some("bpf")
    }))
}

/// Whether this process runs with effective user id 0.
pub fn is_root() -> Result<bool> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let Some(uids) = status.lines().find_map(|line| line.strip_prefix("Uid:")) else {
        bail!("/proc/self/status has no Uid line");
    };
    // Real, effective, saved, filesystem.
    Ok(uids.split_whitespace().nth(1) == Some("0"))
}
