//! Overhead of the eBPF observers on a spawn-heavy workload, and whether they lose events.
//!
//! The "container" is a pid + network namespace made with `unshare` (as in
//! `tests/bpf_observer.rs`); its init is this binary again, in workload mode, which on each `go`
//! fork+execs `/bin/true` N times (plus a few loopback TCP connections, so the tcp programs fire
//! as well) and reports its wall and CPU time. Three conditions are sampled in the same run,
//! round after round, in the order U A W, then W A U (so a linear drift cancels):
//!
//! - U: no program loaded;
//! - A: every program loaded and attached, the namespace not in the watch maps (the programs
//!   run on every hook and drop everything in the kernel);
//! - W: attached and watched: every exit, state change and run-queue delay is recorded and read.
//!
//! Ratios are taken within a round (W/U, A/U, W/A) and summarised by their median, IQR and range.
//! The check: median W/U and A/U wall-time ratios <= 1.03, every exit of a watched `/bin/true`
//! received exactly once, nothing received from the unwatched namespace, and the programs' lost
//! counter (ring buffer full) at 0. Exits 1 when a check fails; skips (exit 0, with the reason)
//! when not root, eBPF is unavailable or chaos-runtime was built without its programs.
//!
//! `cargo bench -p chaos-runtime --bench observer_overhead`. Knobs: `CHAOS_BENCH_SPAWNS` (2000
//! per sample), `CHAOS_BENCH_TCP` (100 connections per sample), `CHAOS_BENCH_ROUNDS` (15),
//! `CHAOS_BENCH_MAX_RATIO` (1.03), `CHAOS_BENCH_SCHED` (`fifo`: the whole benchmark -- workload,
//! `/bin/true`s and the observer's reader threads alike -- runs as SCHED_FIFO priority 1, so
//! that other work on a shared machine does not sit between a wakeup and the workload running;
//! `nice` runs it at nice -20 instead, `none` leaves it alone). Run without `--bench`
//! (`cargo test --benches`) it only says so.

use chaos_runtime::observe::bpf::BpfObserver;
use chaos_runtime::observe::{Observation, WatchedContainer, kind};
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::UnboundedReceiver;

/// Set in the environment of the namespace's init: run the workload instead of the benchmark.
const WORKLOAD_ENV: &str = "CHAOS_BENCH_WORKLOAD";
const ROLE: &str = "bench";
const TRUE_BIN: &str = "/bin/true";
/// `comm` of the spawned program.
const TRUE_COMM: &str = "true";
/// Quiet time before every sample, after loading, detaching or changing the watch maps.
const SETTLE: Duration = Duration::from_millis(300);
/// Longer than the reader's drain interval (100 ms): records of a sample arrive before this.
const COLLECT: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cond {
    /// No program loaded.
    Unloaded,
    /// Loaded and attached, namespace not watched.
    Attached,
    /// Loaded, attached and watched.
    Watched,
}

impl Cond {
    fn letter(self) -> char {
        match self {
            Cond::Unloaded => 'U',
            Cond::Attached => 'A',
            Cond::Watched => 'W',
        }
    }
}

struct Config {
    spawns: u32,
    tcp: u32,
    rounds: usize,
    max_ratio: f64,
    sched: Sched,
}

/// How the benchmark competes with the rest of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sched {
    Fifo,
    Nice,
    None,
}

impl Sched {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fifo" | "" => Some(Self::Fifo),
            "nice" => Some(Self::Nice),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Sched::Fifo => "SCHED_FIFO 1",
            Sched::Nice => "nice -20",
            Sched::None => "default priority",
        }
    }

    /// Applies to the calling thread; threads and children created afterwards inherit it.
    fn apply(self) -> std::io::Result<()> {
        // SAFETY: plain syscalls on the calling thread with a valid sched_param.
        let rc = unsafe {
            match self {
                Sched::Fifo => {
                    let p = libc::sched_param { sched_priority: 1 };
                    libc::sched_setscheduler(0, libc::SCHED_FIFO, &p)
                }
                Sched::Nice => libc::setpriority(libc::PRIO_PROCESS, 0, -20),
                Sched::None => 0,
            }
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid number")),
    }
}

impl Config {
    fn from_env() -> Result<Self, String> {
        let c = Self {
            spawns: env_or("CHAOS_BENCH_SPAWNS", 2000)?,
            tcp: env_or("CHAOS_BENCH_TCP", 100)?,
            rounds: env_or("CHAOS_BENCH_ROUNDS", 15)?,
            max_ratio: env_or("CHAOS_BENCH_MAX_RATIO", 1.03)?,
            sched: match std::env::var("CHAOS_BENCH_SCHED") {
                Err(_) => Sched::Fifo,
                Ok(v) => Sched::parse(&v)
                    .ok_or_else(|| format!("CHAOS_BENCH_SCHED={v:?} is not fifo, nice or none"))?,
            },
        };
        if c.spawns == 0 || c.rounds == 0 {
            return Err("CHAOS_BENCH_SPAWNS and CHAOS_BENCH_ROUNDS must be > 0".into());
        }
        Ok(c)
    }
}

fn main() {
    if std::env::var_os(WORKLOAD_ENV).is_some() {
        workload::main();
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("observer_overhead: not run as a benchmark (cargo bench passes --bench); skipped");
        return;
    }
    if let Some(why) = skip_reason() {
        println!("observer_overhead SKIPPED: {why}");
        return;
    }
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(why) => {
            eprintln!("observer_overhead: {why}");
            std::process::exit(2);
        }
    };
    // Before any thread or child exists: both inherit it.
    if let Err(e) = cfg.sched.apply() {
        eprintln!(
            "observer_overhead: cannot run at {}: {e}",
            cfg.sched.describe()
        );
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async {
        match bench(&cfg).await {
            Ok(failures) if failures.is_empty() => {
                println!("\nPASS");
                0
            }
            Ok(failures) => {
                println!();
                for f in failures {
                    println!("FAIL: {f}");
                }
                1
            }
            Err(why) => {
                println!("\nERROR: {why}");
                1
            }
        }
    });
    std::process::exit(code);
}

/// Why this host cannot run the benchmark, if it cannot.
fn skip_reason() -> Option<String> {
    if cfg!(chaos_no_bpf) {
        return Some("chaos-runtime was built without its eBPF programs (cfg chaos_no_bpf)".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (eBPF and namespaces need it)".into());
    }
    if let Err(why) = chaos_runtime::observe::bpf::probe() {
        return Some(format!("eBPF unavailable: {why}"));
    }
    if which("unshare").is_none() {
        return Some("util-linux unshare missing".into());
    }
    if !std::path::Path::new(TRUE_BIN).is_file() {
        return Some(format!("{TRUE_BIN} missing"));
    }
    None
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// One timed run of the workload.
struct Sample {
    cond: Cond,
    wall: Duration,
    cpu: Duration,
    /// Observations received for it (loaded conditions only).
    seen: Seen,
    lost: u64,
}

#[derive(Default, Clone, Copy)]
struct Seen {
    true_exits: u64,
    other_exits: u64,
    tcp: u64,
    signals: u64,
    other: u64,
}

impl Seen {
    fn add(&mut self, o: &Observation) {
        match o.kind.as_str() {
            k if k == kind::PROCESS_EXIT => {
                if o.detail.get("comm").map(String::as_str) == Some(TRUE_COMM) {
                    self.true_exits += 1;
                } else {
                    self.other_exits += 1;
                }
            }
            k if k == kind::TCP_STATE || k == kind::TCP_RESET || k == kind::TCP_RETRANSMIT => {
                self.tcp += 1
            }
            k if k == kind::SIGNAL => self.signals += 1,
            // Histograms come once a second whatever the workload does.
            k if k == kind::RUNQ_DELAY || k == kind::BLOCK_IO_LATENCY => {}
            _ => self.other += 1,
        }
    }

    fn events(&self) -> u64 {
        self.true_exits + self.other_exits + self.tcp + self.signals + self.other
    }

    fn merge(&mut self, o: &Seen) {
        self.true_exits += o.true_exits;
        self.other_exits += o.other_exits;
        self.tcp += o.tcp;
        self.signals += o.signals;
        self.other += o.other;
    }
}

/// The namespace running the workload driver.
struct Namespace {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// Host pid of the namespace's init (the driver).
    init: u32,
}

impl Namespace {
    async fn start(cfg: &Config) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = tokio::process::Command::new(which("unshare").expect("checked"))
            .args(["--pid", "--net", "--fork", "--mount-proc"])
            .arg(exe)
            .env(WORKLOAD_ENV, "1")
            .env("CHAOS_BENCH_SPAWNS", cfg.spawns.to_string())
            .env("CHAOS_BENCH_TCP", cfg.tcp.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn unshare: {e}"))?;
        let upid = child.id().ok_or("unshare exited at once")?;
        let stdin = child.stdin.take().expect("piped");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
            Ok(Ok(Some(l))) if l == "ready" => {}
            other => return Err(format!("the workload namespace did not start: {other:?}")),
        }
        let children = std::fs::read_to_string(format!("/proc/{upid}/task/{upid}/children"))
            .map_err(|e| format!("read children of unshare: {e}"))?;
        let init = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or("unshare has no child")?;
        Ok(Self {
            child,
            stdin,
            lines,
            init,
        })
    }

    /// One sample: (wall, CPU time of the driver and its children).
    async fn run(&mut self) -> Result<(Duration, Duration), String> {
        self.stdin
            .write_all(b"go\n")
            .await
            .map_err(|e| format!("write go: {e}"))?;
        let line = tokio::time::timeout(Duration::from_secs(300), self.lines.next_line())
            .await
            .map_err(|_| "the workload took more than 300 s".to_string())?
            .map_err(|e| format!("read workload result: {e}"))?
            .ok_or("the workload namespace exited")?;
        let mut f = line.split_whitespace();
        let mut num = || -> Result<u64, String> {
            f.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("workload said {line:?}"))
        };
        if num()? != 0 {
            return Err(format!("a spawned {TRUE_BIN} failed: {line:?}"));
        }
        Ok((Duration::from_nanos(num()?), Duration::from_nanos(num()?)))
    }

    async fn stop(mut self) {
        let _ = self.stdin.write_all(b"quit\n").await;
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The observer of the current condition, if loaded.
struct Observer {
    obs: Option<BpfObserver>,
    tx: chaos_runtime::observe::Sink,
    /// Summed over observers already stopped.
    lost_before: u64,
    loads: u32,
    load_times: Vec<Duration>,
    notes: Vec<String>,
}

impl Observer {
    async fn set(&mut self, cond: Cond, init: u32) -> Result<(), String> {
        match (cond, self.obs.is_some()) {
            (Cond::Unloaded, false) => return Ok(()),
            (Cond::Unloaded, true) => {
                let obs = self.obs.take().expect("loaded");
                self.lost_before += obs.lost_events();
                obs.stop().await;
                return Ok(());
            }
            (_, false) => {
                let obs = BpfObserver::load(self.tx.clone()).map_err(|e| e.to_string())?;
                self.loads += 1;
                self.load_times.push(obs.load_time());
                if self.loads == 1 {
                    for (signal, r) in obs.signals() {
                        if let Err(why) = r {
                            self.notes
                                .push(format!("signal {signal} not attached: {why}"));
                        }
                    }
                    self.notes.extend(obs.attached().iter().cloned());
                }
                if obs
                    .signals()
                    .iter()
                    .any(|(s, r)| *s == "process" && r.is_err())
                {
                    return Err("the process programs did not attach: nothing to count".into());
                }
                self.obs = Some(obs);
            }
            (_, true) => {}
        }
        let pid = if cond == Cond::Watched { init } else { 0 };
        self.obs
            .as_ref()
            .expect("loaded")
            .watch(&WatchedContainer {
                role: ROLE.into(),
                id: format!("ns-{init}"),
                pid,
            })
            .map_err(|e| e.to_string())
    }

    fn lost(&self) -> u64 {
        self.lost_before + self.obs.as_ref().map_or(0, BpfObserver::lost_events)
    }
}

/// Everything received so far.
fn collect(rx: &mut UnboundedReceiver<Observation>, seen: &mut Seen) {
    while let Ok(o) = rx.try_recv() {
        if o.container.as_deref() == Some(ROLE) {
            seen.add(&o);
        } else {
            seen.other += 1;
        }
    }
}

async fn sample(
    cond: Cond,
    ns: &mut Namespace,
    observer: &mut Observer,
    rx: &mut UnboundedReceiver<Observation>,
    cfg: &Config,
) -> Result<Sample, String> {
    observer.set(cond, ns.init).await?;
    tokio::time::sleep(SETTLE).await;
    // Anything left over (final histograms of a stopped observer) is not this sample's.
    collect(rx, &mut Seen::default());
    let lost0 = observer.lost();
    let (wall, cpu) = ns.run().await?;
    let mut seen = Seen::default();
    if cond != Cond::Unloaded {
        tokio::time::sleep(COLLECT).await;
        collect(rx, &mut seen);
        let deadline = Instant::now() + Duration::from_secs(5);
        while cond == Cond::Watched
            && seen.true_exits < u64::from(cfg.spawns)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            collect(rx, &mut seen);
        }
        // Late duplicates or strays would show up here.
        tokio::time::sleep(Duration::from_millis(150)).await;
        collect(rx, &mut seen);
    }
    Ok(Sample {
        cond,
        wall,
        cpu,
        seen,
        lost: observer.lost() - lost0,
    })
}

/// Linear-interpolated quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

struct Summary {
    median: f64,
    q1: f64,
    q3: f64,
    min: f64,
    max: f64,
}

fn summary(values: &[f64]) -> Summary {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Summary {
        median: quantile(&v, 0.5),
        q1: quantile(&v, 0.25),
        q3: quantile(&v, 0.75),
        min: v[0],
        max: v[v.len() - 1],
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn bench(cfg: &Config) -> Result<Vec<String>, String> {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "observer overhead: {} fork+exec of {TRUE_BIN} + {} loopback TCP connections per sample, \
         in an unshare'd pid+net namespace",
        cfg.spawns, cfg.tcp
    );
    println!(
        "host: {cpus} CPUs, kernel {}, load average at start {}; benchmark at {}",
        kernel(),
        loadavg(),
        cfg.sched.describe()
    );
    println!(
        "{} rounds (+1 warm-up) of U = not loaded, A = attached not watched, W = attached and \
         watched; order U A W / W A U alternating\n",
        cfg.rounds
    );

    let mut ns = Namespace::start(cfg).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut observer = Observer {
        obs: None,
        tx,
        lost_before: 0,
        loads: 0,
        load_times: Vec::new(),
        notes: Vec::new(),
    };
    let started = Instant::now();
    let mut rounds: Vec<[Sample; 3]> = Vec::new();
    println!(
        "{:>5}  {:<5}  {:>9} {:>9} {:>9}  {:>6} {:>6} {:>6}",
        "round", "order", "U ms", "A ms", "W ms", "A/U", "W/U", "W/A"
    );
    let result: Result<(), String> = async {
        for r in 0..=cfg.rounds {
            let order = if r % 2 == 0 {
                [Cond::Unloaded, Cond::Attached, Cond::Watched]
            } else {
                [Cond::Watched, Cond::Attached, Cond::Unloaded]
            };
            let mut got = Vec::new();
            for cond in order {
                got.push(sample(cond, &mut ns, &mut observer, &mut rx, cfg).await?);
            }
            got.sort_by_key(|s| s.cond as u8);
            let [u, a, w]: [Sample; 3] = got.try_into().map_err(|_| "three samples")?;
            let label = if r == 0 {
                "warm".to_string()
            } else {
                r.to_string()
            };
            let ratio = |x: &Sample, y: &Sample| x.wall.as_secs_f64() / y.wall.as_secs_f64();
            println!(
                "{label:>5}  {:<5}  {:>9.1} {:>9.1} {:>9.1}  {:>6.3} {:>6.3} {:>6.3}",
                order.iter().map(|c| c.letter()).collect::<String>(),
                ms(u.wall),
                ms(a.wall),
                ms(w.wall),
                ratio(&a, &u),
                ratio(&w, &u),
                ratio(&w, &a),
            );
            if r > 0 {
                rounds.push([u, a, w]);
            }
        }
        Ok(())
    }
    .await;
    observer.set(Cond::Unloaded, ns.init).await?;
    ns.stop().await;
    result?;
    let elapsed = started.elapsed();

    // Per condition.
    println!(
        "\n{:<28} {:>12} {:>12} {:>10} {:>12}",
        "condition", "median wall", "min wall", "spawns/s", "median CPU"
    );
    for (i, name) in [
        "U  not loaded",
        "A  attached, not watched",
        "W  attached and watched",
    ]
    .iter()
    .enumerate()
    {
        let wall = summary(&rounds.iter().map(|s| ms(s[i].wall)).collect::<Vec<_>>());
        let cpu = summary(&rounds.iter().map(|s| ms(s[i].cpu)).collect::<Vec<_>>());
        println!(
            "{name:<28} {:>9.1} ms {:>9.1} ms {:>10.0} {:>9.1} ms",
            wall.median,
            wall.min,
            f64::from(cfg.spawns) / (wall.median / 1e3),
            cpu.median
        );
    }

    // Paired ratios.
    println!(
        "\n{:<22} {:>7} {:>16} {:>7} {:>7}",
        "ratio (same round)", "median", "IQR", "min", "max"
    );
    let mut medians = Vec::new();
    for (label, x, y, wall) in [
        ("A/U wall", 1, 0, true),
        ("W/U wall", 2, 0, true),
        ("W/A wall", 2, 1, true),
        ("A/U cpu", 1, 0, false),
        ("W/U cpu", 2, 0, false),
    ] {
        let t = |s: &Sample| {
            if wall {
                s.wall.as_secs_f64()
            } else {
                s.cpu.as_secs_f64()
            }
        };
        let ratios: Vec<f64> = rounds.iter().map(|s| t(&s[x]) / t(&s[y])).collect();
        let s = summary(&ratios);
        println!(
            "{label:<22} {:>7.3} {:>16} {:>7.3} {:>7.3}",
            s.median,
            format!("{:.3}-{:.3}", s.q1, s.q3),
            s.min,
            s.max
        );
        medians.push((label, s.median));
    }

    // Events.
    let mut watched = Seen::default();
    let mut unwatched = Seen::default();
    let mut short = 0;
    let mut lost = 0;
    for s in rounds.iter().flatten() {
        lost += s.lost;
        match s.cond {
            Cond::Watched => {
                watched.merge(&s.seen);
                if s.seen.true_exits != u64::from(cfg.spawns) {
                    short += 1;
                }
            }
            Cond::Attached => unwatched.merge(&s.seen),
            Cond::Unloaded => {}
        }
    }
    let expected = u64::from(cfg.spawns) * rounds.len() as u64;
    println!(
        "\nevents, watched samples: process_exit of `{TRUE_COMM}` expected {expected}, received {} \
         ({short} samples off); other exits {}; tcp {} ({:.1} per connection); signals {}; other {}",
        watched.true_exits,
        watched.other_exits,
        watched.tcp,
        watched.tcp as f64 / (f64::from(cfg.tcp.max(1)) * rounds.len() as f64),
        watched.signals,
        watched.other,
    );
    println!(
        "events, unwatched samples: {} received (expected 0: dropped in the kernel)",
        unwatched.events()
    );
    println!(
        "lost (ring buffer full, lost_events counter): {lost} in measured samples, {} overall",
        observer.lost()
    );
    let lt = summary(
        &observer
            .load_times
            .iter()
            .map(|d| ms(*d))
            .collect::<Vec<_>>(),
    );
    println!(
        "observer loaded {} times (load+attach median {:.0} ms); run took {:.0} s; \
         load average at end {}",
        observer.loads,
        lt.median,
        elapsed.as_secs_f64(),
        loadavg()
    );
    for n in &observer.notes {
        println!("  {n}");
    }

    let mut failures = Vec::new();
    for (label, m) in medians.iter().filter(|(l, _)| l.ends_with("/U wall")) {
        if *m > cfg.max_ratio {
            failures.push(format!(
                "median {label} ratio {m:.3} exceeds {:.3}",
                cfg.max_ratio
            ));
        }
    }
    if watched.true_exits != expected || short != 0 {
        failures.push(format!(
            "{} process_exit of `{TRUE_COMM}` received for {expected} spawns ({short} samples off)",
            watched.true_exits
        ));
    }
    if unwatched.events() != 0 {
        failures.push(format!(
            "{} events received from the unwatched namespace",
            unwatched.events()
        ));
    }
    if observer.lost() != 0 {
        failures.push(format!(
            "{} records lost to a full ring buffer",
            observer.lost()
        ));
    }
    Ok(failures)
}

/// The namespace's init: spawns on demand, reports timings on stdout.
mod workload {
    use super::*;
    use std::ffi::CString;
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    pub fn main() {
        let spawns: u32 = env_or("CHAOS_BENCH_SPAWNS", 2000).expect("spawns");
        let tcp: u32 = env_or("CHAOS_BENCH_TCP", 100).expect("tcp");
        loopback_up();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local_addr");
        let path = CString::new(TRUE_BIN).expect("no NUL");
        let argv = [path.as_ptr(), std::ptr::null()];
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        // A connection every `every` spawns.
        let every = if tcp == 0 { 0 } else { spawns.div_ceil(tcp) };

        let mut out = std::io::stdout().lock();
        writeln!(out, "ready")
            .and_then(|()| out.flush())
            .expect("stdout");
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let line = line.expect("stdin");
            if line.trim() != "go" {
                break;
            }
            let cpu0 = cpu_time();
            let t = Instant::now();
            let mut failed = 0u32;
            let mut conns = 0;
            for i in 0..spawns {
                // SAFETY: this process has one thread; the child only calls execve and _exit,
                // with arguments prepared before the fork.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: in the child; pointers built before the fork, NUL-terminated arrays.
                    unsafe {
                        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                        libc::_exit(127);
                    }
                }
                assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
                let mut status = 0;
                // SAFETY: waits for the child just forked.
                let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
                if rc != pid || status != 0 {
                    failed += 1;
                }
                if every != 0 && i % every == 0 && conns < tcp {
                    connection(&listener, addr);
                    conns += 1;
                }
            }
            let wall = t.elapsed();
            let cpu = cpu_time().saturating_sub(cpu0);
            writeln!(out, "{failed} {} {}", wall.as_nanos(), cpu.as_nanos())
                .and_then(|()| out.flush())
                .expect("stdout");
        }
    }

    /// A loopback connection opened, used and closed by both ends.
    fn connection(listener: &TcpListener, addr: std::net::SocketAddr) {
        let mut client = TcpStream::connect(addr).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(b"x").expect("write");
        let mut b = [0u8; 1];
        server.read_exact(&mut b).expect("read");
        drop(client);
        let _ = server.read(&mut b);
    }

    /// User + system time of this process and its reaped children.
    fn cpu_time() -> Duration {
        let of = |who| {
            // SAFETY: getrusage fills the zeroed struct it is given.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(who, &mut ru) };
            let tv = |t: libc::timeval| {
                Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
            };
            tv(ru.ru_utime) + tv(ru.ru_stime)
        };
        of(libc::RUSAGE_SELF) + of(libc::RUSAGE_CHILDREN)
    }

    fn loopback_up() {
        // SAFETY: plain socket + ioctl on a zeroed ifreq naming "lo"; the fd is closed below.
        unsafe {
            let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            assert!(s >= 0, "socket");
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (d, b) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
                *d = *b as libc::c_char;
            }
            assert_eq!(
                libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr),
                0,
                "SIOCGIFFLAGS"
            );
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            assert_eq!(libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr), 0, "SIOCSIFFLAGS");
            libc::close(s);
        }
    }
}
