//! Observers: what the kernel and the services did while the fault lasted.
//!
//! Every signal has a graded list of sources: eBPF (CO-RE, aya) first, then cgroup files,
//! procfs, Docker events/stats and the kernel log. The capability probe picks the best one
//! per signal, the choice (and why a better one was skipped) goes into the run's report,
//! and every [`Observation`] names the [`Source`] that saw it.
//!
//! `CHAOS_OBSERVER=bpf|fallback|auto` (or the `observer = ".."` option of `#[chaos_test]`)
//! forces a mode: `bpf` fails when eBPF cannot be used, `fallback` never loads eBPF.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who saw an event. Recorded on every timeline event and shown in snapshots and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A CO-RE eBPF program (tracepoint or tp_btf).
    Bpf,
    /// cgroup v1/v2 control files (memory.oom_control, memory.events, cpu.stat, blkio/io.stat).
    Cgroup,
    /// /proc files (/proc/<pid>/net/snmp, /proc/diskstats, /proc/vmstat, PSI).
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
                format!("CHAOS_OBSERVER={v:?} is not a mode; use CHAOS_OBSERVER=auto, bpf or fallback")
            }),
            Err(_) => Ok(None),
        }
    }
}

/// A container the observers attribute events to.
///
/// Re-sent through [`Watch::watch`] whenever the container (re)starts: a restart gives it a
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
    /// Memory pressure (PSI some avg10) rose; detail: avg10.
    pub const MEMORY_PRESSURE: &str = "memory_pressure";
}

/// Where observers send what they see.
pub type Sink = tokio::sync::mpsc::UnboundedSender<Observation>;

pub mod bpf;

/// Errors of the observers. Display names the failing call and the fix; it never repeats its source.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// eBPF was demanded (`CHAOS_OBSERVER=bpf`) but cannot be used here.
    #[error("eBPF observers cannot load: {why}. Fix: {fix}, or run with CHAOS_OBSERVER=fallback")]
    BpfUnavailable { why: String, fix: String },
    /// A kernel, /proc or cgroup call failed.
    #[error("{call} failed")]
    Io {
        call: String,
        #[source]
        source: std::io::Error,
    },
    /// A Docker call failed.
    #[error("docker {call} failed")]
    Docker {
        call: String,
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
