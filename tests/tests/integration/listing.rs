//! Enumeration in pages: a table of 100,000 (group, source) pairs lists completely and
//! exactly once, in pages bounded in items (a group larger than a page continues on the
//! next), through the library and through the streaming CLI.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use msfilter::{client::Client, daemon::protocol::ListFilter};
use msfilter_testbed::{daemon::Daemon, netns::Link};
use serde_json::Value;

const GROUPS: u32 = 50;
const SOURCES: u32 = 2000;

fn source(i: u32) -> IpAddr {
    let [_, b, c, d] = (0x0a00_0000 | (i + 1)).to_be_bytes();
    IpAddr::from([10, b, c, d])
}

#[test]
fn a_large_table_lists_completely_in_bounded_pages() {
    let link = Link::new("lst", &["10.99.0.1/24"]).unwrap();
    let daemon = Daemon::start(&link.receiver, &["--max-sources-per-socket", "2000"]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = rt
        .block_on(Client::register(daemon.socket(), "loader"))
        .unwrap();
    let sources: Vec<IpAddr> = (0..SOURCES).map(source).collect();
    for g in 0..GROUPS {
        let group: IpAddr = format!("232.60.0.{}", g + 1).parse().unwrap();
        rt.block_on(client.join("rx0", group)).unwrap();
        rt.block_on(client.set_filter(
            "rx0",
            group,
            msfilter_common::Mode::Exclude,
            sources.clone(),
        ))
        .unwrap();
    }

    // Through the library, 1000 items per page.
    let mut reader = rt.block_on(Client::connect(daemon.socket())).unwrap();
    let mut pages = 0;
    let mut seen: BTreeMap<IpAddr, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut pairs = 0;
    rt.block_on(reader.list(ListFilter::default(), Some(1000), |entries| {
        pages += 1;
        // A group counts one item, and each source one; a continued group is not new.
        let items: usize = entries
            .iter()
            .map(|e| usize::from(!e.continued) + e.sources.len())
            .sum();
        assert!(items <= 1000, "page {pages} holds {items} items");
        for e in entries {
            let set = seen.entry(e.group).or_default();
            for s in &e.sources {
                assert!(
                    set.insert(s.source),
                    "{} {} listed twice",
                    e.group,
                    s.source
                );
                pairs += 1;
            }
        }
    }))
    .unwrap();
    assert_eq!(pairs, (GROUPS * SOURCES) as usize);
    assert_eq!(seen.len(), GROUPS as usize);
    assert!(seen.values().all(|s| s.len() == SOURCES as usize));
    assert!(pages >= 100, "{pages} pages");
    println!("{pairs} pairs in {pages} pages of at most 1000 items");

    // Through the CLI: a streamed JSON array whose continued entries add up the same.
    let out = daemon.cli_ok(&["list", "-j", "--page", "1000"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    let mut per_group: BTreeMap<String, usize> = BTreeMap::new();
    for e in list.as_array().unwrap() {
        *per_group
            .entry(e["group"].as_str().unwrap().to_string())
            .or_default() += e["sources"].as_array().unwrap().len();
    }
    assert_eq!(per_group.len(), GROUPS as usize);
    assert!(per_group.values().all(|&n| n == SOURCES as usize));

    // A filtered enumeration.
    let one = daemon.cli_ok(&["list", "-j", "--group", "232.60.0.7"]);
    let one: Value = serde_json::from_str(&one).unwrap();
    let total: usize = one
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["group"], "232.60.0.7");
            e["sources"].as_array().unwrap().len()
        })
        .sum();
    assert_eq!(total, SOURCES as usize);
}
