//! Observers: what the kernel and the services did while the fault lasted.
//!
//! Every signal has a graded list of sources: eBPF (CO-RE, aya) first, then cgroup files,
//! procfs, Docker events/stats and the kernel log. The capability probe picks the best one
//! per signal, the choice (and why a better one was skipped) goes into the run's report,
//! and every [`Observation`] names the [`Source`] that saw it.
//!
//! `CHAOS_OBSERVER=bpf|fallback|auto` (or the `observer = ".."` option of `#[chaos_test]`)
//! forces a mode: `bpf` fails when eBPF cannot be used, `fallback` never loads eBPF.
//!
//! [`Observers`] runs them all. Per signal exactly one of eBPF and its fallback acts, so a
//! signal is never counted twice; Docker events (container lifecycle) and PSI run in every mode:
//!
//! | signal | eBPF | fallback (polled every 200 ms) |
//! |---|---|---|
//! | `process` | sched_process_exit, signal_deliver | Docker events `die`/`kill`/`start` (container level) |
//! | `oom` | oom/mark_victim | `memory.oom_control` / `memory.events`, pid and comm from /dev/kmsg |
//! | `tcp` | tcp_retransmit_skb, tcp_receive_reset ... | `/proc/<pid>/net/snmp` + `netstat` counters |
//! | `runq` | sched_wakeup + sched_switch | `/proc/<pid>/task/*/schedstat` wait time, per second |
//! | `block_io` | block_rq_issue / block_rq_complete | blkio / io.stat counters while a limit is set |
//! | `cpu_throttle` | — | `cpu.stat` nr_throttled, throttled time |
//!
//! Every read of /proc, cgroup files and /dev/kmsg goes through one boundary (`sys`), so the
//! parsers are unit-tested with canned cgroup v1 and v2 contents.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

pub(crate) mod cgroup;
mod docker_events;
mod kmsg;
mod procfs;
pub(crate) mod sys;

/// Who saw an event. Recorded on every timeline event and shown in snapshots and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A CO-RE eBPF program (tracepoint or tp_btf).
    Bpf,
    /// cgroup v1/v2 control files (memory.oom_control, memory.events, cpu.stat, blkio/io.stat).
    Cgroup,
    /// /proc files (`/proc/<pid>/net/snmp`, /proc/diskstats, /proc/vmstat, PSI).
    Procfs,
    /// The Docker events stream (die, kill, oom, start ...).
    DockerEvents,
    /// Docker stats.
    DockerStats,
    /// The kernel log (/dev/kmsg).
    Kmsg,
    /// The chaos runtime itself (fault injected, healed, container restarted).
    Runtime,
    /// The steady-state workload (first error, recovered ...).
    Workload,
    /// The fault proxy.
    Proxy,
    /// A query against the service (e.g. pg_stat_activity).
    Service,
}

/// Which observers to use; `CHAOS_OBSERVER` or the macro's `observer` option picks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ObserverMode {
    /// eBPF where the host allows it, fallbacks for the rest.
    #[default]
    Auto,
    /// eBPF only; an error when it cannot load.
    Bpf,
    /// Never load eBPF.
    Fallback,
}

impl ObserverMode {
    /// Parses `auto`, `bpf` or `fallback`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(Self::Auto),
            "bpf" | "ebpf" => Some(Self::Bpf),
            "fallback" => Some(Self::Fallback),
            _ => None,
        }
    }

    /// The mode `CHAOS_OBSERVER` asks for, or `None` when unset.
    pub fn from_env() -> Result<Option<Self>, String> {
        match std::env::var("CHAOS_OBSERVER") {
            Ok(v) => Self::parse(&v).map(Some).ok_or_else(|| {
                format!(
                    "CHAOS_OBSERVER={v:?} is not a mode; use CHAOS_OBSERVER=auto, bpf or fallback"
                )
            }),
            Err(_) => Ok(None),
        }
    }
}

/// A container the observers attribute events to.
///
/// Re-sent through [`Observers::watch`] whenever the container (re)starts: a restart gives it a
/// new init pid, pid namespace and cgroup, and the observers must follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedContainer {
    /// The role in the stack: `postgres`, `redis`, `orders`, `nginx`, `proxy`.
    pub role: String,
    /// Docker container id (64 hex).
    pub id: String,
    /// Host pid of the container's init process (Docker's `State.Pid`), 0 when not running.
    pub pid: u32,
}

/// One thing an observer saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// CLOCK_MONOTONIC ns (see [`crate::clock::mono_ns`]).
    pub at_ns: u64,
    /// What happened, one of the `kind::*` constants.
    pub kind: String,
    /// Who saw it.
    pub source: Source,
    /// Role of the container it happened in; `None` only for stack-wide events.
    pub container: Option<String>,
    /// Kind-specific details: `pid`, `comm`, `signal`, `exit_code`, `saddr`, `dport`, `bucket_us` ...
    pub detail: BTreeMap<String, String>,
}

/// Well-known observation kinds. Observers use these names so timelines compare across sources.
pub mod kind {
    /// A process in the container exited; detail: pid, comm, exit_code and/or signal.
    pub const PROCESS_EXIT: &str = "process_exit";
    /// A signal was delivered; detail: pid, comm, signal.
    pub const SIGNAL: &str = "signal";
    /// The OOM killer chose a victim; detail: pid, comm (when known).
    pub const OOM_KILL: &str = "oom_kill";
    /// TCP retransmitted a segment; detail: saddr, sport, daddr, dport, state (bpf) or count (procfs).
    pub const TCP_RETRANSMIT: &str = "tcp_retransmit";
    /// TCP received or sent a reset; detail: saddr, sport, daddr, dport.
    pub const TCP_RESET: &str = "tcp_reset";
    /// A TCP socket changed state; detail: saddr, sport, daddr, dport, old, new.
    pub const TCP_STATE: &str = "tcp_state";
    /// Run-queue delay histogram over an interval; detail: p50_us, p99_us, max_us, samples.
    pub const RUNQ_DELAY: &str = "runq_delay";
    /// CPU throttling in the interval; detail: nr_throttled, throttled_us.
    pub const CPU_THROTTLED: &str = "cpu_throttled";
    /// Block I/O latency histogram over an interval; detail: p50_us, p99_us, max_us, samples.
    pub const BLOCK_IO_LATENCY: &str = "block_io_latency";
    /// Block I/O throttled by the cgroup (blkio/io.max); detail: bytes, ios.
    pub const IO_THROTTLED: &str = "io_throttled";
    /// The container died (Docker `die`); detail: exit_code, signal when exit_code > 128.
    pub const CONTAINER_DIE: &str = "container_die";
    /// The container started (Docker `start`).
    pub const CONTAINER_START: &str = "container_start";
    /// Memory pressure (PSI some avg10) rose; detail: avg10, scope (`container` or `system`).
    pub const MEMORY_PRESSURE: &str = "memory_pressure";
    /// CPU pressure (PSI some avg10) rose; detail: avg10, scope (`container` or `system`).
    pub const CPU_PRESSURE: &str = "cpu_pressure";
    /// I/O pressure (PSI some avg10) rose; detail: avg10, scope (`container` or `system`).
    pub const IO_PRESSURE: &str = "io_pressure";
}

/// Where observers send what they see.
pub type Sink = tokio::sync::mpsc::UnboundedSender<Observation>;

pub mod bpf;

/// Errors of the observers. Display names the failing call and the fix; it never repeats its source.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// eBPF was demanded (`CHAOS_OBSERVER=bpf`) but cannot be used here.
    #[error("eBPF observers cannot load: {why}. Fix: {fix}, or run with CHAOS_OBSERVER=fallback")]
    BpfUnavailable {
        /// What failed.
        why: String,
        /// What would make it work.
        fix: String,
    },
    /// A kernel, /proc or cgroup call failed.
    #[error("{call} failed")]
    Io {
        /// The call and its argument (`open /dev/kmsg`).
        call: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A Docker call failed.
    #[error("docker {call} failed")]
    Docker {
        /// The Docker API call (`events`).
        call: String,
        /// The client's error.
        #[source]
        source: testcontainers::bollard::errors::Error,
    },
}

/// Which source observes one signal on this run, and why a better one was not used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalChoice {
    /// `process`, `oom`, `tcp`, `runq`, `block_io`, `cpu_throttle`.
    pub signal: String,
    /// The source that acts.
    pub source: Source,
    /// Why this source (e.g. "eBPF not loaded: CHAOS_OBSERVER=fallback").
    pub note: String,
}

/// How often cgroup and /proc files are read.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// How often /dev/kmsg is drained.
const KMSG_EVERY: Duration = Duration::from_millis(50);
/// [`Observers::stop`] never takes longer than this.
const STOP_WITHIN: Duration = Duration::from_millis(1900);

/// Builds an [`Observation`].
pub(crate) fn observation<K: Into<String>>(
    at_ns: u64,
    kind: &str,
    source: Source,
    container: Option<&str>,
    detail: impl IntoIterator<Item = (K, String)>,
) -> Observation {
    Observation {
        at_ns,
        kind: kind.to_owned(),
        source,
        container: container.map(str::to_owned),
        detail: detail.into_iter().map(|(k, v)| (k.into(), v)).collect(),
    }
}

/// A watched container with its cgroup directories (resolved once per start).
#[derive(Clone, Debug)]
pub(crate) struct Watched {
    pub c: WatchedContainer,
    pub cg: Option<cgroup::CgroupPaths>,
}

/// What the fallback sources share: the watched containers and the OOM victims /dev/kmsg named.
#[derive(Default)]
pub(crate) struct Shared {
    watched: RwLock<BTreeMap<String, Watched>>,
    pub kmsg_ooms: Mutex<Vec<kmsg::KmsgOom>>,
}

/// Whether `pid`, as the engine reported it for container `id`, is that container's process
/// here: its cgroup (seen from this process) names the container.
fn pid_is_container(sys: &dyn sys::Sys, pid: u32, id: &str) -> bool {
    !id.is_empty()
        && sys
            .read(std::path::Path::new(&format!("/proc/{pid}/cgroup")))
            .is_ok_and(|s| s.contains(id))
}

fn resolve(sys: &dyn sys::Sys, pid: u32) -> Option<cgroup::CgroupPaths> {
    if pid == 0 {
        return None;
    }
    cgroup::resolve(sys, pid)
        .ok()
        .filter(|p| !p.v1.is_empty() || p.v2.is_some())
}

impl Shared {
    /// Adds or refreshes a container.
    pub(crate) fn watch(&self, sys: &dyn sys::Sys, c: WatchedContainer) {
        let cg = resolve(sys, c.pid);
        let mut w = self.watched.write().unwrap_or_else(PoisonError::into_inner);
        w.insert(c.id.clone(), Watched { c, cg });
    }

    /// The watched containers; cgroups that could not be resolved yet are tried again.
    pub(crate) fn snapshot(&self, sys: &dyn sys::Sys) -> Vec<Watched> {
        let unresolved: Vec<(String, u32)> = {
            let w = self.watched.read().unwrap_or_else(PoisonError::into_inner);
            w.values()
                .filter(|w| w.cg.is_none() && w.c.pid != 0)
                .map(|w| (w.c.id.clone(), w.c.pid))
                .collect()
        };
        if !unresolved.is_empty() {
            let found: Vec<_> = unresolved
                .into_iter()
                .filter_map(|(id, pid)| Some((id, pid, resolve(sys, pid)?)))
                .collect();
            let mut w = self.watched.write().unwrap_or_else(PoisonError::into_inner);
            for (id, pid, cg) in found {
                if let Some(e) = w.get_mut(&id).filter(|e| e.c.pid == pid) {
                    e.cg = Some(cg);
                }
            }
        }
        self.watched
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// The role of a container id (full, or a prefix of a watched full id).
    pub(crate) fn role_of(&self, id: &str) -> Option<String> {
        let w = self.watched.read().unwrap_or_else(PoisonError::into_inner);
        w.get(id)
            .or_else(|| {
                w.values()
                    .find(|w| !id.is_empty() && w.c.id.starts_with(id))
            })
            .map(|w| w.c.role.clone())
    }
}

/// A fallback source that reads files on a period.
pub(crate) trait Poller: Send + 'static {
    /// One round: appends what changed since the last one.
    fn poll(&mut self, now: u64, shared: &Shared, out: &mut Vec<Observation>);
    /// After the last round: hands out whatever is still held back.
    fn flush(&mut self, _now: u64, _shared: &Shared, _out: &mut Vec<Observation>) {}
}

fn spawn_poller(
    mut p: impl Poller,
    every: Duration,
    shared: Arc<Shared>,
    sink: Sink,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut out = Vec::new();
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                r = stop.changed() => r.is_err() || *stop.borrow(),
            };
            let now = crate::clock::mono_ns();
            p.poll(now, &shared, &mut out);
            if last {
                p.flush(now, &shared, &mut out);
            }
            for o in out.drain(..) {
                let _ = sink.send(o);
            }
            if last {
                return;
            }
        }
    })
}

/// The signals [`Observers::choices`] reports, with their fallback.
const SIGNALS: [(&str, Source, &str); 6] = [
    (
        "process",
        Source::DockerEvents,
        "Docker events die/kill/start (container level: single processes inside a container are not seen)",
    ),
    (
        "oom",
        Source::Cgroup,
        "memory.oom_control (v1) / memory.events (v2) every 200 ms, victim pid and comm from /dev/kmsg",
    ),
    (
        "tcp",
        Source::Procfs,
        "/proc/<pid>/net/snmp and net/netstat counters of the container's netns every 200 ms (counts, no addresses)",
    ),
    (
        "runq",
        Source::Procfs,
        "/proc/<pid>/task/*/schedstat run-queue wait of all the container's tasks, summed per second (no histogram)",
    ),
    (
        "block_io",
        Source::Cgroup,
        "blkio.throttle.* (v1) / io.stat (v2) counters while a blkio/io.max limit is set (io_throttled; no latency)",
    ),
    (
        "cpu_throttle",
        Source::Cgroup,
        "cpu.stat nr_throttled and throttled time every 200 ms",
    ),
];

/// Every observer of one run: Docker events always, and per signal eBPF or its fallback.
pub struct Observers {
    choices: Vec<SignalChoice>,
    shared: Arc<Shared>,
    sys: Arc<dyn sys::Sys>,
    bpf: Option<Loaded>,
    /// Stopped first, so the cgroup source's last round sees the victims it names.
    kmsg: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    stop_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Who loads the eBPF programs into the engine's kernel.
pub(crate) enum BpfHost {
    /// This process: it is root on the engine's host.
    Here,
    /// The run's host agent.
    Agent(Arc<crate::agent::Agent>),
    /// Nobody can (why).
    Nowhere(String),
}

/// eBPF observers, loaded here or in the host agent.
enum Loaded {
    Here(bpf::BpfObserver),
    Agent(bpf::AgentBpf),
}

impl Loaded {
    fn signals(&self) -> Vec<(&'static str, Result<(), String>)> {
        match self {
            Loaded::Here(b) => b.signals(),
            Loaded::Agent(b) => b.signals(),
        }
    }

    fn attached(&self) -> &[String] {
        match self {
            Loaded::Here(b) => b.attached(),
            Loaded::Agent(b) => b.attached(),
        }
    }

    async fn watch(&self, c: &WatchedContainer) -> Result<(), String> {
        match self {
            Loaded::Here(b) => b.watch(c).map_err(|e| why_of(&e)),
            Loaded::Agent(b) => b.watch(c).await,
        }
    }

    async fn stop(self) {
        match self {
            Loaded::Here(b) => b.stop().await,
            Loaded::Agent(b) => b.stop().await,
        }
    }
}

impl Observers {
    /// Starts Docker events always; per signal the best source the mode allows: eBPF when mode
    /// != Fallback and [`bpf::BpfObserver::load`] succeeded and that signal attached, else the
    /// fallback. `mode == Bpf` and eBPF unavailable -> `Err(BpfUnavailable)`. Signals whose eBPF
    /// programs did not attach fall back even in `Bpf` mode (the note says why).
    pub async fn start(
        mode: ObserverMode,
        docker: testcontainers::bollard::Docker,
        sink: Sink,
    ) -> Result<Self, ObserveError> {
        Self::start_with(mode, docker, sink, Arc::new(sys::RealSys), BpfHost::Here).await
    }

    /// [`Observers::start`] reading the host through `sys`, with eBPF loaded by `host`.
    pub(crate) async fn start_with(
        mode: ObserverMode,
        docker: testcontainers::bollard::Docker,
        sink: Sink,
        sys: Arc<dyn sys::Sys>,
        host: BpfHost,
    ) -> Result<Self, ObserveError> {
        let clock = docker_events::WallToMono::now();
        let started = crate::clock::mono_ns();

        let loaded = match (mode, host) {
            (ObserverMode::Fallback, _) => {
                let by = match ObserverMode::from_env() {
                    Ok(Some(ObserverMode::Fallback)) => "CHAOS_OBSERVER=fallback",
                    _ => "observer = \"fallback\"",
                };
                Err(ObserveError::BpfUnavailable {
                    why: format!("eBPF disabled by {by}"),
                    fix: String::new(),
                })
            }
            (_, BpfHost::Nowhere(why)) => Err(ObserveError::BpfUnavailable {
                why,
                fix: "run the test process as root on the Docker engine's host, or let the \
                      run start its host agent (see the reason)"
                    .into(),
            }),
            (_, BpfHost::Here) => bpf::BpfObserver::load(sink.clone()).map(Loaded::Here),
            (_, BpfHost::Agent(agent)) => match bpf::Attach::from_env() {
                Ok(attach) => bpf::AgentBpf::load(agent, attach, sink.clone())
                    .await
                    .map(Loaded::Agent),
                Err(why) => Err(ObserveError::BpfUnavailable {
                    why,
                    fix: "set CHAOS_BPF_ATTACH to auto, tp_btf or tracepoint".into(),
                }),
            },
        };
        let (bpf, why_not) = match loaded {
            Ok(b) => (Some(b), String::new()),
            Err(e) if mode == ObserverMode::Bpf => return Err(bpf_unavailable(e)),
            Err(ObserveError::BpfUnavailable { why, .. }) if mode == ObserverMode::Fallback => {
                (None, why)
            }
            Err(e) => (None, format!("eBPF unavailable: {}", why_of(&e))),
        };
        if let Some(Loaded::Agent(b)) = &bpf {
            crate::progress::line(
                "observe",
                &format!(
                    "eBPF loaded by the host agent in {} ms",
                    b.load_time().as_millis()
                ),
            );
        }
        let bpf_signals = bpf.as_ref().map(|b| b.signals()).unwrap_or_default();

        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared::default());
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(docker_events::run(
            docker,
            shared.clone(),
            sink.clone(),
            stop_rx.clone(),
            clock,
            started,
        )));

        let (mut choices, fallback) = plan(bpf.as_ref().map(|_| bpf_signals.as_slice()), &why_not);
        if let Some(b) = &bpf {
            // Name the hooks: `eBPF: tp_btf/sched_switch; tp_btf/sched_wakeup`.
            for c in choices.iter_mut().filter(|c| c.source == Source::Bpf) {
                let prefix = format!("{}: ", c.signal);
                let hooks: Vec<&str> = b
                    .attached()
                    .iter()
                    .filter_map(|l| l.strip_prefix(&prefix))
                    .collect();
                if !hooks.is_empty() {
                    c.note = format!("eBPF: {}", hooks.join("; "));
                }
            }
        }
        let mut kmsg = None;
        if fallback["oom"] {
            match kmsg::KmsgPoller::open(sys.clone()) {
                Ok(p) => {
                    let (tx, rx) = watch::channel(false);
                    kmsg = Some((
                        tx,
                        spawn_poller(p, KMSG_EVERY, shared.clone(), sink.clone(), rx),
                    ));
                }
                Err(e) => {
                    if let Some(c) = choices.iter_mut().find(|c| c.signal == "oom") {
                        c.note.push_str(&format!(" (/dev/kmsg unreadable: {e}; OOM kills are reported without pid and comm)"));
                    }
                }
            }
        }
        let cg = cgroup::CgroupOpts {
            oom: fallback["oom"],
            cpu: fallback["cpu_throttle"],
            io: fallback["block_io"],
            psi: true,
            enrich_from_kmsg: kmsg.is_some(),
        };
        tasks.push(spawn_poller(
            cgroup::CgroupPoller::new(sys.clone(), cg),
            POLL_EVERY,
            shared.clone(),
            sink.clone(),
            stop_rx.clone(),
        ));
        let pf = procfs::ProcfsOpts {
            tcp: fallback["tcp"],
            runq: fallback["runq"],
            system_psi: true,
        };
        tasks.push(spawn_poller(
            procfs::ProcfsPoller::new(sys.clone(), pf),
            POLL_EVERY,
            shared.clone(),
            sink,
            stop_rx,
        ));

        Ok(Self {
            choices,
            shared,
            sys,
            bpf,
            kmsg,
            stop_tx,
            tasks,
        })
    }

    /// How the observers read the host; the faults read and write it the same way.
    pub(crate) fn sys(&self) -> Arc<dyn sys::Sys> {
        self.sys.clone()
    }

    /// Add or refresh a container (after every (re)start); forwards to every active source.
    pub async fn watch(&self, c: WatchedContainer) {
        if let Some(b) = &self.bpf
            && let Err(e) = b.watch(&c).await
        {
            eprintln!(
                "chaos-runtime: eBPF cannot watch {} ({}): {e}",
                c.role, c.pid
            );
        }
        let mut c = c;
        if c.pid != 0 && !pid_is_container(&*self.sys, c.pid, &c.id) {
            // This process does not see the engine's pids (a CI job container, a remote
            // engine): that pid here is another process, or none. The file sources skip it.
            c.pid = 0;
        }
        self.shared.watch(&*self.sys, c);
    }

    /// Which source acts for each signal (`process`, `oom`, `tcp`, `runq`, `block_io`,
    /// `cpu_throttle`) and why (e.g. "eBPF disabled by CHAOS_OBSERVER=fallback").
    pub fn choices(&self) -> Vec<SignalChoice> {
        self.choices.clone()
    }

    /// Stops everything, flushing pending observations; bounded (never hangs > 2 s).
    pub async fn stop(self) {
        let Self {
            bpf,
            kmsg,
            stop_tx,
            tasks,
            ..
        } = self;
        let deadline = tokio::time::Instant::now() + STOP_WITHIN;
        let mut aborts: Vec<AbortHandle> = tasks.iter().map(JoinHandle::abort_handle).collect();
        aborts.extend(kmsg.as_ref().map(|(_, t)| t.abort_handle()));
        let bpf_stop = async move {
            if let Some(b) = bpf {
                b.stop().await;
            }
        };
        let fallbacks = async move {
            if let Some((tx, task)) = kmsg {
                let _ = tx.send(true);
                let _ = task.await;
            }
            let _ = stop_tx.send(true);
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout_at(deadline, futures::future::join(bpf_stop, fallbacks))
            .await
            .is_err()
        {
            for a in aborts.drain(..) {
                a.abort();
            }
        }
    }
}

/// Per signal: the source that acts, and whether its fallback runs. `bpf` is `None` when eBPF
/// is not loaded (`why_not` says why), else what [`bpf::BpfObserver::signals`] reported.
fn plan(
    bpf: Option<&[(&'static str, Result<(), String>)]>,
    why_not: &str,
) -> (Vec<SignalChoice>, BTreeMap<&'static str, bool>) {
    let mut choices = Vec::new();
    let mut fallback = BTreeMap::new();
    for (signal, fb_source, fb_note) in SIGNALS {
        let why = match bpf.map(|b| b.iter().find(|(s, _)| *s == signal).map(|(_, r)| r)) {
            Some(Some(Ok(()))) => {
                choices.push(SignalChoice {
                    signal: signal.into(),
                    source: Source::Bpf,
                    note: "eBPF".into(),
                });
                fallback.insert(signal, false);
                continue;
            }
            Some(Some(Err(why))) => format!("eBPF program did not attach: {why}"),
            Some(None) => "no eBPF program for this signal".to_owned(),
            None => why_not.to_owned(),
        };
        fallback.insert(signal, true);
        choices.push(SignalChoice {
            signal: signal.into(),
            source: fb_source,
            note: format!("{why}; fallback: {fb_note}"),
        });
    }
    (choices, fallback)
}

/// The reason inside an error, without its "cannot load" frame.
fn why_of(e: &ObserveError) -> String {
    match e {
        ObserveError::BpfUnavailable { why, .. } => why.clone(),
        other => {
            let mut s = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(e) = src {
                s.push_str(": ");
                s.push_str(&e.to_string());
                src = e.source();
            }
            s
        }
    }
}

fn bpf_unavailable(e: ObserveError) -> ObserveError {
    match e {
        e @ ObserveError::BpfUnavailable { .. } => e,
        other => ObserveError::BpfUnavailable {
            why: why_of(&other),
            fix:
                "run as root (CAP_BPF, CAP_PERFMON) on a kernel with BTF (/sys/kernel/btf/vmlinux)"
                    .into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_mode_uses_every_fallback_and_says_why() {
        let (choices, fallback) = plan(None, "eBPF disabled by CHAOS_OBSERVER=fallback");
        let signals: Vec<&str> = choices.iter().map(|c| c.signal.as_str()).collect();
        assert_eq!(
            signals,
            ["process", "oom", "tcp", "runq", "block_io", "cpu_throttle"]
        );
        assert!(fallback.values().all(|on| *on));
        let oom = &choices[1];
        assert_eq!(oom.source, Source::Cgroup);
        assert!(
            oom.note.starts_with(
                "eBPF disabled by CHAOS_OBSERVER=fallback; fallback: memory.oom_control"
            ),
            "{}",
            oom.note
        );
        assert_eq!(choices[0].source, Source::DockerEvents);
        assert_eq!(choices[2].source, Source::Procfs);
    }

    #[test]
    fn ebpf_signals_switch_their_fallback_off() {
        let bpf = [
            ("process", Ok(())),
            ("oom", Ok(())),
            ("tcp", Ok(())),
            ("runq", Ok(())),
            (
                "block_io",
                Err("block_rq_issue: no such tracepoint".to_owned()),
            ),
        ];
        let (choices, fallback) = plan(Some(&bpf), "");
        let by: BTreeMap<&str, &SignalChoice> =
            choices.iter().map(|c| (c.signal.as_str(), c)).collect();
        for s in ["process", "oom", "tcp", "runq"] {
            assert_eq!(by[s].source, Source::Bpf);
            assert!(!fallback[s], "{s} must not run twice");
        }
        assert_eq!(by["block_io"].source, Source::Cgroup);
        assert!(
            by["block_io"]
                .note
                .starts_with("eBPF program did not attach: block_rq_issue")
        );
        assert!(fallback["block_io"]);
        assert_eq!(by["cpu_throttle"].source, Source::Cgroup);
        assert!(
            by["cpu_throttle"]
                .note
                .starts_with("no eBPF program for this signal")
        );
    }

    #[test]
    fn errors_keep_their_reason() {
        let e = ObserveError::Io {
            call: "open /dev/kmsg".into(),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        assert!(why_of(&e).starts_with("open /dev/kmsg failed: Operation not permitted"));
        match bpf_unavailable(e) {
            ObserveError::BpfUnavailable { why, fix } => {
                assert!(why.contains("Operation not permitted"));
                assert!(fix.contains("BTF"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn role_of_accepts_short_ids() {
        let shared = Shared::default();
        let sys = sys::fake::FakeSys::new();
        shared.watch(
            &sys,
            WatchedContainer {
                role: "redis".into(),
                id: "abcdef0123456789".into(),
                pid: 0,
            },
        );
        assert_eq!(shared.role_of("abcdef0123456789").as_deref(), Some("redis"));
        assert_eq!(shared.role_of("abcdef012345").as_deref(), Some("redis"));
        assert_eq!(shared.role_of("ffff"), None);
        assert_eq!(shared.role_of(""), None);
    }

    #[test]
    fn observers_can_be_shared_across_tasks() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Observers>();
    }
}
