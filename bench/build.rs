//! Builds the reference XDP programs (`bench-ebpf`) and leaves them in `OUT_DIR/bench-xdp`,
//! as filter-user's build script does for msfilter's own program.

use std::{env, fs, path::PathBuf};

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        let object = out_dir.join("bench-xdp");
        if !object.exists() {
            fs::write(&object, []).context("writing the placeholder eBPF object")?;
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?)
        .join("..")
        .join("bench-ebpf");
    let dir = dir.to_str().context("non-UTF-8 path to bench-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "bench-ebpf",
            root_dir: dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the reference XDP programs failed; run `cargo xtask setup` first")
}
