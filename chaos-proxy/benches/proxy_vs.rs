//! chaos-proxy against a direct connection (and noxious, if `NOXIOUS_BIN` names a
//! `noxious-server` binary), measured in the same run, interleaved.
//!
//! ```text
//! nice cargo bench -p chaos-proxy --bench proxy_vs
//! NOXIOUS_BIN=/work/noxious/target/release/noxious-server nice cargo bench -p chaos-proxy --bench proxy_vs
//! ```
//!
//! `BASELINE_BIN` may name an older chaos-proxy to run beside the current one as
//! `ours-before` (an older build of this bench executable, or the real binary).
//!
//! Everything runs on 127.0.0.1. The driver (this process) runs a blocking echo
//! server and a blocking sink on threads, and spawns the proxies as separate
//! processes: chaos-proxy is this same executable re-run with
//! `PROXY_VS_ROLE=serve` (which calls [`chaos_proxy::main`], the real binary's
//! entry point); noxious is `$NOXIOUS_BIN --host 127.0.0.1 --port P`. Proxies
//! and toxics are created through each proxy's HTTP API.
//!
//! Each round measures, for every target in a rotating order:
//! - `rtt`: `PROXY_VS_RTTS` (1000) round trips of a 64-byte message on one
//!   persistent connection to the echo server, in 4 blocks interleaved with the
//!   other targets' blocks;
//! - `bulk`: `PROXY_VS_MIB` (64) MiB written in 256 KiB writes to the sink, as 4
//!   transfers interleaved with the other targets', each timed until the sink
//!   acknowledges its last byte; a target's ratio to direct is taken per
//!   transfer against the direct transfer of the same slice;
//! - `lat100`: 20 round trips through a second proxy with a 100 ms downstream
//!   latency toxic; the error is the round trip minus 100 ms. For `direct`, the
//!   same round trips to an echo that itself answers 100 ms late (sleep, then
//!   spin): the floor, what the client's wake-up after 100 ms idle costs here.
//!
//! `PROXY_VS_ROUNDS` (10) rounds; the first round is a warm-up and discarded.
//! Prints medians and p99s over all samples, the median and quartiles of the
//! paired throughput ratios, and each proxy process's CPU time (all threads,
//! from `/proc/PID/task/*/schedstat`) per round trip and per GB of bulk: a cost
//! that the load of other processes on a shared machine disturbs far less than
//! wall-clock times. Run without `--bench` (e.g. `cargo test --benches`) it only says it
//! skipped. No assertion: it reports.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MSG: usize = 64;
const LAT_MS: u64 = 100;
const LAT_RTTS: usize = 20;
const BLOCK: usize = 256 * 1024;
/// Blocks of round trips and bulk transfers per round, interleaved across targets.
const SLICES: usize = 4;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var("PROXY_VS_ROLE").as_deref() == Ok("serve") {
        chaos_proxy::main();
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("proxy_vs: skipped (run with `cargo bench -p chaos-proxy --bench proxy_vs`)");
        return;
    }
    let rounds = env_usize("PROXY_VS_ROUNDS", 10).max(2);
    let rtts = env_usize("PROXY_VS_RTTS", 1000);
    let mib = env_usize("PROXY_VS_MIB", 64);

    let echo = spawn_echo(None);
    let sink = spawn_sink();
    let late_echo = spawn_echo(Some(Duration::from_millis(LAT_MS)));
    println!(
        "proxy_vs: echo {echo}, sink {sink}; {rounds} rounds (first discarded), {rtts} rtts of {MSG} B, {mib} MiB bulk, {LAT_RTTS} rtts with {LAT_MS} ms latency"
    );
    println!("load average at start: {}", loadavg());

    let mut targets = vec![Target::direct(echo, sink, late_echo)];
    let mut children = Vec::new();
    let exe = std::env::current_exe().expect("current_exe");
    let (child, t) = start_proxy(
        "ours",
        &exe,
        &[("PROXY_VS_ROLE", "serve")],
        echo,
        sink,
        |port| vec!["--api".into(), format!("127.0.0.1:{port}")],
    );
    children.push(child);
    targets.push(t);
    if let Ok(bin) = std::env::var("BASELINE_BIN") {
        // An older chaos-proxy (its `proxy_vs` bench executable or the real binary).
        let (child, t) = start_proxy(
            "ours-before",
            bin.as_ref(),
            &[("PROXY_VS_ROLE", "serve")],
            echo,
            sink,
            |port| vec!["--api".into(), format!("127.0.0.1:{port}")],
        );
        children.push(child);
        targets.push(t);
    }
    if let Ok(bin) = std::env::var("NOXIOUS_BIN") {
        let (child, t) = start_proxy("noxious", bin.as_ref(), &[], echo, sink, |port| {
            vec![
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
            ]
        });
        children.push(child);
        targets.push(t);
    }

    let n = targets.len();
    let mut rtt: Vec<Vec<Duration>> = vec![Vec::new(); n];
    let mut bulk: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); n];
    for round in 0..rounds {
        let keep = round > 0;
        // Small blocks, the order rotated every block, so that load that comes
        // and goes on the shared machine falls on every target alike.
        for block in 0..SLICES {
            for k in 0..n {
                let i = (k + round + block) % n;
                let c0 = cpu_ns(targets[i].pid);
                let r = targets[i].rtts(rtts / SLICES);
                if keep {
                    targets[i].cpu_rtt_ns += cpu_ns(targets[i].pid) - c0;
                    rtt[i].extend(r);
                }
            }
        }
        // Bulk: SLICES transfers of mib / SLICES each per target, interleaved;
        // each target's transfer is paired with the direct one of its slice.
        for slice in 0..SLICES {
            let mut got = vec![0.0; n];
            for k in 0..n {
                let i = (k + round + slice) % n;
                let c0 = cpu_ns(targets[i].pid);
                got[i] = targets[i].bulk((mib / SLICES).max(1));
                if keep {
                    targets[i].cpu_bulk_ns += cpu_ns(targets[i].pid) - c0;
                }
            }
            if keep {
                for i in 0..n {
                    bulk[i].push(got[i]);
                }
            }
        }
        for k in 0..n {
            let i = (k + round) % n;
            let l = targets[i].lat_rtts();
            if keep {
                lat[i].extend(l);
            }
        }
    }

    println!("load average at end:   {}", loadavg());
    println!();
    let d50 = pct(&rtt[0], 50.0);
    println!(
        "| target | rtt p50 | added p50 | rtt p99 | p99 / direct | bulk MB/s (median) | bulk / direct (median of paired transfers, IQR) | lat {LAT_MS} ms error p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for i in 0..n {
        let ratios: Vec<f64> = bulk[i].iter().zip(&bulk[0]).map(|(a, d)| a / d).collect();
        let lat_err = |p| {
            if lat[i].is_empty() {
                "—".to_string()
            } else {
                let v = pct(&lat[i], p).as_secs_f64() * 1e3 - LAT_MS as f64;
                format!("{v:+.2} ms")
            }
        };
        println!(
            "| {} | {:.0} µs | {} | {:.0} µs | {:.2}× | {:.0} | {:.2}× ({:.2}–{:.2}) | {} | {} |",
            targets[i].name,
            us(pct(&rtt[i], 50.0)),
            if i == 0 {
                "—".to_string()
            } else {
                format!("{:+.0} µs", us(pct(&rtt[i], 50.0)) - us(d50))
            },
            us(pct(&rtt[i], 99.0)),
            us(pct(&rtt[i], 99.0)) / us(pct(&rtt[0], 99.0)),
            median(&bulk[i]),
            quantile(&ratios, 0.5),
            quantile(&ratios, 0.25),
            quantile(&ratios, 0.75),
            lat_err(50.0),
            lat_err(99.0),
        );
    }
    println!();
    println!("| proxy | CPU per round trip | CPU per GB of bulk |");
    println!("|---|---|---|");
    let bulk_gb = ((rounds - 1) * SLICES * (mib / SLICES).max(1)) as f64 * 1.048_576e-3;
    let n_rtts = ((rounds - 1) * SLICES * (rtts / SLICES)) as f64;
    for t in targets.iter().filter(|t| t.pid.is_some()) {
        println!(
            "| {} | {:.1} µs | {:.0} ms |",
            t.name,
            t.cpu_rtt_ns as f64 / 1e3 / n_rtts,
            t.cpu_bulk_ns as f64 / 1e6 / bulk_gb,
        );
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx]
}

fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

struct Target {
    name: String,
    rtt_conn: TcpStream,
    sink_conn: TcpStream,
    lat_conn: Option<TcpStream>,
    /// The proxy process, whose CPU time is measured (none for direct).
    pid: Option<u32>,
    /// Proxy CPU time spent in kept rtt blocks and bulk transfers, ns.
    cpu_rtt_ns: u64,
    cpu_bulk_ns: u64,
}

/// CPU time of all threads of a process so far (ns, from schedstat).
fn cpu_ns(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return s;
            }
            Err(e) if Instant::now() > deadline => panic!("connect {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Target {
    fn direct(echo: SocketAddr, sink: SocketAddr, late_echo: SocketAddr) -> Target {
        Target {
            name: "direct".into(),
            rtt_conn: connect(echo),
            sink_conn: connect(sink),
            // The floor of the latency toxic's error: no proxy, the echo itself
            // answers 100 ms late.
            lat_conn: Some(connect(late_echo)),
            pid: None,
            cpu_rtt_ns: 0,
            cpu_bulk_ns: 0,
        }
    }

    fn round_trip(s: &mut TcpStream) -> Duration {
        let msg = [7u8; MSG];
        let mut buf = [0u8; MSG];
        let t0 = Instant::now();
        s.write_all(&msg).unwrap();
        s.read_exact(&mut buf).unwrap();
        let d = t0.elapsed();
        assert_eq!(buf, msg);
        d
    }

    fn rtts(&mut self, n: usize) -> Vec<Duration> {
        (0..n)
            .map(|_| Self::round_trip(&mut self.rtt_conn))
            .collect()
    }

    fn lat_rtts(&mut self) -> Vec<Duration> {
        match &mut self.lat_conn {
            Some(s) => (0..LAT_RTTS).map(|_| Self::round_trip(s)).collect(),
            None => Vec::new(),
        }
    }

    /// MB/s (10^6 bytes) of `mib` MiB written to the sink until acknowledged.
    fn bulk(&mut self, mib: usize) -> f64 {
        let total = (mib * 1024 * 1024) as u64;
        let block = vec![0x5au8; BLOCK];
        let s = &mut self.sink_conn;
        let t0 = Instant::now();
        s.write_all(&total.to_be_bytes()).unwrap();
        let mut left = total as usize;
        while left > 0 {
            let n = left.min(BLOCK);
            s.write_all(&block[..n]).unwrap();
            left -= n;
        }
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack).unwrap();
        total as f64 / t0.elapsed().as_secs_f64() / 1e6
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a proxy process, waits for its API, and creates three proxies
/// (echo, sink, echo with a latency toxic) through it.
fn start_proxy(
    name: &str,
    program: &std::path::Path,
    env: &[(&str, &str)],
    echo: SocketAddr,
    sink: SocketAddr,
    args: impl Fn(u16) -> Vec<String>,
) -> (Child, Target) {
    let api_port = free_port();
    let mut cmd = Command::new(program);
    cmd.args(args(api_port))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: cannot start {}: {e}", program.display()));
    // Drain its stdout so it never blocks on a full pipe.
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
    }
    let api = format!("127.0.0.1:{api_port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(&api, "GET", "/version", "").is_err() {
        assert!(Instant::now() < deadline, "{name}: API never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut listen = Vec::new();
    for (pname, upstream) in [("echo", echo), ("sink", sink), ("lat", echo)] {
        let port = free_port();
        let body = format!(
            r#"{{"name":"{pname}","listen":"127.0.0.1:{port}","upstream":"{upstream}","enabled":true}}"#
        );
        let (st, answer) = http(&api, "POST", "/proxies", &body).expect("create proxy");
        assert!(
            st == 201 || st == 200,
            "{name}: create {pname}: {st} {answer}"
        );
        listen.push(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let toxic = format!(
        r#"{{"name":"lat","type":"latency","stream":"downstream","toxicity":1.0,"attributes":{{"latency":{LAT_MS},"jitter":0}}}}"#
    );
    let (st, answer) = http(&api, "POST", "/proxies/lat/toxics", &toxic).expect("add toxic");
    assert!(st == 200, "{name}: add toxic: {st} {answer}");
    let t = Target {
        name: name.into(),
        rtt_conn: connect(listen[0]),
        sink_conn: connect(listen[1]),
        lat_conn: Some(connect(listen[2])),
        pid: Some(child.id()),
        cpu_rtt_ns: 0,
        cpu_bulk_ns: 0,
    };
    (child, t)
}

/// A minimal blocking HTTP/1.1 request; returns (status, body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: proxy_vs\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad answer: {answer:?}")))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// An echo on 127.0.0.1. With `late`, each read is answered that long after it
/// arrived, as punctually as a thread can (a sleep until 300 µs before, then a
/// spin): with `LAT_MS`, the round trip a latency toxic would give if the proxy
/// added nothing, so what the client's own wake-up after 100 ms of idling costs
/// on this machine.
fn spawn_echo(late: Option<Duration>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_nodelay(true);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if let Some(late) = late {
                                let at = Instant::now() + late;
                                let spin = Duration::from_micros(300);
                                std::thread::sleep((at - Instant::now()).saturating_sub(spin));
                                while Instant::now() < at {
                                    std::hint::spin_loop();
                                }
                            }
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Reads an 8-byte big-endian length, then that many bytes, then answers one byte.
fn spawn_sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_nodelay(true);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let mut len = [0u8; 8];
                    if s.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut left = u64::from_be_bytes(len) as usize;
                    while left > 0 {
                        let want = left.min(buf.len());
                        match s.read(&mut buf[..want]) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => left -= n,
                        }
                    }
                    if s.write_all(&[1]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
