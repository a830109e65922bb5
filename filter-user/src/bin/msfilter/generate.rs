//! `msfilter generate` (hidden): the man pages and shell completions, generated from the
//! CLI's own clap definitions, for `cargo xtask dist`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use clap_complete::Shell;

#[derive(Debug, Subcommand)]
pub(crate) enum GenerateCommand {
    /// One man page per command, all in section 1 (msfilter.1, msfilter-join.1, ...).
    Man {
        /// The directory to write them to (created if missing).
        dir: PathBuf,
    },
    /// The completion script of SHELL.
    Completions {
        shell: Shell,
        /// The directory to write it to (created if missing).
        dir: PathBuf,
    },
}

pub(crate) fn run(cli: clap::Command, what: &GenerateCommand) -> anyhow::Result<()> {
    let create = |dir: &Path| {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
    };
    match what {
        GenerateCommand::Man { dir } => {
            create(dir)?;
            clap_mangen::generate_to(cli, dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
        }
        GenerateCommand::Completions { shell, dir } => {
            create(dir)?;
            let mut cli = cli;
            let path = clap_complete::generate_to(*shell, &mut cli, "msfilter", dir)
                .with_context(|| format!("writing {shell} completions to {}", dir.display()))?;
            println!("{}", path.display());
        }
    }
    Ok(())
}
