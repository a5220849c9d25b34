//! A small HTTP/1.1 client (hyper) for the workload and readiness checks; 127.0.0.1 only.
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::OnceLock;
use std::time::Duration;

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

/// Sends one request; `Err` carries a short reason (`connection refused`, `timeout`, ...).
pub async fn request(
    client: &HttpClient,
    method: hyper::Method,
    url: &str,
    body: Option<Bytes>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    request_with_header(client, method, url, body, timeout, None)
        .await
        .map(|(status, body, _)| (status, body))
}

/// Like [`request`], also returning the value of one answer header (e.g. `x-cache`).
pub async fn request_with_header(
    client: &HttpClient,
    method: hyper::Method,
    url: &str,
    body: Option<Bytes>,
    timeout: Duration,
    header: Option<&str>,
) -> Result<(u16, Bytes, Option<String>), String> {
    let mut req = hyper::Request::builder().method(method).uri(url);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|e| e.to_string())?;
    let fut = async {
        let resp = client.request(req).await.map_err(describe)?;
        let status = resp.status().as_u16();
        let value = header
            .and_then(|h| resp.headers().get(h))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body, value))
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}

/// GET with the shared client (fresh connections per call are not needed for readiness).
pub async fn get(url: &str, timeout: Duration) -> Result<(u16, Bytes), String> {
    request(shared(), hyper::Method::GET, url, None, timeout).await
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
