//! The daemon's server: the UNIX socket, peer credentials, message framing, and the thread
//! that owns the controller.
//!
//! Each connection is its own task: a client that stalls mid-message, sends garbage or an
//! oversized length blocks nobody else. Requests reach the controller thread one at a time
//! through a channel, so they are applied in arrival order.
//!
//! The server is where the wire protocol ends: it decodes a frame into a [`Request`],
//! checks the peer's authority and the connection's registration, calls the controller with
//! the request's parts, and turns the controller's result into a [`Reply`] or its error into
//! an [`ErrorReply`].

use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{
    net::{TcpListener, UnixListener, UnixStream},
    sync::{mpsc, oneshot, watch},
};

use super::{
    DaemonError,
    controller::{ConnId, Controller, ControllerError},
    following::FollowDrive,
    metrics::{self, RequestTally, Snapshot},
    notify,
    protocol::{
        AttachOutcome, DEFAULT_PAGE, DecodeError, ErrorKind, ErrorReply, FilterView, FrameError,
        ListFilter, MAX_PAGE, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Reply, Request, Response,
        decode_request, read_frame, write_frame,
    },
};
use crate::{
    iface::{LinkEvent, LinkMonitor},
    policy::ClientId,
    sockopt::ApplyError,
};

/// Why the server refused a request.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Protocol(#[from] DecodeError),
    #[error("message of {len} bytes exceeds the limit of {max} bytes; closing")]
    TooLarge { len: usize, max: usize },
    #[error("permission denied: uid {uid} may not change the filter (only root{})",
        .gid.map_or_else(String::new, |g| format!(" and members of group {g}")))]
    Permission { uid: u32, gid: Option<u32> },
    #[error("this connection is already registered")]
    AlreadyRegistered,
    #[error("register first")]
    NotRegistered,
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

/// The wire form of a refusal: its kind, the kernel's errno name if the kernel refused, and
/// the sentence.
fn error_reply(refusal: &Refusal) -> ErrorReply {
    use ControllerError as C;
    let kind = match refusal {
        Refusal::Protocol(_) | Refusal::TooLarge { .. } => ErrorKind::Protocol,
        Refusal::Permission { .. } => ErrorKind::Permission,
        Refusal::AlreadyRegistered | Refusal::NotRegistered => ErrorKind::State,
        Refusal::Controller(e) => match e {
            C::Interface(_)
            | C::Request(_)
            | C::ClientName
            | C::ReservedName
            | C::ModeChange { .. }
            | C::ObjectWithoutOwner
            | C::ReadObject { .. }
            | C::Config(_)
            | C::DropUnjoinedNeedsFollow
            | C::Socket(ApplyError::Invalid(_)) => ErrorKind::Invalid,
            C::Kernel { .. } | C::Socket(ApplyError::Kernel(_)) => ErrorKind::Kernel,
            C::Datapath(_) | C::Undone(_) | C::XdpQuery(_) => ErrorKind::Datapath,
            C::NotRegistered
            | C::NoEnumeration(_)
            | C::AlreadyOwned { .. }
            | C::NotOwned(_)
            | C::FollowChange { .. }
            | C::NoConfig => ErrorKind::State,
            C::Follow(_) => ErrorKind::Datapath,
            C::FollowCapabilities(_) => ErrorKind::Permission,
        },
    };
    let errno = match refusal {
        Refusal::Controller(C::Kernel { error, .. } | C::Socket(ApplyError::Kernel(error))) => {
            Some(error.errno_name().to_string())
        }
        _ => None,
    };
    ErrorReply {
        kind,
        errno,
        message: refusal.to_string(),
    }
}

enum Command {
    Request {
        conn: ConnId,
        client: Option<ClientId>,
        request: Request,
        reply: oneshot::Sender<(Response, Option<ClientId>)>,
    },
    Disconnected {
        conn: ConnId,
        client: Option<ClientId>,
    },
    /// Take the values of one metrics scrape.
    Metrics {
        max_series: usize,
        reply: oneshot::Sender<Result<Snapshot, String>>,
    },
    /// Re-read the configuration file (SIGHUP).
    Reload,
    /// Interfaces came, went or changed names.
    Links(Vec<LinkEvent>),
    /// The follower has events waiting or a deadline passed: run it (`done` when it ran).
    Follow { done: oneshot::Sender<()> },
    /// Run the shut-down sequence and stop.
    Shutdown { done: oneshot::Sender<()> },
}

/// The metrics endpoint's way to the controller thread: one [`Command::Metrics`] per scrape.
#[derive(Clone)]
struct Snapshots {
    tx: mpsc::Sender<Command>,
    max_series: usize,
}

impl metrics::SnapshotSource for Snapshots {
    async fn take(&self) -> Option<Result<Snapshot, String>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Metrics {
                max_series: self.max_series,
                reply,
            })
            .await
            .ok()?;
        answer.await.ok()
    }
}

/// Who may change the filter: root, and members of an optional group.
#[derive(Clone, Copy, Debug)]
pub(super) struct Authority {
    pub(super) gid: Option<u32>,
}

impl Authority {
    fn allows(&self, uid: u32, gid: u32, pid: Option<i32>) -> bool {
        if uid == 0 {
            return true;
        }
        let Some(allowed) = self.gid else {
            return false;
        };
        gid == allowed || pid.is_some_and(|pid| supplementary_groups(pid).contains(&allowed))
    }

    const fn refusal(&self, uid: u32) -> Refusal {
        Refusal::Permission { uid, gid: self.gid }
    }
}

fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Requests that change state need the peer to be authorized.
const fn changes_state(request: &Request) -> bool {
    matches!(
        request,
        Request::Register { .. }
            | Request::Deregister
            | Request::Membership { .. }
            | Request::Attach { .. }
            | Request::Detach { .. }
            | Request::Reload
    )
}

/// The signals the daemon handles, installed before anything else.
pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn install() -> Result<Self, DaemonError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(DaemonError::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?,
            hup: signal(SignalKind::hangup()).map_err(DaemonError::Signal)?,
        })
    }
}

/// Refuse to start if another daemon answers on `path`.
pub(super) fn check_free(path: &Path) -> Result<(), DaemonError> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(DaemonError::AlreadyRunning(path.to_path_buf()));
    }
    Ok(())
}

/// Bind the socket: refuse if another daemon answers there, replace a stale file, and make
/// it accessible to root (and the configured group) only from the first instant.
///
/// The socket is bound under a staging name beside `path`, given its owner group and mode
/// there, and renamed into place: a client that can connect to `path` at all finds the
/// final permissions (a member of `gid` never sees a root-only socket it could not open).
pub(super) fn bind(path: &Path, gid: Option<u32>) -> Result<UnixListener, DaemonError> {
    let fail = |e| DaemonError::Socket(path.to_path_buf(), e);
    check_free(path)?;
    match std::fs::remove_file(path) {
        Ok(()) => log::info!("removed stale socket {}", path.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".{}.new", std::process::id()));
    let staging = PathBuf::from(staging);
    match std::fs::remove_file(&staging) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(&staging);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = listener.map_err(fail)?;
    let placed = gid
        .map_or(Ok(()), |gid| {
            std::os::unix::fs::chown(&staging, None, Some(gid)).and_then(|()| {
                std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o660))
            })
        })
        .and_then(|()| std::fs::rename(&staging, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&staging);
        return Err(fail(e));
    }
    Ok(listener)
}

/// The metrics endpoint's listener, bound, and its cap on per-group and per-source series.
pub(super) struct MetricsListener {
    pub(super) listener: TcpListener,
    pub(super) max_series: usize,
}

/// Serve until SIGTERM or SIGINT.
pub(super) async fn serve(
    listener: UnixListener,
    socket_path: PathBuf,
    authority: Authority,
    controller: Controller,
    signals: Signals,
    metrics_listener: Option<MetricsListener>,
    follow: watch::Receiver<Option<FollowDrive>>,
) -> Result<(), DaemonError> {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    let (tx, rx) = mpsc::channel::<Command>(1024);
    let tally = Arc::new(RequestTally::default());
    let worker = {
        let tally = Arc::clone(&tally);
        std::thread::Builder::new()
            .name("msfilter-controller".into())
            .spawn(move || run_controller(controller, rx, &tally))
            .map_err(DaemonError::Thread)?
    };
    log::info!(
        "listening on {} (protocol version {PROTOCOL_VERSION})",
        socket_path.display()
    );
    if let Some(MetricsListener {
        listener,
        max_series,
    }) = metrics_listener
    {
        if let Ok(addr) = listener.local_addr() {
            log::info!("serving metrics on http://{addr}/metrics");
        }
        let snapshots = Snapshots {
            tx: tx.clone(),
            max_series,
        };
        tokio::spawn(metrics::serve(listener, snapshots));
    }

    let monitor = LinkMonitor::new().map_err(DaemonError::Links)?;
    // SAFETY: the monitor owns its socket for as long as the AsyncFd holds the monitor, and
    // its raw descriptor never changes.
    let monitor = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(monitor, tokio::io::Interest::READABLE)
    }
    .map_err(|e| DaemonError::Links(e.into()))?;
    tokio::spawn(watch_links(monitor, tx.clone()));
    tokio::spawn(drive_follower(follow, tx.clone()));
    notify::ready(&format!("serving {}", socket_path.display()));
    static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(connection(
                        stream,
                        conn,
                        tx.clone(),
                        authority,
                        Arc::clone(&tally),
                    ));
                }
                Err(e) => log::warn!("accepting a connection: {e}"),
            },
            _ = hup.recv() => {
                log::info!("SIGHUP: reloading the configuration");
                notify::reloading();
                let _ = tx.send(Command::Reload).await;
            }
            _ = term.recv() => { log::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { log::info!("SIGINT: shutting down"); break; }
        }
    }
    notify::stopping("shutting down");
    drop(listener);
    let _ = std::fs::remove_file(&socket_path);
    let (done, finished) = oneshot::channel();
    if tx.send(Command::Shutdown { done }).await.is_ok() {
        let _ = finished.await;
    }
    let _ = worker.join();
    log::info!("stopped");
    Ok(())
}

/// Forward interface events to the controller.
async fn watch_links(
    mut monitor: tokio::io::unix::AsyncFd<LinkMonitor>,
    tx: mpsc::Sender<Command>,
) {
    loop {
        let Ok(mut guard) = monitor.readable_mut().await else {
            log::error!("interface events: the netlink socket failed; no longer watching");
            return;
        };
        match guard.get_inner_mut().read_events() {
            Ok(events) => {
                guard.clear_ready();
                if !events.is_empty() && tx.send(Command::Links(events)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                guard.clear_ready();
                log::error!("reading interface events: {e}");
            }
        }
    }
}

/// Drive the follower from this loop: when its ring buffer is readable or its deadline
/// passes, have the controller thread run it; what to watch comes from the controller.
async fn drive_follower(
    mut drives: watch::Receiver<Option<FollowDrive>>,
    tx: mpsc::Sender<Command>,
) {
    use tokio::io::unix::AsyncFd;
    let mut watched: Option<(u64, AsyncFd<std::os::fd::OwnedFd>)> = None;
    loop {
        let drive = drives.borrow_and_update().clone();
        let Some(drive) = drive else {
            watched = None;
            if drives.changed().await.is_err() {
                return;
            }
            continue;
        };
        if watched.as_ref().is_none_or(|(g, _)| *g != drive.generation) {
            let fd = match drive.fd.try_clone() {
                Ok(fd) => fd,
                Err(e) => {
                    log::error!("follow: duplicating the event descriptor: {e}");
                    return;
                }
            };
            // SAFETY: the AsyncFd owns this duplicate for as long as it is registered.
            let registered =
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
            match registered {
                Ok(afd) => watched = Some((drive.generation, afd)),
                Err(e) => {
                    log::error!("follow: watching the event descriptor: {e}");
                    return;
                }
            }
        }
        let (_, afd) = watched.as_ref().expect("set above");
        let deadline = tokio::time::Instant::from_std(drive.deadline);
        let run = || async {
            let (done, ran) = oneshot::channel();
            if tx.send(Command::Follow { done }).await.is_err() {
                return false;
            }
            ran.await.is_ok()
        };
        tokio::select! {
            ready = afd.readable() => {
                let Ok(mut guard) = ready else {
                    log::error!("follow: the event descriptor failed; no longer watching");
                    return;
                };
                if !run().await {
                    return;
                }
                // Only clears readiness that came before the run (tokio compares ticks).
                guard.clear_ready();
            }
            () = tokio::time::sleep_until(deadline) => {
                if !run().await {
                    return;
                }
            }
            changed = drives.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

fn run_controller(
    mut controller: Controller,
    mut rx: mpsc::Receiver<Command>,
    tally: &RequestTally,
) {
    while let Some(command) = rx.blocking_recv() {
        let flow = match command {
            Command::Metrics { max_series, reply } => {
                scrape(&mut controller, &mut rx, tally, max_series, reply)
            }
            command => handle(&mut controller, command),
        };
        if let Flow::Stop { done } = flow {
            controller.shutdown();
            let _ = done.send(());
            return;
        }
    }
}

/// Whether the controller thread goes on, or runs the shut-down sequence and stops.
enum Flow {
    Continue,
    Stop { done: oneshot::Sender<()> },
}

/// Take one scrape's snapshot, serving the commands that arrive meanwhile between its steps
/// (so a scrape holds a request for one step at most). A shut-down ends the scrape
/// unanswered.
fn scrape(
    controller: &mut Controller,
    rx: &mut mpsc::Receiver<Command>,
    tally: &RequestTally,
    max_series: usize,
    reply: oneshot::Sender<Result<Snapshot, String>>,
) -> Flow {
    let mut taking = match controller.start_metrics(max_series, tally.counts()) {
        Ok(taking) => taking,
        Err(e) => {
            let _ = reply.send(Err(e.to_string()));
            return Flow::Continue;
        }
    };
    loop {
        match taking.step(controller.counters(), metrics::STEP) {
            Ok(true) => {
                let _ = reply.send(Ok(taking.finish()));
                return Flow::Continue;
            }
            Ok(false) => {}
            Err(e) => {
                let _ = reply.send(Err(e.to_string()));
                return Flow::Continue;
            }
        }
        while let Ok(command) = rx.try_recv() {
            match command {
                // Scrapes are taken one at a time (http.rs): another one is a client's
                // mistake; it waits for none.
                Command::Metrics { reply, .. } => {
                    let _ = reply.send(Err("another scrape is being taken".into()));
                }
                command => {
                    if let stop @ Flow::Stop { .. } = handle(controller, command) {
                        return stop;
                    }
                }
            }
        }
    }
}

/// Apply one command other than a scrape.
fn handle(controller: &mut Controller, command: Command) -> Flow {
    match command {
        Command::Request {
            conn,
            client,
            request,
            reply,
        } => {
            let outcome = dispatch(controller, conn, client, request);
            let _ = reply.send(outcome);
        }
        Command::Disconnected { conn, client } => controller.disconnected(conn, client),
        Command::Metrics { reply, .. } => {
            let _ = reply.send(Err("a scrape was handed to the wrong place".into()));
        }
        Command::Links(events) => {
            for event in events {
                controller.link_event(event);
            }
        }
        Command::Reload => match controller.reload() {
            Ok(_) => notify::ready("configuration reloaded"),
            Err(e) => {
                log::error!("reload refused: {e}");
                notify::ready(&format!("reload refused: {e}"));
            }
        },
        Command::Follow { done } => {
            controller.follow_tick();
            let _ = done.send(());
        }
        Command::Shutdown { done } => return Flow::Stop { done },
    }
    Flow::Continue
}

/// Apply one request; returns the response and the connection's registration afterwards.
fn dispatch(
    ctl: &mut Controller,
    conn: ConnId,
    client: Option<ClientId>,
    request: Request,
) -> (Response, Option<ClientId>) {
    let mut registration = client;
    let response = match reply(ctl, conn, client, &mut registration, request) {
        Ok(reply) => Response::Ok(reply),
        Err(e) => Response::Error(error_reply(&e)),
    };
    (response, registration)
}

/// The controller's answer to `request`, as a wire reply.
fn reply(
    ctl: &mut Controller,
    conn: ConnId,
    client: Option<ClientId>,
    registration: &mut Option<ClientId>,
    request: Request,
) -> Result<Reply, Refusal> {
    let page = |p: Option<u32>| p.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let registered = || client.ok_or(Refusal::NotRegistered);
    Ok(match request {
        Request::Register {
            client: name,
            persistent,
        } => {
            if client.is_some() {
                return Err(Refusal::AlreadyRegistered);
            }
            let handle = ctl.register(&name, persistent)?;
            *registration = Some(handle);
            Reply::Registered { handle }
        }
        Request::Deregister => {
            let memberships = ctl.deregister(registered()?)?;
            *registration = None;
            Reply::Deregistered { memberships }
        }
        Request::Membership { iface, group, op } => {
            let filter = ctl.membership(registered()?, &iface, group, &op)?;
            Reply::Applied {
                filter: filter.as_ref().map(FilterView::from),
            }
        }
        Request::GetFilter {
            iface,
            group,
            client: name,
        } => {
            let whose = name.map_or(client, |n| ctl.persistent_client(&n));
            Reply::Filter(ctl.get_filter(whose, &iface, group)?)
        }
        Request::ListStart {
            filter: ListFilter { iface, group },
            page: p,
        } => Reply::Page(ctl.list_start(conn, iface.as_deref(), group, page(p))?),
        Request::ListNext { cursor, page: p } => {
            Reply::Page(ctl.list_next(conn, cursor, page(p))?)
        }
        Request::ListEnd { cursor } => {
            ctl.list_end(conn, cursor);
            Reply::Ended
        }
        Request::Stats => Reply::Stats(ctl.stats()?),
        Request::Attach {
            iface,
            mode,
            replace,
            object,
            follow,
            drop_unjoined,
        } => match ctl.attach(
            &iface,
            mode,
            replace,
            object.as_deref(),
            follow,
            drop_unjoined,
        )? {
            AttachOutcome::Attached(a) => Reply::Attached(a),
            AttachOutcome::Replaced(r) => Reply::Replaced(r),
        },
        Request::Detach { iface, keep } => Reply::Detached(ctl.detach(&iface, keep)?),
        Request::Owner { iface } => Reply::Owner(ctl.owner(&iface)?),
        Request::Reload => Reply::Reloaded(ctl.reload()?),
    })
}

async fn respond(stream: &mut UnixStream, response: &Response) -> io::Result<()> {
    let body = serde_json::to_vec(response).map_err(io::Error::other)?;
    write_frame(stream, &body).await
}

async fn connection(
    mut stream: UnixStream,
    conn: ConnId,
    tx: mpsc::Sender<Command>,
    authority: Authority,
    tally: Arc<RequestTally>,
) {
    let (uid, gid, pid) = match stream.peer_cred() {
        Ok(c) => (c.uid(), c.gid(), c.pid()),
        Err(e) => {
            log::warn!("connection {conn}: no peer credentials ({e}); closing");
            return;
        }
    };
    let authorized = authority.allows(uid, gid, pid);
    let mut client: Option<ClientId> = None;
    loop {
        let frame = match read_frame(&mut stream, MAX_REQUEST_BYTES).await {
            Ok(frame) => frame,
            Err(FrameError::Closed) => break,
            Err(FrameError::TooLarge { len, max }) => {
                let response = Response::Error(error_reply(&Refusal::TooLarge { len, max }));
                tally.record(metrics::UNDECODED, &response);
                let _ = respond(&mut stream, &response).await;
                break;
            }
            Err(FrameError::Io(e)) => {
                log::debug!("connection {conn}: {e}");
                break;
            }
        };
        let (kind, response) = match decode_request(&frame) {
            Err(e) => (
                metrics::UNDECODED,
                Response::Error(error_reply(&Refusal::Protocol(e))),
            ),
            Ok(request) if changes_state(&request) && !authorized => (
                request.kind(),
                Response::Error(error_reply(&authority.refusal(uid))),
            ),
            Ok(request) => {
                let kind = request.kind();
                let (reply, rx) = oneshot::channel();
                let command = Command::Request {
                    conn,
                    client,
                    request,
                    reply,
                };
                if tx.send(command).await.is_err() {
                    break;
                }
                let Ok((response, registration)) = rx.await else {
                    break;
                };
                client = registration;
                (kind, response)
            }
        };
        tally.record(kind, &response);
        if respond(&mut stream, &response).await.is_err() {
            break;
        }
    }
    let _ = tx.send(Command::Disconnected { conn, client }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority() {
        let root_only = Authority { gid: None };
        assert!(root_only.allows(0, 0, None));
        assert!(!root_only.allows(1000, 1000, None));
        let group = Authority { gid: Some(4242) };
        assert!(group.allows(1000, 4242, None));
        assert!(!group.allows(1000, 1000, None));
        assert!(root_only.refusal(1000).to_string().contains("uid 1000"));
        assert_eq!(
            group.refusal(7).to_string(),
            "permission denied: uid 7 may not change the filter (only root and members of \
             group 4242)"
        );
        assert_eq!(
            error_reply(&root_only.refusal(7)).kind,
            ErrorKind::Permission
        );
    }
}
