//! The doctor's evaluations: pure functions from gathered [`Facts`] to [`Finding`]s.
//!
//! Statuses: `fail` means msfilter cannot do what it is asked (or its view and the kernel's
//! disagree); `warn` means it works, but something on the host defeats part of its purpose
//! or needs a decision; `ok` is a fact worth knowing.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use msfilter_common::limits::PROGRAM_NAME;

use super::{Finding, Report, capabilities, parse};
use crate::{
    daemon::{config::Config, protocol::OwnerView},
    iface::{
        groups::{self, JoinedGroup},
        xdp_features,
    },
    policy::Mode,
    sockopt::filter_option_size,
};

/// The oldest kernel msfilter runs on: XDP through BPF links (5.9), batched map updates.
pub const MIN_KERNEL: (u32, u32) = (5, 9);
/// At most this many findings of one kind are listed one by one; the rest are counted.
const MAX_LISTED: usize = 20;

/// A sysctl's value as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sysctl {
    Value(u32),
    /// The file does not exist here (a global sysctl outside the initial network namespace,
    /// or an interface without that address family).
    Absent,
    Unreadable(String),
}

impl Sysctl {
    const fn value(&self) -> Option<u32> {
        match self {
            Self::Value(v) => Some(*v),
            _ => None,
        }
    }
}

/// The global sysctls the doctor judges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctls {
    pub igmp_max_msf: Sysctl,
    pub mld_max_msf: Sysctl,
    pub optmem_max: Sysctl,
    /// `net.ipv4.conf.all.rp_filter`
    pub rp_filter_all: Sysctl,
    /// `net.ipv4.conf.all.force_igmp_version`
    pub force_igmp_all: Sysctl,
    /// `net.ipv6.conf.all.force_mld_version`
    pub force_mld_all: Sysctl,
}

/// The XDP program attached to an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpProgram {
    pub id: u32,
    /// `None` when it could not be read (that needs `CAP_SYS_ADMIN`).
    pub name: Option<String>,
    pub mode: String,
}

/// One interface and its per-interface settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub loopback: bool,
    /// `net.ipv4.conf.IFACE.rp_filter`
    pub rp_filter: Sysctl,
    /// `net.ipv4.conf.IFACE.force_igmp_version`
    pub force_igmp: Sysctl,
    /// `net.ipv6.conf.IFACE.force_mld_version`
    pub force_mld: Sysctl,
    pub xdp: Result<Option<XdpProgram>, String>,
}

/// The configuration file and what reading it gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFacts {
    pub path: PathBuf,
    pub config: Result<Config, String>,
}

/// A group the daemon enforces (its pages' continuations merged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedGroup {
    pub iface: String,
    pub group: IpAddr,
    pub mode: Mode,
    pub sources: usize,
    /// msfilter's clients that are members (one socket each in the kernel).
    pub members: u32,
}

/// What the daemon said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonView {
    pub socket: PathBuf,
    pub pid: Option<u32>,
    /// The daemon process's effective capabilities, when readable.
    pub capabilities: Option<u64>,
    pub clients: u32,
    pub groups: Vec<ManagedGroup>,
    /// Who runs XDP on each interface the doctor looked at.
    pub owners: Vec<OwnerView>,
    /// Requests that failed, in words.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonFacts {
    Unreachable { socket: PathBuf, error: String },
    Reachable(Box<DaemonView>),
}

impl DaemonFacts {
    const fn view(&self) -> Option<&DaemonView> {
        match self {
            Self::Reachable(v) => Some(v),
            Self::Unreachable { .. } => None,
        }
    }
}

/// Everything the doctor evaluates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// `/proc/sys/kernel/osrelease`
    pub osrelease: Result<String, String>,
    /// `/sys/kernel/btf/vmlinux` exists.
    pub btf: bool,
    /// `/proc/self/mountinfo`
    pub mountinfo: Result<String, String>,
    pub pin_dir: PathBuf,
    /// Pinned links in the pin directory, if it exists.
    pub pinned_links: Option<usize>,
    /// The packet trace's switch, when it is on: the process that switched it on, and
    /// whether that process still exists.
    pub trace: Option<(u32, bool)>,
    pub sysctls: Sysctls,
    pub interfaces: Vec<Interface>,
    /// Interfaces asked for by name (empty: choose).
    pub selected: Vec<String>,
    /// `xdp-features` by interface index, or why they are unknown.
    pub xdp_features: Result<BTreeMap<u32, u64>, String>,
    /// `/proc/net/igmp` and `/proc/net/igmp6`
    pub igmp: Result<String, String>,
    pub igmp6: Result<String, String>,
    pub config: Option<ConfigFacts>,
    pub daemon: DaemonFacts,
}

/// Evaluate every check.
pub fn evaluate(facts: &Facts) -> Report {
    let mut out = Vec::new();
    out.push(kernel(&facts.osrelease));
    out.push(btf(facts.btf));
    out.push(bpffs(&facts.mountinfo, &facts.pin_dir));
    out.extend(pins(
        facts.pinned_links,
        &facts.pin_dir,
        facts.daemon.view().is_some(),
    ));
    out.extend(trace(facts.trace));
    out.extend(daemon(&facts.daemon));
    let config = facts.config.as_ref().and_then(|c| c.config.as_ref().ok());
    if let Some(c) = &facts.config {
        out.extend(configuration(c, &facts.interfaces));
    }
    let needs = source_needs(config, facts.daemon.view());
    let v4: Vec<&Need> = needs.iter().filter(|n| n.group.is_ipv4()).collect();
    let v6: Vec<&Need> = needs.iter().filter(|n| n.group.is_ipv6()).collect();
    out.push(source_limit(
        "igmp-max-msf",
        "net.ipv4.igmp_max_msf",
        &facts.sysctls.igmp_max_msf,
        10,
        &v4,
    ));
    out.push(source_limit(
        "mld-max-msf",
        "net.ipv6.mld_max_msf",
        &facts.sysctls.mld_max_msf,
        64,
        &v6,
    ));
    out.push(optmem(&facts.sysctls.optmem_max, &needs));

    let igmp = kernel_listing(&facts.igmp, groups::parse_igmp_listing);
    let igmp6 = kernel_listing(&facts.igmp6, groups::parse_igmp6);
    let versions = igmp
        .as_ref()
        .map(|l| l.versions.clone())
        .unwrap_or_default();
    let configured: BTreeSet<&str> = config
        .map(|c| c.interfaces.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for iface in interfaces_of_interest(facts, &configured) {
        let owner = facts
            .daemon
            .view()
            .and_then(|v| v.owners.iter().find(|o| o.iface == iface.name));
        out.push(xdp_driver_mode(iface, &facts.xdp_features, owner));
        out.push(xdp_program(
            iface,
            owner,
            facts.daemon.view().is_some(),
            configured.contains(iface.name.as_str()),
        ));
        out.extend(igmp_version(
            iface,
            &facts.sysctls.force_igmp_all,
            versions.get(&iface.name).map(String::as_str),
        ));
        out.extend(mld_version(iface, &facts.sysctls.force_mld_all));
        out.extend(rp_filter(iface, &facts.sysctls.rp_filter_all));
    }
    if let Some(view) = facts.daemon.view() {
        let kernel_groups =
            igmp.and_then(|v4| igmp6.map(|v6| v4.groups.into_iter().chain(v6).collect::<Vec<_>>()));
        let (managed, followed) = split_followed(view);
        out.extend(outside_members(&managed, kernel_groups.as_deref()));
        out.extend(followed);
    }
    Report::new(out)
}

/// A group listing of the kernel, parsed, or why it could not be read or parsed.
fn kernel_listing<T>(
    text: &Result<String, String>,
    parse: fn(&str) -> std::io::Result<T>,
) -> Result<T, String> {
    text.as_ref()
        .map_err(Clone::clone)
        .and_then(|t| parse(t).map_err(|e| e.to_string()))
}

/// The interfaces the per-interface checks look at: those asked for; else those msfilter
/// manages (owns, holds groups on, or is configured with); else every one but loopback.
fn interfaces_of_interest<'a>(facts: &'a Facts, configured: &BTreeSet<&str>) -> Vec<&'a Interface> {
    if !facts.selected.is_empty() {
        return facts
            .interfaces
            .iter()
            .filter(|i| facts.selected.contains(&i.name))
            .collect();
    }
    let mut managed: BTreeSet<&str> = configured.clone();
    if let Some(view) = facts.daemon.view() {
        managed.extend(view.groups.iter().map(|g| g.iface.as_str()));
        managed.extend(
            view.owners
                .iter()
                .filter(|o| o.owner.starts_with("msfilter"))
                .map(|o| o.iface.as_str()),
        );
    }
    let chosen: Vec<&Interface> = facts
        .interfaces
        .iter()
        .filter(|i| managed.contains(i.name.as_str()))
        .collect();
    if chosen.is_empty() {
        facts.interfaces.iter().filter(|i| !i.loopback).collect()
    } else {
        chosen
    }
}

pub(super) fn kernel(osrelease: &Result<String, String>) -> Finding {
    const CHECK: &str = "kernel";
    let release = match osrelease {
        Ok(r) => r.trim(),
        Err(e) => {
            return Finding::warn(
                CHECK,
                format!("the kernel release could not be read: {e}"),
                "check /proc/sys/kernel/osrelease; msfilter needs Linux 5.9 or later",
            );
        }
    };
    match parse::kernel_version(release) {
        Some((major, minor, _)) if (major, minor) < MIN_KERNEL => Finding::fail(
            CHECK,
            format!(
                "Linux {release}: msfilter needs 5.9 or later (XDP attached through BPF links, \
                 batched map updates)"
            ),
            "run msfilter on Linux 5.9 or later",
        ),
        Some(_) => Finding::ok(
            CHECK,
            format!("Linux {release} (msfilter needs 5.9 or later)"),
        ),
        None => Finding::warn(
            CHECK,
            format!("kernel release {release:?} is not a version number"),
            "check the kernel version by hand: msfilter needs Linux 5.9 or later",
        ),
    }
}

pub(super) fn btf(present: bool) -> Finding {
    if present {
        Finding::ok("btf", "kernel BTF present (/sys/kernel/btf/vmlinux)")
    } else {
        Finding::warn(
            "btf",
            "no kernel BTF (/sys/kernel/btf/vmlinux is missing); msfilter is tested only on \
             kernels with BTF",
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        )
    }
}

pub(super) fn bpffs(mountinfo: &Result<String, String>, pin_dir: &Path) -> Finding {
    const CHECK: &str = "bpffs";
    let subject = pin_dir.display().to_string();
    let text = match mountinfo {
        Ok(t) => t,
        Err(e) => {
            return Finding::warn(
                CHECK,
                format!("the mounts could not be read: {e}"),
                "check that a bpffs is mounted where the pins go (mount -t bpf bpf /sys/fs/bpf)",
            )
            .about(subject);
        }
    };
    match parse::mount_of(text, pin_dir) {
        Some(m) if m.fstype == "bpf" => Finding::ok(
            CHECK,
            format!("on the BPF filesystem mounted at {}", m.point.display()),
        )
        .about(subject),
        other => {
            let on = other.map_or_else(
                || "no mount".to_string(),
                |m| format!("{} mounted at {}", m.fstype, m.point.display()),
            );
            Finding::fail(
                CHECK,
                format!(
                    "not on a BPF filesystem (it would be on {on}): the daemon cannot pin its \
                     maps and links, so XDP would not outlive it"
                ),
                "mount one (mount -t bpf bpf /sys/fs/bpf, or the sys-fs-bpf.mount unit) or point \
                 --pin-dir / MSFILTER_PIN_DIR into one; inside `ip netns exec` /sys is private \
                 and has none: enter only the network namespace (nsenter --net=...)",
            )
            .about(subject)
        }
    }
}

/// Pinned links with no daemon: XDP enforces a policy nobody keeps in step.
pub(super) fn pins(links: Option<usize>, pin_dir: &Path, daemon_up: bool) -> Option<Finding> {
    match links {
        Some(n) if n > 0 && !daemon_up => Some(
            Finding::warn(
                "pins",
                format!(
                    "{n} pinned XDP link(s) and no daemon: msfilter's program keeps enforcing the \
                     last policy, frozen (memberships are not held)"
                ),
                "start the daemon (it adopts the pinned links), or remove the pins to stop \
                 filtering",
            )
            .about(pin_dir.display().to_string()),
        ),
        _ => None,
    }
}

/// A packet trace switched on: fine while its process runs; left on by a killed one, every
/// frame takes the trace path and the ring buffer stays full.
pub(super) fn trace(on: Option<(u32, bool)>) -> Option<Finding> {
    let (pid, alive) = on?;
    Some(if alive {
        Finding::ok("trace", format!("a packet trace runs (process {pid})"))
    } else {
        Finding::warn(
            "trace",
            format!(
                "the packet trace is on, but process {pid} that switched it on is gone: every \
                 frame takes the trace path"
            ),
            "switch it off: msfilter trace --off",
        )
    })
}

pub(super) fn daemon(daemon: &DaemonFacts) -> Vec<Finding> {
    const CHECK: &str = "daemon";
    let view = match daemon {
        DaemonFacts::Unreachable { socket, error } => {
            return vec![Finding::warn(
                CHECK,
                format!(
                    "not reachable at {}: {error}; only the local checks ran",
                    socket.display()
                ),
                "start it (systemctl start msfilter), or point --socket / MSFILTER_SOCKET at its \
                 socket",
            )];
        }
        DaemonFacts::Reachable(view) => view,
    };
    let ifaces: BTreeSet<&str> = view.groups.iter().map(|g| g.iface.as_str()).collect();
    let owned: Vec<String> = view
        .owners
        .iter()
        .filter(|o| o.owner == "msfilter")
        .map(|o| format!("{} ({})", o.iface, o.mode.as_deref().unwrap_or("?")))
        .collect();
    let mut out = vec![Finding::ok(
        CHECK,
        format!(
            "answers at {}{}: {} clients, {} groups enforced on {} interfaces{}",
            view.socket.display(),
            view.pid.map_or_else(String::new, |p| format!(" (pid {p})")),
            view.clients,
            view.groups.len(),
            ifaces.len(),
            if owned.is_empty() {
                String::new()
            } else {
                format!("; owns {}", owned.join(", "))
            }
        ),
    )];
    for problem in &view.problems {
        out.push(Finding::warn(
            CHECK,
            problem.clone(),
            "see the daemon's log (journalctl -u msfilter)",
        ));
    }
    if let Some(mask) = view.capabilities {
        out.push(daemon_capabilities(mask));
    }
    out
}

pub(super) fn daemon_capabilities(mask: u64) -> Finding {
    const CHECK: &str = "daemon-capabilities";
    let missing = capabilities::missing_for_daemon(mask);
    let held = capabilities::names(mask).join(", ");
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|(c, _)| c.name).collect();
        return Finding::fail(
            CHECK,
            format!("the daemon lacks {} (it has {held})", names.join(", ")),
            "give it CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (the unit's CapabilityBoundingSet)",
        );
    }
    let follow: Vec<&str> = capabilities::missing_for_follow(mask)
        .iter()
        .map(|(c, _)| c.name)
        .collect();
    let follow = if follow.is_empty() {
        String::new()
    } else {
        format!(
            "; follow mode (attach --follow) also needs {}",
            follow.join(" and ")
        )
    };
    if capabilities::CAP_SYS_ADMIN.held_in(mask) {
        Finding::ok(CHECK, format!("{held}: everything msfilter does{follow}"))
    } else {
        Finding::ok(
            CHECK,
            format!(
                "{held}: enough to filter; without CAP_SYS_ADMIN other XDP programs are shown \
                 without names and `attach --replace` cannot remove another tool's program\
                 {follow}"
            ),
        )
    }
}

pub(super) fn configuration(config: &ConfigFacts, interfaces: &[Interface]) -> Vec<Finding> {
    const CHECK: &str = "config";
    let path = config.path.display().to_string();
    let c = match &config.config {
        Ok(c) => c,
        Err(e) => {
            return vec![
                Finding::fail(
                    CHECK,
                    format!("invalid: {e}"),
                    "fix the file: the daemon refuses an invalid file whole, at start-up and on \
                     reload (the running policy stays)",
                )
                .about(path),
            ];
        }
    };
    let groups: usize = c.interfaces.values().map(|i| i.groups.len()).sum();
    let mut out = vec![
        Finding::ok(
            CHECK,
            format!("valid: {} interfaces, {groups} groups", c.interfaces.len()),
        )
        .about(path),
    ];
    for name in c.interfaces.keys() {
        if !interfaces.iter().any(|i| &i.name == name) {
            out.push(
                Finding::warn(
                    CHECK,
                    "configured, but there is no such interface in this network namespace",
                    "the daemon takes it when it appears; check the name if it should be here",
                )
                .about(name.clone()),
            );
        }
    }
    out
}

/// A source list msfilter needs a socket to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Need {
    pub sources: usize,
    pub iface: String,
    pub group: IpAddr,
    /// Where it comes from, for the message.
    pub origin: &'static str,
    /// Some socket holds at least this many (false: an INCLUDE union over several members,
    /// which may be more than any one of them holds).
    pub certain: bool,
}

pub(super) fn source_needs(config: Option<&Config>, daemon: Option<&DaemonView>) -> Vec<Need> {
    let mut needs = Vec::new();
    for (iface, i) in config.map(|c| &c.interfaces).into_iter().flatten() {
        for (group, g) in &i.groups {
            needs.push(Need {
                sources: g.sources.len(),
                iface: iface.clone(),
                group: *group,
                origin: "configured",
                certain: true,
            });
        }
    }
    for g in daemon.map(|d| &d.groups).into_iter().flatten() {
        needs.push(Need {
            sources: g.sources,
            iface: g.iface.clone(),
            group: g.group,
            origin: "managed by the daemon",
            certain: g.mode == Mode::Exclude || g.members <= 1,
        });
    }
    needs
}

/// The number of different (interface, group) among `needs` (a configured group is
/// usually managed too).
fn distinct(needs: &[&Need]) -> usize {
    needs
        .iter()
        .map(|n| (n.iface.as_str(), n.group))
        .collect::<BTreeSet<_>>()
        .len()
}

fn largest<'a>(needs: impl IntoIterator<Item = &'a Need>) -> Option<&'a Need> {
    needs.into_iter().max_by_key(|n| n.sources)
}

fn describe_need(n: &Need) -> String {
    format!(
        "group {} on {} ({}) has {} sources",
        n.group, n.iface, n.origin, n.sources
    )
}

pub(super) fn source_limit(
    check: &'static str,
    key: &str,
    value: &Sysctl,
    kernel_default: u32,
    needs: &[&Need],
) -> Finding {
    let top = largest(needs.iter().copied());
    let raise = |n: usize| {
        format!(
            "raise it to at least {n}: sysctl -w {key}={n} ({}), or start the daemon with \
             --max-sources-per-socket {n} (MSFILTER_DAEMON_OPTS in /etc/default/msfilter)",
            if key.contains("ipv6") {
                "global: from the initial network namespace"
            } else {
                "per network namespace"
            }
        )
    };
    match value {
        Sysctl::Value(limit) => {
            let over: Vec<&Need> = needs
                .iter()
                .copied()
                .filter(|n| n.sources > *limit as usize)
                .collect();
            if let Some(worst) = largest(over.iter().copied().filter(|n| n.certain)) {
                Finding::fail(
                    check,
                    format!(
                        "{key} = {limit}, but {}: the kernel refuses more than {limit} sources per \
                         socket (ENOBUFS), so that filter cannot be set again (on restart or \
                         reload){}",
                        describe_need(worst),
                        if distinct(&over) > 1 {
                            format!("; {} groups are over the limit", distinct(&over))
                        } else {
                            String::new()
                        }
                    ),
                    raise(worst.sources),
                )
            } else if let Some(worst) = largest(over.iter().copied()) {
                Finding::warn(
                    check,
                    format!(
                        "{key} = {limit}, and {}, merged from several members' lists: one of \
                         them may hold more than {limit}",
                        describe_need(worst)
                    ),
                    raise(worst.sources),
                )
            } else {
                Finding::ok(
                    check,
                    match top {
                        Some(n) => format!(
                            "{key} = {limit}; the largest source list: {}",
                            describe_need(n)
                        ),
                        None => format!("{key} = {limit}; msfilter holds no source lists here"),
                    },
                )
            }
        }
        Sysctl::Absent => {
            let note = "not visible in this network namespace (it is global: only the initial \
                        namespace has it)";
            match top {
                Some(n) if n.sources > kernel_default as usize => Finding::warn(
                    check,
                    format!(
                        "{key} is {note}; {}, more than the kernel's default of {kernel_default}",
                        describe_need(n)
                    ),
                    format!(
                        "check it from the initial namespace (sysctl {key}); {}",
                        raise(n.sources)
                    ),
                ),
                _ => Finding::ok(
                    check,
                    format!(
                        "{key} is {note}; the source lists here need no more than the kernel's \
                         default of {kernel_default}"
                    ),
                ),
            }
        }
        Sysctl::Unreadable(e) => Finding::warn(
            check,
            format!("{key} could not be read: {e}"),
            format!("check it by hand (sysctl {key})"),
        ),
    }
}

pub(super) fn optmem(value: &Sysctl, needs: &[Need]) -> Finding {
    const CHECK: &str = "optmem-max";
    const KEY: &str = "net.core.optmem_max";
    let top = largest(needs);
    let Some(limit) = value.value() else {
        return Finding::warn(
            CHECK,
            format!("{KEY} could not be read ({value:?})"),
            format!("check it by hand (sysctl {KEY})"),
        );
    };
    match top {
        Some(n) if filter_option_size(n.sources) > limit as usize => {
            let bytes = filter_option_size(n.sources);
            let found = format!(
                "{KEY} = {limit} bytes, but {}: setting it whole (MCAST_MSFILTER) takes a \
                 {bytes}-byte option, which the kernel refuses (ENOBUFS)",
                describe_need(n)
            );
            let action = format!(
                "raise it: sysctl -w {KEY}={bytes} (per network namespace), or start the daemon \
                 with --max-sources-per-socket {} (which raises it too)",
                n.sources
            );
            if n.certain {
                Finding::fail(CHECK, found, action)
            } else {
                Finding::warn(CHECK, found, action)
            }
        }
        Some(n) => Finding::ok(
            CHECK,
            format!(
                "{KEY} = {limit} bytes; the largest full-state filter ({} sources) takes {}",
                n.sources,
                filter_option_size(n.sources)
            ),
        ),
        None => Finding::ok(
            CHECK,
            format!(
                "{KEY} = {limit} bytes: room for full-state filters of up to {} sources",
                (limit as usize).saturating_sub(filter_option_size(0))
                    / (filter_option_size(1) - filter_option_size(0))
            ),
        ),
    }
}

pub(super) fn xdp_driver_mode(
    iface: &Interface,
    features: &Result<BTreeMap<u32, u64>, String>,
    owner: Option<&OwnerView>,
) -> Finding {
    const CHECK: &str = "xdp-driver-mode";
    let running_native = owner
        .is_some_and(|o| o.owner.starts_with("msfilter") && o.mode.as_deref() == Some("driver"));
    let finding = match features.as_ref().map(|f| f.get(&iface.ifindex)) {
        Ok(Some(bits)) if bits & xdp_features::XDP_ACT_BASIC != 0 => Finding::ok(
            CHECK,
            format!(
                "the driver runs XDP natively (xdp-features: {})",
                xdp_features::feature_names(*bits).join(", ")
            ),
        ),
        Ok(Some(_)) if running_native => {
            Finding::ok(CHECK, "msfilter's program runs there in driver mode")
        }
        Ok(Some(bits)) => Finding::warn(
            CHECK,
            format!(
                "the driver does not run XDP natively (xdp-features: {}): msfilter runs in \
                 generic (skb) mode here, after the kernel has built the packet buffer — it \
                 filters correctly, at a higher cost per frame",
                if *bits == 0 {
                    "none".to_string()
                } else {
                    xdp_features::feature_names(*bits).join(", ")
                }
            ),
            "for filtering at line rate, use a NIC whose driver supports native XDP",
        ),
        _ if running_native => Finding::ok(CHECK, "msfilter's program runs there in driver mode"),
        Ok(None) => Finding::warn(
            CHECK,
            "unknown: the kernel's netdev family does not list this interface",
            "msfilter tries driver mode and falls back to skb mode; `msfilter owner IFACE` \
             shows which it got",
        ),
        Err(why) => Finding::warn(
            CHECK,
            format!("unknown: {why}"),
            "msfilter tries driver mode and falls back to skb mode; `msfilter owner IFACE` \
             shows which it got",
        ),
    };
    finding.about(iface.name.clone())
}

pub(super) fn xdp_program(
    iface: &Interface,
    owner: Option<&OwnerView>,
    daemon_up: bool,
    configured: bool,
) -> Finding {
    const CHECK: &str = "xdp-program";
    let name = iface.name.as_str();
    let foreign = |what: String| {
        if configured {
            Finding::fail(
                CHECK,
                format!("{what}, on an interface msfilter is configured to own"),
                format!(
                    "the daemon refuses to take {name} over from another program: remove that \
                     program, or let msfilter replace it (msfilter attach {name} --replace)"
                ),
            )
        } else {
            Finding::warn(
                CHECK,
                what,
                format!(
                    "msfilter will not attach to {name} while it is there unless told to replace \
                     it (msfilter attach {name} --replace); if {name} is not for msfilter, leave \
                     it"
                ),
            )
        }
    };
    let finding = if let Some(o) = owner.filter(|_| daemon_up) {
        let program = match (o.program_id, &o.program_name) {
            (Some(id), Some(n)) => format!("program {id} ({n}"),
            (Some(id), None) => format!("program {id} ("),
            _ => "a program (".to_string(),
        };
        let program = if program.ends_with('(') {
            format!("{program}{} mode)", o.mode.as_deref().unwrap_or("?"))
        } else {
            format!("{program}, {} mode)", o.mode.as_deref().unwrap_or("?"))
        };
        match o.owner.as_str() {
            "msfilter" => Finding::ok(
                CHECK,
                format!(
                    "msfilter's {program}, owned by the daemon{}: {} groups, {} sources",
                    if o.adopted {
                        ", adopted from a pinned link"
                    } else {
                        ""
                    },
                    o.groups,
                    o.sources
                ),
            ),
            "msfilter-kept" => Finding::warn(
                CHECK,
                format!(
                    "msfilter's {program} enforces a frozen policy: released with `detach \
                     --keep`, the daemon no longer keeps it in step"
                ),
                format!(
                    "msfilter attach {name} to take it back, or msfilter detach {name} to remove \
                     it"
                ),
            ),
            "msfilter-vlans" => Finding::ok(
                CHECK,
                format!(
                    "msfilter's {program} runs here for owned VLAN sub-interfaces; the \
                     interface itself is not owned"
                ),
            ),
            "other" => foreign(format!("another XDP program runs here: {program}")),
            _ if configured => Finding::warn(
                CHECK,
                "no XDP program, although the configuration lists this interface",
                "see the daemon's log; if the daemon runs with another file, ignore this; \
                 msfilter reload applies the file again",
            ),
            _ => Finding::ok(CHECK, "no XDP program"),
        }
    } else {
        match &iface.xdp {
            Err(e) => Finding::warn(
                CHECK,
                format!("could not be read: {e}"),
                format!("check by hand (ip link show {name})"),
            ),
            Ok(None) => Finding::ok(CHECK, "no XDP program"),
            Ok(Some(p)) if p.name.as_deref() == Some(PROGRAM_NAME) => Finding::warn(
                CHECK,
                format!(
                    "msfilter's program {} ({} mode) is attached and no daemon answers: it \
                     enforces the last policy, frozen",
                    p.id, p.mode
                ),
                "start the daemon: it adopts the pinned link and keeps the filter in step",
            ),
            Ok(Some(p)) => foreign(format!(
                "another XDP program runs here: program {} ({}, {} mode)",
                p.id,
                p.name
                    .as_deref()
                    .unwrap_or("name unknown: reading it needs CAP_SYS_ADMIN"),
                p.mode
            )),
        }
    };
    finding.about(name.to_string())
}

/// The IGMP version the kernel forces on `iface`: 1 or 2 if `all` or the interface's own
/// `force_igmp_version` says so (1 wins, as in the kernel's `IGMP_V1_SEEN`).
fn forced_version(all: &Sysctl, own: &Sysctl, versions: [u32; 2]) -> Option<u32> {
    versions
        .into_iter()
        .find(|v| all.value() == Some(*v) || own.value() == Some(*v))
}

pub(super) fn igmp_version(
    iface: &Interface,
    all: &Sysctl,
    querier: Option<&str>,
) -> Option<Finding> {
    const CHECK: &str = "igmp-version";
    if iface.force_igmp == Sysctl::Absent && querier.is_none() {
        return None;
    }
    let name = &iface.name;
    let finding = match forced_version(all, &iface.force_igmp, [1, 2]) {
        Some(v) => Finding::warn(
            CHECK,
            format!(
                "IGMPv{v} forced (net.ipv4.conf.{}.force_igmp_version = {v}): the kernel's \
                 reports carry no source lists, so routers forward every source of a group and \
                 only XDP keeps the unwanted ones out",
                if all.value() == Some(v) { "all" } else { name }
            ),
            format!(
                "if the network's routers speak IGMPv3, set net.ipv4.conf.all.force_igmp_version \
                 and net.ipv4.conf.{name}.force_igmp_version to 0; otherwise XDP filtering is \
                 what keeps the sources out"
            ),
        ),
        None => match querier {
            Some(v @ ("V1" | "V2")) => Finding::ok(
                CHECK,
                format!(
                    "IGMP{} in use: a querier of that version was heard on the link, so \
                     reports carry no sources and XDP does the source filtering",
                    v.to_lowercase()
                ),
            ),
            _ => Finding::ok(CHECK, "IGMPv3 (not forced)"),
        },
    };
    Some(finding.about(name.clone()))
}

pub(super) fn mld_version(iface: &Interface, all: &Sysctl) -> Option<Finding> {
    const CHECK: &str = "mld-version";
    if iface.force_mld == Sysctl::Absent {
        return None;
    }
    let name = &iface.name;
    let finding = if forced_version(all, &iface.force_mld, [1, 1]).is_some() {
        Finding::warn(
            CHECK,
            format!(
                "MLDv1 forced (net.ipv6.conf.{}.force_mld_version = 1): the kernel's reports \
                 carry no source lists, so routers forward every source of a group and only XDP \
                 keeps the unwanted ones out",
                if all.value() == Some(1) { "all" } else { name }
            ),
            format!(
                "if the network's routers speak MLDv2, set net.ipv6.conf.all.force_mld_version \
                 and net.ipv6.conf.{name}.force_mld_version to 0"
            ),
        )
    } else {
        Finding::ok(CHECK, "MLDv2 (not forced to MLDv1)")
    };
    Some(finding.about(name.clone()))
}

pub(super) fn rp_filter(iface: &Interface, all: &Sysctl) -> Option<Finding> {
    const CHECK: &str = "rp-filter";
    let own = iface.rp_filter.value()?;
    let all_v = all.value().unwrap_or(0);
    let name = &iface.name;
    // The kernel applies the higher of the two.
    let effective = own.max(all_v);
    let finding = match effective {
        1 => Finding::warn(
            CHECK,
            format!(
                "strict reverse-path filtering (net.ipv4.conf.{name}.rp_filter = {own}, \
                 net.ipv4.conf.all.rp_filter = {all_v}; the higher applies): the kernel drops \
                 multicast from any source it would not route back through {name} — sources off \
                 {name}'s subnets never reach a socket"
            ),
            format!(
                "if sources are off-subnet, use loose mode or none: sysctl -w \
                 net.ipv4.conf.{name}.rp_filter=2 and keep net.ipv4.conf.all.rp_filter at 2 or 0"
            ),
        ),
        2 => Finding::ok(CHECK, "loose reverse-path filtering (rp_filter 2)"),
        0 => Finding::ok(CHECK, "no reverse-path filtering"),
        v => Finding::ok(CHECK, format!("rp_filter = {v}")),
    };
    Some(finding.about(name.clone()))
}

/// The managed groups of interfaces that are not followed, and a finding per followed
/// interface: there XDP enforces the merge of every socket (follow mode), so sockets joined
/// outside msfilter are members like msfilter's own.
pub(super) fn split_followed(view: &DaemonView) -> (Vec<ManagedGroup>, Vec<Finding>) {
    let followed: BTreeSet<&str> = view
        .owners
        .iter()
        .filter(|o| o.followed)
        .map(|o| o.iface.as_str())
        .collect();
    let managed = view
        .groups
        .iter()
        .filter(|g| !followed.contains(g.iface.as_str()))
        .cloned()
        .collect();
    let findings = followed
        .iter()
        .map(|iface| {
            Finding::ok(
                "outside-members",
                "followed: XDP enforces the merge of every socket here, msfilter's clients and \
                 the others alike",
            )
            .about((*iface).to_string())
        })
        .collect();
    (managed, findings)
}

/// Managed groups against the kernel's groups (`Err`: why those could not be read).
pub(super) fn outside_members(
    managed: &[ManagedGroup],
    kernel: Result<&[JoinedGroup], &String>,
) -> Vec<Finding> {
    const CHECK: &str = "outside-members";
    let kernel = match kernel {
        Ok(kernel) => kernel,
        Err(e) => {
            return vec![Finding::warn(
                CHECK,
                format!("the kernel's group memberships could not be read: {e}"),
                "check /proc/net/igmp and /proc/net/igmp6",
            )];
        }
    };
    let users: BTreeMap<(&str, IpAddr), u32> = kernel
        .iter()
        .map(|k| ((k.device.as_str(), k.group), k.users))
        .collect();
    let mut out = Vec::new();
    let mut matching = 0;
    let mut listed = 0;
    let mut unlisted = 0;
    for g in managed {
        let kernel_users = users
            .get(&(g.iface.as_str(), g.group))
            .copied()
            .unwrap_or(0);
        let finding = match kernel_users.cmp(&g.members) {
            std::cmp::Ordering::Equal => {
                matching += 1;
                continue;
            }
            std::cmp::Ordering::Greater => Finding::warn(
                CHECK,
                format!(
                    "{} socket(s) joined outside msfilter: the kernel counts {kernel_users} \
                     members, msfilter {}; XDP enforces only msfilter's merged filter, so it may \
                     drop sources those sockets want",
                    kernel_users - g.members,
                    g.members
                ),
                "let those applications join through msfilter (CLI or library client), or stop \
                 managing this group with msfilter",
            ),
            std::cmp::Ordering::Less => Finding::fail(
                CHECK,
                format!(
                    "msfilter counts {} members but the kernel only {kernel_users}: msfilter's \
                     view and the kernel's disagree",
                    g.members
                ),
                "restart the daemon (it rebuilds its memberships from its state) and report the \
                 daemon's log",
            ),
        };
        if listed < MAX_LISTED {
            out.push(finding.about(format!("{} {}", g.iface, g.group)));
            listed += 1;
        } else {
            unlisted += 1;
        }
    }
    if unlisted > 0 {
        out.push(Finding::warn(
            CHECK,
            format!("{unlisted} more groups whose counts differ (not listed)"),
            "msfilter doctor IFACE lists one interface's",
        ));
    }
    if matching > 0 || managed.is_empty() {
        out.insert(
            0,
            Finding::ok(
                CHECK,
                format!("{matching} managed groups: the kernel counts exactly msfilter's members"),
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests;
