//! The follower: hooks' events in, sockets read back, groups judged, XDP filters out.
//! The design and its guarantees are in the module documentation ([`super`]).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    os::fd::{AsFd as _, BorrowedFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use msfilter_common::{
    GroupKey,
    follow::{EVENT_RELEASE, EVENT_SETSOCKOPT, Event, Target},
    unjoined::is_link_scope,
};

use super::{
    FollowError,
    hooks::{HookStats, Hooks},
    peek::{self, Found, Processes},
    procfs::{self, MembershipCounts, ThreadState},
    table::{self, FollowedGroup, SocketRecord, Sockets},
};
use crate::policy::GroupFilter;

/// How the follower runs.
#[derive(Clone, Debug)]
pub struct FollowOptions {
    /// The followed interfaces (indexes in the follower's network namespace).
    pub interfaces: BTreeSet<u32>,
    /// The cgroup v2 directory to attach the hooks to; `None`: the root of the first
    /// `cgroup2` mount (every socket of the host).
    pub cgroup: Option<PathBuf>,
    /// Wait this long after attaching the hooks before the first scan, so that options
    /// that began before the hooks existed (and so were not reported) have finished.
    pub startup_grace: Duration,
    /// A thread seen only running (never blocked) this long after its option began is
    /// taken to have finished it: the kernel handles a membership option in microseconds,
    /// and waits (for the RTNL lock) asleep, which shows.
    pub settle_cap: Duration,
    /// After a group's kernel count disagreed with its known members (or the group is
    /// new), it must agree this long before its merge is enforced.
    pub promote_delay: Duration,
    /// Re-count every group this often even without events (kernel-internal memberships
    /// change without any socket option).
    pub recheck_interval: Duration,
    /// How often, at most, to look again at a thread that has not finished its option (the
    /// first looks come sooner: 20 µs, doubling up to this).
    pub poll_interval: Duration,
    /// The drop-unjoined gate pinned by the datapath (`msfilter_common::unjoined`), for the
    /// hooks to count options into; `None`: a gate of the hooks' own, seen by no XDP program.
    pub gate_pin: Option<PathBuf>,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            interfaces: BTreeSet::new(),
            cgroup: None,
            startup_grace: Duration::from_millis(10),
            settle_cap: Duration::from_millis(5),
            promote_delay: Duration::from_millis(2),
            recheck_interval: Duration::from_secs(1),
            poll_interval: Duration::from_millis(1),
            gate_pin: None,
        }
    }
}

/// An option that began on a socket and is not known to have finished.
#[derive(Clone, Debug)]
struct Call {
    tgid: u32,
    tid: u32,
    level: i32,
    optname: i32,
    ktime: u64,
    /// When the follower first saw it, and since when the thread was only ever seen running.
    seen: Instant,
    running_since: Option<Instant>,
    /// When to look at the thread again.
    next_look: Instant,
    looks: u32,
}

/// A socket that must be read again.
#[derive(Clone, Debug, Default)]
struct Pending {
    calls: Vec<Call>,
    /// The highest option count reported for it; `None` after events were lost (the count
    /// reported last need not be the latest).
    seen_seq: Option<u64>,
    /// Groups its options named (`ifindex` 0: every followed interface).
    groups: BTreeSet<GroupKey>,
    /// An option whose group could not be decoded: read every group the kernel lists.
    all_groups: bool,
    pid_hint: Option<u32>,
}

/// How a read of a socket went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Settled,
    Moved,
    Untrusted,
}

/// Counters of what the follower did (for logs and `msfilter stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FollowStats {
    pub hooks: HookStats,
    pub events: u64,
    pub reads: u64,
    pub scans: u64,
    pub unreachable: u64,
    /// Rechecks of every group (each `recheck_interval`, after scans, lost events, an
    /// interface unfollowed).
    pub full_rechecks: u64,
    /// Groups judged by the incremental rechecks in between (those a socket's option,
    /// read or release touched, and those waiting out their promotion), and the option
    /// counters those rechecks read (each member of those groups twice). Full rechecks
    /// are not counted here.
    pub group_checks: u64,
    pub seq_reads: u64,
}

/// Follows every socket of one network namespace on the followed interfaces.
pub struct Follower {
    hooks: Hooks,
    procs: Processes,
    counts: MembershipCounts,
    netns_cookie: u64,
    options: FollowOptions,
    own_pid: u32,
    sockets: Sockets,
    pending: BTreeMap<u64, Pending>,
    /// Processes that changed a socket the hooks could not name (or that was not found
    /// where expected): their sockets are looked at again.
    rescan_pids: BTreeSet<u32>,
    /// Ids reported but found in no process (descriptors passed away, private descriptor
    /// tables): unknown members until a full scan finds them.
    unreachable: BTreeSet<u64>,
    /// Latest hook time per thread: a thread that began another option finished the
    /// earlier ones.
    tid_latest: HashMap<u32, u64>,
    hook_stats: HookStats,
    rescan_at: Option<Instant>,
    groups: BTreeMap<GroupKey, FollowedGroup>,
    agreed_since: BTreeMap<GroupKey, Instant>,
    /// Complete groups whose merge waits out `promote_delay` (judged again at every
    /// `process` until it is enforced).
    promoting: BTreeSet<GroupKey>,
    enforced: BTreeMap<GroupKey, GroupFilter>,
    changes: BTreeMap<GroupKey, Option<GroupFilter>>,
    /// The last full recheck; `None`: one is due.
    last_check: Option<Instant>,
    stats: FollowStats,
    /// Interfaces where every group the kernel lists is kept open (drop-unjoined: what is
    /// not in the maps is dropped).
    open_joined: BTreeSet<u32>,
    /// The hooks' option count that everything the follower holds reflects, once nothing is
    /// in flight (`None` while something is).
    settled_gate: Option<u64>,
}

fn gettid() -> u32 {
    // SAFETY: plain system call without arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

impl Follower {
    /// Attach the hooks, wait out [`FollowOptions::startup_grace`], find every socket that
    /// already exists and read it, and judge every group. Must be called on a thread in
    /// the network namespace to follow; afterwards any thread may use the follower.
    pub fn start(options: FollowOptions) -> Result<Self, FollowError> {
        for &ifindex in &options.interfaces {
            check_interface(ifindex)?;
        }
        let netns_cookie = peek::own_netns_cookie().map_err(|e| FollowError::Io {
            what: "reading this network namespace's cookie".into(),
            source: e,
        })?;
        let counts = MembershipCounts::open().map_err(|e| FollowError::Io {
            what: "opening /proc/net/igmp and /proc/net/igmp6".into(),
            source: e,
        })?;
        let cgroup = match &options.cgroup {
            Some(c) => c.clone(),
            None => procfs::cgroup2_mount().map_err(|e| FollowError::Io {
                what: "finding the cgroup v2 hierarchy".into(),
                source: e,
            })?,
        };
        let hooks = Hooks::attach(&cgroup, netns_cookie, options.gate_pin.as_deref())?;
        let grace = options.startup_grace;
        let mut follower = Self {
            hook_stats: hooks.stats()?,
            hooks,
            procs: Processes::new(netns_cookie),
            counts,
            netns_cookie,
            options,
            own_pid: std::process::id(),
            sockets: Sockets::default(),
            pending: BTreeMap::new(),
            rescan_pids: BTreeSet::new(),
            unreachable: BTreeSet::new(),
            tid_latest: HashMap::new(),
            rescan_at: Some(Instant::now() + grace),
            groups: BTreeMap::new(),
            agreed_since: BTreeMap::new(),
            promoting: BTreeSet::new(),
            enforced: BTreeMap::new(),
            changes: BTreeMap::new(),
            last_check: None,
            stats: FollowStats::default(),
            open_joined: BTreeSet::new(),
            settled_gate: None,
        };
        std::thread::sleep(grace);
        follower.process()?;
        Ok(follower)
    }

    /// The followed network namespace's cookie (`SO_NETNS_COOKIE`).
    pub fn netns_cookie(&self) -> u64 {
        self.netns_cookie
    }

    /// The followed interfaces.
    pub fn interfaces(&self) -> &BTreeSet<u32> {
        &self.options.interfaces
    }

    /// Follow one more interface (its groups are found by a scan at the next
    /// [`Follower::process`]). Must be called on a thread in the followed namespace (the
    /// index is checked there).
    pub fn follow(&mut self, ifindex: u32) -> Result<(), FollowError> {
        check_interface(ifindex)?;
        if self.options.interfaces.insert(ifindex) {
            self.rescan_at = Some(Instant::now());
        }
        Ok(())
    }

    /// Stop following an interface: its groups leave the view (and come back from
    /// [`Follower::take_changes`] as `None`).
    pub fn unfollow(&mut self, ifindex: u32) {
        if self.options.interfaces.remove(&ifindex) {
            self.sockets.retain_memberships(|k| k.ifindex != ifindex);
            self.last_check = None;
        }
    }

    /// The hooks' ring buffer: readable when events wait (register it with epoll or tokio's
    /// `AsyncFd`, then call [`Follower::process`]).
    pub fn events_fd(&self) -> BorrowedFd<'_> {
        self.hooks.events_fd()
    }

    /// When [`Follower::process`] must run again even without events.
    pub fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut at = self
            .last_check
            .map_or(now, |t| t + self.options.recheck_interval);
        if let Some(r) = self.rescan_at {
            at = at.min(r);
        }
        if !self.rescan_pids.is_empty() {
            at = now;
        }
        for pending in self.pending.values() {
            match pending.calls.iter().map(|c| c.next_look).min() {
                Some(look) => at = at.min(look),
                // Read, but not settled: look again soon.
                None => at = at.min(now + self.options.poll_interval),
            }
        }
        for key in &self.promoting {
            if let Some(since) = self.agreed_since.get(key) {
                let due = *since + self.options.promote_delay;
                if due > now {
                    at = at.min(due);
                }
            }
        }
        at
    }

    /// Block until events wait or the next deadline passes (at most `limit`), then
    /// [`Follower::process`]. For callers without an event loop.
    pub fn wait_and_process(&mut self, limit: Duration) -> Result<(), FollowError> {
        let timeout = self
            .next_deadline()
            .saturating_duration_since(Instant::now())
            .min(limit);
        self.hooks.wait(timeout)?;
        self.process()
    }

    /// Take the events, settle and read the sockets they name, rescan when events were
    /// lost, and judge again the groups that changed: those the events, reads and releases
    /// touched and those waiting out their promotion, or every group when a full recheck
    /// is due. Cheap when nothing happened.
    pub fn process(&mut self) -> Result<(), FollowError> {
        // Read before the events: every option this count covers has its event out.
        let begun = self.hooks.gate_begun()?;
        let now = Instant::now();
        self.check_hook_stats(now)?;
        self.drain();
        if self.rescan_at.is_some_and(|at| at <= now) {
            self.rescan_at = None;
            self.scan_all()?;
        }
        self.resolve_calls();
        self.read_settled()?;
        self.rescan_processes()?;
        // An option whose group could not be decoded may have changed any group: while one
        // is in flight, every group is counted again at each call.
        let full = self
            .last_check
            .is_none_or(|t| now >= t + self.options.recheck_interval)
            || self.pending.values().any(|p| p.all_groups);
        if full {
            self.recheck_all()?;
            self.prune_processes();
        } else {
            let mut keys = self.sockets.take_touched();
            keys.extend(self.promoting.iter().copied());
            if !keys.is_empty() {
                self.stats.group_checks += keys.len() as u64;
                let members = self.recheck(keys).inspect_err(|_| {
                    // The touched groups are then judged by the next (full) recheck.
                    self.last_check = None;
                })?;
                self.stats.seq_reads += 2 * members as u64;
            }
        }
        if self.pending.is_empty() {
            self.tid_latest.clear();
        }
        let quiet =
            self.pending.is_empty() && self.rescan_pids.is_empty() && self.rescan_at.is_none();
        self.settled_gate = quiet.then_some(begun);
        Ok(())
    }

    /// Keep every group the kernel lists on `ifindex` in the maps (a group without known
    /// members as "pass everything"), so that dropping what is not there drops only groups
    /// nobody joined. Link-scope groups are left out: the XDP program never drops them.
    /// Returns whether this changed anything; then [`Follower::settled_gate`] is `None`
    /// until the next [`Follower::process`] has judged the groups again.
    pub fn keep_joined_open(&mut self, ifindex: u32, on: bool) -> bool {
        let changed = if on {
            self.open_joined.insert(ifindex)
        } else {
            self.open_joined.remove(&ifindex)
        };
        if changed {
            self.last_check = None;
            self.settled_gate = None;
        }
        changed
    }

    /// The hooks' option count that the follower's changes so far reflect, when no option
    /// is in flight: once those changes are written, the XDP program may drop unjoined
    /// groups up to this count (`Datapath::settle_gate`).
    pub fn settled_gate(&self) -> Option<u64> {
        self.settled_gate
    }

    /// What the follower enforces for `key` now (a followed group, or a joined group kept
    /// open), if anything.
    pub fn enforced(&self, key: &GroupKey) -> Option<&GroupFilter> {
        self.enforced.get(key)
    }

    /// Forget processes no followed socket lives in (their descriptors). With every full
    /// recheck: a process kept a little longer costs one descriptor, and a pid reused
    /// meanwhile is noticed at the first look (`ESRCH`).
    fn prune_processes(&mut self) {
        let mut live: BTreeSet<u32> = self.sockets.values().map(|r| r.pid).collect();
        live.extend(self.pending.values().filter_map(|p| p.pid_hint));
        live.extend(self.rescan_pids.iter().copied());
        self.procs.retain(|pid| live.contains(&pid));
    }

    /// Groups whose enforced filter changed since the last call: `Some` to write, `None`
    /// to stop managing. Feed them to `Datapath::set_filters`.
    pub fn take_changes(&mut self) -> Vec<(GroupKey, Option<GroupFilter>)> {
        std::mem::take(&mut self.changes).into_iter().collect()
    }

    /// What XDP may enforce for every followed group now (for a full reconcile).
    pub fn desired(&self) -> Vec<(GroupKey, Option<GroupFilter>)> {
        self.enforced
            .iter()
            .map(|(k, f)| (*k, Some(f.clone())))
            .collect()
    }

    /// Every followed group with at least one known member.
    pub fn groups(&self) -> impl Iterator<Item = &FollowedGroup> {
        self.groups.values()
    }

    pub fn group(&self, key: &GroupKey) -> Option<&FollowedGroup> {
        self.groups.get(key)
    }

    /// Every known socket of the namespace that used a membership option.
    pub fn sockets(&self) -> impl Iterator<Item = &SocketRecord> {
        self.sockets.values()
    }

    /// The socket with this cookie, if known.
    pub fn socket_by_cookie(&self, cookie: u64) -> Option<&SocketRecord> {
        self.sockets.values().find(|r| r.cookie == cookie)
    }

    /// Nothing left to do until the next event: no socket waits to be read, no scan is
    /// due, no complete group waits out its promotion delay.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.rescan_pids.is_empty()
            && self.rescan_at.is_none()
            && self.promoting.is_empty()
    }

    /// Whether the socket is known, read, and nothing is running on it.
    pub fn is_settled(&self, id: u64) -> bool {
        !self.pending.contains_key(&id)
            && self.sockets.get(id).is_some_and(|r| r.read_seq.is_some())
    }

    pub fn stats(&self) -> FollowStats {
        FollowStats {
            hooks: self.hook_stats,
            ..self.stats
        }
    }

    // -----------------------------------------------------------------------------------

    /// Lost events (or sockets the hooks could not track) mean some change may never be
    /// reported: schedule a full scan once options running now have finished.
    fn check_hook_stats(&mut self, now: Instant) -> Result<(), FollowError> {
        let stats = self.hooks.stats()?;
        if stats.lost > self.hook_stats.lost || stats.untracked > self.hook_stats.untracked {
            log::warn!(
                "follow: {} events lost, {} options on untracked sockets; rescanning",
                stats.lost - self.hook_stats.lost,
                stats.untracked - self.hook_stats.untracked
            );
            let at = now + self.options.settle_cap;
            self.rescan_at = Some(self.rescan_at.map_or(at, |r| r.min(at)));
            // Until then nothing is trusted, and no reported count is the latest.
            self.sockets.untrust_all();
            self.last_check = None;
            for pending in self.pending.values_mut() {
                pending.seen_seq = None;
            }
        }
        self.hook_stats = stats;
        Ok(())
    }

    fn drain(&mut self) {
        let mut events = Vec::new();
        self.hooks.drain(|e| events.push(e));
        self.stats.events += events.len() as u64;
        for event in events {
            match event.kind {
                EVENT_SETSOCKOPT => self.option_began(&event),
                EVENT_RELEASE => self.released(event.id),
                other => log::warn!("follow: event of unknown kind {other} ignored"),
            }
        }
    }

    fn option_began(&mut self, event: &Event) {
        let (tgid, tid) = (event.tgid(), event.tid());
        let latest = self.tid_latest.entry(tid).or_insert(0);
        *latest = (*latest).max(event.ktime_ns);
        if event.id == 0 {
            // The hooks could not name the socket: look at the whole process.
            self.rescan_pids.insert(tgid);
            return;
        }
        self.unreachable.remove(&event.id);
        // Its groups (those it holds, and the one the option names) are changing now.
        self.sockets.set_read_seq(event.id, None);
        self.sockets.touch_socket(event.id);
        if let Target::Group { group, ifindex } = event.target() {
            let mut named = BTreeSet::new();
            self.expand(GroupKey::new(ifindex.unwrap_or(0), group), &mut named);
            for key in named {
                self.sockets.touch(key);
            }
        }
        let pending = self.pending.entry(event.id).or_default();
        pending.seen_seq = Some(pending.seen_seq.unwrap_or(0).max(event.seq));
        pending.pid_hint = Some(tgid);
        pending.calls.push(Call {
            tgid,
            tid,
            level: event.level,
            optname: event.optname,
            ktime: event.ktime_ns,
            seen: Instant::now(),
            running_since: None,
            next_look: Instant::now(),
            looks: 0,
        });
        match event.target() {
            Target::Group { group, ifindex } => {
                pending
                    .groups
                    .insert(GroupKey::new(ifindex.unwrap_or(0), group));
            }
            Target::AddressForm | Target::Unknown => pending.all_groups = true,
        }
    }

    fn released(&mut self, id: u64) {
        self.sockets.remove(id);
        self.settled_pending(id);
        if self.unreachable.remove(&id) {
            // An unknown member left some group (which, the follower does not know): count
            // every group again now rather than at the next interval.
            self.last_check = None;
        }
    }

    /// Socket `id` is not pending any more: the groups its options named are not in
    /// flight (judged again).
    fn settled_pending(&mut self, id: u64) {
        if let Some(pending) = self.pending.remove(&id) {
            let mut named = BTreeSet::new();
            for key in pending.groups {
                self.expand(key, &mut named);
            }
            for key in named {
                self.sockets.touch(key);
            }
        }
    }

    /// Groups an option in flight named (on followed interfaces): those of every pending
    /// socket, known or not.
    fn in_flight(&self) -> BTreeSet<GroupKey> {
        let mut named = BTreeSet::new();
        for pending in self.pending.values() {
            for key in &pending.groups {
                self.expand(*key, &mut named);
            }
        }
        named
    }

    /// Drop the calls known to have finished.
    fn resolve_calls(&mut self) {
        let own_tid = gettid();
        let (own_pid, cap, most) = (
            self.own_pid,
            self.options.settle_cap,
            self.options.poll_interval,
        );
        let tid_latest = &self.tid_latest;
        let now = Instant::now();
        for pending in self.pending.values_mut() {
            pending.calls.retain_mut(|call| {
                let superseded = tid_latest.get(&call.tid).is_some_and(|&t| t > call.ktime);
                if call.next_look > now && !superseded {
                    return true;
                }
                if call_finished(call, tid_latest, own_pid, own_tid, cap) {
                    return false;
                }
                call.looks += 1;
                let wait = Duration::from_micros(20)
                    .saturating_mul(1 << call.looks.min(16))
                    .min(most);
                call.next_look = now + wait;
                true
            });
        }
    }

    /// Read every socket whose options have all finished.
    fn read_settled(&mut self) -> Result<(), FollowError> {
        let ready: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.calls.is_empty())
            .map(|(id, _)| *id)
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        // Only options whose bytes did not say which group need the kernel's list.
        let listed = if ready
            .iter()
            .any(|id| self.pending.get(id).is_some_and(|p| p.all_groups))
        {
            self.listed_groups()?
        } else {
            BTreeSet::new()
        };
        for id in ready {
            let Some(pending) = self.pending.get(&id).cloned() else {
                continue;
            };
            let known = self.sockets.get(id).map(|r| (r.pid, r.fd));
            let mut found = None;
            let mut pids: Vec<u32> = known.map(|(p, _)| p).into_iter().collect();
            pids.extend(pending.pid_hint.filter(|h| !pids.contains(h)));
            for pid in pids {
                let fd = known.filter(|(p, _)| *p == pid).map(|(_, fd)| fd);
                found = self.procs.find(&self.hooks, pid, id, fd).map(|f| (pid, f));
                if found.is_some() {
                    break;
                }
            }
            let Some((pid, found)) = found else {
                // Passed to another process, or in a descriptor table this process does
                // not see: an unknown member from now on.
                log::debug!("follow: socket {id:#x} not found; treated as unknown");
                self.sockets.remove(id);
                self.settled_pending(id);
                self.unreachable.insert(id);
                self.stats.unreachable += 1;
                continue;
            };
            let mut groups: BTreeSet<GroupKey> = self
                .sockets
                .get(id)
                .map(|r| r.memberships.keys().copied().collect())
                .unwrap_or_default();
            for key in &pending.groups {
                self.expand(*key, &mut groups);
            }
            if pending.all_groups {
                groups.extend(listed.iter().copied());
            }
            match self.read_into(id, pid, &found, &groups, pending.seen_seq) {
                Read::Settled => {
                    self.settled_pending(id);
                }
                // An option began during the read, or events beyond it wait: its event
                // (or theirs) brings it back.
                Read::Moved => {}
                Read::Untrusted => {
                    // Read as well as it can be, but not trusted (the hooks cannot count its
                    // options, or a group could not be read): its groups pass every source
                    // until its next option or scan.
                    log::warn!("follow: socket {id:#x} of pid {pid} cannot be trusted");
                    self.settled_pending(id);
                }
            }
        }
        Ok(())
    }

    /// A group an option named, on the interface it named or on every followed one.
    fn expand(&self, key: GroupKey, into: &mut BTreeSet<GroupKey>) {
        if key.ifindex == 0 {
            into.extend(
                self.options
                    .interfaces
                    .iter()
                    .map(|&i| GroupKey::new(i, key.group)),
            );
        } else if self.options.interfaces.contains(&key.ifindex) {
            into.insert(key);
        }
    }

    /// Groups the kernel lists on followed interfaces.
    fn listed_groups(&mut self) -> Result<BTreeSet<GroupKey>, FollowError> {
        let interfaces = &self.options.interfaces;
        Ok(
            read_counts(&mut self.counts, |k| interfaces.contains(&k.ifindex))?
                .into_keys()
                .collect(),
        )
    }

    /// Read `groups` of socket `id` (found in `pid`) and record what the kernel says. The
    /// read is settled when the option count did not move during it and (if `expect` is
    /// given) is the one the events reported, so every counted option had finished before
    /// it.
    fn read_into(
        &mut self,
        id: u64,
        pid: u32,
        found: &Found,
        groups: &BTreeSet<GroupKey>,
        expect: Option<u64>,
    ) -> Read {
        self.stats.reads += 1;
        let fd = found.peeked.fd.as_fd();
        let before = self.hooks.seq(id).map(|s| s.begun);
        let mut read = BTreeMap::new();
        let mut unreadable = false;
        for key in groups {
            match peek::read_filter(fd, found.facts.family(), key.ifindex, key.group) {
                Ok(Some(filter)) => {
                    read.insert(*key, Some(filter));
                }
                Ok(None) => {
                    read.insert(*key, None);
                }
                Err(e) => {
                    log::warn!(
                        "follow: reading socket {id:#x} of pid {pid} for {} on {}: {e}",
                        peek::ip(&key.group),
                        key.ifindex
                    );
                    unreadable = true;
                }
            }
        }
        let after = self.hooks.seq(id).map(|s| s.begun);
        let settled = !unreadable
            && before.is_some()
            && before == after
            && expect.is_none_or(|e| before == Some(e));
        let record = self.sockets.upsert(id, || SocketRecord {
            id,
            cookie: found.facts.cookie,
            pid,
            comm: procfs::comm(pid),
            family: found.facts.family(),
            fd: found.peeked.remote_fd,
            memberships: BTreeMap::new(),
            read_seq: None,
        });
        if record.pid != pid {
            record.pid = pid;
            record.comm = procfs::comm(pid);
        }
        record.fd = found.peeked.remote_fd;
        record.family = found.facts.family();
        record.cookie = found.facts.cookie;
        self.sockets.set_memberships(id, read);
        self.sockets
            .set_read_seq(id, if settled { before } else { None });
        // Read: whether it is still pending changes its groups' trust either way.
        self.sockets.touch_socket(id);
        if settled {
            Read::Settled
        } else if unreadable || before.is_none() {
            Read::Untrusted
        } else {
            Read::Moved
        }
    }

    /// Find and read every followed socket of every process (at start-up, after lost
    /// events, after following a new interface).
    fn scan_all(&mut self) -> Result<(), FollowError> {
        self.stats.scans += 1;
        // Every event so far has been drained; after lost events the counts they reported
        // are not the latest, and the reads below need not match them.
        for pending in self.pending.values_mut() {
            pending.seen_seq = None;
        }
        let listed = self.listed_groups()?;
        let pids = procfs::processes().map_err(|e| FollowError::Io {
            what: "listing /proc".into(),
            source: e,
        })?;
        let mut seen = BTreeSet::new();
        for pid in pids {
            self.scan_process(pid, &listed, &mut seen);
        }
        // Sockets no longer found anywhere: gone (their release may still be on its way)
        // or out of reach; either way not known members.
        let gone: Vec<u64> = self.sockets.ids().filter(|id| !seen.contains(id)).collect();
        for id in gone {
            self.sockets.remove(id);
        }
        self.unreachable.retain(|id| !seen.contains(id));
        self.last_check = None;
        Ok(())
    }

    /// Read every followed socket of one process, naming those without an id.
    fn scan_process(&mut self, pid: u32, listed: &BTreeSet<GroupKey>, seen: &mut BTreeSet<u64>) {
        let mut found = Vec::new();
        self.procs.each_socket(&self.hooks, pid, |f| found.push(f));
        for f in found {
            let id = match f.id {
                Some(id) => Some(id),
                // Not named yet: no option ran on it since the hooks exist. Name it only if
                // it holds a membership here (an option on it later names it anyway).
                None if !holds_any(&f, listed) => continue,
                None => self.hooks.track(f.peeked.fd.as_fd(), f.facts.cookie),
            };
            let Some(id) = id else {
                log::warn!("follow: the socket maps are full; a socket of pid {pid} is unknown");
                continue;
            };
            if let Some(inode) = peek::fstat_inode(f.peeked.fd.as_fd()) {
                self.procs.named(pid, inode, id);
            }
            if !seen.insert(id) {
                // The same socket in another descriptor (or process): read once.
                continue;
            }
            let mut groups = listed.clone();
            if let Some(r) = self.sockets.get(id) {
                groups.extend(r.memberships.keys().copied());
            }
            // Options reported for it and not yet finished keep it pending; the read
            // counts as settled only if nothing was reported beyond what it saw.
            let expect = self.pending.get(&id).and_then(|p| p.seen_seq);
            let read = self.read_into(id, pid, &f, &groups, expect);
            if read == Read::Settled && self.pending.get(&id).is_some_and(|p| p.calls.is_empty()) {
                self.settled_pending(id);
            }
        }
    }

    /// Look again at processes that changed a socket the follower could not place.
    fn rescan_processes(&mut self) -> Result<(), FollowError> {
        if self.rescan_pids.is_empty() {
            return Ok(());
        }
        let listed = self.listed_groups()?;
        let pids = std::mem::take(&mut self.rescan_pids);
        let mut seen = BTreeSet::new();
        for pid in pids {
            self.scan_process(pid, &listed, &mut seen);
        }
        Ok(())
    }

    /// Judge every group again (and forget those without a known member).
    fn recheck_all(&mut self) -> Result<(), FollowError> {
        self.stats.full_rechecks += 1;
        let mut keys = self.sockets.take_touched();
        keys.extend(self.sockets.groups());
        keys.extend(self.groups.keys().copied());
        keys.extend(self.enforced.keys().copied());
        keys.extend(self.agreed_since.keys().copied());
        let now = Instant::now();
        // Interfaces that keep joined groups open: every group the kernel lists there is
        // judged too, members known or not.
        if !self.open_joined.is_empty() {
            let open = &self.open_joined;
            keys.extend(
                read_counts(&mut self.counts, |k| open.contains(&k.ifindex))?
                    .into_keys()
                    .filter(|k| !is_link_scope(&k.group)),
            );
        }
        self.recheck(keys)?;
        self.last_check = Some(now);
        Ok(())
    }

    /// Count the groups `keys` again and judge them; collect what changed for XDP. Every
    /// member of a judged group has its option counter read before and after the kernel's
    /// count, so `trusted` holds for every group judged here. Returns how many members
    /// that was.
    fn recheck(&mut self, keys: BTreeSet<GroupKey>) -> Result<usize, FollowError> {
        let now = Instant::now();
        let members: BTreeSet<u64> = keys
            .iter()
            .filter(|k| self.options.interfaces.contains(&k.ifindex))
            .flat_map(|k| self.sockets.holders(k).map(|r| r.id))
            .collect();
        let before = option_counts(&self.hooks, &members);
        // Only the judged groups' lines are parsed (the listings hold every group).
        let users = read_counts(&mut self.counts, |k| keys.contains(k))?;
        let after = option_counts(&self.hooks, &members);
        let in_flight = self.in_flight();

        for key in keys {
            let followed = self.options.interfaces.contains(&key.ifindex);
            let members: Vec<(&SocketRecord, bool)> = if followed {
                self.sockets
                    .holders(&key)
                    .map(|record| {
                        let trusted = record.read_seq.is_some()
                            && !self.pending.contains_key(&record.id)
                            && before.get(&record.id).copied().flatten() == record.read_seq
                            && after.get(&record.id).copied().flatten() == record.read_seq;
                        (record, trusted)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let count = users.get(&key).copied().unwrap_or(0);
            let agrees =
                !members.is_empty() && usize::try_from(count).is_ok_and(|c| c == members.len());
            let since = agrees.then(|| self.agreed_since.get(&key).copied().unwrap_or(now));
            let promote_delay = self.options.promote_delay;
            let changing = in_flight.contains(&key);
            match table::assess(key, &members, changing, count, since, now, promote_delay) {
                Some(group) => {
                    match since {
                        Some(since) => self.agreed_since.insert(key, since),
                        None => self.agreed_since.remove(&key),
                    };
                    if group.completeness.is_complete() && group.enforced != group.merged {
                        self.promoting.insert(key);
                    } else {
                        self.promoting.remove(&key);
                    }
                    if self.enforced.get(&key) != Some(&group.enforced) {
                        self.changes.insert(key, Some(group.enforced.clone()));
                        self.enforced.insert(key, group.enforced.clone());
                    }
                    self.groups.insert(key, group);
                }
                // No known member, but the kernel lists the group on an interface that keeps
                // joined groups open: every source passes.
                None if count > 0
                    && self.open_joined.contains(&key.ifindex)
                    && !is_link_scope(&key.group) =>
                {
                    self.groups.remove(&key);
                    self.agreed_since.remove(&key);
                    self.promoting.remove(&key);
                    let open = table::pass_all();
                    if self.enforced.get(&key) != Some(&open) {
                        self.changes.insert(key, Some(open.clone()));
                        self.enforced.insert(key, open);
                    }
                }
                None => {
                    self.groups.remove(&key);
                    self.agreed_since.remove(&key);
                    self.promoting.remove(&key);
                    if self.enforced.remove(&key).is_some() {
                        self.changes.insert(key, None);
                    }
                }
            }
        }
        Ok(members.len())
    }
}

/// The kernel's counts of the groups `wanted` says yes to.
fn read_counts(
    counts: &mut MembershipCounts,
    wanted: impl FnMut(&GroupKey) -> bool,
) -> Result<BTreeMap<GroupKey, u32>, FollowError> {
    counts.read_some(wanted).map_err(|e| FollowError::Io {
        what: "reading /proc/net/igmp and /proc/net/igmp6".into(),
        source: e,
    })
}

/// The option counters (`SocketSeq::begun`) of these sockets, one map lookup each.
fn option_counts(hooks: &Hooks, ids: &BTreeSet<u64>) -> HashMap<u64, Option<u64>> {
    ids.iter()
        .map(|id| (*id, hooks.seq(*id).map(|s| s.begun)))
        .collect()
}

/// Whether a socket is a member of any of `groups`.
fn holds_any(found: &Found, groups: &BTreeSet<GroupKey>) -> bool {
    groups.iter().any(|key| {
        matches!(
            peek::read_filter(
                found.peeked.fd.as_fd(),
                found.facts.family(),
                key.ifindex,
                key.group
            ),
            Ok(Some(_))
        )
    })
}

/// Refuse an interface index that does not exist in the calling thread's namespace.
fn check_interface(ifindex: u32) -> Result<(), FollowError> {
    if crate::iface::name_of(ifindex).is_none() {
        return Err(FollowError::NoSuchInterface(ifindex));
    }
    Ok(())
}

/// Whether an option reported by the hook (which runs before the kernel handles it) has
/// finished, judged by where its thread is now.
fn call_finished(
    call: &mut Call,
    tid_latest: &HashMap<u32, u64>,
    own_pid: u32,
    own_tid: u32,
    cap: Duration,
) -> bool {
    // The thread began a later option: it returned from this one.
    if tid_latest.get(&call.tid).is_some_and(|&t| t > call.ktime) {
        return true;
    }
    // This very thread made the call and is running the follower now.
    if call.tgid == own_pid && call.tid == own_tid {
        return true;
    }
    let state = procfs::thread_state(call.tgid, call.tid);
    let now = Instant::now();
    match state {
        Ok(ThreadState::Gone | ThreadState::NotInSyscall) => true,
        Ok(ThreadState::InSyscall { nr, args }) => {
            let same_option = nr == libc::SYS_setsockopt
                && args[1] as i32 == call.level
                && args[2] as i32 == call.optname;
            if same_option {
                // Still in it (asleep, e.g. waiting for the RTNL lock).
                call.running_since = None;
                false
            } else if nr == libc::SYS_io_uring_enter {
                // The option may be running inside io_uring: give it the cap.
                now.saturating_duration_since(call.seen) >= cap
            } else {
                true
            }
        }
        Ok(ThreadState::Running) | Err(_) => {
            let since = *call.running_since.get_or_insert(now);
            now.saturating_duration_since(since) >= cap
        }
    }
}

// The controller hands the follower to a thread of its own.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Follower>();
};
