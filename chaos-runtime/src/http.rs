//! A small HTTP/1.1 client (hyper) for workloads and readiness probes.
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::OnceLock;
use std::time::Duration;

pub use hyper::Method;

/// A pooled client (keep-alive to nginx, as a real client would do).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new pooled client with a 1 s connect timeout.
pub fn client() -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(Duration::from_secs(1)));
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(5))
        .build(conn)
}

fn shared() -> &'static HttpClient {
    static C: OnceLock<HttpClient> = OnceLock::new();
    C.get_or_init(client)
}

/// An answer: status, headers (names lowercase) and body.
#[derive(Clone, Debug)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The answer's headers, names lowercase (the last value of a repeated header).
    pub headers: std::collections::BTreeMap<String, String>,
    /// The body.
    pub body: Bytes,
}

/// One request, built then sent: `Request::new(Method::GET, url).timeout(d).send(&client)`.
#[derive(Clone, Debug)]
pub struct Request {
    method: hyper::Method,
    url: String,
    body: Option<(Bytes, String)>,
    timeout: Duration,
}

impl Request {
    /// A request without a body and a 2 s timeout.
    pub fn new(method: hyper::Method, url: &str) -> Self {
        Request {
            method,
            url: url.to_string(),
            body: None,
            timeout: Duration::from_secs(2),
        }
    }

    /// With a body of this content type (`None`: no body).
    pub fn body(mut self, body: Option<Bytes>, content_type: &str) -> Self {
        self.body = body.map(|b| (b, content_type.to_string()));
        self
    }

    /// The whole exchange must end within `timeout` (else `Err("timeout")`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends it; `Err` carries a short reason (`connection refused`, `timeout`, ...).
    pub async fn send(self, client: &HttpClient) -> Result<Response, String> {
        let mut req = hyper::Request::builder().method(self.method).uri(&self.url);
        let body = match self.body {
            Some((b, ct)) => {
                req = req.header("content-type", ct);
                b
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let fut = async {
            let resp = client.request(req).await.map_err(describe)?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok(Response {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err("timeout".into()),
        }
    }
}

/// GET with a shared client (fresh connections per call are not needed for readiness).
pub async fn get(url: &str, timeout: Duration) -> Result<Response, String> {
    Request::new(hyper::Method::GET, url)
        .timeout(timeout)
        .send(shared())
        .await
}

/// A stable class of a request error, for timelines and snapshots: `http_5xx`, `http_other`,
/// `connection_refused`, `timeout`, `connection_reset` or `other`.
pub fn classify(e: &str) -> &'static str {
    if e.starts_with("HTTP 5") {
        "http_5xx"
    } else if e.starts_with("HTTP") {
        "http_other"
    } else if e.contains("refused") {
        "connection_refused"
    } else if e.contains("timeout") {
        "timeout"
    } else if e.contains("reset")
        || e.contains("closed before message completed")
        || e.contains("connection was not ready")
    {
        // The connection dropped under the request: an RST, a close before any answer, or a
        // pooled connection found closed as the request was handed to it (which of the three
        // a client sees when its peer dies is a matter of timing).
        "connection_reset"
    } else {
        "other"
    }
}

/// A short, stable description of a client error: the innermost cause.
fn describe(e: hyper_util::client::legacy::Error) -> String {
    let mut src: &dyn std::error::Error = &e;
    while let Some(s) = src.source() {
        src = s;
    }
    let s = src.to_string();
    if s.contains("Connection refused") {
        "connection refused".into()
    } else if s.contains("Connection reset") {
        "connection reset".into()
    } else if e.is_connect() {
        format!("connect: {s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dropped_connection_is_one_class_however_the_client_noticed() {
        for e in [
            "connection reset",
            "connection closed before message completed",
            "connection was not ready",
        ] {
            assert_eq!(super::classify(e), "connection_reset", "{e}");
        }
        assert_eq!(super::classify("connection refused"), "connection_refused");
        assert_eq!(super::classify("HTTP 503: db down"), "http_5xx");
        assert_eq!(super::classify("request timeout after 1 s"), "timeout");
    }
}
