//! The closed lists: fault kinds, their parameters and what a target must offer.
//!
//! One copy, read by the macro (compile-time checks), the runtime (what it implements and the
//! run-time checks of experiments built in code), the doctor and the CLI.

/// Fault kinds `fault = ".."` and `faults(KIND(..))` accept.
pub const FAULT_KINDS: &[&str] = &[
    "kill",
    "stop",
    "pause",
    "network_partition",
    "packet_loss",
    "bandwidth",
    "clock_skew",
    "dns_failure",
    "http_abort",
    "http_delay",
    "http_reset",
    "latency",
    "memory_oom",
    "cpu_throttle",
    "disk_io",
    "disk_full",
    "pool_exhaustion",
    "process_kill",
    "process_stop",
];

/// Parameters each fault accepts, besides `target`, `duration` and `after`.
pub const FAULT_PARAMS: &[(&str, &[(&str, ParamType)])] = &[
    ("kill", &[]),
    ("stop", &[]),
    ("pause", &[]),
    ("network_partition", &[("direction", ParamType::Direction)]),
    (
        "packet_loss",
        &[
            ("loss", ParamType::Percent),
            ("direction", ParamType::Direction),
        ],
    ),
    (
        "bandwidth",
        &[
            ("rate", ParamType::Size),
            ("direction", ParamType::Direction),
        ],
    ),
    ("clock_skew", &[("offset", ParamType::Offset)]),
    ("dns_failure", &[]),
    (
        "http_abort",
        &[
            ("ratio", ParamType::Percent),
            ("status", ParamType::Status),
            ("method", ParamType::Method),
            ("path", ParamType::Path),
        ],
    ),
    (
        "http_delay",
        &[
            ("ratio", ParamType::Percent),
            ("latency", ParamType::Duration),
            ("method", ParamType::Method),
            ("path", ParamType::Path),
        ],
    ),
    (
        "http_reset",
        &[
            ("ratio", ParamType::Percent),
            ("method", ParamType::Method),
            ("path", ParamType::Path),
        ],
    ),
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
    ("disk_full", &[("path", ParamType::Path)]),
    ("pool_exhaustion", &[]),
    ("process_kill", &[("process", ParamType::Process)]),
    ("process_stop", &[("process", ParamType::Process)]),
];

/// Parameters a fault cannot do without (no default makes sense).
pub fn required_params(kind: &str) -> &'static [&'static str] {
    match kind {
        "process_kill" | "process_stop" => &["process"],
        "disk_full" => &["path"],
        "clock_skew" => &["offset"],
        _ => &[],
    }
}

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
    /// `"10%"`, `"2.5%"`: above 0, at most 100; rendered as `<key>_pct` (the number).
    Percent,
    /// A signed duration, `"+60m"`, `"-30s"` (no sign: ahead): rendered as `<key>_ms`, signed.
    Offset,
    /// An HTTP status, `"503"`: 100-599; rendered verbatim.
    Status,
    /// An HTTP method, `"POST"`: `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE` or
    /// `OPTIONS`; rendered verbatim.
    Method,
    /// A path prefix, `"/orders"`: starts with `/`, printable ASCII without spaces or quotes,
    /// at most 200 characters; rendered verbatim.
    Path,
    /// Part of a process's command line, `"walwriter"`: 1-64 printable ASCII characters
    /// without quotes; rendered verbatim.
    Process,
}

/// `observer = ".."`.
pub const OBSERVERS: &[&str] = &["auto", "bpf", "fallback"];

/// Values of a `ParamType::Method` parameter.
pub const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

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

/// What a fault's target must offer, beyond being a role of the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Any service.
    Any,
    /// A service with at least one declared TCP port (the fault proxy fronts its ports).
    Ports,
    /// A service declared as speaking PostgreSQL (`Service::postgres`).
    Postgres,
}

/// What the target of `kind` must offer; `None` for an unknown kind.
pub fn needs(kind: &str) -> Option<Needs> {
    let needs = match kind {
        "latency" | "http_abort" | "http_delay" | "http_reset" => Needs::Ports,
        "pool_exhaustion" => Needs::Postgres,
        _ => Needs::Any,
    };
    FAULT_KINDS.contains(&kind).then_some(needs)
}

/// One line saying what `kind` does, for `--help`, `chaos list` and the doctor.
pub fn describe(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "kill" => "SIGKILL the container, start it again at heal",
        "stop" => "docker stop (SIGTERM, then SIGKILL), start at heal",
        "pause" => "freeze every process (cgroup freezer), resume at heal",
        "network_partition" => {
            "drop the target's packets to and from the stack (direction = both | ingress | egress)"
        }
        "packet_loss" => {
            "drop a random share of the target's packets to and from the stack (loss = \"10%\", direction)"
        }
        "bandwidth" => {
            "limit the target's link to the stack to a rate (tc tbf; rate = \"1MiB\" per second, direction)"
        }
        "clock_skew" => {
            "move the target's wall clock (offset = \"+60m\") for processes that read libfaketime's clock file; back at heal"
        }
        "dns_failure" => {
            "the target can no longer resolve names (its queries to Docker's embedded DNS are dropped); open connections keep working"
        }
        "http_abort" => {
            "the fault proxy answers a share of the target's HTTP requests itself (ratio = \"20%\", status = \"503\", method, path)"
        }
        "http_delay" => {
            "the fault proxy holds a share of the target's HTTP requests (latency = \"100ms\", ratio, method, path)"
        }
        "http_reset" => {
            "the fault proxy resets the connection of a share of the target's HTTP requests (ratio, method, path)"
        }
        "latency" => "the fault proxy in front of the target's ports adds latency/jitter",
        "memory_oom" => "lower the memory limit and push the target past it",
        "cpu_throttle" => "CFS quota / cpu.max on the target",
        "disk_io" => "blkio / io.max throttle of the target's writes",
        "disk_full" => {
            "fill the filesystem of a directory inside the target to the brim (path = \"/data\"), free it at heal"
        }
        "pool_exhaustion" => "a client holds every PostgreSQL connection",
        "process_kill" => {
            "SIGKILL one process inside the target, chosen by its command line (process = \"walwriter\"), not the container"
        }
        "process_stop" => {
            "SIGSTOP one process inside the target, chosen by its command line (process = \"walwriter\"); SIGCONT at heal"
        }
        _ => return None,
    })
}

/// A role name as systems declare it and attributes name it: lowercase ASCII letters, digits,
/// `-` and `_`, starting with a letter (it becomes part of container names).
pub fn valid_role(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 32
}
