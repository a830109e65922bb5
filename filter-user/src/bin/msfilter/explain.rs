//! `msfilter explain IFACE FRAME.hex | --pcap FILE`: what XDP does with each frame on IFACE,
//! by the reference model (`msfilter_common::verdict::verdict`) under the policy the daemon
//! enforces there now, as its listing shows it.
//!
//! The model asks its policy the questions the XDP program asks its maps. [`Enforced`]
//! answers them from the listing: the one adapter between what the daemon reports and
//! what the model asks, kept thin so it follows the model's keys when they change.

use std::{
    cell::Cell,
    collections::{BTreeMap, BTreeSet},
    io::{self, Read as _, Write as _},
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::Args;
use msfilter::{
    client::Client,
    daemon::protocol::{GroupEntry, ListFilter},
    sockopt::{addr_of, ip_of},
};
use msfilter_common::{
    Addr, GroupKey, GroupState, Mode, Reason, SourceKey, Verdict, VlanKey, unjoined,
    verdict::{Policy, verdict},
};
use serde::Serialize;

use crate::{
    Failure,
    frames::{self, Frame, Place},
};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["frames", "pcap"])))]
pub(crate) struct ExplainArgs {
    /// Interface name or index: its policy, as the daemon enforces it now, judges the
    /// frames.
    iface: String,
    /// Frames in hex, one per line (whitespace and colons allowed, `#` comments); `-` reads
    /// standard input.
    #[arg(value_name = "FRAME.hex")]
    frames: Option<PathBuf>,
    /// A capture file instead: classic pcap, Ethernet.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
}

/// The policy of one interface in the model's terms, from the daemon's listing.
struct Enforced {
    ifindex: u32,
    groups: BTreeMap<Addr, (Mode, BTreeSet<Addr>)>,
    /// `unjoined::DROP_IPV4` / `DROP_IPV6`: the interface drops unjoined groups (judged as
    /// when no membership option is in flight).
    unjoined: u32,
}

impl Enforced {
    /// From the listing of one interface (continued entries add their sources).
    fn from_listing(entries: &[GroupEntry]) -> Self {
        let mut groups: BTreeMap<Addr, (Mode, BTreeSet<Addr>)> = BTreeMap::new();
        for e in entries {
            let (_, sources) = groups
                .entry(addr_of(e.group))
                .or_insert_with(|| (e.mode, BTreeSet::new()));
            sources.extend(e.sources.iter().map(|s| addr_of(s.source)));
        }
        Self {
            // Frames are judged as arriving on the listed interface; with no groups there
            // any index will do: every lookup misses.
            ifindex: entries.first().map_or(0, |e| e.ifindex),
            groups,
            unjoined: 0,
        }
    }
}

impl Policy for Enforced {
    fn group(&self, key: &GroupKey) -> Option<GroupState> {
        if key.ifindex != self.ifindex {
            return None;
        }
        self.groups
            .get(&key.group)
            .map(|(mode, _)| GroupState::new(*mode))
    }

    fn drops_unjoined(&self, ifindex: u32) -> u32 {
        if ifindex == self.ifindex {
            self.unjoined
        } else {
            0
        }
    }

    /// A listed source carries its group's mode, as userspace writes it.
    fn source(&self, key: &SourceKey) -> Option<Mode> {
        if key.ifindex != self.ifindex {
            return None;
        }
        self.groups
            .get(&key.group)
            .filter(|(_, sources)| sources.contains(&key.source))
            .map(|(mode, _)| *mode)
    }

    /// The listed interface's own entries judge every frame: a capture on a VLAN
    /// sub-interface holds its frames without their tag.
    fn vlan(&self, _: &VlanKey) -> Option<u32> {
        None
    }
}

/// A policy that manages every group and remembers the last source key it was asked about:
/// the model asks it about exactly the frames it judges by group and source, with the
/// addresses it read from them.
#[derive(Default)]
struct Addresses(Cell<Option<SourceKey>>);

impl Policy for Addresses {
    fn group(&self, _: &GroupKey) -> Option<GroupState> {
        Some(GroupState::new(Mode::Exclude))
    }

    fn source(&self, key: &SourceKey) -> Option<Mode> {
        self.0.set(Some(*key));
        None
    }

    fn vlan(&self, _: &VlanKey) -> Option<u32> {
        None
    }
}

/// The group and source the model reads from `frame`, if it is a multicast datagram the
/// filter applies to.
fn addresses(frame: &[u8], ifindex: u32) -> Option<(IpAddr, IpAddr)> {
    let probe = Addresses::default();
    verdict(frame, ifindex, &probe);
    probe
        .0
        .get()
        .map(|key| (ip_of(&key.group), ip_of(&key.source)))
}

#[derive(Debug, Serialize)]
struct Judged {
    frame: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<usize>,
    /// Bytes judged.
    length: usize,
    /// The length on the wire, when the capture kept less.
    #[serde(skip_serializing_if = "Option::is_none")]
    original_length: Option<usize>,
    verdict: &'static str,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<IpAddr>,
}

#[derive(Debug, Serialize)]
struct Explained {
    iface: String,
    ifindex: u32,
    /// msfilter's program is attached there (else XDP judges nothing on it).
    attached: bool,
    frames: Vec<Judged>,
}

fn judge(policy: &Enforced, number: usize, frame: &Frame) -> Judged {
    let (v, reason): (Verdict, Reason) = verdict(&frame.bytes, policy.ifindex, policy);
    let (group, source) = addresses(&frame.bytes, policy.ifindex).unzip();
    let (line, record) = match frame.place {
        Place::Line(n) => (Some(n), None),
        Place::Record(n) => (None, Some(n)),
    };
    Judged {
        frame: number,
        line,
        record,
        length: frame.bytes.len(),
        original_length: frame.original_len,
        verdict: match v {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
        },
        reason: reason.name(),
        group,
        source,
    }
}

/// The frames of the input, refused whole (naming the line or record) if any is bad.
fn read_input(args: &ExplainArgs) -> anyhow::Result<Vec<Frame>> {
    let read = |path: &Path| -> anyhow::Result<Vec<u8>> {
        if path == Path::new("-") {
            let mut data = Vec::new();
            io::stdin()
                .read_to_end(&mut data)
                .context("reading standard input")?;
            return Ok(data);
        }
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    if let Some(path) = &args.pcap {
        return frames::read_pcap(&read(path)?).with_context(|| path.display().to_string());
    }
    let path = args.frames.as_ref().expect("clap requires one input");
    let text = String::from_utf8(read(path)?)
        .map_err(|e| anyhow::anyhow!("{}: not text: {e}", path.display()))?;
    frames::read_hex(&text).with_context(|| path.display().to_string())
}

pub(crate) async fn run(args: ExplainArgs, socket: &Path, json: bool) -> Result<(), Failure> {
    // The input first: a bad file is refused before the daemon is asked anything.
    let frames = read_input(&args)?;
    let mut client = Client::connect(socket).await?;
    let mut entries = Vec::new();
    client
        .list(
            ListFilter {
                iface: Some(args.iface.clone()),
                group: None,
            },
            None,
            |page| entries.extend(page),
        )
        .await?;
    let attachments = client.stats().await?.attachments;
    let mut policy = Enforced::from_listing(&entries);
    let attached = attachments
        .iter()
        .find(|a| a.iface == args.iface || a.ifindex.to_string() == args.iface);
    if let Some(a) = attached {
        policy.ifindex = a.ifindex;
        for family in &a.drop_unjoined {
            policy.unjoined |= match family.as_str() {
                "ipv4" => unjoined::DROP_IPV4,
                "ipv6" => unjoined::DROP_IPV6,
                _ => 0,
            };
        }
    }
    let (iface, ifindex) = match (attached, entries.first()) {
        (Some(a), _) => (a.iface.clone(), a.ifindex),
        (None, Some(e)) => (e.iface.clone(), e.ifindex),
        (None, None) => (args.iface.clone(), policy.ifindex),
    };
    let explained = Explained {
        iface,
        ifindex,
        attached: attached.is_some(),
        frames: frames
            .iter()
            .enumerate()
            .map(|(i, f)| judge(&policy, i + 1, f))
            .collect(),
    };
    print(&explained, json).context("writing the output")?;
    Ok(())
}

fn print(e: &Explained, json: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, e)?;
        return writeln!(out);
    }
    if !e.attached {
        writeln!(
            out,
            "note: msfilter's program is not attached to {}: XDP judges nothing there now; \
             these are the verdicts under the policy the daemon holds for it",
            e.iface
        )?;
    }
    for j in &e.frames {
        let at = match (j.line, j.record) {
            (Some(n), _) => format!("line {n}"),
            (_, Some(n)) => format!("record {n}"),
            _ => String::new(),
        };
        let length = match j.original_length {
            Some(o) => format!("{} of {o} bytes captured", j.length),
            None => format!("{} bytes", j.length),
        };
        let addresses = match (j.group, j.source) {
            (Some(g), Some(s)) => format!("  group {g} source {s}"),
            _ => String::new(),
        };
        writeln!(
            out,
            "frame {} ({at}, {length}): {:<4} {}{addresses}",
            j.frame, j.verdict, j.reason
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use msfilter::daemon::protocol::{CounterView, SourceEntry};

    use super::*;

    fn entry(group: &str, mode: Mode, sources: &[&str], continued: bool) -> GroupEntry {
        GroupEntry {
            iface: "rx0".into(),
            ifindex: 7,
            group: group.parse().unwrap(),
            mode,
            sources: sources
                .iter()
                .map(|s| SourceEntry {
                    source: s.parse().unwrap(),
                    matched: CounterView::default(),
                })
                .collect(),
            passed: CounterView::default(),
            dropped: CounterView::default(),
            members: 1,
            continued,
        }
    }

    /// An Ethernet + IPv4 + UDP frame from `src` to `dst`.
    fn udp4(src: [u8; 4], dst: [u8; 4], protocol: u8) -> Vec<u8> {
        let mut f = vec![0x01, 0x00, 0x5e, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 1, protocol, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&[0; 8]);
        f
    }

    #[test]
    fn the_listing_judges_as_the_maps_would() {
        let policy = Enforced::from_listing(&[
            entry("232.1.1.1", Mode::Exclude, &["10.0.0.5"], false),
            entry("232.1.1.1", Mode::Exclude, &["10.0.0.6"], true),
            entry("232.1.1.2", Mode::Include, &["10.0.0.5"], false),
        ]);
        assert_eq!(policy.ifindex, 7);
        let frame = |src, dst, protocol| Frame {
            place: Place::Line(1),
            bytes: udp4(src, dst, protocol),
            original_len: None,
        };
        let ([s5, s6, s7], [g1, g2, g9]) = (
            [5, 6, 7].map(|d| [10, 0, 0, d]),
            [1, 2, 9].map(|d| [232, 1, 1, d]),
        );
        // The continued entry's source (10.0.0.6) counts too.
        for (src, dst, protocol, reason) in [
            (s5, g1, 17, "exclude-mode-listed-source"),
            (s6, g1, 17, "exclude-mode-listed-source"),
            (s7, g1, 17, "exclude-mode-unlisted-source"),
            (s7, g2, 17, "include-mode-unlisted-source"),
            (s5, g2, 17, "include-mode-listed-source"),
            (s5, g9, 17, "unmanaged-group"),
            (s5, g1, 2, "control"),
        ] {
            let judged = judge(&policy, 1, &frame(src, dst, protocol));
            assert_eq!(judged.reason, reason, "{src:?} -> {dst:?} ({protocol})");
        }

        let dropped = judge(&policy, 3, &frame([10, 0, 0, 5], [232, 1, 1, 1], 17));
        assert_eq!(dropped.verdict, "drop");
        assert_eq!(dropped.group, Some("232.1.1.1".parse().unwrap()));
        assert_eq!(dropped.source, Some("10.0.0.5".parse().unwrap()));
        // An unmanaged group's frame still has its addresses; control traffic has none.
        let unmanaged = judge(&policy, 1, &frame([10, 0, 0, 5], [232, 1, 1, 9], 17));
        assert_eq!(unmanaged.source, Some("10.0.0.5".parse().unwrap()));
        let control = judge(&policy, 1, &frame([10, 0, 0, 5], [232, 1, 1, 1], 2));
        assert_eq!((control.group, control.source), (None, None));
    }

    #[test]
    fn no_groups_means_every_frame_is_unmanaged() {
        let policy = Enforced::from_listing(&[]);
        let frame = Frame {
            place: Place::Record(1),
            bytes: udp4([10, 0, 0, 5], [232, 1, 1, 1], 17),
            original_len: Some(1514),
        };
        let judged = judge(&policy, 1, &frame);
        assert_eq!((judged.verdict, judged.reason), ("pass", "unmanaged-group"));
        assert_eq!(
            (judged.record, judged.original_length),
            (Some(1), Some(1514))
        );
    }
}
