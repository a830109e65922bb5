//! Builds the XDP program (`filter-ebpf`) for the BPF target with the nightly toolchain and
//! leaves it in `OUT_DIR/msfilter-xdp`, where `src/datapath/mod.rs` embeds it (`OBJECT`), and
//! the follow-mode hooks (same package) in `OUT_DIR/msfilter-follow`, embedded by
//! `src/follow/hooks.rs`.
//!
//! Needs the nightly's rust-src and bpf-linker: `cargo xtask setup` installs both.
//! `AYA_BUILD_SKIP=1` skips the eBPF build (for `cargo check`-only setups); an empty
//! placeholder is then embedded and loading reports that the object is missing.

use std::{env, fs, path::PathBuf};

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        for object in ["msfilter-xdp", "msfilter-follow"].map(|name| out_dir.join(name)) {
            if !object.exists() {
                fs::write(&object, []).context("writing the placeholder eBPF object")?;
            }
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let ebpf_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?)
        .join("..")
        .join("filter-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path to filter-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "msfilter-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building the XDP program failed; if the nightly's rust-src or bpf-linker is missing, \
         run `cargo xtask setup`",
    )
}
