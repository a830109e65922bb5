//! Multi-queue scaling: frames spread over every CPU. The veth pair has one queue per CPU;
//! one generator thread per CPU, pinned, sends live frames, and the veth puts each CPU's
//! frames on that CPU's queue, so every CPU runs its own receive path. Reported: Mpps per
//! core and in total for each variant, on one CPU and on all of them.
//!
//! msfilter runs twice on all CPUs: every CPU's frames from one source (all CPUs add to one
//! shared source entry's counters) and each CPU's from its own source (distinct entries),
//! to show whether the shared counters are a point of contention. IPv4, a policy of 1,000
//! (group, source) pairs in one group, no netfilter rules.

use std::{
    net::IpAddr,
    sync::{Arc, Barrier},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use msfilter::sockopt::addr_of;
use msfilter_common::{Mode, Reason};
use msfilter_testbed::netns::{Link, Netns};
use serde::Serialize;

use crate::{
    frames::{Shape, udp},
    live::{self, Policy, group_addr, source_addr},
    median,
    reference::{self, Reference},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Variant {
    #[serde(rename = "XDP_DROP floor")]
    Floor,
    #[serde(rename = "msfilter, distinct source entries")]
    MsfilterDistinct,
    #[serde(rename = "msfilter, one shared source entry")]
    MsfilterShared,
    #[serde(rename = "XDP_PASS + nftables ingress set")]
    Nftables,
    #[serde(rename = "XDP_PASS + socket join + block")]
    Socket,
}

impl Variant {
    pub const ALL: [Self; 5] = [
        Self::Floor,
        Self::MsfilterDistinct,
        Self::MsfilterShared,
        Self::Nftables,
        Self::Socket,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Floor => "XDP_DROP floor",
            Self::MsfilterDistinct => "msfilter, distinct source entries",
            Self::MsfilterShared => "msfilter, one shared source entry",
            Self::Nftables => "XDP_PASS + nftables ingress set",
            Self::Socket => "XDP_PASS + socket join + block",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ScaleRow {
    pub variant: Variant,
    /// CPUs sending and receiving at once.
    pub cpus: usize,
    /// Median over rounds of all CPUs' frames divided by the longest sender's time.
    pub total_mpps: f64,
    pub per_core_mpps: f64,
    pub rounds: Vec<f64>,
}

pub struct Settings {
    pub frames: u32,
    pub rounds: usize,
    pub cpus: usize,
}

/// Frames every sender sends before the measured ones.
const WARM_UP: u32 = 20_000;

const PAIRS: Policy = Policy { pairs: 1_000 };

/// Two namespaces joined by a veth pair with `queues` queues each way.
fn multiqueue_link(queues: usize) -> Result<Link> {
    let sender = Netns::new("mqs")?;
    let receiver = Netns::new("mqr")?;
    let q = queues.to_string();
    sender.ip(&[
        "link",
        "add",
        "tx0",
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "type",
        "veth",
        "peer",
        "name",
        "rx0",
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "netns",
        receiver.name(),
    ])?;
    sender.ip(&["link", "set", "tx0", "up"])?;
    receiver.ip(&["link", "set", "rx0", "up"])?;
    receiver.ip(&["addr", "add", "10.99.0.2/24", "dev", "rx0"])?;
    for ns in [&sender, &receiver] {
        ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        ns.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
    }
    receiver.sysctl("net.ipv4.conf.rx0.rp_filter", "0")?;
    for key in ["all", "default", "tx0"] {
        sender.sysctl(&format!("net.ipv6.conf.{key}.disable_ipv6"), "1")?;
    }
    Ok(Link {
        sender,
        receiver,
        tx: "tx0".into(),
        rx: "rx0".into(),
    })
}

/// Source index sent by `cpu` (of the probe group's 1,000).
fn source_of(variant: Variant, cpu: usize) -> u32 {
    match variant {
        Variant::MsfilterShared => PAIRS.probe(),
        _ => (PAIRS.probe() + 97 * cpu as u32) % PAIRS.first_group_sources(),
    }
}

pub fn run(settings: &Settings) -> Result<Vec<ScaleRow>> {
    let link = multiqueue_link(settings.cpus)?;
    let rx = link.receiver.ifindex(&link.rx)?;
    let tx = link.sender.ifindex(&link.tx)?;
    let mut receiving = Reference::load(1)?;
    let sending = Reference::load(1)?;
    let mut configs: Vec<(Variant, usize)> = Vec::new();
    for variant in Variant::ALL {
        // One CPU as the baseline; the shared entry is the same as distinct on one CPU.
        if variant != Variant::MsfilterShared {
            configs.push((variant, 1));
        }
        if settings.cpus > 1 {
            configs.push((variant, settings.cpus));
        }
    }
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for _ in 0..settings.rounds {
        for (i, &(variant, cpus)) in configs.iter().enumerate() {
            let mpps = one(
                &link,
                &mut receiving,
                &sending,
                (rx, tx),
                variant,
                cpus,
                settings,
            )
            .with_context(|| format!("{} on {cpus} CPUs", variant.name()))?;
            runs[i].push(mpps);
        }
    }
    eprintln!("  scaling: measured on 1 and {} CPUs", settings.cpus);
    Ok(configs
        .into_iter()
        .zip(runs)
        .map(|((variant, cpus), rounds)| {
            let total = median(&rounds);
            ScaleRow {
                variant,
                cpus,
                total_mpps: total,
                per_core_mpps: total / cpus as f64,
                rounds,
            }
        })
        .collect())
}

/// One run on `cpus` CPUs (the last ones); total Mpps.
fn one(
    link: &Link,
    receiving: &mut Reference,
    sending: &Reference,
    (rx, tx): (u32, u32),
    variant: Variant,
    cpus: usize,
    settings: &Settings,
) -> Result<f64> {
    let shape = Shape::Ipv4;
    let ns = &link.receiver;
    let first_cpu = settings.cpus - cpus;
    let frames: Vec<Vec<u8>> = (first_cpu..settings.cpus)
        .map(|cpu| {
            udp(
                shape,
                &addr_of(group_addr(shape, 0)),
                &addr_of(source_addr(shape, source_of(variant, cpu))),
            )
        })
        .collect();
    enum Setup {
        Xdp(aya::programs::xdp::XdpLinkId, &'static str),
        Msfilter(Box<msfilter::datapath::Datapath>),
        Socket(
            aya::programs::xdp::XdpLinkId,
            (std::net::UdpSocket, msfilter::sockopt::MembershipSocket),
        ),
    }
    let mut restore = Vec::new();
    let setup = match variant {
        Variant::Floor => Setup::Xdp(
            ns.run(|| receiving.attach(reference::DROP, rx))?,
            reference::DROP,
        ),
        Variant::MsfilterDistinct | Variant::MsfilterShared => Setup::Msfilter(Box::new(
            live::msfilter_datapath(ns, rx, shape, PAIRS, Mode::Exclude)?,
        )),
        Variant::Nftables => {
            live::nft(ns, &live::nft_script(shape, PAIRS, &link.rx))?;
            Setup::Xdp(
                ns.run(|| receiving.attach(reference::PASS, rx))?,
                reference::PASS,
            )
        }
        Variant::Socket => {
            restore = live::raise_source_limits(ns, PAIRS.first_group_sources())?;
            let block: Vec<IpAddr> = (0..PAIRS.first_group_sources())
                .map(|i| source_addr(shape, i))
                .collect();
            let link = ns.run(|| receiving.attach(reference::PASS, rx))?;
            Setup::Socket(
                link,
                ns.run(|| live::app_socket(group_addr(shape, 0), rx, &block))?,
            )
        }
    };
    let counted_before = receiving.count()?;
    let udp_before = live::udp_counters(ns, false)?;
    let msfilter_before = match &setup {
        Setup::Msfilter(dp) => dp.reason_counters()?.get(Reason::Excluded).packets,
        _ => 0,
    };
    let nft_before = match variant {
        Variant::Nftables => live::nft_dropped(ns)?,
        _ => 0,
    };
    let elapsed = send_all(link, sending, tx, first_cpu, &frames, settings.frames)?;
    // Let what is still queued on the receiving side be processed before counting.
    std::thread::sleep(Duration::from_millis(100));
    let total = u64::from(settings.frames + WARM_UP) * cpus as u64;
    let counted = receiving.count()? - counted_before;
    match setup {
        Setup::Xdp(id, program) => {
            if variant == Variant::Nftables {
                let dropped = live::nft_dropped(ns)? - nft_before;
                ensure!(dropped == total, "nftables dropped {dropped} of {total}");
                live::nft(ns, "delete table netdev msfbench\n")?;
            } else {
                ensure!(counted == total, "XDP_DROP counted {counted} of {total}");
            }
            ns.run(|| receiving.detach(program, id))?;
        }
        Setup::Msfilter(dp) => {
            let dropped = dp.reason_counters()?.get(Reason::Excluded).packets - msfilter_before;
            ensure!(dropped == total, "msfilter dropped {dropped} of {total}");
        }
        Setup::Socket(id, socket) => {
            let delivered = live::udp_counters(ns, false)? - udp_before;
            ensure!(counted == total, "XDP_PASS counted {counted} of {total}");
            ensure!(delivered == 0, "{delivered} datagrams reached a socket");
            drop(socket);
            ns.run(|| receiving.detach(reference::PASS, id))?;
        }
    }
    for (key, old, _) in restore {
        ns.sysctl(&key, &old)?;
    }
    let measured = u64::from(settings.frames) * cpus as u64;
    Ok(measured as f64 / elapsed.as_secs_f64() / 1e6)
}

/// Every CPU from `first_cpu` on sends `count` copies of its frame at once; the longest
/// sender's time.
fn send_all(
    link: &Link,
    sending: &Reference,
    tx: u32,
    first_cpu: usize,
    frames: &[Vec<u8>],
    count: u32,
) -> Result<Duration> {
    // A warm-up on every CPU, then all start together.
    let barrier = Arc::new(Barrier::new(frames.len()));
    let results: Vec<Result<Duration>> = std::thread::scope(|scope| {
        let handles: Vec<_> = frames
            .iter()
            .enumerate()
            .map(|(i, frame)| {
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || -> Result<Duration> {
                    link.sender.enter_current_thread()?;
                    reference::pin_to_cpu(first_cpu + i)?;
                    sending.send_live(frame, tx, WARM_UP)?;
                    barrier.wait();
                    sending.send_live(frame, tx, count)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut longest = Duration::ZERO;
    for r in results {
        longest = longest.max(r?);
    }
    Ok(longest)
}
