//! Several clients on one group: the interface-level filter is their RFC 3376 merge, a
//! source that one client still wants is never dropped at XDP, and a client's share
//! disappears with it (disconnect or deregister), exactly once.

use std::{net::IpAddr, time::Duration};

use msfilter::client::Client;
use msfilter_testbed::{kernel::source_filters, scene::Scene};
use serde_json::Value;
use tokio::runtime::Runtime;

const PER_SOURCE: u64 = 20;

struct World {
    rt: Runtime,
    scene: Scene,
}

impl World {
    fn new(tag: &str, group: &str, sources: &[&str], prefix: &str) -> Self {
        Self {
            rt: Runtime::new().unwrap(),
            scene: Scene::new(tag, group, sources, prefix, &[]),
        }
    }

    fn client(&self, name: &str) -> Client {
        self.rt
            .block_on(Client::register(self.scene.daemon.socket(), name))
            .unwrap()
    }

    fn stats(&self) -> Value {
        self.scene.daemon.cli_json(&["stats", "-j"])
    }

    /// Send from every source; the application must hear exactly `heard` (source indexes),
    /// XDP must drop every other source's datagrams, and the enforced filter must list
    /// `members` clients.
    fn check(&mut self, when: &str, heard: &[usize], members: u64) {
        self.wait_members(when, members);
        let before = self.scene.dropped();
        let got = self.scene.send_and_listen(PER_SOURCE);
        assert_eq!(
            got,
            self.scene.expect(heard, PER_SOURCE),
            "{when}: the application heard the wrong sources"
        );
        let dropped = self.scene.dropped() - before;
        let not_heard = (self.scene.sources.len() - heard.len()) as u64;
        let expect_drops = if members > 0 {
            PER_SOURCE * not_heard
        } else {
            0
        };
        assert_eq!(dropped, expect_drops, "{when}: XDP dropped {dropped}");
    }

    /// Members of the enforced filter (0 when the group is not managed).
    fn members(&self) -> u64 {
        let list = self.scene.daemon.cli_json(&["list", "-j"]);
        list.as_array()
            .unwrap()
            .first()
            .map_or(0, |e| e["members"].as_u64().unwrap())
    }

    /// A dropped client is noticed when its connection closes; wait for that.
    fn wait_members(&self, when: &str, members: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.members() != members {
            assert!(
                std::time::Instant::now() < deadline,
                "{when}: expected {members} members, have {}",
                self.members()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn s(&self, i: usize) -> IpAddr {
        self.scene.sources[i]
    }
}

#[test]
fn two_and_three_clients_merge_and_shares_disappear() {
    let mut w = World::new(
        "mrg",
        "232.9.9.9",
        &["10.99.0.21", "10.99.0.22", "10.99.0.23"],
        "24",
    );
    let rx = w.scene.link.rx.clone();
    let g = w.scene.group;

    // A: any-source, blocks S0 and S1.
    let mut a = w.client("a");
    w.rt.block_on(a.join(&rx, g)).unwrap();
    w.rt.block_on(a.block(&rx, g, w.s(0))).unwrap();
    w.rt.block_on(a.block(&rx, g, w.s(1))).unwrap();
    w.check("A excludes S0, S1", &[2], 1);

    // B wants S1 only: S1 must pass again (A's block of S1 is overruled by B's wish).
    let mut b = w.client("b");
    w.rt.block_on(b.join_source(&rx, g, w.s(1))).unwrap();
    w.check("B includes S1", &[1, 2], 2);
    let (_, interface) = w.rt.block_on(b.filter(&rx, g)).unwrap();
    let interface = interface.unwrap();
    assert_eq!(interface.sources, vec![w.s(0)], "merged EXCLUDE {{S0}}");

    // C: any-source, blocks S0 and S2. Merge: EXCLUDE ({S0,S1} ∩ {S0,S2}) − {S1} = {S0}.
    let mut c = w.client("c");
    w.rt.block_on(c.set_filter(&rx, g, msfilter_common::Mode::Exclude, vec![w.s(0), w.s(2)]))
        .unwrap_err(); // set-filter needs a prior join, as on a plain socket
    w.rt.block_on(c.join(&rx, g)).unwrap();
    w.rt.block_on(c.set_filter(&rx, g, msfilter_common::Mode::Exclude, vec![w.s(0), w.s(2)]))
        .unwrap();
    w.check("C excludes S0, S2", &[1, 2], 3);
    let rows = source_filters(&w.scene.link.receiver, &rx, g);
    assert!(
        rows.contains(&(w.s(0), 0, 2)),
        "the kernel counts two sockets excluding S0: {rows:?}"
    );

    // B disconnects (dropped without deregistering): EXCLUDE ({S0,S1} ∩ {S0,S2}) = {S0}.
    drop(b);
    w.check("B gone", &[1, 2], 2);

    // C deregisters: A alone, EXCLUDE {S0, S1}.
    assert_eq!(w.rt.block_on(c.deregister()).unwrap(), 1);
    w.check("C gone", &[2], 1);
    let rows = source_filters(&w.scene.link.receiver, &rx, g);
    assert_eq!(
        rows,
        [(w.s(0), 0, 1), (w.s(1), 0, 1)].into_iter().collect(),
        "only A's sockets remain in the kernel"
    );

    // A gone: nobody is a member, nothing is delivered, XDP no longer manages the group.
    drop(a);
    w.check("A gone", &[], 0);
    assert!(source_filters(&w.scene.link.receiver, &rx, g).is_empty());
    assert_eq!(w.stats()["clients"], 0);
}

#[test]
fn cli_memberships_persist_and_session_memberships_do_not() {
    let w = World::new("per", "ff15::77", &["fd99::31"], "64");
    let rx = w.scene.link.rx.clone();
    let g = w.scene.group.to_string();
    // The CLI's persistent client keeps its membership after the command exits.
    w.scene.daemon.cli_ok(&["join", &rx, &g]);
    w.scene.daemon.cli_ok(&["block", &rx, &g, "fd99::99"]);
    let get = w.scene.daemon.cli_json(&["filter", "get", &rx, &g, "-j"]);
    assert_eq!(
        get["client_filter"]["sources"],
        serde_json::json!(["fd99::99"])
    );
    // A second persistent client by another name is separate.
    let other = w
        .scene
        .daemon
        .cli_json(&["--client", "ops", "filter", "get", &rx, &g, "-j"]);
    assert_eq!(other["client_filter"], Value::Null);

    // A session client's membership ends with its connection.
    let mut s = w.client("session");
    w.rt.block_on(s.join(&rx, "ff15::78".parse().unwrap()))
        .unwrap();
    assert_eq!(w.stats()["groups"], 2);
    drop(s);
    // The daemon notices the closed connection; give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while w.stats()["groups"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "session membership not undone"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(w.stats()["clients"], 1);
}
