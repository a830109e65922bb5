//! `cargo xtask setup`: makes this machine able to build and run msfilter. Each step checks
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
    say(TAG, format_args!("ready ({:.1?})", started.elapsed()));
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
