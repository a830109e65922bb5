//! Follow mode in the daemon: on a followed interface XDP enforces the follower's merge over
//! every socket there (`crate::follow`), msfilter's own client sockets included, instead of
//! the merge of msfilter's clients.
//!
//! One writer per interface: the controller's request path (`Controller::sync`,
//! `attach_filled`) writes the clients' merge only on interfaces that are not followed; on a
//! followed one it writes nothing itself and the follower's changes are the only entries. A
//! client's request there is still applied as the real socket option on the client's own
//! socket; the follower sees that option like any other and the merge follows.
//!
//! The follower is started on the first followed interface and stopped after the last one
//! (its hooks cost every `setsockopt(2)` of the host). It runs on the controller thread; the
//! server's tokio loop watches its ring buffer (`AsyncFd` on a duplicate of its descriptor)
//! and its next deadline, published here through a `watch` channel, and sends
//! `Command::Follow` when either is due.
//!
//! After a restart the pinned entries of a followed interface keep enforcing until the
//! follower has proven each group again (every member known and read, the kernel's count
//! agreeing): a group's first, unproven "pass everything" is not written over the pinned
//! filter. A group still unproven after [`RESTART_HOLD`] gets what the follower says then.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::{AsFd as _, OwnedFd},
    sync::Arc,
    time::{Duration, Instant},
};

use msfilter_common::{
    GroupKey,
    unjoined::{DROP_IPV4, DROP_IPV6},
};

use super::{
    controller::{Controller, ControllerError, Ownership, Result},
    report::{FilterView, FollowStatsView, FollowedGroupView, FollowedSocketView},
};
use crate::{
    follow::{Completeness, FollowOptions, Follower, socket_cookie},
    iface,
    policy::GroupFilter,
    sockopt::{Family, ip_of},
};

/// How long the pinned entries of a followed interface wait, after a restart, for the
/// follower to prove their group again.
pub(super) const RESTART_HOLD: Duration = Duration::from_secs(2);

/// How often the drop-unjoined lease is renewed (it lasts `unjoined::LEASE_NS`).
const LEASE_RENEWAL: Duration = Duration::from_millis(250);

/// What this process wrote for drop-unjoined: each interface's family bits, and when the
/// lease was last renewed.
#[derive(Debug, Default)]
pub(super) struct Unjoined {
    flags: BTreeMap<u32, u32>,
    renewed: Option<Instant>,
    /// The bits each interface's `mc_forwarding` allows, and when they were read: read at
    /// most once per renewal, not at every follower run.
    allowed: BTreeMap<u32, (Instant, u32)>,
}

/// What the server's loop needs to drive the follower: its events' descriptor (a duplicate;
/// `generation` changes when another follower starts) and when it must run at the latest.
#[derive(Clone, Debug)]
pub(super) struct FollowDrive {
    pub(super) generation: u64,
    pub(super) fd: Arc<OwnedFd>,
    pub(super) deadline: Instant,
}

pub(super) type DriveSender = tokio::sync::watch::Sender<Option<FollowDrive>>;

/// The running follower.
pub(super) struct Following {
    pub(super) follower: Follower,
    fd: Arc<OwnedFd>,
    generation: u64,
}

/// Pinned entries waiting for their group to be proven again.
pub(super) struct Hold {
    until: Instant,
    keys: BTreeSet<GroupKey>,
}

/// Whether the follower has proven `key`: every member known and read, the kernel agreeing,
/// its merge enforced.
fn proven(follower: &Follower, key: &GroupKey) -> bool {
    follower
        .group(key)
        .is_some_and(|g| g.completeness.is_complete() && g.enforced == g.merged)
}

fn completeness_name(c: Completeness) -> String {
    match c {
        Completeness::Complete => "complete".into(),
        Completeness::Changing => "changing".into(),
        Completeness::UnknownMembers { users, known } => {
            format!("unknown-members ({users} in the kernel, {known} known)")
        }
        Completeness::Inconsistent { users, known } => {
            format!("inconsistent ({users} in the kernel, {known} known)")
        }
    }
}

impl Controller {
    /// Whether the follower writes the entries of `ifindex` (it is followed, or is to be and
    /// the follower could not start: then nothing writes them).
    pub(super) fn follows(&self, ifindex: u32) -> bool {
        if let Some(f) = &self.follow
            && f.follower.interfaces().contains(&ifindex)
        {
            return true;
        }
        !self.followed.is_empty()
            && iface::name_of(ifindex).is_some_and(|n| self.followed.contains(&n))
    }

    /// Whether the follower follows `ifindex` now.
    pub(super) fn follows_now(&self, ifindex: u32) -> bool {
        self.follow
            .as_ref()
            .is_some_and(|f| f.follower.interfaces().contains(&ifindex))
    }

    /// Follow `ifindex` (start the follower if it is the first), and scan it at once.
    pub(super) fn start_following(&mut self, ifindex: u32) -> Result<()> {
        match &mut self.follow {
            Some(f) => {
                f.follower
                    .follow(ifindex)
                    .map_err(ControllerError::Follow)?;
                if let Err(e) = f.follower.process() {
                    log::error!("follow: {e}");
                }
            }
            None => {
                crate::doctor::capabilities::check_follow()
                    .map_err(ControllerError::FollowCapabilities)?;
                let options = FollowOptions {
                    interfaces: [ifindex].into(),
                    gate_pin: self.datapath.gate_pin(),
                    ..FollowOptions::default()
                };
                let follower = Follower::start(options).map_err(ControllerError::Follow)?;
                let fd = follower.events_fd().try_clone_to_owned().map_err(|e| {
                    ControllerError::Follow(crate::follow::FollowError::Io {
                        what: "duplicating the follower's event descriptor".into(),
                        source: e,
                    })
                })?;
                self.follow_generation += 1;
                log::info!("follow: hooks attached, following interface {ifindex}");
                self.follow = Some(Following {
                    follower,
                    fd: Arc::new(fd),
                    generation: self.follow_generation,
                });
            }
        }
        Ok(())
    }

    /// Stop following `ifindex`; the follower stops after the last interface.
    pub(super) fn stop_following(&mut self, ifindex: u32) {
        if let Some(f) = &mut self.follow {
            f.follower.unfollow(ifindex);
            if f.follower.interfaces().is_empty() {
                log::info!("follow: no interface followed any more; hooks detached");
                self.follow = None;
            }
        }
        if let Some(hold) = &mut self.hold {
            hold.keys.retain(|k| k.ifindex != ifindex);
        }
        self.sync_unjoined();
        self.publish_follow();
    }

    /// What the maps must hold for followed interface `ifindex` (entries of other groups
    /// deleted), for filling it before the program is attached.
    pub(super) fn follow_desired(&self, ifindex: u32) -> Vec<(GroupKey, Option<GroupFilter>)> {
        let mut desired: Vec<(GroupKey, Option<GroupFilter>)> = match &self.follow {
            Some(f) => f
                .follower
                .desired()
                .into_iter()
                .filter(|(k, _)| k.ifindex == ifindex)
                .collect(),
            None => Vec::new(),
        };
        let wanted: BTreeSet<GroupKey> = desired.iter().map(|(k, _)| *k).collect();
        desired.extend(
            self.datapath
                .installed()
                .keys()
                .filter(|k| k.ifindex == ifindex && !wanted.contains(k))
                .map(|k| (*k, None)),
        );
        desired
    }

    /// Keep the pinned entries of the followed interfaces until their groups are proven
    /// (start-up).
    pub(super) fn hold_pinned(&mut self) {
        let Some(f) = &self.follow else { return };
        let keys: BTreeSet<GroupKey> = self
            .datapath
            .installed()
            .keys()
            .filter(|k| f.follower.interfaces().contains(&k.ifindex))
            .copied()
            .collect();
        if !keys.is_empty() {
            log::info!(
                "follow: {} pinned groups keep enforcing until proven again (at most {:?})",
                keys.len(),
                RESTART_HOLD
            );
            self.hold = Some(Hold {
                until: Instant::now() + RESTART_HOLD,
                keys,
            });
        }
    }

    /// Run the follower (events, deadlines), write what changed on the followed interfaces,
    /// and publish the next deadline.
    pub fn follow_tick(&mut self) {
        if let Some(f) = &mut self.follow
            && let Err(e) = f.follower.process()
        {
            log::error!("follow: {e}");
        }
        self.apply_follow_changes();
        self.publish_follow();
    }

    /// Write the follower's changes to the maps of owned interfaces (never over a kept
    /// interface's frozen entries; an interface being attached is filled from
    /// [`Controller::follow_desired`]), nor, during the restart hold, an unproven group over
    /// its pinned entry.
    pub(super) fn apply_follow_changes(&mut self) {
        self.write_follow_changes();
        self.sync_unjoined();
    }

    fn write_follow_changes(&mut self) {
        let Some(f) = &mut self.follow else { return };
        let changes = f.follower.take_changes();
        let now = Instant::now();
        let mut writes = Vec::new();
        let holding = self.hold.as_ref().is_some_and(|h| now < h.until);
        for (key, want) in changes {
            if !f.follower.interfaces().contains(&key.ifindex) {
                continue;
            }
            if let Some(hold) = &mut self.hold
                && hold.keys.contains(&key)
            {
                if holding && want.is_some() && !proven(&f.follower, &key) {
                    continue;
                }
                hold.keys.remove(&key);
            }
            writes.push((key, want));
        }
        if let Some(hold) = self.hold.take_if(|h| now >= h.until || h.keys.is_empty()) {
            for key in hold.keys {
                let want = f.follower.enforced(&key).cloned();
                log::info!(
                    "follow: {} on interface {} not proven within {:?}: {}",
                    ip_of(&key.group),
                    key.ifindex,
                    RESTART_HOLD,
                    want.as_ref()
                        .map_or_else(|| "not followed".to_string(), ToString::to_string)
                );
                writes.push((key, want));
            }
        }
        let writes: Vec<_> = writes
            .into_iter()
            .filter(|(k, _)| self.ownership(k.ifindex) == Ownership::Owned)
            .collect();
        if writes.is_empty() {
            return;
        }
        if let Err(e) = self.datapath.set_filters(writes) {
            log::error!("follow: writing the followed filters: {e}");
        }
    }

    /// Make the drop-unjoined map and gate match: every followed, owned interface named in
    /// `drop_unjoined` drops the families it does not forward multicast for, once the
    /// follower keeps its joined groups in the maps; the gate is settled up to the
    /// follower's count and the lease renewed.
    pub(super) fn sync_unjoined(&mut self) {
        if self.drop_unjoined.is_empty()
            && self.unjoined.flags.is_empty()
            && self.unjoined.renewed.is_none()
        {
            return;
        }
        let now = Instant::now();
        let mut want: BTreeMap<u32, u32> = BTreeMap::new();
        if let Some(f) = &self.follow {
            for &ifindex in f.follower.interfaces() {
                let Some(name) = iface::name_of(ifindex) else {
                    continue;
                };
                if !self.drop_unjoined.contains(&name)
                    || self.ownership(ifindex) != Ownership::Owned
                {
                    continue;
                }
                let bits = match self.unjoined.allowed.get(&ifindex) {
                    Some((at, bits)) if now < *at + LEASE_RENEWAL => *bits,
                    _ => {
                        let forwarding = iface::forwarding::mc_forwarding(&name);
                        let mut bits = 0;
                        if !forwarding.ipv4 {
                            bits |= DROP_IPV4;
                        }
                        if !forwarding.ipv6 {
                            bits |= DROP_IPV6;
                        }
                        self.unjoined.allowed.insert(ifindex, (now, bits));
                        bits
                    }
                };
                want.insert(ifindex, bits);
            }
        }
        self.unjoined.allowed.retain(|i, _| want.contains_key(i));
        // The follower keeps the joined groups of these interfaces in the maps; an
        // interface that starts dropping gets them written before its bits.
        let mut newly = false;
        if let Some(f) = &mut self.follow {
            for &ifindex in f.follower.interfaces().clone().iter() {
                let on = want.get(&ifindex).is_some_and(|b| *b != 0);
                let changed = f.follower.keep_joined_open(ifindex, on);
                newly |= on && (changed || !self.unjoined.flags.contains_key(&ifindex));
            }
            if newly && let Err(e) = f.follower.process() {
                log::error!("follow: {e}");
            }
        }
        if newly {
            self.write_follow_changes();
        }
        let known: BTreeSet<u32> = self
            .unjoined
            .flags
            .keys()
            .chain(want.keys())
            .copied()
            .collect();
        for ifindex in known {
            let bits = want.get(&ifindex).copied().unwrap_or(0);
            if self.unjoined.flags.get(&ifindex).copied().unwrap_or(0) == bits {
                continue;
            }
            match self.datapath.set_unjoined(ifindex, bits) {
                Ok(()) => {
                    log::info!(
                        "drop-unjoined on {}: {}",
                        iface::label(ifindex),
                        unjoined_label(bits)
                    );
                    if bits == 0 {
                        self.unjoined.flags.remove(&ifindex);
                    } else {
                        self.unjoined.flags.insert(ifindex, bits);
                    }
                }
                Err(e) => log::error!("drop-unjoined: {e}"),
            }
        }
        if self.unjoined.flags.is_empty() {
            if self.unjoined.renewed.take().is_some()
                && let Err(e) = self.datapath.open_gate()
            {
                log::error!("drop-unjoined: {e}");
            }
            return;
        }
        let settled = self.follow.as_ref().and_then(|f| f.follower.settled_gate());
        if let Some(settled) = settled {
            match self.datapath.settle_gate(settled) {
                Ok(()) => self.unjoined.renewed = Some(Instant::now()),
                Err(e) => log::error!("drop-unjoined: {e}"),
            }
        }
    }

    /// Take over what an earlier run left in the (pinned) drop-unjoined maps, with the gate
    /// opened: no group is dropped as unjoined before this run's follower has found every
    /// socket, and [`Controller::sync_unjoined`] then removes what is no longer wanted.
    pub(super) fn adopt_unjoined(&mut self) {
        if let Err(e) = self.datapath.open_gate() {
            log::error!("drop-unjoined: {e}");
        }
        match self.datapath.unjoined() {
            Ok(flags) => self.unjoined.flags = flags,
            Err(e) => log::error!("drop-unjoined: {e}"),
        }
    }

    /// The drop-unjoined bits written for `ifindex` (0: it drops nothing unjoined).
    pub(super) fn unjoined_bits(&self, ifindex: u32) -> u32 {
        self.unjoined.flags.get(&ifindex).copied().unwrap_or(0)
    }

    /// Tell the server's loop what to watch.
    pub(super) fn publish_follow(&self) {
        let Some(signal) = &self.follow_signal else {
            return;
        };
        let drive = self.follow.as_ref().map(|f| {
            let mut deadline = f.follower.next_deadline();
            if let Some(hold) = &self.hold {
                deadline = deadline.min(hold.until);
            }
            if !self.unjoined.flags.is_empty() {
                let renew = self
                    .unjoined
                    .renewed
                    .map_or_else(Instant::now, |r| r + LEASE_RENEWAL);
                deadline = deadline.min(renew);
            }
            FollowDrive {
                generation: f.generation,
                fd: Arc::clone(&f.fd),
                deadline,
            }
        });
        signal.send_replace(drive);
    }

    /// The follower's counters, while it runs.
    pub(super) fn follow_stats(&self) -> Option<FollowStatsView> {
        let f = &self.follow.as_ref()?.follower;
        let stats = f.stats();
        Some(FollowStatsView {
            interfaces: f.interfaces().iter().map(|i| iface::label(*i)).collect(),
            groups: f.groups().count() as u32,
            complete: f.groups().filter(|g| g.completeness.is_complete()).count() as u32,
            sockets: f.sockets().count() as u32,
            events: stats.events,
            reads: stats.reads,
            scans: stats.scans,
            unreachable: stats.unreachable,
            lost: stats.hooks.lost,
            untracked: stats.hooks.untracked,
            full_rechecks: stats.full_rechecks,
            group_checks: stats.group_checks,
            seq_reads: stats.seq_reads,
        })
    }

    /// The followed groups among `keys`, with the sockets that contribute (for `list`).
    pub(super) fn followed_views(&self, keys: &[GroupKey]) -> Vec<FollowedGroupView> {
        let Some(f) = &self.follow else {
            return Vec::new();
        };
        // msfilter's own client sockets, by cookie.
        let mut own = std::collections::BTreeMap::new();
        for client in self.clients.values() {
            for socket in client.sockets.values() {
                if let Ok(cookie) = socket_cookie(socket.as_fd()) {
                    own.insert(cookie, client.name.clone());
                }
            }
        }
        keys.iter()
            .filter_map(|key| f.follower.group(key))
            .map(|g| FollowedGroupView {
                iface: iface::label(g.key.ifindex),
                ifindex: g.key.ifindex,
                group: ip_of(&g.key.group),
                completeness: completeness_name(g.completeness),
                complete: g.completeness.is_complete(),
                kernel_memberships: g.users,
                merged: FilterView::from(&g.merged),
                enforced: FilterView::from(&g.enforced),
                sockets: g
                    .members
                    .iter()
                    .map(|m| {
                        let client = own.get(&m.cookie).cloned();
                        FollowedSocketView {
                            pid: m.pid,
                            command: m.comm.clone(),
                            cookie: m.cookie,
                            family: match m.family {
                                Family::V4 => "ipv4".into(),
                                Family::V6 => "ipv6".into(),
                            },
                            filter: FilterView::from(&m.filter),
                            origin: if client.is_some() {
                                "client".into()
                            } else {
                                "followed".into()
                            },
                            client,
                            trusted: m.trusted,
                        }
                    })
                    .collect(),
            })
            .collect()
    }
}

/// The families an interface drops unjoined groups of, by name ("ipv4", "ipv6").
pub(super) fn unjoined_families(bits: u32) -> Vec<String> {
    [(DROP_IPV4, "ipv4"), (DROP_IPV6, "ipv6")]
        .into_iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| name.to_string())
        .collect()
}

/// The families an interface drops unjoined groups of, in words.
pub(super) fn unjoined_label(bits: u32) -> &'static str {
    match (bits & DROP_IPV4 != 0, bits & DROP_IPV6 != 0) {
        (true, true) => "IPv4 and IPv6 unjoined groups dropped",
        (true, false) => "IPv4 unjoined groups dropped (IPv6 forwards multicast)",
        (false, true) => "IPv6 unjoined groups dropped (IPv4 forwards multicast)",
        (false, false) => "nothing dropped (it forwards multicast)",
    }
}
