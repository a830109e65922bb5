//! Scripted membership sequences with the kernel's measured outcome at every step.
//!
//! Each [`Template`] is a short script, written once for both families with symbolic
//! addresses, e.g. `"G join => OK"`, `"G block S1 => EADDRNOTAVAIL"`, plus the filter every
//! group must have at the end. [`table`] instantiates the templates for IPv4 and IPv6 and for
//! both option sets into concrete [`Sequence`]s; [`run_direct`] plays one on plain
//! [`MembershipSocket`]s (one per group, as the daemon holds them) and returns a
//! [`SequenceOutcome`]: every step's result and every group's final filter. The daemon's
//! tests replay the same sequences through the daemon and compare outcome for outcome.
//!
//! The expectations mirror docs/kernel.md as measured on the kernel; where the two ever
//! disagree, the kernel wins and the table says so in the template's `about`.
//!
//! Sequences that need one socket to hold many groups (`igmp_max_memberships`) do not fit
//! the one-socket-per-group design; they are in [`shared_socket_table`], marked
//! [`Layout::OneSocket`].
//!
//! # Step syntax
//!
//! `<group> <request> [@pi|@fs] => <expect>`
//!
//! * request: `join`, `leave`, `block S`, `unblock S`, `join-source S`, `leave-source S`,
//!   `filter include|exclude [S ...]`.
//! * `@pi` / `@fs` pins the step to the protocol-independent or family-specific option set;
//!   unpinned steps use the option set of the instantiation.
//! * expect: `OK`, an errno name (`EADDRNOTAVAIL`), or `invalid/<kernel>`: msfilter refuses
//!   the request before the kernel is asked, and `<kernel>` (`OK` or an errno name) is what
//!   the kernel itself says when asked anyway ([`run_kernel_only`]). A step whose kernel
//!   verdict is `OK` must be the last of its sequence (the kernel's state diverges after it).
//!
//! Final filters: `<group> include|exclude [S ...]`, `<group> -` (not joined), or
//! `<group> error <ERRNO>` (the filter cannot be read).
//!
//! # Symbols
//!
//! | symbol | IPv4 | IPv6 | meaning |
//! |---|---|---|---|
//! | `G` | 232.1.1.1 | ff3e::1 | a source-specific group |
//! | `H` | 239.1.1.1 | ff15::1 | an any-source group |
//! | `G<n>` | 232.1.2.n | ff3e::2:n | more groups |
//! | `S<n>` | 10.77.1.n | fd77:1::n | unicast sources |
//! | `U` | 10.77.9.9 | fd77:9::9 | a unicast address given as group |
//! | `W` | ff3e::1 | 232.1.1.1 | a group of the other family |
//! | `Y` | — | ::ffff:232.1.1.1 | an IPv4-mapped group |
//! | `M` | 239.9.9.9 | ff3e::9:9 | a multicast address given as source |
//! | `Z` | 0.0.0.0 | :: | the unspecified address as source |
//! | `B` | 255.255.255.255 | — | the broadcast address as source |
//! | `X` | — | ::ffff:10.77.1.1 | an IPv4-mapped source |
//! | `V` | fd77:1::1 | 10.77.1.1 | a source of the other family |
//!
//! Literal addresses are accepted too.

use std::{
    collections::BTreeMap,
    fmt, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use msfilter::sockopt::{
    ApplyError, Family, Limit, LimitGuard, MembershipSocket, Mode, Request, errno_from_name,
    errno_name,
};

use crate::{
    netns::Netns,
    option_sets::{OptionSet, OptionSets as _},
};

/// An interface index that no test namespace has (for the missing-interface sequences).
pub const MISSING_IFINDEX: u32 = 999_999;

/// How sockets are laid out while a sequence runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One socket per group, as the daemon holds them.
    SocketPerGroup,
    /// One socket for every group (only for the `igmp_max_memberships` sequences, which do
    /// not fit the daemon's design).
    OneSocket,
}

/// Which interface the sequence's sockets use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// The interface given to the runner.
    Given,
    /// [`MISSING_IFINDEX`], which does not exist.
    Missing,
}

/// A per-namespace limit a sequence lowers or raises before it runs, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitRole {
    /// Sources per group: `igmp_max_msf` (IPv4) / `mld_max_msf` (IPv6).
    MaxSources,
    /// Groups per socket: `igmp_max_memberships` (IPv4 only).
    MaxMemberships,
}

impl LimitRole {
    pub fn limit(self, family: Family) -> Limit {
        match (self, family) {
            (LimitRole::MaxSources, f) => Limit::max_sources(f),
            (LimitRole::MaxMemberships, _) => Limit::IgmpMaxMemberships,
        }
    }
}

/// What a step must produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Ok,
    /// The kernel refuses with this errno.
    Errno(&'static str),
    /// msfilter refuses before the kernel is asked; `kernel` is what the kernel says when
    /// asked anyway (`None` = it accepts).
    Invalid {
        kernel: Option<&'static str>,
    },
}

impl Expect {
    /// Whether `outcome` is what was expected (validated run).
    pub fn matches(&self, outcome: &StepOutcome) -> bool {
        match (self, outcome) {
            (Expect::Ok, StepOutcome::Ok) => true,
            (Expect::Errno(a), StepOutcome::Errno(b)) => a == b,
            (Expect::Invalid { .. }, StepOutcome::Invalid(_)) => true,
            _ => false,
        }
    }

    /// What the kernel alone (no validation) must answer.
    pub fn kernel(&self) -> Expect {
        match self {
            Expect::Invalid { kernel: None } => Expect::Ok,
            Expect::Invalid { kernel: Some(e) } => Expect::Errno(e),
            other => *other,
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Ok => f.write_str("OK"),
            Expect::Errno(e) => f.write_str(e),
            Expect::Invalid { kernel } => write!(f, "invalid/{}", kernel.unwrap_or("OK")),
        }
    }
}

/// One request on one named group, and what it must produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The group's name in the sequence (`"G"`), see [`Sequence::groups`].
    pub group: String,
    pub request: Request,
    pub set: OptionSet,
    pub expect: Expect,
    /// The script line it came from.
    pub line: String,
}

/// A group's filter at the end of a sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// The socket has no membership for the group (`getsockopt` says `EADDRNOTAVAIL`).
    NotJoined,
    /// Mode and sources (sorted).
    Joined { mode: Mode, sources: Vec<IpAddr> },
    /// The filter could not be read (another errno).
    Error(&'static str),
}

impl Filter {
    /// The socket's filter for `group` as the kernel states it.
    pub fn read(socket: &MembershipSocket, group: IpAddr) -> Self {
        match socket.filter(group) {
            Ok((mode, mut sources)) => {
                sources.sort();
                Filter::Joined { mode, sources }
            }
            Err(e) if e.errno == libc::EADDRNOTAVAIL => Filter::NotJoined,
            Err(e) => Filter::Error(e.errno_name()),
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::NotJoined => f.write_str("not joined"),
            Filter::Error(e) => write!(f, "unreadable ({e})"),
            Filter::Joined { mode, sources } => {
                let mode = match mode {
                    Mode::Include => "INCLUDE",
                    Mode::Exclude => "EXCLUDE",
                };
                write!(f, "{mode} {{")?;
                for (i, s) in sources.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{s}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// A concrete sequence: one family, one option set (unless steps pin theirs).
#[derive(Debug, Clone)]
pub struct Sequence {
    /// `<template>/<v4|v6>/<pi|fs|mixed>`.
    pub name: String,
    pub about: &'static str,
    pub family: Family,
    pub layout: Layout,
    pub interface: Interface,
    /// Per-namespace limits set before the first step (and restored after).
    pub limits: Vec<(Limit, u32)>,
    /// Global limits the expectations rely on but the runner cannot set from inside a
    /// namespace (`net.ipv6.mld_max_msf`): check them from the initial namespace.
    pub assumes: Vec<(Limit, u32)>,
    /// Group names and addresses, in order of first use.
    pub groups: Vec<(String, IpAddr)>,
    pub steps: Vec<Step>,
    /// Expected filter of every group at the end (validated run).
    pub finals: Vec<(String, Filter)>,
}

impl Sequence {
    pub fn group_addr(&self, name: &str) -> IpAddr {
        self.groups
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("{}: no group {name}", self.name))
    }

    /// Whether the kernel-only run ends in the same state (no step the kernel accepts but
    /// msfilter refuses).
    pub fn kernel_state_matches(&self) -> bool {
        !self
            .steps
            .iter()
            .any(|s| s.expect == Expect::Invalid { kernel: None })
    }
}

/// What one step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Ok,
    /// The kernel refused with this errno.
    Errno(&'static str),
    /// Refused before the kernel was asked, with the reason.
    Invalid(String),
}

impl StepOutcome {
    pub fn of(result: Result<(), ApplyError>) -> Self {
        match result {
            Ok(()) => StepOutcome::Ok,
            Err(ApplyError::Kernel(e)) => StepOutcome::Errno(e.errno_name()),
            Err(ApplyError::Invalid(e)) => StepOutcome::Invalid(e.to_string()),
        }
    }

    /// Same result, ignoring the wording of an invalid-request reason.
    pub fn same_kind(&self, other: &StepOutcome) -> bool {
        match (self, other) {
            (StepOutcome::Invalid(_), StepOutcome::Invalid(_)) => true,
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepOutcome::Ok => f.write_str("OK"),
            StepOutcome::Errno(e) => f.write_str(e),
            StepOutcome::Invalid(why) => write!(f, "invalid ({why})"),
        }
    }
}

/// Everything a run produced: per-step results and each group's final filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceOutcome {
    pub steps: Vec<StepOutcome>,
    /// Final filter per group name.
    pub filters: BTreeMap<String, Filter>,
}

impl SequenceOutcome {
    /// Compare with the sequence's expectations (of a validated run); `Err` lists every
    /// difference.
    pub fn check(&self, seq: &Sequence) -> Result<(), String> {
        self.check_with(seq, false)
    }

    /// Compare a [`run_kernel_only`] outcome: steps msfilter refuses must get the kernel's
    /// verdict instead; final filters are compared only when the kernel refused those too.
    pub fn check_kernel_only(&self, seq: &Sequence) -> Result<(), String> {
        self.check_with(seq, true)
    }

    fn check_with(&self, seq: &Sequence, kernel_only: bool) -> Result<(), String> {
        let mut problems = Vec::new();
        for (i, (step, got)) in seq.steps.iter().zip(&self.steps).enumerate() {
            let expect = if kernel_only {
                step.expect.kernel()
            } else {
                step.expect
            };
            if !expect.matches(got) {
                problems.push(format!(
                    "step {} `{}` ({} {} {:?}): expected {expect}, got {got}",
                    i + 1,
                    step.line,
                    seq.group_addr(&step.group),
                    step.request,
                    step.set,
                ));
            }
        }
        if self.steps.len() != seq.steps.len() {
            problems.push(format!(
                "{} step results for {} steps",
                self.steps.len(),
                seq.steps.len()
            ));
        }
        if !kernel_only || seq.kernel_state_matches() {
            for (group, want) in &seq.finals {
                match self.filters.get(group) {
                    Some(got) if got == want => {}
                    got => problems.push(format!(
                        "final filter of {group} ({}): expected {want}, got {}",
                        seq.group_addr(group),
                        got.map_or_else(|| "nothing".to_string(), ToString::to_string)
                    )),
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} ({}):\n  {}",
                seq.name,
                seq.about,
                problems.join("\n  ")
            ))
        }
    }
}

/// Play `seq` on plain [`MembershipSocket`]s in the calling thread's network namespace
/// (one socket per group, or one for all under [`Layout::OneSocket`]), each request
/// validated first, as the daemon does. `ifindex` is the interface to use (ignored for
/// [`Interface::Missing`]). The sequence's limits are set first and restored afterwards.
///
/// Panics when the test bed itself fails (a socket cannot be opened, a limit cannot be set).
pub fn run_direct(seq: &Sequence, ifindex: u32) -> SequenceOutcome {
    run(seq, ifindex, false)
}

/// Like [`run_direct`] but without validation: every request goes to the kernel, to show
/// the kernel's own verdict on what msfilter refuses.
pub fn run_kernel_only(seq: &Sequence, ifindex: u32) -> SequenceOutcome {
    run(seq, ifindex, true)
}

fn run(seq: &Sequence, ifindex: u32, kernel_only: bool) -> SequenceOutcome {
    let ifindex = match seq.interface {
        Interface::Given => ifindex,
        Interface::Missing => MISSING_IFINDEX,
    };
    let _limits: Vec<LimitGuard> = seq
        .limits
        .iter()
        .map(|&(limit, value)| {
            limit
                .set_scoped(value)
                .unwrap_or_else(|e| panic!("{}: {e}", seq.name))
        })
        .collect();
    let open = || {
        MembershipSocket::open(seq.family, ifindex)
            .unwrap_or_else(|e| panic!("{}: opening a socket: {e}", seq.name))
    };
    let sockets: Vec<MembershipSocket> = match seq.layout {
        Layout::SocketPerGroup => seq.groups.iter().map(|_| open()).collect(),
        Layout::OneSocket => vec![open()],
    };
    let socket_of = |name: &str| {
        let i = seq
            .groups
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{}: no group {name}", seq.name));
        match seq.layout {
            Layout::SocketPerGroup => &sockets[i],
            Layout::OneSocket => &sockets[0],
        }
    };
    let steps = seq
        .steps
        .iter()
        .map(|step| {
            let socket = socket_of(&step.group);
            let group = seq.group_addr(&step.group);
            let result = if kernel_only {
                socket
                    .apply_unchecked(group, &step.request, step.set)
                    .map_err(ApplyError::from)
            } else {
                socket.apply_with(group, &step.request, step.set)
            };
            StepOutcome::of(result)
        })
        .collect();
    let filters = seq
        .groups
        .iter()
        .map(|(name, addr)| (name.clone(), Filter::read(socket_of(name), *addr)))
        .collect();
    SequenceOutcome { steps, filters }
}

/// A namespace with the interface the sequences run on: veth `d0` (peer `d0p`, both up; no
/// dummy interfaces in this kernel), `10.77.0.1/24` and `fd77::1/64` on `d0`.
#[derive(Debug)]
pub struct Bed {
    pub ns: Netns,
    /// Index of `d0`.
    pub ifindex: u32,
    /// Index of `d0p`, which has no addresses.
    pub peer_ifindex: u32,
}

impl Bed {
    pub fn new(tag: &str) -> io::Result<Self> {
        let ns = Netns::new(tag)?;
        ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d0p"])?;
        ns.ip(&["link", "set", "d0", "up"])?;
        ns.ip(&["link", "set", "d0p", "up"])?;
        ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "d0"])?;
        ns.ip(&["addr", "add", "fd77::1/64", "dev", "d0", "nodad"])?;
        let ifindex = ns.ifindex("d0")?;
        let peer_ifindex = ns.ifindex("d0p")?;
        Ok(Self {
            ns,
            ifindex,
            peer_ifindex,
        })
    }

    /// Run `seq` directly in this namespace.
    pub fn run_direct(&self, seq: &Sequence) -> SequenceOutcome {
        self.ns.run(|| run_direct(seq, self.ifindex))
    }

    /// Run `seq` without validation in this namespace.
    pub fn run_kernel_only(&self, seq: &Sequence) -> SequenceOutcome {
        self.ns.run(|| run_kernel_only(seq, self.ifindex))
    }
}

// ---------------------------------------------------------------------------------------
// Templates

/// A script written once for both families (see the module documentation for the syntax).
#[derive(Debug, Clone)]
pub struct Template {
    pub name: &'static str,
    /// One line: what the sequence shows.
    pub about: &'static str,
    pub families: &'static [Family],
    pub layout: Layout,
    pub interface: Interface,
    pub limits: Vec<(LimitRole, u32)>,
    pub steps: Vec<String>,
    pub finals: Vec<String>,
}

const BOTH: &[Family] = &[Family::V4, Family::V6];
const V4: &[Family] = &[Family::V4];
const V6: &[Family] = &[Family::V6];

fn t(name: &'static str, about: &'static str, steps: &[&str], finals: &[&str]) -> Template {
    Template {
        name,
        about,
        families: BOTH,
        layout: Layout::SocketPerGroup,
        interface: Interface::Given,
        limits: Vec::new(),
        steps: steps.iter().map(ToString::to_string).collect(),
        finals: finals.iter().map(ToString::to_string).collect(),
    }
}

/// A template whose steps are built by code (long source lists).
fn generated(
    name: &'static str,
    about: &'static str,
    steps: Vec<String>,
    finals: Vec<String>,
) -> Template {
    Template {
        steps,
        finals,
        ..t(name, about, &[], &[])
    }
}

impl Template {
    fn only(mut self, families: &'static [Family]) -> Self {
        self.families = families;
        self
    }

    fn limit(mut self, role: LimitRole, value: u32) -> Self {
        self.limits.push((role, value));
        self
    }

    fn missing_interface(mut self) -> Self {
        self.interface = Interface::Missing;
        self
    }

    fn one_socket(mut self) -> Self {
        self.layout = Layout::OneSocket;
        self
    }

    /// Whether every step pins its option set (then one instantiation per family suffices).
    fn all_pinned(&self) -> bool {
        self.steps
            .iter()
            .all(|s| s.contains("@pi") || s.contains("@fs"))
    }

    /// The concrete sequences: per family, per option set.
    pub fn instantiate(&self) -> Vec<Sequence> {
        let sets: &[(OptionSet, &str)] = if self.all_pinned() {
            &[(OptionSet::ProtocolIndependent, "mixed")]
        } else {
            &[
                (OptionSet::ProtocolIndependent, "pi"),
                (OptionSet::FamilySpecific, "fs"),
            ]
        };
        let mut out = Vec::new();
        for &family in self.families {
            for &(set, set_name) in sets {
                let fam = match family {
                    Family::V4 => "v4",
                    Family::V6 => "v6",
                };
                let name = format!("{}/{fam}/{set_name}", self.name);
                out.push(
                    self.build(family, set, name.clone())
                        .unwrap_or_else(|e| panic!("{name}: {e}")),
                );
            }
        }
        out
    }

    fn build(&self, family: Family, set: OptionSet, name: String) -> Result<Sequence, String> {
        let mut groups: Vec<(String, IpAddr)> = Vec::new();
        let mut note_group = |token: &str| -> Result<String, String> {
            let addr = group_symbol(token, family)?;
            if !groups.iter().any(|(n, _)| n == token) {
                groups.push((token.to_string(), addr));
            }
            Ok(token.to_string())
        };
        let mut steps = Vec::new();
        for line in &self.steps {
            let (lhs, rhs) = line
                .split_once("=>")
                .ok_or_else(|| format!("`{line}`: no `=>`"))?;
            let mut words: Vec<&str> = lhs.split_whitespace().collect();
            let mut step_set = set;
            words.retain(|w| match *w {
                "@pi" => {
                    step_set = OptionSet::ProtocolIndependent;
                    false
                }
                "@fs" => {
                    step_set = OptionSet::FamilySpecific;
                    false
                }
                _ => true,
            });
            let [group, verb, args @ ..] = words.as_slice() else {
                return Err(format!("`{line}`: expected `<group> <request>`"));
            };
            let group = note_group(group)?;
            let source = |i: usize| -> Result<IpAddr, String> {
                source_symbol(
                    args.get(i)
                        .ok_or_else(|| format!("`{line}`: missing source"))?,
                    family,
                )
            };
            let one_source = |r: fn(IpAddr) -> Request| -> Result<Request, String> {
                if args.len() != 1 {
                    return Err(format!("`{line}`: expected one source"));
                }
                Ok(r(source(0)?))
            };
            let request = match *verb {
                "join" | "leave" if !args.is_empty() => {
                    return Err(format!("`{line}`: `{verb}` takes no source"));
                }
                "join" => Request::JoinGroup,
                "leave" => Request::LeaveGroup,
                "block" => one_source(|source| Request::BlockSource { source })?,
                "unblock" => one_source(|source| Request::UnblockSource { source })?,
                "join-source" => one_source(|source| Request::JoinSourceGroup { source })?,
                "leave-source" => one_source(|source| Request::LeaveSourceGroup { source })?,
                "filter" => {
                    let (mode, sources) =
                        parse_filter(args, family).map_err(|e| format!("`{line}`: {e}"))?;
                    Request::SetFilter { mode, sources }
                }
                other => return Err(format!("`{line}`: unknown request `{other}`")),
            };
            steps.push(Step {
                group,
                request,
                set: step_set,
                expect: parse_expect(rhs.trim()).map_err(|e| format!("`{line}`: {e}"))?,
                line: line.clone(),
            });
        }
        let mut finals = Vec::new();
        for line in &self.finals {
            let words: Vec<&str> = line.split_whitespace().collect();
            let [group, rest @ ..] = words.as_slice() else {
                return Err(format!("final `{line}`: empty"));
            };
            let filter = match rest {
                ["-"] => Filter::NotJoined,
                ["error", e] => Filter::Error(static_errno(e)?),
                _ => {
                    let (mode, mut sources) =
                        parse_filter(rest, family).map_err(|e| format!("final `{line}`: {e}"))?;
                    sources.sort();
                    Filter::Joined { mode, sources }
                }
            };
            finals.push((note_group(group)?, filter));
        }
        for (g, _) in &groups {
            if !finals.iter().any(|(f, _)| f == g) {
                return Err(format!("group {g} has no expected final filter"));
            }
        }
        let last = steps.len().saturating_sub(1);
        for (i, s) in steps.iter().enumerate() {
            if s.expect == (Expect::Invalid { kernel: None }) && i != last {
                return Err(format!(
                    "`{}`: a step the kernel accepts but msfilter refuses must come last",
                    s.line
                ));
            }
        }
        let limits: Vec<(Limit, u32)> = self
            .limits
            .iter()
            .map(|&(role, v)| (role.limit(family), v))
            .collect();
        Ok(Sequence {
            name,
            about: self.about,
            family,
            layout: self.layout,
            interface: self.interface,
            limits: limits
                .iter()
                .copied()
                .filter(|(l, _)| l.is_per_namespace())
                .collect(),
            assumes: limits
                .into_iter()
                .filter(|(l, _)| !l.is_per_namespace())
                .collect(),
            groups,
            steps,
            finals,
        })
    }
}

fn static_errno(name: &str) -> Result<&'static str, String> {
    errno_from_name(name)
        .map(errno_name)
        .ok_or_else(|| format!("unknown errno `{name}`"))
}

fn parse_expect(s: &str) -> Result<Expect, String> {
    if s == "OK" {
        return Ok(Expect::Ok);
    }
    if let Some(kernel) = s.strip_prefix("invalid/") {
        let kernel = if kernel == "OK" {
            None
        } else {
            Some(static_errno(kernel)?)
        };
        return Ok(Expect::Invalid { kernel });
    }
    Ok(Expect::Errno(static_errno(s)?))
}

fn parse_filter(words: &[&str], family: Family) -> Result<(Mode, Vec<IpAddr>), String> {
    let [mode, sources @ ..] = words else {
        return Err("expected include|exclude".into());
    };
    let mode = match *mode {
        "include" => Mode::Include,
        "exclude" => Mode::Exclude,
        other => return Err(format!("`{other}` is not include|exclude")),
    };
    let sources = sources
        .iter()
        .map(|s| source_symbol(s, family))
        .collect::<Result<_, _>>()?;
    Ok((mode, sources))
}

fn numbered(token: &str, prefix: char) -> Option<u8> {
    token.strip_prefix(prefix)?.parse().ok()
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(segments: [u16; 8]) -> IpAddr {
    let [a, b, c, d, e, f, g, h] = segments;
    IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
}

/// A group symbol (or literal address) for `family`.
pub fn group_symbol(token: &str, family: Family) -> Result<IpAddr, String> {
    let fam6 = family == Family::V6;
    Ok(match token {
        "G" if fam6 => v6([0xff3e, 0, 0, 0, 0, 0, 0, 1]),
        "G" => v4(232, 1, 1, 1),
        "H" if fam6 => v6([0xff15, 0, 0, 0, 0, 0, 0, 1]),
        "H" => v4(239, 1, 1, 1),
        "U" if fam6 => v6([0xfd77, 9, 0, 0, 0, 0, 0, 9]),
        "U" => v4(10, 77, 9, 9),
        "W" if fam6 => v4(232, 1, 1, 1),
        "W" => v6([0xff3e, 0, 0, 0, 0, 0, 0, 1]),
        "Y" if fam6 => v6([0, 0, 0, 0, 0, 0xffff, 0xe801, 0x0101]),
        _ => {
            if let Some(n) = numbered(token, 'G') {
                if fam6 {
                    v6([0xff3e, 0, 0, 0, 0, 0, 2, u16::from(n)])
                } else {
                    v4(232, 1, 2, n)
                }
            } else {
                token
                    .parse()
                    .map_err(|_| format!("`{token}` is not a group symbol for {family}"))?
            }
        }
    })
}

/// A source symbol (or literal address) for `family`.
pub fn source_symbol(token: &str, family: Family) -> Result<IpAddr, String> {
    let fam6 = family == Family::V6;
    Ok(match token {
        "M" if fam6 => v6([0xff3e, 0, 0, 0, 0, 0, 9, 9]),
        "M" => v4(239, 9, 9, 9),
        "Z" if fam6 => v6([0; 8]),
        "Z" => v4(0, 0, 0, 0),
        "B" if !fam6 => v4(255, 255, 255, 255),
        "X" if fam6 => v6([0, 0, 0, 0, 0, 0xffff, 0x0a4d, 0x0101]),
        "V" if fam6 => v4(10, 77, 1, 1),
        "V" => v6([0xfd77, 1, 0, 0, 0, 0, 0, 1]),
        _ => {
            if let Some(n) = numbered(token, 'S') {
                if fam6 {
                    v6([0xfd77, 1, 0, 0, 0, 0, 0, u16::from(n)])
                } else {
                    v4(10, 77, 1, n)
                }
            } else {
                token
                    .parse()
                    .map_err(|_| format!("`{token}` is not a source symbol for {family}"))?
            }
        }
    })
}

/// `S1 S2 … Sn` as one string.
fn sources_upto(n: u32) -> String {
    (1..=n)
        .map(|i| format!("S{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The sequences that fit the daemon's design (one socket per group).
pub fn templates() -> Vec<Template> {
    use LimitRole::MaxSources;
    let mut v = vec![
        // --- Misordered: requests that need a prior join (docs/kernel.md, first row). ---
        t(
            "block-without-join",
            "block before any join: no membership to filter",
            &["G block S1 => EINVAL"],
            &["G -"],
        ),
        t(
            "unblock-without-join",
            "unblock before any join",
            &["G unblock S1 => EINVAL"],
            &["G -"],
        ),
        t(
            "leave-source-without-join",
            "drop a source before any join",
            &["G leave-source S1 => EINVAL"],
            &["G -"],
        ),
        t(
            "filter-without-join",
            "set a filter before any join, both modes",
            &[
                "G filter exclude S1 => EINVAL",
                "G filter include S1 => EINVAL",
                "G filter exclude => EINVAL",
            ],
            &["G -"],
        ),
        t(
            "filter-include-empty-without-join",
            "INCLUDE {} means leave, and leaving a group not joined fails",
            &["G filter include => EADDRNOTAVAIL"],
            &["G -"],
        ),
        t(
            "leave-without-join",
            "leave a group never joined",
            &["G leave => EADDRNOTAVAIL"],
            &["G -"],
        ),
        // --- Duplicates. ---
        t(
            "join-twice",
            "any-source join twice on one socket",
            &["G join => OK", "G join => EADDRINUSE"],
            &["G exclude"],
        ),
        t(
            "join-source-twice",
            "the same (S,G) twice",
            &[
                "G join-source S1 => OK",
                "G join-source S1 => EADDRNOTAVAIL",
            ],
            &["G include S1"],
        ),
        t(
            "join-source-two-sources",
            "a second (S,G) ignores the internal join's EADDRINUSE",
            &["G join-source S1 => OK", "G join-source S2 => OK"],
            &["G include S1 S2"],
        ),
        t(
            "join-after-join-source",
            "any-source join on a group already joined by source",
            &["G join-source S1 => OK", "G join => EADDRINUSE"],
            &["G include S1"],
        ),
        t(
            "block-twice",
            "block an already blocked source",
            &[
                "G join => OK",
                "G block S1 => OK",
                "G block S1 => EADDRNOTAVAIL",
            ],
            &["G exclude S1"],
        ),
        t(
            "unblock-never-blocked",
            "unblock a source never blocked, with and without a block list",
            &[
                "G join => OK",
                "G unblock S1 => EADDRNOTAVAIL",
                "G block S1 => OK",
                "G unblock S2 => EADDRNOTAVAIL",
            ],
            &["G exclude S1"],
        ),
        t(
            "unblock-twice",
            "unblock the same source twice",
            &[
                "G join => OK",
                "G block S1 => OK",
                "G unblock S1 => OK",
                "G unblock S1 => EADDRNOTAVAIL",
            ],
            &["G exclude"],
        ),
        t(
            "leave-source-unknown",
            "drop a source never added from a controlled-source group",
            &[
                "G join-source S1 => OK",
                "G leave-source S2 => EADDRNOTAVAIL",
            ],
            &["G include S1"],
        ),
        t(
            "leave-twice",
            "leave twice",
            &["G join => OK", "G leave => OK", "G leave => EADDRNOTAVAIL"],
            &["G -"],
        ),
        t(
            "leave-after-last-source",
            "dropping the last source already left the group",
            &[
                "G join-source S1 => OK",
                "G leave-source S1 => OK",
                "G leave => EADDRNOTAVAIL",
            ],
            &["G -"],
        ),
        t(
            "leave-source-after-last-source",
            "after the last source was dropped there is no membership left",
            &[
                "G join-source S1 => OK",
                "G leave-source S1 => OK",
                "G leave-source S1 => EINVAL",
            ],
            &["G -"],
        ),
        // --- Mixed any-source / controlled-source. ---
        t(
            "block-then-join-source",
            "any-source join + block, then add a source",
            &[
                "G join => OK",
                "G block S1 => OK",
                "G join-source S2 => EINVAL",
            ],
            &["G exclude S1"],
        ),
        t(
            "block-unblock-then-join-source",
            "after block then unblock the EXCLUDE list stays allocated: adding a source fails",
            &[
                "G join => OK",
                "G block S1 => OK",
                "G unblock S1 => OK",
                "G join-source S2 => EINVAL",
            ],
            &["G exclude"],
        ),
        t(
            "join-source-then-block",
            "controlled-source group, then block",
            &["G join-source S1 => OK", "G block S2 => EINVAL"],
            &["G include S1"],
        ),
        t(
            "join-source-then-unblock",
            "controlled-source group, then unblock",
            &["G join-source S1 => OK", "G unblock S1 => EINVAL"],
            &["G include S1"],
        ),
        t(
            "block-then-leave-source",
            "any-source group with blocks, then drop a source",
            &[
                "G join => OK",
                "G block S1 => OK",
                "G leave-source S1 => EINVAL",
            ],
            &["G exclude S1"],
        ),
        t(
            "join-then-join-source",
            "any-source join never blocked, then add a source: becomes INCLUDE {S}",
            &["G join => OK", "G join-source S1 => OK"],
            &["G include S1"],
        ),
        t(
            "join-then-leave-unknown-source",
            "any-source join, then drop an unknown source: fails, but the filter is already \
             INCLUDE {}",
            &["G join => OK", "G leave-source S1 => EADDRNOTAVAIL"],
            &["G include"],
        ),
        t(
            "empty-include-then-join-source",
            "the INCLUDE {} left by a failed drop still takes sources, and leave works",
            &[
                "G join => OK",
                "G leave-source S1 => EADDRNOTAVAIL",
                "G join-source S2 => OK",
                "G leave => OK",
            ],
            &["G -"],
        ),
        t(
            "leave-drops-blocks",
            "leave drops the block list; a new join starts from EXCLUDE {}",
            &[
                "G join => OK",
                "G block S1 => OK",
                "G block S2 => OK",
                "G leave => OK",
                "G join => OK",
            ],
            &["G exclude"],
        ),
        t(
            "leave-drops-sources",
            "leave on a controlled-source group drops every source",
            &[
                "G join-source S1 => OK",
                "G join-source S2 => OK",
                "G leave => OK",
                "G join-source S3 => OK",
            ],
            &["G include S3"],
        ),
        // --- Full-state filters. ---
        t(
            "filter-exclude-to-include",
            "EXCLUDE {S1,S2} replaced by INCLUDE {S3}",
            &[
                "G join => OK",
                "G filter exclude S1 S2 => OK",
                "G filter include S3 => OK",
            ],
            &["G include S3"],
        ),
        t(
            "filter-include-to-exclude",
            "controlled-source INCLUDE {S1} replaced by EXCLUDE {S2}",
            &["G join-source S1 => OK", "G filter exclude S2 => OK"],
            &["G exclude S2"],
        ),
        t(
            "filter-include-empty-leaves",
            "INCLUDE {} is leave: the membership is gone",
            &[
                "G join => OK",
                "G filter include => OK",
                "G leave => EADDRNOTAVAIL",
            ],
            &["G -"],
        ),
        t(
            "filter-exclude-empty",
            "EXCLUDE {} makes a controlled-source group any-source",
            &["G join-source S1 => OK", "G filter exclude => OK"],
            &["G exclude"],
        ),
        t(
            "filter-exclude-then-block",
            "after a full-state EXCLUDE, single blocks extend the list",
            &[
                "G join => OK",
                "G filter exclude S1 => OK",
                "G block S2 => OK",
                "G unblock S1 => OK",
            ],
            &["G exclude S2"],
        ),
        t(
            "filter-include-then-join-source",
            "after a full-state INCLUDE, single sources extend the list",
            &[
                "G join => OK",
                "G filter include S1 => OK",
                "G join-source S2 => OK",
                "G leave-source S1 => OK",
            ],
            &["G include S2"],
        ),
        t(
            "filter-include-then-block",
            "after a full-state INCLUDE, block is the wrong mode",
            &[
                "G join => OK",
                "G filter include S1 => OK",
                "G block S2 => EINVAL",
            ],
            &["G include S1"],
        ),
        t(
            "filter-replaces-blocks",
            "a full-state filter replaces the block list",
            &[
                "G join => OK",
                "G block S1 => OK",
                "G filter exclude S2 => OK",
                "G unblock S1 => EADDRNOTAVAIL",
            ],
            &["G exclude S2"],
        ),
        t(
            "filter-same-twice",
            "setting the same filter twice is fine",
            &[
                "G join => OK",
                "G filter exclude S1 S2 => OK",
                "G filter exclude S2 S1 => OK",
            ],
            &["G exclude S1 S2"],
        ),
        t(
            "filter-duplicate-sources",
            "a filter listing a source twice is refused by msfilter (the kernel would store it \
             twice)",
            &["G join => OK", "G filter include S1 S1 => invalid/OK"],
            &["G exclude"],
        ),
        // --- Limits: sources per group. ---
        t(
            "max-sources-block",
            "blocks beyond the lowered source limit",
            &[
                "G join => OK",
                "G block S1 => OK",
                "G block S2 => OK",
                "G block S3 => ENOBUFS",
            ],
            &["G exclude S1 S2"],
        )
        .only(V4)
        .limit(MaxSources, 2),
        t(
            "max-sources-join-source",
            "(S,G) joins beyond the lowered source limit",
            &[
                "G join-source S1 => OK",
                "G join-source S2 => OK",
                "G join-source S3 => ENOBUFS",
            ],
            &["G include S1 S2"],
        )
        .only(V4)
        .limit(MaxSources, 2),
        t(
            "max-sources-filter",
            "a full-state filter longer than the lowered source limit",
            &[
                "G join => OK",
                "G filter exclude S1 S2 S3 => ENOBUFS",
                "G filter exclude S1 S2 => OK",
                "G filter include S1 S2 S3 => ENOBUFS",
            ],
            &["G exclude S1 S2"],
        )
        .only(V4)
        .limit(MaxSources, 2),
        t(
            "max-sources-zero",
            "source limit 0 still lets one source in singly (the limit is checked only once a \
             list exists), but no full-state filter with a source",
            &[
                "G join => OK",
                "G block S1 => OK",
                "G block S2 => ENOBUFS",
                "G filter exclude S1 => ENOBUFS",
                "G filter exclude => OK",
                "G block S3 => OK",
                "H join-source S1 => OK",
                "H join-source S2 => ENOBUFS",
            ],
            &["G exclude S3", "H include S1"],
        )
        .only(V4)
        .limit(MaxSources, 0),
        t(
            "max-sources-per-group",
            "the source limit counts per group, not per interface",
            &[
                "G join => OK",
                "G block S1 => OK",
                "H join => OK",
                "H block S2 => OK",
                "H block S3 => ENOBUFS",
            ],
            &["G exclude S1", "H exclude S2"],
        )
        .only(V4)
        .limit(MaxSources, 1),
        // --- Interface and group errors. ---
        t(
            "missing-interface",
            "an interface index that does not exist",
            &[
                "G join => ENODEV",
                "G join-source S1 => ENODEV",
                "G block S1 => ENODEV",
                "G filter exclude S1 => ENODEV",
                "G leave => EADDRNOTAVAIL",
            ],
            &["G -"],
        )
        .missing_interface(),
        t(
            "non-multicast-group",
            "a unicast address as group: msfilter refuses, the kernel says EINVAL",
            &[
                "U join => invalid/EINVAL",
                "U join-source S1 => invalid/EINVAL",
                "U filter exclude S1 => invalid/EINVAL",
            ],
            &["U error EINVAL"],
        ),
        t(
            "wrong-family-group",
            "an IPv6 group on an IPv4 socket: the kernel says EINVAL",
            &["W join => invalid/EINVAL"],
            &["W error EINVAL"],
        )
        .only(V4),
        t(
            "wrong-family-group",
            "an IPv4 group on an IPv6 socket: the kernel says EADDRNOTAVAIL",
            &[
                "W join => invalid/EADDRNOTAVAIL",
                "W block S1 => invalid/EADDRNOTAVAIL",
            ],
            &["W -"],
        )
        .only(V6),
        t(
            "multicast-source",
            "a multicast address as source: msfilter refuses, the kernel would accept it",
            &["G join => OK", "G block M => invalid/OK"],
            &["G exclude"],
        ),
        t(
            "unspecified-source",
            "the unspecified address as source",
            &["G join-source S1 => OK", "G join-source Z => invalid/OK"],
            &["G include S1"],
        ),
        t(
            "broadcast-source",
            "the IPv4 broadcast address as source",
            &["G join => OK", "G block B => invalid/OK"],
            &["G exclude"],
        )
        .only(V4),
        t(
            "ipv4-mapped-source",
            "an IPv4-mapped address as IPv6 source",
            &["G join => OK", "G block X => invalid/OK"],
            &["G exclude"],
        )
        .only(V6),
        t(
            "ipv4-mapped-group",
            "an IPv4-mapped address as IPv6 group",
            &["Y join => invalid/EINVAL"],
            &["Y error EINVAL"],
        )
        .only(V6),
        // --- Several groups, rejoin cycles, mixed option sets. ---
        t(
            "two-groups-independent",
            "two groups on their own sockets do not affect each other",
            &[
                "G join => OK",
                "H join-source S1 => OK",
                "G block S2 => OK",
                "H block S2 => EINVAL",
                "G leave-source S1 => EINVAL",
                "H leave-source S1 => OK",
            ],
            &["G exclude S2", "H -"],
        ),
        t(
            "same-source-two-groups",
            "one source in two groups; leaving one keeps the other",
            &[
                "G join-source S1 => OK",
                "H join-source S1 => OK",
                "G leave => OK",
            ],
            &["G -", "H include S1"],
        ),
        t(
            "rejoin-after-leave",
            "join, leave, join again",
            &["G join => OK", "G leave => OK", "G join => OK"],
            &["G exclude"],
        ),
        t(
            "rejoin-source-after-last-drop",
            "(S,G) again after the last source was dropped",
            &[
                "G join-source S1 => OK",
                "G leave-source S1 => OK",
                "G join-source S1 => OK",
            ],
            &["G include S1"],
        ),
        t(
            "mixed-option-sets",
            "family-specific and protocol-independent options act on the same membership",
            &[
                "G join @fs => OK",
                "G block S1 @pi => OK",
                "G block S1 @fs => EADDRNOTAVAIL",
                "G join @pi => EADDRINUSE",
                "G unblock S1 @fs => OK",
                "G leave @pi => OK",
                "G leave @fs => EADDRNOTAVAIL",
            ],
            &["G -"],
        ),
    ];

    // The kernel's default source limits: 10 for IGMP (per namespace, set explicitly so
    // the table says what it tests), 64 for MLD (global: assumed, see `Sequence::assumes`).
    for (family, max) in [(V4, 10), (V6, 64)] {
        let all = sources_upto(max);
        let one_more = format!("S{}", max + 1);
        let mut steps = vec!["G join => OK".to_string()];
        steps.extend((1..=max).map(|i| format!("G block S{i} => OK")));
        steps.push(format!("G block {one_more} => ENOBUFS"));
        steps.push(format!("G filter exclude {all} {one_more} => ENOBUFS"));
        steps.push(format!("G filter include {all} => OK"));
        v.push(
            generated(
                "default-max-sources",
                "the default source limit: as many blocks and as long a filter as allowed, \
                 one more fails",
                steps,
                vec![format!("G include {all}")],
            )
            .only(family)
            .limit(MaxSources, max),
        );

        let mut steps: Vec<String> = (1..=max)
            .map(|i| format!("G join-source S{i} => OK"))
            .collect();
        steps.push(format!("G join-source {one_more} => ENOBUFS"));
        v.push(
            generated(
                "default-max-sources-join-source",
                "the default source limit for (S,G) joins",
                steps,
                vec![format!("G include {all}")],
            )
            .only(family)
            .limit(MaxSources, max),
        );

        let mut steps = vec!["G join => OK".to_string()];
        steps.push(format!("G filter exclude {all} => OK"));
        steps.push("H join => OK".to_string());
        steps.extend((1..=max).map(|i| format!("H block S{i} => OK")));
        steps.push(format!("H block {one_more} => ENOBUFS"));
        v.push(
            generated(
                "default-max-sources-per-group",
                "the default source limit counts per group: two full groups side by side",
                steps,
                vec![format!("G exclude {all}"), format!("H exclude {all}")],
            )
            .only(family)
            .limit(MaxSources, max),
        );
    }
    v
}

/// The sequences that need one socket to hold many groups (`igmp_max_memberships`). They do
/// not fit the daemon's one-socket-per-group design and are not replayed through it.
pub fn shared_socket_templates() -> Vec<Template> {
    use LimitRole::MaxMemberships;
    let mut v = vec![
        t(
            "max-memberships",
            "groups per socket beyond the lowered limit",
            &["G join => OK", "H join => OK", "G3 join => ENOBUFS"],
            &["G exclude", "H exclude", "G3 -"],
        )
        .one_socket()
        .only(V4)
        .limit(MaxMemberships, 2),
        t(
            "max-memberships-source-join",
            "an (S,G) join counts as a membership",
            &["G join-source S1 => OK", "H join-source S1 => ENOBUFS"],
            &["G include S1", "H -"],
        )
        .one_socket()
        .only(V4)
        .limit(MaxMemberships, 1),
        t(
            "max-memberships-leave-frees",
            "leaving frees the slot",
            &[
                "G join => OK",
                "H join => ENOBUFS",
                "G leave => OK",
                "H join => OK",
            ],
            &["G -", "H exclude"],
        )
        .one_socket()
        .only(V4)
        .limit(MaxMemberships, 1),
    ];
    // Default 20 groups per IPv4 socket; IPv6 has no such limit (25 groups join).
    let mut steps: Vec<String> = (1..=20).map(|i| format!("G{i} join => OK")).collect();
    steps.push("G21 join => ENOBUFS".into());
    let mut finals: Vec<String> = (1..=20).map(|i| format!("G{i} exclude")).collect();
    finals.push("G21 -".into());
    v.push(
        generated(
            "default-max-memberships",
            "the kernel's default: 20 IPv4 groups per socket",
            steps,
            finals,
        )
        .one_socket()
        .only(V4)
        .limit(MaxMemberships, 20),
    );
    v.push(
        generated(
            "ipv6-no-membership-limit",
            "IPv6 has no groups-per-socket limit: 25 groups on one socket",
            (1..=25).map(|i| format!("G{i} join => OK")).collect(),
            (1..=25).map(|i| format!("G{i} exclude")).collect(),
        )
        .one_socket()
        .only(V6),
    );
    v
}

/// Every concrete one-socket-per-group sequence (both families, both option sets).
pub fn table() -> Vec<Sequence> {
    templates().iter().flat_map(Template::instantiate).collect()
}

/// Every concrete shared-socket sequence ([`Layout::OneSocket`]).
pub fn shared_socket_table() -> Vec<Sequence> {
    shared_socket_templates()
        .iter()
        .flat_map(Template::instantiate)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_build_and_are_large_enough() {
        let templates = templates();
        assert!(templates.len() >= 40, "{} templates", templates.len());
        let table = table();
        let shared = shared_socket_table();
        assert!(table.iter().all(|s| s.layout == Layout::SocketPerGroup));
        assert!(shared.iter().all(|s| s.layout == Layout::OneSocket));
        let mut names: Vec<&str> = table
            .iter()
            .chain(&shared)
            .map(|s| s.name.as_str())
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "sequence names are unique");
    }

    #[test]
    fn steps_parse_with_symbols_and_pins() {
        let seq = &t(
            "x",
            "x",
            &[
                "G block S2 @fs => EADDRNOTAVAIL",
                "H filter exclude S1 S3 => OK",
            ],
            &["G -", "H exclude S1 S3"],
        )
        .instantiate()[1];
        assert_eq!(seq.name, "x/v4/fs");
        assert_eq!(seq.group_addr("G"), v4(232, 1, 1, 1));
        assert_eq!(
            seq.steps[0].request,
            Request::BlockSource {
                source: v4(10, 77, 1, 2)
            }
        );
        assert_eq!(seq.steps[0].set, OptionSet::FamilySpecific);
        assert_eq!(seq.steps[0].expect, Expect::Errno("EADDRNOTAVAIL"));
        assert_eq!(
            seq.steps[1].request,
            Request::SetFilter {
                mode: Mode::Exclude,
                sources: vec![v4(10, 77, 1, 1), v4(10, 77, 1, 3)]
            }
        );
        let v6seq =
            &t("y", "y", &["G join-source S1 @pi => OK"], &["G include S1"]).instantiate()[1];
        assert_eq!(v6seq.name, "y/v6/mixed");
        assert_eq!(
            v6seq.steps[0].request,
            Request::JoinSourceGroup {
                source: "fd77:1::1".parse().unwrap()
            }
        );
        assert_eq!(v6seq.group_addr("G"), "ff3e::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn symbols_resolve_per_family() {
        assert_eq!(
            source_symbol("X", Family::V6).unwrap(),
            "::ffff:10.77.1.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            group_symbol("Y", Family::V6).unwrap(),
            "::ffff:232.1.1.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            group_symbol("G7", Family::V6).unwrap(),
            "ff3e::2:7".parse::<IpAddr>().unwrap()
        );
        assert!(source_symbol("B", Family::V6).is_err());
        assert!(group_symbol("Q", Family::V4).is_err());
    }

    #[test]
    fn kernel_accepted_invalid_steps_must_come_last() {
        let bad = t(
            "bad",
            "bad",
            &["G block M => invalid/OK", "G join => OK"],
            &["G exclude"],
        );
        let err = bad
            .build(Family::V4, OptionSet::ProtocolIndependent, "bad".into())
            .unwrap_err();
        assert!(err.contains("must come last"), "{err}");
    }

    #[test]
    fn outcomes_check_against_expectations() {
        let seq = &t(
            "z",
            "z",
            &["G join => OK", "G join => EADDRINUSE"],
            &["G exclude"],
        )
        .instantiate()[0];
        let good = SequenceOutcome {
            steps: vec![StepOutcome::Ok, StepOutcome::Errno("EADDRINUSE")],
            filters: [(
                "G".to_string(),
                Filter::Joined {
                    mode: Mode::Exclude,
                    sources: vec![],
                },
            )]
            .into(),
        };
        assert_eq!(good.check(seq), Ok(()));
        let mut bad = good.clone();
        bad.steps[1] = StepOutcome::Ok;
        bad.filters.insert("G".into(), Filter::NotJoined);
        let err = bad.check(seq).unwrap_err();
        assert!(err.contains("step 2"), "{err}");
        assert!(err.contains("expected EXCLUDE {}, got not joined"), "{err}");
    }
}
