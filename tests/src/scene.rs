//! The usual test scene: a sender namespace with several source addresses, a receiver
//! namespace running the msfilter daemon, and an application there listening on the group
//! while leaving memberships to msfilter.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use crate::{
    daemon::Daemon,
    netns::Link,
    traffic::{Receiver, Sender},
};

pub struct Scene {
    pub link: Link,
    pub daemon: Daemon,
    pub group: IpAddr,
    pub sources: Vec<IpAddr>,
    pub senders: Vec<Sender>,
    pub app: Receiver,
}

impl Scene {
    /// Namespaces `<tag>s`/`<tag>r`, the `sources` on the sender (with prefix length
    /// `prefix`), a daemon started with `daemon_args`, and the listening application.
    pub fn new(
        tag: &str,
        group: &str,
        sources: &[&str],
        prefix: &str,
        daemon_args: &[&str],
    ) -> Self {
        let addrs: Vec<String> = sources.iter().map(|s| format!("{s}/{prefix}")).collect();
        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let link = Link::new(tag, &addrs).unwrap();
        let daemon = Daemon::start(&link.receiver, daemon_args).unwrap();
        let group: IpAddr = group.parse().unwrap();
        let sources: Vec<IpAddr> = sources.iter().map(|s| s.parse().unwrap()).collect();
        let tx = link.sender.ifindex(&link.tx).unwrap();
        let senders = sources
            .iter()
            .map(|s| Sender::new(&link.sender, *s, group, tx, 32))
            .collect();
        let app = Receiver::passive(&link.receiver, group);
        Self {
            link,
            daemon,
            group,
            sources,
            senders,
            app,
        }
    }

    /// Send `per_source` datagrams from every source, interleaved, and return what the
    /// application heard once the link went quiet.
    pub fn send_and_listen(&mut self, per_source: u64) -> BTreeMap<IpAddr, u64> {
        for _ in 0..per_source {
            for s in &mut self.senders {
                s.send().unwrap();
            }
        }
        self.app.take_when_quiet(Duration::from_millis(250))
    }

    /// Frames XDP dropped so far (all reasons), from `msfilter stats`.
    pub fn dropped(&self) -> u64 {
        self.daemon.cli_json(&["stats", "-j"])["dropped"]["packets"]
            .as_u64()
            .unwrap()
    }

    /// What the application must have heard: `per_source` from each source in `indexes`.
    pub fn expect(&self, indexes: &[usize], per_source: u64) -> BTreeMap<IpAddr, u64> {
        indexes
            .iter()
            .map(|&i| (self.sources[i], per_source))
            .collect()
    }
}
