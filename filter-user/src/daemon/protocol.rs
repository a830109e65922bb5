//! The daemon's wire protocol.
//!
//! A message is a 4-byte big-endian length followed by that many bytes of JSON. Every
//! request carries the protocol version; the daemon answers every request with exactly one
//! [`Response`], in order. Requests longer than [`MAX_REQUEST_BYTES`] are answered with an
//! error and the connection is closed (the stream cannot be trusted after a bogus length);
//! a request that is not valid JSON for this version, or has a field its kind does not
//! have, gets an error and the connection stays usable ([`decode_request`]).
//!
//! The bodies of the replies are the daemon's reports (`report.rs`), carried as they are;
//! the `op` of a membership request is the socket-option layer's request.

use std::{io, net::IpAddr};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

pub use super::report::{
    AttachOutcome, Attached, AttachmentView, CarrierView, CounterView, Detached, FilterReport,
    FilterView, FollowStatsView, FollowedGroupView, FollowedSocketView, GroupEntry, OwnerView,
    Page, ReasonCount, Reloaded, Replaced, SourceEntry, StatsView,
};
use crate::datapath::AttachMode;
pub use crate::sockopt::Request as MembershipRequest;

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
    /// Change a membership of this client: `op` and its fields are the socket-option
    /// layer's [`MembershipRequest`].
    Membership {
        iface: String,
        group: IpAddr,
        #[serde(flatten)]
        op: MembershipRequest,
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
        mode: Option<AttachMode>,
        #[serde(default)]
        replace: bool,
        #[serde(default)]
        object: Option<String>,
        /// Follow the interface: XDP enforces the merge of every socket there, read from
        /// the kernel (msfilter's clients included), instead of the merge of msfilter's
        /// clients.
        #[serde(default)]
        follow: bool,
        /// With `follow`: XDP also drops the groups no socket on the interface joined
        /// (docs/follow.md).
        #[serde(default)]
        drop_unjoined: bool,
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

impl Request {
    /// The request's kind, as the metrics name it: its `request` tag, or for a membership
    /// request its `op`.
    pub const fn kind(&self) -> &'static str {
        use MembershipRequest as Op;
        match self {
            Self::Register { .. } => "register",
            Self::Deregister => "deregister",
            Self::Membership { op, .. } => match op {
                Op::JoinGroup => "join",
                Op::LeaveGroup => "leave",
                Op::BlockSource { .. } => "block",
                Op::UnblockSource { .. } => "unblock",
                Op::JoinSourceGroup { .. } => "join-source",
                Op::LeaveSourceGroup { .. } => "leave-source",
                Op::SetFilter { .. } => "set-filter",
            },
            Self::GetFilter { .. } => "get-filter",
            Self::ListStart { .. } => "list-start",
            Self::ListNext { .. } => "list-next",
            Self::ListEnd { .. } => "list-end",
            Self::Stats => "stats",
            Self::Attach { .. } => "attach",
            Self::Detach { .. } => "detach",
            Self::Owner { .. } => "owner",
            Self::Reload => "reload",
        }
    }
}

/// Why a frame is not a request of this protocol version.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the message is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("the message has no protocol version")]
    NoVersion,
    #[error("protocol version {0} is not supported; this daemon speaks version {PROTOCOL_VERSION}")]
    Version(u64),
    #[error("not a valid request: {0}")]
    Shape(#[source] serde_json::Error),
    #[error("unknown field `{field}` in a {request} request (its fields: {known})")]
    UnknownField {
        request: String,
        field: String,
        known: String,
    },
}

/// Decode a request: the version first, so a newer client hears about the version rather
/// than about a shape this daemon does not know; then the shape; then every field given,
/// nested ones included, must be one the request has (a misspelt optional field would
/// otherwise be taken as absent).
pub fn decode_request(frame: &[u8]) -> Result<Request, DecodeError> {
    let given: serde_json::Value = serde_json::from_slice(frame).map_err(DecodeError::NotJson)?;
    match given.get("version").and_then(serde_json::Value::as_u64) {
        None => return Err(DecodeError::NoVersion),
        Some(v) if v != u64::from(PROTOCOL_VERSION) => return Err(DecodeError::Version(v)),
        Some(_) => {}
    }
    let envelope = serde_json::from_value::<Envelope>(given.clone()).map_err(DecodeError::Shape)?;
    // Every field of a request is serialised, absent optional ones as null: what the decoded
    // request serialises to names every field it knows.
    let known = serde_json::to_value(&envelope).map_err(DecodeError::Shape)?;
    if let (Some(given), Some(known)) = (given.as_object(), known.as_object())
        && let Some((field, siblings)) = unknown_field(given, known)
    {
        // "detach", or "membership block": the request's tag, and its op if it has one.
        let request = ["request", "op"]
            .iter()
            .filter_map(|tag| known.get(*tag).and_then(serde_json::Value::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(DecodeError::UnknownField {
            request,
            field,
            known: siblings,
        });
    }
    Ok(envelope.request)
}

/// The first key of `given` (depth first, as `outer.inner`) that `known` lacks, with the
/// keys `known` has at that level.
fn unknown_field(
    given: &serde_json::Map<String, serde_json::Value>,
    known: &serde_json::Map<String, serde_json::Value>,
) -> Option<(String, String)> {
    for (key, value) in given {
        match (known.get(key), value) {
            (None, _) => {
                let names: Vec<&str> = known
                    .keys()
                    .map(String::as_str)
                    .filter(|k| !matches!(*k, "version" | "request" | "op"))
                    .collect();
                let names = if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                };
                return Some((key.clone(), names));
            }
            (Some(serde_json::Value::Object(inner)), serde_json::Value::Object(g)) => {
                if let Some((field, names)) = unknown_field(g, inner) {
                    return Some((format!("{key}.{field}"), names));
                }
            }
            _ => {}
        }
    }
    None
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
    Filter(FilterReport),
    Page(Page),
    Stats(StatsView),
    Ended,
    Attached(Attached),
    Replaced(Replaced),
    Detached(Detached),
    Owner(OwnerView),
    Reloaded(Reloaded),
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

impl ErrorKind {
    /// Every kind, in the order of the documentation.
    pub const ALL: [Self; 6] = [
        Self::Invalid,
        Self::Kernel,
        Self::Permission,
        Self::Protocol,
        Self::Datapath,
        Self::State,
    ];

    /// The kind's name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Kernel => "kernel",
            Self::Permission => "permission",
            Self::Protocol => "protocol",
            Self::Datapath => "datapath",
            Self::State => "state",
        }
    }
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
                op: MembershipRequest::BlockSource {
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

    #[test]
    fn decode_names_the_problem() {
        let message = |frame: &[u8]| decode_request(frame).unwrap_err().to_string();
        assert!(message(b"{not json").starts_with("the message is not JSON"));
        assert_eq!(
            message(br#"{"request":"stats"}"#),
            "the message has no protocol version"
        );
        assert!(
            message(br#"{"version":9,"request":"teleport"}"#)
                .contains("protocol version 9 is not supported")
        );
        assert!(
            message(br#"{"version":1,"request":"teleport"}"#).starts_with("not a valid request")
        );
        assert_eq!(
            decode_request(br#"{"version":1,"request":"stats"}"#).unwrap(),
            Request::Stats
        );
    }

    /// One well-formed request of every kind (every membership op too), as in
    /// docs/protocol.md.
    const EVERY_REQUEST: &[&str] = &[
        r#"{"version":1,"request":"register","client":"market-data","persistent":false}"#,
        r#"{"version":1,"request":"deregister"}"#,
        r#"{"version":1,"request":"membership","iface":"eth1","group":"232.1.1.1","op":"join"}"#,
        r#"{"version":1,"request":"membership","iface":"eth1","group":"232.1.1.1","op":"leave"}"#,
        r#"{"version":1,"request":"membership","iface":"eth1","group":"232.1.1.1","op":"block","source":"10.0.0.5"}"#,
        r#"{"version":1,"request":"membership","iface":"eth1","group":"232.1.1.1","op":"unblock","source":"10.0.0.5"}"#,
        r#"{"version":1,"request":"membership","iface":"eth1","group":"232.1.1.1","op":"join-source","source":"10.0.0.5"}"#,
        r#"{"version":1,"request":"membership","iface":"eth1","group":"232.1.1.1","op":"leave-source","source":"10.0.0.5"}"#,
        r#"{"version":1,"request":"membership","iface":"eth1","group":"ff3e::1","op":"set-filter","mode":"include","sources":["fd00::7"]}"#,
        r#"{"version":1,"request":"get-filter","iface":"eth1","group":"232.1.1.1","client":"cli"}"#,
        r#"{"version":1,"request":"list-start","filter":{"iface":"eth1","group":null},"page":4096}"#,
        r#"{"version":1,"request":"list-next","cursor":1,"page":4096}"#,
        r#"{"version":1,"request":"list-end","cursor":1}"#,
        r#"{"version":1,"request":"stats"}"#,
        r#"{"version":1,"request":"attach","iface":"eth1","mode":"driver","replace":false}"#,
        r#"{"version":1,"request":"detach","iface":"eth1","keep":false}"#,
        r#"{"version":1,"request":"owner","iface":"eth1"}"#,
        r#"{"version":1,"request":"reload"}"#,
    ];

    /// `json` with `"field": value` added to its top-level object.
    fn with_field(json: &str, field: &str, value: &str) -> String {
        format!("{},\"{field}\":{value}}}", json.strip_suffix('}').unwrap())
    }

    #[test]
    fn every_documented_request_decodes() {
        for json in EVERY_REQUEST {
            decode_request(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
        }
    }

    #[test]
    fn kinds_are_the_wire_tags() {
        for json in EVERY_REQUEST {
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            let tag = value["op"].as_str().or(value["request"].as_str()).unwrap();
            assert_eq!(decode_request(json.as_bytes()).unwrap().kind(), tag);
        }
        for kind in ErrorKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.name());
        }
    }

    #[test]
    fn a_misspelt_field_is_refused_for_every_request_kind() {
        for json in EVERY_REQUEST {
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            let kind = ["request", "op"]
                .iter()
                .filter_map(|t| value[t].as_str())
                .collect::<Vec<_>>()
                .join(" ");
            let typo = with_field(json, "kep", "true");
            match decode_request(typo.as_bytes()) {
                Err(DecodeError::UnknownField { request, field, .. }) => {
                    assert_eq!((request.as_str(), field.as_str()), (kind.as_str(), "kep"));
                }
                other => panic!("{typo}: {other:?}"),
            }
            let message = decode_request(typo.as_bytes()).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("unknown field `kep` in a {kind} request")),
                "{message}"
            );
        }
    }

    #[test]
    fn attach_follow_is_optional_and_strict() {
        let decode = |json: &str| decode_request(json.as_bytes());
        let follow = |json: &str| match decode(json) {
            Ok(Request::Attach { follow, .. }) => follow,
            other => panic!("{json}: {other:?}"),
        };
        assert!(follow(
            r#"{"version":1,"request":"attach","iface":"eth1","follow":true}"#
        ));
        assert!(!follow(
            r#"{"version":1,"request":"attach","iface":"eth1"}"#
        ));
        let message = decode(r#"{"version":1,"request":"attach","iface":"eth1","folow":true}"#)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("unknown field `folow` in a attach request (its fields: ")
                && message.contains("follow"),
            "{message}"
        );
        assert!(matches!(
            decode(r#"{"version":1,"request":"attach","iface":"eth1","follow":"yes"}"#),
            Err(DecodeError::Shape(_))
        ));
    }

    #[test]
    fn misspelt_fields_are_named_with_the_fields_the_request_has() {
        let message = |json: &str| decode_request(json.as_bytes()).unwrap_err().to_string();
        // Taken as a detach without keep, before.
        assert_eq!(
            message(r#"{"version":1,"request":"detach","iface":"eth1","kep":true}"#),
            "unknown field `kep` in a detach request (its fields: iface, keep)"
        );
        // Nested: the list filter.
        assert_eq!(
            message(r#"{"version":1,"request":"list-start","filter":{"ifcae":"eth1"}}"#),
            "unknown field `filter.ifcae` in a list-start request (its fields: group, iface)"
        );
        // A field of another op: join has no source.
        assert_eq!(
            message(
                r#"{"version":1,"request":"membership","iface":"e","group":"232.1.1.1","op":"join","source":"10.0.0.1"}"#
            ),
            "unknown field `source` in a membership join request (its fields: group, iface)"
        );
        assert_eq!(
            message(r#"{"version":1,"request":"stats","verbose":true}"#),
            "unknown field `verbose` in a stats request (its fields: none)"
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
