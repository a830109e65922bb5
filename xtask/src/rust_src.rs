//! The nightly's rust-src: `-Z build-std=core` compiles `core` for the BPF target from it.
//! Installed with rustup; where rustup cannot download it, from an archive of the same
//! component named by `MSFILTER_RUST_SRC_ARCHIVE`.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};

use crate::{cmd, nightly::Nightly, say, setup::TAG};

/// A `.tar.xz` of rust-src for the installed nightly whose top level is `library/`.
const ARCHIVE_VAR: &str = "MSFILTER_RUST_SRC_ARCHIVE";

pub fn ensure(nightly: &Nightly) -> Result<()> {
    let src = nightly.sysroot.join("lib/rustlib/src/rust");
    let core_manifest = src.join("library/core/Cargo.toml");
    if core_manifest.is_file() {
        say(TAG, "nightly rust-src: ok");
        return Ok(());
    }
    say(TAG, "nightly rust-src: missing, installing it with rustup");
    let rustup_error = match cmd::run(
        TAG,
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
    ) {
        Ok(()) if core_manifest.is_file() => {
            say(TAG, "nightly rust-src: installed");
            return Ok(());
        }
        Ok(()) => anyhow!(
            "it succeeded, but {} is still missing",
            core_manifest.display()
        ),
        Err(error) => error,
    };
    let Some(archive) = env::var_os(ARCHIVE_VAR).map(PathBuf::from) else {
        bail!(
            "the nightly's rust-src is missing and could not be installed:\n  \
             - with rustup: {rustup_error:#}\n  \
             - from an archive: {ARCHIVE_VAR} is not set\n\
             Fix what stopped rustup (network?) and rerun `cargo xtask setup`, or set \
             {ARCHIVE_VAR} to a .tar.xz of this nightly's rust-src whose top level is `library/`."
        );
    };
    say(
        TAG,
        format_args!(
            "rustup failed; unpacking {} ({ARCHIVE_VAR})",
            archive.display()
        ),
    );
    unpack(&archive, &src).map_err(|archive_error| {
        anyhow!(
            "the nightly's rust-src is missing and could not be installed:\n  \
             - with rustup: {rustup_error:#}\n  \
             - from {ARCHIVE_VAR}={}: {archive_error:#}\n\
             Fix either and rerun `cargo xtask setup`.",
            archive.display()
        )
    })?;
    say(TAG, "nightly rust-src: installed from the archive");
    Ok(())
}

/// Unpacks into a staging directory first, so an interrupted or broken unpack never leaves
/// a half tree that a later check would take for rust-src.
fn unpack(archive: &Path, src: &Path) -> Result<()> {
    ensure!(archive.is_file(), "no such file");
    let staging = src.join("unpacking");
    let library = src.join("library");
    for incomplete in [&staging, &library] {
        if incomplete.exists() {
            fs::remove_dir_all(incomplete)
                .with_context(|| format!("removing {}", incomplete.display()))?;
        }
    }
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    cmd::run(
        TAG,
        Command::new("tar")
            .arg("-xJf")
            .arg(archive)
            .arg("-C")
            .arg(&staging),
    )?;
    ensure!(
        staging.join("library/core/Cargo.toml").is_file(),
        "it has no library/core/Cargo.toml: the archive's top level must be `library/`"
    );
    fs::rename(staging.join("library"), &library)
        .with_context(|| format!("moving the unpacked tree to {}", library.display()))?;
    fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))
}
