//! A snapshot in the OpenMetrics text format or the Prometheus text format (0.0.4), through
//! `prometheus-client`'s encoders: the snapshot is a [`Collector`] of a registry made for
//! the one scrape, so the encoders see values read once, at the snapshot's moment.
//!
//! The metric families (docs/operations.md has them for operators):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `msfilter_packets`, `msfilter_bytes` | counter | `reason`, `verdict` |
//! | `msfilter_group_packets`, `msfilter_group_bytes` | counter | `iface`, `group`, `verdict` |
//! | `msfilter_source_matched_packets`, `msfilter_source_matched_bytes` | counter | `iface`, `group`, `source` |
//! | `msfilter_series_folded` | gauge | `series` (`group`, `source`) |
//! | `msfilter_map_entries`, `msfilter_map_capacity` | gauge | `map` (`groups`, `sources`) |
//! | `msfilter_map_memory_bytes` | gauge | |
//! | `msfilter_clients`, `msfilter_unrestored_memberships` | gauge | |
//! | `msfilter_attached` | gauge (1) | `iface`, `mode` |
//! | `msfilter_requests` | counter | `kind`, `result` |
//! | `msfilter_kernel_refusals` | counter | `errno` |

use prometheus_client::{
    collector::Collector,
    encoding::DescriptorEncoder,
    metrics::{TypedMetric, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use msfilter_common::Counter;

use super::snapshot::Snapshot;
use crate::daemon::protocol::ErrorKind;

/// The label value of folded series.
pub(super) const OTHER: &str = "other";

/// A text format of the exposition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
}

impl Format {
    pub(super) const fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// The format an `Accept` header asks for: the acceptable one with the higher quality,
    /// OpenMetrics on a tie or without a header; `None` if it accepts neither.
    ///
    /// Each format's quality is that of the most specific media range matching it
    /// (`application/openmetrics-text` or `text/plain`, then `application/*` or `text/*`,
    /// then `*/*`).
    pub(super) fn negotiate(accept: Option<&str>) -> Option<Self> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return Some(Self::OpenMetrics);
        };
        // (specificity, quality) of the best range matching each format.
        let mut open_metrics: Option<(u8, f32)> = None;
        let mut prometheus: Option<(u8, f32)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(0.0)
                .clamp(0.0, 1.0);
            let specificity = |exact: &str, family: &str| -> Option<u8> {
                match media.as_str() {
                    m if m == exact => Some(2),
                    m if m == family => Some(1),
                    "*/*" => Some(0),
                    _ => None,
                }
            };
            for (best, exact, family) in [
                (
                    &mut open_metrics,
                    "application/openmetrics-text",
                    "application/*",
                ),
                (&mut prometheus, "text/plain", "text/*"),
            ] {
                if let Some(s) = specificity(exact, family)
                    && best.is_none_or(|(b, _)| s > b)
                {
                    *best = Some((s, quality));
                }
            }
        }
        let q = |best: Option<(u8, f32)>| best.map_or(0.0, |(_, q)| q);
        let (om, prom) = (q(open_metrics), q(prometheus));
        if om == 0.0 && prom == 0.0 {
            None
        } else if prom > om {
            Some(Self::Prometheus)
        } else {
            Some(Self::OpenMetrics)
        }
    }
}

/// The snapshot as text in `format`.
pub(super) fn render(snapshot: Snapshot, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(snapshot)));
    let mut out = String::new();
    // Writing into a String cannot fail, and the collector only writes.
    let written = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        }
    };
    debug_assert!(written.is_ok(), "encoding into a String failed");
    out
}

#[derive(Debug)]
struct Scrape(Snapshot);

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// One family: a descriptor, then each labelled sample (a family may have none).
fn family<'a, M: prometheus_client::encoding::EncodeMetric + TypedMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (Labels<'a>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, unit, M::TYPE)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn verdict_name(verdict: msfilter_common::Verdict) -> &'static str {
    match verdict {
        msfilter_common::Verdict::Pass => "pass",
        msfilter_common::Verdict::Drop => "drop",
    }
}

/// The two counter families of one set of rows: `{name}_packets_total` and
/// `{name}_bytes_total` (`help` for each).
fn packets_and_bytes<'a, I>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: [&str; 2],
    rows: impl Fn() -> I,
) -> Result<(), std::fmt::Error>
where
    I: Iterator<Item = (Labels<'a>, &'a Counter)>,
{
    let packets = rows().map(|(labels, c)| (labels, ConstCounter::new(c.packets)));
    family(encoder, &format!("{name}_packets"), help[0], None, packets)?;
    let bytes = rows().map(|(labels, c)| (labels, ConstCounter::new(c.bytes)));
    family(encoder, name, help[1], Some(&Unit::Bytes), bytes)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let e = &mut encoder;
        packets_and_bytes(
            e,
            "msfilter",
            [
                "Frames the XDP program judged, by reason.",
                "Bytes of the frames the XDP program judged, by reason.",
            ],
            || {
                s.reasons.iter().map(|(reason, c)| {
                    let verdict = verdict_name(reason.verdict());
                    (vec![("reason", reason.name()), ("verdict", verdict)], c)
                })
            },
        )?;

        // Groups and sources: their own series, then the folded ones per interface.
        let group_text: Vec<String> = s
            .groups
            .own
            .iter()
            .map(|(l, _)| l.group.to_string())
            .collect();
        packets_and_bytes(
            e,
            "msfilter_group",
            [
                "Frames of a managed group, passed or dropped.",
                "Bytes of a managed group's frames, passed or dropped.",
            ],
            || {
                let own = s.groups.own.iter().zip(&group_text);
                let other = s
                    .groups
                    .other
                    .iter()
                    .map(|(iface, c)| (iface.as_str(), OTHER, c));
                own.map(|((l, c), g)| (l.iface.as_str(), g.as_str(), c))
                    .chain(other)
                    .flat_map(|(iface, group, c)| {
                        [("pass", &c.passed), ("drop", &c.dropped)].map(|(verdict, counter)| {
                            (
                                vec![("iface", iface), ("group", group), ("verdict", verdict)],
                                counter,
                            )
                        })
                    })
            },
        )?;
        let source_text: Vec<(String, String)> = s
            .sources
            .own
            .iter()
            .map(|(l, _)| (l.group.to_string(), l.source.to_string()))
            .collect();
        packets_and_bytes(
            e,
            "msfilter_source_matched",
            [
                "Frames from a listed source (dropped in EXCLUDE mode, passed in INCLUDE mode).",
                "Bytes of the frames from a listed source.",
            ],
            || {
                let own = s.sources.own.iter().zip(&source_text);
                let other = s
                    .sources
                    .other
                    .iter()
                    .map(|(iface, c)| (iface.as_str(), OTHER, OTHER, c));
                own.map(|((l, c), (g, src))| (l.iface.as_str(), g.as_str(), src.as_str(), c))
                    .chain(other)
                    .map(|(iface, group, source, c)| {
                        (
                            vec![("iface", iface), ("group", group), ("source", source)],
                            c,
                        )
                    })
            },
        )?;
        family(
            e,
            "msfilter_series_folded",
            "Groups or sources past --metrics-max-series, summed into the series labelled other.",
            None,
            [("group", s.groups.folded), ("source", s.sources.folded)]
                .map(|(series, n)| (vec![("series", series)], ConstGauge::new(n as u64))),
        )?;

        let m = &s.maps;
        for (name, help, [groups, sources]) in [
            (
                "msfilter_map_entries",
                "Entries in use in the filter maps.",
                [m.groups as u64, m.sources as u64],
            ),
            (
                "msfilter_map_capacity",
                "Capacity of the filter maps, in entries.",
                [m.group_capacity, m.source_capacity].map(u64::from),
            ),
        ] {
            let maps = [("groups", groups), ("sources", sources)];
            let samples = maps.map(|(map, n)| (vec![("map", map)], ConstGauge::new(n)));
            family(e, name, help, None, samples)?;
        }
        for (name, help, unit, value) in [
            (
                "msfilter_map_memory",
                "Kernel memory of the maps, as the kernel reports it.",
                Some(&Unit::Bytes),
                m.memory,
            ),
            (
                "msfilter_clients",
                "Registered clients.",
                None,
                s.clients as u64,
            ),
            (
                "msfilter_unrestored_memberships",
                "Persisted memberships the kernel did not confirm at start-up (not enforced).",
                None,
                s.unrestored as u64,
            ),
        ] {
            family(e, name, help, unit, [(vec![], ConstGauge::new(value))])?;
        }
        let modes: Vec<String> = s
            .attachments
            .iter()
            .map(|(_, mode)| mode.to_string())
            .collect();
        family(
            e,
            "msfilter_attached",
            "Interfaces msfilter's program is attached to, with the XDP mode (always 1).",
            None,
            s.attachments.iter().zip(&modes).map(|((iface, _), mode)| {
                (
                    vec![("iface", iface.as_str()), ("mode", mode.as_str())],
                    ConstGauge::new(1u64),
                )
            }),
        )?;

        // Every kind that was answered; every result of it, ok and each error kind, so a
        // rate of errors exists before the first one.
        let mut kinds: Vec<&'static str> = s.requests.answered.keys().map(|(k, _)| *k).collect();
        kinds.dedup();
        let results: Vec<&'static str> = std::iter::once("ok")
            .chain(ErrorKind::ALL.iter().map(|k| k.name()))
            .collect();
        family(
            e,
            "msfilter_requests",
            "Requests the daemon answered, by kind (the request, or a membership request's op) and result (ok or the error kind).",
            None,
            kinds.iter().flat_map(|kind| {
                results.iter().map(move |result| {
                    let n = s
                        .requests
                        .answered
                        .get(&(*kind, *result))
                        .copied()
                        .unwrap_or(0);
                    (
                        vec![("kind", *kind), ("result", *result)],
                        ConstCounter::new(n),
                    )
                })
            }),
        )?;
        family(
            e,
            "msfilter_kernel_refusals",
            "Requests the kernel refused, by errno.",
            None,
            s.requests
                .kernel_refusals
                .iter()
                .map(|(errno, n)| (vec![("errno", errno.as_str())], ConstCounter::new(*n))),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use msfilter_common::{Counter, Reason};

    use super::*;
    use crate::{
        daemon::metrics::{
            requests::RequestCounts,
            snapshot::{Capped, GroupLabels, MapFill, SourceLabels},
        },
        datapath::{AttachMode, GroupCounters},
    };

    #[test]
    fn accept_headers() {
        use Format::{OpenMetrics as Om, Prometheus as Prom};
        for (accept, format) in [
            (None, Some(Om)),
            (Some(""), Some(Om)),
            (Some("*/*"), Some(Om)),
            (Some("text/plain"), Some(Prom)),
            (Some("text/plain; version=0.0.4"), Some(Prom)),
            (Some("text/*"), Some(Prom)),
            (
                Some("application/openmetrics-text; version=1.0.0"),
                Some(Om),
            ),
            (Some("application/json"), None),
            (Some("text/plain;q=0"), None),
            // What Prometheus sends.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0;q=0.6,application/openmetrics-\
                     text;version=0.0.1;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                ),
                Some(Om),
            ),
            (
                Some("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
                Some(Prom),
            ),
            // The most specific range wins: */* does not lift a refused format.
            (Some("application/openmetrics-text;q=0, */*"), Some(Prom)),
            (Some("TEXT/PLAIN"), Some(Prom)),
            (Some("text/plain;q=bogus, */*;q=0.1"), Some(Om)),
        ] {
            assert_eq!(Format::negotiate(accept), format, "{accept:?}");
        }
    }

    fn counter(packets: u64) -> Counter {
        Counter {
            packets,
            bytes: packets * 60,
        }
    }

    fn sample() -> Snapshot {
        let mut groups = Capped::new(1);
        let mut sources = Capped::new(1);
        for (i, group) in ["232.1.1.1", "232.1.1.2", "ff3e::1"].iter().enumerate() {
            let group: std::net::IpAddr = group.parse().unwrap();
            let n = i as u64 + 1;
            groups.push(
                "rx0",
                || GroupLabels {
                    iface: "rx0".into(),
                    group,
                },
                GroupCounters {
                    passed: counter(n),
                    dropped: counter(10 * n),
                },
            );
            sources.push(
                "rx0",
                || SourceLabels {
                    iface: "rx0".into(),
                    group,
                    source: "10.0.0.1".parse().unwrap(),
                },
                counter(100 * n),
            );
        }
        Snapshot {
            reasons: Reason::ALL
                .iter()
                .map(|r| (*r, counter(*r as u64)))
                .collect(),
            groups,
            sources,
            maps: MapFill {
                groups: 3,
                group_capacity: 64,
                sources: 3,
                source_capacity: 128,
                memory: 4096,
            },
            clients: 2,
            attachments: vec![("rx0".into(), AttachMode::Driver)],
            unrestored: 0,
            requests: RequestCounts {
                answered: BTreeMap::from([(("block", "kernel"), 1), (("block", "ok"), 4)]),
                kernel_refusals: BTreeMap::from([("EADDRNOTAVAIL".into(), 1)]),
            },
        }
    }

    #[test]
    fn openmetrics_text() {
        let text = render(sample(), Format::OpenMetrics);
        for line in [
            "# TYPE msfilter_packets counter",
            "msfilter_packets_total{reason=\"exclude-mode-listed-source\",verdict=\"drop\"} 10",
            "# UNIT msfilter_bytes bytes",
            "msfilter_bytes_total{reason=\"not-ip\",verdict=\"pass\"} 0",
            "msfilter_group_packets_total{iface=\"rx0\",group=\"232.1.1.1\",verdict=\"drop\"} 10",
            // 232.1.1.2 and ff3e::1 are folded: 2 + 3 passed, 20 + 30 dropped.
            "msfilter_group_packets_total{iface=\"rx0\",group=\"other\",verdict=\"pass\"} 5",
            "msfilter_group_bytes_total{iface=\"rx0\",group=\"other\",verdict=\"drop\"} 3000",
            "msfilter_source_matched_packets_total{iface=\"rx0\",group=\"232.1.1.1\",source=\"10.0.0.1\"} 100",
            "msfilter_source_matched_packets_total{iface=\"rx0\",group=\"other\",source=\"other\"} 500",
            "msfilter_series_folded{series=\"group\"} 2",
            "msfilter_map_capacity{map=\"sources\"} 128",
            "msfilter_map_memory_bytes 4096",
            "msfilter_clients 2",
            "msfilter_attached{iface=\"rx0\",mode=\"driver\"} 1",
            "msfilter_requests_total{kind=\"block\",result=\"ok\"} 4",
            "msfilter_requests_total{kind=\"block\",result=\"permission\"} 0",
            "msfilter_kernel_refusals_total{errno=\"EADDRNOTAVAIL\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(!text.contains("ff3e::1"), "{text}");
    }

    #[test]
    fn prometheus_text() {
        let text = render(sample(), Format::Prometheus);
        assert!(
            text.contains("# TYPE msfilter_packets_total counter\n"),
            "{text}"
        );
        assert!(text.contains("\nmsfilter_clients 2\n"), "{text}");
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }
}
