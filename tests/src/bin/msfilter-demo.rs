//! `cargo xtask demo`: msfilter at work between two network namespaces.
//!
//! A sender namespace plays a network with three multicast sources on one group; a receiver
//! namespace plays the host, where an application listens to the group and the msfilter
//! daemon holds the membership. The demo changes the source policy with the `msfilter` CLI
//! and shows, live, what the application receives from each source and what XDP dropped
//! before the kernel's network stack saw it. Everything is removed at the end.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use msfilter_testbed::{
    daemon::Daemon,
    netns::Link,
    traffic::{Receiver, Sender},
};
use serde_json::Value;

#[derive(Parser)]
#[command(about = "Show msfilter dropping unwanted multicast sources at XDP")]
struct Args {
    /// Seconds per phase.
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// Datagrams per second per source.
    #[arg(long, default_value_t = 500)]
    rate: u64,
}

const GROUP: &str = "239.1.1.1";
const SOURCES: [(&str, &str); 3] = [
    ("10.77.0.1", "feed A"),
    ("10.77.0.2", "feed B"),
    ("10.77.0.3", "unwanted"),
];

struct Demo {
    link: Link,
    daemon: Daemon,
    senders: Vec<Sender>,
    app: Receiver,
    sent: BTreeMap<IpAddr, u64>,
    received: BTreeMap<IpAddr, u64>,
    args: Args,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo needs root (network namespaces and XDP); run `cargo xtask demo` as root");
    }
    println!(
        "msfilter demo\n\
         =============\n\
         Two network namespaces joined by a veth pair:\n\
         \x20 sender    three sources send UDP multicast to {GROUP}:\n\
         \x20           10.77.0.1 (feed A), 10.77.0.2 (feed B), 10.77.0.3 (unwanted)\n\
         \x20 receiver  an application listens on {GROUP}; the msfilter daemon holds the\n\
         \x20           membership and runs the XDP program on the receiving interface rx0\n\
         Every phase changes the source policy with the msfilter CLI, then counts for {}s what\n\
         each source sent, what the application received, and what XDP dropped.\n",
        args.seconds
    );
    let mut demo = Demo::new(args).context("setting up the namespaces")?;
    demo.run()?;
    println!(
        "\nCleaning up: the daemon stops (detaching XDP, leaving the group) and both namespaces are deleted."
    );
    Ok(())
}

impl Demo {
    fn new(args: Args) -> Result<Self> {
        let addrs: Vec<String> = SOURCES.iter().map(|(a, _)| format!("{a}/24")).collect();
        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let link = Link::new("demo", &addrs)?;
        let daemon = Daemon::start(&link.receiver, &[])?;
        let group: IpAddr = GROUP.parse()?;
        let tx = link.sender.ifindex(&link.tx)?;
        let senders = SOURCES
            .iter()
            .map(|(a, _)| Sender::new(&link.sender, a.parse().unwrap(), group, tx, 64))
            .collect();
        let app = Receiver::passive(&link.receiver, group);
        Ok(Self {
            link,
            daemon,
            senders,
            app,
            sent: BTreeMap::new(),
            received: BTreeMap::new(),
            args,
        })
    }

    fn msfilter(&self, args: &[&str]) -> Result<String> {
        println!("  $ msfilter {}", args.join(" "));
        let out = self.daemon.cli(args);
        if !out.ok() {
            bail!("msfilter {args:?} failed: {}", out.stderr.trim());
        }
        for line in out.stdout.lines() {
            println!("    {line}");
        }
        Ok(out.stdout)
    }

    fn xdp_dropped(&self) -> Result<u64> {
        let stats: Value = serde_json::from_str(&self.daemon.cli_ok(&["stats", "-j"]))?;
        stats["dropped"]["packets"]
            .as_u64()
            .context("stats without dropped packets")
    }

    fn phase(&mut self, title: &str, explain: &str, commands: &[&[&str]]) -> Result<()> {
        println!("\n== {title}\n   {explain}");
        for c in commands {
            self.msfilter(c)?;
        }
        self.sent.clear();
        self.received.clear();
        let dropped_before = self.xdp_dropped()?;
        let interval = Duration::from_secs_f64(1.0 / self.args.rate as f64);
        let start = Instant::now();
        let mut next_report = Duration::from_secs(1);
        let mut next_send = Duration::ZERO;
        println!(
            "   {:>4}  {:<22} {:>8} {:>10}",
            "t", "source", "sent", "received"
        );
        loop {
            let now = start.elapsed();
            if now >= next_send {
                for (i, s) in self.senders.iter_mut().enumerate() {
                    s.send()?;
                    *self.sent.entry(SOURCES[i].0.parse()?).or_insert(0) += 1;
                }
                next_send += interval;
            }
            if now >= next_report {
                for (ip, n) in self.app.take() {
                    *self.received.entry(ip).or_insert(0) += n;
                }
                self.report(next_report.as_secs(), dropped_before)?;
                if next_report.as_secs() >= self.args.seconds {
                    break;
                }
                next_report += Duration::from_secs(1);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    fn report(&self, t: u64, dropped_before: u64) -> Result<()> {
        for (addr, name) in SOURCES {
            let ip: IpAddr = addr.parse()?;
            println!(
                "   {:>3}s  {:<22} {:>8} {:>10}",
                t,
                format!("{addr} ({name})"),
                self.sent.get(&ip).copied().unwrap_or(0),
                self.received.get(&ip).copied().unwrap_or(0),
            );
        }
        println!(
            "   {:>4}  dropped at XDP so far: {}",
            "",
            self.xdp_dropped()? - dropped_before
        );
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        let rx = self.link.rx.clone();
        let rx = rx.as_str();
        self.phase(
            "1. Join the group for any source",
            "The application wants the group; every source gets through.",
            &[&["join", rx, GROUP]],
        )?;
        self.phase(
            "2. Block the unwanted source",
            "msfilter applies MCAST_BLOCK_SOURCE on its socket (the kernel sends an IGMPv3 report) \
             and adds the source to the XDP map: its datagrams now die in the driver.",
            &[&["block", rx, GROUP, "10.77.0.3"]],
        )?;
        self.phase(
            "3. Switch to an explicit source list",
            "INCLUDE mode: only feed A is wanted; everything else is dropped at XDP.",
            &[&["filter", "set", rx, GROUP, "--mode", "include", "10.77.0.1"]],
        )?;
        println!("\n== What msfilter holds and counted");
        self.msfilter(&["list"])?;
        self.msfilter(&["stats"])?;
        println!(
            "\nThe kernel's own interface-level source filter (/proc/net/mcfilter in the receiver):"
        );
        for line in self.link.receiver.read_proc("/proc/net/mcfilter")?.lines() {
            println!("    {line}");
        }
        self.msfilter(&["leave", rx, GROUP])?;
        Ok(())
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.daemon.terminate();
    }
}
