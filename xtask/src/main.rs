//! `cargo xtask`: installs what building msfilter needs and runs its build, tests, demo,
//! benchmark, lints and packaging. Every step prints one `[command] ...` line; a failure says
//! what failed and what to do, and the exit status is non-zero.

mod bpf_linker;
mod cmd;
mod dist;
mod nightly;
mod rust_src;
mod setup;
mod tasks;

use std::{fmt::Display, path::Path, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "msfilter's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and running msfilter needs (checks first; idempotent).
    ///
    /// The nightly toolchain, its rust-src, bpf-linker for the nightly's LLVM in .toolchain/,
    /// a mounted bpffs. A second run only checks.
    Setup,
    /// Set up, then build the workspace (which builds and embeds the XDP program).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build the Debian package (target/dist/), then build and run every test (needs root:
    /// network namespaces and BPF; the package test installs that package into a scratch
    /// root).
    Test {
        /// Arguments for `cargo test`, after `--` (e.g. `-- --test integration end_to_end::`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, then run the demo (msfilter-demo) with these arguments.
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run the benchmark (msfilter-bench) with these arguments.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check formatting and run clippy on the workspace and on the XDP program.
    Lint,
    /// Build the release binary, man pages, shell completions and a Debian package
    /// (target/dist/msfilter_VERSION_ARCH.deb) that installs without a Rust toolchain.
    Dist,
}

fn main() -> ExitCode {
    let root = repo_root();
    let result = match Cli::parse().command {
        Command::Setup => setup::run(root),
        Command::Build { release } => tasks::build(root, release),
        Command::Test { args } => tasks::test(root, &args),
        Command::Demo { args } => tasks::run_bin(root, "msfilter-testbed", "msfilter-demo", &args),
        Command::Bench { args } => tasks::ensure_nftables()
            .and_then(|()| tasks::run_bin(root, "msfilter-bench", "msfilter-bench", &args)),
        Command::Lint => tasks::lint(root),
        Command::Dist => dist::run(root).map(drop),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("[xtask] error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask's own crate lives directly inside it.
fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest directory has a parent")
}

/// Prints one progress line, `[tag] message`.
fn say(tag: &str, message: impl Display) {
    println!("[{tag}] {message}");
}
