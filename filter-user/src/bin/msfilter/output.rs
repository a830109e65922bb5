//! What the CLI prints: short lines for people, JSON (`-j`) for programs.

use std::{
    io::{self, Write as _},
    net::IpAddr,
};

use msfilter::daemon::protocol::{FilterView, GroupEntry, Reply, StatsView};

fn describe(filter: Option<&FilterView>) -> String {
    match filter {
        None => "not joined".to_string(),
        Some(f) => {
            let sources: Vec<String> = f.sources.iter().map(ToString::to_string).collect();
            format!("{} {{{}}}", f.mode, sources.join(", "))
        }
    }
}

/// After an ownership request or a reload: what happened.
pub(crate) fn reply(reply: &Reply) {
    match reply {
        Reply::Attached {
            iface,
            ifindex,
            mode,
            program_id,
            adopted,
            groups,
            sources,
        } => println!(
            "{} {iface} (index {ifindex}) in {mode} mode: program {program_id}, {groups} groups, \
             {sources} sources",
            if *adopted { "adopted" } else { "attached to" }
        ),
        Reply::Replaced {
            iface,
            old_program,
            new_program,
        } => println!("{iface}: program {old_program} replaced by {new_program} through the link"),
        Reply::Detached {
            iface,
            deleted,
            kept,
        } => {
            if *kept {
                println!("released {iface}; its program keeps enforcing the last policy");
            } else {
                println!("released {iface}: detached, {deleted} entries deleted");
            }
        }
        Reply::Reloaded { changes } => {
            if changes.is_empty() {
                println!("configuration unchanged");
            }
            for c in changes {
                println!("{c}");
            }
        }
        other => println!("{other:?}"),
    }
}

pub(crate) fn owner(reply: &Reply, json: bool) -> io::Result<()> {
    let Reply::Owner(v) = reply else {
        return Err(io::Error::other(format!("unexpected reply {reply:?}")));
    };
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, v)?;
        return writeln!(out);
    }
    let program = match (v.program_id, &v.program_name) {
        (Some(id), Some(name)) => format!("program {id} ({name})"),
        (Some(id), None) => format!("program {id}"),
        _ => String::new(),
    };
    let mode = v.mode.as_deref().unwrap_or("?");
    match v.owner.as_str() {
        "msfilter" => writeln!(
            out,
            "{} (index {}): msfilter (daemon pid {}), {program}, {mode} mode, since {}{}{}; {} groups, \
             {} sources",
            v.iface,
            v.ifindex,
            v.pid.unwrap_or(0),
            v.since
                .map_or_else(|| "?".into(), |s| format!("{s} (unix time)")),
            if v.adopted {
                ", adopted from a pinned link"
            } else {
                ""
            },
            if v.replaced { ", program replaced" } else { "" },
            v.groups,
            v.sources
        ),
        "msfilter-kept" => writeln!(
            out,
            "{} (index {}): msfilter's {program}, {mode} mode, released with --keep (enforcing \
             the last policy: {} groups, {} sources)",
            v.iface, v.ifindex, v.groups, v.sources
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

/// After a membership request: the client's filter now.
pub(crate) fn applied(iface: &str, group: IpAddr, filter: Option<&FilterView>) {
    println!("{iface} {group}: {}", describe(filter));
}

pub(crate) fn filter(
    client: &str,
    iface: &str,
    group: IpAddr,
    own: Option<&FilterView>,
    interface: Option<&FilterView>,
    json: bool,
) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        let value = serde_json::json!({
            "iface": iface,
            "group": group,
            "client": client,
            "client_filter": own,
            "interface_filter": interface,
        });
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)
    } else {
        writeln!(out, "{iface} {group}")?;
        writeln!(out, "  client {client}: {}", describe(own))?;
        writeln!(
            out,
            "  interface (enforced at XDP): {}",
            describe(interface)
        )
    }
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

    pub(crate) fn page(&mut self, entries: &[GroupEntry]) {
        if self.error.is_none()
            && let Err(e) = self.write_page(entries)
        {
            self.error = Some(e);
        }
    }

    fn write_page(&mut self, entries: &[GroupEntry]) -> io::Result<()> {
        let mut out = io::BufWriter::new(io::stdout().lock());
        for entry in entries {
            if self.json {
                out.write_all(if self.first { b"[\n" } else { b",\n" })?;
                serde_json::to_writer(&mut out, entry)?;
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
                        entry.mode.to_string(),
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

pub(crate) fn stats(stats: &StatsView, json: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, stats)?;
        return writeln!(out);
    }
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
            "attached to {} (index {}) in {} mode",
            a.iface, a.ifindex, a.mode
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
