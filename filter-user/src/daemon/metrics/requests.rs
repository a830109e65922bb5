//! The requests the server answered, by kind and result, and the kernel's refusals among
//! them by errno: counted where the server answers, read by the controller thread when it
//! takes a snapshot.

use std::{collections::BTreeMap, sync::Mutex};

use crate::daemon::protocol::Response;

/// The kind of a frame that never decoded into a request.
pub(in crate::daemon) const UNDECODED: &str = "undecoded";

/// Counts shared by the connections (each answer locks it for one map update).
#[derive(Debug, Default)]
pub(in crate::daemon) struct RequestTally(Mutex<RequestCounts>);

/// The counts at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(in crate::daemon) struct RequestCounts {
    /// By (kind, result): `ok` or the error kind.
    pub(in crate::daemon) answered: BTreeMap<(&'static str, &'static str), u64>,
    /// Refusals of the kernel, by errno name.
    pub(in crate::daemon) kernel_refusals: BTreeMap<String, u64>,
}

impl RequestTally {
    /// Count one answer to a request of `kind`.
    pub(in crate::daemon) fn record(&self, kind: &'static str, response: &Response) {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = match response {
            Response::Ok(_) => "ok",
            Response::Error(e) => {
                if let Some(errno) = &e.errno {
                    *counts.kernel_refusals.entry(errno.clone()).or_default() += 1;
                }
                e.kind.name()
            }
        };
        *counts.answered.entry((kind, result)).or_default() += 1;
    }

    pub(in crate::daemon) fn counts(&self) -> RequestCounts {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::protocol::{ErrorKind, ErrorReply, Reply};

    #[test]
    fn answers_are_counted_by_kind_result_and_errno() {
        let tally = RequestTally::default();
        let refused = |errno: Option<&str>| {
            Response::Error(ErrorReply {
                kind: if errno.is_some() {
                    ErrorKind::Kernel
                } else {
                    ErrorKind::Invalid
                },
                errno: errno.map(str::to_string),
                message: String::new(),
            })
        };
        tally.record("stats", &Response::Ok(Reply::Ended));
        tally.record("stats", &Response::Ok(Reply::Ended));
        tally.record("block", &refused(Some("EADDRNOTAVAIL")));
        tally.record("unblock", &refused(Some("EADDRNOTAVAIL")));
        tally.record("join", &refused(None));
        let counts = tally.counts();
        assert_eq!(
            counts.answered,
            BTreeMap::from([
                (("block", "kernel"), 1),
                (("join", "invalid"), 1),
                (("stats", "ok"), 2),
                (("unblock", "kernel"), 1),
            ])
        );
        assert_eq!(
            counts.kernel_refusals,
            BTreeMap::from([("EADDRNOTAVAIL".to_string(), 2)])
        );
    }
}
