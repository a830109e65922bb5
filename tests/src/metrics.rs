//! The daemon's metrics endpoint as a scraper sees it: an HTTP request from inside the
//! daemon's namespace, and the exposition parsed by Python's `prometheus_client` (its strict
//! OpenMetrics parser, or its Prometheus text parser), the package `cargo xtask setup`
//! installs.

use std::{
    collections::BTreeMap,
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use crate::netns::Netns;

/// The parser script (run with `python3 -c`).
const PARSER: &str = include_str!("metrics_families.py");

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// `METHOD path` to `addr` from inside `ns`, with an `Accept` header if given.
pub fn http(
    ns: &Netns,
    addr: SocketAddr,
    method: &str,
    path: &str,
    accept: Option<&str>,
) -> io::Result<HttpResponse> {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if let Some(accept) = accept {
        request.push_str(&format!("Accept: {accept}\r\n"));
    }
    request.push_str("\r\n");
    let raw = ns.run(move || -> io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.write_all(request.as_bytes())?;
        // The endpoint closes the connection after its answer.
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        Ok(raw)
    })?;
    let text = String::from_utf8(raw).map_err(io::Error::other)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("no end of the head in {text:?}")))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_string(),
    })
}

/// `GET /metrics`, requiring a 200.
pub fn scrape(ns: &Netns, addr: SocketAddr, accept: Option<&str>) -> HttpResponse {
    let response = http(ns, addr, "GET", "/metrics", accept)
        .unwrap_or_else(|e| panic!("scraping http://{addr}/metrics: {e}"));
    assert_eq!(response.status, 200, "{response:?}");
    response
}

/// The text format a parser reads.
#[derive(Clone, Copy, Debug)]
pub enum Format {
    OpenMetrics,
    Prometheus,
}

/// One sample as the parser read it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One metric family as the parser read it.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub unit: String,
    pub samples: Vec<Sample>,
}

/// `text` parsed by `prometheus_client`; panics with the parser's message if it refuses it.
pub fn parse(text: &str, format: Format) -> Vec<Family> {
    let which = match format {
        Format::OpenMetrics => "openmetrics",
        Format::Prometheus => "prometheus",
    };
    let mut child = Command::new("python3")
        .args(["-c", PARSER, which])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running python3 (cargo xtask setup installs prometheus_client for it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writing to the parser");
    let out = child.wait_with_output().expect("waiting for the parser");
    assert!(
        out.status.success(),
        "{}\n(if prometheus_client is missing: cargo xtask setup)\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: serde_json::Value = serde_json::from_slice(&out.stdout).expect("parser JSON");
    families
        .as_array()
        .expect("a list of families")
        .iter()
        .map(|f| Family {
            name: f["name"].as_str().unwrap_or_default().to_string(),
            kind: f["type"].as_str().unwrap_or_default().to_string(),
            unit: f["unit"].as_str().unwrap_or_default().to_string(),
            samples: f["samples"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| Sample {
                    name: s["name"].as_str().unwrap_or_default().to_string(),
                    labels: s["labels"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect(),
                    value: s["value"].as_f64().unwrap_or(f64::NAN),
                })
                .collect(),
        })
        .collect()
}

/// Samples by name and labels (`name{k="v",...}` with the labels in order), for lookups.
pub fn by_series(families: &[Family]) -> BTreeMap<String, f64> {
    families
        .iter()
        .flat_map(|f| &f.samples)
        .map(|s| (series(&s.name, &s.labels), s.value))
        .collect()
}

/// The key [`by_series`] files a sample under.
pub fn series(name: &str, labels: &BTreeMap<String, String>) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// [`series`] from label pairs.
pub fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    series(name, &labels)
}
