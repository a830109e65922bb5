//! bpf-linker, built against the nightly's own LLVM into the project-local prefix
//! `.toolchain/` (where `xtask/bpf-linker-wrapper`, the BPF target's linker, finds it).
//!
//! bpf-linker links LLVM dynamically and finds it through `$LLVM_PREFIX`: `bin/llvm-config`
//! must exist and `lib/` must hold the library. The nightly ships its LLVM as
//! `<sysroot>/lib/libLLVM.so.<version>-rust-<release>`, so `.toolchain/llvm/` is a prefix made
//! of a stand-in llvm-config and symlinks to that library. A stamp records which nightly the
//! binary was built for; a new nightly (new LLVM) means a rebuild.

use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, ensure};

use crate::{cmd, nightly::Nightly, say, setup::TAG};

const VERSION: &str = "0.13.0";

pub fn ensure(root: &Path, nightly: &Nightly) -> Result<()> {
    let toolchain = root.join(".toolchain");
    let linker = toolchain.join("bin/bpf-linker");
    let stamp_file = toolchain.join("bpf-linker.stamp");
    let stamp = format!(
        "{}\nLLVM version: {}\nbpf-linker {VERSION}\n",
        nightly.commit_hash, nightly.llvm_version
    );
    let reason = match fs::read_to_string(&stamp_file) {
        Err(_) => "not built by setup yet",
        Ok(built) if built != stamp => "the nightly changed since it was built",
        Ok(_) if version(&linker).is_err() => "it does not run",
        Ok(_) => {
            say(
                TAG,
                format_args!(
                    "bpf-linker {VERSION} for LLVM {}: ok ({})",
                    nightly.llvm_version,
                    linker.display()
                ),
            );
            return Ok(());
        }
    };
    say(
        TAG,
        format_args!(
            "bpf-linker {VERSION} for LLVM {}: building ({reason}; takes a minute or more)",
            nightly.llvm_version
        ),
    );
    let prefix = toolchain.join("llvm");
    make_llvm_prefix(&prefix, nightly)
        .with_context(|| format!("preparing the LLVM prefix {}", prefix.display()))?;
    cmd::run(
        TAG,
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "bpf-linker",
                "--version",
                VERSION,
                "--locked",
                "--force",
            ])
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{}", nightly.llvm_major()))
            .arg("--root")
            .arg(&toolchain),
    )
    .context(
        "building bpf-linker failed (see cargo's messages above); crates.io must be \
         reachable. Fix that and rerun `cargo xtask setup`",
    )?;
    let built = version(&linker).context("the freshly built bpf-linker does not run")?;
    fs::write(&stamp_file, stamp).with_context(|| format!("writing {}", stamp_file.display()))?;
    say(
        TAG,
        format_args!(
            "{built}: built ({}; the BPF target's linker wrapper finds it there, no PATH change \
             needed)",
            linker.display()
        ),
    );
    Ok(())
}

/// What `bpf-linker --version` prints, if it runs.
fn version(linker: &Path) -> Result<String> {
    Ok(cmd::output(Command::new(linker).arg("--version"))?
        .trim()
        .to_owned())
}

/// Lays out `prefix` anew: `bin/llvm-config` printing the nightly's LLVM version, and
/// `lib/libLLVM.so` plus `lib/<the library's own name>` pointing at the nightly's library.
fn make_llvm_prefix(prefix: &Path, nightly: &Nightly) -> Result<()> {
    let library = nightly_libllvm(nightly)?;
    if prefix.exists() {
        fs::remove_dir_all(prefix)?;
    }
    let (bin, lib) = (prefix.join("bin"), prefix.join("lib"));
    fs::create_dir_all(&bin)?;
    fs::create_dir_all(&lib)?;
    let llvm_config = bin.join("llvm-config");
    fs::write(
        &llvm_config,
        format!("#!/bin/sh\necho {}\n", nightly.llvm_version),
    )?;
    fs::set_permissions(&llvm_config, fs::Permissions::from_mode(0o755))?;
    symlink(&library, lib.join("libLLVM.so"))?;
    symlink(
        &library,
        lib.join(library.file_name().context("no file name")?),
    )?;
    Ok(())
}

/// `<sysroot>/lib/libLLVM.so.*`: the nightly's LLVM.
fn nightly_libllvm(nightly: &Nightly) -> Result<PathBuf> {
    let lib = nightly.sysroot.join("lib");
    let mut found = Vec::new();
    for entry in fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("libLLVM.so."))
        {
            found.push(path);
        }
    }
    ensure!(
        found.len() == 1,
        "expected exactly one libLLVM.so.* in {}, found {found:?}",
        lib.display()
    );
    Ok(found.remove(0))
}
