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

/// Runs one of the test bed's binaries (msfilter-demo, msfilter-bench), optimised. They
/// drive the `msfilter` binary, so that is built (optimised too) first.
pub fn run_bin(root: &Path, bin: &str, args: &[String]) -> Result<()> {
    setup::run(root)?;
    cmd::run(
        bin,
        cargo(root).args([
            "build",
            "--release",
            "-p",
            "filter-user",
            "--bin",
            "msfilter",
        ]),
    )?;
    cmd::run(
        bin,
        cargo(root)
            .args([
                "run",
                "--release",
                "-p",
                "msfilter-tests",
                "--bin",
                bin,
                "--",
            ])
            .args(args),
    )
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
            "clippy on the XDP program",
            nightly_clippy().and_then(|()| {
                cmd::run(
                    LINT,
                    cargo(root).args([
                        "+nightly",
                        "clippy",
                        "-p",
                        "filter-ebpf",
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
