//! The controller: clients and their handles, and the one path every membership request
//! takes — validate, apply the real socket option on the client's socket (the kernel judges),
//! read the socket's filter back, record it in the policy model, recompute the interface's
//! merged filter and write the difference to the maps. A request the datapath cannot follow
//! is undone in the kernel too, so the kernel, the model and the maps always agree.
//!
//! The controller is single-threaded: the server hands it one request at a time, so
//! membership and ownership changes are applied in arrival order and never interleave — a
//! request that arrives while an interface is being attached waits for the attach.
//! Ownership lives in `ownership.rs`, start-up, persistence, configuration and shut-down in
//! `lifecycle.rs`.
//!
//! The controller speaks in the daemon's own terms: it takes interface names (resolved here,
//! so only indexes go on to the datapath) and requests of the socket-option layer, and
//! returns what it did as reports (`report.rs`) or a [`ControllerError`]. The server turns
//! both into the wire protocol.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::IpAddr,
    ops::Bound,
};

use msfilter_common::{Addr, GroupKey, Reason, Verdict};

use super::{
    config::{Config, ConfigErrors},
    explain::{Refused, explain},
    following::{DriveSender, Following, Hold, Unjoined},
    report::{
        AttachmentView, CounterView, FilterReport, FilterView, GroupEntry, Page, ReasonCount,
        SourceEntry, StatsView, UnrestoredView,
    },
    state::{Membership, StateStore},
};
use crate::{
    datapath::{AttachMode, Datapath, DatapathError},
    iface::{self, NoSuchInterface},
    policy::{ClientId, GroupFilter, Memberships, Mode},
    sockopt::{
        self, ApplyError, Family, InvalidRequest, MembershipSocket, Request, SockoptError, addr_of,
        ip_of,
    },
};

/// Why the controller refused or could not complete a request.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    // The request is wrong in itself; nothing was tried.
    #[error(transparent)]
    Interface(#[from] NoSuchInterface),
    #[error(transparent)]
    Request(#[from] InvalidRequest),
    #[error("a client name is 1 to 64 printable characters")]
    ClientName,
    #[error("the client name {CONFIG_CLIENT} is reserved for the configuration file")]
    ReservedName,
    #[error(
        "{iface} runs in {current} mode; a replacement keeps the mode (detach and attach to \
         change it)"
    )]
    ModeChange { iface: String, current: AttachMode },
    #[error("--object replaces msfilter's program on an interface it owns; attach first")]
    ObjectWithoutOwner,
    #[error("reading {path}: {source}")]
    ReadObject {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}; the running policy stays")]
    Config(ConfigErrors),
    /// The kernel refused the socket option: what it means for this request.
    #[error("{message}")]
    Kernel {
        error: SockoptError,
        message: String,
    },
    /// A socket option the controller set on its own (restoring, configuring).
    #[error(transparent)]
    Socket(#[from] ApplyError),
    // The maps or the attachment could not follow.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("{0}; the request was undone")]
    Undone(#[source] DatapathError),
    #[error("{0}")]
    XdpQuery(#[source] io::Error),
    // The request does not fit the daemon's state.
    #[error("register first")]
    NotRegistered,
    #[error("no enumeration {0} on this connection")]
    NoEnumeration(u64),
    #[error("msfilter already owns {iface} ({mode} mode); attach --replace swaps its program")]
    AlreadyOwned { iface: String, mode: AttachMode },
    #[error("msfilter does not own {0}")]
    NotOwned(String),
    #[error("the daemon was started without --config")]
    NoConfig,
    /// Follow mode could not start or follow the interface (see docs/follow.md for what it
    /// needs).
    #[error("following the interface: {0}")]
    Follow(#[source] crate::follow::FollowError),
    #[error(
        "drop-unjoined needs follow: only the follower knows which groups every socket on the \
         interface joined (attach IFACE --follow --drop-unjoined)"
    )]
    DropUnjoinedNeedsFollow,
    #[error("{0}")]
    FollowCapabilities(String),
    #[error(
        "msfilter owns {iface} ({mode} mode){}; --replace swaps the program and keeps the rest \
         (attach --follow without --replace follows an owned interface)",
        if *.followed { ", followed" } else { "" }
    )]
    FollowChange {
        iface: String,
        mode: AttachMode,
        followed: bool,
    },
}

pub type Result<T, E = ControllerError> = std::result::Result<T, E>;

/// A connection's identity, for enumeration cursors.
pub type ConnId = u64;

/// The name of the client that holds the configuration file's memberships.
pub(super) const CONFIG_CLIENT: &str = "config-file";

pub(super) struct Client {
    pub(super) name: String,
    pub(super) persistent: bool,
    /// One socket per (interface, group): the kernel's per-socket limits never bite, and
    /// each membership's filter is read back on its own.
    pub(super) sockets: BTreeMap<GroupKey, MembershipSocket>,
}

/// Where an enumeration continues.
#[derive(Clone, Copy)]
enum Position {
    Start,
    /// After this group and all its sources.
    AfterGroup(GroupKey),
    /// Inside this group: after this source (`None`: from its first source).
    InGroup(GroupKey, Option<Addr>),
}

struct Enumeration {
    conn: ConnId,
    filter: ResolvedListFilter,
    position: Position,
}

#[derive(Clone, Copy)]
struct ResolvedListFilter {
    ifindex: Option<u32>,
    group: Option<Addr>,
}

impl ResolvedListFilter {
    fn matches(&self, key: &GroupKey) -> bool {
        self.ifindex.is_none_or(|i| i == key.ifindex) && self.group.is_none_or(|g| g == key.group)
    }
}

/// An interface as far as the maps are concerned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Ownership {
    /// msfilter's program runs there and the maps follow the policy.
    Owned,
    /// Released with `--keep`: msfilter's program enforces the last policy, frozen.
    Kept,
    /// Not msfilter's: the maps hold nothing for it.
    Unowned,
}

pub struct Controller {
    pub(super) datapath: Datapath,
    pub(super) memberships: Memberships,
    pub(super) clients: BTreeMap<ClientId, Client>,
    pub(super) persistent: BTreeMap<String, ClientId>,
    next_client: ClientId,
    enumerations: BTreeMap<u64, Enumeration>,
    next_cursor: u64,
    pub(super) store: StateStore,
    pub(super) config_path: Option<std::path::PathBuf>,
    pub(super) config: Config,
    /// Interfaces owned, by name, with the XDP mode asked for (`None`: driver, else skb).
    pub(super) owned: BTreeMap<String, Option<AttachMode>>,
    /// Released by `detach`: memberships there do not attach the program again.
    pub(super) released: BTreeSet<String>,
    /// Released by `detach --keep`.
    pub(super) kept: BTreeSet<String>,
    pub(super) keep_on_exit: bool,
    /// Persisted memberships the kernel did not confirm at start-up, by (client, interface
    /// name, group): not enforced, still persisted (see `lifecycle.rs`).
    pub(super) unrestored: BTreeMap<(ClientId, String, IpAddr), Unrestored>,
    /// Interfaces to follow, by name (persisted; see `following.rs`).
    pub(super) followed: BTreeSet<String>,
    /// The follower, while an interface is followed.
    pub(super) follow: Option<Following>,
    pub(super) follow_generation: u64,
    /// Where the server's loop learns what to watch for the follower.
    pub(super) follow_signal: Option<DriveSender>,
    /// Pinned entries of followed interfaces waiting to be proven again after a restart.
    pub(super) hold: Option<Hold>,
    /// Followed interfaces that drop unjoined groups, by name (persisted; `following.rs`).
    pub(super) drop_unjoined: BTreeSet<String>,
    /// What the drop-unjoined map holds, as this process wrote it.
    pub(super) unjoined: Unjoined,
}

/// A persisted membership that start-up could not restore as persisted.
#[derive(Clone, Debug)]
pub(super) struct Unrestored {
    pub(super) membership: Membership,
    pub(super) reason: String,
}

/// What the kernel says a socket holds for `group` (`None`: not a member).
pub(super) fn read_back(socket: &MembershipSocket, group: IpAddr) -> Option<GroupFilter> {
    match socket.filter(group) {
        Ok((mode, sources)) => Some(GroupFilter::new(mode, sources.into_iter().map(addr_of))),
        Err(e) if matches!(e.errno, libc::EADDRNOTAVAIL | libc::EINVAL) => None,
        Err(e) => {
            log::error!("reading back the filter of {group}: {e}; treating it as not joined");
            None
        }
    }
}

impl Controller {
    pub(super) fn new(datapath: Datapath, store: StateStore) -> Self {
        Self {
            datapath,
            memberships: Memberships::default(),
            clients: BTreeMap::new(),
            persistent: BTreeMap::new(),
            next_client: 1,
            enumerations: BTreeMap::new(),
            next_cursor: 1,
            store,
            config_path: None,
            config: Config::default(),
            owned: BTreeMap::new(),
            released: BTreeSet::new(),
            kept: BTreeSet::new(),
            keep_on_exit: false,
            unrestored: BTreeMap::new(),
            followed: BTreeSet::new(),
            follow: None,
            follow_generation: 0,
            follow_signal: None,
            hold: None,
            drop_unjoined: BTreeSet::new(),
            unjoined: Unjoined::default(),
        }
    }

    /// Register a client. A persistent client with this name already present is resumed.
    pub fn register(&mut self, name: &str, persistent: bool) -> Result<ClientId> {
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(ControllerError::ClientName);
        }
        if name == CONFIG_CLIENT {
            return Err(ControllerError::ReservedName);
        }
        Ok(self.register_unchecked(name, persistent))
    }

    pub(super) fn register_unchecked(&mut self, name: &str, persistent: bool) -> ClientId {
        if persistent && let Some(id) = self.persistent.get(name) {
            return *id;
        }
        let id = self.next_client;
        self.next_client += 1;
        self.clients.insert(
            id,
            Client {
                name: name.to_string(),
                persistent,
                sockets: BTreeMap::new(),
            },
        );
        if persistent {
            self.persistent.insert(name.to_string(), id);
        }
        log::info!(
            "client {name} registered (handle {id}{})",
            if persistent { ", persistent" } else { "" }
        );
        id
    }

    /// Undo every membership of a client and forget it. Returns how many memberships ended.
    pub fn deregister(&mut self, client: ClientId) -> Result<u32> {
        let Some(state) = self.clients.remove(&client) else {
            return Err(ControllerError::NotRegistered);
        };
        if state.persistent {
            self.persistent.remove(&state.name);
        }
        let count = state.sockets.len() as u32;
        drop(state.sockets); // closing the sockets leaves the groups in the kernel
        self.unrestored.retain(|(c, _, _), _| *c != client);
        let keys = self.memberships.remove_client(client);
        if let Err(e) = self.sync(&keys, false) {
            log::error!("updating the maps after client {client} left: {e}");
        }
        if state.persistent {
            self.save_state();
        }
        log::info!(
            "client {} deregistered, {count} memberships ended",
            state.name
        );
        Ok(count)
    }

    /// A connection ended: a session client's registration ends with it.
    pub fn disconnected(&mut self, conn: ConnId, client: Option<ClientId>) {
        self.enumerations.retain(|_, e| e.conn != conn);
        if let Some(client) = client
            && self.clients.get(&client).is_some_and(|c| !c.persistent)
        {
            let _ = self.deregister(client);
        }
    }

    /// The handle of the persistent client `name`, if it exists.
    pub fn persistent_client(&self, name: &str) -> Option<ClientId> {
        self.persistent.get(name).copied()
    }

    pub(super) fn ownership(&self, ifindex: u32) -> Ownership {
        if self.datapath.attachment(ifindex).is_some() {
            Ownership::Owned
        } else if self.datapath.pinned_link(ifindex) {
            Ownership::Kept
        } else {
            Ownership::Unowned
        }
    }

    /// Whether a membership on this interface may attach the program (it was not released).
    fn may_attach(&self, ifindex: u32) -> bool {
        iface::name_of(ifindex)
            .is_some_and(|n| !self.released.contains(&n) && !self.kept.contains(&n))
    }

    /// Make the maps enforce the merged filters of `keys` on owned interfaces; the maps hold
    /// nothing for interfaces msfilter does not own, and are left alone on kept ones. With
    /// `attach`, an interface that gets its first managed group is attached (after all its
    /// entries are in the maps).
    pub(super) fn sync(&mut self, keys: &[GroupKey], attach: bool) -> Result<(), DatapathError> {
        let mut desired = Vec::new();
        let mut to_attach = BTreeSet::new();
        for key in keys {
            // The follower is the one writer of a followed interface's entries.
            if self.follows(key.ifindex) {
                continue;
            }
            let want = self.memberships.merged(key);
            match self.ownership(key.ifindex) {
                Ownership::Owned => desired.push((*key, want)),
                Ownership::Kept => {}
                Ownership::Unowned => {
                    if attach && want.is_some() && self.may_attach(key.ifindex) {
                        to_attach.insert(key.ifindex);
                        desired.push((*key, want));
                    } else {
                        desired.push((*key, None));
                    }
                }
            }
        }
        self.datapath.set_filters(desired)?;
        for ifindex in to_attach {
            self.attach_filled(ifindex, None, false)?;
        }
        Ok(())
    }

    /// Every group of `ifindex` that has members or entries.
    pub(super) fn keys_of(&self, ifindex: u32) -> Vec<GroupKey> {
        let mut keys: BTreeSet<GroupKey> = self
            .memberships
            .groups()
            .filter(|k| k.ifindex == ifindex)
            .copied()
            .collect();
        keys.extend(
            self.datapath
                .installed()
                .keys()
                .filter(|k| k.ifindex == ifindex),
        );
        keys.into_iter().collect()
    }

    /// Fill the maps with the policy of `ifindex`, then attach the program there: it never
    /// runs on a half-loaded policy.
    pub(super) fn attach_filled(
        &mut self,
        ifindex: u32,
        mode: Option<AttachMode>,
        replace_foreign: bool,
    ) -> Result<(), DatapathError> {
        let desired = if self.follows(ifindex) {
            self.follow_desired(ifindex)
        } else {
            self.memberships.desired(self.keys_of(ifindex))
        };
        self.datapath.set_filters(desired)?;
        match self.datapath.attach(ifindex, mode, replace_foreign) {
            Ok(a) => {
                let name = a.iface.clone();
                self.owned.entry(name).or_insert(mode);
                Ok(())
            }
            Err(e) => {
                // Not ours after all: take its entries out again.
                let clear: Vec<_> = self
                    .keys_of(ifindex)
                    .into_iter()
                    .map(|k| (k, None))
                    .collect();
                if let Err(undo) = self.datapath.set_filters(clear) {
                    log::error!("clearing the entries of interface {ifindex}: {undo}");
                }
                Err(e)
            }
        }
    }

    /// Apply one membership request for `client`; returns the client's filter afterwards
    /// (`None`: no longer a member). A persistent client left without memberships afterwards
    /// is forgotten, whatever the outcome.
    pub fn membership(
        &mut self,
        client: ClientId,
        iface: &str,
        group: IpAddr,
        request: &Request,
    ) -> Result<Option<GroupFilter>> {
        let result = self.apply_membership(client, iface, group, request);
        // The client's own request now says what it wants of this group.
        let name = iface::resolve(iface).map_or_else(|_| iface.to_string(), |i| i.name);
        self.unrestored.remove(&(client, name, group));
        let persistent = self.clients.get(&client).is_some_and(|c| c.persistent);
        self.forget_if_idle(client);
        if persistent {
            self.save_state();
        }
        result
    }

    fn apply_membership(
        &mut self,
        client: ClientId,
        iface: &str,
        group: IpAddr,
        request: &Request,
    ) -> Result<Option<GroupFilter>> {
        if !self.clients.contains_key(&client) {
            return Err(ControllerError::NotRegistered);
        }
        let iface = iface::resolve(iface)?;
        let family = Family::of(group);
        // The one validation: the socket is given the request as it stands.
        sockopt::validate(family, group, request)?;

        let key = GroupKey::new(iface.index, addr_of(group));
        let before = self.memberships.get(client, &key).cloned();
        let refused = |error: SockoptError, before: Option<&GroupFilter>| {
            explain(
                error,
                &Refused {
                    request,
                    group,
                    iface: &iface.name,
                    before,
                },
            )
        };
        let sockets = &mut self.clients.get_mut(&client).expect("checked").sockets;
        let socket = match sockets.remove(&key) {
            Some(socket) => socket,
            None => MembershipSocket::open(family, iface.index).map_err(|e| refused(e, None))?,
        };
        let outcome = socket.set_option(group, request);
        // Mirror what the kernel now holds, whatever the outcome: some refusals still change
        // the socket's filter (docs/kernel.md), and the model must follow the kernel.
        let after = read_back(&socket, group);
        if after.is_some() {
            sockets.insert(key, socket);
        }
        self.memberships.set(client, key, after.clone());

        if let Err(e) = self.sync(&[key], true) {
            self.restore(client, key, group, before.as_ref());
            return Err(ControllerError::Undone(e));
        }
        outcome.map_err(|e| refused(e, before.as_ref()))?;
        Ok(after)
    }

    /// Make a client's socket for (`ifindex`, `group`) hold exactly `want` (`None`: no
    /// membership), as the kernel accepts it, and record what the kernel then reports. Used
    /// to restore persisted memberships and to apply the configuration file.
    pub(super) fn set_membership(
        &mut self,
        client: ClientId,
        ifindex: u32,
        group: IpAddr,
        want: Option<&GroupFilter>,
    ) -> Result<Option<GroupFilter>> {
        let key = GroupKey::new(ifindex, addr_of(group));
        let sockets = &mut self
            .clients
            .get_mut(&client)
            .ok_or(ControllerError::NotRegistered)?
            .sockets;
        let Some(want) = want else {
            sockets.remove(&key);
            self.memberships.set(client, key, None);
            return Ok(None);
        };
        let socket = match sockets.remove(&key) {
            Some(s) => s,
            None => {
                let s =
                    MembershipSocket::open(Family::of(group), ifindex).map_err(ApplyError::from)?;
                s.apply(group, &Request::JoinGroup)?;
                s
            }
        };
        let request = Request::SetFilter {
            mode: want.mode,
            sources: want.sources.iter().map(ip_of).collect(),
        };
        let outcome = socket.apply(group, &request);
        let now = read_back(&socket, group);
        if now.is_some() {
            sockets.insert(key, socket);
        }
        self.memberships.set(client, key, now.clone());
        outcome?;
        Ok(now)
    }

    /// Put a client's socket for `key` back to `before` after the datapath could not follow.
    fn restore(
        &mut self,
        client: ClientId,
        key: GroupKey,
        group: IpAddr,
        before: Option<&GroupFilter>,
    ) {
        if let Err(e) = self.set_membership(client, key.ifindex, group, before) {
            log::error!("restoring the membership of {group}: {e}");
        }
        if let Err(e) = self.sync(&[key], false) {
            log::error!("restoring the maps for {group}: {e}");
        }
    }

    /// A persistent client without memberships is forgotten.
    fn forget_if_idle(&mut self, client: ClientId) {
        if let Some(c) = self.clients.get(&client)
            && c.persistent
            && c.name != CONFIG_CLIENT
            && c.sockets.is_empty()
            && !self.unrestored.keys().any(|(id, _, _)| *id == client)
        {
            self.persistent.remove(&c.name);
            self.clients.remove(&client);
        }
    }

    /// A client's filter for a group, and the interface's.
    pub fn get_filter(
        &self,
        client: Option<ClientId>,
        iface: &str,
        group: IpAddr,
    ) -> Result<FilterReport> {
        let iface = iface::resolve(iface)?;
        sockopt::validate_group(Family::of(group), group)?;
        let key = GroupKey::new(iface.index, addr_of(group));
        let own = client
            .and_then(|c| self.clients.get(&c))
            .and_then(|c| c.sockets.get(&key))
            .and_then(|s| read_back(s, group));
        Ok(FilterReport {
            iface: iface.name,
            group,
            client: own.as_ref().map(FilterView::from),
            interface: self.memberships.merged(&key).as_ref().map(FilterView::from),
        })
    }

    /// Start an enumeration of the entries of interface `iface` (all with `None`) and group
    /// `group` (all with `None`); returns its first page.
    pub fn list_start(
        &mut self,
        conn: ConnId,
        iface: Option<&str>,
        group: Option<IpAddr>,
        page: u32,
    ) -> Result<Page> {
        let ifindex = iface.map(iface::resolve).transpose()?.map(|i| i.index);
        let cursor = self.next_cursor;
        self.next_cursor += 1;
        self.enumerations.insert(
            cursor,
            Enumeration {
                conn,
                filter: ResolvedListFilter {
                    ifindex,
                    group: group.map(addr_of),
                },
                position: Position::Start,
            },
        );
        self.list_next(conn, cursor, page)
    }

    /// The next page: up to `page` items (a group and each of its sources count one) after
    /// the last one returned, as the maps hold them now. Each page is built in one step, so
    /// it is consistent in itself.
    pub fn list_next(&mut self, conn: ConnId, cursor: u64, page: u32) -> Result<Page> {
        let Some(e) = self.enumerations.get(&cursor).filter(|e| e.conn == conn) else {
            return Err(ControllerError::NoEnumeration(cursor));
        };
        let (filter, position) = (e.filter, e.position);
        let page = page as usize;
        let installed = self.datapath.installed();
        let mut entries = Vec::new();
        let mut items = 0;
        let mut next = None;

        // Finish a group cut by the previous page.
        let start = match position {
            Position::Start => Bound::Unbounded,
            Position::AfterGroup(k) => Bound::Excluded(k),
            Position::InGroup(k, after) => {
                if let Some(state) = installed.get(&k) {
                    let rest: Vec<Addr> = match after {
                        Some(a) => state
                            .sources
                            .range((Bound::Excluded(a), Bound::Unbounded))
                            .copied()
                            .collect(),
                        None => state.sources.iter().copied().collect(),
                    };
                    let take = rest.len().min(page);
                    entries.push(self.entry(&k, &rest[..take], true)?);
                    items += take;
                    if take < rest.len() {
                        next = Some(Position::InGroup(k, Some(rest[take - 1])));
                    }
                }
                Bound::Excluded(k)
            }
        };
        if next.is_none() {
            for (key, state) in installed
                .range((start, Bound::Unbounded))
                .filter(|(k, _)| filter.matches(k))
            {
                if items >= page {
                    next = Some(Position::AfterGroup(entries_last(&entries, key)));
                    break;
                }
                items += 1;
                let room = page - items;
                let sources: Vec<Addr> = state.sources.iter().take(room).copied().collect();
                items += sources.len();
                let cut = sources.len() < state.sources.len();
                entries.push(self.entry(key, &sources, false)?);
                if cut {
                    next = Some(Position::InGroup(*key, sources.last().copied()));
                    break;
                }
            }
        }
        // A page that ended exactly at a group boundary may have nothing after it.
        if let Some(Position::AfterGroup(k)) = next
            && !installed
                .range((Bound::Excluded(k), Bound::Unbounded))
                .any(|(k, _)| filter.matches(k))
        {
            next = None;
        }
        match next {
            Some(position) => {
                self.enumerations
                    .get_mut(&cursor)
                    .expect("present")
                    .position = position;
            }
            None => {
                self.enumerations.remove(&cursor);
            }
        }
        let keys: Vec<GroupKey> = entries
            .iter()
            .filter(|e| !e.continued)
            .map(|e| GroupKey::new(e.ifindex, addr_of(e.group)))
            .collect();
        Ok(Page {
            followed: self.followed_views(&keys),
            entries,
            cursor: next.map(|_| cursor),
        })
    }

    pub fn list_end(&mut self, conn: ConnId, cursor: u64) {
        self.enumerations
            .retain(|c, e| !(*c == cursor && e.conn == conn));
    }

    fn entry(
        &self,
        key: &GroupKey,
        sources: &[Addr],
        continued: bool,
    ) -> Result<GroupEntry, DatapathError> {
        let counters = self
            .datapath
            .group_counters(key.ifindex, key.group)?
            .unwrap_or_default();
        let state = self.datapath.installed().get(key).map(|i| i.state.mode());
        let mut listed = Vec::with_capacity(sources.len());
        for source in sources {
            let matched = self
                .datapath
                .source_counter(key.ifindex, key.group, *source)?
                .unwrap_or_default();
            listed.push(SourceEntry {
                source: ip_of(source),
                matched: matched.into(),
            });
        }
        Ok(GroupEntry {
            iface: iface::label(key.ifindex),
            ifindex: key.ifindex,
            group: ip_of(&key.group),
            mode: state.unwrap_or(Mode::Include),
            sources: listed,
            passed: counters.passed.into(),
            dropped: counters.dropped.into(),
            members: self.memberships.members(key).count() as u32,
            continued,
        })
    }

    pub fn stats(&self) -> Result<StatsView> {
        let counters = self.datapath.reason_counters()?;
        let reasons = Reason::ALL
            .iter()
            .map(|r| {
                let c = counters.get(*r);
                ReasonCount {
                    reason: r.name().to_string(),
                    verdict: match r.verdict() {
                        Verdict::Pass => "pass".to_string(),
                        Verdict::Drop => "drop".to_string(),
                    },
                    packets: c.packets,
                    bytes: c.bytes,
                }
            })
            .collect();
        let (all, dropped) = counters.totals();
        let (g, s, r) = self.datapath.map_memory()?;
        Ok(StatsView {
            reasons,
            passed: CounterView {
                packets: all.packets - dropped.packets,
                bytes: all.bytes - dropped.bytes,
            },
            dropped: dropped.into(),
            clients: self.clients.len() as u32,
            groups: self.datapath.installed().len() as u32,
            source_entries: self.datapath.source_entries() as u64,
            attachments: self
                .datapath
                .attachments()
                .map(|a| AttachmentView {
                    iface: a.iface.clone(),
                    ifindex: a.ifindex,
                    mode: a.mode,
                    drop_unjoined: super::following::unjoined_families(
                        self.unjoined_bits(a.ifindex),
                    ),
                    carrier: super::report::CarrierView::of(a),
                })
                .collect(),
            map_memory: g + s + r,
            unrestored: self
                .unrestored
                .iter()
                .map(|((client, iface, group), u)| UnrestoredView {
                    client: self
                        .clients
                        .get(client)
                        .map_or_else(|| format!("#{client}"), |c| c.name.clone()),
                    iface: iface.clone(),
                    group: *group,
                    reason: u.reason.clone(),
                })
                .collect(),
            follow: self.follow_stats(),
        })
    }
}

/// The group a page ended after (the last entry's, else the one about to be listed).
fn entries_last(entries: &[GroupEntry], upcoming: &GroupKey) -> GroupKey {
    entries
        .last()
        .map_or(*upcoming, |e| GroupKey::new(e.ifindex, addr_of(e.group)))
}
