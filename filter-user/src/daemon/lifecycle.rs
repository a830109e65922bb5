//! Start-up, persistence, the configuration file and shut-down.
//!
//! Start-up order, so a restart never opens or closes the filter wrongly: the maps come back
//! from their pins with the last policy still in force; persistent clients' memberships are
//! restored on new sockets and the configuration's applied; pinned links are adopted (the
//! program swapped atomically); only then are the maps reconciled with the merged policy, by
//! difference — when nothing changed while the daemon was away, nothing is written.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
};

use msfilter_common::GroupKey;

use super::{
    DaemonError,
    config::{self, Config, GroupConfig},
    controller::{CONFIG_CLIENT, Controller, ControllerError, Ownership, Result, Unrestored},
    report::Reloaded,
    state::{DesiredState, Membership, OwnedInterface, PersistentClient, StateStore},
};
use crate::{
    datapath::Datapath,
    iface,
    policy::{ClientId, GroupFilter},
    sockopt::{addr_of, ip_of},
};

/// What the controller starts from.
pub struct StartOptions {
    pub store: StateStore,
    pub config: Option<PathBuf>,
    /// Leave XDP enforcing (pinned) when the daemon stops.
    pub keep_on_exit: bool,
    /// Where the server's loop learns what to watch for the follower.
    pub follow: super::following::DriveSender,
}

fn group_filter(g: &GroupConfig) -> GroupFilter {
    GroupFilter::new(g.mode, g.sources.iter().map(|s| addr_of(*s)))
}

impl Controller {
    /// Build the controller from the datapath (maps re-adopted from their pins), the
    /// persisted state and the configuration file.
    pub fn start(
        datapath: Datapath,
        options: StartOptions,
    ) -> std::result::Result<Self, DaemonError> {
        let state = options.store.load()?;
        let config = match &options.config {
            Some(path) => config::load(path).map_err(DaemonError::Config)?,
            None => Config::default(),
        };
        let mut ctl = Self::new(datapath, options.store);
        // Whatever an earlier run left: no group is dropped as unjoined before this run's
        // follower has found every socket.
        ctl.adopt_unjoined();
        ctl.keep_on_exit = options.keep_on_exit;
        ctl.follow_signal = Some(options.follow);
        ctl.followed = state.followed.iter().cloned().collect();
        ctl.followed.extend(
            config
                .interfaces
                .iter()
                .filter(|(_, i)| i.follow)
                .map(|(n, _)| n.clone()),
        );
        ctl.drop_unjoined = state.drop_unjoined.iter().cloned().collect();
        ctl.drop_unjoined.extend(
            config
                .interfaces
                .iter()
                .filter(|(_, i)| i.follow && i.drop_unjoined)
                .map(|(n, _)| n.clone()),
        );
        ctl.config_path = options.config;
        ctl.released = state.released.iter().cloned().collect();
        ctl.kept = state.kept.iter().cloned().collect();
        for owned in &state.owned {
            let mode = owned.mode.as_deref().and_then(|m| m.parse().ok());
            ctl.owned.insert(owned.name.clone(), mode);
        }

        // 1. Memberships: persistent clients, then the configuration. A restored membership
        //    counts only once the kernel confirms it (`confirm_restored`); the ready socket
        //    appears only after start-up, so "ready" means confirmed.
        let mut restored = Vec::new();
        for client in &state.clients {
            let id = ctl.register_unchecked(&client.name, true);
            for m in &client.memberships {
                restored.extend(ctl.restore_membership(id, m));
            }
        }
        ctl.confirm_restored(&restored);
        ctl.config = config;
        let wanted: Vec<(String, IpAddr, GroupConfig)> = ctl
            .config
            .interfaces
            .iter()
            .flat_map(|(iface, i)| i.groups.iter().map(|(g, c)| (iface.clone(), *g, c.clone())))
            .collect();
        if !wanted.is_empty() {
            let config_client = ctl.config_client();
            for (iface, group, want) in wanted {
                ctl.apply_config_group(config_client, &iface, group, Some(&want));
            }
        }

        // 2. Links left pinned: adopt them, unless released with --keep or their interface
        //    is gone.
        for ifindex in ctl.datapath.unadopted_links()? {
            match iface::name_of(ifindex) {
                None => {
                    log::warn!(
                        "interface {ifindex} of a pinned link is gone; removing its entries"
                    );
                    ctl.datapath.forget_interface(ifindex)?;
                }
                Some(name) if ctl.kept.contains(&name) => {
                    log::info!("{name} was released with --keep; leaving its program enforcing");
                }
                // The link carries VLAN sub-interfaces only: it is adopted when they are
                // taken again, without owning the parent itself.
                Some(name)
                    if !ctl.owned.contains_key(&name)
                        && ctl.datapath.vlans().keys().any(|k| k.ifindex == ifindex) =>
                {
                    log::info!("{name}'s pinned link carries VLAN sub-interfaces only");
                }
                Some(_) => {
                    ctl.datapath.adopt(ifindex)?;
                }
            }
        }

        // 3. Follow the followed interfaces (the follower scans every socket there); their
        //    pinned entries keep enforcing until each group is proven again.
        ctl.start_followed();

        // 4. Reconcile every group with members or entries, by difference; attach where the
        //    policy needs it (the follower alone writes a followed interface's entries).
        let mut keys: BTreeSet<GroupKey> = ctl.memberships.groups().copied().collect();
        keys.extend(ctl.datapath.installed().keys().copied());
        let keys: Vec<GroupKey> = keys.into_iter().collect();
        ctl.sync(&keys, true)?;
        let to_own: Vec<String> = ctl
            .owned
            .keys()
            .chain(ctl.config.interfaces.keys())
            .cloned()
            .collect();
        for name in to_own {
            if let Ok(iface::Interface { index: ifindex, .. }) = iface::resolve(&name)
                && ctl.ownership(ifindex) == Ownership::Unowned
                && !ctl.released.contains(&name)
            {
                let mode = ctl
                    .config
                    .interfaces
                    .get(&name)
                    .and_then(|i| i.xdp_mode)
                    .or_else(|| ctl.owned.get(&name).copied().flatten());
                ctl.attach_filled(ifindex, mode, false)?;
            }
        }
        ctl.apply_follow_changes();
        ctl.publish_follow();
        ctl.save_state();
        Ok(ctl)
    }

    /// Start following every followed interface that is here. One that cannot be followed
    /// (the follower does not start: see docs/follow.md for what it needs) has its entries
    /// deleted, so every source passes there: the clients' merge alone could drop a source
    /// another socket wants.
    fn start_followed(&mut self) {
        let names: Vec<String> = self.followed.iter().cloned().collect();
        for name in names {
            let Ok(iface::Interface { index: ifindex, .. }) = iface::resolve(&name) else {
                log::info!("followed interface {name} is not here; followed when it appears");
                continue;
            };
            if self.ownership(ifindex) == Ownership::Kept {
                continue;
            }
            if let Err(e) = self.start_following(ifindex) {
                log::error!("{name}: {e}; every source passes there until it can be followed");
                let clear: Vec<_> = self
                    .datapath
                    .installed()
                    .keys()
                    .filter(|k| k.ifindex == ifindex)
                    .map(|k| (*k, None))
                    .collect();
                if let Err(e) = self.datapath.set_filters(clear) {
                    log::error!("{name}: clearing its entries: {e}");
                }
            }
        }
        self.hold_pinned();
    }

    /// Restore one persisted membership on a new socket. Returns the membership for
    /// [`Controller::confirm_restored`] when the socket holds exactly what was persisted;
    /// otherwise it is recorded as unrestored (and the model holds what the kernel holds).
    fn restore_membership(
        &mut self,
        client: ClientId,
        m: &Membership,
    ) -> Option<(ClientId, GroupKey, Membership)> {
        let Ok(iface::Interface { index: ifindex, .. }) = iface::resolve(&m.iface) else {
            self.not_restored(client, m, format!("there is no interface {}", m.iface));
            return None;
        };
        let want = GroupFilter::new(m.mode, m.sources.iter().map(|s| addr_of(*s)));
        let reason = match self.set_membership(client, ifindex, m.group, Some(&want)) {
            Ok(Some(now)) if now == want => {
                return Some((client, GroupKey::new(ifindex, addr_of(m.group)), m.clone()));
            }
            Ok(now) => format!(
                "the kernel holds {} instead",
                now.map_or_else(|| "no membership".to_string(), |f| f.to_string())
            ),
            Err(e) => e.to_string(),
        };
        self.not_restored(client, m, reason);
        None
    }

    /// Record a persisted membership that start-up could not restore as persisted.
    fn not_restored(&mut self, client: ClientId, m: &Membership, reason: String) {
        log::error!("{} on {}: not restored: {reason}", m.group, m.iface);
        self.unrestored.insert(
            (client, m.iface.clone(), m.group),
            Unrestored {
                membership: m.clone(),
                reason,
            },
        );
    }

    /// The kernel's confirmation of restored memberships: each group must be listed as
    /// joined on its interface (`/proc/net/igmp*`, complete unlike `mcfilter*`). One that is
    /// not is taken out of the model (so XDP does not enforce it) and recorded as unrestored.
    fn confirm_restored(&mut self, restored: &[(ClientId, GroupKey, Membership)]) {
        if restored.is_empty() {
            return;
        }
        let joined: BTreeSet<(u32, IpAddr)> = match iface::groups::joined() {
            Ok(groups) => groups.into_iter().map(|g| (g.ifindex, g.group)).collect(),
            Err(e) => {
                log::error!(
                    "reading the kernel's group lists to confirm restored memberships: {e}"
                );
                BTreeSet::new()
            }
        };
        let mut confirmed = 0;
        for (client, key, m) in restored {
            if joined.contains(&(key.ifindex, m.group)) {
                confirmed += 1;
                continue;
            }
            if let Err(e) = self.set_membership(*client, key.ifindex, m.group, None) {
                log::error!("dropping the unconfirmed membership of {}: {e}", m.group);
            }
            let reason = format!(
                "the kernel does not list {} as joined on {}",
                m.group, m.iface
            );
            self.not_restored(*client, m, reason);
        }
        log::info!(
            "restored {confirmed} persisted memberships, confirmed by the kernel; {} not restored",
            self.unrestored.len()
        );
    }

    /// Try again the unrestored memberships on interface `name` (it just appeared).
    pub(super) fn retry_unrestored(&mut self, name: &str) {
        let waiting: Vec<((ClientId, String, IpAddr), Unrestored)> = self
            .unrestored
            .iter()
            .filter(|((_, iface, _), _)| iface == name)
            .map(|(k, u)| (k.clone(), u.clone()))
            .collect();
        if waiting.is_empty() {
            return;
        }
        let mut restored = Vec::new();
        for (key, u) in waiting {
            self.unrestored.remove(&key);
            restored.extend(self.restore_membership(key.0, &u.membership));
        }
        self.confirm_restored(&restored);
        let keys: Vec<GroupKey> = restored.iter().map(|(_, key, _)| *key).collect();
        if let Err(e) = self.sync(&keys, true) {
            log::error!("enforcing the memberships restored on {name}: {e}");
        }
        self.save_state();
    }

    /// The client that holds the configuration's memberships.
    fn config_client(&mut self) -> ClientId {
        self.register_unchecked(CONFIG_CLIENT, true)
    }

    /// Set the configuration client's membership; returns whether it holds what was asked.
    fn apply_config_group(
        &mut self,
        client: ClientId,
        iface: &str,
        group: IpAddr,
        want: Option<&GroupConfig>,
    ) -> Option<GroupKey> {
        let Ok(iface::Interface { index: ifindex, .. }) = iface::resolve(iface) else {
            if want.is_some() {
                log::info!(
                    "{group} on {iface}: the interface is not here; applied when it appears"
                );
            }
            return None;
        };
        let want = want.map(group_filter);
        if let Err(e) = self.set_membership(client, ifindex, group, want.as_ref()) {
            log::error!("configuring {group} on {iface}: {e}");
        }
        Some(GroupKey::new(ifindex, addr_of(group)))
    }

    /// Apply the configuration of one interface that just appeared: its groups, then own it.
    pub(super) fn apply_config_interface(&mut self, name: &str) -> Result<()> {
        let Some(iface) = self.config.interfaces.get(name).cloned() else {
            return Ok(());
        };
        let client = self.config_client();
        let mut keys = Vec::new();
        for (group, want) in &iface.groups {
            keys.extend(self.apply_config_group(client, name, *group, Some(want)));
        }
        let ifindex = iface::resolve(name)?.index;
        self.released.remove(name);
        self.kept.remove(name);
        if iface.follow {
            self.followed.insert(name.to_string());
            if !self.follows_now(ifindex) {
                self.start_following(ifindex)?;
            }
        }
        self.attach_filled(ifindex, iface.xdp_mode, false)?;
        self.apply_follow_changes();
        self.publish_follow();
        self.sync(&keys, false)?;
        self.save_state();
        Ok(())
    }

    /// Re-read the configuration file; apply only the difference. An invalid file changes
    /// nothing.
    pub fn reload(&mut self) -> Result<Reloaded> {
        let Some(path) = self.config_path.clone() else {
            return Err(ControllerError::NoConfig);
        };
        let new = config::load(&path).map_err(ControllerError::Config)?;
        let diff = config::diff(&self.config, &new);
        let mut changes = Vec::new();
        let client = self.config_client();
        let mut keys = Vec::new();
        self.config = new;
        for (iface, group, want) in &diff.groups {
            keys.extend(self.apply_config_group(client, iface, *group, want.as_ref()));
            changes.push(match want {
                Some(g) => format!("{iface} {group}: {}", group_filter(g)),
                None => format!("{iface} {group}: removed"),
            });
        }
        for name in &diff.release {
            if let Ok(iface::Interface { index: ifindex, .. }) = iface::resolve(name)
                && self.ownership(ifindex) == Ownership::Owned
            {
                let deleted = self.datapath.detach(ifindex, false)?;
                self.drop_unjoined.remove(name);
                if self.followed.remove(name) {
                    self.stop_following(ifindex);
                }
                self.owned.remove(name);
                changes.push(format!("{name}: released ({deleted} entries deleted)"));
            }
        }
        for (name, follow) in &diff.follow {
            let Ok(iface::Interface { index: ifindex, .. }) = iface::resolve(name) else {
                if *follow {
                    self.followed.insert(name.clone());
                } else {
                    self.followed.remove(name);
                }
                continue;
            };
            if *follow {
                if self.ownership(ifindex) == Ownership::Owned {
                    self.follow_interface(ifindex, name)?;
                } else {
                    self.start_following(ifindex)?;
                    self.followed.insert(name.clone());
                }
                changes.push(format!("{name}: followed"));
            } else if self.followed.contains(name) {
                self.unfollow_interface(ifindex, name)?;
                changes.push(format!("{name}: no longer followed"));
            }
        }
        for (name, on) in &diff.drop_unjoined {
            self.set_drop_unjoined(name, *on);
            changes.push(format!(
                "{name}: {}",
                if *on {
                    "drops unjoined groups"
                } else {
                    "no longer drops unjoined groups"
                }
            ));
        }
        self.sync(&keys, true)?;
        for (name, mode) in &diff.attach {
            if let Ok(iface::Interface { index: ifindex, .. }) = iface::resolve(name) {
                if self.ownership(ifindex) == Ownership::Owned
                    && self.datapath.attachment(ifindex).map(|a| a.mode) != *mode
                    && mode.is_some()
                {
                    self.datapath.detach(ifindex, false)?;
                }
                if self.ownership(ifindex) != Ownership::Owned {
                    self.released.remove(name);
                    self.kept.remove(name);
                    self.attach_filled(ifindex, *mode, false)?;
                    changes.push(format!("{name}: owned"));
                }
            }
        }
        self.apply_follow_changes();
        self.publish_follow();
        self.save_state();
        log::info!("configuration reloaded: {} changes", changes.len());
        Ok(Reloaded { changes })
    }

    /// What is persisted: ownership and the persistent clients' memberships (not the
    /// configuration's, whose source is the file).
    fn desired_state(&self) -> DesiredState {
        let mut clients = Vec::new();
        for (id, client) in &self.clients {
            if !client.persistent || client.name == CONFIG_CLIENT {
                continue;
            }
            let mut memberships: Vec<Membership> = self
                .unrestored
                .iter()
                .filter(|((c, _, _), _)| c == id)
                .map(|(_, u)| u.membership.clone())
                .collect();
            for key in client.sockets.keys() {
                let (Some(filter), Some(iface)) =
                    (self.memberships.get(*id, key), iface::name_of(key.ifindex))
                else {
                    continue;
                };
                if self
                    .unrestored
                    .contains_key(&(*id, iface.clone(), ip_of(&key.group)))
                {
                    continue;
                }
                memberships.push(Membership {
                    iface,
                    group: ip_of(&key.group),
                    mode: filter.mode,
                    sources: filter.sources.iter().map(ip_of).collect(),
                });
            }
            clients.push(PersistentClient {
                name: client.name.clone(),
                memberships,
            });
        }
        let owned: BTreeMap<&String, _> = self.owned.iter().collect();
        DesiredState {
            owned: owned
                .into_iter()
                .map(|(name, mode)| OwnedInterface {
                    name: name.clone(),
                    mode: mode.map(|m| m.to_string()),
                })
                .collect(),
            released: self.released.iter().cloned().collect(),
            kept: self.kept.iter().cloned().collect(),
            followed: self.followed.iter().cloned().collect(),
            drop_unjoined: self.drop_unjoined.iter().cloned().collect(),
            clients,
        }
    }

    /// Persist the desired state; a failure is logged (the running policy is unaffected).
    pub(super) fn save_state(&self) {
        if let Err(e) = self.store.save(&self.desired_state()) {
            log::error!("{e}");
        }
    }

    /// The shut-down sequence: every client's sockets close (the kernel leaves the groups);
    /// owned interfaces are released and pins removed, unless the daemon keeps XDP enforcing.
    /// The persisted state stays for the next start.
    pub fn shutdown(mut self) {
        let clients = std::mem::take(&mut self.clients);
        let memberships: usize = clients.values().map(|c| c.sockets.len()).sum();
        drop(clients);
        log::info!("left {memberships} memberships");
        // Its hooks go with it; with --keep the maps keep the last followed filters, and no
        // group is dropped as unjoined (nothing would see a new membership).
        if let Err(e) = self.datapath.open_gate() {
            log::error!("drop-unjoined: {e}");
        }
        self.follow = None;
        self.datapath.shutdown(self.keep_on_exit);
    }
}
