//! Kernel refusals in msfilter's words: the errno name stays as the kernel gave it, the
//! sentence says what it means for this request, using what the client held before.

use std::net::IpAddr;

use msfilter_common::Mode;

use super::controller::ControllerError;
use crate::{
    policy::GroupFilter,
    sockopt::{Family, Limit, Request, SockoptError},
};

/// Context of a refused request.
pub(crate) struct Refused<'a> {
    pub(crate) request: &'a Request,
    pub(crate) group: IpAddr,
    pub(crate) iface: &'a str,
    /// The client's filter for this group before the request.
    pub(crate) before: Option<&'a GroupFilter>,
}

pub(crate) fn explain(error: SockoptError, r: &Refused<'_>) -> ControllerError {
    ControllerError::Kernel {
        error,
        message: sentence(&error, r),
    }
}

fn sentence(e: &SockoptError, r: &Refused<'_>) -> String {
    let Refused {
        request: op,
        group,
        iface,
        before,
    } = r;
    let on = format!("{group} ({iface})");
    let mode = before.map(|f| f.mode);
    match (e.errno, op) {
        (libc::EADDRINUSE, Request::JoinGroup) if mode == Some(Mode::Include) => format!(
            "{group} is already joined on {iface} source-specifically; leave it or use \
             set-filter to switch it to EXCLUDE"
        ),
        (libc::EADDRINUSE, Request::JoinGroup) => format!("{group} is already joined on {iface}"),
        (libc::EADDRNOTAVAIL, Request::LeaveGroup) => format!("{group} is not joined on {iface}"),
        (libc::EADDRNOTAVAIL, Request::BlockSource { source }) => {
            format!("{source} is already blocked on {on}")
        }
        (libc::EADDRNOTAVAIL, Request::UnblockSource { source }) => {
            format!("{source} is not blocked on {on}")
        }
        (libc::EADDRNOTAVAIL, Request::JoinSourceGroup { source }) => {
            format!("{source} is already joined on {on}")
        }
        (libc::EADDRNOTAVAIL, Request::LeaveSourceGroup { source }) => {
            format!("{source} is not joined on {on}")
        }
        (libc::EINVAL, Request::SetFilter { .. }) if before.is_none() => {
            format!("{group} is not joined on {iface}; join it before setting its filter")
        }
        (libc::EINVAL, _) if before.is_none() => format!("{group} is not joined on {iface}"),
        (libc::EINVAL, Request::JoinSourceGroup { .. } | Request::LeaveSourceGroup { .. })
            if mode == Some(Mode::Exclude) =>
        {
            format!(
                "{on} is joined any-source (EXCLUDE mode): use block/unblock, or set-filter \
                 to switch it to INCLUDE"
            )
        }
        (libc::EINVAL, Request::BlockSource { .. } | Request::UnblockSource { .. })
            if mode == Some(Mode::Include) =>
        {
            format!(
                "{on} is joined source-specifically (INCLUDE mode): use join-source/leave-source, \
                 or set-filter to switch it to EXCLUDE"
            )
        }
        (libc::ENOBUFS, Request::JoinGroup) => format!(
            "the kernel refused another membership on {iface} (see {})",
            Limit::IgmpMaxMemberships.key()
        ),
        (libc::ENOBUFS, Request::SetFilter { sources, .. })
            if Limit::OptmemMax.read().is_ok_and(|max| {
                crate::sockopt::filter_option_size(sources.len()) > max as usize
            }) =>
        {
            format!(
                "a filter of {} sources needs a {}-byte option buffer, more than the kernel \
                 allows ({} = {}); start the daemon with --max-sources-per-socket N to raise it",
                sources.len(),
                crate::sockopt::filter_option_size(sources.len()),
                Limit::OptmemMax.key(),
                Limit::OptmemMax.read().unwrap_or(0)
            )
        }
        (libc::ENOBUFS, _) => {
            let limit = Limit::max_sources(Family::of(*group));
            let value = limit
                .read()
                .map_or_else(|_| "its".to_string(), |v| v.to_string());
            format!(
                "{on} would list more sources than the kernel allows per socket ({} = {value}); \
                 start the daemon with --max-sources-per-socket N to raise it",
                limit.key()
            )
        }
        (libc::ENODEV, _) => format!("no interface {iface}"),
        (libc::EPERM | libc::EACCES, _) => {
            format!("the kernel denied {} on {on}: permission", e.option)
        }
        _ => format!("the kernel refused {} on {on}", e.option),
    }
}
