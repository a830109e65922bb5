//! The daemon's wire protocol.
//!
//! A message is a 4-byte big-endian length followed by that many bytes of JSON. Every
//! request carries the protocol version; the daemon answers every request with exactly one
//! [`Response`], in order. Requests longer than [`MAX_REQUEST_BYTES`] are answered with an
//! error and the connection is closed (the stream cannot be trusted after a bogus length);
//! a request that is not valid JSON for this version gets an error and the connection
//! stays usable.

use std::{io, net::IpAddr};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Version of this protocol. A request of another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest request the daemon reads (a full filter with many thousand sources fits).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// Largest response a client reads.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Default and largest page of an enumeration, in items: a group and each of its sources
/// count one each, so a page stays bounded however many sources a group lists.
pub const DEFAULT_PAGE: u32 = 4096;
pub const MAX_PAGE: u32 = 65_536;

/// Filter mode on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterMode {
    Include,
    Exclude,
}

impl From<msfilter_common::Mode> for FilterMode {
    fn from(m: msfilter_common::Mode) -> Self {
        match m {
            msfilter_common::Mode::Include => Self::Include,
            msfilter_common::Mode::Exclude => Self::Exclude,
        }
    }
}

impl From<FilterMode> for msfilter_common::Mode {
    fn from(m: FilterMode) -> Self {
        match m {
            FilterMode::Include => Self::Include,
            FilterMode::Exclude => Self::Exclude,
        }
    }
}

impl std::fmt::Display for FilterMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Include => "INCLUDE",
            Self::Exclude => "EXCLUDE",
        })
    }
}

/// A membership request: what the socket API calls join, leave, block, unblock, join-source,
/// leave-source and set-filter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Any-source join (EXCLUDE {}).
    Join,
    /// Leave the group, and every source with it.
    Leave,
    /// Any-source: stop receiving from `source`.
    Block { source: IpAddr },
    /// Any-source: receive from `source` again.
    Unblock { source: IpAddr },
    /// Controlled-source: receive from `source` (INCLUDE mode).
    JoinSource { source: IpAddr },
    /// Controlled-source: stop receiving from `source`.
    LeaveSource { source: IpAddr },
    /// Full state: the whole filter at once.
    SetFilter {
        mode: FilterMode,
        sources: Vec<IpAddr>,
    },
}

/// Selects enumerated entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    /// Interface name or index.
    pub iface: Option<String>,
    pub group: Option<IpAddr>,
}

/// A request, as sent: `{"version": 1, "request": "...", ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// Register a client. `persistent`: a named client that outlives this connection until
    /// its memberships are left (the CLI's); otherwise the registration ends with the
    /// connection and everything it asked for is undone.
    Register { client: String, persistent: bool },
    /// End the registration: undo every membership of this client.
    Deregister,
    /// Change a membership of this client.
    Membership {
        iface: String,
        group: IpAddr,
        #[serde(flatten)]
        op: Op,
    },
    /// A client's filter for a group (as the kernel holds it), and the interface's. The
    /// client is the persistent client named `client`, else this connection's registration.
    GetFilter {
        iface: String,
        group: IpAddr,
        #[serde(default)]
        client: Option<String>,
    },
    /// Start an enumeration of the enforced filters; answered with the first page.
    ListStart {
        #[serde(default)]
        filter: ListFilter,
        page: Option<u32>,
    },
    /// The next page of an enumeration.
    ListNext { cursor: u64, page: Option<u32> },
    /// End an enumeration early.
    ListEnd { cursor: u64 },
    /// Counters.
    Stats,
    /// Take ownership of an interface: attach the program (its entries are in the maps
    /// first). On an interface msfilter owns, `replace` swaps the program atomically through
    /// the link (from `object`, an XDP object file the daemon reads, or its own); on one
    /// where another XDP program runs, `replace` replaces that program.
    Attach {
        iface: String,
        #[serde(default)]
        mode: Option<String>,
        #[serde(default)]
        replace: bool,
        #[serde(default)]
        object: Option<String>,
    },
    /// Release an interface: detach the program and delete its entries; with `keep`, leave
    /// the program enforcing the last policy (pinned), without the daemon's updates.
    /// Memberships stay.
    Detach {
        iface: String,
        #[serde(default)]
        keep: bool,
    },
    /// Who runs XDP on an interface.
    Owner { iface: String },
    /// Re-read the configuration file and apply the difference.
    Reload,
}

/// What a client holds for a group, as read back from its socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterView {
    pub mode: FilterMode,
    pub sources: Vec<IpAddr>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterView {
    pub packets: u64,
    pub bytes: u64,
}

impl From<msfilter_common::Counter> for CounterView {
    fn from(c: msfilter_common::Counter) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

/// One enforced group filter with its counters. A group with more sources than fit a page
/// continues on the next page in an entry with `continued` set, holding the next sources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub iface: String,
    pub ifindex: u32,
    pub group: IpAddr,
    pub mode: FilterMode,
    pub sources: Vec<SourceEntry>,
    pub passed: CounterView,
    pub dropped: CounterView,
    /// Registered clients that are members.
    pub members: u32,
    /// This entry continues the same group from the previous page (more sources).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continued: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEntry {
    pub source: IpAddr,
    /// Frames matching this entry (dropped in EXCLUDE mode, passed in INCLUDE mode).
    pub matched: CounterView,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    pub reason: String,
    pub verdict: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentView {
    pub iface: String,
    pub ifindex: u32,
    pub mode: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    pub reasons: Vec<ReasonCount>,
    pub passed: CounterView,
    pub dropped: CounterView,
    pub clients: u32,
    pub groups: u32,
    pub source_entries: u64,
    pub attachments: Vec<AttachmentView>,
    /// Kernel memory of the maps, as the kernel reports it (bytes).
    pub map_memory: u64,
}

/// Who runs XDP on an interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerView {
    pub iface: String,
    pub ifindex: u32,
    /// "msfilter" (this daemon), "msfilter-kept" (released with --keep: msfilter's program
    /// enforces the last policy, frozen), "other" (another XDP program), or "none".
    pub owner: String,
    pub program_id: Option<u32>,
    pub program_name: Option<String>,
    /// "driver" or "skb".
    pub mode: Option<String>,
    /// Since when (seconds since the Unix epoch): when this daemon took the interface over,
    /// or when the other program was loaded.
    pub since: Option<u64>,
    /// The daemon's process id, when it owns the interface.
    pub pid: Option<u32>,
    /// Taken over from a pinned link left by an earlier run.
    pub adopted: bool,
    /// The program was replaced (`attach --replace`) since.
    pub replaced: bool,
    pub groups: u32,
    pub sources: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    Registered {
        handle: u64,
    },
    Deregistered {
        memberships: u32,
    },
    /// A membership request was applied; this is the client's filter afterwards (`None`:
    /// no longer a member).
    Applied {
        filter: Option<FilterView>,
    },
    Filter {
        iface: String,
        group: IpAddr,
        /// This client's socket filter, as the kernel reports it.
        client: Option<FilterView>,
        /// The interface-level filter XDP enforces (merge of all clients).
        interface: Option<FilterView>,
    },
    Page {
        entries: Vec<GroupEntry>,
        /// Present when more entries follow: pass it to `ListNext`.
        cursor: Option<u64>,
    },
    Stats(StatsView),
    Ended,
    Attached {
        iface: String,
        ifindex: u32,
        mode: String,
        program_id: u32,
        /// Taken over from a link pinned earlier rather than attached now.
        adopted: bool,
        /// Entries the interface has in the maps.
        groups: u32,
        sources: u64,
    },
    Replaced {
        iface: String,
        old_program: u32,
        new_program: u32,
    },
    Detached {
        iface: String,
        /// Map entries deleted (groups plus sources); 0 with `keep`.
        deleted: u64,
        kept: bool,
    },
    Owner(OwnerView),
    Reloaded {
        /// One line per change applied.
        changes: Vec<String>,
    },
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The request is wrong in itself (not a multicast group, unknown interface, ...);
    /// nothing was tried.
    Invalid,
    /// The kernel refused the socket option; `errno` names why.
    Kernel,
    /// The peer may not do this.
    Permission,
    /// Not a valid message of this protocol version.
    Protocol,
    /// The XDP maps or attachment could not follow; the request was undone.
    Datapath,
    /// The request needs a registration first, or refers to an unknown enumeration.
    State,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    /// The kernel's errno name (e.g. "EADDRNOTAVAIL") for kernel errors.
    pub errno: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.errno {
            Some(errno) => write!(f, "{errno}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ErrorReply {}

impl ErrorReply {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            errno: None,
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Ok(Reply),
    Error(ErrorReply),
}

/// Reading a message failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("message of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Read one length-prefixed message of at most `max` bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Write one length-prefixed message.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_json_shape() {
        let env = Envelope {
            version: PROTOCOL_VERSION,
            request: Request::Membership {
                iface: "eth1".into(),
                group: "232.1.1.1".parse().unwrap(),
                op: Op::Block {
                    source: "10.0.0.5".parse().unwrap(),
                },
            },
        };
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(
            json,
            r#"{"version":1,"request":"membership","iface":"eth1","group":"232.1.1.1","op":"block","source":"10.0.0.5"}"#
        );
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), env);
    }

    #[test]
    fn unknown_fields_of_a_request_are_rejected_by_shape() {
        assert!(serde_json::from_str::<Envelope>(r#"{"version":1,"request":"explode"}"#).is_err());
        assert!(serde_json::from_str::<Envelope>(r#"{"request":"stats"}"#).is_err());
        assert!(
            serde_json::from_str::<Envelope>(
                r#"{"version":1,"request":"membership","iface":"e","group":"nonsense","op":"join"}"#
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, b"hello").await.unwrap();
        assert_eq!(read_frame(&mut b, 16).await.unwrap(), b"hello");
        write_frame(&mut a, &[0u8; 17]).await.unwrap();
        assert!(matches!(
            read_frame(&mut b, 16).await,
            Err(FrameError::TooLarge { len: 17, max: 16 })
        ));
        drop(a);
        let mut rest = Vec::new();
        let _ = b.read_to_end(&mut rest).await;
        assert!(matches!(
            read_frame(&mut b, 16).await,
            Err(FrameError::Closed)
        ));
    }
}
