//! The kernel as oracle: random unmodified sockets apply random option sequences on a few
//! groups and sources (every option set, misordered and failing requests included: the
//! kernel judges), then the same random (group, source) frames are sent twice — once with
//! no XDP program on the receiver, once with XDP enforcing the follower's merge. The frames
//! that reach an IPv4 raw socket (which sees what passed the kernel's interface-level check,
//! `ip_check_mc_rcu()`) must be the same set both times.
//!
//! The seed comes from `MSFILTER_SEED` (decimal or 0x-hex) or the clock and is printed;
//! `MSFILTER_SEED=<seed> cargo test -p msfilter-testbed --test integration
//! follow_differential::` replays a run. `MSFILTER_STATES` and `MSFILTER_FRAMES` (per state)
//! change the size.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use msfilter::{
    datapath::{AttachMode, Datapath},
    sockopt::{Family, Mode, Request, addr_of},
};
use msfilter_common::{Reason, Verdict};
use msfilter_testbed::{
    apps::AppSocket,
    followed::{self, settle},
    model::load_datapath,
    netns::{Link, Netns},
    option_sets::OptionSet,
    rng::Rng,
};

const DEFAULT_STATES: usize = 8;
const DEFAULT_FRAMES: usize = 600;
const PORT: u16 = 5003;
const RX_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

/// A raw IPv4 socket for UDP in the receiver namespace: every UDP datagram the host
/// accepts, whatever its port and group.
fn raw_udp_socket(ns: &Netns) -> UdpSocketLike {
    ns.run(|| {
        // SAFETY: plain socket(2), checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::IPPROTO_UDP,
            )
        };
        assert!(raw >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size: libc::c_int = 32 << 20;
        // SAFETY: an int option on a live socket.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                4,
            )
        };
        UdpSocketLike(fd)
    })
}

struct UdpSocketLike(OwnedFd);

impl UdpSocketLike {
    /// Every (run, frame index) received, until nothing arrived for 300 ms.
    fn collect(&self, run: u32) -> BTreeSet<u32> {
        let mut got = BTreeSet::new();
        let mut buf = [0u8; 2048];
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_millis(300) {
            // SAFETY: reading into a live buffer.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            quiet_since = Instant::now();
            let n = n as usize;
            // IPv4 header (IHL), UDP header, then our 8 bytes: run, index.
            let ihl = usize::from(buf[0] & 0xf) * 4;
            if n < ihl + 16 || u16::from_be_bytes([buf[ihl + 2], buf[ihl + 3]]) != PORT {
                continue;
            }
            let p = &buf[ihl + 8..];
            if u32::from_be_bytes([p[0], p[1], p[2], p[3]]) == run {
                got.insert(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
            }
        }
        got
    }
}

/// One sending socket per source address.
fn senders(ns: &Netns, sources: &[Ipv4Addr], tx: u32) -> BTreeMap<Ipv4Addr, UdpSocket> {
    ns.run(|| {
        sources
            .iter()
            .map(|&s| {
                let socket = UdpSocket::bind(SocketAddr::new(IpAddr::V4(s), 0)).unwrap();
                let mreqn = libc::ip_mreqn {
                    imr_multiaddr: libc::in_addr { s_addr: 0 },
                    imr_address: libc::in_addr { s_addr: 0 },
                    imr_ifindex: tx as i32,
                };
                // SAFETY: a live ip_mreqn for IP_MULTICAST_IF.
                let rc = unsafe {
                    libc::setsockopt(
                        socket.as_raw_fd(),
                        libc::IPPROTO_IP,
                        libc::IP_MULTICAST_IF,
                        (&raw const mreqn).cast(),
                        size_of::<libc::ip_mreqn>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0);
                socket.set_multicast_loop_v4(false).unwrap();
                (s, socket)
            })
            .collect()
    })
}

fn random_request(rng: &mut Rng, sources: &[IpAddr]) -> Request {
    let s = *rng.choose(sources);
    match rng.weighted(&[3, 1, 3, 2, 3, 2, 2]) {
        0 => Request::JoinGroup,
        1 => Request::LeaveGroup,
        2 => Request::BlockSource { source: s },
        3 => Request::UnblockSource { source: s },
        4 => Request::JoinSourceGroup { source: s },
        5 => Request::LeaveSourceGroup { source: s },
        _ => {
            let mode = if rng.chance(0.5) {
                Mode::Include
            } else {
                Mode::Exclude
            };
            let picked: Vec<IpAddr> = sources
                .iter()
                .copied()
                .filter(|_| rng.chance(0.4))
                .collect();
            Request::SetFilter {
                mode,
                sources: picked,
            }
        }
    }
}

#[test]
fn frames_reaching_the_host_are_the_same_with_and_without_xdp() {
    let seed = Rng::seed_from_env_or_clock("MSFILTER_SEED");
    println!("MSFILTER_SEED={seed:#x}");
    let mut rng = Rng::new(seed);
    let states = env_usize("MSFILTER_STATES", DEFAULT_STATES);
    let frames = env_usize("MSFILTER_FRAMES", DEFAULT_FRAMES);

    let source_addrs: Vec<Ipv4Addr> = [1, 3, 4, 5].map(|n| Ipv4Addr::new(10, 99, 0, n)).to_vec();
    let prefixed: Vec<String> = source_addrs.iter().map(|a| format!("{a}/24")).collect();
    let link = Link::new(
        "fdif",
        &prefixed.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    let rx = link.receiver.ifindex(&link.rx).unwrap();
    let tx = link.sender.ifindex(&link.tx).unwrap();
    let groups: Vec<Ipv4Addr> = [1, 2, 3].map(|n| Ipv4Addr::new(232, 10, 0, n)).to_vec();
    // The sockets' source lists name the senders plus one address that never sends.
    let mut listed: Vec<IpAddr> = source_addrs.iter().map(|a| IpAddr::V4(*a)).collect();
    listed.push(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 9)));

    let mut dp: Datapath = load_datapath();
    let mut follower = followed::start(&link.receiver, &[rx]);
    let raw = raw_udp_socket(&link.receiver);
    let send = senders(&link.sender, &source_addrs, tx);

    let mut run = 0u32;
    let (mut total, mut passed, mut xdp_dropped) = (0usize, 0usize, 0u64);
    for state in 0..states {
        // Random sockets with random option sequences (errors are the kernel's business).
        let sockets: Vec<AppSocket> = (0..rng.range_inclusive(1usize..=5))
            .map(|_| AppSocket::udp(&link.receiver, Family::V4))
            .collect();
        let mut applied = Vec::new();
        for socket in &sockets {
            for _ in 0..rng.range_inclusive(1usize..=8) {
                let group = IpAddr::V4(*rng.choose(&groups));
                let req = random_request(&mut rng, &listed);
                let set = if rng.chance(0.5) {
                    OptionSet::FamilySpecific
                } else {
                    OptionSet::ProtocolIndependent
                };
                let result = socket.apply(group, rx, RX_V4, &req, set);
                applied.push(format!(
                    "{} {group} {req} {set:?}: {result:?}",
                    socket.cookie()
                ));
            }
        }
        settle(&mut follower);

        // The same random frames twice.
        let pattern: Vec<(Ipv4Addr, Ipv4Addr)> = (0..frames)
            .map(|_| (*rng.choose(&source_addrs), *rng.choose(&groups)))
            .collect();
        let send_all = |run: u32| {
            for (i, (source, group)) in pattern.iter().enumerate() {
                let mut payload = [0u8; 16];
                payload[..4].copy_from_slice(&run.to_be_bytes());
                payload[4..8].copy_from_slice(&(i as u32).to_be_bytes());
                send[source]
                    .send_to(&payload, SocketAddr::new(IpAddr::V4(*group), PORT))
                    .unwrap();
                if i % 50 == 49 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };

        run += 1;
        send_all(run);
        let without_xdp = raw.collect(run);

        let mode = link
            .receiver
            .run(|| {
                dp.attach(rx, Some(AttachMode::Driver), false)
                    .map(|a| a.mode)
            })
            .unwrap();
        assert_eq!(mode, AttachMode::Driver);
        let desired = follower.desired();
        let followed_groups: BTreeSet<[u8; 16]> = desired.iter().map(|(k, _)| k.group).collect();
        dp.set_filters(desired).unwrap();
        let before = dp.reason_counters().unwrap();
        run += 1;
        send_all(run);
        let with_xdp = raw.collect(run);
        let counted = dp.reason_counters().unwrap().since(&before);
        dp.detach(rx, false).unwrap();

        let dropped_here: u64 = Reason::ALL
            .into_iter()
            .filter(|r| r.verdict() == Verdict::Drop)
            .map(|r| counted.get(r).packets)
            .sum();
        xdp_dropped += dropped_here;
        total += frames;
        passed += with_xdp.len();
        if with_xdp != without_xdp {
            let only_kernel: Vec<_> = without_xdp
                .difference(&with_xdp)
                .take(10)
                .map(|&i| pattern[i as usize])
                .collect();
            let only_xdp: Vec<_> = with_xdp
                .difference(&without_xdp)
                .take(10)
                .map(|&i| pattern[i as usize])
                .collect();
            panic!(
                "MSFILTER_SEED={seed:#x} state {state}: {} frames passed without XDP, {} with \
                 it.\n(source, group) passed only without XDP: {only_kernel:?}\nonly with XDP: \
                 {only_xdp:?}\noptions applied:\n  {}\nfollower groups: {:#?}",
                without_xdp.len(),
                with_xdp.len(),
                applied.join("\n  "),
                follower.groups().collect::<Vec<_>>()
            );
        }
        // XDP is as tight as the kernel: every frame the kernel refused was dropped at XDP,
        // except those of groups no socket joined (not followed, left to the kernel).
        let unmanaged = pattern
            .iter()
            .filter(|(_, g)| !followed_groups.contains(&addr_of(IpAddr::V4(*g))))
            .count() as u64;
        assert_eq!(
            dropped_here + unmanaged,
            (frames - with_xdp.len()) as u64,
            "MSFILTER_SEED={seed:#x} state {state}: {dropped_here} dropped at XDP, {unmanaged} \
             of unfollowed groups, {} refused by the kernel",
            frames - with_xdp.len()
        );
        drop(sockets);
        followed::settle_until(&mut follower, |f| f.groups().count() == 0);
    }
    println!(
        "{total} frames in {states} states: {passed} reached the host with XDP as without, \
         {xdp_dropped} dropped at XDP"
    );
    assert!(
        passed > 0 && xdp_dropped > 0,
        "the random states exercised both verdicts"
    );
}
