//! What the CLI prints: short lines for people, JSON (`-j`) for programs, one document per
//! command (each verb's shape is in docs/cli.md).

use std::{
    io::{self, Write as _},
    net::IpAddr,
};

use msfilter::daemon::protocol::{
    AttachOutcome, CarrierView, Detached, FilterView, FollowedGroupView, GroupEntry, OwnerView,
    Reloaded, StatsView,
};
use msfilter::policy::mode_name;
use serde::Serialize;

fn describe(filter: Option<&FilterView>) -> String {
    filter.map_or_else(|| "not joined".to_string(), ToString::to_string)
}

/// How the answers are printed.
#[derive(Clone, Copy)]
pub(crate) struct Output {
    pub(crate) json: bool,
}

impl Output {
    /// `value` as pretty JSON with `-j`; otherwise the lines `human` writes.
    fn print(
        self,
        value: &impl Serialize,
        human: impl FnOnce(&mut io::StdoutLock<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut out = io::stdout().lock();
        if self.json {
            serde_json::to_writer_pretty(&mut out, value)?;
            writeln!(out)
        } else {
            human(&mut out)
        }
    }

    /// After a membership request: the client's filter now.
    pub(crate) fn applied(
        self,
        client: &str,
        iface: &str,
        group: IpAddr,
        filter: Option<FilterView>,
    ) -> io::Result<()> {
        let value = serde_json::json!({
            "iface": iface,
            "group": group,
            "client": client,
            "filter": filter,
        });
        self.print(&value, |out| {
            writeln!(out, "{iface} {group}: {}", describe(filter.as_ref()))
        })
    }

    pub(crate) fn filter(
        self,
        client: &str,
        iface: &str,
        group: IpAddr,
        own: Option<&FilterView>,
        interface: Option<&FilterView>,
    ) -> io::Result<()> {
        let value = serde_json::json!({
            "iface": iface,
            "group": group,
            "client": client,
            "client_filter": own,
            "interface_filter": interface,
        });
        self.print(&value, |out| {
            writeln!(out, "{iface} {group}")?;
            writeln!(out, "  client {client}: {}", describe(own))?;
            writeln!(
                out,
                "  interface (enforced at XDP): {}",
                describe(interface)
            )
        })
    }

    pub(crate) fn attached(self, reply: &AttachOutcome) -> io::Result<()> {
        self.print(reply, |out| match reply {
            AttachOutcome::Attached(a) => writeln!(
                out,
                "{} {} (index {}{}) in {} mode: program {}, {} groups, {} sources{}",
                if a.adopted { "adopted" } else { "attached to" },
                a.iface,
                a.ifindex,
                carried(a.carrier.as_ref()),
                a.mode,
                a.program_id,
                a.groups,
                a.sources,
                if a.followed {
                    "; followed (XDP enforces the merge of every socket there)"
                } else {
                    ""
                },
            )
            .and_then(|()| match &a.drop_unjoined {
                Some(d) => writeln!(out, "  drop-unjoined: {d}"),
                None => Ok(()),
            }),
            AttachOutcome::Replaced(r) => writeln!(
                out,
                "{}: program {} replaced by {} through the link",
                r.iface, r.old_program, r.new_program
            ),
        })
    }

    pub(crate) fn detached(self, d: &Detached) -> io::Result<()> {
        self.print(d, |out| {
            if d.kept {
                writeln!(
                    out,
                    "released {}; its program keeps enforcing the last policy",
                    d.iface
                )
            } else {
                writeln!(
                    out,
                    "released {}: detached, {} entries deleted",
                    d.iface, d.deleted
                )
            }
        })
    }

    pub(crate) fn reloaded(self, r: &Reloaded) -> io::Result<()> {
        self.print(r, |out| {
            if r.changes.is_empty() {
                writeln!(out, "configuration unchanged")?;
            }
            for c in &r.changes {
                writeln!(out, "{c}")?;
            }
            Ok(())
        })
    }

    pub(crate) fn owner(self, v: &OwnerView) -> io::Result<()> {
        self.print(v, |out| owner_lines(out, v))
    }

    pub(crate) fn stats(self, stats: &StatsView) -> io::Result<()> {
        self.print(stats, |out| stats_lines(out, stats))
    }
}

/// ", XDP on eth0, VLAN 100" for a VLAN sub-interface enforced on its parent.
fn carried(carrier: Option<&CarrierView>) -> String {
    carrier.map_or_else(String::new, |c| format!(", {c}"))
}

fn owner_lines(out: &mut impl io::Write, v: &OwnerView) -> io::Result<()> {
    let program = match (v.program_id, &v.program_name) {
        (Some(id), Some(name)) => format!("program {id} ({name})"),
        (Some(id), None) => format!("program {id}"),
        _ => String::new(),
    };
    let mode = v.mode.as_deref().unwrap_or("?");
    match v.owner.as_str() {
        "msfilter" => writeln!(
            out,
            "{} (index {}{}): msfilter (daemon pid {}), {program}, {mode} mode, since {}{}{}{}; \
             {} groups, {} sources",
            v.iface,
            v.ifindex,
            carried(v.carrier.as_ref()),
            v.pid.unwrap_or(0),
            v.since
                .map_or_else(|| "?".into(), |s| format!("{s} (unix time)")),
            if v.adopted {
                ", adopted from a pinned link"
            } else {
                ""
            },
            if v.replaced { ", program replaced" } else { "" },
            if v.followed {
                ", followed (XDP enforces the merge of every socket there)"
            } else {
                ""
            },
            v.groups,
            v.sources
        )
        .and_then(|()| match &v.drop_unjoined {
            Some(d) => writeln!(out, "  drop-unjoined: {d}"),
            None => Ok(()),
        }),
        "msfilter-kept" => writeln!(
            out,
            "{} (index {}): msfilter's {program}, {mode} mode, released with --keep (enforcing \
             the last policy: {} groups, {} sources)",
            v.iface, v.ifindex, v.groups, v.sources
        ),
        "msfilter-vlans" => writeln!(
            out,
            "{} (index {}): msfilter's {program}, {mode} mode, carrying owned VLAN \
             sub-interfaces only (the interface itself is not owned)",
            v.iface, v.ifindex
        ),
        "other" => writeln!(
            out,
            "{} (index {}): another XDP program: {program}, {mode} mode, loaded {}",
            v.iface,
            v.ifindex,
            v.since
                .map_or_else(|| "?".into(), |s| format!("{s} (unix time)"))
        ),
        _ => writeln!(out, "{} (index {}): no XDP program", v.iface, v.ifindex),
    }
}

/// The sockets of a followed group, under its entry.
fn follow_lines(out: &mut impl io::Write, f: &FollowedGroupView) -> io::Result<()> {
    writeln!(
        out,
        "{:<12}   followed: {}, {} sockets known, {} memberships in the kernel; merge {}{}",
        "",
        f.completeness,
        f.sockets.len(),
        f.kernel_memberships,
        f.merged,
        if f.complete {
            String::new()
        } else {
            format!(", enforced {}", f.enforced)
        }
    )?;
    for s in &f.sockets {
        let origin = match &s.client {
            Some(name) => format!("msfilter client {name}"),
            None => "followed".to_string(),
        };
        writeln!(
            out,
            "{:<12}     pid {} ({}) socket {} {}: {} [{origin}]{}",
            "",
            s.pid,
            s.command,
            s.cookie,
            s.family,
            s.filter,
            if s.trusted { "" } else { " (being read)" }
        )?;
    }
    Ok(())
}

/// A listing printed page by page as it arrives (a streamed JSON array with `-j`), so a
/// table of a million pairs never sits in memory whole.
pub(crate) struct List {
    json: bool,
    first: bool,
    count: usize,
    error: Option<io::Error>,
}

impl List {
    pub(crate) const fn new(json: bool) -> Self {
        Self {
            json,
            first: true,
            count: 0,
            error: None,
        }
    }

    pub(crate) fn page(&mut self, entries: &[GroupEntry], followed: &[FollowedGroupView]) {
        if self.error.is_none()
            && let Err(e) = self.write_page(entries, followed)
        {
            self.error = Some(e);
        }
    }

    fn write_page(
        &mut self,
        entries: &[GroupEntry],
        followed: &[FollowedGroupView],
    ) -> io::Result<()> {
        let mut out = io::BufWriter::new(io::stdout().lock());
        for entry in entries {
            let follow = followed
                .iter()
                .find(|f| !entry.continued && f.ifindex == entry.ifindex && f.group == entry.group);
            if self.json {
                out.write_all(if self.first { b"[\n" } else { b",\n" })?;
                match follow {
                    None => serde_json::to_writer(&mut out, entry)?,
                    Some(f) => {
                        let mut value = serde_json::to_value(entry)?;
                        if let Some(object) = value.as_object_mut() {
                            object.insert("follow".into(), serde_json::to_value(f)?);
                        }
                        serde_json::to_writer(&mut out, &value)?;
                    }
                }
            } else {
                if self.first {
                    writeln!(
                        out,
                        "{:<12} {:<28} {:<8} {:>14} {:>14}",
                        "IFACE", "GROUP", "MODE", "PASSED", "DROPPED"
                    )?;
                }
                if !entry.continued {
                    writeln!(
                        out,
                        "{:<12} {:<28} {:<8} {:>14} {:>14}",
                        entry.iface,
                        entry.group.to_string(),
                        mode_name(entry.mode),
                        entry.passed.packets,
                        entry.dropped.packets
                    )?;
                }
                for s in &entry.sources {
                    writeln!(
                        out,
                        "{:<12}   source {:<40} matched {:>10} packets",
                        "", s.source, s.matched.packets
                    )?;
                }
                if let Some(f) = follow {
                    follow_lines(&mut out, f)?;
                }
            }
            self.first = false;
            self.count += 1;
        }
        out.flush()
    }

    pub(crate) fn finish(self) -> io::Result<()> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut out = io::stdout().lock();
        if self.json {
            out.write_all(if self.first { b"[]\n" } else { b"\n]\n" })
        } else if self.count == 0 {
            writeln!(out, "no filters")
        } else {
            Ok(())
        }
    }
}

fn stats_lines(out: &mut impl io::Write, stats: &StatsView) -> io::Result<()> {
    writeln!(
        out,
        "passed {} packets ({} bytes), dropped {} packets ({} bytes)",
        stats.passed.packets, stats.passed.bytes, stats.dropped.packets, stats.dropped.bytes
    )?;
    writeln!(
        out,
        "{} clients, {} groups, {} source entries, maps use {:.1} MiB of kernel memory",
        stats.clients,
        stats.groups,
        stats.source_entries,
        stats.map_memory as f64 / (1024.0 * 1024.0)
    )?;
    for a in &stats.attachments {
        writeln!(
            out,
            "attached to {} (index {}{}) in {} mode",
            a.iface,
            a.ifindex,
            carried(a.carrier.as_ref()),
            a.mode
        )?;
    }
    for u in &stats.unrestored {
        writeln!(
            out,
            "not restored at start-up (kept for the next start): client {}, {} on {}: {}",
            u.client, u.group, u.iface, u.reason
        )?;
    }
    if let Some(f) = &stats.follow {
        writeln!(
            out,
            "following {}: {} groups ({} complete), {} sockets; {} events, {} reads, {} scans, \
             {} unreachable, {} events lost, {} untracked; {} full rechecks, {} groups checked \
             after events",
            f.interfaces.join(", "),
            f.groups,
            f.complete,
            f.sockets,
            f.events,
            f.reads,
            f.scans,
            f.unreachable,
            f.lost,
            f.untracked,
            f.full_rechecks,
            f.group_checks
        )?;
    }
    writeln!(
        out,
        "{:<34} {:<5} {:>14} {:>16}",
        "REASON", "", "PACKETS", "BYTES"
    )?;
    for r in &stats.reasons {
        writeln!(
            out,
            "{:<34} {:<5} {:>14} {:>16}",
            r.reason, r.verdict, r.packets, r.bytes
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `owner` says which interface carries the program of a VLAN sub-interface.
    #[test]
    fn owner_of_a_vlan_sub_interface_names_the_carrier() {
        let mut view = OwnerView {
            iface: "eth0.100".into(),
            ifindex: 5,
            owner: "msfilter".into(),
            program_id: Some(42),
            program_name: Some("msfilter".into()),
            mode: Some("driver".into()),
            since: Some(1),
            pid: Some(7),
            adopted: false,
            replaced: false,
            groups: 1,
            sources: 2,
            followed: false,
            drop_unjoined: None,
            carrier: Some(CarrierView {
                iface: "eth0".into(),
                ifindex: 2,
                vlan: 100,
            }),
        };
        let mut out = Vec::new();
        owner_lines(&mut out, &view).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "eth0.100 (index 5, XDP on eth0, VLAN 100): msfilter (daemon pid 7), program 42 \
             (msfilter), driver mode, since 1 (unix time); 1 groups, 2 sources\n"
        );
        view.carrier = None;
        let mut out = Vec::new();
        owner_lines(&mut out, &view).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .starts_with("eth0.100 (index 5): msfilter")
        );
        // Older daemons send no carrier; newer ones leave it out for plain interfaces.
        let json = serde_json::to_value(&view).unwrap();
        assert!(json.get("carrier").is_none(), "{json}");
    }
}
