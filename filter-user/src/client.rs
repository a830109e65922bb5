//! The library client: the daemon's requests for applications that link msfilter.
//!
//! A [`Client`] is a registration: [`Client::register`] returns one whose memberships last
//! as long as it does — dropping it (or [`Client::deregister`]) undoes all of them, in the
//! kernel and in the XDP maps. [`Client::register_persistent`] attaches to a named client
//! that outlives the connection (what the CLI uses); [`Client::connect`] opens an
//! unregistered connection for reading (list, stats).
//!
//! ```no_run
//! # async fn demo() -> Result<(), msfilter::client::ClientError> {
//! use msfilter::client::Client;
//! let mut c = Client::register("/run/msfilter.sock", "market-data").await?;
//! c.join("eth1", "232.1.1.1".parse().unwrap()).await?;
//! c.block("eth1", "232.1.1.1".parse().unwrap(), "10.0.0.5".parse().unwrap()).await?;
//! # Ok(()) }
//! ```

use std::{
    io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use tokio::net::UnixStream;

use crate::{
    daemon::protocol::{
        AttachOutcome, Detached, Envelope, ErrorReply, FilterView, FrameError, GroupEntry,
        ListFilter, MAX_RESPONSE_BYTES, MembershipRequest as Op, OwnerView, PROTOCOL_VERSION, Page,
        Reloaded, Reply, Request, Response, StatsView, read_frame, write_frame,
    },
    datapath::AttachMode,
    policy::Mode,
};

/// Errors of the library client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the msfilter daemon at {path}: {source} (is `msfilter daemon` running?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Io(#[from] io::Error),
    #[error("the daemon sent something this client does not understand: {0}")]
    Protocol(String),
    /// The daemon refused the request; the reply says why.
    #[error("{0}")]
    Refused(#[from] ErrorReply),
}

impl ClientError {
    /// The kernel's errno name, when the kernel refused the request.
    pub fn errno(&self) -> Option<&str> {
        match self {
            Self::Refused(e) => e.errno.as_deref(),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A connection to the daemon, registered or not.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// An unregistered connection: enough for `list`, `stats` and `filter` reads.
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Self> {
        let path = socket.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self { stream })
    }

    /// Register a client named `name` whose memberships end with this value.
    pub async fn register(socket: impl AsRef<Path>, name: &str) -> Result<Self> {
        Self::registered(socket, name, false).await
    }

    /// Act for the persistent client `name`: its memberships stay after this connection
    /// closes, until they are left.
    pub async fn register_persistent(socket: impl AsRef<Path>, name: &str) -> Result<Self> {
        Self::registered(socket, name, true).await
    }

    async fn registered(socket: impl AsRef<Path>, name: &str, persistent: bool) -> Result<Self> {
        let mut c = Self::connect(socket).await?;
        match c
            .request(Request::Register {
                client: name.to_string(),
                persistent,
            })
            .await?
        {
            Reply::Registered { .. } => Ok(c),
            other => Err(unexpected(&other)),
        }
    }

    /// Send any request and wait for its reply.
    pub async fn request(&mut self, request: Request) -> Result<Reply> {
        let body = serde_json::to_vec(&Envelope {
            version: PROTOCOL_VERSION,
            request,
        })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        write_frame(&mut self.stream, &body).await?;
        let frame = match read_frame(&mut self.stream, MAX_RESPONSE_BYTES).await {
            Ok(f) => f,
            Err(FrameError::Closed) => {
                return Err(ClientError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the daemon closed the connection",
                )));
            }
            Err(FrameError::TooLarge { len, max }) => {
                return Err(ClientError::Protocol(format!(
                    "reply of {len} bytes exceeds {max}"
                )));
            }
            Err(FrameError::Io(e)) => return Err(e.into()),
        };
        match serde_json::from_slice::<Response>(&frame)
            .map_err(|e| ClientError::Protocol(e.to_string()))?
        {
            Response::Ok(reply) => Ok(reply),
            Response::Error(e) => Err(ClientError::Refused(e)),
        }
    }

    async fn membership(
        &mut self,
        iface: &str,
        group: IpAddr,
        op: Op,
    ) -> Result<Option<FilterView>> {
        match self
            .request(Request::Membership {
                iface: iface.to_string(),
                group,
                op,
            })
            .await?
        {
            Reply::Applied { filter } => Ok(filter),
            other => Err(unexpected(&other)),
        }
    }

    /// Join `group` on `iface` for any source. Returns the resulting filter.
    pub async fn join(&mut self, iface: &str, group: IpAddr) -> Result<Option<FilterView>> {
        self.membership(iface, group, Op::JoinGroup).await
    }

    /// Leave `group` on `iface` (and every source with it).
    pub async fn leave(&mut self, iface: &str, group: IpAddr) -> Result<Option<FilterView>> {
        self.membership(iface, group, Op::LeaveGroup).await
    }

    /// Stop receiving `source` on an any-source membership.
    pub async fn block(
        &mut self,
        iface: &str,
        group: IpAddr,
        source: IpAddr,
    ) -> Result<Option<FilterView>> {
        self.membership(iface, group, Op::BlockSource { source })
            .await
    }

    /// Receive `source` again on an any-source membership.
    pub async fn unblock(
        &mut self,
        iface: &str,
        group: IpAddr,
        source: IpAddr,
    ) -> Result<Option<FilterView>> {
        self.membership(iface, group, Op::UnblockSource { source })
            .await
    }

    /// Receive `source` on a controlled-source (INCLUDE) membership.
    pub async fn join_source(
        &mut self,
        iface: &str,
        group: IpAddr,
        source: IpAddr,
    ) -> Result<Option<FilterView>> {
        self.membership(iface, group, Op::JoinSourceGroup { source })
            .await
    }

    /// Stop receiving `source` on a controlled-source membership.
    pub async fn leave_source(
        &mut self,
        iface: &str,
        group: IpAddr,
        source: IpAddr,
    ) -> Result<Option<FilterView>> {
        self.membership(iface, group, Op::LeaveSourceGroup { source })
            .await
    }

    /// Set the whole filter at once.
    pub async fn set_filter(
        &mut self,
        iface: &str,
        group: IpAddr,
        mode: Mode,
        sources: Vec<IpAddr>,
    ) -> Result<Option<FilterView>> {
        self.membership(iface, group, Op::SetFilter { mode, sources })
            .await
    }

    /// This client's filter (as the kernel holds it) and the interface's merged filter.
    pub async fn filter(
        &mut self,
        iface: &str,
        group: IpAddr,
    ) -> Result<(Option<FilterView>, Option<FilterView>)> {
        self.filter_of(None, iface, group).await
    }

    /// The persistent client `client`'s filter (or this registration's, with `None`) and the
    /// interface's merged filter.
    pub async fn filter_of(
        &mut self,
        client: Option<&str>,
        iface: &str,
        group: IpAddr,
    ) -> Result<(Option<FilterView>, Option<FilterView>)> {
        match self
            .request(Request::GetFilter {
                iface: iface.to_string(),
                group,
                client: client.map(str::to_string),
            })
            .await?
        {
            Reply::Filter(report) => Ok((report.client, report.interface)),
            other => Err(unexpected(&other)),
        }
    }

    /// Enumerate the enforced filters page by page; `visit` gets each page in order.
    pub async fn list(
        &mut self,
        filter: ListFilter,
        page: Option<u32>,
        mut visit: impl FnMut(Vec<GroupEntry>),
    ) -> Result<()> {
        self.list_pages(filter, page, |page| visit(page.entries))
            .await
    }

    /// [`Client::list`] with whole pages: also, for groups on followed interfaces, the
    /// sockets that contribute (`Page::followed`).
    pub async fn list_pages(
        &mut self,
        filter: ListFilter,
        page: Option<u32>,
        mut visit: impl FnMut(Page),
    ) -> Result<()> {
        let mut reply = self.request(Request::ListStart { filter, page }).await?;
        loop {
            match reply {
                Reply::Page(next) => {
                    let cursor = next.cursor;
                    visit(next);
                    match cursor {
                        Some(cursor) => {
                            reply = self.request(Request::ListNext { cursor, page }).await?;
                        }
                        None => return Ok(()),
                    }
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// Counters by reason, totals, and what the daemon manages.
    pub async fn stats(&mut self) -> Result<StatsView> {
        match self.request(Request::Stats).await? {
            Reply::Stats(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    /// Take ownership of `iface`: its entries are written, then the program is attached
    /// (`mode`: driver or skb; `None`: driver, falling back to skb). With `replace`, another
    /// XDP program there is replaced, and on an interface msfilter owns its program is swapped
    /// through the link (for `object`, an XDP object file the daemon reads, or its own).
    pub async fn attach(
        &mut self,
        iface: &str,
        mode: Option<AttachMode>,
        replace: bool,
        object: Option<&str>,
    ) -> Result<AttachOutcome> {
        self.attach_following(iface, mode, replace, object, false, false)
            .await
    }

    /// [`Client::attach`], and with `follow` the interface is followed: XDP enforces the
    /// merge of every socket there, read from the kernel (applications unchanged, this
    /// client's own sockets included), instead of the merge of msfilter's clients. On an
    /// interface msfilter owns already, `follow` hands its entries to the follower. With
    /// `drop_unjoined` (needs `follow`), XDP also drops the groups no socket there joined.
    pub async fn attach_following(
        &mut self,
        iface: &str,
        mode: Option<AttachMode>,
        replace: bool,
        object: Option<&str>,
        follow: bool,
        drop_unjoined: bool,
    ) -> Result<AttachOutcome> {
        let request = Request::Attach {
            iface: iface.to_string(),
            mode,
            replace,
            object: object.map(str::to_string),
            follow,
            drop_unjoined,
        };
        match self.request(request).await? {
            Reply::Attached(a) => Ok(AttachOutcome::Attached(a)),
            Reply::Replaced(r) => Ok(AttachOutcome::Replaced(r)),
            other => Err(unexpected(&other)),
        }
    }

    /// Release `iface`: detach the program and delete its entries, or with `keep` leave it
    /// enforcing the last policy.
    pub async fn detach(&mut self, iface: &str, keep: bool) -> Result<Detached> {
        let request = Request::Detach {
            iface: iface.to_string(),
            keep,
        };
        match self.request(request).await? {
            Reply::Detached(d) => Ok(d),
            other => Err(unexpected(&other)),
        }
    }

    /// Who runs XDP on `iface`.
    pub async fn owner(&mut self, iface: &str) -> Result<OwnerView> {
        let request = Request::Owner {
            iface: iface.to_string(),
        };
        match self.request(request).await? {
            Reply::Owner(o) => Ok(o),
            other => Err(unexpected(&other)),
        }
    }

    /// Have the daemon read its configuration file again and apply the difference.
    pub async fn reload(&mut self) -> Result<Reloaded> {
        match self.request(Request::Reload).await? {
            Reply::Reloaded(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// End the registration now; returns how many memberships were undone.
    pub async fn deregister(mut self) -> Result<u32> {
        match self.request(Request::Deregister).await? {
            Reply::Deregistered { memberships } => Ok(memberships),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(format!("unexpected reply {reply:?}"))
}
