//! `msfilter doctor`: the host's findings, for people or as JSON (`-j`); exit status 1 when a
//! check fails.

use std::{
    io::{self, Write as _},
    path::PathBuf,
};

use anyhow::Context as _;
use clap::Args;
use msfilter::{
    daemon,
    doctor::{self, DoctorOptions, Status},
};

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// Only these interfaces (default: those msfilter manages or is configured with, or
    /// every interface but loopback when there are none).
    ifaces: Vec<String>,
    /// Where the daemon pins its objects (checked to be on a BPF filesystem).
    #[arg(long, env = "MSFILTER_PIN_DIR", default_value = daemon::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// The daemon's configuration file: checked, with the limits its source lists need.
    #[arg(long, env = "MSFILTER_CONFIG")]
    config: Option<PathBuf>,
}

pub(crate) async fn run(args: DoctorArgs, socket: PathBuf, json: bool) -> anyhow::Result<()> {
    let report = doctor::run(&DoctorOptions {
        socket,
        pin_dir: args.pin_dir,
        config: args.config,
        interfaces: args.ifaces,
    })
    .await?;
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)
    } else {
        out.write_all(report.to_text().as_bytes())
    }
    .context("writing the report")?;
    if report.status == Status::Fail {
        anyhow::bail!("{} of the checks failed", report.summary.fail);
    }
    Ok(())
}
