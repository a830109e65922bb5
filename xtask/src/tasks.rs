//! The commands that use the toolchain: build, test, demo/bench, lint. Each runs setup first
//! (the workspace build compiles the XDP program, which needs it) and runs cargo at the
//! workspace root. Only the default members are built: the eBPF crate builds for the BPF
//! target only, through filter-user's build script.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, say, setup};

const TEST: &str = "test";
const LINT: &str = "lint";

pub fn build(root: &Path, release: bool) -> Result<()> {
    setup::run(root)?;
    cmd::run(
        "build",
        cargo(root)
            .arg("build")
            .args(release.then_some("--release")),
    )
}

pub fn test(root: &Path, args: &[String]) -> Result<()> {
    if !setup::is_root()? {
        bail!("the tests need root: network namespaces and BPF; run `cargo xtask test` as root");
    }
    setup::run(root)?;
    setup::prometheus_parser().context("FAILED: the metrics test cannot run")?;
    // The package test installs what `cargo xtask dist` builds, so build it first.
    crate::dist::build(root).context("FAILED: the package does not build")?;
    cmd::run(TEST, cargo(root).arg("build").env("RUST_BACKTRACE", "1"))
        .context("FAILED: the workspace does not build")?;
    cmd::run(
        TEST,
        cargo(root)
            .args(["test", "--no-fail-fast"])
            .args(args)
            .env("RUST_BACKTRACE", "1"),
    )
    .context("FAILED: not every test passed (cargo lists the failures above)")?;
    say(TEST, "passed: the workspace builds and every test passed");
    Ok(())
}

/// Runs the demo or the benchmark binary of `package`, optimised. They drive the `msfilter`
/// binary, so that is built (optimised too) first.
pub fn run_bin(root: &Path, package: &str, bin: &str, args: &[String]) -> Result<()> {
    setup::run(root)?;
    cmd::run(
        bin,
        cargo(root).args(["build", "--release", "-p", "msfilter", "--bin", "msfilter"]),
    )?;
    cmd::run(
        bin,
        cargo(root)
            .args(["run", "--release", "-p", package, "--bin", bin, "--"])
            .args(args),
    )
}

/// The benchmark compares msfilter with nftables: install it (Debian's package) if `nft` is
/// missing.
pub fn ensure_nftables() -> Result<()> {
    const TAG: &str = "bench";
    if cmd::output(Command::new("nft").arg("--version")).is_ok() {
        say(TAG, "nftables: present");
        return Ok(());
    }
    say(TAG, "nftables: missing, installing it with apt-get");
    cmd::run(
        TAG,
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "nftables"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .or_else(|_| {
        cmd::run(TAG, Command::new("apt-get").arg("update"))?;
        cmd::run(
            TAG,
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "nftables"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    })
    .context("installing nftables failed: install it by hand (the `nft` command) and run again")
}

/// Formatting, clippy on the workspace, and clippy on the XDP program for the BPF target.
/// Runs every check, then reports all that failed.
pub fn lint(root: &Path) -> Result<()> {
    setup::run(root)?;
    let checks = [
        (
            "formatting",
            cmd::run(LINT, cargo(root).args(["fmt", "--all", "--check"])),
        ),
        (
            "clippy",
            cmd::run(
                LINT,
                cargo(root).args(["clippy", "--all-targets", "--", "-D", "warnings"]),
            ),
        ),
        (
            "clippy on the XDP programs",
            nightly_clippy().and_then(|()| {
                cmd::run(
                    LINT,
                    cargo(root).args([
                        "+nightly",
                        "clippy",
                        "-p",
                        "msfilter-ebpf",
                        "-p",
                        "bench-ebpf",
                        "--target",
                        "bpfel-unknown-none",
                        "-Z",
                        "build-std=core",
                        "--",
                        "-D",
                        "warnings",
                    ]),
                )
            }),
        ),
    ];
    let mut failed = Vec::new();
    for (check, result) in checks {
        if let Err(error) = result {
            say(LINT, format_args!("{check}: {error:#}"));
            failed.push(check);
        }
    }
    if !failed.is_empty() {
        bail!("FAILED: {}", failed.join(", "));
    }
    say(LINT, "passed: formatting and clippy");
    Ok(())
}

/// The nightly may have been installed with the minimal profile, which has no clippy.
fn nightly_clippy() -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if !installed.lines().any(|line| line.starts_with("clippy")) {
        cmd::run(
            LINT,
            Command::new("rustup").args(["component", "add", "clippy", "--toolchain", "nightly"]),
        )?;
    }
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut cargo = Command::new("cargo");
    cargo.current_dir(root);
    cargo
}
