//! cgroup control files (`Source::Cgroup`), polled per watched container.
//!
//! | signal | cgroup v1 | cgroup v2 |
//! |---|---|---|
//! | OOM kill | `memory.oom_control` `oom_kill N` | `memory.events` `oom_kill N` |
//! | CPU throttling | `cpu.stat` `nr_throttled`, `throttled_time` (ns) | `cpu.stat` `nr_throttled`, `throttled_usec` |
//! | block I/O under a limit | `blkio.throttle.io_service_bytes`/`io_serviced` + `blkio.throttle.*_device` | `io.stat` + `io.max` |
//! | pressure (PSI) | — (the unified hierarchy of a hybrid host has it) | `{memory,cpu,io}.pressure` |
//!
//! A container's directories come from `/proc/<pid>/cgroup` of its init pid mapped through
//! `/proc/self/mountinfo`, so v1, hybrid and v2 hosts with the cgroupfs or systemd driver
//! (`/docker/<id>`, `/system.slice/docker-<id>.scope`) need no guessing.

use super::kmsg::KmsgOom;
use super::procfs::{PsiGate, parse_psi};
use super::sys::Sys;
use super::{Observation, Poller, Shared, Source, Watched, kind, observation};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How long a detected OOM kill waits for /dev/kmsg to name its victim before it is reported
/// without pid and comm.
const ENRICH_WAIT_NS: u64 = 600_000_000;

/// One mounted cgroup hierarchy, from `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CgMount {
    /// The cgroup path of the hierarchy mounted there (`/` unless bind-mounted or namespaced).
    pub root: String,
    pub mount_point: PathBuf,
    /// `true` for cgroup2.
    pub v2: bool,
    /// v1 controllers (`memory`, `cpu`, `name=systemd` ...).
    pub controllers: Vec<String>,
}

/// Parses the cgroup and cgroup2 mounts of a mountinfo file.
pub(crate) fn parse_mountinfo(s: &str) -> Vec<CgMount> {
    let mut out = Vec::new();
    for line in s.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let v2 = match post[0] {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            post[2]
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("relatime"))
                .map(str::to_owned)
                .collect()
        };
        out.push(CgMount {
            root: unescape(pre[3]),
            mount_point: PathBuf::from(unescape(pre[4])),
            v2,
            controllers,
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/<pid>/cgroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcCgroup {
    /// Empty for the v2 line `0::<path>`.
    pub controllers: Vec<String>,
    pub path: String,
}

pub(crate) fn parse_proc_cgroup(s: &str) -> Vec<ProcCgroup> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctl = it.next()?;
            let path = it.next()?;
            Some(ProcCgroup {
                controllers: ctl
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: path.to_owned(),
            })
        })
        .collect()
}

/// The memory cgroup a `/proc/<pid>/cgroup` names: the v1 memory controller's path, else the v2 path.
pub(crate) fn memcg_of(s: &str) -> Option<String> {
    let lines = parse_proc_cgroup(s);
    lines
        .iter()
        .find(|l| l.controllers.iter().any(|c| c == "memory"))
        .or_else(|| lines.iter().find(|l| l.controllers.is_empty()))
        .map(|l| l.path.clone())
}

/// A cgroup of the container in one hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hier {
    /// The path as the kernel names it (`/docker/<id>`), compared with kmsg's `task_memcg`.
    pub rel: String,
    /// Its directory on this host.
    pub dir: PathBuf,
}

/// Where a container's cgroup files are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CgroupPaths {
    /// v1 hierarchies by controller (`memory`, `cpu`, `blkio`, `pids` ...).
    pub v1: BTreeMap<String, Hier>,
    /// The unified hierarchy (pure v2, or the controller-less one of a hybrid host).
    pub v2: Option<Hier>,
}

impl CgroupPaths {
    /// The memory cgroup path as the kernel prints it.
    pub(crate) fn memcg(&self) -> Option<&str> {
        self.v1
            .get("memory")
            .or(self.v2.as_ref())
            .map(|h| h.rel.as_str())
    }

    /// The file that counts OOM kills and whether it is v1's `memory.oom_control`.
    pub(crate) fn oom_file(&self) -> Option<PathBuf> {
        match (self.v1.get("memory"), &self.v2) {
            (Some(h), _) => Some(h.dir.join("memory.oom_control")),
            (None, Some(h)) => Some(h.dir.join("memory.events")),
            _ => None,
        }
    }

    pub(crate) fn cpu_stat_file(&self) -> Option<PathBuf> {
        match (self.v1.get("cpu"), &self.v2) {
            (Some(h), _) => Some(h.dir.join("cpu.stat")),
            (None, Some(h)) if self.v1.is_empty() => Some(h.dir.join("cpu.stat")),
            _ => None,
        }
    }

    /// The directory whose `cgroup.procs` lists every process of the container.
    pub(crate) fn procs_dir(&self) -> Option<&Path> {
        self.v2
            .as_ref()
            .or_else(|| {
                ["cpu", "cpuacct", "pids", "memory"]
                    .iter()
                    .find_map(|c| self.v1.get(*c))
            })
            .map(|h| h.dir.as_path())
    }
}

/// Maps `/proc/<pid>/cgroup` onto the mounts of this host.
pub(crate) fn paths_from(mounts: &[CgMount], proc_cgroup: &str) -> CgroupPaths {
    let mut out = CgroupPaths::default();
    for line in parse_proc_cgroup(proc_cgroup) {
        let v2 = line.controllers.is_empty();
        for m in mounts.iter().filter(|m| m.v2 == v2) {
            if !v2 && !line.controllers.iter().any(|c| m.controllers.contains(c)) {
                continue;
            }
            let rest = if m.root == "/" {
                Some(line.path.as_str())
            } else {
                line.path
                    .strip_prefix(m.root.as_str())
                    .filter(|r| r.is_empty() || r.starts_with('/'))
            };
            let Some(rest) = rest else { continue };
            let hier = Hier {
                rel: line.path.clone(),
                dir: m.mount_point.join(rest.trim_start_matches('/')),
            };
            if v2 {
                out.v2 = Some(hier);
            } else {
                for c in &line.controllers {
                    out.v1.insert(c.clone(), hier.clone());
                }
            }
            break;
        }
    }
    out
}

/// Resolves the cgroup directories of the process `pid`.
pub(crate) fn resolve(sys: &dyn Sys, pid: u32) -> std::io::Result<CgroupPaths> {
    let mounts = parse_mountinfo(&sys.read(Path::new("/proc/self/mountinfo"))?);
    let own = sys.read(Path::new(&format!("/proc/{pid}/cgroup")))?;
    Ok(paths_from(&mounts, &own))
}

/// `oom_kill N` of v1 `memory.oom_control` or v2 `memory.events` (both are `key value` lines).
pub(crate) fn parse_oom_kill(s: &str) -> Option<u64> {
    kv(s, "oom_kill")
}

fn kv(s: &str, key: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Throttling counters of `cpu.stat` (v1 or v2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuStat {
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_us: u64,
}

pub(crate) fn parse_cpu_stat(s: &str) -> Option<CpuStat> {
    let throttled_us =
        kv(s, "throttled_usec").or_else(|| kv(s, "throttled_time").map(|ns| ns / 1000))?;
    Some(CpuStat {
        nr_periods: kv(s, "nr_periods").unwrap_or(0),
        nr_throttled: kv(s, "nr_throttled")?,
        throttled_us,
    })
}

/// Block I/O done by a cgroup, summed over devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct IoTotals {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ios: u64,
    pub write_ios: u64,
}

/// v1 `blkio.throttle.io_service_bytes` and `blkio.throttle.io_serviced`: `maj:min Op N` lines.
pub(crate) fn parse_blkio_v1(service_bytes: &str, serviced: &str) -> IoTotals {
    fn rw(s: &str) -> (u64, u64) {
        let (mut r, mut w) = (0, 0);
        for l in s.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 3 || !f[0].contains(':') {
                continue;
            }
            let n: u64 = f[2].parse().unwrap_or(0);
            match f[1] {
                "Read" => r += n,
                "Write" => w += n,
                _ => {}
            }
        }
        (r, w)
    }
    let (read_bytes, write_bytes) = rw(service_bytes);
    let (read_ios, write_ios) = rw(serviced);
    IoTotals {
        read_bytes,
        write_bytes,
        read_ios,
        write_ios,
    }
}

/// v2 `io.stat`: `maj:min rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..` lines.
pub(crate) fn parse_io_stat_v2(s: &str) -> IoTotals {
    let mut t = IoTotals::default();
    for l in s.lines() {
        for field in l.split_whitespace().skip(1) {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "rbytes" => t.read_bytes += v,
                "wbytes" => t.write_bytes += v,
                "rios" => t.read_ios += v,
                "wios" => t.write_ios += v,
                _ => {}
            }
        }
    }
    t
}

/// v1 throttle limit files: `maj:min value` lines (writing 0 removes a rule).
pub(crate) fn parse_limits_v1(files: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, s) in files {
        for l in s.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() == 2 && f[0].contains(':') && f[1] != "0" {
                out.push(format!("{} {}={}", f[0], name, f[1]));
            }
        }
    }
    out
}

/// v2 `io.max`: `maj:min rbps=max wbps=1048576 riops=max wiops=max` lines; keeps the set limits.
pub(crate) fn parse_io_max_v2(s: &str) -> Vec<String> {
    s.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let dev = f.next()?;
            let set: Vec<&str> = f
                .filter(|kv| kv.contains('=') && !kv.ends_with("=max"))
                .collect();
            (!set.is_empty()).then(|| format!("{dev} {}", set.join(" ")))
        })
        .collect()
}

const V1_LIMIT_FILES: [(&str, &str); 4] = [
    ("rbps", "blkio.throttle.read_bps_device"),
    ("wbps", "blkio.throttle.write_bps_device"),
    ("riops", "blkio.throttle.read_iops_device"),
    ("wiops", "blkio.throttle.write_iops_device"),
];

/// Which cgroup signals this poller reports (the others are eBPF's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CgroupOpts {
    pub oom: bool,
    pub cpu: bool,
    pub io: bool,
    pub psi: bool,
    /// Wait briefly for /dev/kmsg to name an OOM victim.
    pub enrich_from_kmsg: bool,
}

#[derive(Default)]
struct CgState {
    pid: u32,
    last_ns: u64,
    oom_kill: Option<u64>,
    cpu: Option<CpuStat>,
    io: Option<IoTotals>,
    psi: [PsiGate; 3],
}

struct PendingOom {
    id: String,
    role: String,
    count: u64,
    total: u64,
    file: &'static str,
    seen_ns: u64,
    victims: Vec<KmsgOom>,
}

/// Polls the cgroup files of every watched container.
pub(crate) struct CgroupPoller {
    sys: std::sync::Arc<dyn Sys>,
    opts: CgroupOpts,
    state: HashMap<String, CgState>,
    pending: Vec<PendingOom>,
}

impl CgroupPoller {
    pub(crate) fn new(sys: std::sync::Arc<dyn Sys>, opts: CgroupOpts) -> Self {
        Self {
            sys,
            opts,
            state: HashMap::new(),
            pending: Vec::new(),
        }
    }

    fn poll_container(&mut self, now: u64, w: &Watched, out: &mut Vec<Observation>) {
        let Some(cg) = &w.cg else { return };
        let sys = self.sys.clone();
        let st = self.state.entry(w.c.id.clone()).or_default();
        if st.pid != w.c.pid {
            // A (re)start: new cgroup, counters from zero; the first sample is the baseline.
            *st = CgState {
                pid: w.c.pid,
                last_ns: now,
                ..CgState::default()
            };
        }
        let interval_ms = (now.saturating_sub(st.last_ns) / 1_000_000).to_string();
        st.last_ns = now;
        let role = w.c.role.as_str();

        if self.opts.oom
            && let Some(file) = cg.oom_file()
            && let Some(n) = sys.read(&file).ok().as_deref().and_then(parse_oom_kill)
        {
            if let Some(prev) = st.oom_kill.filter(|p| n > *p) {
                self.pending.push(PendingOom {
                    id: w.c.id.clone(),
                    role: w.c.role.clone(),
                    count: n - prev,
                    total: n,
                    file: if cg.v1.contains_key("memory") {
                        "memory.oom_control"
                    } else {
                        "memory.events"
                    },
                    seen_ns: now,
                    victims: Vec::new(),
                });
            }
            st.oom_kill = Some(n);
        }

        if self.opts.cpu
            && let Some(file) = cg.cpu_stat_file()
            && let Some(c) = sys.read(&file).ok().as_deref().and_then(parse_cpu_stat)
        {
            if let Some(p) = st.cpu.filter(|p| c.nr_throttled > p.nr_throttled) {
                out.push(observation(
                    now,
                    kind::CPU_THROTTLED,
                    Source::Cgroup,
                    Some(role),
                    [
                        (
                            "nr_throttled",
                            (c.nr_throttled - p.nr_throttled).to_string(),
                        ),
                        (
                            "throttled_us",
                            c.throttled_us.saturating_sub(p.throttled_us).to_string(),
                        ),
                        (
                            "nr_periods",
                            c.nr_periods.saturating_sub(p.nr_periods).to_string(),
                        ),
                        ("interval_ms", interval_ms.clone()),
                    ],
                ));
            }
            st.cpu = Some(c);
        }

        if self.opts.io {
            let sample = if let Some(h) = cg.v1.get("blkio") {
                let limit_texts: Vec<(&str, String)> = V1_LIMIT_FILES
                    .iter()
                    .map(|(n, f)| (*n, sys.read(&h.dir.join(f)).unwrap_or_default()))
                    .collect();
                let refs: Vec<(&str, &str)> =
                    limit_texts.iter().map(|(n, s)| (*n, s.as_str())).collect();
                let limits = parse_limits_v1(&refs);
                if limits.is_empty() {
                    None
                } else {
                    let b = sys
                        .read(&h.dir.join("blkio.throttle.io_service_bytes"))
                        .unwrap_or_default();
                    let i = sys
                        .read(&h.dir.join("blkio.throttle.io_serviced"))
                        .unwrap_or_default();
                    Some((limits, parse_blkio_v1(&b, &i)))
                }
            } else if let Some(h) = cg.v2.as_ref().filter(|_| cg.v1.is_empty()) {
                let limits = parse_io_max_v2(&sys.read(&h.dir.join("io.max")).unwrap_or_default());
                if limits.is_empty() {
                    None
                } else {
                    let s = sys.read(&h.dir.join("io.stat")).unwrap_or_default();
                    Some((limits, parse_io_stat_v2(&s)))
                }
            } else {
                None
            };
            match sample {
                // No limit: nothing is throttled; the baseline restarts when one is set.
                None => st.io = None,
                Some((limits, t)) => {
                    if let Some(p) = st.io {
                        let d = IoTotals {
                            read_bytes: t.read_bytes.saturating_sub(p.read_bytes),
                            write_bytes: t.write_bytes.saturating_sub(p.write_bytes),
                            read_ios: t.read_ios.saturating_sub(p.read_ios),
                            write_ios: t.write_ios.saturating_sub(p.write_ios),
                        };
                        if d.read_ios + d.write_ios + d.read_bytes + d.write_bytes > 0 {
                            out.push(observation(
                                now,
                                kind::IO_THROTTLED,
                                Source::Cgroup,
                                Some(role),
                                [
                                    ("bytes", (d.read_bytes + d.write_bytes).to_string()),
                                    ("ios", (d.read_ios + d.write_ios).to_string()),
                                    ("read_bytes", d.read_bytes.to_string()),
                                    ("write_bytes", d.write_bytes.to_string()),
                                    ("read_ios", d.read_ios.to_string()),
                                    ("write_ios", d.write_ios.to_string()),
                                    ("limit", limits.join("; ")),
                                    ("interval_ms", interval_ms.clone()),
                                ],
                            ));
                        }
                    }
                    st.io = Some(t);
                }
            }
        }

        if self.opts.psi
            && let Some(h) = &cg.v2
        {
            for (i, (res, k)) in [
                ("memory", kind::MEMORY_PRESSURE),
                ("cpu", kind::CPU_PRESSURE),
                ("io", kind::IO_PRESSURE),
            ]
            .into_iter()
            .enumerate()
            {
                let Some(p) = sys
                    .read(&h.dir.join(format!("{res}.pressure")))
                    .ok()
                    .as_deref()
                    .and_then(parse_psi)
                else {
                    continue;
                };
                if st.psi[i].step(p.some_avg10) {
                    out.push(observation(
                        now,
                        k,
                        Source::Cgroup,
                        Some(role),
                        [
                            ("avg10", format!("{:.2}", p.some_avg10)),
                            ("avg60", format!("{:.2}", p.some_avg60)),
                            ("threshold", format!("{:.0}", super::procfs::PSI_HIGH)),
                            ("scope", "container".to_owned()),
                        ],
                    ));
                }
            }
        }
    }

    /// Hands out the pending OOM kills that /dev/kmsg named or that waited long enough.
    fn settle(
        &mut self,
        now: u64,
        kmsg: &Mutex<Vec<KmsgOom>>,
        force: bool,
        out: &mut Vec<Observation>,
    ) {
        let mut claimed = kmsg.lock().unwrap_or_else(|e| e.into_inner());
        for p in &mut self.pending {
            while (p.victims.len() as u64) < p.count {
                // Kills the kernel logged up to 5 s before the counter moved belong to it.
                let Some(i) = claimed.iter().position(|k| {
                    !k.claimed && k.container_id == p.id && k.at_ns + 5_000_000_000 >= p.seen_ns
                }) else {
                    break;
                };
                claimed[i].claimed = true;
                p.victims.push(claimed[i].clone());
            }
        }
        // Drop what nobody will claim any more.
        claimed.retain(|k| !k.claimed && k.at_ns + 30_000_000_000 > now);
        drop(claimed);

        let wait = self.opts.enrich_from_kmsg;
        let (ready, keep): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|p| {
            force || !wait || p.victims.len() as u64 >= p.count || now >= p.seen_ns + ENRICH_WAIT_NS
        });
        self.pending = keep;
        for p in ready {
            let mut detail = vec![
                ("count", p.count.to_string()),
                ("oom_kill_total", p.total.to_string()),
                ("file", p.file.to_owned()),
            ];
            if let Some(v) = p.victims.first() {
                detail.push(("pid", v.pid.to_string()));
                detail.push(("comm", v.comm.clone()));
                detail.push(("pid_from", "kmsg".to_owned()));
            }
            if p.victims.len() > 1 {
                let pids: Vec<String> = p.victims.iter().map(|v| v.pid.to_string()).collect();
                detail.push(("pids", pids.join(",")));
            }
            out.push(observation(
                p.seen_ns,
                kind::OOM_KILL,
                Source::Cgroup,
                Some(&p.role),
                detail,
            ));
        }
    }
}

impl Poller for CgroupPoller {
    fn poll(&mut self, now: u64, shared: &Shared, out: &mut Vec<Observation>) {
        for w in shared.snapshot(&*self.sys) {
            self.poll_container(now, &w, out);
        }
        self.settle(now, &shared.kmsg_ooms, false, out);
    }

    fn flush(&mut self, now: u64, shared: &Shared, out: &mut Vec<Observation>) {
        self.settle(now, &shared.kmsg_ooms, true, out);
    }
}

#[cfg(test)]
mod tests {
    use super::super::sys::fake::FakeSys;
    use super::super::{Shared, WatchedContainer};
    use super::*;
    use std::sync::Arc;

    const MOUNTINFO_V1_HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";
    const MOUNTINFO_V2: &str = "\
25 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    const ID: &str = "3f2a9c1b7e6d5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b";

    fn proc_cgroup_v1(id: &str) -> String {
        format!(
            "12:pids:/docker/{id}\n7:blkio:/docker/{id}\n4:memory:/docker/{id}\n\
             2:cpu,cpuacct:/docker/{id}\n1:name=systemd:/docker/{id}\n0::/docker/{id}\n"
        )
    }

    #[test]
    fn mountinfo_finds_v1_controllers_and_the_unified_hierarchy() {
        let m = parse_mountinfo(MOUNTINFO_V1_HYBRID);
        assert_eq!(m.len(), 6);
        assert_eq!(m[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(m[4].controllers, ["xattr", "name=systemd"]);
        assert!(m[5].v2);
        assert_eq!(m[5].mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(unescape(r"/mnt/with\040space"), "/mnt/with space");
    }

    #[test]
    fn v1_hybrid_cgroupfs_paths() {
        let p = paths_from(&parse_mountinfo(MOUNTINFO_V1_HYBRID), &proc_cgroup_v1(ID));
        let d = format!("/docker/{ID}");
        assert_eq!(
            p.v1["memory"].dir,
            Path::new("/sys/fs/cgroup/memory").join(&d[1..])
        );
        assert_eq!(
            p.v1["cpu"].dir,
            Path::new("/sys/fs/cgroup/cpu,cpuacct").join(&d[1..])
        );
        assert_eq!(p.memcg(), Some(d.as_str()));
        assert_eq!(
            p.oom_file().unwrap(),
            Path::new(&format!("/sys/fs/cgroup/memory{d}/memory.oom_control"))
        );
        assert_eq!(
            p.cpu_stat_file().unwrap(),
            Path::new(&format!("/sys/fs/cgroup/cpu,cpuacct{d}/cpu.stat"))
        );
        assert_eq!(
            p.procs_dir().unwrap(),
            Path::new(&format!("/sys/fs/cgroup/unified{d}"))
        );
    }

    #[test]
    fn v2_systemd_and_cgroupfs_paths() {
        let m = parse_mountinfo(MOUNTINFO_V2);
        let p = paths_from(&m, &format!("0::/system.slice/docker-{ID}.scope\n"));
        assert!(p.v1.is_empty());
        let dir = format!("/sys/fs/cgroup/system.slice/docker-{ID}.scope");
        assert_eq!(p.oom_file().unwrap(), Path::new(&dir).join("memory.events"));
        assert_eq!(p.cpu_stat_file().unwrap(), Path::new(&dir).join("cpu.stat"));
        let p = paths_from(&m, &format!("0::/docker/{ID}\n"));
        assert_eq!(p.memcg(), Some(format!("/docker/{ID}").as_str()));
    }

    #[test]
    fn namespaced_mount_root_is_stripped() {
        let mi = "41 31 0:38 /docker /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let p = paths_from(&parse_mountinfo(mi), "0::/docker/abc\n");
        assert_eq!(p.v2.unwrap().dir, Path::new("/sys/fs/cgroup/abc"));
        // A cgroup outside the mounted subtree is not visible here.
        assert_eq!(paths_from(&parse_mountinfo(mi), "0::/other\n").v2, None);
    }

    #[test]
    fn memcg_of_prefers_the_v1_memory_line() {
        assert_eq!(memcg_of(&proc_cgroup_v1("x")).as_deref(), Some("/docker/x"));
        assert_eq!(
            memcg_of("0::/system.slice/docker-x.scope\n").as_deref(),
            Some("/system.slice/docker-x.scope")
        );
    }

    #[test]
    fn counters_parse() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        let v2 = "low 0\nhigh 0\nmax 17\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(v1), Some(3));
        assert_eq!(parse_oom_kill(v2), Some(2));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n"), None);

        let cpu_v1 = "nr_periods 120\nnr_throttled 30\nthrottled_time 2500000000\nnr_bursts 0\nburst_time 0\n";
        let cpu_v2 = "usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 10\nnr_throttled 4\n\
                      throttled_usec 81234\nnr_bursts 0\nburst_usec 0\n";
        assert_eq!(
            parse_cpu_stat(cpu_v1),
            Some(CpuStat {
                nr_periods: 120,
                nr_throttled: 30,
                throttled_us: 2_500_000
            })
        );
        assert_eq!(
            parse_cpu_stat(cpu_v2),
            Some(CpuStat {
                nr_periods: 10,
                nr_throttled: 4,
                throttled_us: 81234
            })
        );
        // The hybrid host's unified cpu.stat has no throttling counters.
        assert_eq!(
            parse_cpu_stat("usage_usec 100\nuser_usec 60\nsystem_usec 40\n"),
            None
        );
    }

    #[test]
    fn io_counters_and_limits_parse() {
        let bytes = "254:0 Read 4096\n254:0 Write 2097152\n254:0 Sync 2097152\n254:0 Async 4096\n\
                     254:0 Discard 0\n254:0 Total 2101248\n8:0 Read 10\n8:0 Write 0\nTotal 2101258\n";
        let ios = "254:0 Read 1\n254:0 Write 512\n254:0 Total 513\nTotal 513\n";
        assert_eq!(
            parse_blkio_v1(bytes, ios),
            IoTotals {
                read_bytes: 4106,
                write_bytes: 2_097_152,
                read_ios: 1,
                write_ios: 512
            }
        );
        let v2 = "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                  8:16 rbytes=1 wbytes=1 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(
            parse_io_stat_v2(v2),
            IoTotals {
                read_bytes: 4097,
                write_bytes: 8193,
                read_ios: 2,
                write_ios: 3
            }
        );
        assert_eq!(
            parse_limits_v1(&[
                ("wbps", "254:0 1048576\n"),
                ("rbps", ""),
                ("riops", "254:0 0\n")
            ]),
            ["254:0 wbps=1048576"]
        );
        assert_eq!(
            parse_io_max_v2(
                "254:0 rbps=max wbps=1048576 riops=max wiops=max\n8:0 rbps=max wbps=max riops=max wiops=max\n"
            ),
            ["254:0 wbps=1048576"]
        );
    }

    fn host_v1(sys: &FakeSys, pid: u32) -> String {
        sys.set("/proc/self/mountinfo", MOUNTINFO_V1_HYBRID);
        sys.set(format!("/proc/{pid}/cgroup"), proc_cgroup_v1(ID));
        format!("/docker/{ID}")
    }

    fn opts() -> CgroupOpts {
        CgroupOpts {
            oom: true,
            cpu: true,
            io: true,
            psi: true,
            enrich_from_kmsg: true,
        }
    }

    fn shared_with(sys: &FakeSys, pid: u32) -> Shared {
        let shared = Shared::default();
        shared.watch(
            sys,
            WatchedContainer {
                role: "postgres".into(),
                id: ID.into(),
                pid,
            },
        );
        shared
    }

    #[test]
    fn v1_oom_kill_is_enriched_from_kmsg() {
        let sys = Arc::new(FakeSys::new());
        let d = host_v1(&sys, 42);
        let oom = format!("/sys/fs/cgroup/memory{d}/memory.oom_control");
        sys.set(&oom, "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n");
        let shared = shared_with(&sys, 42);
        let mut p = CgroupPoller::new(sys.clone(), opts());
        let mut out = Vec::new();
        p.poll(1_000_000_000, &shared, &mut out);
        assert!(out.is_empty(), "first sample is the baseline: {out:?}");

        sys.set(&oom, "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n");
        p.poll(1_200_000_000, &shared, &mut out);
        assert!(out.is_empty(), "waits for kmsg to name the victim: {out:?}");
        shared.kmsg_ooms.lock().unwrap().push(KmsgOom {
            container_id: ID.into(),
            pid: 4242,
            comm: "postgres".into(),
            at_ns: 1_150_000_000,
            claimed: false,
        });
        p.poll(1_400_000_000, &shared, &mut out);
        assert_eq!(out.len(), 1);
        let o = &out[0];
        assert_eq!(
            (o.kind.as_str(), o.source, o.container.as_deref()),
            (kind::OOM_KILL, Source::Cgroup, Some("postgres"))
        );
        assert_eq!(o.at_ns, 1_200_000_000);
        assert_eq!(o.detail["count"], "1");
        assert_eq!(o.detail["pid"], "4242");
        assert_eq!(o.detail["comm"], "postgres");
        assert_eq!(o.detail["file"], "memory.oom_control");
    }

    #[test]
    fn v2_oom_kill_without_kmsg_is_reported_after_the_wait() {
        let sys = Arc::new(FakeSys::new());
        sys.set("/proc/self/mountinfo", MOUNTINFO_V2);
        sys.set(
            "/proc/7/cgroup",
            format!("0::/system.slice/docker-{ID}.scope\n"),
        );
        let ev = format!("/sys/fs/cgroup/system.slice/docker-{ID}.scope/memory.events");
        sys.set(&ev, "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n");
        let shared = shared_with(&sys, 7);
        let mut p = CgroupPoller::new(sys.clone(), opts());
        let mut out = Vec::new();
        p.poll(0, &shared, &mut out);
        sys.set(&ev, "low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\n");
        p.poll(200_000_000, &shared, &mut out);
        p.poll(400_000_000, &shared, &mut out);
        assert!(out.is_empty());
        p.poll(800_000_000, &shared, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].detail["count"], "2");
        assert_eq!(out[0].detail["file"], "memory.events");
        assert!(!out[0].detail.contains_key("pid"));
    }

    #[test]
    fn pending_oom_is_flushed_on_stop() {
        let sys = Arc::new(FakeSys::new());
        let d = host_v1(&sys, 42);
        let oom = format!("/sys/fs/cgroup/memory{d}/memory.oom_control");
        sys.set(&oom, "oom_kill 0\n");
        let shared = shared_with(&sys, 42);
        let mut p = CgroupPoller::new(sys.clone(), opts());
        let mut out = Vec::new();
        p.poll(0, &shared, &mut out);
        sys.set(&oom, "oom_kill 1\n");
        p.poll(1, &shared, &mut out);
        assert!(out.is_empty());
        p.flush(2, &shared, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn cpu_throttling_deltas_v1_and_restart_rebaselines() {
        let sys = Arc::new(FakeSys::new());
        let d = host_v1(&sys, 42);
        let f = format!("/sys/fs/cgroup/cpu,cpuacct{d}/cpu.stat");
        sys.set(
            &f,
            "nr_periods 10\nnr_throttled 2\nthrottled_time 1000000\n",
        );
        let shared = shared_with(&sys, 42);
        let mut p = CgroupPoller::new(sys.clone(), opts());
        let mut out = Vec::new();
        p.poll(0, &shared, &mut out);
        sys.set(
            &f,
            "nr_periods 12\nnr_throttled 2\nthrottled_time 1000000\n",
        );
        p.poll(200_000_000, &shared, &mut out);
        assert!(out.is_empty(), "no new throttling, no event");
        sys.set(
            &f,
            "nr_periods 14\nnr_throttled 4\nthrottled_time 91000000\n",
        );
        p.poll(400_000_000, &shared, &mut out);
        assert_eq!(out.len(), 1);
        let o = &out[0];
        assert_eq!(o.kind, kind::CPU_THROTTLED);
        assert_eq!(o.detail["nr_throttled"], "2");
        assert_eq!(o.detail["throttled_us"], "90000");
        assert_eq!(o.detail["interval_ms"], "200");

        // Restart: a new pid and a fresh cgroup whose counters start at zero: no bogus event.
        sys.set("/proc/43/cgroup", proc_cgroup_v1(ID));
        shared.watch(
            &*sys,
            WatchedContainer {
                role: "postgres".into(),
                id: ID.into(),
                pid: 43,
            },
        );
        sys.set(&f, "nr_periods 1\nnr_throttled 1\nthrottled_time 5\n");
        p.poll(600_000_000, &shared, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn cpu_throttling_v2() {
        let sys = Arc::new(FakeSys::new());
        sys.set("/proc/self/mountinfo", MOUNTINFO_V2);
        sys.set("/proc/7/cgroup", format!("0::/docker/{ID}\n"));
        let f = format!("/sys/fs/cgroup/docker/{ID}/cpu.stat");
        sys.set(
            &f,
            "usage_usec 5\nnr_periods 1\nnr_throttled 0\nthrottled_usec 0\n",
        );
        let shared = shared_with(&sys, 7);
        let mut p = CgroupPoller::new(sys.clone(), opts());
        let mut out = Vec::new();
        p.poll(0, &shared, &mut out);
        sys.set(
            &f,
            "usage_usec 5\nnr_periods 9\nnr_throttled 7\nthrottled_usec 350000\n",
        );
        p.poll(200_000_000, &shared, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].detail["nr_throttled"], "7");
        assert_eq!(out[0].detail["throttled_us"], "350000");
    }

    #[test]
    fn io_is_reported_only_under_a_limit() {
        let sys = Arc::new(FakeSys::new());
        let d = host_v1(&sys, 42);
        let dir = format!("/sys/fs/cgroup/blkio{d}");
        sys.set(
            format!("{dir}/blkio.throttle.io_service_bytes"),
            "254:0 Write 100\n",
        );
        sys.set(
            format!("{dir}/blkio.throttle.io_serviced"),
            "254:0 Write 1\n",
        );
        let shared = shared_with(&sys, 42);
        let mut p = CgroupPoller::new(sys.clone(), opts());
        let mut out = Vec::new();
        p.poll(0, &shared, &mut out);
        sys.set(
            format!("{dir}/blkio.throttle.io_service_bytes"),
            "254:0 Write 200\n",
        );
        p.poll(1, &shared, &mut out);
        assert!(out.is_empty(), "no limit set: {out:?}");
        sys.set(
            format!("{dir}/blkio.throttle.write_bps_device"),
            "254:0 1048576\n",
        );
        p.poll(2, &shared, &mut out);
        assert!(
            out.is_empty(),
            "first sample under the limit is the baseline"
        );
        sys.set(
            format!("{dir}/blkio.throttle.io_service_bytes"),
            "254:0 Write 1048776\n",
        );
        sys.set(
            format!("{dir}/blkio.throttle.io_serviced"),
            "254:0 Write 257\n",
        );
        p.poll(3, &shared, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, kind::IO_THROTTLED);
        assert_eq!(out[0].detail["bytes"], "1048576");
        assert_eq!(out[0].detail["ios"], "256");
        assert_eq!(out[0].detail["limit"], "254:0 wbps=1048576");
    }

    #[test]
    fn container_psi_crossing_is_reported_once() {
        let sys = Arc::new(FakeSys::new());
        sys.set("/proc/self/mountinfo", MOUNTINFO_V2);
        sys.set("/proc/7/cgroup", format!("0::/docker/{ID}\n"));
        let f = format!("/sys/fs/cgroup/docker/{ID}/memory.pressure");
        let psi = |a: &str| {
            format!(
                "some avg10={a} avg60=1.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
            )
        };
        sys.set(&f, psi("1.00"));
        let shared = shared_with(&sys, 7);
        let mut p = CgroupPoller::new(sys.clone(), opts());
        let mut out = Vec::new();
        p.poll(0, &shared, &mut out);
        sys.set(&f, psi("35.50"));
        p.poll(1, &shared, &mut out);
        p.poll(2, &shared, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, kind::MEMORY_PRESSURE);
        assert_eq!(out[0].detail["avg10"], "35.50");
        assert_eq!(out[0].detail["scope"], "container");
    }

    #[test]
    fn stopped_container_is_skipped() {
        let sys = Arc::new(FakeSys::new());
        host_v1(&sys, 42);
        let shared = shared_with(&sys, 0);
        let mut p = CgroupPoller::new(sys.clone(), opts());
        let mut out = Vec::new();
        p.poll(0, &shared, &mut out);
        assert!(out.is_empty());
    }
}
