//! The controller: clients and their handles, and the one path every membership request
//! takes — validate, apply the real socket option on the client's socket (the kernel judges),
//! read the socket's filter back, record it in the policy model, recompute the interface's
//! merged filter and write the difference to the maps. A request the datapath cannot follow
//! is undone in the kernel too, so the kernel, the model and the maps always agree.
//!
//! The controller is single-threaded: the server hands it one request at a time, so
//! requests are applied in arrival order and none interleave.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use filter_common::{GroupKey, Reason, Verdict};

use super::{
    explain::{Refused, kernel_error},
    protocol::{
        AttachmentView, CounterView, ErrorKind, ErrorReply, FilterMode, FilterView, GroupEntry,
        ListFilter, Op, Reply, SourceEntry, StatsView,
    },
};
use crate::{
    datapath::{Datapath, DatapathError, GroupFilter, interface_name, resolve_interface},
    policy::{ClientId, Memberships},
    sockopt::{self, Family, MembershipSocket, OptionSet, addr_of, ip_of},
};

/// A connection's identity, for enumeration cursors.
pub type ConnId = u64;

struct Client {
    name: String,
    persistent: bool,
    /// One socket per (interface, group): the kernel's per-socket limits never bite, and
    /// each membership's filter is read back on its own.
    sockets: BTreeMap<GroupKey, MembershipSocket>,
}

struct Enumeration {
    conn: ConnId,
    filter: ResolvedListFilter,
    after: Option<GroupKey>,
}

#[derive(Clone, Copy)]
struct ResolvedListFilter {
    ifindex: Option<u32>,
    group: Option<filter_common::Addr>,
}

impl ResolvedListFilter {
    fn matches(&self, key: &GroupKey) -> bool {
        self.ifindex.is_none_or(|i| i == key.ifindex) && self.group.is_none_or(|g| g == key.group)
    }
}

pub struct Controller {
    datapath: Datapath,
    memberships: Memberships,
    clients: BTreeMap<ClientId, Client>,
    persistent: BTreeMap<String, ClientId>,
    next_client: ClientId,
    enumerations: BTreeMap<u64, Enumeration>,
    next_cursor: u64,
}

fn invalid(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorKind::Invalid, message)
}

fn datapath_error(e: &DatapathError) -> ErrorReply {
    ErrorReply::new(ErrorKind::Datapath, format!("{e}; the request was undone"))
}

fn view(filter: &GroupFilter) -> FilterView {
    FilterView {
        mode: filter.mode.into(),
        sources: filter.sources.iter().map(ip_of).collect(),
    }
}

fn to_sockopt(op: &Op) -> sockopt::Request {
    match op {
        Op::Join => sockopt::Request::JoinGroup,
        Op::Leave => sockopt::Request::LeaveGroup,
        Op::Block { source } => sockopt::Request::BlockSource(*source),
        Op::Unblock { source } => sockopt::Request::UnblockSource(*source),
        Op::JoinSource { source } => sockopt::Request::JoinSourceGroup(*source),
        Op::LeaveSource { source } => sockopt::Request::LeaveSourceGroup(*source),
        Op::SetFilter { mode, sources } => sockopt::Request::SetFilter {
            mode: (*mode).into(),
            sources: sources.clone(),
        },
    }
}

/// What the kernel says a socket holds for `group` (`None`: not a member).
fn read_back(socket: &MembershipSocket, group: IpAddr) -> Option<GroupFilter> {
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
    pub fn new(datapath: Datapath) -> Self {
        Self {
            datapath,
            memberships: Memberships::default(),
            clients: BTreeMap::new(),
            persistent: BTreeMap::new(),
            next_client: 1,
            enumerations: BTreeMap::new(),
            next_cursor: 1,
        }
    }

    /// Register a client. A persistent client with this name already present is resumed.
    pub fn register(&mut self, name: &str, persistent: bool) -> Result<ClientId, ErrorReply> {
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(invalid("a client name is 1 to 64 printable characters"));
        }
        if persistent && let Some(id) = self.persistent.get(name) {
            return Ok(*id);
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
        Ok(id)
    }

    /// Undo every membership of a client and forget it. Returns how many memberships ended.
    pub fn deregister(&mut self, client: ClientId) -> Result<u32, ErrorReply> {
        let Some(state) = self.clients.remove(&client) else {
            return Err(ErrorReply::new(ErrorKind::State, "not registered"));
        };
        if state.persistent {
            self.persistent.remove(&state.name);
        }
        let count = state.sockets.len() as u32;
        drop(state.sockets); // closing the sockets leaves the groups in the kernel
        let keys = self.memberships.remove_client(client);
        if let Err(e) = self.sync(&keys) {
            log::error!("updating the maps after client {client} left: {e}");
        }
        log::info!(
            "client {} deregistered, {count} memberships ended",
            state.name
        );
        Ok(count)
    }

    /// The shut-down sequence: every client's memberships are left, every interface is
    /// released (its entries deleted, the program detached).
    pub fn shutdown(&mut self) {
        let clients: Vec<ClientId> = self.clients.keys().copied().collect();
        for client in clients {
            let _ = self.deregister(client);
        }
        let attached: Vec<u32> = self.datapath.attachments().map(|a| a.ifindex).collect();
        for ifindex in attached {
            match self.datapath.detach(ifindex) {
                Ok(n) => log::info!("released interface {ifindex} ({n} entries deleted)"),
                Err(e) => log::error!("releasing interface {ifindex}: {e}"),
            }
        }
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

    /// Make the maps enforce the merged filters of `keys`, attaching to interfaces that get
    /// their first managed group (after their entries are in the maps).
    fn sync(&mut self, keys: &[GroupKey]) -> Result<(), DatapathError> {
        let desired = self.memberships.desired(keys.iter().copied());
        let needs: BTreeSet<u32> = desired
            .iter()
            .filter(|(k, f)| f.is_some() && self.datapath.attachment(k.ifindex).is_none())
            .map(|(k, _)| k.ifindex)
            .collect();
        self.datapath.set_filters(desired)?;
        for ifindex in needs {
            self.datapath.attach(&ifindex.to_string(), None)?;
        }
        Ok(())
    }

    /// Apply one membership request for `client`. A persistent client left without
    /// memberships afterwards is forgotten, whatever the outcome.
    pub fn membership(
        &mut self,
        client: ClientId,
        iface: &str,
        group: IpAddr,
        op: &Op,
    ) -> Result<Reply, ErrorReply> {
        let result = self.apply_membership(client, iface, group, op);
        self.forget_if_idle(client);
        result
    }

    fn apply_membership(
        &mut self,
        client: ClientId,
        iface: &str,
        group: IpAddr,
        op: &Op,
    ) -> Result<Reply, ErrorReply> {
        if !self.clients.contains_key(&client) {
            return Err(ErrorReply::new(ErrorKind::State, "register first"));
        }
        let (ifindex, iface) = resolve_interface(iface).map_err(|e| invalid(e.to_string()))?;
        let family = Family::of(group);
        let request = to_sockopt(op);
        sockopt::validate(family, group, &request).map_err(|e| invalid(e.to_string()))?;

        let key = GroupKey::new(ifindex, addr_of(group));
        let before = self.memberships.get(client, &key).cloned();
        let sockets = &mut self.clients.get_mut(&client).expect("checked").sockets;
        let socket = match sockets.remove(&key) {
            Some(socket) => socket,
            None => MembershipSocket::open(family, ifindex).map_err(|e| {
                kernel_error(
                    &e,
                    &Refused {
                        op,
                        group,
                        iface: &iface,
                        before: None,
                    },
                )
            })?,
        };
        let outcome = socket.apply(group, &request, OptionSet::ProtocolIndependent);
        // Mirror what the kernel now holds, whatever the outcome: some refusals still change
        // the socket's filter (NOTES.md §2), and the model must follow the kernel.
        let after = read_back(&socket, group);
        if after.is_some() {
            sockets.insert(key, socket);
        }
        self.memberships.set(client, key, after.clone());

        if let Err(e) = self.sync(&[key]) {
            self.restore(client, key, group, before.as_ref());
            return Err(datapath_error(&e));
        }

        match outcome {
            Ok(()) => Ok(Reply::Applied {
                filter: after.as_ref().map(view),
            }),
            Err(sockopt::ApplyError::Invalid(e)) => Err(invalid(e.to_string())),
            Err(sockopt::ApplyError::Kernel(e)) => Err(kernel_error(
                &e,
                &Refused {
                    op,
                    group,
                    iface: &iface,
                    before: before.as_ref(),
                },
            )),
        }
    }

    /// Put a client's socket for `key` back to `before` after the datapath could not follow.
    fn restore(
        &mut self,
        client: ClientId,
        key: GroupKey,
        group: IpAddr,
        before: Option<&GroupFilter>,
    ) {
        let sockets = &mut self.clients.get_mut(&client).expect("registered").sockets;
        let restored = match before {
            None => {
                sockets.remove(&key);
                None
            }
            Some(filter) => {
                let socket = match sockets.remove(&key) {
                    Some(s) => Some(s),
                    None => MembershipSocket::open(Family::of(group), key.ifindex)
                        .map_err(sockopt::ApplyError::from)
                        .and_then(|s| {
                            s.apply(
                                group,
                                &sockopt::Request::JoinGroup,
                                OptionSet::ProtocolIndependent,
                            )
                            .map(|()| s)
                        })
                        .map_err(|e| log::error!("restoring {group}: {e}"))
                        .ok(),
                };
                socket.and_then(|s| {
                    let request = sockopt::Request::SetFilter {
                        mode: filter.mode,
                        sources: filter.sources.iter().map(ip_of).collect(),
                    };
                    if let Err(e) = s.apply(group, &request, OptionSet::ProtocolIndependent) {
                        log::error!("restoring the filter of {group}: {e}");
                    }
                    let now = read_back(&s, group);
                    if now.is_some() {
                        sockets.insert(key, s);
                    }
                    now
                })
            }
        };
        self.memberships.set(client, key, restored);
        if let Err(e) = self.sync(&[key]) {
            log::error!("restoring the maps for {group}: {e}");
        }
    }

    /// A persistent client without memberships is forgotten.
    fn forget_if_idle(&mut self, client: ClientId) {
        if let Some(c) = self.clients.get(&client)
            && c.persistent
            && c.sockets.is_empty()
        {
            self.persistent.remove(&c.name);
            self.clients.remove(&client);
        }
    }

    /// The handle of the persistent client `name`, if it exists.
    pub fn persistent_client(&self, name: &str) -> Option<ClientId> {
        self.persistent.get(name).copied()
    }

    /// A client's filter for a group, and the interface's.
    pub fn get_filter(
        &self,
        client: Option<ClientId>,
        iface: &str,
        group: IpAddr,
    ) -> Result<Reply, ErrorReply> {
        let (ifindex, iface) = resolve_interface(iface).map_err(|e| invalid(e.to_string()))?;
        sockopt::validate(Family::of(group), group, &sockopt::Request::JoinGroup)
            .map_err(|e| invalid(e.to_string()))?;
        let key = GroupKey::new(ifindex, addr_of(group));
        let own = client
            .and_then(|c| self.clients.get(&c))
            .and_then(|c| c.sockets.get(&key))
            .and_then(|s| read_back(s, group));
        Ok(Reply::Filter {
            iface,
            group,
            client: own.as_ref().map(view),
            interface: self.memberships.merged(&key).as_ref().map(view),
        })
    }

    pub fn list_start(
        &mut self,
        conn: ConnId,
        filter: &ListFilter,
        page: u32,
    ) -> Result<Reply, ErrorReply> {
        let ifindex = match &filter.iface {
            Some(i) => Some(resolve_interface(i).map_err(|e| invalid(e.to_string()))?.0),
            None => None,
        };
        let cursor = self.next_cursor;
        self.next_cursor += 1;
        self.enumerations.insert(
            cursor,
            Enumeration {
                conn,
                filter: ResolvedListFilter {
                    ifindex,
                    group: filter.group.map(addr_of),
                },
                after: None,
            },
        );
        self.list_next(conn, cursor, page)
    }

    /// The next page: entries after the last one returned, as the maps hold them now. Each
    /// page is built in one step, so it is consistent in itself.
    pub fn list_next(&mut self, conn: ConnId, cursor: u64, page: u32) -> Result<Reply, ErrorReply> {
        let Some(e) = self.enumerations.get(&cursor).filter(|e| e.conn == conn) else {
            return Err(ErrorReply::new(
                ErrorKind::State,
                format!("no enumeration {cursor} on this connection"),
            ));
        };
        let (filter, after) = (e.filter, e.after);
        let installed = self.datapath.installed();
        let range = match after {
            Some(k) => installed.range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
            None => installed.range(..),
        };
        let mut entries = Vec::new();
        let mut last = None;
        for (key, state) in range.filter(|(k, _)| filter.matches(k)) {
            if entries.len() == page as usize {
                break;
            }
            entries.push(self.entry(key, state).map_err(|e| datapath_error(&e))?);
            last = Some(*key);
        }
        let more = last.is_some_and(|l| {
            installed
                .range((std::ops::Bound::Excluded(l), std::ops::Bound::Unbounded))
                .any(|(k, _)| filter.matches(k))
        });
        if more {
            self.enumerations.get_mut(&cursor).expect("present").after = last;
        } else {
            self.enumerations.remove(&cursor);
        }
        Ok(Reply::Page {
            entries,
            cursor: more.then_some(cursor),
        })
    }

    pub fn list_end(&mut self, conn: ConnId, cursor: u64) -> Reply {
        self.enumerations
            .retain(|c, e| !(*c == cursor && e.conn == conn));
        Reply::Ended
    }

    fn entry(
        &self,
        key: &GroupKey,
        state: &crate::datapath::Installed,
    ) -> Result<GroupEntry, DatapathError> {
        let counters = self
            .datapath
            .group_counters(key.ifindex, key.group)?
            .unwrap_or_default();
        let mut sources = Vec::with_capacity(state.sources.len());
        for source in &state.sources {
            let matched = self
                .datapath
                .source_counter(key.ifindex, key.group, *source)?
                .unwrap_or_default();
            sources.push(SourceEntry {
                source: ip_of(source),
                matched: matched.into(),
            });
        }
        Ok(GroupEntry {
            iface: interface_name(key.ifindex).unwrap_or_else(|| format!("#{}", key.ifindex)),
            ifindex: key.ifindex,
            group: ip_of(&key.group),
            mode: FilterMode::from(state.state.mode()),
            sources,
            passed: counters.passed.into(),
            dropped: counters.dropped.into(),
            members: self.memberships.members(key).count() as u32,
        })
    }

    pub fn stats(&self) -> Result<Reply, ErrorReply> {
        let counters = self
            .datapath
            .reason_counters()
            .map_err(|e| datapath_error(&e))?;
        let reasons = Reason::ALL
            .iter()
            .map(|r| {
                let c = counters.get(*r);
                super::protocol::ReasonCount {
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
        Ok(Reply::Stats(StatsView {
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
                    mode: a.mode.to_string(),
                })
                .collect(),
        }))
    }
}
