//! `msfilter doctor`: what on this host keeps msfilter from filtering as asked.
//!
//! The doctor gathers facts ([`Facts`]: kernel files, sysctls, the kernel's netlink reports,
//! the daemon's view when it answers) and evaluates them with pure functions
//! ([`evaluate`]) into [`Finding`]s: a check name, a status (ok, warn, fail), what was
//! found and what to do. Nothing is changed on the host, and nothing is attached to any
//! interface: driver-mode XDP support is the kernel's own report (`netdev` netlink family).
//!
//! * `checks`: the evaluations, each tested on sample inputs.
//! * `host`: reading the facts from this host and the daemon.
//! * `parse`: parsers of the kernel's text files (the group listings are
//!   [`crate::iface::groups`]'s, the driver's XDP support [`crate::iface::xdp_features`]).
//! * [`capabilities`]: what the daemon needs, checked at its start.

pub mod capabilities;
mod checks;
mod host;
mod parse;

use std::{fmt::Write as _, io, path::PathBuf};

pub use checks::{
    ConfigFacts, DaemonFacts, DaemonView, Facts, Interface, ManagedGroup, Sysctl, Sysctls,
    XdpProgram, evaluate,
};
use serde::Serialize;

/// Errors of the doctor's own work (a fact that cannot be read becomes a finding instead).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("starting the doctor's runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("listing the interfaces: {0}")]
    Interfaces(#[source] io::Error),
    #[error("no interface named {0:?}")]
    NoSuchInterface(String),
    #[error("writing the report: {0}")]
    Output(#[source] io::Error),
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One finding: which check, about what (an interface, a group), what was found, and what
/// to do (`None` when nothing needs doing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub found: String,
    pub action: Option<String>,
}

impl Finding {
    pub fn ok(check: &'static str, found: impl Into<String>) -> Self {
        Self {
            check,
            status: Status::Ok,
            subject: None,
            found: found.into(),
            action: None,
        }
    }

    pub fn warn(check: &'static str, found: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            status: Status::Warn,
            action: Some(action.into()),
            ..Self::ok(check, found)
        }
    }

    pub fn fail(check: &'static str, found: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            status: Status::Fail,
            ..Self::warn(check, found, action)
        }
    }

    #[must_use]
    pub fn about(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }
}

/// Counts by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
}

/// Every finding, and the worst status among them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub status: Status,
    pub summary: Summary,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn new(findings: Vec<Finding>) -> Self {
        let mut summary = Summary::default();
        for f in &findings {
            match f.status {
                Status::Ok => summary.ok += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
            }
        }
        let status = findings
            .iter()
            .map(|f| f.status)
            .max()
            .unwrap_or(Status::Ok);
        Self {
            status,
            summary,
            findings,
        }
    }

    /// The report for people: one line per finding, what to do indented below it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let width = self
            .findings
            .iter()
            .map(|f| f.check.len())
            .max()
            .unwrap_or(0);
        for f in &self.findings {
            let subject = f
                .subject
                .as_ref()
                .map_or_else(String::new, |s| format!("{s}: "));
            let _ = writeln!(
                out,
                "{:<4}  {:<width$}  {subject}{}",
                f.status.as_str(),
                f.check,
                f.found
            );
            if let Some(action) = &f.action {
                let _ = writeln!(out, "{:<4}  {:<width$}  -> {action}", "", "");
            }
        }
        let _ = writeln!(
            out,
            "{} ok, {} warn, {} fail",
            self.summary.ok, self.summary.warn, self.summary.fail
        );
        out
    }
}

/// What the doctor looks at.
#[derive(Clone, Debug)]
pub struct DoctorOptions {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Where the daemon pins its objects.
    pub pin_dir: PathBuf,
    /// The daemon's configuration file, if it has one.
    pub config: Option<PathBuf>,
    /// Only these interfaces (default: those msfilter manages or is configured with, or
    /// every interface but loopback when there are none).
    pub interfaces: Vec<String>,
}

/// Gather the facts of this host (and of the daemon, if it answers) and evaluate them.
pub async fn run(options: &DoctorOptions) -> Result<Report, DoctorError> {
    let facts = host::gather(options).await?;
    Ok(evaluate(&facts))
}
