//! The live path: frames sent with XDP_TX live frames out of one veth end into its peer,
//! everything pinned to one CPU, so the wall time per frame is the whole receive path on
//! that CPU. Variants on the receiving end, run interleaved round after round:
//!
//! * the floor: an XDP_DROP program;
//! * msfilter dropping the blocked source;
//! * XDP_PASS, then nftables dropping in the netdev ingress hook with a `daddr . saddr` set;
//! * XDP_PASS, then the kernel's own filtering for a socket that joined and blocked the
//!   source;
//! * XDP_PASS with no filter: datagrams reach a socket.
//!
//! After every run the variant's own counters must show it handled every frame as it
//! should; a run that does not is an error, not a number.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
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
use msfilter_common::{Addr, Mode, Reason};
use msfilter_testbed::netns::{Link, Netns};
use serde::Serialize;

use crate::{
    frames::{Shape, udp},
    median,
    reference::{self, Reference},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Variant {
    #[serde(rename = "XDP_DROP floor")]
    Floor,
    #[serde(rename = "msfilter (XDP drop)")]
    Msfilter,
    #[serde(rename = "XDP_PASS + nftables ingress set")]
    Nftables,
    #[serde(rename = "XDP_PASS + socket join + block")]
    Socket,
    #[serde(rename = "XDP_PASS, delivered to a socket")]
    Delivered,
}

impl Variant {
    pub const ALL: [Self; 5] = [
        Self::Floor,
        Self::Msfilter,
        Self::Nftables,
        Self::Socket,
        Self::Delivered,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Floor => "XDP_DROP floor",
            Self::Msfilter => "msfilter (XDP drop)",
            Self::Nftables => "XDP_PASS + nftables ingress set",
            Self::Socket => "XDP_PASS + socket join + block",
            Self::Delivered => "XDP_PASS, delivered to a socket",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LiveRow {
    pub shape: Shape,
    pub variant: Variant,
    /// Median over rounds, ns per frame.
    pub ns: f64,
    pub above_floor: f64,
    pub rounds: Vec<f64>,
    /// What the variant's counters showed in the last round.
    pub check: String,
    /// perf on the measuring CPU during the last round, per frame (when perf works here).
    pub instructions: Option<f64>,
    pub cycles: Option<f64>,
}

/// `perf stat` counting instructions and cycles on one CPU while frames are sent.
struct Perf(std::process::Child);

impl Perf {
    fn start(cpu: usize) -> Option<Self> {
        use std::os::unix::process::CommandExt as _;
        let child = std::process::Command::new("perf")
            .args(["stat", "-x", ",", "-e", "instructions,cycles", "-C"])
            .arg(cpu.to_string())
            .args(["--", "sleep", "600"])
            // Its own process group, so one signal stops perf and its sleep together.
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        // Let it set up its counters before the frames start.
        std::thread::sleep(Duration::from_millis(200));
        Some(Self(child))
    }

    /// Stop counting; instructions and cycles.
    fn stop(self) -> Option<(f64, f64)> {
        let Self(child) = self;
        // SAFETY: plain kill(2) on our child's process group: perf prints its counts on
        // SIGINT once its sleep ends too.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
        let out = child.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        let count = |event: &str| -> Option<f64> {
            text.lines()
                .find(|l| l.split(',').nth(2).is_some_and(|e| e.starts_with(event)))
                .and_then(|l| l.split(',').next())
                .and_then(|v| v.trim().parse().ok())
        };
        Some((count("instructions")?, count("cycles")?))
    }
}

pub struct Settings {
    pub frames: u32,
    pub rounds: usize,
    /// CPU every frame is processed on.
    pub cpu: usize,
}

struct Bed {
    link: Link,
    rx: u32,
    tx: u32,
    group: IpAddr,
    source: IpAddr,
    frame: Vec<u8>,
    receiving: Reference,
    sending: Reference,
}

/// A variant in place on the receiving side, and how to check it afterwards.
enum Setup {
    Floor(aya::programs::xdp::XdpLinkId),
    Msfilter(Box<Datapath>),
    Nftables(aya::programs::xdp::XdpLinkId),
    Socket(aya::programs::xdp::XdpLinkId, MembershipSocket),
    Delivered(aya::programs::xdp::XdpLinkId, Reader),
}

/// A socket drained on its own thread, as an application would.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

fn udp_counters(ns: &Netns, ipv6: bool) -> Result<u64> {
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

/// A UDP socket on the group's port, joined on `ifindex`, optionally blocking `block`.
fn app_socket(
    group: IpAddr,
    ifindex: u32,
    block: Option<IpAddr>,
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
    if let Some(source) = block {
        membership.apply(group, &Request::BlockSource { source })?;
    }
    Ok((socket, membership))
}

impl Bed {
    fn new(shape: Shape) -> Result<Self> {
        let tag = if shape.is_ipv6() { "bl6" } else { "bl4" };
        let link = Link::new(tag, &[])?;
        // Only generated frames may reach the receiver, so every count is exact: the sender
        // namespace's own IPv6 (router solicitations, MLD reports) is switched off.
        for key in ["all", "default", "tx0"] {
            link.sender
                .sysctl(&format!("net.ipv6.conf.{key}.disable_ipv6"), "1")?;
        }
        let rx = link.receiver.ifindex(&link.rx)?;
        let tx = link.sender.ifindex(&link.tx)?;
        let (group, source): (IpAddr, IpAddr) = if shape.is_ipv6() {
            ("ff3e::1".parse()?, "fd99::3".parse()?)
        } else {
            ("232.1.1.1".parse()?, "10.99.0.3".parse()?)
        };
        let frame = udp(shape, &addr_of(group), &addr_of(source));
        Ok(Self {
            link,
            rx,
            tx,
            group,
            source,
            frame,
            receiving: Reference::load(1)?,
            sending: Reference::load(1)?,
        })
    }

    fn nft(&self, script: &str) -> Result<()> {
        use std::io::Write as _;
        let mut child = self
            .link
            .receiver
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

    fn nft_dropped(&self) -> Result<u64> {
        let out = msfilter_testbed::netns::run(
            self.link
                .receiver
                .command("nft")
                .args(["-j", "list", "counter", "netdev", "msfbench", "dropped"]),
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        v["nftables"]
            .as_array()
            .and_then(|a| a.iter().find_map(|o| o["counter"]["packets"].as_u64()))
            .context("no packet count in nft's output")
    }

    fn setup(&mut self, variant: Variant, shape: Shape) -> Result<Setup> {
        let rx = self.rx;
        let ns = &self.link.receiver;
        Ok(match variant {
            Variant::Floor => Setup::Floor(ns.run(|| self.receiving.attach(reference::DROP, rx))?),
            Variant::Msfilter => {
                let mut dp = Datapath::load(&LoadOptions::default())?;
                let listed: Addr = addr_of(self.source);
                dp.set_filter(
                    rx,
                    addr_of(self.group),
                    Some(GroupFilter::new(Mode::Exclude, [listed])),
                )?;
                ns.run(|| dp.attach(rx, Some(AttachMode::Driver), false).map(|_| ()))?;
                Setup::Msfilter(Box::new(dp))
            }
            Variant::Nftables => {
                let (ty, field) = if shape.is_ipv6() {
                    ("ipv6_addr", "ip6")
                } else {
                    ("ipv4_addr", "ip")
                };
                self.nft(&format!(
                    "table netdev msfbench {{\n\
                     \x20 counter dropped {{ }}\n\
                     \x20 set blocked {{ type {ty} . {ty}; elements = {{ {} . {} }} }}\n\
                     \x20 chain ingress {{\n\
                     \x20   type filter hook ingress device \"{}\" priority 0; policy accept;\n\
                     \x20   {field} daddr . {field} saddr @blocked counter name \"dropped\" drop\n\
                     \x20 }}\n\
                     }}\n",
                    self.group, self.source, self.link.rx
                ))?;
                Setup::Nftables(ns.run(|| self.receiving.attach(reference::PASS, rx))?)
            }
            Variant::Socket => {
                let link = ns.run(|| self.receiving.attach(reference::PASS, rx))?;
                let (_socket, membership) =
                    ns.run(|| app_socket(self.group, rx, Some(self.source)))?;
                Setup::Socket(link, membership)
            }
            Variant::Delivered => {
                let link = ns.run(|| self.receiving.attach(reference::PASS, rx))?;
                let (socket, _membership) = ns.run(|| app_socket(self.group, rx, None))?;
                socket.set_read_timeout(Some(Duration::from_millis(20)))?;
                let stop = Arc::new(AtomicBool::new(false));
                let flag = Arc::clone(&stop);
                let thread = std::thread::spawn(move || {
                    let _membership = _membership;
                    let mut buf = [0u8; 2048];
                    while !flag.load(Ordering::Relaxed) {
                        let _ = socket.recv(&mut buf);
                    }
                });
                Setup::Delivered(link, Reader { stop, thread })
            }
        })
    }

    /// Undo a variant; returns whether its counters show all `frames` handled as expected,
    /// and how.
    fn check_and_teardown(
        &mut self,
        setup: Setup,
        frames: u64,
        before: &Before,
        shape: Shape,
    ) -> Result<String> {
        let ns = &self.link.receiver;
        let udp_now = udp_counters(ns, shape.is_ipv6())?;
        let passed = self.receiving.count()? - before.reference;
        let check = match setup {
            Setup::Floor(link) => {
                ensure!(
                    passed == frames,
                    "the floor program counted {passed} of {frames}"
                );
                ns.run(|| self.receiving.detach(reference::DROP, link))?;
                format!("XDP_DROP counted {passed}")
            }
            Setup::Msfilter(dp) => {
                let counters = dp.reason_counters()?;
                let excluded = counters.get(Reason::Excluded).packets;
                ensure!(
                    excluded == frames,
                    "msfilter dropped {excluded} of {frames}"
                );
                drop(dp);
                format!("msfilter dropped {excluded} (exclude-mode-listed-source)")
            }
            Setup::Nftables(link) => {
                let dropped = self.nft_dropped()?;
                ensure!(dropped == frames, "nftables dropped {dropped} of {frames}");
                ns.run(|| self.receiving.detach(reference::PASS, link))?;
                self.nft("delete table netdev msfbench\n")?;
                format!("nftables counter dropped {dropped}")
            }
            Setup::Socket(link, membership) => {
                let delivered = udp_now - before.udp;
                ensure!(passed == frames, "XDP_PASS counted {passed} of {frames}");
                ensure!(delivered == 0, "{delivered} datagrams reached a socket");
                drop(membership);
                ns.run(|| self.receiving.detach(reference::PASS, link))?;
                format!("XDP passed {passed}, the kernel delivered 0")
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

struct Before {
    reference: u64,
    udp: u64,
}

pub fn run(settings: &Settings) -> Result<Vec<LiveRow>> {
    let mut rows = Vec::new();
    for shape in [Shape::Ipv4, Shape::Ipv6] {
        let mut bed = Bed::new(shape)?;
        let mut runs: Vec<Vec<f64>> = vec![Vec::new(); Variant::ALL.len()];
        let mut checks = vec![String::new(); Variant::ALL.len()];
        let mut profiles: Vec<Option<(f64, f64)>> = vec![None; Variant::ALL.len()];
        for round in 0..settings.rounds {
            let last = round + 1 == settings.rounds;
            for (i, variant) in Variant::ALL.into_iter().enumerate() {
                let setup = bed.setup(variant, shape)?;
                // Warm-up: neighbour tables, caches, page pools.
                send(&bed, settings, 20_000)?;
                let before = Before {
                    reference: bed.receiving.count()?,
                    udp: udp_counters(&bed.link.receiver, shape.is_ipv6())?,
                };
                let msfilter_before = match &setup {
                    Setup::Msfilter(dp) => dp.reason_counters()?.get(Reason::Excluded).packets,
                    _ => 0,
                };
                let perf = if last {
                    Perf::start(settings.cpu)
                } else {
                    None
                };
                let elapsed = send(&bed, settings, settings.frames)?;
                if let Some(perf) = perf {
                    profiles[i] = perf.stop().map(|(ins, cyc)| {
                        let n = f64::from(settings.frames);
                        (ins / n, cyc / n)
                    });
                }
                // Let the socket reader drain what is queued.
                std::thread::sleep(Duration::from_millis(100));
                let frames = u64::from(settings.frames);
                let expected = match &setup {
                    Setup::Msfilter(_) => frames + msfilter_before,
                    Setup::Nftables(_) => frames + 20_000,
                    _ => frames,
                };
                checks[i] = bed
                    .check_and_teardown(setup, expected, &before, shape)
                    .with_context(|| format!("{} over {}", variant.name(), shape.name()))?;
                runs[i].push(elapsed.as_nanos() as f64 / f64::from(settings.frames));
            }
        }
        let floor = median(&runs[0]);
        for (i, variant) in Variant::ALL.into_iter().enumerate() {
            let ns = median(&runs[i]);
            rows.push(LiveRow {
                shape,
                variant,
                ns,
                above_floor: ns - floor,
                rounds: runs[i].clone(),
                check: checks[i].clone(),
                instructions: profiles[i].map(|p| p.0),
                cycles: profiles[i].map(|p| p.1),
            });
        }
        eprintln!("  live path: {} measured", shape.name());
    }
    Ok(rows)
}

/// Send `count` frames from the sender's namespace, pinned to the measuring CPU.
fn send(bed: &Bed, settings: &Settings, count: u32) -> Result<Duration> {
    let (tx, frame, cpu) = (bed.tx, bed.frame.clone(), settings.cpu);
    bed.link.sender.run(|| {
        reference::pin_to_cpu(cpu)?;
        bed.sending.send_live(&frame, tx, count)
    })
}
