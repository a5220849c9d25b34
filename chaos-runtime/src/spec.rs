//! What one `#[chaos_test]` asks for, as the macro renders it.
//!
//! The macro validates every option at compile time and renders plain `'static` data:
//! durations already in milliseconds, sizes in bytes, names checked against the closed lists
//! below. The runtime never re-validates user syntax; it only interprets.

/// One chaos test: its faults, its budgets and how it is observed.
#[derive(Clone, Debug)]
pub struct Spec {
    /// `module_path!()::fn_name`, names the run in reports.
    pub name: &'static str,
    /// The test function's name; names the snapshot.
    pub fn_name: &'static str,
    /// `file!()` of the test.
    pub file: &'static str,
    /// `env!("CARGO_MANIFEST_DIR")` of the crate holding the test; snapshots go to `<it>/tests/snapshots`.
    pub manifest_dir: &'static str,
    /// The faults, in declaration order. One for `fault = ".."`, several for `faults(..)`.
    pub faults: &'static [FaultSpec],
    /// `recover_within`: the budget from heal to steady state, ms.
    pub recover_within_ms: u64,
    /// `observer = "auto" | "bpf" | "fallback"`; `None` leaves it to `CHAOS_OBSERVER` (default auto).
    pub observer: Option<&'static str>,
    /// `workload = "orders" | "reads"` (default "orders": POST /orders through nginx;
    /// "reads": GET /orders/{id} of orders created during the baseline).
    pub workload: &'static str,
    /// `snapshot = false` turns the insta snapshot off (default true).
    pub snapshot: bool,
}

/// One fault of a test.
#[derive(Clone, Debug)]
pub struct FaultSpec {
    /// One of [`FAULT_KINDS`].
    pub kind: &'static str,
    /// A role of the stack, one of [`TARGETS`].
    pub target: &'static str,
    /// Start offset from the first fault's injection, ms (`after = "1s"`, composite only; 0 otherwise).
    pub after_ms: u64,
    /// How long the fault holds before it is healed, ms (`duration`, default 3000).
    pub duration_ms: u64,
    /// Fault-specific parameters, normalised by the macro: durations as `<key>_ms` in ms,
    /// sizes as `<key>_bytes` in bytes, the rest verbatim. See [`FAULT_PARAMS`].
    pub params: &'static [(&'static str, &'static str)],
}

impl FaultSpec {
    /// A parameter by its normalised key.
    pub fn param(&self, key: &str) -> Option<&'static str> {
        self.params.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// Fault kinds `#[chaos_test(fault = "..")]` accepts.
pub const FAULT_KINDS: &[&str] = &[
    "kill",              // SIGKILL the container, restart it at heal
    "stop",              // docker stop (SIGTERM, then SIGKILL), start at heal
    "pause",             // freeze (cgroup freezer), resume at heal
    "network_partition", // cut the target from the stack network (direction = both | ingress | egress)
    "latency",           // fault proxy in front of the target adds latency/jitter
    "memory_oom",        // lower the memory limit and push the target past it
    "cpu_throttle",      // CFS quota / cpu.max on the target
    "disk_io", // blkio / io.max throttle of the target's writes (I/O hog where it cannot apply)
    "pool_exhaustion", // a client holds every PostgreSQL connection
];

/// Roles of the bundled trading stack a fault can target.
pub const TARGETS: &[&str] = &["postgres", "redis", "orders", "nginx"];

/// Parameters each fault accepts (keys as written in the attribute) and their type.
/// `duration` and `after` are accepted by every fault and are not listed.
pub const FAULT_PARAMS: &[(&str, &[(&str, ParamType)])] = &[
    ("kill", &[]),
    ("stop", &[]),
    ("pause", &[]),
    ("network_partition", &[("direction", ParamType::Direction)]),
    (
        "latency",
        &[
            ("latency", ParamType::Duration),
            ("jitter", ParamType::Duration),
            ("direction", ParamType::Direction),
        ],
    ),
    ("memory_oom", &[("memory_limit", ParamType::Size)]),
    ("cpu_throttle", &[("cpus", ParamType::Float)]),
    ("disk_io", &[("write_bps", ParamType::Size)]),
    ("pool_exhaustion", &[]),
];

/// How the macro checks and normalises a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// `"150ms"`, `"2s"`, `"1m"`: rendered as `<key>_ms`.
    Duration,
    /// `"64MiB"`, `"1MB"`, `"512KiB"`, `"4096"`: rendered as `<key>_bytes`.
    Size,
    /// A positive decimal number: rendered verbatim.
    Float,
    /// `"both" | "ingress" | "egress"` (network direction as seen from the target): rendered verbatim.
    Direction,
}
