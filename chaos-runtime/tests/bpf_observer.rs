//! The eBPF observer against real kernel events.
//!
//! No container images exist on the test hosts, so the "container" is a pid + network namespace
//! made with `unshare`, watched through a pseudo-container whose pid is the namespace's init.
//! A decoy namespace and the host do the same things at the same time; none of it may show up.
//! Covered: SIGKILL (exit + delivery), a memory-cgroup OOM kill, a refused connect (resets and
//! state changes), a dropped SYN (retransmit), run-queue delay and O_DIRECT block I/O latency.
//!
//! Needs root, a kernel with BTF and eBPF, and util-linux `unshare`; without them each test
//! prints why it skips and passes.

use chaos_runtime::observe::bpf::{Attach, BpfObserver};
use chaos_runtime::observe::{Observation, WatchedContainer, kind};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROLE: &str = "pseudo";
/// Closed ports: nothing listens in a fresh network namespace.
const WATCHED_PORT: u16 = 7;
const DECOY_PORT: u16 = 8;
/// A listener with a full accept queue: SYNs to it are dropped and retransmitted.
const RETRANSMIT_PORT: u16 = 9;
const HOG_LIMIT: u64 = 32 << 20;

/// The script each namespace runs once told to go (a line on stdin). `$VICTIM` is a symlink to
/// `sleep`, so the process is called that; `chaoshog` is `dd` reading 200 MiB into one buffer.
const SCRIPT: &str = r#"
read go
"$CHAOS_DIR/$VICTIM" 1000 &
v=$!
sleep 0.3
kill -KILL $v
wait $v 2>/dev/null
if [ -n "${CHAOS_CG:-}" ]; then
  sh -c 'echo $$ > "$CHAOS_CG/cgroup.procs" && echo "hog $$" && exec "$CHAOS_DIR/chaoshog" if=/dev/zero of=/dev/null bs=200M count=1' 2>/dev/null
fi
dd if=/dev/zero of="$CHAOS_DIR/io-$VICTIM" bs=4096 count=256 oflag=direct 2>/dev/null
sleep 0.3
"#;

/// Why this host cannot run the scenario, if it cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (eBPF, namespaces and cgroups need it)".into());
    }
    if let Err(why) = chaos_runtime::observe::bpf::probe() {
        return Some(format!("eBPF unavailable: {why}"));
    }
    if which("unshare").is_none() || which("dd").is_none() || which("sleep").is_none() {
        return Some("util-linux unshare, dd or sleep missing".into());
    }
    None
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/bin".into(), "/bin".into(), "/usr/sbin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// Everything the scenario creates; dropping it kills and removes all of it.
struct Fixture {
    dir: PathBuf,
    cgroup: Option<PathBuf>,
    children: Vec<Child>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(cg) = &self.cgroup {
            // The OOM victim may take a moment to be released.
            for _ in 0..50 {
                if std::fs::remove_dir(cg).is_ok() || !cg.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A memory cgroup limited to 32 MiB, v1 (`/sys/fs/cgroup/memory`) or v2.
fn memory_cgroup(name: &str) -> Result<PathBuf, String> {
    let v1 = Path::new("/sys/fs/cgroup/memory");
    let (dir, files): (PathBuf, &[&str]) = if v1.join("memory.limit_in_bytes").exists() {
        (
            v1.join(name),
            &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
        )
    } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        (
            Path::new("/sys/fs/cgroup").join(name),
            &["memory.max", "memory.swap.max"],
        )
    } else {
        return Err("no memory cgroup hierarchy".into());
    };
    std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    for (i, f) in files.iter().enumerate() {
        let value = if f.contains("swap.max") {
            "0".to_string()
        } else {
            HOG_LIMIT.to_string()
        };
        let path = dir.join(f);
        if let Err(e) = std::fs::write(&path, value) {
            // The swap limit is optional (no swap accounting); the memory limit is not.
            if i == 0 {
                let _ = std::fs::remove_dir(&dir);
                return Err(format!("write {}: {e}", path.display()));
            }
        }
    }
    Ok(dir)
}

/// `oom_kill` count of a cgroup (v1 memory.oom_control, v2 memory.events).
fn oom_kills(cg: &Path) -> u64 {
    ["memory.oom_control", "memory.events"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(cg.join(f)).ok())
        .flat_map(|s| s.lines().map(str::to_owned).collect::<Vec<_>>())
        .find_map(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Starts `unshare --pid --net --fork --mount-proc sh -c SCRIPT` (kept in `fx`, which kills and
/// reaps it); returns the host pid of the namespace's init (the `sh`).
fn spawn_namespace(fx: &mut Fixture, victim: &str, cgroup: bool) -> u32 {
    let mut cmd = Command::new(which("unshare").unwrap());
    cmd.args([
        "--pid",
        "--net",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        SCRIPT,
    ])
    .env("CHAOS_DIR", &fx.dir)
    .env("VICTIM", victim)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let (true, Some(cg)) = (cgroup, &fx.cgroup) {
        cmd.env("CHAOS_CG", cg);
    }
    fx.children.push(cmd.spawn().expect("spawn unshare"));
    let upid = fx.children.last().unwrap().id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{upid}/task/{upid}/children"))
            .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "unshare did not fork its namespace init in 10 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `f` inside the network namespace of `pid` (after bringing its loopback up), on a thread
/// of its own so the test's other threads stay where they are.
fn in_netns(pid: u32, f: impl FnOnce() + Send + 'static) {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("open netns");
    std::thread::spawn(move || {
        // SAFETY: setns on an open nsfs fd only moves this thread, which ends right after.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        loopback_up();
        f();
    })
    .join()
    .expect("netns thread");
}

/// A SYN retransmit: a listener whose accept queue holds no more than the one connection it
/// already has drops the next SYN, so the client sends it again after its 1 s timeout.
fn syn_retransmitted(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(addr).expect("bind");
    // SAFETY: re-listening on our own listening socket only changes its backlog.
    assert_eq!(
        unsafe { libc::listen(listener.as_raw_fd(), 0) },
        0,
        "listen"
    );
    let _queued = TcpStream::connect(addr).expect("first connect fills the queue");
    let r = TcpStream::connect_timeout(&addr, Duration::from_millis(1600));
    assert!(r.is_err(), "the second SYN was not dropped");
}

fn connect_refused(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let r = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    assert!(r.is_err(), "something listens on 127.0.0.1:{port}");
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
            "SIOCGIFFLAGS lo"
        );
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(
            libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr),
            0,
            "SIOCSIFFLAGS lo"
        );
        libc::close(s);
    }
}

fn wait_exit(child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "{what} did not finish in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn d<'a>(o: &'a Observation, k: &str) -> Option<&'a str> {
    o.detail.get(k).map(String::as_str)
}

/// What the scenario saw.
struct Seen {
    observations: Vec<Observation>,
    hog_ns_pid: Option<String>,
    oom_kills: u64,
    cgroup_note: Option<String>,
    host_outsider_pid: u32,
    host_port: u16,
}

async fn scenario(attach: Attach) -> Option<Seen> {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return None;
    }
    let tag = format!("{}-{attach:?}", std::process::id()).to_lowercase();
    let dir = std::env::temp_dir().join(format!("chaos-bpf-test-{tag}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sleep = which("sleep").unwrap();
    for name in ["chaosvictim", "chaosdecoy", "chaosoutsider"] {
        std::os::unix::fs::symlink(&sleep, dir.join(name)).expect("symlink");
    }
    std::os::unix::fs::symlink(which("dd").unwrap(), dir.join("chaoshog")).expect("symlink");
    let (cgroup, cgroup_note) = match memory_cgroup(&format!("chaos-test-{tag}")) {
        Ok(cg) => (Some(cg), None),
        Err(why) => (None, Some(why)),
    };
    let mut fx = Fixture {
        dir: dir.clone(),
        cgroup,
        children: Vec::new(),
    };

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let obs = BpfObserver::load_with(tx, attach).expect("probe passed, so load must");
    println!("{attach:?}: loaded and attached in {:?}", obs.load_time());
    for line in obs.attached() {
        println!("  {line}");
    }
    for (signal, r) in obs.signals() {
        assert!(r.is_ok(), "signal {signal} did not attach: {r:?}");
    }

    let init = spawn_namespace(&mut fx, "chaosvictim", true);
    let decoy_init = spawn_namespace(&mut fx, "chaosdecoy", false);
    obs.watch(&WatchedContainer {
        role: ROLE.into(),
        id: format!("ns-{init}"),
        pid: init,
    })
    .expect("watch");

    // TCP: refused connects in the watched netns, the decoy netns and the host.
    in_netns(init, || {
        connect_refused(WATCHED_PORT);
        syn_retransmitted(RETRANSMIT_PORT);
    });
    in_netns(decoy_init, || connect_refused(DECOY_PORT));
    let host_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    connect_refused(host_port);

    // Processes: go in both namespaces, and a SIGKILLed process on the host.
    for c in &mut fx.children {
        c.stdin.as_mut().unwrap().write_all(b"go\n").expect("go");
    }
    let mut outsider = Command::new(dir.join("chaosoutsider"))
        .arg("1000")
        .spawn()
        .expect("outsider");
    let host_outsider_pid = outsider.id();
    std::thread::sleep(Duration::from_millis(300));
    outsider.kill().expect("kill outsider");
    outsider.wait().unwrap();

    for (i, c) in fx.children.iter_mut().enumerate() {
        wait_exit(
            c,
            if i == 0 {
                "the watched namespace"
            } else {
                "the decoy namespace"
            },
        );
    }
    let out = fx.children[0].stdout.take().unwrap();
    let hog_ns_pid = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("hog ").map(str::to_owned));
    let oom_kills = fx.cgroup.as_deref().map_or(0, oom_kills);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    obs.stop().await;
    println!(
        "{attach:?}: stopped (final drain + detach) in {:?}",
        t.elapsed()
    );
    let mut observations = Vec::new();
    while let Ok(o) = rx.try_recv() {
        observations.push(o);
    }
    drop(fx);
    Some(Seen {
        observations,
        hog_ns_pid,
        oom_kills,
        cgroup_note,
        host_outsider_pid,
        host_port,
    })
}

fn check(seen: &Seen) {
    let all = &seen.observations;
    let summary: std::collections::BTreeMap<&str, usize> =
        all.iter().fold(Default::default(), |mut m, o| {
            *m.entry(o.kind.as_str()).or_default() += 1;
            m
        });
    println!("observations by kind: {summary:?}");
    for o in all.iter().filter(|o| o.kind != kind::SIGNAL) {
        println!("  {} {:?}", o.kind, o.detail);
    }
    fn of<'a>(all: &'a [Observation], k: &'a str) -> impl Iterator<Item = &'a Observation> {
        all.iter().filter(move |o| o.kind == k)
    }

    // Nothing from outside the watched namespaces.
    for o in all {
        assert_eq!(
            o.container.as_deref(),
            Some(ROLE),
            "unattributed or foreign: {o:?}"
        );
        assert!(
            !matches!(d(o, "comm"), Some("chaosdecoy" | "chaosoutsider")),
            "foreign process seen: {o:?}"
        );
        assert_ne!(
            d(o, "pid"),
            Some(seen.host_outsider_pid.to_string().as_str()),
            "host process seen: {o:?}"
        );
        for port in [DECOY_PORT.to_string(), seen.host_port.to_string()] {
            assert!(
                d(o, "dport") != Some(&port) && d(o, "sport") != Some(&port),
                "foreign TCP event seen: {o:?}"
            );
        }
    }

    // A SIGKILLed process: exit by signal 9 with its name, and the delivery itself.
    let victim_exit = of(all, kind::PROCESS_EXIT)
        .find(|o| d(o, "comm") == Some("chaosvictim"))
        .unwrap_or_else(|| panic!("no PROCESS_EXIT of chaosvictim in {all:#?}"));
    assert_eq!(d(victim_exit, "signal"), Some("9"), "{victim_exit:?}");
    assert!(
        of(all, kind::SIGNAL)
            .any(|o| d(o, "comm") == Some("chaosvictim") && d(o, "signal") == Some("9")),
        "no SIGNAL 9 delivered to chaosvictim"
    );

    // The memory hog: OOM-killed, seen with its pid (and comm when the kernel gives it).
    if let Some(why) = &seen.cgroup_note {
        println!("OOM part skipped: {why}");
    } else {
        assert!(
            seen.oom_kills >= 1,
            "the memory cgroup recorded no OOM kill: the hog was not killed"
        );
        let oom = of(all, kind::OOM_KILL)
            .next()
            .unwrap_or_else(|| panic!("no OOM_KILL in {all:#?}"));
        let hog_exit = of(all, kind::PROCESS_EXIT)
            .find(|o| d(o, "comm") == Some("chaoshog"))
            .unwrap_or_else(|| panic!("no PROCESS_EXIT of chaoshog"));
        assert_eq!(d(hog_exit, "signal"), Some("9"), "{hog_exit:?}");
        assert_eq!(
            d(oom, "pid"),
            d(hog_exit, "pid"),
            "OOM victim pid: {oom:?} vs {hog_exit:?}"
        );
        if let Some(comm) = d(oom, "comm") {
            assert_eq!(comm, "chaoshog");
        }
        if let (Some(ns_pid), Some(expected)) = (d(oom, "ns_pid"), &seen.hog_ns_pid) {
            assert_eq!(ns_pid, expected, "pid of the hog inside its namespace");
        }
    }

    // The refused connect: a reset and the SYN_SENT -> CLOSE transition, on 127.0.0.1:7.
    let port = WATCHED_PORT.to_string();
    let tcp: Vec<_> = all
        .iter()
        .filter(|o| [kind::TCP_RESET, kind::TCP_STATE].contains(&o.kind.as_str()))
        .filter(|o| d(o, "dport") == Some(&port) || d(o, "sport") == Some(&port))
        .collect();
    assert!(
        !tcp.is_empty(),
        "no TCP_RESET / TCP_STATE for 127.0.0.1:{port} in {all:#?}"
    );
    for o in &tcp {
        assert!(
            d(o, "saddr") == Some("127.0.0.1") && d(o, "daddr") == Some("127.0.0.1"),
            "{o:?}"
        );
    }
    assert!(
        tcp.iter()
            .any(|o| d(o, "old_state") == Some("SYN_SENT") && d(o, "new_state") == Some("CLOSE")),
        "no SYN_SENT -> CLOSE in {tcp:#?}"
    );
    assert!(
        tcp.iter().any(|o| o.kind == kind::TCP_RESET),
        "no TCP_RESET in {tcp:#?}"
    );

    // The dropped SYN, sent again.
    let port = RETRANSMIT_PORT.to_string();
    assert!(
        of(all, kind::TCP_RETRANSMIT)
            .any(|o| d(o, "dport") == Some(&port) && d(o, "state") == Some("SYN_SENT")),
        "no TCP_RETRANSMIT of the SYN to 127.0.0.1:{port}"
    );

    // Histograms: the namespace's processes slept and woke, and wrote with O_DIRECT.
    for k in [kind::RUNQ_DELAY, kind::BLOCK_IO_LATENCY] {
        let h = of(all, k)
            .next()
            .unwrap_or_else(|| panic!("no {k} observation"));
        for key in ["p50_us", "p99_us", "max_us", "samples"] {
            assert!(
                d(h, key).is_some_and(|v| v.parse::<u64>().is_ok()),
                "{k} lacks {key}: {h:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_events_of_a_watched_namespace_are_attributed_and_the_rest_is_dropped() {
    if let Some(seen) = scenario(Attach::Auto).await {
        check(&seen);
    }
}

/// Unmounts tracefs on drop (even after a failed assertion) if it was not mounted when made:
/// the observer mounts it for classic tracepoints, the test leaves the host as it found it.
struct TracefsAsFound {
    was_mounted: bool,
}

impl TracefsAsFound {
    fn new() -> Self {
        let was_mounted = Path::new("/sys/kernel/tracing/events").exists()
            || Path::new("/sys/kernel/debug/tracing/events").exists();
        Self { was_mounted }
    }
}

impl Drop for TracefsAsFound {
    fn drop(&mut self) {
        if !self.was_mounted && Path::new("/sys/kernel/tracing/events").exists() {
            let target = std::ffi::CString::new("/sys/kernel/tracing").unwrap();
            // SAFETY: a valid NUL-terminated path; lazy unmount of the mount this test caused.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_tracepoints_see_the_same_events_when_tp_btf_is_not_used() {
    let _tracefs = TracefsAsFound::new();
    if let Some(seen) = scenario(Attach::Tracepoint).await {
        check(&seen);
    }
}
