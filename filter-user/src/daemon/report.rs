//! What the daemon reports back: plain data that the controller returns and the wire
//! protocol carries as it is (each is the body of one [`Reply`](super::protocol::Reply)).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{
    datapath::AttachMode,
    policy::{GroupFilter, Mode, mode_name},
    sockopt::ip_of,
};

/// What a client holds for a group, as read back from its socket, or what an interface
/// enforces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterView {
    pub mode: Mode,
    pub sources: Vec<IpAddr>,
}

impl From<&GroupFilter> for FilterView {
    fn from(filter: &GroupFilter) -> Self {
        Self {
            mode: filter.mode,
            sources: filter.sources.iter().map(ip_of).collect(),
        }
    }
}

/// `EXCLUDE {10.0.0.5, 10.0.0.6}`.
impl std::fmt::Display for FilterView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sources: Vec<String> = self.sources.iter().map(ToString::to_string).collect();
        write!(f, "{} {{{}}}", mode_name(self.mode), sources.join(", "))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterView {
    pub packets: u64,
    pub bytes: u64,
}

impl From<msfilter_common::Counter> for CounterView {
    fn from(c: msfilter_common::Counter) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

/// A client's filter for a group (as the kernel holds it), and the interface's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterReport {
    pub iface: String,
    pub group: IpAddr,
    /// This client's socket filter, as the kernel reports it.
    pub client: Option<FilterView>,
    /// The interface-level filter XDP enforces (merge of all clients).
    pub interface: Option<FilterView>,
}

/// One enforced group filter with its counters. A group with more sources than fit a page
/// continues on the next page in an entry with `continued` set, holding the next sources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub iface: String,
    pub ifindex: u32,
    pub group: IpAddr,
    pub mode: Mode,
    pub sources: Vec<SourceEntry>,
    pub passed: CounterView,
    pub dropped: CounterView,
    /// Registered clients that are members.
    pub members: u32,
    /// This entry continues the same group from the previous page (more sources).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continued: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEntry {
    pub source: IpAddr,
    /// Frames matching this entry (dropped in EXCLUDE mode, passed in INCLUDE mode).
    pub matched: CounterView,
}

/// One page of an enumeration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub entries: Vec<GroupEntry>,
    /// Present when more entries follow: pass it to `ListNext`.
    pub cursor: Option<u64>,
    /// For the entries of this page on followed interfaces: the sockets whose merge XDP
    /// enforces there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followed: Vec<FollowedGroupView>,
}

/// A group on a followed interface: every member socket the follower knows, whether that
/// is every member (the kernel's count agrees), their merge and what XDP may enforce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowedGroupView {
    pub iface: String,
    pub ifindex: u32,
    pub group: IpAddr,
    /// "complete", "changing", "unknown-members (…)" or "inconsistent (…)".
    pub completeness: String,
    /// Every member is known and read: XDP enforces their merge (else every source passes).
    pub complete: bool,
    /// Memberships the kernel counts (`/proc/net/igmp*`).
    pub kernel_memberships: u32,
    /// The merge of the known members' filters.
    pub merged: FilterView,
    /// What XDP may enforce now: the merge when complete, else EXCLUDE {}.
    pub enforced: FilterView,
    pub sockets: Vec<FollowedSocketView>,
}

/// One member socket of a followed group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowedSocketView {
    pub pid: u32,
    /// The process's command (`/proc/PID/comm`).
    pub command: String,
    /// `SO_COOKIE`.
    pub cookie: u64,
    /// "ipv4" or "ipv6": the socket's family (an IPv6 socket may join IPv4 groups).
    pub family: String,
    pub filter: FilterView,
    /// "client": a socket of an msfilter client (named in `client`); "followed": any
    /// other socket on the interface.
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Read with nothing running on it, and unchanged around the kernel's count.
    pub trusted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    pub reason: String,
    pub verdict: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentView {
    pub iface: String,
    pub ifindex: u32,
    pub mode: AttachMode,
    /// The families whose unjoined groups XDP drops there ("ipv4", "ipv6").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_unjoined: Vec<String>,
    /// A VLAN sub-interface: the interface that carries the program enforcing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<CarrierView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    pub reasons: Vec<ReasonCount>,
    pub passed: CounterView,
    pub dropped: CounterView,
    pub clients: u32,
    pub groups: u32,
    pub source_entries: u64,
    pub attachments: Vec<AttachmentView>,
    /// Kernel memory of the maps, as the kernel reports it (bytes).
    pub map_memory: u64,
    /// Persisted memberships the kernel did not confirm at start-up: not enforced, kept in
    /// the persisted state and tried again at the next start (or replaced by the client's
    /// next request for that group).
    #[serde(default)]
    pub unrestored: Vec<UnrestoredView>,
    /// Follow mode, while an interface is followed: what the follower did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<FollowStatsView>,
}

/// The follower's counters (`msfilter stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowStatsView {
    /// The followed interfaces.
    pub interfaces: Vec<String>,
    /// Groups with a known member, and of them those proven complete.
    pub groups: u32,
    pub complete: u32,
    /// Sockets known (that used a membership option).
    pub sockets: u32,
    /// Events taken from the hooks, socket reads, full scans.
    pub events: u64,
    pub reads: u64,
    pub scans: u64,
    /// Sockets reported but found in no process (their groups pass every source).
    pub unreachable: u64,
    /// Events the ring buffer lost (each forces a rescan), options on sockets the hooks
    /// could not track.
    pub lost: u64,
    pub untracked: u64,
    /// Rechecks of every group, and groups judged (and option counters read) by the
    /// rechecks after events, which judge only the groups those events touched.
    #[serde(default)]
    pub full_rechecks: u64,
    #[serde(default)]
    pub group_checks: u64,
    #[serde(default)]
    pub seq_reads: u64,
}

/// A persisted membership that could not be restored as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnrestoredView {
    pub client: String,
    pub iface: String,
    pub group: IpAddr,
    /// Why: the kernel's refusal, a missing interface, or a filter read back differently.
    pub reason: String,
}

/// An interface taken over: the program attached (or a pinned link adopted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    pub iface: String,
    pub ifindex: u32,
    pub mode: AttachMode,
    pub program_id: u32,
    /// Taken over from a link pinned earlier rather than attached now.
    pub adopted: bool,
    /// Entries the interface has in the maps.
    pub groups: u32,
    pub sources: u64,
    /// XDP enforces the merge of every socket on the interface (`attach --follow`).
    #[serde(default)]
    pub followed: bool,
    /// What XDP drops of the groups nobody joined there (`attach --drop-unjoined`), in
    /// words; `None` when it drops none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_unjoined: Option<String>,
    /// A VLAN sub-interface: the interface whose XDP program enforces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<CarrierView>,
}

/// Where a VLAN sub-interface is enforced: by the XDP program on `iface`, for frames of VLAN
/// `vlan`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarrierView {
    pub iface: String,
    pub ifindex: u32,
    pub vlan: u16,
}

impl CarrierView {
    pub fn of(attachment: &crate::datapath::Attachment) -> Option<Self> {
        attachment.vlan.as_ref().map(|v| Self {
            iface: v.parent_name.clone(),
            ifindex: v.parent,
            vlan: v.vid,
        })
    }
}

impl std::fmt::Display for CarrierView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "XDP on {}, VLAN {}", self.iface, self.vlan)
    }
}

/// The program of an owned interface swapped through its link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    pub iface: String,
    pub old_program: u32,
    pub new_program: u32,
}

/// What `attach` did. As JSON (the CLI's `-j`), the report with `"result": "attached"` or
/// `"replaced"`; on the wire, each is a reply of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum AttachOutcome {
    /// The interface is now owned (attached, or a pinned link adopted).
    Attached(Attached),
    /// The program of an interface msfilter owned was swapped through its link.
    Replaced(Replaced),
}

/// An interface released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    pub iface: String,
    /// Map entries deleted (groups plus sources); 0 with `keep`.
    pub deleted: u64,
    pub kept: bool,
}

/// Who runs XDP on an interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerView {
    pub iface: String,
    pub ifindex: u32,
    /// "msfilter" (this daemon), "msfilter-kept" (released with --keep: msfilter's program
    /// enforces the last policy, frozen), "msfilter-vlans" (msfilter's program runs here for
    /// owned VLAN sub-interfaces only), "other" (another XDP program), or "none".
    pub owner: String,
    pub program_id: Option<u32>,
    pub program_name: Option<String>,
    /// "driver", "skb", "hardware" or "multiple".
    pub mode: Option<String>,
    /// Since when (seconds since the Unix epoch): when this daemon took the interface over,
    /// or when the other program was loaded.
    pub since: Option<u64>,
    /// The daemon's process id, when it owns the interface.
    pub pid: Option<u32>,
    /// Taken over from a pinned link left by an earlier run.
    pub adopted: bool,
    /// The program was replaced (`attach --replace`) since.
    pub replaced: bool,
    pub groups: u32,
    pub sources: u64,
    /// The interface is followed: XDP enforces the merge of every socket there.
    #[serde(default)]
    pub followed: bool,
    /// What XDP drops of the groups nobody joined there, in words (`None`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_unjoined: Option<String>,
    /// A VLAN sub-interface: the interface that carries the program enforcing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<CarrierView>,
}

/// The configuration file read again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// One line per change applied.
    pub changes: Vec<String>,
}
