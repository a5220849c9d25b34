//! The closed lists `#[chaos_test]` accepts.
//!
//! `FAULT_KINDS`, `TARGETS`, `FAULT_PARAMS` and `ParamType` are a copy of
//! `chaos-runtime/src/spec.rs`: a proc-macro crate cannot depend on the runtime it expands to.
//! Change both files together. `tests/lists.rs` compares the two, and `tests/ui/pass/` holds one
//! case per fault kind, so a divergence fails `cargo test -p chaos-macros`.
//!
//! This file is also compiled into `tests/lists.rs` (`#[path]`): keep it free of crate imports.

/// Fault kinds `fault = ".."` and `faults(KIND(..))` accept.
pub const FAULT_KINDS: &[&str] = &[
    "kill",
    "stop",
    "pause",
    "network_partition",
    "latency",
    "memory_oom",
    "cpu_throttle",
    "disk_io",
    "pool_exhaustion",
];

/// Roles of the bundled stack a fault can target.
pub const TARGETS: &[&str] = &["postgres", "redis", "orders", "nginx"];

/// Parameters each fault accepts, besides `target`, `duration` and `after`.
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

/// How a parameter is checked and normalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// `"150ms"`, `"2s"`, `"1m"`: rendered as `<key>_ms`.
    Duration,
    /// `"64MiB"`, `"1MB"`, `"512KiB"`, `"4096"`: rendered as `<key>_bytes`.
    Size,
    /// A positive decimal number: rendered verbatim.
    Float,
    /// `"both" | "ingress" | "egress"`: rendered verbatim.
    Direction,
}

/// `observer = ".."` (spec.rs: `Spec::observer`).
pub const OBSERVERS: &[&str] = &["auto", "bpf", "fallback"];

/// `workload = ".."` (spec.rs: `Spec::workload`).
pub const WORKLOADS: &[&str] = &["orders", "reads"];

/// Values of a `ParamType::Direction` parameter.
pub const DIRECTIONS: &[&str] = &["both", "ingress", "egress"];

/// The parameters `kind` takes, `None` for an unknown kind.
pub fn params_of(kind: &str) -> Option<&'static [(&'static str, ParamType)]> {
    FAULT_PARAMS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, p)| *p)
}

/// The type of the parameter `name`, whichever fault takes it; `None` if no fault does.
pub fn param_type(name: &str) -> Option<ParamType> {
    FAULT_PARAMS
        .iter()
        .flat_map(|(_, params)| params.iter())
        .find(|(p, _)| *p == name)
        .map(|(_, ty)| *ty)
}

/// Every parameter name, each once, in `FAULT_PARAMS` order.
pub fn all_params() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for (name, _) in FAULT_PARAMS.iter().flat_map(|(_, params)| params.iter()) {
        if !names.contains(name) {
            names.push(name);
        }
    }
    names
}

/// The faults that take the parameter `name`.
pub fn faults_taking(name: &str) -> Vec<&'static str> {
    FAULT_PARAMS
        .iter()
        .filter(|(_, params)| params.iter().any(|(p, _)| *p == name))
        .map(|(kind, _)| *kind)
        .collect()
}
