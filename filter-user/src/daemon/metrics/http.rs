//! A small HTTP/1.1 responder for the metrics: one request per connection (the answer says
//! `Connection: close`), `GET` or `HEAD` of `/metrics`, 404 for any other path, 405 for any
//! other method.
//!
//! What a slow or hostile client can hold is bounded: a request head must arrive within
//! [`HEAD_TIMEOUT`] and fit [`MAX_HEAD`] bytes, at most [`MAX_CONNECTIONS`] connections are
//! served at once (more are closed at once), and one snapshot is taken at a time, so
//! scrapes never queue more than one request to the controller thread between the daemon's
//! own requests.

use std::{future::Future, io, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Mutex, Semaphore},
};

use super::{
    exposition::{self, Format},
    snapshot::Snapshot,
};

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head read.
const MAX_HEAD: usize = 8192;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// How long a scrape waits for the controller thread (busy with a long request, such as a
/// reload of many groups) before it answers 503.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where snapshots come from: the controller thread (`server.rs`). `None`: the daemon is
/// stopping.
pub(in crate::daemon) trait SnapshotSource:
    Clone + Send + Sync + 'static
{
    fn take(&self) -> impl Future<Output = Option<Result<Snapshot, String>>> + Send;
}

/// Serve metrics on `listener` until the task is dropped.
pub(in crate::daemon) async fn serve(listener: TcpListener, source: impl SnapshotSource) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let one_scrape = Arc::new(Mutex::new(()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, for instance: let it pass rather than spin.
                log::warn!("metrics: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            log::debug!("metrics: {MAX_CONNECTIONS} connections already; closing {peer}");
            continue;
        };
        let (source, one_scrape) = (source.clone(), Arc::clone(&one_scrape));
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &source, &one_scrape).await {
                log::debug!("metrics: {peer}: {e}");
            }
            drop(permit);
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    source: &impl SnapshotSource,
    one_scrape: &Mutex<()>,
) -> io::Result<()> {
    let response = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => Response::text(408, "Request Timeout", "the request head took too long\n"),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(head))) => match parse(&head) {
            Ok(request) => answer(&request, source, one_scrape).await,
            Err(response) => response,
        },
    };
    stream.write_all(&response.into_bytes()).await?;
    stream.shutdown().await
}

/// The bytes up to the end of the request head; `None` if the client closed before sending
/// one. A head larger than [`MAX_HEAD`] is returned cut there (and refused by [`parse`]).
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() >= MAX_HEAD {
            head.truncate(MAX_HEAD);
            return Ok(Some(head));
        }
    }
}

/// What the responder needs of a request.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    accept: Option<String>,
}

fn parse(head: &[u8]) -> Result<Request, Response> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(Response::text(
                431,
                "Request Header Fields Too Large",
                &format!("the request head exceeds {MAX_HEAD} bytes\n"),
            ));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Response::text(
                431,
                "Request Header Fields Too Large",
                "too many header fields\n",
            ));
        }
        Err(e) => {
            return Err(Response::text(
                400,
                "Bad Request",
                &format!("not an HTTP/1.x request: {e}\n"),
            ));
        }
    }
    // Several Accept fields are one list.
    let accept: Vec<String> = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("accept"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
        .collect();
    Ok(Request {
        method: request.method.unwrap_or_default().to_string(),
        path: request.path.unwrap_or_default().to_string(),
        accept: (!accept.is_empty()).then(|| accept.join(",")),
    })
}

async fn answer(
    request: &Request,
    source: &impl SnapshotSource,
    one_scrape: &Mutex<()>,
) -> Response {
    let head_only = match request.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut response =
                Response::text(405, "Method Not Allowed", "only GET and HEAD are served\n");
            response.extra = Some("Allow: GET, HEAD");
            return response;
        }
    };
    let path = request.path.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Response::text(404, "Not Found", "msfilter serves /metrics only\n");
    }
    let Some(format) = Format::negotiate(request.accept.as_deref()) else {
        return Response::text(
            406,
            "Not Acceptable",
            "metrics are served as application/openmetrics-text or text/plain\n",
        );
    };
    let snapshot = {
        let _one = one_scrape.lock().await;
        tokio::time::timeout(SNAPSHOT_TIMEOUT, source.take()).await
    };
    let mut response = match snapshot {
        Ok(Some(Ok(snapshot))) => Response {
            status: 200,
            reason: "OK",
            content_type: format.content_type(),
            body: exposition::render(snapshot, format),
            extra: None,
            head_only: false,
        },
        Ok(Some(Err(e))) => Response::text(
            500,
            "Internal Server Error",
            &format!("reading the counters failed: {e}\n"),
        ),
        Ok(None) => Response::text(503, "Service Unavailable", "the daemon is stopping\n"),
        Err(_) => Response::text(
            503,
            "Service Unavailable",
            &format!(
                "the daemon's controller did not answer within {} s\n",
                SNAPSHOT_TIMEOUT.as_secs()
            ),
        ),
    };
    response.head_only = head_only;
    response
}

#[derive(Debug)]
struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
    /// One more header line.
    extra: Option<&'static str>,
    head_only: bool,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Self {
        Self {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
            extra: None,
            head_only: false,
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if let Some(extra) = self.extra {
            out.push_str(extra);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        if !self.head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let r = parse(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\naccept: */*;q=0.1\r\n\r\n")
            .unwrap();
        assert_eq!(
            r,
            Request {
                method: "GET".into(),
                path: "/metrics?x=1".into(),
                accept: Some("text/plain,*/*;q=0.1".into()),
            }
        );
        let r = parse(b"HEAD / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((r.method.as_str(), r.accept), ("HEAD", None));
        assert_eq!(
            parse(b"\x16\x03\x01 garbage\r\n\r\n").unwrap_err().status,
            400
        );
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: a")
                .unwrap_err()
                .status,
            431
        );
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(head.as_bytes()).unwrap_err().status, 431);
    }

    #[test]
    fn responses() {
        let text =
            String::from_utf8(Response::text(404, "Not Found", "no\n").into_bytes()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 3\r\nConnection: close\r\n\r\nno\n"
        );
        let mut head = Response::text(200, "OK", "body");
        head.head_only = true;
        let text = String::from_utf8(head.into_bytes()).unwrap();
        assert!(
            text.ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"),
            "{text}"
        );
    }

    #[derive(Clone)]
    struct Stopping;

    impl SnapshotSource for Stopping {
        async fn take(&self) -> Option<Result<Snapshot, String>> {
            None
        }
    }

    #[tokio::test]
    async fn routes() {
        let lock = Mutex::new(());
        let request = |method: &str, path: &str, accept: Option<&str>| Request {
            method: method.into(),
            path: path.into(),
            accept: accept.map(str::to_string),
        };
        let status = |r: Response| r.status;
        assert_eq!(
            status(answer(&request("GET", "/", None), &Stopping, &lock).await),
            404
        );
        assert_eq!(
            status(answer(&request("GET", "/metricsx", None), &Stopping, &lock).await),
            404
        );
        let post = answer(&request("POST", "/metrics", None), &Stopping, &lock).await;
        assert_eq!((post.status, post.extra), (405, Some("Allow: GET, HEAD")));
        let json = request("GET", "/metrics", Some("application/json"));
        assert_eq!(status(answer(&json, &Stopping, &lock).await), 406);
        assert_eq!(
            status(answer(&request("GET", "/metrics", None), &Stopping, &lock).await),
            503
        );
    }
}
