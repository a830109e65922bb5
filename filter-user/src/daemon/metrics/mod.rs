//! The metrics endpoint (`msfilter daemon --metrics [ADDR]`): `GET /metrics` in the
//! OpenMetrics text format, or the Prometheus text format (0.0.4) for clients that ask for
//! `text/plain`.
//!
//! * `requests.rs`: the requests the server answered, by kind and result, and the kernel's
//!   refusals by errno, counted as the server answers them.
//! * `snapshot.rs`: what one scrape reports, taken on the controller thread in one step
//!   (so every value comes from the same moment between two requests), with the per-group
//!   and per-source series capped and the rest folded.
//! * `exposition.rs`: a snapshot in either text format (`prometheus-client`'s encoders), and
//!   which format a request's `Accept` header asks for.
//! * `http.rs`: a small HTTP/1.1 responder on a TCP listener: one request per connection.
//!
//! The metric names and labels are in docs/operations.md.

mod exposition;
mod http;
mod requests;
mod snapshot;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub(super) use http::{SnapshotSource, serve};
pub(super) use requests::{RequestTally, UNDECODED};
pub(super) use snapshot::{STEP, Snapshot};

/// The port of the metrics endpoint unless told otherwise.
pub const DEFAULT_PORT: u16 = 9464;
/// Where the endpoint listens with `--metrics` alone: loopback only.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT);
/// [`DEFAULT_ADDR`] as text (for the command line's default).
pub const DEFAULT_ADDR_TEXT: &str = "127.0.0.1:9464";
/// How many (interface, group) and how many (interface, group, source) series a scrape
/// reports one by one unless told otherwise.
pub const DEFAULT_MAX_SERIES: usize = 1000;

/// How to run the metrics endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsOptions {
    pub addr: SocketAddr,
    /// At most this many groups and this many sources get series of their own; the rest
    /// are summed per interface into `group="other"` (and `source="other"`).
    pub max_series: usize,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        Self {
            addr: DEFAULT_ADDR,
            max_series: DEFAULT_MAX_SERIES,
        }
    }
}

/// The endpoint's address as given to `--metrics`: `ADDRESS:PORT` (`[v6]:PORT` for IPv6), or
/// an address alone for the default port.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    let hint = if text
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_err())
    {
        "the port must be a number from 0 to 65535"
    } else {
        "give an address and a port, such as 127.0.0.1:9464 or [::1]:9464 (no host names)"
    };
    Err(format!("{text:?} is not a metrics address: {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr(DEFAULT_ADDR_TEXT), Ok(DEFAULT_ADDR));
        assert_eq!(
            parse_addr("127.0.0.1:9100").unwrap(),
            "127.0.0.1:9100".parse().unwrap()
        );
        assert_eq!(parse_addr("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
        assert_eq!(
            parse_addr("0.0.0.0").unwrap(),
            "0.0.0.0:9464".parse().unwrap()
        );
        assert_eq!(parse_addr("::").unwrap(), "[::]:9464".parse().unwrap());
        for bad in [
            "localhost:9464",
            "",
            "1.2.3.4:http",
            "1.2.3.4:70000",
            "::1:9464x",
        ] {
            let e = parse_addr(bad).unwrap_err();
            assert!(e.contains("is not a metrics address"), "{bad}: {e}");
        }
        assert!(parse_addr("1.2.3.4:70000").unwrap_err().contains("port"));
        assert!(
            parse_addr("localhost:9464")
                .unwrap_err()
                .contains("no host names")
        );
    }
}
