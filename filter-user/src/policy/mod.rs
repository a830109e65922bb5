//! Where the policy model lives: every client's filter per (interface, group), as the kernel
//! reported it for that client's socket, and the interface-level filter they merge into.
//!
//! The controller records a client's filter only after reading it back from the kernel, so
//! this model never holds a state the kernel did not accept. [`Memberships::merged`] is what
//! the datapath must enforce for a group; [`merge`] is the pure rule.

mod filter;
mod merge;

use std::collections::BTreeMap;

pub use filter::{GroupFilter, Mode, mode_name, parse_mode};
pub use merge::{accepts, merge};
use msfilter_common::GroupKey;

/// A registered client's handle.
pub type ClientId = u64;

/// Every client's filter for every group it is a member of.
#[derive(Debug, Default)]
pub struct Memberships {
    groups: BTreeMap<GroupKey, BTreeMap<ClientId, GroupFilter>>,
}

impl Memberships {
    /// Record a client's filter for `key` (`None`: not a member). Returns whether the record
    /// changed.
    pub fn set(&mut self, client: ClientId, key: GroupKey, filter: Option<GroupFilter>) -> bool {
        match filter {
            Some(filter) => {
                let members = self.groups.entry(key).or_default();
                members.insert(client, filter.clone()) != Some(filter)
            }
            None => {
                let Some(members) = self.groups.get_mut(&key) else {
                    return false;
                };
                let removed = members.remove(&client).is_some();
                if members.is_empty() {
                    self.groups.remove(&key);
                }
                removed
            }
        }
    }

    /// A client's filter for `key`.
    pub fn get(&self, client: ClientId, key: &GroupKey) -> Option<&GroupFilter> {
        self.groups.get(key).and_then(|m| m.get(&client))
    }

    /// The interface-level filter of `key`: the merge of all members' filters.
    pub fn merged(&self, key: &GroupKey) -> Option<GroupFilter> {
        self.groups.get(key).and_then(|m| merge(m.values()))
    }

    /// Members of `key` and their filters.
    pub fn members(&self, key: &GroupKey) -> impl Iterator<Item = (ClientId, &GroupFilter)> {
        self.groups
            .get(key)
            .into_iter()
            .flat_map(|m| m.iter().map(|(c, f)| (*c, f)))
    }

    /// Every (interface, group) with at least one member, in order.
    pub fn groups(&self) -> impl Iterator<Item = &GroupKey> {
        self.groups.keys()
    }

    /// The groups a client is a member of.
    pub fn groups_of(&self, client: ClientId) -> Vec<GroupKey> {
        self.groups
            .iter()
            .filter(|(_, m)| m.contains_key(&client))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Forget a client entirely; returns the groups whose merge may have changed.
    pub fn remove_client(&mut self, client: ClientId) -> Vec<GroupKey> {
        let keys = self.groups_of(client);
        for key in &keys {
            self.set(client, *key, None);
        }
        keys
    }

    /// The desired datapath filter of each of `keys`.
    pub fn desired(
        &self,
        keys: impl IntoIterator<Item = GroupKey>,
    ) -> Vec<(GroupKey, Option<GroupFilter>)> {
        keys.into_iter().map(|k| (k, self.merged(&k))).collect()
    }
}

#[cfg(test)]
mod tests {
    use msfilter_common::{Mode, maps::ipv4_mapped};

    use super::*;

    fn key(ifindex: u32) -> GroupKey {
        GroupKey::new(ifindex, ipv4_mapped([232, 1, 1, 1]))
    }

    fn src(n: u8) -> msfilter_common::Addr {
        ipv4_mapped([10, 0, 0, n])
    }

    #[test]
    fn a_clients_share_disappears_with_it() {
        let mut m = Memberships::default();
        assert!(m.set(
            1,
            key(2),
            Some(GroupFilter::new(Mode::Exclude, [src(1), src(2)]))
        ));
        assert!(m.set(2, key(2), Some(GroupFilter::new(Mode::Include, [src(2)]))));
        // Client 2 still wants source 2: only source 1 may be dropped.
        assert_eq!(
            m.merged(&key(2)),
            Some(GroupFilter::new(Mode::Exclude, [src(1)]))
        );
        // Recording the same filter again is no change.
        assert!(!m.set(2, key(2), Some(GroupFilter::new(Mode::Include, [src(2)]))));
        assert_eq!(m.remove_client(2), vec![key(2)]);
        assert_eq!(
            m.merged(&key(2)),
            Some(GroupFilter::new(Mode::Exclude, [src(1), src(2)]))
        );
        assert_eq!(m.remove_client(1), vec![key(2)]);
        assert_eq!(m.merged(&key(2)), None);
        assert_eq!(m.groups().count(), 0);
    }

    #[test]
    fn interfaces_are_separate() {
        let mut m = Memberships::default();
        m.set(1, key(2), Some(GroupFilter::new(Mode::Exclude, [src(1)])));
        m.set(1, key(3), Some(GroupFilter::new(Mode::Include, [src(1)])));
        assert_eq!(m.merged(&key(2)).unwrap().mode, Mode::Exclude);
        assert_eq!(m.merged(&key(3)).unwrap().mode, Mode::Include);
        assert_eq!(m.groups_of(1), vec![key(2), key(3)]);
    }
}
