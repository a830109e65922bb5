//! `cargo xtask dist`: the release binary (XDP program embedded), its man pages and shell
//! completions, and a Debian package that installs them with the systemd unit, an example
//! configuration and the copyright file. The package needs neither Rust nor bpf-linker on
//! the host it is installed on.
//!
//! Everything is rebuilt from scratch under `target/dist/` on every run (idempotent): the
//! staging tree `target/dist/root/`, then `target/dist/msfilter_VERSION_ARCH.deb`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{cmd, say, setup};

const TAG: &str = "dist";
const PACKAGE: &str = "msfilter";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const MAINTAINER: &str = "msfilter maintainers <maintainers@msfilter.invalid>";

/// Every file the package installs, by destination; also what the package test checks.
const SHELLS: [(&str, &str, &str); 3] = [
    (
        "bash",
        "msfilter.bash",
        "usr/share/bash-completion/completions/msfilter",
    ),
    (
        "zsh",
        "_msfilter",
        "usr/share/zsh/vendor-completions/_msfilter",
    ),
    (
        "fish",
        "msfilter.fish",
        "usr/share/fish/vendor_completions.d/msfilter.fish",
    ),
];

/// Where `cargo xtask dist` writes the package.
pub fn package_path(root: &Path, arch: &str) -> PathBuf {
    root.join("target/dist")
        .join(format!("{PACKAGE}_{VERSION}_{arch}.deb"))
}

/// Set up, then build the package.
pub fn run(root: &Path) -> Result<PathBuf> {
    setup::run(root)?;
    build(root)
}

/// Build the package (the toolchain set up already).
pub fn build(root: &Path) -> Result<PathBuf> {
    for tool in ["dpkg-deb", "dpkg", "objdump", "strip", "gzip", "md5sum"] {
        which(tool).with_context(|| {
            format!(
                "`{tool}` is needed to build the package (Debian: apt-get install dpkg-dev \
                 binutils gzip coreutils)"
            )
        })?;
    }
    cmd::run(
        TAG,
        Command::new("cargo").current_dir(root).args([
            "build",
            "--release",
            "-p",
            "msfilter",
            "--bin",
            "msfilter",
        ]),
    )
    .context("building the release binary failed")?;
    let binary = root.join("target/release/msfilter");
    let arch = cmd::output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();

    let dist = root.join("target/dist");
    let stage = dist.join("root");
    let generated = dist.join("generated");
    for dir in [&stage, &generated] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }

    // The binary, without its symbol table (as Debian packages ship binaries).
    let installed = stage.join("usr/bin/msfilter");
    install(&binary, &installed, 0o755)?;
    cmd::output(
        Command::new("strip")
            .arg("--strip-unneeded")
            .arg(&installed),
    )
    .context("stripping the binary")?;

    // Man pages and completions, from the binary's own clap definitions.
    let man = generated.join("man");
    cmd::run(
        TAG,
        Command::new(&binary).args(["generate", "man"]).arg(&man),
    )?;
    let man1 = stage.join("usr/share/man/man1");
    let mut pages = Vec::new();
    for entry in fs::read_dir(&man).with_context(|| format!("reading {}", man.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        install(&path, &man1.join(&name), 0o644)?;
        pages.push(name);
    }
    ensure!(
        pages.iter().any(|p| p == "msfilter.1"),
        "`msfilter generate man` wrote no msfilter.1"
    );
    let mut gzip = Command::new("gzip");
    gzip.args(["-9nf"]);
    for p in &pages {
        gzip.arg(man1.join(p));
    }
    cmd::output(&mut gzip).context("compressing the man pages")?;
    let completions = generated.join("completions");
    for (shell, file, dest) in SHELLS {
        cmd::output(
            Command::new(&binary)
                .args(["generate", "completions", shell])
                .arg(&completions),
        )?;
        install(&completions.join(file), &stage.join(dest), 0o644)?;
    }

    // The unit, its defaults file, the documentation.
    install(
        &root.join("dist/systemd/msfilter.service"),
        &stage.join("lib/systemd/system/msfilter.service"),
        0o644,
    )?;
    install(
        &root.join("dist/debian/default"),
        &stage.join("etc/default/msfilter"),
        0o644,
    )?;
    let doc = stage.join("usr/share/doc/msfilter");
    install(
        &root.join("dist/msfilter.toml.example"),
        &doc.join("msfilter.toml.example"),
        0o644,
    )?;
    for page in ["operations.md", "config.md", "protocol.md"] {
        install(&root.join("docs").join(page), &doc.join(page), 0o644)?;
    }
    install(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    let copyright = doc.join("copyright");
    fs::write(&copyright, copyright_text(root)?)
        .with_context(|| format!("writing {}", copyright.display()))?;

    // DEBIAN/: control, conffiles, md5sums.
    let files = files_of(&stage)?;
    let control_dir = stage.join("DEBIAN");
    fs::create_dir_all(&control_dir)?;
    fs::write(
        control_dir.join("control"),
        control(&arch, &depends(&binary)?, installed_size(&stage)?),
    )?;
    fs::write(control_dir.join("conffiles"), "/etc/default/msfilter\n")?;
    let mut md5 = Command::new("md5sum");
    md5.current_dir(&stage)
        .args(files.iter().filter(|f| !f.starts_with("etc/")));
    fs::write(control_dir.join("md5sums"), cmd::output(&mut md5)?)?;

    // Packages of earlier versions go too: target/dist holds one package.
    for entry in fs::read_dir(&dist)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let deb = package_path(root, &arch);
    cmd::run(
        TAG,
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )
    .context("dpkg-deb could not build the package")?;
    let size = fs::metadata(&deb)?.len();
    say(
        TAG,
        format_args!(
            "wrote {} ({} KiB, {} files: /usr/bin/msfilter, the unit, {} man pages, bash/zsh/fish \
             completions, docs)",
            deb.display(),
            size / 1024,
            files.len(),
            pages.len()
        ),
    );
    Ok(deb)
}

fn which(tool: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    ensure!(found, "`{tool}` is not on PATH");
    Ok(())
}

/// Copy `from` to `to` (creating directories) with `mode`.
fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Every file under `stage`, relative, sorted.
fn files_of(stage: &Path) -> Result<Vec<String>> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) -> Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, base, out)?;
            } else {
                out.push(
                    path.strip_prefix(base)
                        .expect("under the base")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(stage, stage, &mut out)?;
    out.sort();
    Ok(out)
}

/// Installed-Size: KiB, rounded up per file, as dpkg-gencontrol counts.
fn installed_size(stage: &Path) -> Result<u64> {
    let mut kib = 0;
    for f in files_of(stage)? {
        kib += fs::metadata(stage.join(f))?.len().div_ceil(1024);
    }
    Ok(kib)
}

fn control(arch: &str, depends: &str, size: u64) -> String {
    format!(
        "Package: {PACKAGE}\n\
         Version: {VERSION}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {size}\n\
         Depends: {depends}\n\
         Section: net\n\
         Priority: optional\n\
         Description: multicast source filter at XDP, in step with the kernel\n \
         msfilter drops unwanted multicast sources in XDP, before the network stack, while\n \
         keeping the application's source policy and the kernel's own membership state\n \
         (IGMPv3/MLDv2) exactly in step. The daemon applies every request as the real\n \
         socket option, merges all clients' filters (RFC 3376) and writes the XDP maps by\n \
         difference; its pins keep XDP enforcing across restarts.\n \
         .\n \
         This package holds the msfilter command and daemon (the XDP program is built in),\n \
         a systemd unit, man pages and shell completions.\n"
    )
}

/// The packages the binary's shared libraries come from, with the least versions its
/// symbol references need (as `objdump -p` reports them).
fn depends(binary: &Path) -> Result<String> {
    let dump = cmd::output(Command::new("objdump").arg("-p").arg(binary))?;
    let (needed, versions) = parse_dynamic(&dump);
    let mut packages: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for lib in &needed {
        let (package, prefix) = match lib.as_str() {
            "libc.so.6"
            | "libm.so.6"
            | "libpthread.so.0"
            | "libdl.so.2"
            | "librt.so.1"
            | "libutil.so.1"
            | "ld-linux-x86-64.so.2"
            | "ld-linux-aarch64.so.1" => ("libc6", "GLIBC_"),
            "libgcc_s.so.1" => ("libgcc-s1", "GCC_"),
            other => bail!(
                "the binary needs {other}, and this packaging does not know which Debian \
                 package provides it: add it to xtask/src/dist.rs"
            ),
        };
        let least = versions
            .iter()
            .filter(|(l, _)| l == lib)
            .filter_map(|(_, v)| v.strip_prefix(prefix))
            .filter_map(version_key)
            .max();
        let entry = packages.entry(package).or_default();
        if let Some(v) = least {
            let v = v
                .iter()
                .take(2)
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(".");
            if entry
                .as_ref()
                .is_none_or(|old| version_key(old) < version_key(&v))
            {
                *entry = Some(v);
            }
        }
    }
    ensure!(
        packages.contains_key("libc6"),
        "objdump -p shows no libc.so.6 among the binary's libraries: is it dynamically linked?"
    );
    Ok(packages
        .into_iter()
        .map(|(p, v)| match v {
            Some(v) => format!("{p} (>= {v})"),
            None => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", "))
}

fn version_key(v: &str) -> Option<Vec<u32>> {
    v.split('.').map(|p| p.parse().ok()).collect()
}

/// `NEEDED` libraries and (library, symbol version) references from `objdump -p` text.
fn parse_dynamic(dump: &str) -> (BTreeSet<String>, Vec<(String, String)>) {
    let mut needed = BTreeSet::new();
    let mut versions = Vec::new();
    let mut from: Option<String> = None;
    for line in dump.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["NEEDED", lib] => {
                needed.insert(lib.to_string());
            }
            ["required", "from", lib] => from = Some(lib.trim_end_matches(':').to_string()),
            [_, _, _, version] if from.is_some() && line.starts_with("    ") => {
                versions.push((from.clone().expect("checked"), version.to_string()));
            }
            _ => {}
        }
    }
    (needed, versions)
}

/// The copyright file (machine-readable format): msfilter's licence and the crates built
/// into the binary with theirs.
fn copyright_text(root: &Path) -> Result<String> {
    let crates = bundled_crates(root)?;
    let mut text = String::from(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: msfilter\n\
         \n\
         Files: *\n\
         Copyright: msfilter developers\n\
         License: MIT or Apache-2.0\n\
         Comment: /usr/bin/msfilter is built from these Rust crates (build-time macros\n \
         included), each under the licence given (SPDX expressions, from their Cargo.toml):\n \
         .\n",
    );
    for (name, version, license) in crates {
        text.push_str(&format!(" {name} {version}: {license}\n"));
    }
    text.push_str(
        "\nLicense: MIT\n \
         Permission is hereby granted, free of charge, to any person obtaining a copy of this\n \
         software and associated documentation files (the \"Software\"), to deal in the Software\n \
         without restriction, including without limitation the rights to use, copy, modify,\n \
         merge, publish, distribute, sublicense, and/or sell copies of the Software, and to\n \
         permit persons to whom the Software is furnished to do so, subject to the following\n \
         conditions:\n \
         .\n \
         The above copyright notice and this permission notice shall be included in all copies\n \
         or substantial portions of the Software.\n \
         .\n \
         THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,\n \
         INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A\n \
         PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT\n \
         HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF\n \
         CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE\n \
         OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.\n\
         \n\
         License: Apache-2.0\n \
         On Debian systems the full text of the Apache License 2.0 is in\n \
         /usr/share/common-licenses/Apache-2.0.\n",
    );
    Ok(text)
}

/// (name, version, licence) of every crate in msfilter's normal dependency graph, for the
/// host target, from `cargo metadata`.
fn bundled_crates(root: &Path) -> Result<Vec<(String, String, String)>> {
    let host = cmd::output(Command::new("rustc").arg("-vV"))?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV names no host")?;
    let json = cmd::output(Command::new("cargo").current_dir(root).args([
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--filter-platform",
        &host,
    ]))?;
    let meta: serde_json::Value = serde_json::from_str(&json).context("cargo metadata")?;
    let packages: BTreeMap<&str, &serde_json::Value> = meta["packages"]
        .as_array()
        .context("cargo metadata: no packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata: no resolve graph")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let start = packages
        .iter()
        .find(|(_, p)| p["name"] == PACKAGE && p["source"].is_null())
        .map(|(id, _)| *id)
        .context("cargo metadata: no msfilter package")?;
    let mut seen = BTreeSet::from([start]);
    let mut queue = vec![start];
    while let Some(id) = queue.pop() {
        for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            if let Some(pkg) = dep["pkg"].as_str()
                && normal
                && seen.insert(pkg)
            {
                queue.push(pkg);
            }
        }
    }
    let mut out: Vec<(String, String, String)> = seen
        .into_iter()
        .filter(|id| *id != start)
        .map(|id| {
            let p = packages[id];
            (
                p["name"].as_str().unwrap_or("?").to_string(),
                p["version"].as_str().unwrap_or("?").to_string(),
                p["license"].as_str().unwrap_or("unknown").to_string(),
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJDUMP: &str = "
Dynamic Section:
  NEEDED               libgcc_s.so.1
  NEEDED               libc.so.6
  NEEDED               ld-linux-x86-64.so.2

Version References:
  required from ld-linux-x86-64.so.2:
    0x0d696913 0x00 09 GLIBC_2.3
  required from libgcc_s.so.1:
    0x0b792650 0x00 06 GCC_3.0
    0x0b792652 0x00 12 GCC_4.2.0
  required from libc.so.6:
    0x06969194 0x00 13 GLIBC_2.14
    0x069691b4 0x00 05 GLIBC_2.34
    0x09691a75 0x00 03 GLIBC_2.2.5
";

    #[test]
    fn dynamic_section() {
        let (needed, versions) = parse_dynamic(OBJDUMP);
        assert_eq!(
            needed.into_iter().collect::<Vec<_>>(),
            ["ld-linux-x86-64.so.2", "libc.so.6", "libgcc_s.so.1"]
        );
        assert!(versions.contains(&("libc.so.6".into(), "GLIBC_2.34".into())));
        assert!(versions.contains(&("libgcc_s.so.1".into(), "GCC_4.2.0".into())));
        assert_eq!(versions.len(), 6);
    }

    #[test]
    fn control_file_fields() {
        let c = control("amd64", "libc6 (>= 2.34)", 9000);
        assert!(c.starts_with("Package: msfilter\nVersion: "));
        assert!(c.contains("\nArchitecture: amd64\n"));
        assert!(c.contains("\nDepends: libc6 (>= 2.34)\n"));
        // Every continuation line of the description starts with a space.
        let description = c.split("Description: ").nth(1).unwrap();
        assert!(
            description.lines().skip(1).all(|l| l.starts_with(' ')),
            "{c}"
        );
        assert!(c.ends_with('\n'));
    }
}
