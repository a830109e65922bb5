//! The follower's merge enforced at XDP with real traffic, no daemon: a `Datapath` loaded
//! and attached in the receiver namespace gets exactly what the follower reports
//! (`take_changes` → `set_filters`). An unwanted source is dropped before the IP layer (it
//! never reaches `Ip: InReceives` / `Ip6InReceives`), a wanted one is never lost — also
//! while an application is closed or killed and while the follower restarts.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use msfilter::{
    datapath::{AttachMode, Datapath},
    follow::Follower,
    sockopt::{Family, Mode, Request, addr_of},
};
use msfilter_common::{GroupKey, Reason, Verdict};
use msfilter_testbed::{
    apps::{AppFilter, AppSocket, PyApp},
    followed::{self, in_receives, settle, settle_until},
    model::load_datapath,
    netns::{Link, Netns},
    option_sets::OptionSet,
    traffic::{PORT, Sender},
};

const PER_SOURCE: u64 = 300;
/// `rx0`'s IPv4 address (family-specific source options name the interface by it).
const RX_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Bed {
    link: Link,
    rx: u32,
    dp: Datapath,
    /// `None` only while it restarts.
    follower: Option<Follower>,
    group: IpAddr,
    wanted: IpAddr,
    unwanted: IpAddr,
    senders: BTreeMap<IpAddr, Sender>,
}

impl Bed {
    fn new(tag: &str, family: Family) -> Self {
        let (group, wanted, unwanted, addrs) = match family {
            Family::V4 => (
                ip("232.9.9.9"),
                ip("10.99.0.1"),
                ip("10.99.0.3"),
                ["10.99.0.1/24", "10.99.0.3/24"],
            ),
            Family::V6 => (
                ip("ff3e::9:9"),
                ip("fd99::1"),
                ip("fd99::3"),
                ["fd99::1/64", "fd99::3/64"],
            ),
        };
        let link = Link::new(tag, &addrs).unwrap();
        let rx = link.receiver.ifindex(&link.rx).unwrap();
        let tx = link.sender.ifindex(&link.tx).unwrap();
        let mut dp = load_datapath();
        let mode = link
            .receiver
            .run(|| {
                dp.attach(rx, Some(AttachMode::Driver), false)
                    .map(|a| a.mode)
            })
            .unwrap();
        assert_eq!(mode, AttachMode::Driver);
        let follower = Some(followed::start(&link.receiver, &[rx]));
        let senders = [wanted, unwanted]
            .into_iter()
            .map(|s| (s, Sender::new(&link.sender, s, group, tx, 32)))
            .collect();
        Self {
            link,
            rx,
            dp,
            follower,
            group,
            wanted,
            unwanted,
            senders,
        }
    }

    fn ns(&self) -> &Netns {
        &self.link.receiver
    }

    fn key(&self) -> GroupKey {
        GroupKey::new(self.rx, addr_of(self.group))
    }

    /// Settle the follower until the group enforces `want` (`None`: not followed), and
    /// write what changed to the maps.
    fn enforce(&mut self, want: Option<AppFilter>) {
        let (key, group) = (self.key(), self.group);
        settle_until(self.follower.as_mut().unwrap(), |f| {
            f.group(&key)
                .map(|g| followed::app_filter(&g.enforced, group))
                == want
        });
        self.apply();
        let installed = self
            .dp
            .installed()
            .get(&key)
            .map(|i| followed::app_filter(&i.filter(), group));
        assert_eq!(installed, want, "the maps hold what the follower enforces");
    }

    fn apply(&mut self) {
        let changes = self.follower.as_mut().unwrap().take_changes();
        self.dp.set_filters(changes).unwrap();
    }

    fn send(&mut self, source: IpAddr, n: u64) {
        let sender = self.senders.get_mut(&source).unwrap();
        for _ in 0..n {
            sender.send().unwrap();
        }
    }

    /// Datagrams of the followed group that reached the IP layer while `f` ran: the growth
    /// of `InReceives` and `Ip6InReceives`, less the frames XDP passed without judging them
    /// against a group filter (the sender kernel's own MLD reports and neighbour discovery,
    /// other groups, of either family): those are not the test's traffic.
    fn ip_datagrams_during(&mut self, f: impl FnOnce(&mut Self)) -> u64 {
        let (ip_before, xdp_before) = self.quiet_counts();
        f(self);
        std::thread::sleep(Duration::from_millis(200));
        let (ip_after, xdp_after) = self.quiet_counts();
        (ip_after - ip_before) - (xdp_after - xdp_before)
    }

    /// (`InReceives` + `Ip6InReceives`, unjudged XDP frames), read until two readings 10 ms
    /// apart agree, so no frame is between XDP and the IP layer.
    fn quiet_counts(&self) -> (u64, u64) {
        let read = || {
            (
                in_receives(self.ns(), false) + in_receives(self.ns(), true),
                self.unjudged(),
            )
        };
        let mut last = read();
        loop {
            std::thread::sleep(Duration::from_millis(10));
            let now = read();
            if now == last {
                return now;
            }
            last = now;
        }
    }

    /// IP frames XDP passed without a group's filter deciding.
    fn unjudged(&self) -> u64 {
        let counters = self.dp.reason_counters().unwrap();
        Reason::ALL
            .into_iter()
            .filter(|r| {
                r.verdict() == Verdict::Pass
                    && !matches!(r, Reason::NotIp | Reason::Included | Reason::NotExcluded)
            })
            .map(|r| counters.get(r).packets)
            .sum()
    }

    fn dropped(&self) -> u64 {
        self.dp.reason_counters().unwrap().totals().1.packets
    }
}

fn received_from(socket: &AppSocket) -> BTreeMap<IpAddr, u64> {
    let mut out = BTreeMap::new();
    for s in socket.drain_sources() {
        *out.entry(s).or_insert(0) += 1;
    }
    out
}

/// Send from the wanted source continuously (every 500 µs) until stopped; returns how
/// many were sent.
struct Stream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    fn start(mut sender: Sender) -> (Self, std::sync::mpsc::Receiver<Sender>) {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (back, returned) = std::sync::mpsc::channel();
        let thread = {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sender.send().unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(500));
                }
                back.send(sender).unwrap();
            })
        };
        (
            Self {
                stop,
                sent,
                thread: Some(thread),
            },
            returned,
        )
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.sent.load(Ordering::Relaxed)
    }
}

fn run(tag: &str, family: Family) {
    let mut bed = Bed::new(tag, family);
    let (group, rx, wanted, unwanted) = (bed.group, bed.rx, bed.wanted, bed.unwanted);
    let include_wanted = AppFilter {
        mode: Mode::Include,
        sources: vec![wanted],
    };
    let all = AppFilter {
        mode: Mode::Exclude,
        sources: vec![],
    };

    // An SSM receiver (plain libc socket bound to the group) wants only `wanted`.
    let app = AppSocket::bound(bed.ns(), group, PORT);
    app.apply(
        group,
        rx,
        RX_V4,
        &Request::JoinSourceGroup { source: wanted },
        OptionSet::FamilySpecific,
    )
    .unwrap();
    bed.enforce(Some(include_wanted.clone()));
    let dropped_before = bed.dropped();
    let reached = bed.ip_datagrams_during(|b| {
        b.send(wanted, PER_SOURCE);
        b.send(unwanted, PER_SOURCE);
    });
    assert_eq!(
        reached, PER_SOURCE,
        "{family}: only the wanted source reached IP"
    );
    assert_eq!(
        bed.dropped() - dropped_before,
        PER_SOURCE,
        "{family}: XDP dropped the rest"
    );
    assert_eq!(
        received_from(&app),
        [(wanted, PER_SOURCE)].into(),
        "{family}: the application got every wanted datagram"
    );

    // A second application (python3) joins for any source: everything must pass now.
    let mut py = PyApp::start(bed.ns());
    let any = py.open(family);
    py.apply(
        any,
        group,
        rx,
        RX_V4,
        &Request::JoinGroup,
        OptionSet::FamilySpecific,
    )
    .unwrap();
    bed.enforce(Some(all.clone()));
    let reached = bed.ip_datagrams_during(|b| {
        b.send(wanted, PER_SOURCE);
        b.send(unwanted, PER_SOURCE);
    });
    assert_eq!(reached, 2 * PER_SOURCE, "{family}: both sources reach IP");
    assert_eq!(received_from(&app), [(wanted, PER_SOURCE)].into());

    // kill -9 of the python app while the wanted source streams: the group narrows back,
    // and not one wanted datagram is lost on the way.
    let sender = bed.senders.remove(&wanted).unwrap();
    let (stream, returned) = Stream::start(sender);
    std::thread::sleep(Duration::from_millis(50));
    py.kill();
    bed.enforce(Some(include_wanted.clone()));
    std::thread::sleep(Duration::from_millis(50));
    let sent = stream.stop();
    bed.senders.insert(wanted, returned.recv().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        received_from(&app),
        [(wanted, sent)].into(),
        "{family}: every wanted datagram arrived while the other app was killed"
    );
    let reached = bed.ip_datagrams_during(|b| b.send(unwanted, PER_SOURCE));
    assert_eq!(
        reached, 0,
        "{family}: after the kill the unwanted source is dropped again"
    );

    // The same with a close: a plain socket joins for any source, then closes.
    let other = AppSocket::udp(bed.ns(), family);
    other
        .apply(
            group,
            rx,
            RX_V4,
            &Request::JoinGroup,
            OptionSet::ProtocolIndependent,
        )
        .unwrap();
    bed.enforce(Some(all.clone()));
    let sender = bed.senders.remove(&wanted).unwrap();
    let (stream, returned) = Stream::start(sender);
    std::thread::sleep(Duration::from_millis(50));
    other.close();
    bed.enforce(Some(include_wanted.clone()));
    std::thread::sleep(Duration::from_millis(50));
    let sent = stream.stop();
    bed.senders.insert(wanted, returned.recv().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        received_from(&app),
        [(wanted, sent)].into(),
        "{family}: every wanted datagram arrived while the other socket closed"
    );

    // A follower restart while the wanted source streams: the maps keep enforcing, the new
    // follower finds the application again and reports the same filter.
    let sender = bed.senders.remove(&wanted).unwrap();
    let (stream, returned) = Stream::start(sender);
    std::thread::sleep(Duration::from_millis(50));
    drop(bed.follower.take());
    let started = Instant::now();
    let mut follower = followed::start(bed.ns(), &[rx]);
    settle(&mut follower);
    let changes = follower.take_changes();
    bed.follower = Some(follower);
    assert_eq!(
        changes
            .iter()
            .map(|(k, f)| (*k, f.as_ref().map(|f| followed::app_filter(f, group))))
            .collect::<Vec<_>>(),
        vec![(bed.key(), Some(include_wanted.clone()))],
        "{family}: the restarted follower reports the same filter"
    );
    bed.dp.set_filters(changes).unwrap();
    println!(
        "{family}: follower restart to enforcing again: {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(50));
    let sent = stream.stop();
    bed.senders.insert(wanted, returned.recv().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        received_from(&app),
        [(wanted, sent)].into(),
        "{family}: every wanted datagram arrived across the follower restart"
    );
    let reached = bed.ip_datagrams_during(|b| b.send(unwanted, PER_SOURCE));
    assert_eq!(
        reached, 0,
        "{family}: after the restart the unwanted source is dropped"
    );

    // The application leaves: the group is no longer followed and XDP stops managing it
    // (the kernel drops the source itself, after the IP layer saw it).
    app.close();
    bed.enforce(None);
    let unmanaged = |b: &Bed| {
        b.dp.reason_counters()
            .unwrap()
            .get(Reason::Unmanaged)
            .packets
    };
    let before = (unmanaged(&bed), bed.quiet_counts().0);
    bed.send(unwanted, PER_SOURCE);
    std::thread::sleep(Duration::from_millis(200));
    let after = (unmanaged(&bed), bed.quiet_counts().0);
    assert!(
        after.0 - before.0 >= PER_SOURCE && after.1 - before.1 >= PER_SOURCE,
        "{family}: unmanaged again, passed to IP: {before:?} → {after:?}"
    );
}

#[test]
fn ipv4_unwanted_source_dropped_at_xdp_wanted_never_lost() {
    run("ftr4", Family::V4);
}

#[test]
fn ipv6_unwanted_source_dropped_at_xdp_wanted_never_lost() {
    run("ftr6", Family::V6);
}
