//! The daemon: serves the local API, owns the clients, their sockets and the datapath.
//!
//! * [`protocol`]: the wire protocol (shared with [`crate::client`]).
//! * `server`: the UNIX socket, peer credentials, framing, the controller thread; where the
//!   wire protocol is decoded and answered.
//! * `controller`: clients, handles, and the request path (sockopt → policy → datapath);
//!   `ownership.rs` (attach, detach, owner, interface events), `lifecycle.rs` (start-up,
//!   persistence, configuration, shut-down).
//! * `report.rs`: what the controller reports back, carried on the wire as it is.
//! * `explain`: kernel refusals in msfilter's words.
//! * [`config`], [`state`]: the configuration file and the persisted state.
//! * `notify`: readiness, reload and stop notices to the service manager (`sd_notify`).
//! * [`metrics`]: the optional metrics endpoint (OpenMetrics / Prometheus text over HTTP),
//!   fed by the controller thread.

pub mod config;
mod controller;
mod explain;
mod following;
mod lifecycle;
pub mod metrics;
mod notify;
mod ownership;
pub mod protocol;
mod report;
mod server;
pub mod state;

use std::{io, path::PathBuf};

use crate::{
    datapath::{Capacities, Datapath, DatapathError, LoadOptions},
    sockopt::Limit,
};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/msfilter.sock";
/// Where the daemon pins its maps, program and links unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/msfilter";
/// Where the daemon keeps its persisted state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/msfilter";

/// How to run the daemon.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    /// The declarative configuration file.
    pub config: Option<PathBuf>,
    /// Leave XDP enforcing (pinned) when the daemon stops.
    pub keep: bool,
    /// Group (name or number) whose members may change the filter besides root.
    pub group: Option<String>,
    pub capacities: Capacities,
    /// Raise the kernel's per-socket source limits (`net.ipv4.igmp_max_msf`,
    /// `net.ipv6.mld_max_msf`) to at least this.
    pub max_sources_per_socket: Option<u32>,
    /// Serve metrics over HTTP (off without).
    pub metrics: Option<metrics::MetricsOptions>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            config: None,
            keep: false,
            group: None,
            capacities: Capacities::default(),
            max_sources_per_socket: None,
            metrics: None,
        }
    }
}

/// Why the daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("another msfilter daemon is listening on {0}")]
    AlreadyRunning(PathBuf),
    #[error("socket {0}: {1}")]
    Socket(PathBuf, #[source] io::Error),
    #[error("no group named {0:?}")]
    NoSuchGroup(String),
    #[error("setting {key} to {value}: {source}")]
    Limit {
        key: &'static str,
        value: u32,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("{0}")]
    Config(config::ConfigErrors),
    #[error("installing signal handlers: {0}")]
    Signal(#[source] io::Error),
    #[error("starting the controller thread: {0}")]
    Thread(#[source] io::Error),
    #[error("watching interfaces: {0}")]
    Links(#[source] io::Error),
    #[error("metrics endpoint {0}: {1}")]
    Metrics(std::net::SocketAddr, #[source] io::Error),
}

/// Run the daemon until SIGTERM or SIGINT.
pub async fn run(options: DaemonOptions) -> Result<(), DaemonError> {
    let gid = options.group.as_deref().map(group_id).transpose()?;
    if let Some(n) = options.max_sources_per_socket {
        raise_source_limits(n)?;
    }
    // Signals first: a SIGTERM during start-up waits for it instead of killing the process
    // half-way.
    let signals = server::Signals::install()?;
    server::check_free(&options.socket)?;
    // Before anything is loaded: an address in use stops the start with nothing changed.
    let metrics = match options.metrics {
        Some(m) => Some(server::MetricsListener {
            listener: tokio::net::TcpListener::bind(m.addr)
                .await
                .map_err(|e| DaemonError::Metrics(m.addr, e))?,
            max_series: m.max_series,
        }),
        None => None,
    };
    let datapath = Datapath::load(&LoadOptions {
        capacities: options.capacities,
        pin_dir: Some(options.pin_dir.clone()),
    })?;
    let (follow_tx, follow_rx) = tokio::sync::watch::channel(None);
    let controller = controller::Controller::start(
        datapath,
        lifecycle::StartOptions {
            store: state::StateStore::new(&options.state_dir),
            config: options.config.clone(),
            keep_on_exit: options.keep,
            follow: follow_tx,
        },
    )?;
    // The socket appears only once the daemon is ready to serve.
    let listener = server::bind(&options.socket, gid)?;
    server::serve(
        listener,
        options.socket.clone(),
        server::Authority { gid },
        controller,
        signals,
        metrics,
        follow_rx,
    )
    .await
}

/// Raise the kernel's limits so a socket can hold `n` sources: the per-socket source limits,
/// and the option buffer size a full-state filter of `n` sources needs.
/// `net.ipv6.mld_max_msf` is global and only visible from the initial network namespace:
/// elsewhere it is left as it is, with a warning.
fn raise_source_limits(n: u32) -> Result<(), DaemonError> {
    let buffer = u32::try_from(crate::sockopt::filter_option_size(n as usize)).unwrap_or(u32::MAX);
    for (limit, n) in [
        (Limit::IgmpMaxMsf, n),
        (Limit::MldMaxMsf, n),
        (Limit::OptmemMax, buffer),
    ] {
        let current = match limit.read() {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::warn!(
                    "{} is not visible in this network namespace (it is global, set from the initial one); left as it is",
                    limit.key()
                );
                continue;
            }
            Err(source) => {
                return Err(DaemonError::Limit {
                    key: limit.key(),
                    value: n,
                    source,
                });
            }
        };
        if current < n {
            limit.set(n).map_err(|source| DaemonError::Limit {
                key: limit.key(),
                value: n,
                source,
            })?;
            log::info!("raised {} from {current} to {n}", limit.key());
        }
    }
    Ok(())
}

/// A group given by name or number.
fn group_id(group: &str) -> Result<u32, DaemonError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group).map_err(|_| DaemonError::NoSuchGroup(group.into()))?;
    // SAFETY: getgrnam returns a pointer into static storage or null; read it at once.
    let entry = unsafe { libc::getgrnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(DaemonError::NoSuchGroup(group.into()));
    }
    // SAFETY: non-null entry from getgrnam.
    Ok(unsafe { (*entry).gr_gid })
}
