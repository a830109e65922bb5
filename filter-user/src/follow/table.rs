//! The follower's model: every followed socket with what the kernel said about it, and per
//! (interface, group) the sockets that contribute, the kernel's membership count, whether
//! the two agree, and what XDP may enforce. Pure: the engine ([`super::Follower`]) feeds it.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use msfilter_common::{GroupKey, Mode};

use crate::{
    policy::{GroupFilter, merge},
    sockopt::Family,
};

/// One followed socket, as last read from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketRecord {
    /// The id the hooks know it by (socket-local storage).
    pub id: u64,
    /// `SO_COOKIE`.
    pub cookie: u64,
    /// The process it was found in, and that process's command name.
    pub pid: u32,
    pub comm: String,
    /// The socket's address family (an IPv6 socket may hold IPv4 memberships too).
    pub family: Family,
    /// Its descriptor number in `pid` when last found.
    pub fd: i32,
    /// Its filter for every group it is a member of on a followed interface, as
    /// `getsockopt(MCAST_MSFILTER)` stated it.
    pub memberships: BTreeMap<GroupKey, GroupFilter>,
    /// The socket's option count ([`msfilter_common::follow::SocketSeq::begun`]) when it
    /// was read with every counted option finished and no new one begun during the read;
    /// `None` while that is not so (an option is running, or it was never read so).
    pub read_seq: Option<u64>,
}

/// Every followed socket by id, with per group the sockets that hold it, and the groups
/// *touched* since [`Sockets::take_touched`]: those whose members, members' filters or
/// members' trust (`read_seq`) changed. An incremental recheck judges only those again.
///
/// Memberships change only through [`Sockets::set_memberships`], [`Sockets::remove`] and
/// [`Sockets::retain_memberships`] (they keep the index); trust only through
/// [`Sockets::set_read_seq`] and [`Sockets::untrust_all`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sockets {
    records: BTreeMap<u64, SocketRecord>,
    holders: BTreeMap<GroupKey, BTreeSet<u64>>,
    touched: BTreeSet<GroupKey>,
}

impl Sockets {
    pub fn get(&self, id: u64) -> Option<&SocketRecord> {
        self.records.get(&id)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.records.contains_key(&id)
    }

    pub fn values(&self) -> impl Iterator<Item = &SocketRecord> {
        self.records.values()
    }

    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.records.keys().copied()
    }

    /// The record of socket `id`, made by `new` if there is none (with `new`'s
    /// memberships: none is expected). Its memberships and `read_seq` must not be changed
    /// through it (see the type's documentation); the other facts may.
    pub fn upsert(&mut self, id: u64, new: impl FnOnce() -> SocketRecord) -> &mut SocketRecord {
        self.records.entry(id).or_insert_with(|| {
            let record = new();
            for key in record.memberships.keys() {
                self.holders.entry(*key).or_default().insert(id);
                self.touched.insert(*key);
            }
            record
        })
    }

    /// Socket `id`'s filter for each of these groups, as just read (`None`: not a member).
    /// Every group named is touched.
    pub fn set_memberships(
        &mut self,
        id: u64,
        read: impl IntoIterator<Item = (GroupKey, Option<GroupFilter>)>,
    ) {
        let Some(record) = self.records.get_mut(&id) else {
            return;
        };
        for (key, filter) in read {
            self.touched.insert(key);
            match filter {
                Some(f) => {
                    record.memberships.insert(key, f);
                    self.holders.entry(key).or_default().insert(id);
                }
                None => {
                    record.memberships.remove(&key);
                    unhold(&mut self.holders, key, id);
                }
            }
        }
    }

    /// Set socket `id`'s `read_seq`, touching its groups if that changes it.
    pub fn set_read_seq(&mut self, id: u64, read_seq: Option<u64>) {
        if let Some(record) = self.records.get_mut(&id)
            && record.read_seq != read_seq
        {
            record.read_seq = read_seq;
            self.touched.extend(record.memberships.keys().copied());
        }
    }

    /// Trust no socket until it is read again (every group touched).
    pub fn untrust_all(&mut self) {
        for record in self.records.values_mut() {
            record.read_seq = None;
        }
        self.touched.extend(self.holders.keys().copied());
    }

    /// Forget socket `id`; its groups are touched.
    pub fn remove(&mut self, id: u64) -> Option<SocketRecord> {
        let record = self.records.remove(&id)?;
        for key in record.memberships.keys() {
            unhold(&mut self.holders, *key, id);
            self.touched.insert(*key);
        }
        Some(record)
    }

    /// Keep only the memberships `keep` says yes to (touching the others).
    pub fn retain_memberships(&mut self, mut keep: impl FnMut(&GroupKey) -> bool) {
        let holders = &mut self.holders;
        let touched = &mut self.touched;
        for record in self.records.values_mut() {
            record.memberships.retain(|key, _| {
                let kept = keep(key);
                if !kept {
                    unhold(holders, *key, record.id);
                    touched.insert(*key);
                }
                kept
            });
        }
    }

    /// Mark a group to be judged again (an option named it, whoever holds it).
    pub fn touch(&mut self, key: GroupKey) {
        self.touched.insert(key);
    }

    /// Mark every group of socket `id` to be judged again.
    pub fn touch_socket(&mut self, id: u64) {
        if let Some(record) = self.records.get(&id) {
            self.touched.extend(record.memberships.keys().copied());
        }
    }

    /// The groups touched since the last call.
    pub fn take_touched(&mut self) -> BTreeSet<GroupKey> {
        std::mem::take(&mut self.touched)
    }

    /// Every group some known socket holds.
    pub fn groups(&self) -> impl Iterator<Item = GroupKey> + '_ {
        self.holders.keys().copied()
    }

    /// The known sockets that hold `key`.
    pub fn holders(&self, key: &GroupKey) -> impl Iterator<Item = &SocketRecord> {
        self.holders
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|id| self.records.get(id))
    }
}

fn unhold(holders: &mut BTreeMap<GroupKey, BTreeSet<u64>>, key: GroupKey, id: u64) {
    if let Some(ids) = holders.get_mut(&key) {
        ids.remove(&id);
        if ids.is_empty() {
            holders.remove(&key);
        }
    }
}

/// Whether the known members of a group are all of its members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completeness {
    /// The kernel counts exactly the known members, each read with nothing running: their
    /// merge is the kernel's interface filter.
    Complete,
    /// An option is running on a member (or on a socket that named the group), or was not
    /// read back since it ran.
    Changing,
    /// The kernel counts more memberships than sockets are known: kernel-internal joins,
    /// or sockets the follower has not found (yet, or cannot reach).
    UnknownMembers { users: u32, known: u32 },
    /// The kernel counts fewer: a member left and the follower has not seen it yet.
    Inconsistent { users: u32, known: u32 },
}

impl Completeness {
    /// Judge a group: `users` from `/proc/net/igmp(6)`, `known` members of which `trusted`
    /// were read settled and did not change around that count.
    pub fn judge(users: u32, known: usize, trusted: usize) -> Self {
        let known = u32::try_from(known).unwrap_or(u32::MAX);
        if trusted < known as usize {
            Completeness::Changing
        } else if users > known {
            Completeness::UnknownMembers { users, known }
        } else if users < known {
            Completeness::Inconsistent { users, known }
        } else {
            Completeness::Complete
        }
    }

    pub const fn is_complete(&self) -> bool {
        matches!(self, Completeness::Complete)
    }
}

/// A socket's contribution to a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub cookie: u64,
    pub pid: u32,
    pub comm: String,
    pub family: Family,
    pub filter: GroupFilter,
    /// Read settled and unchanged around the kernel's count.
    pub trusted: bool,
}

/// One (interface, group) on a followed interface with at least one known member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowedGroup {
    pub key: GroupKey,
    /// The kernel's membership count (`Users` in `/proc/net/igmp(6)`).
    pub users: u32,
    pub members: Vec<Member>,
    pub completeness: Completeness,
    /// The RFC 3376 §3.2 / RFC 3810 merge of the known members' filters.
    pub merged: GroupFilter,
    /// What XDP may enforce: `merged` once the group is complete (and, after its count
    /// disagreed, has agreed for the promotion delay), else EXCLUDE {} (every source
    /// passes).
    pub enforced: GroupFilter,
}

/// Every source passes.
pub fn pass_all() -> GroupFilter {
    GroupFilter::new(Mode::Exclude, [])
}

/// What XDP may enforce for a group judged `completeness`, whose count has agreed with
/// its known members since `agreed_since` (`None`: it disagrees now).
pub fn enforced(
    merged: &GroupFilter,
    completeness: Completeness,
    agreed_since: Option<Instant>,
    now: Instant,
    promote_delay: Duration,
) -> GroupFilter {
    let settled_long_enough =
        agreed_since.is_some_and(|since| now.saturating_duration_since(since) >= promote_delay);
    if completeness.is_complete() && settled_long_enough {
        merged.clone()
    } else {
        pass_all()
    }
}

/// Build the view of one group from its members (`(record, trusted)`) and the kernel's
/// count. `in_flight`: an option that named the group has not been read back yet (on a
/// member or on a socket not known yet); the group is then `Changing`. `None` when no
/// known socket is a member (the group is then not followed: XDP leaves it alone).
pub fn assess(
    key: GroupKey,
    members: &[(&SocketRecord, bool)],
    in_flight: bool,
    users: u32,
    agreed_since: Option<Instant>,
    now: Instant,
    promote_delay: Duration,
) -> Option<FollowedGroup> {
    let filters: Vec<&GroupFilter> = members
        .iter()
        .filter_map(|(r, _)| r.memberships.get(&key))
        .collect();
    let merged = merge(filters.iter().copied())?;
    let trusted = members.iter().filter(|(_, t)| *t).count();
    let completeness = if in_flight {
        Completeness::Changing
    } else {
        Completeness::judge(users, members.len(), trusted)
    };
    let enforced = enforced(&merged, completeness, agreed_since, now, promote_delay);
    Some(FollowedGroup {
        key,
        users,
        members: members
            .iter()
            .filter_map(|(r, trusted)| {
                Some(Member {
                    id: r.id,
                    cookie: r.cookie,
                    pid: r.pid,
                    comm: r.comm.clone(),
                    family: r.family,
                    filter: r.memberships.get(&key)?.clone(),
                    trusted: *trusted,
                })
            })
            .collect(),
        completeness,
        merged,
        enforced,
    })
}

#[cfg(test)]
mod tests {
    use msfilter_common::maps::ipv4_mapped;

    use super::*;

    fn key() -> GroupKey {
        GroupKey::new(3, ipv4_mapped([232, 1, 1, 1]))
    }

    fn src(n: u8) -> msfilter_common::Addr {
        ipv4_mapped([10, 0, 0, n])
    }

    fn record(id: u64, filter: GroupFilter) -> SocketRecord {
        SocketRecord {
            id,
            cookie: id,
            pid: 100 + id as u32,
            comm: format!("app{id}"),
            family: Family::V4,
            fd: 3,
            memberships: [(key(), filter)].into(),
            read_seq: Some(1),
        }
    }

    #[test]
    fn more_kernel_memberships_than_known_sockets_pass_everything() {
        let a = record(1, GroupFilter::new(Mode::Include, [src(1)]));
        let now = Instant::now();
        let long_ago = now - Duration::from_secs(1);
        // Two memberships, one known: someone unknown may want any source.
        let g = assess(key(), &[(&a, true)], false, 2, None, now, Duration::ZERO).unwrap();
        assert_eq!(
            g.completeness,
            Completeness::UnknownMembers { users: 2, known: 1 }
        );
        assert_eq!(g.enforced, pass_all());
        assert_eq!(g.merged, GroupFilter::new(Mode::Include, [src(1)]));
        // Counts agree: the merge is enforced.
        let g = assess(
            key(),
            &[(&a, true)],
            false,
            1,
            Some(long_ago),
            now,
            Duration::ZERO,
        )
        .unwrap();
        assert!(g.completeness.is_complete());
        assert_eq!(g.enforced, GroupFilter::new(Mode::Include, [src(1)]));
        // Fewer memberships than known sockets: not trusted either.
        let b = record(2, GroupFilter::new(Mode::Include, [src(2)]));
        let g = assess(
            key(),
            &[(&a, true), (&b, true)],
            false,
            1,
            Some(long_ago),
            now,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(
            g.completeness,
            Completeness::Inconsistent { users: 1, known: 2 }
        );
        assert_eq!(g.enforced, pass_all());
    }

    #[test]
    fn a_changing_member_passes_everything_until_it_settles() {
        let a = record(1, GroupFilter::new(Mode::Include, [src(1)]));
        let b = record(2, GroupFilter::new(Mode::Exclude, [src(1), src(2)]));
        let now = Instant::now();
        let since = Some(now - Duration::from_secs(1));
        let g = assess(
            key(),
            &[(&a, true), (&b, false)],
            false,
            2,
            since,
            now,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(g.completeness, Completeness::Changing);
        assert_eq!(g.enforced, pass_all());
        assert!(!g.members[1].trusted);
        let g = assess(
            key(),
            &[(&a, true), (&b, true)],
            false,
            2,
            since,
            now,
            Duration::ZERO,
        )
        .unwrap();
        // a wants 1; b wants all but 1 and 2: only 2 may be dropped.
        assert_eq!(g.enforced, GroupFilter::new(Mode::Exclude, [src(2)]));
        assert_eq!(g.members.len(), 2);
        assert_eq!(g.members[0].comm, "app1");
    }

    #[test]
    fn agreement_must_last_the_promotion_delay() {
        let a = record(1, GroupFilter::new(Mode::Include, [src(1)]));
        let now = Instant::now();
        let delay = Duration::from_millis(5);
        let just_now = Some(now - Duration::from_millis(1));
        let g = assess(key(), &[(&a, true)], false, 1, just_now, now, delay).unwrap();
        assert!(g.completeness.is_complete());
        assert_eq!(g.enforced, pass_all(), "agreed only 1 ms ago");
        let g = assess(
            key(),
            &[(&a, true)],
            false,
            1,
            Some(now - delay),
            now,
            delay,
        )
        .unwrap();
        assert_eq!(g.enforced, GroupFilter::new(Mode::Include, [src(1)]));
    }

    #[test]
    fn no_known_member_is_no_followed_group() {
        assert_eq!(
            assess(key(), &[], false, 3, None, Instant::now(), Duration::ZERO),
            None
        );
    }

    #[test]
    fn an_option_in_flight_makes_a_complete_group_change() {
        let a = record(1, GroupFilter::new(Mode::Include, [src(1)]));
        let now = Instant::now();
        let since = Some(now - Duration::from_secs(1));
        // Counts agree, the member is trusted: yet a socket's option that named the group
        // has not been read back (it may be joining): every source passes.
        let g = assess(key(), &[(&a, true)], true, 1, since, now, Duration::ZERO).unwrap();
        assert_eq!(g.completeness, Completeness::Changing);
        assert_eq!(g.enforced, pass_all());
        assert_eq!(g.merged, GroupFilter::new(Mode::Include, [src(1)]));
    }

    fn other_key() -> GroupKey {
        GroupKey::new(3, ipv4_mapped([232, 1, 1, 2]))
    }

    fn bare(id: u64) -> SocketRecord {
        SocketRecord {
            memberships: BTreeMap::new(),
            read_seq: None,
            ..record(id, pass_all())
        }
    }

    fn holders(s: &Sockets, key: &GroupKey) -> Vec<u64> {
        s.holders(key).map(|r| r.id).collect()
    }

    #[test]
    fn the_socket_table_indexes_holders_and_says_which_groups_changed() {
        let (g1, g2) = (key(), other_key());
        let include = |n| Some(GroupFilter::new(Mode::Include, [src(n)]));
        let mut s = Sockets::default();
        s.upsert(1, || bare(1));
        s.upsert(2, || bare(2));
        assert!(s.take_touched().is_empty(), "no membership yet");
        s.set_memberships(1, [(g1, include(1)), (g2, include(2))]);
        s.set_memberships(2, [(g1, include(3))]);
        assert_eq!(s.take_touched(), [g1, g2].into());
        assert_eq!(holders(&s, &g1), [1, 2]);
        assert_eq!(holders(&s, &g2), [1]);
        assert_eq!(s.groups().collect::<Vec<_>>(), [g1, g2]);

        // Trust changes touch every group of that socket, and only when it changes.
        s.set_read_seq(2, Some(4));
        assert_eq!(s.take_touched(), [g1].into());
        s.set_read_seq(2, Some(4));
        assert!(s.take_touched().is_empty());
        s.touch_socket(1);
        assert_eq!(s.take_touched(), [g1, g2].into());

        // Leaving a group (read back as no membership) unindexes it.
        s.set_memberships(1, [(g2, None)]);
        assert_eq!(s.take_touched(), [g2].into());
        assert_eq!(holders(&s, &g2), Vec::<u64>::new());
        assert_eq!(s.groups().collect::<Vec<_>>(), [g1]);

        // A released socket's groups are touched and it holds nothing any more.
        let gone = s.remove(1).unwrap();
        assert_eq!(gone.memberships.keys().copied().collect::<Vec<_>>(), [g1]);
        assert_eq!(s.take_touched(), [g1].into());
        assert_eq!(holders(&s, &g1), [2]);
        assert!(s.remove(1).is_none());
        assert!(s.take_touched().is_empty());

        // Unfollowing an interface drops its memberships; untrusting all touches all.
        s.set_memberships(2, [(g2, include(5))]);
        let _ = s.take_touched();
        s.untrust_all();
        assert_eq!(s.take_touched(), [g1, g2].into());
        assert_eq!(s.get(2).unwrap().read_seq, None);
        s.retain_memberships(|k| *k != g1);
        assert_eq!(s.take_touched(), [g1].into());
        assert_eq!(holders(&s, &g1), Vec::<u64>::new());
        assert_eq!(holders(&s, &g2), [2]);
        assert!(s.contains(2));
    }
}
