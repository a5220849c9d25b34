//! What this host can do: probes (each with its result and the fix), and the compatibility
//! matrix of the experiments derived from them.
//!
//! [`probe_all`] looks, it never changes the host: the kernel features that can only be known
//! by trying (netem, iptables, nft) are tried inside a throwaway network namespace
//! (`chaos-doctor-<pid>`) that is deleted afterwards; tracefs is reported as mountable, not
//! mounted. [`matrix`] is pure: it maps [`Facts`] to rows, so the logic is unit-tested with
//! faked probe results. `chaos doctor` prints both (`--json` for machines).
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a probe came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Present and working.
    Ok,
    /// Missing or broken, with a fallback: experiments still run, with less (see the fix).
    Warn,
    /// Missing or broken, and something cannot run without it.
    Missing,
}

/// One probe's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Probe {
    /// What was probed (`docker`, `root`, `cgroup`, `ebpf`, ...).
    pub name: String,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to get it, when it is not [`Status::Ok`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The cgroup layout of the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupVersion {
    /// Only v1 controllers.
    V1,
    /// v1 controllers plus a cgroup2 mount (the unified hierarchy) beside them; Docker uses v1.
    Hybrid,
    /// The unified hierarchy only.
    V2,
    /// No cgroup mount found.
    Unknown,
}

/// The cgroup mounts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cgroups {
    /// The layout.
    pub version: CgroupVersion,
    /// Where the unified (v2) hierarchy is mounted, if anywhere.
    pub unified: Option<String>,
    /// v1 controllers that are mounted (`memory`, `cpu`, `blkio`, `freezer`, ...).
    pub v1_controllers: Vec<String>,
    /// Controllers the v2 root offers (`cgroup.controllers`), when v2 is what containers use.
    pub v2_controllers: Vec<String>,
}

impl Cgroups {
    /// Whether containers get `controller` (v1 name; `io` is v2's `blkio`).
    pub fn has(&self, v1_name: &str) -> bool {
        match self.version {
            CgroupVersion::V1 | CgroupVersion::Hybrid => {
                self.v1_controllers.iter().any(|c| c == v1_name)
            }
            CgroupVersion::V2 => {
                let v2 = match v1_name {
                    "blkio" => "io",
                    // The freezer is built into every v2 cgroup (cgroup.freeze).
                    "freezer" => return true,
                    n => n,
                };
                self.v2_controllers.iter().any(|c| c == v2)
            }
            CgroupVersion::Unknown => false,
        }
    }

    /// Whether container limits are written through v1 files (v1 or hybrid) rather than v2.
    pub fn v1(&self) -> bool {
        matches!(self.version, CgroupVersion::V1 | CgroupVersion::Hybrid)
    }
}

/// Parses `/proc/self/mounts` (or `/proc/mounts`) into the cgroup layout; the v2 controllers
/// are filled in by the caller (they live in a file of the mount).
pub fn parse_cgroup_mounts(mounts: &str) -> Cgroups {
    let mut v1 = Vec::new();
    let mut unified = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        match f[2] {
            "cgroup2" if unified.is_none() => unified = Some(f[1].to_string()),
            "cgroup" => {
                for opt in f[3].split(',') {
                    if matches!(
                        opt,
                        "cpu"
                            | "cpuacct"
                            | "cpuset"
                            | "memory"
                            | "blkio"
                            | "freezer"
                            | "pids"
                            | "devices"
                            | "net_cls"
                            | "perf_event"
                            | "hugetlb"
                    ) && !v1.iter().any(|c| c == opt)
                    {
                        v1.push(opt.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    v1.sort();
    let version = match (v1.is_empty(), unified.is_some()) {
        (false, true) => CgroupVersion::Hybrid,
        (false, false) => CgroupVersion::V1,
        (true, true) => CgroupVersion::V2,
        (true, false) => CgroupVersion::Unknown,
    };
    Cgroups {
        version,
        unified,
        v1_controllers: v1,
        v2_controllers: Vec::new(),
    }
}

/// tracefs, which classic tracepoints need (tp_btf programs do not).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tracefs {
    /// Mounted there.
    Mounted(String),
    /// Not mounted, but the kernel has it (`mount -t tracefs tracefs /sys/kernel/tracing`).
    Mountable,
    /// The kernel has no tracefs.
    Missing,
}

/// Everything the probes found; the input of [`probes`] and [`matrix`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Facts {
    /// The Docker daemon's version, or why it cannot be reached (with the fix).
    pub docker: Result<String, String>,
    /// The fixture image's tag and whether it is built (None when Docker is unreachable).
    pub image: Option<(String, bool)>,
    /// Running as root.
    pub root: bool,
    /// The cgroup layout.
    pub cgroups: Cgroups,
    /// `observe::bpf::probe()`: can a trivial program load and attach.
    pub ebpf: Result<(), String>,
    /// `/sys/kernel/btf/vmlinux` is readable.
    pub btf: bool,
    /// tracefs.
    pub tracefs: Tracefs,
    /// A throwaway network namespace could be made (the three below need it).
    pub netns: Result<(), String>,
    /// `tc qdisc add dev lo root netem delay 1ms` in the namespace.
    pub netem: Result<(), String>,
    /// An iptables rule in the namespace: which binary and its version.
    pub iptables: Result<String, String>,
    /// An nft table in the namespace: the version.
    pub nft: Result<String, String>,
    /// Where debootstrap is.
    pub debootstrap: Option<String>,
    /// clang's version line.
    pub clang: Option<String>,
}

/// One experiment of the matrix.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// `01` ... `10`.
    pub id: String,
    /// `database sudden death`.
    pub name: String,
    /// Whether its faults can be injected here.
    pub runs: bool,
    /// `works`, or `cannot run: <why>`.
    pub core: String,
    /// Which source observes its kernel signals.
    pub observation: String,
    /// The mechanisms that act here, and what falls back.
    pub notes: String,
}

/// The doctor's findings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Every probe, in order.
    pub probes: Vec<Probe>,
    /// The experiments.
    pub matrix: Vec<Row>,
    /// The raw findings.
    pub facts: Facts,
}

impl Report {
    /// Builds the probes and the matrix from the findings.
    pub fn from_facts(facts: Facts) -> Self {
        Report {
            probes: probes(&facts),
            matrix: matrix(&facts),
            facts,
        }
    }

    /// Whether every experiment can run here (the exit status of `chaos doctor`).
    pub fn all_run(&self) -> bool {
        self.matrix.iter().all(|r| r.runs)
    }

    /// The probes and the matrix as text for a terminal.
    pub fn render_text(&self) -> String {
        let mut s = String::from("Probes\n");
        let w = self.probes.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for p in &self.probes {
            let mark = match p.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Missing => "MISS",
            };
            s.push_str(&format!("  [{mark}] {:<w$}  {}\n", p.name, p.detail));
            if let Some(fix) = &p.fix {
                s.push_str(&format!("         {:<w$}  fix: {fix}\n", ""));
            }
        }
        s.push_str("\nCompatibility matrix\n");
        let rows: Vec<[String; 4]> = self
            .matrix
            .iter()
            .map(|r| {
                [
                    format!("{} {}", r.id, r.name),
                    r.core.clone(),
                    r.observation.clone(),
                    r.notes.clone(),
                ]
            })
            .collect();
        let head = ["experiment", "core", "kernel observation", "notes"];
        let mut widths = head.map(str::len);
        for r in &rows {
            for (i, c) in r.iter().enumerate().take(3) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |cells: [&str; 4]| {
            format!(
                "  {:<a$}  {:<b$}  {:<c$}  {}\n",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                a = widths[0],
                b = widths[1],
                c = widths[2]
            )
        };
        s.push_str(&line(head));
        s.push_str(&line([
            &"-".repeat(widths[0]),
            &"-".repeat(widths[1]),
            &"-".repeat(widths[2]),
            "-----",
        ]));
        for r in &rows {
            s.push_str(&line([&r[0], &r[1], &r[2], &r[3]]));
        }
        let blocked = self.matrix.iter().filter(|r| !r.runs).count();
        s.push_str(&if blocked == 0 {
            "\nEvery experiment can run on this host.\n".to_string()
        } else {
            format!("\n{blocked} experiment(s) cannot run on this host; see the fixes above.\n")
        });
        s
    }
}

/// The bundled experiments: id, name, fault kinds, kernel signals observed.
pub const EXPERIMENTS: &[(&str, &str, &[&str], &[&str])] = &[
    ("01", "database sudden death", &["kill"], &["process"]),
    ("02", "network partition", &["network_partition"], &["tcp"]),
    ("03", "memory OOM kill", &["memory_oom"], &["oom"]),
    (
        "04",
        "CPU throttling",
        &["cpu_throttle"],
        &["runq", "cpu_throttle"],
    ),
    ("05", "disk I/O starvation", &["disk_io"], &["block_io"]),
    (
        "06",
        "connection-pool exhaustion",
        &["pool_exhaustion"],
        &["tcp"],
    ),
    ("07", "Redis cache failure", &["kill"], &["process"]),
    ("08", "nginx failure", &["kill", "pause"], &["process"]),
    ("09", "network latency", &["latency"], &["tcp"]),
    (
        "10",
        "multi-service failure",
        &["kill", "network_partition"],
        &["process", "tcp"],
    ),
    ("11", "packet loss", &["packet_loss"], &["tcp"]),
    ("12", "bandwidth limit", &["bandwidth"], &["tcp"]),
    ("13", "DNS failure", &["dns_failure"], &["tcp"]),
    (
        "14",
        "process faults",
        &["process_kill", "process_stop"],
        &["process"],
    ),
    (
        "15",
        "HTTP faults",
        &["http_abort", "http_delay", "http_reset"],
        &["tcp"],
    ),
    ("16", "disk full", &["disk_full"], &["block_io"]),
    ("17", "clock skew", &["clock_skew"], &["process"]),
];

/// Fix for a missing netem.
const FIX_NETEM: &str = "load sch_netem (`modprobe sch_netem`; Debian/Ubuntu: install the kernel's extra modules); until then latency goes through the fault proxy";

fn split_fix(s: &str) -> (String, Option<String>) {
    match s.split_once(". Fix: ") {
        Some((what, fix)) => (what.to_string(), Some(fix.to_string())),
        None => (s.to_string(), None),
    }
}

fn probe(name: &str, status: Status, detail: impl Into<String>, fix: Option<String>) -> Probe {
    Probe {
        name: name.into(),
        status,
        detail: detail.into(),
        fix: if status == Status::Ok { None } else { fix },
    }
}

/// The probes, from the findings.
pub fn probes(f: &Facts) -> Vec<Probe> {
    let mut out = Vec::new();
    out.push(match &f.docker {
        Ok(v) => probe(
            "docker",
            Status::Ok,
            format!("daemon {v} at {}", crate::docker::endpoint()),
            None,
        ),
        Err(e) => {
            let (what, fix) = split_fix(e);
            probe("docker", Status::Missing, what, fix)
        }
    });
    match &f.image {
        Some((tag, true)) => out.push(probe("image", Status::Ok, format!("{tag} is built"), None)),
        Some((tag, false)) => out.push(probe(
            "image",
            if f.debootstrap.is_some() { Status::Warn } else { Status::Missing },
            format!("{tag} is not built yet; the first experiment builds it from Debian packages (~1 min)"),
            Some("apt-get install debootstrap (the build needs it)".into()),
        )),
        None => {}
    }
    out.push(if f.root {
        probe("root", Status::Ok, "running as root", None)
    } else {
        probe(
            "root",
            Status::Ok,
            "not root, and the tests need no more than the Docker API: every fault's host \
             operation and the eBPF observers go through each run's host agent (the netem, \
             iptables and nft rows below are this machine's tools, probed only as root)",
            None,
        )
    });
    let cg = &f.cgroups;
    let controllers = if cg.v1() {
        cg.v1_controllers.join(",")
    } else {
        cg.v2_controllers.join(",")
    };
    out.push(match cg.version {
        CgroupVersion::Hybrid => probe(
            "cgroup",
            Status::Ok,
            format!(
                "v1 hybrid: containers use v1 controllers ({controllers}); unified hierarchy at {}",
                cg.unified.as_deref().unwrap_or("?")
            ),
            None,
        ),
        CgroupVersion::V1 => probe(
            "cgroup",
            Status::Ok,
            format!("v1 ({controllers}); no unified hierarchy mounted"),
            None,
        ),
        CgroupVersion::V2 => probe(
            "cgroup",
            Status::Ok,
            format!(
                "v2 unified at {} ({controllers})",
                cg.unified.as_deref().unwrap_or("/sys/fs/cgroup")
            ),
            None,
        ),
        CgroupVersion::Unknown => probe(
            "cgroup",
            Status::Missing,
            "no cgroup filesystem mounted",
            Some("mount cgroup2 at /sys/fs/cgroup (Docker needs cgroups)".into()),
        ),
    });
    out.push(match &f.ebpf {
        Ok(()) => probe(
            "ebpf",
            Status::Ok,
            "a CO-RE program loads and attaches: kernel observers use eBPF",
            None,
        ),
        Err(e) if agent_loads_bpf(f) => {
            let (what, _) = split_fix(e);
            probe(
                "ebpf",
                Status::Ok,
                format!(
                    "not here ({what}): each run's host agent loads the observers into the \
                     engine's kernel (a refusal falls back to cgroup/procfs/Docker events, or \
                     fails `observer = \"bpf\"` with the agent's reason)"
                ),
                None,
            )
        }
        Err(e) => {
            let (what, fix) = split_fix(e);
            probe(
                "ebpf",
                Status::Warn,
                format!("{what}; observers fall back to cgroup/procfs/Docker events"),
                fix,
            )
        }
    });
    out.push(if f.btf {
        probe("btf", Status::Ok, "/sys/kernel/btf/vmlinux", None)
    } else {
        probe(
            "btf",
            Status::Warn,
            "/sys/kernel/btf/vmlinux is missing: CO-RE programs cannot be relocated",
            Some("a kernel built with CONFIG_DEBUG_INFO_BTF=y".into()),
        )
    });
    out.push(match &f.tracefs {
        Tracefs::Mounted(p) => probe("tracefs", Status::Ok, format!("mounted at {p}"), None),
        Tracefs::Mountable => probe(
            "tracefs",
            Status::Warn,
            "not mounted (tp_btf programs do not need it; classic tracepoints do)",
            Some("mount -t tracefs tracefs /sys/kernel/tracing".into()),
        ),
        Tracefs::Missing => probe(
            "tracefs",
            Status::Warn,
            "this kernel has no tracefs (tp_btf programs do not need it)",
            Some("a kernel with CONFIG_TRACING".into()),
        ),
    });
    let ns_fix = |e: &str| {
        if f.root {
            format!("cannot make a throwaway network namespace: {e}")
        } else {
            "not probed: making a network namespace needs root".to_string()
        }
    };
    out.push(match (&f.netns, &f.netem) {
        (Err(e), _) => probe(
            "netem",
            Status::Warn,
            ns_fix(e),
            Some("run as root; apt-get install iproute2".into()),
        ),
        (Ok(()), Ok(())) => probe(
            "netem",
            Status::Ok,
            "tc netem works in a throwaway netns",
            None,
        ),
        (Ok(()), Err(e)) => probe(
            "netem",
            Status::Warn,
            format!("netem missing: {e}"),
            Some(FIX_NETEM.into()),
        ),
    });
    for (name, r, fix) in [
        ("iptables", &f.iptables, "apt-get install iptables"),
        ("nft", &f.nft, "apt-get install nftables"),
    ] {
        out.push(match (&f.netns, r) {
            (Err(e), _) => probe(
                name,
                Status::Warn,
                ns_fix(e),
                Some("run as root; apt-get install iproute2".into()),
            ),
            (Ok(()), Ok(v)) => probe(
                name,
                Status::Ok,
                format!("{v}, usable in a throwaway netns"),
                None,
            ),
            (Ok(()), Err(e)) => probe(name, Status::Warn, e.clone(), Some(fix.into())),
        });
    }
    out.push(match (&f.debootstrap, &f.image) {
        (Some(p), _) => probe("debootstrap", Status::Ok, p.clone(), None),
        (None, Some((_, true))) => probe(
            "debootstrap",
            Status::Warn,
            "missing; the image is already built, a changed recipe could not be rebuilt",
            Some("apt-get install debootstrap".into()),
        ),
        (None, _) => probe(
            "debootstrap",
            Status::Missing,
            "missing: the fixture image cannot be built",
            Some("apt-get install debootstrap".into()),
        ),
    });
    out.push(match &f.clang {
        Some(v) => probe("clang", Status::Ok, v.clone(), None),
        None => probe(
            "clang",
            Status::Warn,
            "missing: the eBPF programs cannot be built (observers fall back)",
            Some("apt-get install clang llvm libbpf-dev bpftool, then rebuild".into()),
        ),
    });
    out
}

/// Why nothing runs at all, if so: Docker or the image.
fn blocker(f: &Facts) -> Option<String> {
    if let Err(e) = &f.docker {
        return Some(format!("Docker unreachable ({})", split_fix(e).0));
    }
    if matches!(&f.image, Some((_, false))) && f.debootstrap.is_none() {
        return Some("the image is not built and debootstrap is missing".into());
    }
    if f.cgroups.version == CgroupVersion::Unknown {
        return Some("no cgroups".into());
    }
    None
}

/// What a fault needs here: Ok(note on the mechanism) or Err(why it cannot run).
pub fn fault_support(kind: &str, f: &Facts) -> Result<String, String> {
    let cg = &f.cgroups;
    let ver = if cg.v1() { "v1" } else { "v2" };
    match kind {
        "kill" => Ok("SIGKILL by Docker, restart at heal".into()),
        "stop" => Ok("docker stop, start at heal".into()),
        "pause" => {
            if cg.has("freezer") {
                Ok(if cg.v1() {
                    "freeze: cgroup freezer (v1)".into()
                } else {
                    "freeze: cgroup.freeze (v2)".into()
                })
            } else {
                Err("no cgroup freezer".into())
            }
        }
        "network_partition" if !f.root => Ok(
            "DROP rules in the target's netns, set by the run's host agent (the base image's iptables/nft)"
                .into(),
        ),
        "network_partition" => {
            match (&f.iptables, &f.nft) {
                (Ok(v), _) => Ok(format!("DROP rules in the target's netns ({v})")),
                (Err(_), Ok(_)) => Ok("DROP rules in the target's netns (nft table)".into()),
                (Err(e), Err(_)) => Err(format!(
                    "neither iptables nor nft is usable in a netns: {e}"
                )),
            }
        }
        "packet_loss" if !f.root => Ok(
            "random-drop rules with counters in the target's netns, set by the run's host agent; no netem needed"
                .into(),
        ),
        "packet_loss" => {
            match (&f.iptables, &f.nft) {
                (Ok(v), _) => Ok(format!(
                    "random-drop rules (statistic match) with counters in the target's netns ({v}); no netem needed"
                )),
                (Err(_), Ok(_)) => Ok(
                    "random-drop rules (numgen random) with counters in the target's netns (nft table); no netem needed"
                        .into(),
                ),
                (Err(e), Err(_)) => Err(format!(
                    "neither iptables nor nft is usable in a netns: {e}"
                )),
            }
        }
        "dns_failure" if !f.root => Ok(
            "a DROP rule for 127.0.0.11 (Docker's embedded DNS) in the target's netns, set by the run's host agent; names checked from inside"
                .into(),
        ),
        "dns_failure" => match (&f.iptables, &f.nft) {
            (Ok(v), _) => Ok(format!(
                "a DROP rule for 127.0.0.11 (Docker's embedded DNS) in the target's netns ({v}); names checked from inside"
            )),
            (Err(_), Ok(_)) => Ok(
                "a DROP rule for 127.0.0.11 (Docker's embedded DNS) in the target's netns (nft table); names checked from inside"
                    .into(),
            ),
            (Err(e), Err(_)) => Err(format!("neither iptables nor nft is usable in a netns: {e}")),
        },
        "disk_full" => Ok(
            "a file of zeros in the target's directory, written by the run's host agent until ENOSPC (a size-limited volume: Wiring::sized_volume)"
                .into(),
        ),
        "clock_skew" => Ok(
            "libfaketime's clock file in the target, rewritten by the run's host agent (the target preloads libfaketime: Wiring::skewable_clock_env); measured with `date` inside"
                .into(),
        ),
        "http_abort" | "http_delay" | "http_reset" => Ok(
            "the fault proxy in front of the target, request by request (an exact share of the matching requests)"
                .into(),
        ),
        "latency" => match (&f.netns, &f.netem) {
            (Ok(()), Ok(())) => {
                Ok("tc netem in the target's netns (fault proxy where netem cannot act)".into())
            }
            _ => Ok("netem missing: latency through the fault proxy (works)".into()),
        },
        "memory_oom" => {
            if cg.has("memory") {
                Ok(if cg.v1() {
                    "memory.limit_in_bytes (cgroup v1)".into()
                } else {
                    "memory.max (v2)".into()
                })
            } else {
                Err(format!("no memory controller (cgroup {ver})"))
            }
        }
        "cpu_throttle" => {
            if cg.has("cpu") {
                Ok(if cg.v1() {
                    "cpu.cfs_quota_us (cgroup v1)".into()
                } else {
                    "cpu.max (v2)".into()
                })
            } else {
                Err(format!("no cpu controller (cgroup {ver})"))
            }
        }
        "disk_io" => {
            if f.root && cg.has("blkio") {
                Ok(if cg.v1() {
                    "blkio.throttle (v1)".into()
                } else {
                    "io.max (v2)".into()
                })
            } else if !f.root {
                Ok("blkio/io.max throttle written by the run's host agent".into())
            } else {
                Ok(format!(
                    "no {} controller: an I/O hog instead of a throttle",
                    if cg.v1() { "blkio" } else { "io" }
                ))
            }
        }
        "pool_exhaustion" => Ok("a client holds every PostgreSQL connection".into()),
        "process_kill" | "process_stop" => Ok(
            "one process chosen from `docker top` by its command line, signalled by the run's host agent (pid checked against the container)"
                .into(),
        ),
        "bandwidth" if !f.root => Ok(
            "tc tbf in the target's netns (ifb for ingress), set by the run's host agent; no netem needed"
                .into(),
        ),
        "bandwidth" => {
            match &f.netns {
                Ok(()) => Ok(
                    "tc tbf in the target's netns (eth0 egress, ingress via ifb); no netem needed"
                        .into(),
                ),
                Err(e) => Err(format!("cannot enter a network namespace: {e}")),
            }
        }
        other => Err(format!("unknown fault kind {other}")),
    }
}

/// Whether runs have their host agent load eBPF: this process may not (not root) but can
/// start containers, and the kernel has BTF for the CO-RE programs.
fn agent_loads_bpf(f: &Facts) -> bool {
    !f.root && f.docker.is_ok() && f.btf
}

/// Which source observes a signal here.
pub fn observer_of(signal: &str, f: &Facts) -> String {
    let v1 = f.cgroups.v1();
    let bpf = f.ebpf.is_ok() && f.root;
    match signal {
        "cpu_throttle" => format!("cpu.stat ({})", if v1 { "cgroup v1" } else { "v2" }),
        _ if bpf => "eBPF (CO-RE)".into(),
        _ if agent_loads_bpf(f) => "eBPF (CO-RE, loaded by the run's host agent)".into(),
        "process" => "fallback: Docker events (container level)".into(),
        "oom" => format!(
            "fallback: {} + /dev/kmsg",
            if v1 {
                "memory.oom_control (v1)"
            } else {
                "memory.events (v2)"
            }
        ),
        "tcp" => "fallback: /proc/<pid>/net/snmp counters".into(),
        "runq" => "fallback: /proc schedstat".into(),
        "block_io" => format!(
            "fallback: {} counters",
            if v1 { "blkio (v1)" } else { "io.stat (v2)" }
        ),
        other => format!("fallback ({other})"),
    }
}

/// The compatibility matrix of [`EXPERIMENTS`] on a host with these findings.
pub fn matrix(f: &Facts) -> Vec<Row> {
    let blocked = blocker(f);
    EXPERIMENTS
        .iter()
        .map(|(id, name, faults, signals)| {
            let mut notes = Vec::new();
            let mut why = blocked.clone();
            for k in faults.iter() {
                match fault_support(k, f) {
                    Ok(note) => {
                        if !notes.contains(&note) {
                            notes.push(note)
                        }
                    }
                    Err(e) => {
                        why.get_or_insert(format!("{k}: {e}"));
                    }
                }
            }
            let mut obs: Vec<String> = Vec::new();
            for s in signals.iter() {
                let o = observer_of(s, f);
                if !obs.contains(&o) {
                    obs.push(o);
                }
            }
            Row {
                id: id.to_string(),
                name: name.to_string(),
                runs: why.is_none(),
                core: match &why {
                    None => "works".into(),
                    Some(w) => format!("cannot run: {w}"),
                },
                observation: obs.join(" + "),
                notes: notes.join("; "),
            }
        })
        .collect()
}

/// Runs every probe on this host and builds the report. Takes a few seconds at most (each
/// external command is bounded); safe to call from inside or outside a tokio runtime.
pub fn probe_all() -> Report {
    Report::from_facts(gather())
}

/// Every probe's raw finding.
pub fn gather() -> Facts {
    // Docker is async (bollard); ask it on a thread of its own so any caller context works.
    let docker = std::thread::spawn(docker_facts);
    let root = unsafe { libc::geteuid() } == 0;
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut cgroups = parse_cgroup_mounts(&mounts);
    if cgroups.version == CgroupVersion::V2 {
        let root_dir = cgroups
            .unified
            .clone()
            .unwrap_or_else(|| "/sys/fs/cgroup".into());
        cgroups.v2_controllers =
            std::fs::read_to_string(Path::new(&root_dir).join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
    }
    let ebpf = crate::observe::bpf::probe();
    let btf = std::fs::File::open("/sys/kernel/btf/vmlinux").is_ok();
    let tracefs = tracefs(&mounts);
    let netns = netns_probe(root);
    let (netem, iptables, nft) = runtime_checks(root);
    let debootstrap = which("debootstrap").map(|p| p.display().to_string());
    let clang =
        which(&std::env::var("CHAOS_BPF_CLANG").unwrap_or_else(|_| "clang".into())).map(|p| {
            run(
                &p.display().to_string(),
                &["--version"],
                Duration::from_secs(5),
            )
            .ok()
            .and_then(|o| o.stdout.lines().next().map(str::to_string))
            .unwrap_or_else(|| p.display().to_string())
        });
    let (docker, image) = docker
        .join()
        .unwrap_or_else(|_| (Err("the Docker probe panicked".into()), None));
    Facts {
        docker,
        image,
        root,
        cgroups,
        ebpf,
        btf,
        tracefs,
        netns,
        netem,
        iptables,
        nft,
        debootstrap,
        clang,
    }
}

type DockerFacts = (Result<String, String>, Option<(String, bool)>);

fn docker_facts() -> DockerFacts {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return (Err(format!("cannot start a tokio runtime: {e}")), None),
    };
    rt.block_on(async {
        let docker = match crate::docker::connect().await {
            Ok(d) => d,
            Err(e) => return (Err(e.to_string()), None),
        };
        let version = match tokio::time::timeout(Duration::from_secs(5), docker.version()).await {
            Ok(Ok(v)) => v.version.unwrap_or_else(|| "(unknown version)".into()),
            Ok(Err(e)) => return (Err(format!("docker version failed: {e}")), None),
            Err(_) => return (Err("docker version: no answer within 5 s".into()), None),
        };
        let tag = crate::image::tag();
        let built = matches!(
            tokio::time::timeout(Duration::from_secs(5), docker.inspect_image(&tag)).await,
            Ok(Ok(_))
        );
        (Ok(version), Some((tag, built)))
    })
}

fn tracefs(mounts: &str) -> Tracefs {
    if let Some(p) = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "tracefs")
        .map(|f| f[1].to_string())
    {
        return Tracefs::Mounted(p);
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("tracefs"))
    {
        Tracefs::Mountable
    } else {
        Tracefs::Missing
    }
}

/// A command's outcome.
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs a command with a deadline; Err when it cannot start or runs past it (then it is killed).
fn run(cmd: &str, args: &[&str], timeout: Duration) -> Result<Out, String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{cmd} {} did not finish within {} s",
                    args.join(" "),
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {cmd}: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("reading {cmd}'s output: {e}"))?;
    Ok(Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// A throwaway network namespace, deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0], Duration::from_secs(10));
    }
}

/// Whether a named network namespace can be made here (`ip netns add`).
fn netns_probe(root: bool) -> Result<(), String> {
    if !root {
        return Err("needs root".into());
    }
    let Some(ip) = which("ip") else {
        return Err("ip (iproute2) is missing".into());
    };
    let ip = ip.display().to_string();
    // Namespaces of doctors that were killed mid-probe (their pid is gone) are removed first.
    if let Ok(o) = run(&ip, &["netns", "list"], Duration::from_secs(10)) {
        for stale in
            stale_doctor_netns(&o.stdout, |pid| Path::new(&format!("/proc/{pid}")).exists())
        {
            let _ = run(&ip, &["netns", "del", &stale], Duration::from_secs(10));
        }
    }
    let name = format!("chaos-doctor-{}", std::process::id());
    match run(&ip, &["netns", "add", &name], Duration::from_secs(10)) {
        Ok(o) if o.ok => {
            drop(Netns(name));
            Ok(())
        }
        Ok(o) => Err(format!("ip netns add: {}", first_line(&o.stderr))),
        Err(e) => Err(e),
    }
}

/// netem, the partition's iptables backend and nft, found by the very checks the runtime makes
/// when it injects (`latency::netem_support`, `network::backends_here`), so the matrix says
/// what a run will do.
fn runtime_checks(
    root: bool,
) -> (
    Result<(), String>,
    Result<String, String>,
    Result<String, String>,
) {
    if !root {
        let why = "needs root".to_string();
        return (Err(why.clone()), Err(why.clone()), Err(why));
    }
    let checks = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(rt.block_on(async {
            let netem = crate::fault::latency::netem_support(false)
                .await
                .map_err(|e| e.trim_start_matches("auto: ").to_string());
            let (iptables, nft) = crate::fault::network::backends_here().await;
            (netem, iptables, nft)
        }))
    })
    .join()
    .unwrap_or_else(|_| Err("the probe panicked".into()));
    match checks {
        Ok(found) => found,
        Err(e) => (Err(e.clone()), Err(e.clone()), Err(e)),
    }
}

/// The `chaos-doctor-<pid>` namespaces in `ip netns list` output whose doctor is gone.
fn stale_doctor_netns(list: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| Some((n, n.strip_prefix("chaos-doctor-")?.parse::<u32>().ok()?)))
        .filter(|(_, pid)| *pid != std::process::id() && !alive(*pid))
        .map(|(n, _)| n.to_string())
        .collect()
}

/// Finds a program on PATH, and in the sbin directories a non-root PATH may lack.
pub fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| is_exec(p))
}

fn is_exec(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
cgroup /sys/fs/cgroup/blkio cgroup rw,relatime,blkio 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
tracefs /sys/kernel/tracing tracefs rw,relatime 0 0
";
    const V2: &str = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n";

    /// This kind of host: Docker, root, hybrid cgroups, eBPF, no netem.
    fn here() -> Facts {
        Facts {
            docker: Ok("20.10.24".into()),
            image: Some(("chaos-trading:abc".into(), true)),
            root: true,
            cgroups: parse_cgroup_mounts(HYBRID),
            ebpf: Ok(()),
            btf: true,
            tracefs: Tracefs::Mounted("/sys/kernel/tracing".into()),
            netns: Ok(()),
            netem: Err("no sch_netem in this kernel".into()),
            iptables: Ok("iptables v1.8.9 (nf_tables)".into()),
            nft: Ok("nftables v1.0.6".into()),
            debootstrap: Some("/usr/sbin/debootstrap".into()),
            clang: Some("Debian clang version 14".into()),
        }
    }

    #[test]
    fn every_fault_kind_of_the_vocabulary_has_a_mechanism_here() {
        for kind in chaos_spec::FAULT_KINDS {
            let said = fault_support(kind, &here());
            assert!(
                !said
                    .as_ref()
                    .is_err_and(|e| e.contains("unknown fault kind")),
                "the doctor does not know {kind}"
            );
        }
    }

    fn v2_host() -> Facts {
        let mut cg = parse_cgroup_mounts(V2);
        cg.v2_controllers = ["cpuset", "cpu", "io", "memory", "pids"]
            .map(String::from)
            .to_vec();
        Facts {
            cgroups: cg,
            netem: Ok(()),
            ..here()
        }
    }

    fn row<'a>(m: &'a [Row], id: &str) -> &'a Row {
        m.iter().find(|r| r.id == id).unwrap()
    }

    #[test]
    fn cgroup_mounts_are_classified() {
        let h = parse_cgroup_mounts(HYBRID);
        assert_eq!(h.version, CgroupVersion::Hybrid);
        assert_eq!(h.unified.as_deref(), Some("/sys/fs/cgroup/unified"));
        assert_eq!(
            h.v1_controllers,
            ["blkio", "cpu", "cpuacct", "freezer", "memory"]
        );
        assert!(h.has("memory") && h.has("blkio") && !h.has("pids"));
        let v2 = parse_cgroup_mounts(V2);
        assert_eq!(
            (v2.version, v2.unified.as_deref()),
            (CgroupVersion::V2, Some("/sys/fs/cgroup"))
        );
        assert_eq!(parse_cgroup_mounts("").version, CgroupVersion::Unknown);
        let v1 = parse_cgroup_mounts("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n");
        assert_eq!(v1.version, CgroupVersion::V1);
        assert_eq!(
            tracefs(HYBRID),
            Tracefs::Mounted("/sys/kernel/tracing".into())
        );
    }

    #[test]
    fn this_host_runs_everything_and_09_goes_through_the_proxy() {
        let r = Report::from_facts(here());
        assert!(r.all_run(), "{}", r.render_text());
        assert_eq!(r.matrix.len(), EXPERIMENTS.len());
        let m = &r.matrix;
        assert_eq!(row(m, "09").core, "works");
        assert_eq!(
            row(m, "09").notes,
            "netem missing: latency through the fault proxy (works)"
        );
        assert_eq!(row(m, "04").notes, "cpu.cfs_quota_us (cgroup v1)");
        assert_eq!(row(m, "05").notes, "blkio.throttle (v1)");
        assert_eq!(row(m, "03").notes, "memory.limit_in_bytes (cgroup v1)");
        assert_eq!(row(m, "01").observation, "eBPF (CO-RE)");
        assert_eq!(
            row(m, "04").observation,
            "eBPF (CO-RE) + cpu.stat (cgroup v1)"
        );
        assert!(row(m, "02").notes.contains("iptables v1.8.9"));
        assert!(row(m, "08").notes.contains("cgroup freezer (v1)"));
        let netem = r.probes.iter().find(|p| p.name == "netem").unwrap();
        assert_eq!(netem.status, Status::Warn);
        assert!(netem.fix.as_deref().unwrap().contains("sch_netem"));
        let text = r.render_text();
        assert!(text.contains("09 network latency") && text.contains("Every experiment can run"));
    }

    #[test]
    fn a_v2_host_names_the_v2_files_and_netem() {
        let m = matrix(&v2_host());
        assert_eq!(row(&m, "04").notes, "cpu.max (v2)");
        assert_eq!(row(&m, "05").notes, "io.max (v2)");
        assert_eq!(row(&m, "03").notes, "memory.max (v2)");
        assert!(row(&m, "09").notes.starts_with("tc netem"));
        assert!(row(&m, "08").notes.contains("cgroup.freeze (v2)"));
    }

    #[test]
    fn without_ebpf_the_fallbacks_are_named() {
        let f = Facts {
            ebpf: Err("cannot attach. Fix: mount tracefs".into()),
            ..here()
        };
        let m = matrix(&f);
        assert_eq!(
            row(&m, "01").observation,
            "fallback: Docker events (container level)"
        );
        assert_eq!(
            row(&m, "03").observation,
            "fallback: memory.oom_control (v1) + /dev/kmsg"
        );
        assert_eq!(row(&m, "05").observation, "fallback: blkio (v1) counters");
        assert!(
            m.iter().all(|r| r.runs),
            "observers fall back, experiments still run"
        );
        let p = probes(&f);
        let e = p.iter().find(|p| p.name == "ebpf").unwrap();
        assert_eq!(
            (e.status, e.fix.as_deref()),
            (Status::Warn, Some("mount tracefs"))
        );
    }

    #[test]
    fn without_docker_nothing_runs() {
        let f = Facts {
            docker: Err(
                "cannot reach the Docker daemon at unix:///x: refused. Fix: start it".into(),
            ),
            image: None,
            ..here()
        };
        let r = Report::from_facts(f);
        assert!(
            r.matrix
                .iter()
                .all(|r| !r.runs && r.core.starts_with("cannot run: Docker unreachable"))
        );
        assert!(!r.all_run());
        let d = &r.probes[0];
        assert_eq!(
            (d.status, d.fix.as_deref()),
            (Status::Missing, Some("start it"))
        );
        assert!(r.render_text().contains("17 experiment(s) cannot run"));
    }

    #[test]
    fn partitions_need_root_and_a_packet_filter() {
        let f = Facts {
            iptables: Err("iptables: no".into()),
            nft: Err("nft: no".into()),
            ..here()
        };
        let m = matrix(&f);
        assert!(!row(&m, "02").runs && row(&m, "02").core.contains("network_partition"));
        assert!(!row(&m, "10").runs);
        assert!(!row(&m, "11").runs && row(&m, "11").core.contains("packet_loss"));
        assert!(row(&m, "01").runs && row(&m, "09").runs);
        let nft_only = Facts {
            iptables: Err("no".into()),
            ..here()
        };
        assert!(row(&matrix(&nft_only), "02").notes.contains("nft table"));
        assert!(
            row(&matrix(&nft_only), "11")
                .notes
                .contains("numgen random")
        );
        let user = Facts {
            root: false,
            ebpf: Err("not root".into()),
            ..here()
        };
        let m = matrix(&user);
        assert!(row(&m, "02").runs && row(&m, "02").notes.contains("host agent"));
        assert!(row(&m, "11").runs && row(&m, "11").notes.contains("host agent"));
        assert!(row(&m, "05").runs && row(&m, "05").notes.contains("host agent"));
        assert!(observer_of("process", &user).contains("host agent"));
        let e = probes(&user)
            .into_iter()
            .find(|p| p.name == "ebpf")
            .unwrap();
        assert_eq!(e.status, Status::Ok);
        assert!(e.detail.contains("host agent"), "{}", e.detail);
        let no_docker = Facts {
            docker: Err("no socket".into()),
            ..user
        };
        assert!(observer_of("process", &no_docker).starts_with("fallback"));
    }

    #[test]
    fn an_unbuilt_image_needs_debootstrap() {
        let f = Facts {
            image: Some(("t".into(), false)),
            debootstrap: None,
            ..here()
        };
        assert!(matrix(&f).iter().all(|r| !r.runs));
        let f = Facts {
            image: Some(("t".into(), false)),
            ..here()
        };
        assert!(matrix(&f).iter().all(|r| r.runs));
        assert_eq!(
            probes(&f)
                .iter()
                .find(|p| p.name == "image")
                .unwrap()
                .status,
            Status::Warn
        );
    }

    #[test]
    fn only_namespaces_of_dead_doctors_are_swept() {
        let list = "chaos-doctor-111 (id: 3)\nchaos-doctor-222\nsomething-else\nchaos-doctor-x\n";
        assert_eq!(
            stale_doctor_netns(list, |pid| pid == 222),
            ["chaos-doctor-111"]
        );
        assert!(stale_doctor_netns("", |_| false).is_empty());
    }

    #[test]
    fn json_names_statuses_in_snake_case() {
        let r = Report::from_facts(here());
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["probes"][0]["status"], "ok");
        assert_eq!(j["matrix"][8]["id"], "09");
        assert_eq!(j["facts"]["cgroups"]["version"], "hybrid");
    }
}
