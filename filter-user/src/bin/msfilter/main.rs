//! `msfilter`: the command line. One verb per request, each through the library client;
//! every one-shot command acts for a persistent named client (`--client`, default `cli`)
//! that lives in the daemon until its memberships are left. `-j` prints the answer as JSON
//! (docs/cli.md), otherwise as lines for people. Exit status: 0 done, 1 refused (the reason
//! is on stderr, with the kernel's errno name when the kernel refused), 2 bad usage, 3 the
//! daemon is unreachable.

mod doctor;
mod explain;
mod frames;
mod generate;
mod output;
mod top;
mod trace;

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use msfilter::{
    client::{Client, ClientError},
    daemon::{self, DEFAULT_SOCKET, DaemonOptions, metrics, protocol::ListFilter},
    datapath::{AttachMode, Capacities},
    policy::{Mode, parse_mode},
};

#[derive(Debug, Parser)]
#[command(
    name = "msfilter",
    version,
    about = "Multicast source filter: drops unwanted multicast sources at XDP, in step with \
             the kernel's own membership state."
)]
struct Cli {
    /// The daemon's socket.
    #[arg(long, global = true, env = "MSFILTER_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The persistent client that one-shot commands act for.
    #[arg(long, global = true, default_value = "cli")]
    client: String,
    /// Print the answer as JSON (one document; see docs/cli.md for each verb's shape).
    #[arg(short, long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Group {
    /// Interface name or index.
    iface: String,
    /// Multicast group (IPv4 or IPv6).
    group: IpAddr,
}

#[derive(Debug, Args)]
struct GroupSource {
    #[command(flatten)]
    at: Group,
    /// Unicast source address, same family as the group.
    source: IpAddr,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join GROUP on IFACE for any source (EXCLUDE {}); the kernel sends the report.
    Join(Group),
    /// Leave GROUP on IFACE, and every source with it.
    Leave(Group),
    /// Stop receiving SOURCE in an any-source membership (dropped at XDP).
    Block(GroupSource),
    /// Receive SOURCE again in an any-source membership.
    Unblock(GroupSource),
    /// Receive GROUP from SOURCE (controlled-source, INCLUDE mode; joins if needed).
    JoinSource(GroupSource),
    /// Stop receiving GROUP from SOURCE (controlled-source).
    LeaveSource(GroupSource),
    /// Set or show a group's whole filter.
    #[command(subcommand)]
    Filter(FilterCommand),
    /// List the filters XDP enforces, with their counters.
    List {
        /// Only this interface (name or index).
        #[arg(long)]
        iface: Option<String>,
        /// Only this group.
        #[arg(long)]
        group: Option<IpAddr>,
        /// Entries per page fetched from the daemon.
        #[arg(long, default_value_t = 1024)]
        page: u32,
    },
    /// Show what XDP passed and dropped, by reason.
    Stats,
    /// Live rates (packets/s, bytes/s; passed and dropped) per interface, group and source,
    /// redrawn in place; with -j one JSON object per refresh, one per line.
    Top(top::TopArgs),
    /// Judge frames (hex lines, or a pcap file) by the policy the daemon enforces on IFACE:
    /// the verdict and reason of each, by the reference model of the XDP program.
    Explain(explain::ExplainArgs),
    /// Live per-packet verdicts on IFACE from the XDP program itself: interface, group,
    /// source, verdict, reason and length of each frame (sampled with --sample); -j: one
    /// JSON object per frame, one per line. Reads the pinned maps (root or CAP_BPF).
    Trace(trace::TraceArgs),
    /// Take ownership of IFACE: fill its entries, then attach the XDP program.
    Attach {
        /// Interface name or index.
        iface: String,
        /// XDP mode (driver or skb); default: driver, falling back to skb.
        #[arg(long, value_name = "driver|skb", value_parser = str::parse::<AttachMode>)]
        mode: Option<AttachMode>,
        /// Replace another XDP program there; on an interface msfilter owns, swap msfilter's
        /// program atomically through the link (hitless upgrade).
        #[arg(long)]
        replace: bool,
        /// With --replace on an owned interface: the XDP object file to swap in (read by the
        /// daemon; default: the daemon's own program).
        #[arg(long, requires = "replace")]
        object: Option<PathBuf>,
        /// Follow IFACE: XDP enforces the merge of every socket there, read from the kernel
        /// (applications unchanged), instead of the merge of msfilter's clients. Needs
        /// CAP_SYS_PTRACE besides the daemon's usual capabilities (docs/follow.md).
        #[arg(long)]
        follow: bool,
        /// With --follow: XDP also drops the datagrams of groups no socket on IFACE joined
        /// (the flooding case), except link-scope groups and while IFACE forwards multicast.
        #[arg(long, requires = "follow")]
        drop_unjoined: bool,
    },
    /// Release IFACE: detach the program and delete its entries (memberships stay).
    Detach {
        /// Interface name or index.
        iface: String,
        /// Leave the program enforcing the last policy (pinned), frozen.
        #[arg(long)]
        keep: bool,
    },
    /// Show who runs XDP on IFACE: which program, in which mode, since when, by whom.
    Owner {
        /// Interface name or index.
        iface: String,
    },
    /// Re-read the daemon's configuration file and apply the difference.
    Reload,
    /// Run the daemon (serves the socket given by --socket).
    Daemon(DaemonArgs),
    /// Check this host for what keeps msfilter from filtering as asked; exit 1 if a check
    /// fails.
    Doctor(doctor::DoctorArgs),
    /// Write the man pages or shell completions (for packaging).
    #[command(subcommand, hide = true)]
    Generate(generate::GenerateCommand),
}

#[derive(Debug, Subcommand)]
enum FilterCommand {
    /// Set the whole filter of GROUP: the mode and its source list.
    Set {
        #[command(flatten)]
        at: Group,
        /// Filter mode (include or exclude).
        #[arg(long, value_name = "include|exclude", value_parser = parse_mode)]
        mode: Mode,
        /// Sources listed in the filter.
        sources: Vec<IpAddr>,
    },
    /// Show this client's filter of GROUP and the interface's merged filter.
    Get {
        #[command(flatten)]
        at: Group,
    },
}

#[derive(Debug, Args)]
struct DaemonArgs {
    /// Where maps, program and links are pinned (on bpffs).
    #[arg(long, env = "MSFILTER_PIN_DIR", default_value = daemon::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Where the persisted state is kept.
    #[arg(long, env = "MSFILTER_STATE_DIR", default_value = daemon::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Declarative configuration (TOML): interfaces to own and their groups.
    #[arg(long, env = "MSFILTER_CONFIG")]
    config: Option<PathBuf>,
    /// Leave XDP enforcing the last policy when the daemon stops.
    #[arg(long)]
    keep: bool,
    /// Group (name or number) whose members may change the filter, besides root.
    #[arg(long)]
    group: Option<String>,
    /// Capacity of the groups map.
    #[arg(long, default_value_t = Capacities::default().max_groups)]
    max_groups: u32,
    /// Capacity of the (group, source) map.
    #[arg(long, default_value_t = Capacities::default().max_sources)]
    max_sources: u32,
    /// Raise the kernel's per-socket source limits (net.ipv4.igmp_max_msf,
    /// net.ipv6.mld_max_msf) to at least N.
    #[arg(long, value_name = "N")]
    max_sources_per_socket: Option<u32>,
    /// Serve metrics over HTTP at ADDR/metrics (OpenMetrics, or Prometheus text for
    /// `Accept: text/plain`); ADDR is ADDRESS:PORT, default 127.0.0.1:9464 (loopback only).
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = metrics::DEFAULT_ADDR_TEXT,
        value_parser = metrics::parse_addr
    )]
    metrics: Option<std::net::SocketAddr>,
    /// With --metrics: at most N groups and N sources get series of their own; the rest
    /// are summed per interface into group="other" (docs/operations.md).
    #[arg(long, value_name = "N", requires = "metrics",
          default_value_t = metrics::DEFAULT_MAX_SERIES)]
    metrics_max_series: usize,
}

/// How a command failed, for the exit status.
enum Failure {
    Refused(ClientError),
    Unreachable(ClientError),
    Other(anyhow::Error),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Refused(_) => Self::Refused(e),
            _ => Self::Unreachable(e),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("msfilter: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(e)) => {
            eprintln!("msfilter: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Unreachable(e)) => {
            eprintln!("msfilter: {e}");
            ExitCode::from(3)
        }
        Err(Failure::Other(e)) => {
            eprintln!("msfilter: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let Cli {
        socket,
        client,
        json,
        command,
    } = cli;
    let out = output::Output { json };
    let mutate = |socket: PathBuf, client: String| async move {
        Client::register_persistent(&socket, &client).await
    };
    let membership = |at: &Group, filter| out.applied(&client, &at.iface, at.group, filter);
    match command {
        Command::Join(at) => {
            let mut c = mutate(socket, client.clone()).await?;
            membership(&at, c.join(&at.iface, at.group).await?)
        }
        Command::Leave(at) => {
            let mut c = mutate(socket, client.clone()).await?;
            membership(&at, c.leave(&at.iface, at.group).await?)
        }
        Command::Block(GroupSource { at, source }) => {
            let mut c = mutate(socket, client.clone()).await?;
            membership(&at, c.block(&at.iface, at.group, source).await?)
        }
        Command::Unblock(GroupSource { at, source }) => {
            let mut c = mutate(socket, client.clone()).await?;
            membership(&at, c.unblock(&at.iface, at.group, source).await?)
        }
        Command::JoinSource(GroupSource { at, source }) => {
            let mut c = mutate(socket, client.clone()).await?;
            membership(&at, c.join_source(&at.iface, at.group, source).await?)
        }
        Command::LeaveSource(GroupSource { at, source }) => {
            let mut c = mutate(socket, client.clone()).await?;
            membership(&at, c.leave_source(&at.iface, at.group, source).await?)
        }
        Command::Filter(FilterCommand::Set { at, mode, sources }) => {
            let mut c = mutate(socket, client.clone()).await?;
            membership(&at, c.set_filter(&at.iface, at.group, mode, sources).await?)
        }
        Command::Filter(FilterCommand::Get { at }) => {
            // Read the named client's filter without registering (which would create it).
            let mut c = Client::connect(&socket).await?;
            let (own, interface) = c.filter_of(Some(&client), &at.iface, at.group).await?;
            out.filter(
                &client,
                &at.iface,
                at.group,
                own.as_ref(),
                interface.as_ref(),
            )
        }
        Command::List { iface, group, page } => {
            let mut c = Client::connect(&socket).await?;
            let mut list = output::List::new(json);
            c.list_pages(ListFilter { iface, group }, Some(page), |page| {
                list.page(&page.entries, &page.followed);
            })
            .await?;
            list.finish()
        }
        Command::Stats => out.stats(&Client::connect(&socket).await?.stats().await?),
        Command::Explain(args) => return explain::run(args, &socket, json).await,
        Command::Trace(args) => {
            trace::run(&args, json)?;
            return Ok(());
        }
        Command::Top(args) => {
            top::run(args, &socket, json).await?;
            return Ok(());
        }
        Command::Attach {
            iface,
            mode,
            replace,
            object,
            follow,
            drop_unjoined,
        } => {
            let object = object.map(|p| p.to_string_lossy().into_owned());
            let reply = mutate(socket, client)
                .await?
                .attach_following(
                    &iface,
                    mode,
                    replace,
                    object.as_deref(),
                    follow,
                    drop_unjoined,
                )
                .await?;
            out.attached(&reply)
        }
        Command::Detach { iface, keep } => {
            out.detached(&mutate(socket, client).await?.detach(&iface, keep).await?)
        }
        Command::Owner { iface } => {
            out.owner(&Client::connect(&socket).await?.owner(&iface).await?)
        }
        Command::Reload => out.reloaded(&mutate(socket, client).await?.reload().await?),
        Command::Daemon(args) => {
            if json {
                usage_error("the daemon prints no answer; -j goes with the other commands");
            }
            init_logging();
            msfilter::doctor::capabilities::check_daemon().map_err(anyhow::Error::from)?;
            daemon::run(DaemonOptions {
                socket,
                pin_dir: args.pin_dir,
                state_dir: args.state_dir,
                config: args.config,
                keep: args.keep,
                group: args.group,
                capacities: Capacities {
                    max_groups: args.max_groups,
                    max_sources: args.max_sources,
                },
                max_sources_per_socket: args.max_sources_per_socket,
                metrics: args.metrics.map(|addr| metrics::MetricsOptions {
                    addr,
                    max_series: args.metrics_max_series,
                }),
            })
            .await
            .map_err(anyhow::Error::from)?;
            return Ok(());
        }
        Command::Doctor(args) => {
            doctor::run(args, socket, json).await?;
            return Ok(());
        }
        Command::Generate(what) => {
            generate::run(Cli::command(), &what)?;
            return Ok(());
        }
    }
    .context("writing the output")?;
    Ok(())
}

/// Exit as clap does for bad usage (status 2).
fn usage_error(message: &str) -> ! {
    use clap::CommandFactory as _;
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
}
