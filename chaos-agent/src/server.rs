//! The agent's side: `chaos-agent session` serves one client over its standard streams.
use crate::{Op, PROTOCOL, Reply, Request, Response};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bound on one command in a namespace (`iptables` waits up to 5 s for the xtables lock).
const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// The host process whose root, mounts and network namespace are the host's, as the agent
/// (`--pid=host`) sees it: 1, or the agent's parent (the container runtime's shim) when the host
/// hides its pid 1.
pub fn host_pid() -> u32 {
    if std::fs::read_link("/proc/1/root").is_ok() {
        return 1;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: getppid(2) has no preconditions.
    return unsafe { libc::getppid() } as u32;
    #[cfg(not(target_os = "linux"))]
    1
}

/// Where the host's filesystem is seen from the agent (`--pid=host`): the root of the host's
/// first process, or of the agent's parent (the container runtime's shim) when a host hides
/// its pid 1.
fn host_root() -> String {
    format!("/proc/{}/root", host_pid())
}

/// The `chaos-agent` binary: `chaos-agent session` serves one client on its standard streams
/// until its input ends (the container's main process; its stdin is the run's connection).
///
/// This crate alone does not load eBPF programs: [`crate::Op::BpfLoad`] is answered with an
/// error. [`main_with`] adds them.
pub fn main() {
    main_with(without_observers);
}

fn without_observers(op: Op) -> Result<Reply, String> {
    Err(format!(
        "this chaos-agent was built without eBPF observers, so it cannot serve {op:?}; the \
         suite's binary (chaos_runtime::agent_main) has them"
    ))
}

/// [`main`], with `extension` serving the operations this crate does not implement itself
/// (the eBPF observers, which live in the runtime).
pub fn main_with(extension: crate::Extension) {
    main_with_args(std::env::args().skip(1).collect(), extension);
}

/// [`main_with`] with the arguments given (without the program's name): for a process that
/// is the agent without being started through its own `main`, such as a test binary the chaos
/// runtime copied into the agent's container.
pub fn main_with_args(args: Vec<String>, extension: crate::Extension) {
    if args.first().map(String::as_str) == Some("session") {
        serve(std::io::stdin().lock(), std::io::stdout(), extension);
    } else {
        eprintln!(
            "usage: chaos-agent session\n\
             The chaos runtime starts this in its host-agent container; it is not run by hand."
        );
        std::process::exit(2);
    }
}

#[derive(Default)]
struct State {
    next: u64,
    kmsg: HashMap<u64, std::fs::File>,
    #[cfg(target_os = "linux")]
    udp: HashMap<u64, netns::UdpStream>,
    #[cfg(target_os = "linux")]
    held: HashMap<u64, std::os::fd::OwnedFd>,
    #[cfg(not(target_os = "linux"))]
    held: HashMap<u64, ()>,
}

/// Serves requests read from `input` until it closes; each on its own thread.
fn serve(input: impl BufRead, output: impl Write + Send + 'static, extension: crate::Extension) {
    let out = Arc::new(Mutex::new(output));
    let state = Arc::new(Mutex::new(State::default()));
    for line in input.lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let (out, state) = (out.clone(), state.clone());
        std::thread::spawn(move || {
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(r) => Response {
                    id: r.id,
                    result: handle(&state, r.op, extension),
                },
                Err(e) => Response {
                    id: 0,
                    result: Err(format!("the agent cannot read this request: {e}")),
                },
            };
            let mut line = serde_json::to_string(&response).unwrap_or_default();
            line.push('\n');
            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        });
    }
}

fn handle(state: &Mutex<State>, op: Op, extension: crate::Extension) -> Result<Reply, String> {
    match op {
        op @ (Op::BpfLoad { .. } | Op::BpfWatch { .. } | Op::BpfTake | Op::BpfStop) => {
            extension(op)
        }
        Op::Hello => Ok(Reply::Hello {
            protocol: PROTOCOL,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            pid_ns: pid_ns(),
        }),
        Op::Read { path } => std::fs::read_to_string(host(&path)?)
            .map(|text| Reply::Text { text })
            .map_err(|e| format!("cannot read {path} on the engine's host: {e}")),
        Op::Write { path, data } => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(host(&path)?)
                .map_err(|e| format!("cannot open {path} on the engine's host: {e}"))?;
            f.write_all(data.as_bytes())
                .map(|()| Reply::Done)
                .map_err(|e| format!("cannot write {data:?} to {path}: {e}"))
        }
        Op::ReadDir { path } => std::fs::read_dir(host(&path)?)
            .and_then(|d| {
                d.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .map(|names| Reply::Names { names })
            .map_err(|e| format!("cannot list {path} on the engine's host: {e}")),
        Op::Signal {
            pid,
            signal,
            container,
        } => signal_in(pid, signal, &container),
        Op::Fill { path, max_bytes } => fill(&host(&path)?, max_bytes)
            .map(|n| Reply::Count { n })
            .map_err(|e| format!("filling {path}: {e}")),
        Op::Remove { path } => std::fs::remove_file(host(&path)?)
            .map(|()| Reply::Done)
            .map_err(|e| format!("cannot remove {path}: {e}")),
        Op::KmsgOpen => kmsg::open(state),
        Op::KmsgRead { handle } => kmsg::read(state, handle),
        Op::NetnsOpen { pid } => netns::open(state, pid),
        Op::UdpStart { flows, rate } => netns::udp_start(state, &flows, rate),
        Op::UdpStop { handle } => netns::udp_stop(state, handle),
        Op::DnsQuery {
            handle,
            server,
            name,
            timeout_ms,
        } => netns::dns_query(state, handle, &server, &name, timeout_ms),
        Op::Transfer {
            from,
            to,
            to_ip,
            streams,
            millis,
            count,
            pace,
        } => netns::transfer(state, from, to, &to_ip, streams, (millis, pace), count),
        Op::NetnsRun {
            handle,
            argv,
            stdin,
        } => netns::run(state, handle, &argv, stdin.as_deref()),
        Op::NetnsClose { handle } => {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.held.remove(&handle);
            Ok(Reply::Done)
        }
    }
}

/// Writes zeros into a new file until its filesystem refuses (ENOSPC) or `max` bytes: 1 MiB
/// at a time, then 4 KiB at a time to the brim. Bytes written.
fn fill(path: &str, max: u64) -> std::io::Result<u64> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut written = 0u64;
    for block in [1usize << 20, 4096] {
        while written < max {
            let n = block.min((max - written) as usize);
            match f.write(&zeros[..n]) {
                Ok(0) => break,
                Ok(k) => written += k as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => return Err(e),
            }
        }
    }
    // What could not be written is the point; what was written must reach the filesystem.
    let _ = f.sync_all();
    Ok(written)
}

/// Signals `pid` if its cgroup names `container` (never pid 1 or the agent itself).
fn signal_in(pid: u32, signal: i32, container: &str) -> Result<Reply, String> {
    if pid <= 1 || pid == std::process::id() || container.len() < 12 {
        return Err(format!("refusing to signal pid {pid}"));
    }
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("pid {pid} is gone: {e}"))?;
    if !cgroup.contains(container) {
        return Err(format!(
            "pid {pid} is not a process of container {}",
            &container[..12]
        ));
    }
    #[cfg(unix)]
    {
        // SAFETY: kill(2) has no memory preconditions; the pid was checked above.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            return Err(format!(
                "kill({pid}, {signal}): {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Reply::Done)
    }
    #[cfg(not(unix))]
    Err(format!("cannot signal {signal} here"))
}

/// The inode of this process's pid namespace (0 when unknown).
pub fn pid_ns() -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
    }
    #[cfg(not(unix))]
    0
}

/// `path` under the host's root; only absolute paths without `..`.
fn host(path: &str) -> Result<String, String> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(format!("{path:?} is not an absolute host path"));
    }
    if let Some(rest) = path.strip_prefix("/proc/self/") {
        return Ok(format!("/proc/{}/{rest}", host_pid()));
    }
    if path.starts_with("/proc/") {
        return Ok(path.to_string());
    }
    Ok(format!("{}{path}", host_root()))
}

mod kmsg {
    use super::State;
    use crate::Reply;
    use std::io::{Read, Seek, SeekFrom};
    use std::sync::Mutex;

    pub(super) fn open(state: &Mutex<State>) -> Result<Reply, String> {
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true);
        #[cfg(target_os = "linux")]
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK);
        let mut f = opts
            .open("/dev/kmsg")
            .map_err(|e| format!("cannot open /dev/kmsg: {e}"))?;
        // SEEK_END skips the backlog: only records logged from now on.
        f.seek(SeekFrom::End(0))
            .map_err(|e| format!("/dev/kmsg: {e}"))?;
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.next += 1;
        let handle = s.next;
        s.kmsg.insert(handle, f);
        Ok(Reply::Handle { handle })
    }

    pub(super) fn read(state: &Mutex<State>, handle: u64) -> Result<Reply, String> {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let f = s
            .kmsg
            .get_mut(&handle)
            .ok_or_else(|| format!("no open kernel log {handle}"))?;
        let mut names = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while names.len() < 256 {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => names.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                // A record overwritten before it was read: skip to the next.
                Err(e) if e.raw_os_error() == Some(32) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("/dev/kmsg: {e}")),
            }
        }
        Ok(Reply::Names { names })
    }
}

#[cfg(target_os = "linux")]
pub(crate) mod netns {
    use super::{RUN_TIMEOUT, State};
    use crate::Reply;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    fn identity(path: &str) -> Option<(u64, u64)> {
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }

    pub(super) fn open(state: &Mutex<State>, pid: u32) -> Result<Reply, String> {
        let path = format!("/proc/{pid}/ns/net");
        let f = std::fs::File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
        let id = f.metadata().map(|m| (m.dev(), m.ino())).ok();
        // The host's namespace, seen as the first process's or as the container runtime's
        // (this agent's parent, the shim: a host may hide its pid 1).
        // SAFETY: getppid(2) has no preconditions.
        let parent = format!("/proc/{}/ns/net", unsafe { libc::getppid() });
        let host = [identity("/proc/1/ns/net"), identity(&parent)];
        if id.is_some() && (host.contains(&id) || id == identity("/proc/self/ns/net")) {
            return Err(format!(
                "pid {pid} is in the host's network namespace; refusing to change the host's network"
            ));
        }
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.next += 1;
        let handle = s.next;
        s.held.insert(handle, OwnedFd::from(f));
        Ok(Reply::Handle { handle })
    }

    /// A held namespace's fd, duplicated.
    fn held(state: &Mutex<State>, handle: u64) -> Result<OwnedFd, String> {
        let s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.held
            .get(&handle)
            .ok_or_else(|| format!("no held namespace {handle}"))?
            .try_clone()
            .map_err(|e| e.to_string())
    }

    /// Runs `make` on a short-lived thread that entered namespace `fd` (setns changes that
    /// thread only): a socket made there stays in the namespace wherever it is used.
    fn inside<T: Send>(
        fd: &OwnedFd,
        make: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> Result<T, String> {
        let raw = fd.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on this thread only, with an fd the caller holds open.
                if unsafe { libc::setns(raw, libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                make()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the socket thread panicked")))
        })
        .map_err(|e| e.to_string())
    }

    /// A running [`crate::Op::UdpStart`] stream.
    pub(super) struct UdpStream {
        stop: Arc<AtomicBool>,
        sent: Arc<AtomicU64>,
        thread: std::thread::JoinHandle<()>,
    }

    /// Datagrams sent together every tick.
    const BURST: u64 = 5;

    pub(super) fn udp_start(
        state: &Mutex<State>,
        flows: &[crate::UdpFlow],
        rate: u64,
    ) -> Result<Reply, String> {
        let mut sockets = Vec::new();
        for f in flows {
            let fd = held(state, f.handle)?;
            let socket = inside(&fd, || std::net::UdpSocket::bind("0.0.0.0:0"))?;
            socket.set_nonblocking(true).map_err(|e| e.to_string())?;
            let to: std::net::SocketAddr = f.to.parse().map_err(|e| format!("{}: {e}", f.to))?;
            sockets.push((socket, to));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let tick = Duration::from_micros(1_000_000 * BURST / rate.max(1));
        let thread = std::thread::spawn({
            let (stop, sent) = (stop.clone(), sent.clone());
            move || {
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    for (socket, to) in &sockets {
                        for _ in 0..BURST {
                            // A full buffer or an ICMP error is not the probe's business.
                            if socket.send_to(b"chaos-probe", to).is_ok() {
                                sent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    next += tick;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            }
        });
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.next += 1;
        let handle = s.next;
        s.udp.insert(handle, UdpStream { stop, sent, thread });
        Ok(Reply::Handle { handle })
    }

    pub(super) fn dns_query(
        state: &Mutex<State>,
        handle: u64,
        server: &str,
        name: &str,
        timeout_ms: u64,
    ) -> Result<Reply, String> {
        let fd = held(state, handle)?;
        let to: std::net::SocketAddr = server.parse().map_err(|e| format!("{server}: {e}"))?;
        let socket = inside(&fd, || std::net::UdpSocket::bind("0.0.0.0:0"))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let id = (nanos ^ std::process::id()) as u16;
        let query = crate::dns::query(id, name)?;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.max(1));
        socket
            .send_to(&query, to)
            .map_err(|e| format!("cannot send a DNS query to {server}: {e}"))?;
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no answer from {server} for {name} within {timeout_ms} ms"
                ));
            }
            socket
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            match socket.recv(&mut buf) {
                Ok(n) => match crate::dns::answer(id, &buf[..n]) {
                    Err(e) if e.contains("another query") => continue,
                    Err(e) => return Err(format!("{name}: {e}")),
                    Ok(addrs) => {
                        return Ok(Reply::Names {
                            names: addrs.iter().map(|a| a.to_string()).collect(),
                        });
                    }
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(format!("asking {server} for {name}: {e}")),
            }
        }
    }

    pub(super) fn udp_stop(state: &Mutex<State>, handle: u64) -> Result<Reply, String> {
        let stream = {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.udp
                .remove(&handle)
                .ok_or_else(|| format!("no UDP stream {handle}"))?
        };
        stream.stop.store(true, Ordering::Relaxed);
        let _ = stream.thread.join();
        Ok(Reply::Count {
            n: stream.sent.load(Ordering::Relaxed),
        })
    }

    pub(super) fn transfer(
        state: &Mutex<State>,
        from: u64,
        to: u64,
        to_ip: &str,
        streams: u32,
        (millis, pace): (u64, u64),
        count: Option<(u64, String, String)>,
    ) -> Result<Reply, String> {
        let (from, to) = (held(state, from)?, held(state, to)?);
        let mut counter = match &count {
            Some((handle, dev, kind)) => Some(inside(&held(state, *handle)?, || {
                crate::qdisc::Counter::open_here(dev, kind)
            })?),
            None => None,
        };
        let mut sent = Vec::new();
        let listener = inside(&to, || std::net::TcpListener::bind("0.0.0.0:0"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let addr: std::net::SocketAddr = format!("{to_ip}:{port}")
            .parse()
            .map_err(|e| format!("{to_ip}: {e}"))?;
        let start = Instant::now();
        let until = start + Duration::from_millis(millis);
        let total = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..streams.max(1) {
            let sender = inside(&from, || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            })
            .map_err(|e| format!("connect: {e}"))?;
            let (receiver, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            if pace > 0 {
                // A flow whose every segment the limit's queue refuses on this host has
                // nothing in flight to clock it and waits for a probe timer (200 ms or more):
                // unpaced, four flows once left an egress limit idle a tenth of the time.
                // Paced a little above the limit, they keep it busy without a drop.
                let per: u32 = (pace / u64::from(streams.max(1)))
                    .try_into()
                    .unwrap_or(u32::MAX);
                // SAFETY: setsockopt on a socket this function owns, with a u32 it reads.
                let r = unsafe {
                    libc::setsockopt(
                        sender.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_MAX_PACING_RATE,
                        (&per as *const u32).cast(),
                        std::mem::size_of::<u32>() as libc::socklen_t,
                    )
                };
                if r != 0 {
                    return Err(format!(
                        "pacing the transfer: {}",
                        std::io::Error::last_os_error()
                    ));
                }
            }
            for s in [&sender, &receiver] {
                let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                ends.push(s.try_clone().map_err(|e| e.to_string())?);
            }
            threads.push(std::thread::spawn(move || {
                let chunk = vec![0u8; 64 * 1024];
                let mut sender = sender;
                while Instant::now() < until {
                    match sender.write(&chunk) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => break,
                    }
                }
            }));
            let total = total.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut receiver = receiver;
                while Instant::now() < until + Duration::from_millis(300) {
                    match receiver.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            total.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => break,
                    }
                }
            }));
        }
        let mut samples = Vec::new();
        let mut failed = None;
        loop {
            std::thread::sleep(Duration::from_millis(50));
            // A sample after the senders stopped would count their silence as the link's.
            if Instant::now() >= until {
                break;
            }
            samples.push((
                start.elapsed().as_millis() as u64,
                total.load(Ordering::Relaxed),
            ));
            if let Some(c) = counter.as_mut().filter(|_| failed.is_none()) {
                match c.read() {
                    Ok(bytes) => sent.push(bytes),
                    Err(e) => failed = Some(format!("reading the qdisc's counter: {e}")),
                }
            }
        }
        for s in &ends {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for t in threads {
            let _ = t.join();
        }
        match failed {
            Some(why) => Err(why),
            None => Ok(Reply::Samples { samples, sent }),
        }
    }

    pub(super) fn run(
        state: &Mutex<State>,
        handle: u64,
        argv: &[String],
        stdin: Option<&str>,
    ) -> Result<Reply, String> {
        let fd = held(state, handle)?;
        let (ok, stdout, stderr) = run_in(&fd, argv, stdin)?;
        Ok(Reply::Ran { ok, stdout, stderr })
    }

    /// Runs `argv` inside the network namespace `fd` (`setns(2)` between fork and exec, like
    /// `nsenter -n`), `stdin` as its input, bounded to 10 s: (exit 0, stdout, trimmed stderr).
    pub fn run_in(
        fd: &OwnedFd,
        argv: &[String],
        stdin: Option<&str>,
    ) -> Result<(bool, String, String), String> {
        let (bin, args) = argv.split_first().ok_or("no command")?;
        let raw = fd.as_raw_fd();
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec the closure only makes the setns(2) system call, which
        // is async-signal-safe; `fd` stays open until the child has exec'd (close-on-exec).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(raw, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {bin}: {e}"))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .map_err(|e| format!("{bin}: {e}"))?;
        }
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(RUN_TIMEOUT) {
            Ok(Ok(out)) => Ok((
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            )),
            Ok(Err(e)) => Err(format!("{bin}: {e}")),
            Err(_) => {
                // SAFETY: kill(2) of our own child, still unreaped (its waiter holds it).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                Err(format!("{bin} did not finish within 10 s"))
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod netns {
    use super::State;
    use crate::Reply;
    use std::sync::Mutex;

    pub(super) fn open(_: &Mutex<State>, _: u32) -> Result<Reply, String> {
        Err("network namespaces need a Linux engine host".into())
    }

    pub(super) fn run(
        _: &Mutex<State>,
        _: u64,
        _: &[String],
        _: Option<&str>,
    ) -> Result<Reply, String> {
        Err("network namespaces need a Linux engine host".into())
    }

    pub(super) fn udp_start(
        _: &Mutex<State>,
        _: &[crate::UdpFlow],
        _: u64,
    ) -> Result<Reply, String> {
        Err("network namespaces need a Linux engine host".into())
    }

    pub(super) fn dns_query(
        _: &Mutex<State>,
        _: u64,
        _: &str,
        _: &str,
        _: u64,
    ) -> Result<Reply, String> {
        Err("network namespaces need a Linux engine host".into())
    }

    pub(super) fn udp_stop(_: &Mutex<State>, _: u64) -> Result<Reply, String> {
        Err("network namespaces need a Linux engine host".into())
    }

    pub(super) fn transfer(
        _: &Mutex<State>,
        _: u64,
        _: u64,
        _: &str,
        _: u32,
        _: (u64, u64),
        _: Option<(u64, String, String)>,
    ) -> Result<Reply, String> {
        Err("network namespaces need a Linux engine host".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_answers_each_request_by_id_and_refuses_relative_paths_and_ops_it_lacks() {
        let input = [
            r#"{"id":1,"op":{"op":"hello"}}"#,
            r#"{"id":2,"op":{"op":"read","path":"etc/passwd"}}"#,
            r#"{"id":3,"op":{"op":"netns_close","handle":9}}"#,
            r#"{"id":4,"op":{"op":"bpf_take"}}"#,
        ]
        .join("\n");
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        struct W(Arc<Mutex<Vec<u8>>>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        serve(
            std::io::Cursor::new(input),
            W(out.clone()),
            without_observers,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while std::time::Instant::now() < deadline {
            let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
            got = text
                .lines()
                .map(|l| serde_json::from_str::<Response>(l).unwrap())
                .collect::<Vec<_>>();
            if got.len() == 4 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        got.sort_by_key(|r| r.id);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(matches!(
            got[0].result,
            Ok(Reply::Hello {
                protocol: PROTOCOL,
                ..
            })
        ));
        assert!(
            got[1]
                .result
                .as_ref()
                .unwrap_err()
                .contains("not an absolute")
        );
        assert_eq!(got[2].result, Ok(Reply::Done));
        let e = got[3].result.as_ref().unwrap_err();
        assert!(e.contains("without eBPF observers"), "{e}");
    }

    #[test]
    fn fill_writes_until_its_bound_and_refuses_an_existing_file() {
        let path = std::env::temp_dir().join(format!("chaos-fill-{}", std::process::id()));
        let p = path.to_str().unwrap();
        assert_eq!(
            fill(p, 3 * 1024 * 1024 + 100).unwrap(),
            3 * 1024 * 1024 + 100
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            3 * 1024 * 1024 + 100
        );
        assert!(
            fill(p, 10).is_err(),
            "an existing file is never overwritten"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
