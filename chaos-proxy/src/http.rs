//! The `http` toxic: faults per HTTP/1.1 request instead of per byte.
//!
//! A connection accepted while a proxy has an `http` toxic is served request by request: the
//! proxy reads a request's head and body (`Content-Length`), picks the first `http` toxic
//! whose method and path prefix match, and decides with an exact counter whether this request
//! is hit: aborted (the proxy answers with the toxic's status and closes), delayed, or reset.
//! Otherwise the request goes upstream and its answer comes back whole (`Content-Length`,
//! chunked, or until the server closes). A request or answer this reader does not follow
//! (a chunked request body, an upgrade) ends the request-by-request mode: the rest of the
//! connection is copied both ways untouched.
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::link::{Counters, ToxicList};
use crate::model::{Stream, ToxicKind};

/// The largest request or response head read.
const MAX_HEAD: usize = 64 * 1024;

/// Whether a list holds an `http` toxic.
pub(crate) fn present(list: &[crate::model::Toxic]) -> bool {
    list.iter()
        .any(|t| t.stream == Stream::Upstream && matches!(t.kind, ToxicKind::Http { .. }))
}

/// A parsed message head.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Head {
    /// The raw bytes, up to and including the blank line.
    pub raw: Vec<u8>,
    /// Request: method; response: empty.
    pub method: String,
    /// Request: path; response: status code.
    pub target: String,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub close: bool,
    pub upgrade: bool,
}

/// Parses a head (`raw` ends with `\r\n\r\n`).
pub(crate) fn parse_head(raw: Vec<u8>) -> Option<Head> {
    let text = std::str::from_utf8(&raw).ok()?;
    let mut lines = text.split("\r\n");
    let first = lines.next()?;
    let mut parts = first.split(' ');
    let (a, b) = (parts.next()?, parts.next()?);
    let (method, target) = if a.starts_with("HTTP/") {
        (String::new(), b.to_string())
    } else {
        (a.to_string(), b.to_string())
    };
    let mut head = Head {
        method,
        target,
        close: first.ends_with("HTTP/1.0") || a == "HTTP/1.0",
        ..Head::default()
    };
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "content-length" => head.content_length = v.parse().ok(),
            "transfer-encoding" => head.chunked = v.contains("chunked"),
            "connection" if v.contains("close") => head.close = true,
            "connection" if v.contains("keep-alive") => head.close = false,
            "upgrade" => head.upgrade = true,
            _ => {}
        }
    }
    head.raw = raw;
    Some(head)
}

/// Reads one head; `Ok(None)` at a clean end of stream before any byte.
async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut raw).await?;
        if n == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a head cut short",
                ))
            };
        }
        if raw.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        if raw.ends_with(b"\r\n\r\n") || raw == b"\r\n" {
            if raw == b"\r\n" {
                raw.clear();
                continue;
            }
            return parse_head(raw)
                .map(Some)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP head"));
        }
    }
}

/// What to do with one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Pass,
    Abort(u16),
    Delay(u64),
    Reset,
}

/// Matching requests seen per (proxy upstream, toxic name): the exact share's counter.
static SEEN: Mutex<Option<HashMap<(String, String), u64>>> = Mutex::new(None);

/// Whether the n-th (0-based) matching request is hit when `bp` of 10 000 are.
pub(crate) fn hit(n: u64, bp: u64) -> bool {
    (n + 1) * bp / 10_000 > n * bp / 10_000
}

/// The decision for a request with `method` and `path` under the toxics in `list`.
pub(crate) fn decide(
    list: &[crate::model::Toxic],
    upstream: &str,
    method: &str,
    path: &str,
) -> Decision {
    for t in list.iter().filter(|t| t.stream == Stream::Upstream) {
        let ToxicKind::Http {
            action,
            percent,
            status,
            delay,
            method: m,
            path_prefix,
        } = &t.kind
        else {
            continue;
        };
        if (!m.is_empty() && !m.eq_ignore_ascii_case(method))
            || !path.starts_with(path_prefix.as_str())
        {
            continue;
        }
        let n = {
            let mut seen = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
            let c = seen
                .get_or_insert_with(HashMap::new)
                .entry((upstream.to_string(), t.name.clone()))
                .or_insert(0);
            let n = *c;
            *c += 1;
            n
        };
        if !hit(n, (percent * 100.0).round() as u64) {
            return Decision::Pass;
        }
        return match action.as_str() {
            "abort" => Decision::Abort(*status),
            "delay" => Decision::Delay(*delay),
            _ => Decision::Reset,
        };
    }
    Decision::Pass
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Chaos",
    }
}

/// The proxy's own answer to an aborted request.
pub(crate) fn abort_response(status: u16) -> Vec<u8> {
    let body = format!("aborted by the chaos proxy's http toxic ({status})\n");
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\nx-chaos-fault: abort\r\n\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

/// Copies exactly `n` bytes.
async fn copy_n<R: AsyncReadExt + Unpin, W: AsyncWriteExt + Unpin>(
    r: &mut R,
    w: &mut W,
    mut n: u64,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    while n > 0 {
        let want = buf.len().min(n as usize);
        let got = r.read(&mut buf[..want]).await?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body cut short",
            ));
        }
        w.write_all(&buf[..got]).await?;
        n -= got as u64;
    }
    Ok(())
}

/// Copies a chunked body, chunk by chunk, through its last chunk and trailers.
async fn copy_chunked<R: AsyncBufReadExt + Unpin, W: AsyncWriteExt + Unpin>(
    r: &mut R,
    w: &mut W,
) -> io::Result<()> {
    loop {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line).await?;
        w.write_all(&line).await?;
        let size = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| u64::from_str_radix(l.trim().split(';').next()?.trim(), 16).ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                let mut t = Vec::new();
                if r.read_until(b'\n', &mut t).await? == 0 {
                    return Ok(());
                }
                w.write_all(&t).await?;
                if t == b"\r\n" {
                    return Ok(());
                }
            }
        }
        copy_n(r, w, size + 2).await?;
    }
}

/// Serves one connection request by request (see the module's docs).
pub(crate) async fn serve(
    client: TcpStream,
    upstream: TcpStream,
    upstream_addr: &str,
    toxics: watch::Receiver<ToxicList>,
    counters: Arc<Counters>,
) -> io::Result<()> {
    let (cr, mut cw) = client.into_split();
    let (ur, mut uw) = upstream.into_split();
    let (mut cr, mut ur) = (BufReader::new(cr), BufReader::new(ur));
    loop {
        let Some(req) = read_head(&mut cr).await? else {
            return Ok(());
        };
        if req.chunked || req.upgrade {
            // Not followed request by request: the rest of the connection untouched.
            uw.write_all(&req.raw).await?;
            let up = tokio::io::copy_buf(&mut cr, &mut uw);
            let down = tokio::io::copy_buf(&mut ur, &mut cw);
            let _ = tokio::try_join!(up, down);
            return Ok(());
        }
        let list = toxics.borrow().clone();
        match decide(&list, upstream_addr, &req.method, &req.target) {
            Decision::Pass => {}
            Decision::Abort(status) => {
                counters
                    .toxics_applied
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                cw.write_all(&abort_response(status)).await?;
                cw.shutdown().await?;
                return Ok(());
            }
            Decision::Reset => {
                counters
                    .toxics_applied
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let client = cr.into_inner().reunite(cw).map_err(io::Error::other)?;
                let upstream = ur.into_inner().reunite(uw).map_err(io::Error::other)?;
                let _ = client.set_zero_linger();
                let _ = upstream.set_zero_linger();
                return Ok(());
            }
            Decision::Delay(ms) => {
                counters
                    .toxics_applied
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                crate::timer::sleep_until(std::time::Instant::now() + Duration::from_millis(ms))
                    .await;
            }
        }
        uw.write_all(&req.raw).await?;
        copy_n(&mut cr, &mut uw, req.content_length.unwrap_or(0)).await?;
        uw.flush().await?;
        let Some(resp) = read_head(&mut ur).await? else {
            return Ok(());
        };
        cw.write_all(&resp.raw).await?;
        let bodiless = resp.target.starts_with('1')
            || resp.target == "204"
            || resp.target == "304"
            || req.method.eq_ignore_ascii_case("HEAD");
        if bodiless {
        } else if resp.chunked {
            copy_chunked(&mut ur, &mut cw).await?;
        } else if let Some(n) = resp.content_length {
            copy_n(&mut ur, &mut cw, n).await?;
        } else {
            // Delimited by the server's close.
            tokio::io::copy_buf(&mut ur, &mut cw).await?;
            return Ok(());
        }
        cw.flush().await?;
        if req.close || resp.close {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Toxic;

    fn http(action: &str, percent: f64, method: &str, prefix: &str) -> Toxic {
        Toxic::new(
            format!("t-{action}-{percent}-{method}-{prefix}"),
            Stream::Upstream,
            ToxicKind::Http {
                action: action.into(),
                percent,
                status: 503,
                delay: 100,
                method: method.into(),
                path_prefix: prefix.into(),
            },
        )
    }

    #[test]
    fn the_share_is_exact_over_any_run_of_requests() {
        for bp in [1000u64, 2000, 2500, 3333, 10_000] {
            let hits = (0..1000).filter(|&n| hit(n, bp)).count() as u64;
            assert_eq!(hits, 1000 * bp / 10_000, "{bp}");
        }
        assert!(!hit(0, 2000) && hit(4, 2000));
    }

    #[test]
    fn only_matching_requests_count_and_are_hit() {
        let list = vec![http("abort", 50.0, "POST", "/orders")];
        let up = "only-matching:1";
        let got: Vec<Decision> = (0..4)
            .map(|_| decide(&list, up, "POST", "/orders"))
            .collect();
        assert_eq!(
            got,
            [
                Decision::Pass,
                Decision::Abort(503),
                Decision::Pass,
                Decision::Abort(503)
            ]
        );
        assert_eq!(decide(&list, up, "GET", "/orders"), Decision::Pass);
        assert_eq!(decide(&list, up, "POST", "/health"), Decision::Pass);
        let delay = vec![http("delay", 100.0, "", "/")];
        assert_eq!(decide(&delay, up, "GET", "/x"), Decision::Delay(100));
    }

    #[test]
    fn heads_give_method_path_and_framing() {
        let h = parse_head(
            b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nConnection: close\r\n\r\n"
                .to_vec(),
        )
        .unwrap();
        assert_eq!((h.method.as_str(), h.target.as_str()), ("POST", "/orders"));
        assert_eq!(
            (h.content_length, h.chunked, h.close),
            (Some(12), false, true)
        );
        let r =
            parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()).unwrap();
        assert_eq!(
            (r.target.as_str(), r.chunked, r.close),
            ("200", true, false)
        );
        let a = String::from_utf8(abort_response(503)).unwrap();
        assert!(a.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{a}");
        let body = a.split("\r\n\r\n").nth(1).unwrap();
        assert!(a.contains(&format!("content-length: {}\r\n", body.len())));
    }
}
