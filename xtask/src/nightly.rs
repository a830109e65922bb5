//! What rustup's `nightly` toolchain is: aya-build compiles the XDP program with it, and
//! bpf-linker must use the very LLVM it ships.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::cmd;

#[derive(Debug)]
pub struct Nightly {
    /// `rustc -vV`'s first line, e.g. `rustc 1.97.0-nightly (e50aa6fba 2026-05-19)`.
    pub release: String,
    /// `rustc -vV`'s `commit-hash: ...` line: it changes with every nightly.
    pub commit_hash: String,
    /// e.g. `22.1.4`.
    pub llvm_version: String,
    pub sysroot: PathBuf,
}

impl Nightly {
    /// Asks the installed `nightly` toolchain; fails when there is none (rustup is told not
    /// to install it on the fly: installing is setup's decision).
    pub fn query() -> Result<Self> {
        let verbose_version = cmd::output(rustc().arg("-vV"))?;
        let sysroot = cmd::output(rustc().args(["--print", "sysroot"]))?;
        Self::parse(&verbose_version, sysroot.trim())
    }

    fn parse(verbose_version: &str, sysroot: &str) -> Result<Self> {
        let line = |key: &str| {
            verbose_version
                .lines()
                .find(|line| line.starts_with(key))
                .with_context(|| format!("`rustc +nightly -vV` printed no `{key}` line"))
        };
        Ok(Self {
            release: line("rustc ")?.to_owned(),
            commit_hash: line("commit-hash: ")?.to_owned(),
            llvm_version: line("LLVM version: ")?["LLVM version: ".len()..]
                .trim()
                .to_owned(),
            sysroot: PathBuf::from(sysroot),
        })
    }

    /// The LLVM major version, which names bpf-linker's feature (`llvm-22`).
    pub fn llvm_major(&self) -> &str {
        self.llvm_version
            .split('.')
            .next()
            .unwrap_or(&self.llvm_version)
    }
}

fn rustc() -> Command {
    let mut rustc = Command::new("rustc");
    rustc.arg("+nightly").env("RUSTUP_AUTO_INSTALL", "0");
    rustc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rustc_verbose_version() {
        let output = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\n\
                      binary: rustc\n\
                      commit-hash: e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a\n\
                      commit-date: 2026-05-19\n\
                      host: x86_64-unknown-linux-gnu\n\
                      release: 1.97.0-nightly\n\
                      LLVM version: 22.1.4\n";
        let nightly = Nightly::parse(output, "/sysroot").unwrap();
        assert_eq!(
            nightly.release,
            "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)"
        );
        assert_eq!(
            nightly.commit_hash,
            "commit-hash: e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a"
        );
        assert_eq!(nightly.llvm_version, "22.1.4");
        assert_eq!(nightly.llvm_major(), "22");
        assert_eq!(nightly.sysroot, PathBuf::from("/sysroot"));
    }

    #[test]
    fn missing_llvm_version_is_an_error() {
        let error = Nightly::parse("rustc 1.97.0-nightly\ncommit-hash: abc\n", "/s").unwrap_err();
        assert!(error.to_string().contains("LLVM version"), "{error}");
    }
}
