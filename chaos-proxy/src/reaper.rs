//! `chaos-proxy reap`: the reaper a chaos test process starts next to its stacks.
//!
//! It runs in a container of its own (the same base image and binary as the fault proxy, with
//! the Docker socket mounted), accepts one TCP connection from the test process, answers
//! `held` and holds it. When that connection ends, however the process ended (a clean exit, a
//! panic, SIGKILL, an OOM kill: the kernel closes the socket in every case), it removes every
//! container, network and volume labelled with the process's owner identity, prints what it
//! removed and exits (the container is started with auto-remove). The owner label is unique
//! per process across hosts and pid namespaces, so a reaper never touches another process's
//! resources; it works the same when the daemon is shared or remote, because it talks to the
//! daemon from the daemon's side. Plain std: a Docker API client over the unix socket in
//! HTTP/1.0.
//!
//! `reap --shared` ([`serve_shared`]) is one reaper for a whole suite: `chaos run` starts it
//! once and its test processes connect to it instead of starting one each. Every connection
//! first names its owner (`owner ID\n`), is answered `held\n`, and that owner's resources go
//! when that connection ends; the reaper exits once it has held one and none is left — or,
//! with a linger, once none has been left for that long (a reaper shared by the test
//! processes of one `cargo nextest` run, which come and go one after another).
//!
//! The `held` answer tells the process that the reaper itself holds the connection: through a
//! published port Docker's proxy accepts a connection before the reaper listens.
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The label whose value names the owning process (set by chaos-runtime on every resource).
pub const OWNER_LABEL: &str = "chaos.owner";

/// The reaper's answer once it holds a connection.
pub const HELD: &[u8] = b"held\n";

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
        // A process that is gone before the answer is written is reaped all the same.
        let _ = conn.write_all(HELD);
        hold(&mut conn);
    } else {
        println!("chaos-reaper: no connection within {first_within:?}; reaping");
    }
    reap_twice(owner, socket)
}

/// The reaper of a suite: holds any number of connections, each of which names its owner in
/// a first line `owner ID` (within 5 s, or it is closed), and reaps that owner once its
/// connection ends. Returns once it has held a connection and none has been left for
/// `linger` (or none came within `first_within`).
pub fn serve_shared(
    listen: &str,
    socket: &str,
    first_within: Duration,
    linger: Duration,
) -> io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    println!("chaos-reaper ready on {listen}, shared: each connection names its {OWNER_LABEL}");
    let _ = io::stdout().flush();
    shared_on(listener, socket, first_within, linger)
}

fn shared_on(
    listener: TcpListener,
    socket: &str,
    first_within: Duration,
    linger: Duration,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let started = Instant::now();
    let state = Arc::new(Mutex::new(Shared::default()));
    // Since when no connection has been open, once one was held.
    let mut empty_since: Option<Instant> = None;
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                state.lock().unwrap_or_else(|e| e.into_inner()).open += 1;
                let (state, socket) = (state.clone(), socket.to_string());
                std::thread::spawn(move || {
                    held_for_owner(conn, &socket, &state);
                    state.lock().unwrap_or_else(|e| e.into_inner()).open -= 1;
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let s = *state.lock().unwrap_or_else(|e| e.into_inner());
                if s.open > 0 || !s.held_one {
                    empty_since = None;
                } else if empty_since.get_or_insert_with(Instant::now).elapsed() >= linger {
                    println!("chaos-reaper: no connection left; done");
                    return Ok(());
                }
                if s.open == 0 && started.elapsed() > first_within {
                    println!("chaos-reaper: no connection within {first_within:?}; done");
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Connections of a shared reaper: open (reaps in progress included), and whether one was held.
#[derive(Clone, Copy, Default)]
struct Shared {
    open: usize,
    held_one: bool,
}

/// One connection of a shared reaper: its owner line, the answer, the hold, the reap.
fn held_for_owner(mut conn: TcpStream, socket: &str, state: &Mutex<Shared>) {
    let owner = match owner_line(&mut conn) {
        Ok(owner) => owner,
        Err(e) => {
            println!("chaos-reaper: a connection that named no owner ({e}); closed");
            return;
        }
    };
    state.lock().unwrap_or_else(|e| e.into_inner()).held_one = true;
    let _ = conn.write_all(HELD);
    hold(&mut conn);
    if let Err(e) = reap_twice(&owner, socket) {
        println!("chaos-reaper: reaping {OWNER_LABEL}={owner}: {e}");
    }
}

/// Reads `owner ID\n` (at most 5 s, 256 bytes); the ID as a label value may hold only
/// letters, digits and `-./:_` (it goes into a Docker filter).
fn owner_line(conn: &mut TcpStream) -> io::Result<String> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 256 {
        if conn.read(&mut byte)? == 0 {
            return Err(io::Error::other("closed before its owner line"));
        }
        if byte[0] == b'\n' {
            conn.set_read_timeout(None)?;
            return parse_owner_line(&line);
        }
        line.push(byte[0]);
    }
    Err(io::Error::other("owner line longer than 256 bytes"))
}

/// The ID of an `owner ID` line.
pub fn parse_owner_line(line: &[u8]) -> io::Result<String> {
    let line = std::str::from_utf8(line).map_err(|_| io::Error::other("not UTF-8"))?;
    let id = line
        .trim_end_matches('\r')
        .strip_prefix("owner ")
        .ok_or_else(|| io::Error::other(format!("{line:?} is not `owner ID`")))?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-./:_".contains(c);
    if id.is_empty() || !id.chars().all(allowed) {
        return Err(io::Error::other(format!("{id:?} is not an owner ID")));
    }
    Ok(id.to_string())
}

/// Holds `conn` until it ends.
fn hold(conn: &mut TcpStream) {
    // A process whose network vanished before its socket was closed (a CI job container
    // torn down with its namespace) sends no FIN: keepalive probes end the wait instead,
    // within ~11 s. A live process's kernel answers them, however busy the process is.
    keepalive(conn);
    let mut buf = [0u8; 64];
    // The process sends nothing more: a read returns when the connection ends.
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
}

/// Reaps `owner` twice, 500 ms apart (a container being created while the process died may
/// appear a moment later), and prints what went.
fn reap_twice(owner: &str, socket: &str) -> io::Result<Reaped> {
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
/// `chaos.owner=<owner>`, except what its run kept for inspection (labelled [`KEEP_LABEL`]:
/// a failed run under `CHAOS_KEEP=1` leaves its stack running on purpose).
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

/// The label of resources a run was asked to keep for inspection (`CHAOS_KEEP`): never reaped.
pub const KEEP_LABEL: &str = "chaos.keep";

/// The `key` of each listed resource, but those labelled [`KEEP_LABEL`].
fn ids(list: &serde_json::Value, key: &str) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter(|v| v.get("Labels").and_then(|l| l.get(KEEP_LABEL)).is_none())
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

    /// A Docker socket that answers every request with an empty list and records the paths.
    fn fake_docker(path: &std::path::Path) -> Arc<Mutex<Vec<String>>> {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for mut c in listener.incoming().flatten() {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).is_ok_and(|n| n == 1) {
                    head.push(b[0]);
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let body = if line.contains("/volumes") {
                    "{\"Volumes\":[]}"
                } else {
                    "[]"
                };
                let _ = write!(c, "HTTP/1.0 200 OK\r\n\r\n{body}");
                log.lock().unwrap().push(line);
            }
        });
        seen
    }

    fn register(addr: std::net::SocketAddr, line: &str) -> (TcpStream, Vec<u8>) {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(line.as_bytes()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = vec![0u8; 16];
        let n = c.read(&mut answer).unwrap_or(0);
        answer.truncate(n);
        (c, answer)
    }

    /// A shared reaper on a loopback port, with a fake Docker socket in a directory of its own.
    struct Fixture {
        addr: std::net::SocketAddr,
        /// The requests Docker got.
        seen: Arc<Mutex<Vec<String>>>,
        served: std::thread::JoinHandle<()>,
        dir: std::path::PathBuf,
    }

    fn shared_reaper(test: &str, linger: Duration) -> Fixture {
        let dir = std::env::temp_dir().join(format!("chaos-reaper-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("docker.sock");
        let _ = std::fs::remove_file(&sock);
        let seen = fake_docker(&sock);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sock_path = sock.display().to_string();
        let served = std::thread::spawn(move || {
            shared_on(listener, &sock_path, Duration::from_secs(30), linger).unwrap()
        });
        Fixture {
            addr,
            seen,
            served,
            dir,
        }
    }

    #[test]
    fn a_shared_reaper_reaps_each_owner_when_its_own_connection_ends_and_then_exits() {
        let Fixture {
            addr,
            seen,
            served,
            dir,
        } = shared_reaper("test", Duration::ZERO);
        let (a, held_a) = register(addr, "owner a/1/2/3\n");
        let (b, held_b) = register(addr, "owner b/1/2/3\n");
        assert_eq!((held_a.as_slice(), held_b.as_slice()), (HELD, HELD));
        let (_c, refused) = register(addr, "hello\n");
        assert!(
            refused.is_empty(),
            "a connection without an owner is closed unanswered"
        );
        let asked_for = |owner: &str| {
            let filter = percent(&format!("{OWNER_LABEL}={owner}"));
            seen.lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(&filter))
                .count()
        };
        drop(b);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Two reaps of three lists each.
        while asked_for("b/1/2/3") < 6 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(asked_for("b/1/2/3"), 6, "{:?}", seen.lock().unwrap());
        assert_eq!(asked_for("a/1/2/3"), 0, "a's connection is still held");
        assert!(!served.is_finished(), "a is still connected");
        drop(a);
        while !served.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            served.is_finished(),
            "the reaper exits once no connection is left"
        );
        assert_eq!(asked_for("a/1/2/3"), 6);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_lingering_shared_reaper_holds_the_next_process_that_comes_within_its_linger() {
        let linger = Duration::from_millis(1500);
        let Fixture {
            addr, served, dir, ..
        } = shared_reaper("linger", linger);
        // One test process after the other, a gap between them (nextest's processes).
        let (a, held_a) = register(addr, "owner a/1/2/3\n");
        assert_eq!(held_a, HELD);
        drop(a);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !served.is_finished(),
            "it lingers after the last connection"
        );
        let (b, held_b) = register(addr, "owner b/1/2/3\n");
        assert_eq!(held_b, HELD, "the next process is held within the linger");
        drop(b);
        let gone = Instant::now();
        let deadline = gone + Duration::from_secs(10);
        while !served.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(served.is_finished(), "it exits once the linger is over");
        assert!(
            gone.elapsed() >= linger,
            "it exited {:?} after the last connection, before its linger",
            gone.elapsed()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_owner_line_names_an_id_that_is_safe_in_a_filter() {
        let id = "3f1c-9a/4026531836/4242/123456";
        assert_eq!(
            parse_owner_line(format!("owner {id}").as_bytes()).unwrap(),
            id
        );
        assert_eq!(
            parse_owner_line(format!("owner {id}\r").as_bytes()).unwrap(),
            id
        );
        for bad in ["owner ", "owner b/1\"],\"x\":[\"y", "owner b 1", "held", ""] {
            assert!(parse_owner_line(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answers_and_filters_are_read_and_written_right() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[{\"Id\":\"abc\"},{\"Id\":\"kept\",\"Labels\":{\"chaos.keep\":\"true\"}}]";
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
