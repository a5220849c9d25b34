//! `chaos-proxy reap`: the reaper a chaos test process starts next to its stacks.
//!
//! It runs in a container of its own (the same base image and binary as the fault proxy, with
//! the Docker socket mounted), accepts one TCP connection from the test process and holds it.
//! When that connection ends, however the process ended (a clean exit, a panic, SIGKILL, an
//! OOM kill: the kernel closes the socket in every case), it removes every container, network
//! and volume labelled with the process's owner identity, prints what it removed and exits (the
//! container is started with auto-remove). The owner label is unique per process across hosts
//! and pid namespaces, so a reaper never touches another process's resources; it works the
//! same when the daemon is shared or remote, because it talks to the daemon from the daemon's
//! side. Plain std: a Docker API client over the unix socket in HTTP/1.0.
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The label whose value names the owning process (set by chaos-runtime on every resource).
pub const OWNER_LABEL: &str = "chaos.owner";

/// What a reap removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Containers removed.
    pub containers: usize,
    /// Networks removed.
    pub networks: usize,
    /// Volumes removed.
    pub volumes: usize,
}

/// Waits for the test process's connection (at most `first_within`), holds it until it ends,
/// then reaps `owner`'s resources through the Docker socket at `socket`.
pub fn serve(
    owner: &str,
    listen: &str,
    socket: &str,
    first_within: Duration,
) -> io::Result<Reaped> {
    let listener = TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    println!("chaos-reaper ready on {listen} for {OWNER_LABEL}={owner}");
    let _ = io::stdout().flush();
    let deadline = Instant::now() + first_within;
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break Some(c),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    };
    if let Some(mut conn) = conn {
        conn.set_nonblocking(false)?;
        // A process whose network vanished before its socket was closed (a CI job container
        // torn down with its namespace) sends no FIN: keepalive probes end the wait instead,
        // within ~11 s. A live process's kernel answers them, however busy the process is.
        keepalive(&conn);
        let mut buf = [0u8; 64];
        // The process sends nothing: a read returns when the connection ends.
        while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
    } else {
        println!("chaos-reaper: no connection within {first_within:?}; reaping");
    }
    // Twice: a container being created while the process died may appear a moment later.
    let mut total = reap(owner, socket)?;
    std::thread::sleep(Duration::from_millis(500));
    let again = reap(owner, socket)?;
    total.containers += again.containers;
    total.networks += again.networks;
    total.volumes += again.volumes;
    println!(
        "chaos-reaper: removed {} containers, {} networks, {} volumes of {OWNER_LABEL}={owner}",
        total.containers, total.networks, total.volumes
    );
    Ok(total)
}

/// TCP keepalive on `conn`: first probe after 5 s idle, then every 2 s, dead after 3 unanswered.
fn keepalive(conn: &std::net::TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = conn.as_raw_fd();
        for (level, name, value) in [
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 5),
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 2),
            (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3),
        ] {
            let v: libc::c_int = value;
            // SAFETY: a valid socket, an int option and its size.
            unsafe {
                libc::setsockopt(
                    fd,
                    level,
                    name,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = conn;
}

/// Removes every container (with its anonymous volumes), network and volume labelled
/// `chaos.owner=<owner>`.
pub fn reap(owner: &str, socket: &str) -> io::Result<Reaped> {
    let filters = percent(&format!(r#"{{"label":["{OWNER_LABEL}={owner}"]}}"#));
    let mut reaped = Reaped::default();
    let list = get_json(socket, &format!("/containers/json?all=1&filters={filters}"))?;
    for id in ids(&list, "Id") {
        if request(socket, "DELETE", &format!("/containers/{id}?force=1&v=1"))?.0 < 300 {
            reaped.containers += 1;
        }
    }
    let list = get_json(socket, &format!("/networks?filters={filters}"))?;
    for id in ids(&list, "Id") {
        // A test process running in a CI job container joined the network: let it go first.
        let attached = get_json(socket, &format!("/networks/{id}"))
            .ok()
            .and_then(|n| n.get("Containers")?.as_object().cloned())
            .unwrap_or_default();
        for container in attached.keys() {
            let body = serde_json::json!({ "Container": container, "Force": true }).to_string();
            let _ = send(socket, "POST", &format!("/networks/{id}/disconnect"), &body);
        }
        if request(socket, "DELETE", &format!("/networks/{id}"))?.0 < 300 {
            reaped.networks += 1;
        }
    }
    let list = get_json(socket, &format!("/volumes?filters={filters}"))?;
    let vols = list.get("Volumes").cloned().unwrap_or_default();
    for name in ids(&vols, "Name") {
        if request(socket, "DELETE", &format!("/volumes/{name}?force=1"))?.0 < 300 {
            reaped.volumes += 1;
        }
    }
    Ok(reaped)
}

fn ids(list: &serde_json::Value, key: &str) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.get(key)?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn get_json(socket: &str, path: &str) -> io::Result<serde_json::Value> {
    let (status, body) = request(socket, "GET", path)?;
    if status >= 300 {
        return Err(io::Error::other(format!(
            "GET {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    serde_json::from_slice(&body).map_err(|e| io::Error::other(format!("GET {path}: {e}")))
}

/// One HTTP/1.0 request on a fresh connection (the daemon closes it after the answer, so the
/// body is everything after the headers, never chunked). Returns (status, body).
fn request(socket: &str, method: &str, path: &str) -> io::Result<(u16, Vec<u8>)> {
    send(socket, method, path, "")
}

/// One request with a JSON `body` (empty: none).
fn send(socket: &str, method: &str, path: &str, body: &str) -> io::Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    if body.is_empty() {
        write!(s, "{method} {path} HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    } else {
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
        .ok_or_else(|| io::Error::other(format!("{method} {path}: not an HTTP answer")))
}

/// `(status, body)` of a raw HTTP/1.x answer.
pub fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, raw[end + 4..].to_vec()))
}

/// Percent-encodes everything but unreserved characters (for a query value).
pub fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_filters_are_read_and_written_right() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[{\"Id\":\"abc\"}]";
        let (status, body) = parse_response(raw).unwrap();
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(ids(&v, "Id"), ["abc"]);
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(
            percent(r#"{"label":["chaos.owner=b/1:2"]}"#),
            "%7B%22label%22%3A%5B%22chaos.owner%3Db%2F1%3A2%22%5D%7D"
        );
    }
}
