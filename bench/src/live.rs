//! The live path: frames sent with XDP_TX live frames out of one veth end into its peer,
//! everything pinned to one CPU, so the wall time per frame is the whole receive path on
//! that CPU. Variants on the receiving end, run interleaved round after round:
//!
//! * the floor: an XDP_DROP program;
//! * a bare lookup: one hash lookup of msfilter's source key (12 bytes for IPv4, 40 for
//!   IPv6), then XDP_DROP;
//! * msfilter dropping an EXCLUDE-listed source, and an INCLUDE-unlisted one;
//! * XDP_PASS, then nftables dropping in the netdev ingress hook with a `daddr . saddr` set;
//! * XDP_PASS, then the kernel's own filtering for sockets that joined and blocked sources;
//! * XDP_PASS with no filter: datagrams reach a socket.
//!
//! msfilter, nftables and the socket filter hold the same policy: 1, 1,000 or 100,000
//! (group, source) pairs, in groups of up to 1,000 sources; the measured frame's source is
//! the middle one of its group's list (lists the kernel scans in order pay the average
//! position). Two profiles: the namespace as created (no netfilter hooks), and with
//! connection tracking loaded by a `ct state` rule in the input hook, as a typical host has.
//!
//! After every run the variant's own counters must show it handled every frame as it
//! should; a run that does not is an error, not a number.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use msfilter::{
    datapath::{AttachMode, Datapath, LoadOptions},
    policy::GroupFilter,
    sockopt::{Family, MembershipSocket, Request, addr_of},
};
use msfilter_common::{GroupKey, Mode, Reason, SourceKey};
use msfilter_testbed::netns::{Link, Netns};
use serde::Serialize;

use crate::{
    frames::{Shape, udp},
    median,
    perf::{self, Perf},
    reference::{self, Reference},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Variant {
    #[serde(rename = "XDP_DROP floor")]
    Floor,
    #[serde(rename = "bare lookup (msfilter's source key) + XDP_DROP")]
    Bare,
    #[serde(rename = "msfilter, EXCLUDE-listed source")]
    Msfilter,
    #[serde(rename = "msfilter, INCLUDE-unlisted source")]
    MsfilterInclude,
    #[serde(rename = "XDP_PASS + nftables ingress set")]
    Nftables,
    #[serde(rename = "XDP_PASS + socket join + block")]
    Socket,
    #[serde(rename = "XDP_PASS, delivered to a socket")]
    Delivered,
}

impl Variant {
    pub const ALL: [Self; 7] = [
        Self::Floor,
        Self::Bare,
        Self::Msfilter,
        Self::MsfilterInclude,
        Self::Nftables,
        Self::Socket,
        Self::Delivered,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Floor => "XDP_DROP floor",
            Self::Bare => "bare lookup (msfilter's source key) + XDP_DROP",
            Self::Msfilter => "msfilter, EXCLUDE-listed source",
            Self::MsfilterInclude => "msfilter, INCLUDE-unlisted source",
            Self::Nftables => "XDP_PASS + nftables ingress set",
            Self::Socket => "XDP_PASS + socket join + block",
            Self::Delivered => "XDP_PASS, delivered to a socket",
        }
    }

    /// Whether the variant holds a policy (and is measured at every policy size).
    pub const fn has_policy(self) -> bool {
        matches!(
            self,
            Self::Msfilter | Self::MsfilterInclude | Self::Nftables | Self::Socket
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Profile {
    /// The namespace as created: no netfilter hooks registered.
    #[serde(rename = "plain")]
    Plain,
    /// A `ct state` rule in an inet input chain: connection tracking runs on every frame
    /// that reaches the IP layer.
    #[serde(rename = "conntrack")]
    Conntrack,
}

impl Profile {
    pub const ALL: [Self; 2] = [Self::Plain, Self::Conntrack];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Plain => "namespace without netfilter rules",
            Self::Conntrack => "connection tracking loaded (`ct state` rule in input)",
        }
    }

    /// The variants measured in this profile.
    fn variants(self) -> &'static [Variant] {
        match self {
            Self::Plain => &Variant::ALL,
            // XDP runs before netfilter: the bare lookup and the INCLUDE path would only
            // repeat the plain profile's figures.
            Self::Conntrack => &[
                Variant::Floor,
                Variant::Msfilter,
                Variant::Nftables,
                Variant::Socket,
                Variant::Delivered,
            ],
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LiveRow {
    pub shape: Shape,
    pub profile: Profile,
    pub variant: Variant,
    /// (group, source) pairs of the policy; 0 for variants without one.
    pub pairs: u32,
    /// Median over rounds, ns per frame.
    pub ns: f64,
    /// `ns` minus the floor's of the same family and profile.
    pub above_floor: f64,
    pub rounds: Vec<f64>,
    /// What the variant's counters showed in the last round.
    pub check: String,
    /// perf on the measuring CPU during the last round, per frame (when perf works here).
    pub instructions: Option<f64>,
    pub cycles: Option<f64>,
}

impl LiveRow {
    /// Max minus min over the rounds: how far this machine's runs scatter.
    pub fn spread(&self) -> f64 {
        let max = self.rounds.iter().copied().fold(f64::MIN, f64::max);
        let min = self.rounds.iter().copied().fold(f64::MAX, f64::min);
        (max - min).max(0.0)
    }
}

/// A variant at a policy size the kernel does not let it hold here, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub shape: Shape,
    pub profile: Profile,
    pub variant: Variant,
    pub pairs: u32,
    pub reason: String,
}

/// Where msfilter's CPU time went in the live path (one pair, plain profile): `perf record`
/// of `cpu-clock` on the measuring CPU during a run of msfilter's drop path, per frame.
#[derive(Clone, Debug, Serialize)]
pub struct Profiled {
    pub shape: Shape,
    pub samples: u64,
    pub frames: u64,
    /// ns per frame in the kernel's hash-table code (`htab` symbols).
    pub hash_ns: f64,
    /// Of that, ns per frame hashing keys (`htab_map_hash`, jhash).
    pub jhash_ns: f64,
    /// ns per frame in msfilter's own program (its `bpf_prog_…_msfilter` symbol).
    pub program_ns: f64,
    /// ns per frame on the CPU outside the idle loop (the whole path, generator included).
    pub busy_ns: f64,
    /// The same during a recorded run of the floor.
    pub floor_busy_ns: Option<f64>,
    /// The symbols with the most time in msfilter's run, ns per frame.
    pub top: Vec<(String, f64)>,
    /// The same recording of the bare lookup program (one lookup of msfilter's pair key):
    /// ns per frame in its own program and in the hash-table code.
    pub bare: Option<BareProfile>,
}

/// `perf record` of the bare lookup program's run, ns per frame.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct BareProfile {
    pub program_ns: f64,
    pub hash_ns: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LiveReport {
    pub rows: Vec<LiveRow>,
    pub skipped: Vec<Skipped>,
    pub profiled: Vec<Profiled>,
    /// When `perf stat` gave no counts: what perf printed about them.
    pub perf_stat: Option<String>,
    /// Sysctls raised inside the benchmark's receiving namespaces for the socket filter
    /// ("key old → new"), each restored once that variant's run ended.
    pub raised: Vec<String>,
}

pub struct Settings {
    pub frames: u32,
    pub rounds: usize,
    /// CPU every frame is processed on.
    pub cpu: usize,
    /// Policy sizes.
    pub sizes: Vec<u32>,
}

/// Sources per group of a policy.
pub const PER_GROUP: u32 = 1000;

/// Group `g` of a policy.
pub fn group_addr(shape: Shape, g: u32) -> IpAddr {
    let g16 = g as u16;
    if shape.is_ipv6() {
        IpAddr::V6(Ipv6Addr::new(0xff3e, 0, 0, 0, 0, 0, 1, g16))
    } else {
        let [a, b] = g16.to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(232, 1, 1 + a, b))
    }
}

/// Listed source `i` of a group.
pub fn source_addr(shape: Shape, i: u32) -> IpAddr {
    let i16 = i as u16;
    if shape.is_ipv6() {
        IpAddr::V6(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 4, i16 + 1))
    } else {
        let [a, b] = (i16 + 1).to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(10, 99, 4 + a, b))
    }
}

/// A source in no list.
pub fn unlisted_addr(shape: Shape) -> IpAddr {
    if shape.is_ipv6() {
        IpAddr::V6(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0xc8, 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 99, 200, 1))
    }
}

/// A policy of `pairs` (group, source) pairs: groups of up to [`PER_GROUP`] sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub pairs: u32,
}

impl Policy {
    /// (group index, source count) of every group.
    pub fn groups(self) -> impl Iterator<Item = (u32, u32)> {
        let pairs = self.pairs;
        (0..pairs.div_ceil(PER_GROUP)).map(move |g| (g, (pairs - g * PER_GROUP).min(PER_GROUP)))
    }

    /// Sources of the measured group (group 0).
    pub fn first_group_sources(self) -> u32 {
        self.pairs.min(PER_GROUP)
    }

    /// Index of the measured frame's source in group 0's list: the middle one.
    pub fn probe(self) -> u32 {
        self.first_group_sources() / 2
    }
}

struct Bed {
    link: Link,
    rx: u32,
    tx: u32,
    shape: Shape,
    receiving: Reference,
    sending: Reference,
    /// Sysctls raised in the receiving namespace at some point ("key old → new").
    raised: Vec<String>,
}

/// A variant in place on the receiving side, and how to check it afterwards.
enum Setup {
    Floor(aya::programs::xdp::XdpLinkId),
    Bare(aya::programs::xdp::XdpLinkId, &'static str),
    Msfilter(Box<Datapath>, Reason),
    Nftables(aya::programs::xdp::XdpLinkId),
    Socket(
        aya::programs::xdp::XdpLinkId,
        Vec<(UdpSocket, MembershipSocket)>,
        Vec<(String, String, String)>,
    ),
    Delivered(aya::programs::xdp::XdpLinkId, Reader),
}

/// A socket drained on its own thread, as an application would.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

pub fn udp_counters(ns: &Netns, ipv6: bool) -> Result<u64> {
    // Datagrams delivered to sockets plus those a full socket buffer dropped.
    if ipv6 {
        let text = ns.read_proc("/proc/net/snmp6")?;
        let get = |key: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Ok(get("Udp6InDatagrams") + get("Udp6RcvbufErrors"))
    } else {
        let text = ns.read_proc("/proc/net/snmp")?;
        let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            bail!("no Udp lines in /proc/net/snmp");
        };
        let pairs: Vec<(&str, u64)> = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .filter_map(|(n, v)| v.parse().ok().map(|v| (n, v)))
            .collect();
        let get = |key: &str| pairs.iter().find(|(n, _)| *n == key).map_or(0, |(_, v)| *v);
        Ok(get("InDatagrams") + get("RcvbufErrors"))
    }
}

/// A UDP socket on the group's port, joined on `ifindex`, blocking `block`.
pub fn app_socket(
    group: IpAddr,
    ifindex: u32,
    block: &[IpAddr],
) -> Result<(UdpSocket, MembershipSocket)> {
    let socket = UdpSocket::bind(SocketAddr::new(group, msfilter_testbed::traffic::PORT))?;
    let size: libc::c_int = 8 << 20;
    // SAFETY: valid int option.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as u32,
        );
    }
    let fd: OwnedFd = socket.try_clone()?.into();
    let membership = MembershipSocket::from_socket(fd, Family::of(group), ifindex);
    membership.apply(group, &Request::JoinGroup)?;
    for &source in block {
        membership
            .apply(group, &Request::BlockSource { source })
            .with_context(|| format!("blocking {source} on {group}"))?;
    }
    Ok((socket, membership))
}

/// The kernel's limit on one socket's source list for `shape`, and whether the benchmark may
/// raise it inside its own namespace.
fn source_list_limit(shape: Shape) -> Result<(u32, bool)> {
    if shape.is_ipv6() {
        // net.ipv6.mld_max_msf is one value for the whole host (not per namespace).
        let v = std::fs::read_to_string("/proc/sys/net/ipv6/mld_max_msf")
            .context("reading net.ipv6.mld_max_msf")?;
        Ok((v.trim().parse()?, false))
    } else {
        Ok((u32::MAX, true))
    }
}

impl Bed {
    fn new(shape: Shape, profile: Profile, link: Link) -> Result<Self> {
        // Only generated frames may reach the receiver, so every count is exact: the sender
        // namespace's own IPv6 (router solicitations, MLD reports) is switched off.
        for key in ["all", "default", link.tx.as_str()] {
            link.sender
                .sysctl(&format!("net.ipv6.conf.{key}.disable_ipv6"), "1")?;
        }
        let rx = link.receiver.ifindex(&link.rx)?;
        let tx = link.sender.ifindex(&link.tx)?;
        let bed = Self {
            link,
            rx,
            tx,
            shape,
            receiving: Reference::load(2)?,
            sending: Reference::load(1)?,
            raised: Vec::new(),
        };
        if profile == Profile::Conntrack {
            bed.nft(
                "table inet msfbench_ct {\n\
                 \x20 chain input {\n\
                 \x20   type filter hook input priority 0; policy accept;\n\
                 \x20   ct state established,related accept\n\
                 \x20   ct state invalid drop\n\
                 \x20 }\n\
                 }\n",
            )?;
        }
        Ok(bed)
    }

    pub fn frame(&self, source: IpAddr) -> Vec<u8> {
        udp(
            self.shape,
            &addr_of(group_addr(self.shape, 0)),
            &addr_of(source),
        )
    }

    fn nft(&self, script: &str) -> Result<()> {
        nft(&self.link.receiver, script)
    }

    fn setup(&mut self, variant: Variant, policy: Policy) -> Result<Setup> {
        let rx = self.rx;
        let shape = self.shape;
        let ns = &self.link.receiver;
        Ok(match variant {
            Variant::Floor => Setup::Floor(ns.run(|| self.receiving.attach(reference::DROP, rx))?),
            Variant::Bare => {
                let key = SourceKey::new(
                    rx,
                    addr_of(group_addr(shape, 0)),
                    addr_of(source_addr(shape, policy.probe())),
                );
                self.receiving.fill_lookup(&[key])?;
                let program = if shape.is_ipv6() {
                    reference::LOOKUP6
                } else {
                    reference::LOOKUP
                };
                Setup::Bare(ns.run(|| self.receiving.attach(program, rx))?, program)
            }
            Variant::Msfilter | Variant::MsfilterInclude => {
                let (mode, reason) = if variant == Variant::Msfilter {
                    (Mode::Exclude, Reason::Excluded)
                } else {
                    (Mode::Include, Reason::NotIncluded)
                };
                let dp = msfilter_datapath(ns, rx, shape, policy, mode)?;
                Setup::Msfilter(Box::new(dp), reason)
            }
            Variant::Nftables => {
                self.nft(&nft_script(shape, policy, &self.link.rx))?;
                Setup::Nftables(ns.run(|| self.receiving.attach(reference::PASS, rx))?)
            }
            Variant::Socket => {
                let restore = if shape.is_ipv6() {
                    Vec::new()
                } else {
                    raise_source_limits(ns, policy.first_group_sources())?
                };
                for (key, old, new) in &restore {
                    let note = format!("{key} {old} → {new}");
                    if !self.raised.contains(&note) {
                        self.raised.push(note);
                    }
                }
                let link = ns.run(|| self.receiving.attach(reference::PASS, rx))?;
                let sockets = ns.run(|| {
                    policy
                        .groups()
                        .map(|(g, n)| {
                            let block: Vec<IpAddr> =
                                (0..n).map(|i| source_addr(shape, i)).collect();
                            app_socket(group_addr(shape, g), rx, &block)
                        })
                        .collect::<Result<Vec<_>>>()
                })?;
                Setup::Socket(link, sockets, restore)
            }
            Variant::Delivered => {
                let link = ns.run(|| self.receiving.attach(reference::PASS, rx))?;
                let (socket, membership) = ns.run(|| app_socket(group_addr(shape, 0), rx, &[]))?;
                socket.set_read_timeout(Some(Duration::from_millis(20)))?;
                let stop = Arc::new(AtomicBool::new(false));
                let flag = Arc::clone(&stop);
                let thread = std::thread::spawn(move || {
                    let _membership = membership;
                    let mut buf = [0u8; 2048];
                    while !flag.load(Ordering::Relaxed) {
                        let _ = socket.recv(&mut buf);
                    }
                });
                Setup::Delivered(link, Reader { stop, thread })
            }
        })
    }

    /// Undo a variant after checking that its counters show all `frames` handled as
    /// expected; returns how.
    fn check_and_teardown(&mut self, setup: Setup, frames: u64, before: &Before) -> Result<String> {
        let ns = &self.link.receiver;
        let udp_now = udp_counters(ns, self.shape.is_ipv6())?;
        let counted = self.receiving.count()? - before.reference;
        let check = match setup {
            Setup::Floor(link) | Setup::Bare(link, _) if counted != frames => {
                let _ = link;
                bail!("the reference program counted {counted} of {frames}")
            }
            Setup::Floor(link) => {
                ns.run(|| self.receiving.detach(reference::DROP, link))?;
                format!("XDP_DROP counted {counted}")
            }
            Setup::Bare(link, program) => {
                ns.run(|| self.receiving.detach(program, link))?;
                format!("XDP_DROP counted {counted}")
            }
            Setup::Msfilter(dp, reason) => {
                let dropped = dp.reason_counters()?.get(reason).packets - before.msfilter;
                ensure!(dropped == frames, "msfilter dropped {dropped} of {frames}");
                drop(dp);
                format!("msfilter dropped {dropped} ({})", reason.name())
            }
            Setup::Nftables(link) => {
                let dropped = nft_dropped(ns)?;
                ensure!(dropped == frames, "nftables dropped {dropped} of {frames}");
                ns.run(|| self.receiving.detach(reference::PASS, link))?;
                self.nft("delete table netdev msfbench\n")?;
                format!("nftables counter dropped {dropped}")
            }
            Setup::Socket(link, sockets, restore) => {
                let delivered = udp_now - before.udp;
                ensure!(counted == frames, "XDP_PASS counted {counted} of {frames}");
                ensure!(delivered == 0, "{delivered} datagrams reached a socket");
                drop(sockets);
                ns.run(|| self.receiving.detach(reference::PASS, link))?;
                for (key, old, _) in restore {
                    ns.sysctl(&key, &old)?;
                }
                format!("XDP passed {counted}, the kernel delivered 0")
            }
            Setup::Delivered(link, reader) => {
                let delivered = udp_now - before.udp;
                ensure!(
                    delivered == frames,
                    "{delivered} of {frames} datagrams reached the socket"
                );
                reader.stop.store(true, Ordering::Relaxed);
                let _ = reader.thread.join();
                ns.run(|| self.receiving.detach(reference::PASS, link))?;
                format!("{delivered} datagrams reached the socket")
            }
        };
        Ok(check)
    }
}

/// Optional memory a socket may use, raised in `ns` for the socket filter's lists.
pub const OPTMEM_MAX: u32 = 4 << 20;

/// Raise `ns`'s IPv4 limits on a socket's source list (`igmp_max_msf`) and option memory
/// (`optmem_max`, which holds the list) where they are below what `sources` per group need;
/// both are per network namespace. Returns (key, old value, new value) of each change, to
/// be restored.
pub fn raise_source_limits(ns: &Netns, sources: u32) -> Result<Vec<(String, String, String)>> {
    let mut changed = Vec::new();
    for (key, value) in [
        ("net.ipv4.igmp_max_msf", sources),
        ("net.core.optmem_max", OPTMEM_MAX),
    ] {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let old = ns.read_proc(&path)?.trim().to_string();
        if old.parse::<u32>().is_ok_and(|o| o >= value) {
            continue;
        }
        ns.sysctl(key, &value.to_string())?;
        changed.push((key.to_string(), old, value.to_string()));
    }
    Ok(changed)
}

/// msfilter loaded and attached to `rx` in `ns`, holding `policy` in `mode`.
pub fn msfilter_datapath(
    ns: &Netns,
    rx: u32,
    shape: Shape,
    policy: Policy,
    mode: Mode,
) -> Result<Datapath> {
    let mut dp = Datapath::load(&LoadOptions::default())?;
    dp.set_filters(policy.groups().map(|(g, n)| {
        (
            GroupKey::new(rx, addr_of(group_addr(shape, g))),
            Some(GroupFilter::new(
                mode,
                (0..n).map(|i| addr_of(source_addr(shape, i))),
            )),
        )
    }))?;
    ns.run(|| dp.attach(rx, Some(AttachMode::Driver), false).map(|_| ()))?;
    Ok(dp)
}

/// The nftables table dropping `policy`'s pairs in `iface`'s ingress hook.
pub fn nft_script(shape: Shape, policy: Policy, iface: &str) -> String {
    use std::fmt::Write as _;
    let (ty, field) = if shape.is_ipv6() {
        ("ipv6_addr", "ip6")
    } else {
        ("ipv4_addr", "ip")
    };
    let mut elements = String::new();
    for (g, n) in policy.groups() {
        let group = group_addr(shape, g);
        for i in 0..n {
            if !elements.is_empty() {
                elements.push_str(",\n");
            }
            let _ = write!(elements, "{group} . {}", source_addr(shape, i));
        }
    }
    format!(
        "table netdev msfbench {{\n\
         \x20 counter dropped {{ }}\n\
         \x20 set blocked {{ type {ty} . {ty}; size {}; elements = {{ {elements} }} }}\n\
         \x20 chain ingress {{\n\
         \x20   type filter hook ingress device \"{iface}\" priority 0; policy accept;\n\
         \x20   {field} daddr . {field} saddr @blocked counter name \"dropped\" drop\n\
         \x20 }}\n\
         }}\n",
        policy.pairs.max(1)
    )
}

pub fn nft(ns: &Netns, script: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft (is nftables installed? cargo xtask bench installs it)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "nft failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

pub fn nft_dropped(ns: &Netns) -> Result<u64> {
    let out = msfilter_testbed::netns::run(
        ns.command("nft")
            .args(["-j", "list", "counter", "netdev", "msfbench", "dropped"]),
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v["nftables"]
        .as_array()
        .and_then(|a| a.iter().find_map(|o| o["counter"]["packets"].as_u64()))
        .context("no packet count in nft's output")
}

struct Before {
    reference: u64,
    udp: u64,
    msfilter: u64,
}

/// What one (variant, size) is, in the order runs are interleaved.
#[derive(Clone, Copy)]
struct Case {
    variant: Variant,
    policy: Policy,
}

fn cases(profile: Profile, sizes: &[u32]) -> Vec<Case> {
    let mut out = Vec::new();
    for &variant in profile.variants() {
        if variant.has_policy() {
            out.extend(sizes.iter().map(|&pairs| Case {
                variant,
                policy: Policy { pairs },
            }));
        } else {
            out.push(Case {
                variant,
                policy: Policy { pairs: 1 },
            });
        }
    }
    out
}

pub fn run(settings: &Settings) -> Result<LiveReport> {
    let mut report = LiveReport::default();
    for profile in Profile::ALL {
        for shape in [Shape::Ipv4, Shape::Ipv6] {
            let tag = if shape.is_ipv6() { "bl6" } else { "bl4" };
            let mut bed = Bed::new(shape, profile, Link::new(tag, &[])?)?;
            let (limit, raisable) = source_list_limit(shape)?;
            let mut all = cases(profile, &settings.sizes);
            all.retain(|c| {
                let n = c.policy.first_group_sources();
                let allowed = c.variant != Variant::Socket || raisable || n <= limit;
                if !allowed {
                    report.skipped.push(Skipped {
                        shape,
                        profile,
                        variant: c.variant,
                        pairs: c.policy.pairs,
                        reason: format!(
                            "a socket may list at most {limit} sources per group here \
                             (net.ipv6.mld_max_msf), which the kernel keeps for the whole \
                             host, not per network namespace; {n} are needed"
                        ),
                    });
                }
                allowed
            });
            let mut runs: Vec<Vec<f64>> = vec![Vec::new(); all.len()];
            let mut checks = vec![String::new(); all.len()];
            let mut profiles: Vec<Option<(f64, f64)>> = vec![None; all.len()];
            for round in 0..settings.rounds {
                let last = round + 1 == settings.rounds;
                for (i, case) in all.iter().enumerate() {
                    let (elapsed, check, counts) = measure(&mut bed, *case, settings, last)
                        .with_context(|| {
                            format!(
                                "{} at {} pairs over {}, {}",
                                case.variant.name(),
                                case.policy.pairs,
                                shape.name(),
                                profile.name()
                            )
                        })?;
                    checks[i] = check;
                    match counts {
                        Ok(Some(c)) => profiles[i] = Some(c),
                        Ok(None) => {}
                        Err(perf_said) => {
                            report.perf_stat.get_or_insert(perf_said);
                        }
                    }
                    runs[i].push(elapsed);
                }
            }
            if profile == Profile::Plain {
                let policy = Policy { pairs: 1 };
                report.profiled.extend(
                    record(&mut bed, policy, settings).with_context(|| {
                        format!("perf record of msfilter over {}", shape.name())
                    })?,
                );
            }
            let floor = all
                .iter()
                .position(|c| c.variant == Variant::Floor)
                .map_or(f64::NAN, |i| median(&runs[i]));
            for (i, case) in all.iter().enumerate() {
                let ns = median(&runs[i]);
                report.rows.push(LiveRow {
                    shape,
                    profile,
                    variant: case.variant,
                    pairs: if case.variant.has_policy() {
                        case.policy.pairs
                    } else {
                        0
                    },
                    ns,
                    above_floor: ns - floor,
                    rounds: runs[i].clone(),
                    check: checks[i].clone(),
                    instructions: profiles[i].map(|p| p.0),
                    cycles: profiles[i].map(|p| p.1),
                });
            }
            for note in bed.raised.drain(..) {
                if !report.raised.contains(&note) {
                    report.raised.push(note);
                }
            }
            eprintln!("  live path: {}, {} measured", shape.name(), profile.name());
        }
    }
    Ok(report)
}

/// One run: ns per frame, the check, and perf's (instructions, cycles) per frame, or what
/// perf said instead of counting.
type Measured = (f64, String, Result<Option<(f64, f64)>, String>);

/// One run of `case`.
fn measure(bed: &mut Bed, case: Case, settings: &Settings, with_perf: bool) -> Result<Measured> {
    const WARM_UP: u32 = 20_000;
    let setup = bed.setup(case.variant, case.policy)?;
    let source = match case.variant {
        Variant::MsfilterInclude => unlisted_addr(bed.shape),
        _ => source_addr(bed.shape, case.policy.probe()),
    };
    let frame = bed.frame(source);
    // Warm-up: neighbour tables, caches, page pools.
    send(bed, &frame, settings.cpu, WARM_UP)?;
    settle();
    let before = Before {
        reference: bed.receiving.count()?,
        udp: udp_counters(&bed.link.receiver, bed.shape.is_ipv6())?,
        msfilter: match &setup {
            Setup::Msfilter(dp, reason) => dp.reason_counters()?.get(*reason).packets,
            _ => 0,
        },
    };
    let perf = if with_perf {
        Perf::stat(settings.cpu)
    } else {
        None
    };
    let elapsed = send(bed, &frame, settings.cpu, settings.frames)?;
    let counts = match perf.map(Perf::stop_stat) {
        Some(Ok((ins, cyc))) => {
            let n = f64::from(settings.frames);
            Ok(Some((ins / n, cyc / n)))
        }
        Some(Err(perf_said)) => Err(perf_said),
        None => Ok(None),
    };
    settle();
    let frames = u64::from(settings.frames);
    let expected = match &setup {
        // nftables' counter counts the warm-up too.
        Setup::Nftables(_) => frames + u64::from(WARM_UP),
        _ => frames,
    };
    let check = bed.check_and_teardown(setup, expected, &before)?;
    Ok((
        elapsed.as_nanos() as f64 / f64::from(settings.frames),
        check,
        counts,
    ))
}

/// `perf record` on the measuring CPU during a run of msfilter's EXCLUDE drop path, one of
/// the floor and one of the bare lookup; each run is checked like a measured one.
fn record(bed: &mut Bed, policy: Policy, settings: &Settings) -> Result<Option<Profiled>> {
    let frames = settings.frames.saturating_mul(2);
    let Some(m) = record_one(bed, Variant::Msfilter, policy, settings, frames)? else {
        return Ok(None);
    };
    let floor = record_one(bed, Variant::Floor, policy, settings, frames)?;
    let bare = record_one(bed, Variant::Bare, policy, settings, frames)?;
    let per_frame = |ns: u64| ns as f64 / f64::from(frames);
    Ok(Some(Profiled {
        shape: bed.shape,
        samples: m.samples,
        frames: u64::from(frames),
        hash_ns: per_frame(m.hash_ns),
        jhash_ns: per_frame(m.jhash_ns),
        program_ns: per_frame(m.program_ns),
        busy_ns: per_frame(m.busy_ns),
        floor_busy_ns: floor.map(|f| per_frame(f.busy_ns)),
        top: m
            .top
            .into_iter()
            .map(|(name, share)| (name, share * per_frame(m.busy_ns)))
            .collect(),
        bare: bare.map(|b| BareProfile {
            program_ns: per_frame(b.program_ns),
            hash_ns: per_frame(b.hash_ns),
        }),
    }))
}

fn record_one(
    bed: &mut Bed,
    variant: Variant,
    policy: Policy,
    settings: &Settings,
    frames: u32,
) -> Result<Option<perf::Summary>> {
    const WARM_UP: u32 = 20_000;
    let setup = bed.setup(variant, policy)?;
    let frame = bed.frame(source_addr(bed.shape, policy.probe()));
    send(bed, &frame, settings.cpu, WARM_UP)?;
    settle();
    let before = Before {
        reference: bed.receiving.count()?,
        udp: udp_counters(&bed.link.receiver, bed.shape.is_ipv6())?,
        msfilter: match &setup {
            Setup::Msfilter(dp, reason) => dp.reason_counters()?.get(*reason).packets,
            _ => 0,
        },
    };
    let recording = Perf::record(settings.cpu);
    let sent = if recording.is_some() { frames } else { 0 };
    if sent > 0 {
        send(bed, &frame, settings.cpu, sent)?;
    }
    let symbols = recording.and_then(Perf::stop_record);
    settle();
    bed.check_and_teardown(setup, u64::from(sent), &before)?;
    let program = match variant {
        Variant::Bare if bed.shape.is_ipv6() => reference::LOOKUP6,
        Variant::Bare => reference::LOOKUP,
        Variant::Floor => reference::DROP,
        _ => msfilter_common::limits::PROGRAM_NAME,
    };
    Ok(symbols.map(|s| perf::summarise(&s, program)))
}

/// Let frames still queued on the receiving side (the veth's ring, a socket's reader) be
/// processed, so counters read next include all of them: the send returns once the
/// frames are handed to the veth, not once the receiver is done with them.
fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}

/// Send `count` copies of `frame` from the sender's namespace, pinned to `cpu`.
fn send(bed: &Bed, frame: &[u8], cpu: usize, count: u32) -> Result<Duration> {
    let tx = bed.tx;
    bed.link.sender.run(|| {
        reference::pin_to_cpu(cpu)?;
        bed.sending.send_live(frame, tx, count)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_split_into_groups_of_a_thousand() {
        let p = Policy { pairs: 100_000 };
        assert_eq!(p.groups().count(), 100);
        assert_eq!(p.groups().map(|(_, n)| n).sum::<u32>(), 100_000);
        assert_eq!(p.probe(), 500);
        let p = Policy { pairs: 1 };
        assert_eq!(p.groups().collect::<Vec<_>>(), [(0, 1)]);
        assert_eq!(p.probe(), 0);
        let p = Policy { pairs: 1_500 };
        assert_eq!(p.groups().collect::<Vec<_>>(), [(0, 1000), (1, 500)]);
    }

    #[test]
    fn the_nft_set_holds_every_pair_and_the_probe_is_listed() {
        let p = Policy { pairs: 1_000 };
        let script = nft_script(Shape::Ipv4, p, "rx0");
        // The elements, plus the set's type and the rule's match.
        assert_eq!(script.matches(" . ").count(), 1_000 + 2);
        let probe = format!(
            "{} . {}",
            group_addr(Shape::Ipv4, 0),
            source_addr(Shape::Ipv4, p.probe())
        );
        assert!(script.contains(&probe), "{probe}");
        assert!(!script.contains(&unlisted_addr(Shape::Ipv4).to_string()));
        let script6 = nft_script(Shape::Ipv6, Policy { pairs: 1 }, "rx0");
        assert!(script6.contains("ff3e::1:0 . fd99::4:1"), "{script6}");
    }
}
