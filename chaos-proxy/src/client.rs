//! A small client for the Toxiproxy API (this server's or a real Toxiproxy's),
//! over a minimal HTTP/1.1 implementation on a tokio `TcpStream`.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::model::{ApiErrorBody, NewProxy, Proxy, ProxyUpdate, Toxic};

/// Why a client call failed.
#[derive(Debug)]
pub enum ClientError {
    /// Connecting, sending or receiving failed.
    Io(io::Error),
    /// No complete answer within the client's timeout.
    Timeout,
    /// The server answered with a non-2xx status.
    Api {
        /// HTTP status.
        status: u16,
        /// The `error` message of Toxiproxy's error body (or the raw body).
        message: String,
    },
    /// The answer was not HTTP or not the expected JSON.
    Protocol(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "toxiproxy api: {e}"),
            ClientError::Timeout => f.write_str("toxiproxy api: timed out"),
            ClientError::Api { status, message } => {
                write!(f, "toxiproxy api: HTTP {status}: {message}")
            }
            ClientError::Protocol(m) => write!(f, "toxiproxy api: bad response: {m}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> ClientError {
        ClientError::Io(e)
    }
}

/// Client of a Toxiproxy-compatible API at `host:port` (e.g. `127.0.0.1:8474`).
///
/// Each call opens one connection (`Connection: close`), so the client is
/// cheap to clone and holds no state.
#[derive(Clone, Debug)]
pub struct ProxyClient {
    addr: String,
    timeout: Duration,
}

impl ProxyClient {
    /// A client for the API at `addr` (`host:port`), with a 10 s timeout per call.
    pub fn new(addr: impl Into<String>) -> ProxyClient {
        ProxyClient {
            addr: addr.into(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets the timeout of each call.
    pub fn with_timeout(mut self, timeout: Duration) -> ProxyClient {
        self.timeout = timeout;
        self
    }

    /// The API address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `GET /version`: the version string.
    pub async fn version(&self) -> Result<String, ClientError> {
        let body = self.call("GET", "/version", None).await?;
        // Toxiproxy ≥ 2.6 answers `{"version": "..."}`, older ones plain text.
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => Ok(v
                .get("version")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()),
            Err(_) => Ok(String::from_utf8_lossy(&body).trim().to_owned()),
        }
    }

    /// `GET /proxies`.
    pub async fn proxies(&self) -> Result<BTreeMap<String, Proxy>, ClientError> {
        self.json("GET", "/proxies", None::<&()>).await
    }

    /// `GET /proxies/{name}` (with `stats`, when the server is chaos-proxy).
    pub async fn proxy(&self, name: &str) -> Result<Proxy, ClientError> {
        self.json("GET", &format!("/proxies/{}", enc(name)), None::<&()>)
            .await
    }

    /// `POST /proxies`.
    pub async fn create_proxy(&self, proxy: &NewProxy) -> Result<Proxy, ClientError> {
        self.json("POST", "/proxies", Some(proxy)).await
    }

    /// `POST /populate`: creates or replaces the given proxies.
    pub async fn populate(&self, proxies: &[NewProxy]) -> Result<Vec<Proxy>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Populated {
            proxies: Vec<Proxy>,
        }
        let p: Populated = self.json("POST", "/populate", Some(&proxies)).await?;
        Ok(p.proxies)
    }

    /// `POST /proxies/{name}` with only the given fields.
    pub async fn update_proxy(
        &self,
        name: &str,
        update: &ProxyUpdate,
    ) -> Result<Proxy, ClientError> {
        self.json("POST", &format!("/proxies/{}", enc(name)), Some(update))
            .await
    }

    /// Enables or disables a proxy (disabling closes its listener and connections).
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<Proxy, ClientError> {
        let update = ProxyUpdate {
            enabled: Some(enabled),
            ..ProxyUpdate::default()
        };
        self.update_proxy(name, &update).await
    }

    /// `DELETE /proxies/{name}`.
    pub async fn delete_proxy(&self, name: &str) -> Result<(), ClientError> {
        self.call("DELETE", &format!("/proxies/{}", enc(name)), None)
            .await
            .map(drop)
    }

    /// `GET /proxies/{name}/toxics`.
    pub async fn toxics(&self, proxy: &str) -> Result<Vec<Toxic>, ClientError> {
        self.json(
            "GET",
            &format!("/proxies/{}/toxics", enc(proxy)),
            None::<&()>,
        )
        .await
    }

    /// `POST /proxies/{name}/toxics`: adds a toxic; it applies to open connections too.
    pub async fn add_toxic(&self, proxy: &str, toxic: &Toxic) -> Result<Toxic, ClientError> {
        self.json(
            "POST",
            &format!("/proxies/{}/toxics", enc(proxy)),
            Some(toxic),
        )
        .await
    }

    /// `POST /proxies/{name}/toxics/{toxic.name}`: updates attributes and toxicity.
    pub async fn update_toxic(&self, proxy: &str, toxic: &Toxic) -> Result<Toxic, ClientError> {
        let path = format!("/proxies/{}/toxics/{}", enc(proxy), enc(&toxic.name));
        self.json("POST", &path, Some(toxic)).await
    }

    /// `DELETE /proxies/{name}/toxics/{toxic}`.
    pub async fn remove_toxic(&self, proxy: &str, toxic: &str) -> Result<(), ClientError> {
        let path = format!("/proxies/{}/toxics/{}", enc(proxy), enc(toxic));
        self.call("DELETE", &path, None).await.map(drop)
    }

    /// `POST /reset`: enables every proxy and removes every toxic.
    pub async fn reset(&self) -> Result<(), ClientError> {
        self.call("POST", "/reset", None).await.map(drop)
    }

    /// Sends any request and returns the status and body, whatever the status
    /// (for API checks and debugging).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        tokio::time::timeout(self.timeout, request(&self.addr, method, path, body))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    async fn json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => {
                Some(serde_json::to_vec(b).map_err(|e| ClientError::Protocol(e.to_string()))?)
            }
            None => None,
        };
        let answer = self.call(method, path, body.as_deref()).await?;
        serde_json::from_slice(&answer).map_err(|e| ClientError::Protocol(format!("{e}")))
    }

    /// One request; returns the body of a 2xx answer.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        let (status, body) = self.raw(method, path, body).await?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let message = match serde_json::from_slice::<ApiErrorBody>(&body) {
            Ok(e) => e.error,
            Err(_) => String::from_utf8_lossy(&body).trim().to_owned(),
        };
        Err(ClientError::Api { status, message })
    }
}

/// Percent-encodes a path segment.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends one HTTP/1.1 request with `Connection: close` and reads the whole answer.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), ClientError> {
    let mut stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let body = body.unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: chaos-proxy-client\r\n\
         Accept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if !body.is_empty() {
        req.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    stream.write_all(&req).await?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head: bool) -> Result<(u16, Vec<u8>), ClientError> {
    let bad = |m: &str| ClientError::Protocol(m.to_owned());
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| bad("incomplete headers"))?;
    let head_text = std::str::from_utf8(&raw[..end]).map_err(|_| bad("non-UTF-8 headers"))?;
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not an HTTP/1.x answer"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let rest = &raw[end + 4..];
    if head || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok((status, Vec::new()));
    }
    let body = if chunked {
        dechunk(rest).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(len) = content_length {
        rest.get(..len)
            .ok_or_else(|| bad("body shorter than Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(raw, false).unwrap(), (200, b"{}".to_vec()));
        let raw = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(raw, false).unwrap(),
            (201, b"abcde".to_vec())
        );
        let raw = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(raw, false).unwrap(), (204, Vec::new()));
        assert!(parse_response(b"garbage", false).is_err());
    }

    #[test]
    fn encodes_path_segments() {
        assert_eq!(enc("pg_main-1.x"), "pg_main-1.x");
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
    }
}
