//! Interfaces and their events: every interface of the namespace (`RTM_GETLINK` dump), and
//! a [`LinkMonitor`] of interfaces added, renamed, changed and removed (`RTMGRP_LINK`).

use std::{
    collections::BTreeMap,
    fmt, io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
};

use super::netlink::{
    LinkMessage, Messages, NLM_F_DUMP, NetlinkRequest, RECV_BUFFER, RTEXT_FILTER_SKIP_STATS,
    RTMGRP_LINK, Socket, context,
};

/// How often a dump the kernel marked inconsistent (`NLM_F_DUMP_INTR`) is retried.
const DUMP_ATTEMPTS: usize = 5;

/// Every interface of the namespace: index and name, by index.
pub fn interfaces() -> io::Result<Vec<(u32, String)>> {
    let mut socket =
        Socket::open(0).map_err(|e| context("RTM_GETLINK dump of all interfaces", e))?;
    dump_interfaces(&mut socket)
}

/// Every interface of `socket`'s namespace.
fn dump_interfaces(socket: &mut Socket) -> io::Result<Vec<(u32, String)>> {
    let what = "RTM_GETLINK dump of all interfaces";
    for _ in 0..DUMP_ATTEMPTS {
        // AF_PACKET asks for the links alone; AF_UNSPEC would add every family's dump
        // (bridge ports, for instance).
        let mut request =
            NetlinkRequest::new(libc::RTM_GETLINK, NLM_F_DUMP, libc::AF_PACKET as u8, 0);
        request.attr_u32(libc::IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        let mut found = BTreeMap::new();
        let interrupted = socket
            .dump(request, |ty, payload| {
                if ty == libc::RTM_NEWLINK
                    && let Some(link) = LinkMessage::parse(payload)
                    && link.family == libc::AF_UNSPEC as u8
                    && let Some(name) = link.name()
                {
                    found.insert(link.ifindex, name);
                }
                Ok(())
            })
            .map_err(|e| context(what, e))?;
        if !interrupted {
            return Ok(found.into_iter().collect());
        }
    }
    Err(io::Error::other(format!(
        "{what}: interfaces kept changing during {DUMP_ATTEMPTS} attempts"
    )))
}

/// What happened to an interface, as seen by a [`LinkMonitor`].
///
/// The kernel sends `RTM_NEWLINK` both for a new interface and for any change to an
/// existing one; the monitor tells them apart by remembering the interfaces it knows
/// (starting from a dump when it is created). Events are therefore transitions of that
/// view: an interface is `Added` once and `Removed` once, and a new interface with an old
/// name (re-created) is a `Removed` and an `Added` with different indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A new interface (created, or moved into this namespace).
    Added { ifindex: u32, name: String },
    /// An interface's name changed.
    Renamed {
        ifindex: u32,
        old_name: String,
        name: String,
    },
    /// Anything else about the interface changed (state, flags, addresses, ...).
    Changed { ifindex: u32, name: String },
    /// The interface is gone (deleted, or moved to another namespace).
    Removed { ifindex: u32, name: String },
}

/// Interface events of the namespace the monitor was created in (whichever thread reads
/// them): a non-blocking netlink socket subscribed to `RTMGRP_LINK`. Wait for it to become
/// readable (e.g. with tokio's `AsyncFd`), then call [`LinkMonitor::read_events`].
///
/// If the kernel drops events because they were not read in time, the monitor notices
/// (`ENOBUFS`), throws away what is queued, and derives the events from a fresh dump, so
/// the view stays right even though intermediate changes are lost ([`LinkMonitor::overflows`]
/// counts these).
pub struct LinkMonitor {
    socket: Socket,
    /// For the dumps, opened with `socket`, in the same namespace.
    requests: Socket,
    known: BTreeMap<u32, String>,
    overflows: u64,
    /// Events were lost and the view is not yet read afresh.
    stale: bool,
    buf: Vec<u8>,
}

impl LinkMonitor {
    /// Subscribe to the calling thread's namespace's interface events.
    pub fn new() -> io::Result<Self> {
        let what = "subscribing to interface events (RTMGRP_LINK)";
        let socket = Socket::open(RTMGRP_LINK).map_err(|e| context(what, e))?;
        socket.grow_receive_buffer(1 << 20);
        let mut requests = Socket::open(0).map_err(|e| context(what, e))?;
        // Subscribed first, dumped second: nothing falls between the two.
        let known = dump_interfaces(&mut requests)?.into_iter().collect();
        Ok(Self {
            socket,
            requests,
            known,
            overflows: 0,
            stale: false,
            buf: vec![0; RECV_BUFFER],
        })
    }

    /// How many times events were lost and the view was read afresh.
    pub const fn overflows(&self) -> u64 {
        self.overflows
    }

    /// The interfaces as the events so far leave them: index and name.
    pub fn known(&self) -> impl Iterator<Item = (u32, &str)> {
        self.known.iter().map(|(&i, n)| (i, n.as_str()))
    }

    /// Every event queued so far, oldest first; empty if there is none. Never blocks.
    ///
    /// Events already folded into the view are always handed over: if reading fails after
    /// some, they are returned and the failure shows at the next call (a dump that failed
    /// after lost events is retried then).
    pub fn read_events(&mut self) -> io::Result<Vec<LinkEvent>> {
        let mut events = Vec::new();
        match self.read_into(&mut events) {
            Ok(()) => Ok(events),
            Err(e) if !events.is_empty() => {
                log::debug!("reading interface events stopped early: {e}");
                Ok(events)
            }
            Err(e) => Err(context("reading interface events", e)),
        }
    }

    fn read_into(&mut self, events: &mut Vec<LinkEvent>) -> io::Result<()> {
        loop {
            if self.stale {
                self.resync(events)?;
                self.stale = false;
            }
            let len = match self.socket.recv(&mut self.buf) {
                Ok(Some(len)) => len,
                Ok(None) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    log::warn!("interface events were lost; reading the interfaces afresh");
                    self.overflows += 1;
                    self.stale = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for message in Messages::new(&self.buf[..len]) {
                let Ok(message) = message else {
                    log::warn!("skipping a malformed interface event");
                    break;
                };
                if let Some(link) = LinkMessage::parse(message.payload)
                    && link.family == libc::AF_UNSPEC as u8
                {
                    apply(&mut self.known, message.ty, &link, events);
                }
            }
        }
    }

    /// After lost events: drop what is queued (older than the loss), dump, and report the
    /// difference between the dump and the view.
    fn resync(&mut self, events: &mut Vec<LinkEvent>) -> io::Result<()> {
        loop {
            match self.socket.recv(&mut self.buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) => return Err(e),
            }
        }
        let now: BTreeMap<u32, String> = dump_interfaces(&mut self.requests)?.into_iter().collect();
        for (&ifindex, name) in &self.known {
            if !now.contains_key(&ifindex) {
                events.push(LinkEvent::Removed {
                    ifindex,
                    name: name.clone(),
                });
            }
        }
        for (&ifindex, name) in &now {
            match self.known.get(&ifindex) {
                None => events.push(LinkEvent::Added {
                    ifindex,
                    name: name.clone(),
                }),
                Some(old) if old != name => events.push(LinkEvent::Renamed {
                    ifindex,
                    old_name: old.clone(),
                    name: name.clone(),
                }),
                Some(_) => {}
            }
        }
        self.known = now;
        Ok(())
    }
}

/// Fold one link message into the view, recording the event it makes.
fn apply(
    known: &mut BTreeMap<u32, String>,
    ty: u16,
    link: &LinkMessage<'_>,
    events: &mut Vec<LinkEvent>,
) {
    let ifindex = link.ifindex;
    match ty {
        libc::RTM_NEWLINK => {
            let Some(name) = link.name().or_else(|| known.get(&ifindex).cloned()) else {
                return;
            };
            let event = match known.insert(ifindex, name.clone()) {
                None => LinkEvent::Added { ifindex, name },
                Some(old_name) if old_name != name => LinkEvent::Renamed {
                    ifindex,
                    old_name,
                    name,
                },
                Some(_) => LinkEvent::Changed { ifindex, name },
            };
            events.push(event);
        }
        libc::RTM_DELLINK => {
            // Unknown: already reported removed by a resync.
            if let Some(old) = known.remove(&ifindex) {
                let name = link.name().unwrap_or(old);
                events.push(LinkEvent::Removed { ifindex, name });
            }
        }
        _ => {}
    }
}

impl fmt::Debug for LinkMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkMonitor")
            .field("fd", &self.socket.fd)
            .field("known", &self.known)
            .field("overflows", &self.overflows)
            .finish_non_exhaustive()
    }
}

impl AsRawFd for LinkMonitor {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.fd.as_raw_fd()
    }
}

impl AsFd for LinkMonitor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iface::netlink::build::{attr, link_payload};

    /// The events a monitor derives from messages.
    #[test]
    fn events_follow_the_view() {
        let mut known = BTreeMap::from([(1, "lo".to_string())]);
        let mut events = Vec::new();
        let msg = |ifindex, name: &str| {
            link_payload(ifindex, &[attr(libc::IFLA_IFNAME, name.as_bytes())])
        };
        for (ty, payload) in [
            (libc::RTM_NEWLINK, msg(5, "a")),
            (libc::RTM_NEWLINK, msg(5, "a")),
            (libc::RTM_NEWLINK, msg(5, "b")),
            (libc::RTM_DELLINK, msg(5, "b")),
            (libc::RTM_DELLINK, msg(5, "b")),
        ] {
            apply(
                &mut known,
                ty,
                &LinkMessage::parse(&payload).unwrap(),
                &mut events,
            );
        }
        assert_eq!(
            events,
            [
                LinkEvent::Added {
                    ifindex: 5,
                    name: "a".into()
                },
                LinkEvent::Changed {
                    ifindex: 5,
                    name: "a".into()
                },
                LinkEvent::Renamed {
                    ifindex: 5,
                    old_name: "a".into(),
                    name: "b".into()
                },
                LinkEvent::Removed {
                    ifindex: 5,
                    name: "b".into()
                },
            ]
        );
        assert_eq!(known, BTreeMap::from([(1, "lo".to_string())]));
    }
}
