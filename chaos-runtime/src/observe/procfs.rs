//! /proc files (`Source::Procfs`), polled per watched container.
//!
//! - TCP: `/proc/<pid>/net/snmp` (`Tcp:` `RetransSegs`, `EstabResets`, `OutRsts`) and
//!   `/proc/<pid>/net/netstat` (`TcpExt:` `TCPTimeouts`) of the container's init pid, which
//!   read the counters of *its* network namespace.
//! - Run-queue delay: the second field of `/proc/<pid>/task/<tid>/schedstat` (ns spent
//!   runnable but waiting for a CPU) summed over every task of every process of the container,
//!   once a second.
//! - Pressure: `/proc/pressure/{cpu,memory,io}` (system-wide, not per container).

use super::sys::Sys;
use super::{Observation, Poller, Shared, Source, Watched, kind, observation};
use std::collections::HashMap;
use std::path::Path;

/// A PSI `some avg10` (percent) at or above this is reported...
pub(crate) const PSI_HIGH: f64 = 10.0;
/// ... and it must fall below this before it is reported again.
const PSI_LOW: f64 = 5.0;
/// Run-queue wait is summed over this window (eBPF's histograms are read about as often), so a
/// busy host yields one event per container and second, not five.
const RUNQ_WINDOW_NS: u64 = 1_000_000_000;
/// Run-queue wait (summed over the container's tasks) below this per window is noise.
const RUNQ_MIN_WAIT_US: u64 = 5_000;

/// The `Name: key key ...` / `Name: value value ...` line pairs of net/snmp and net/netstat.
pub(crate) fn parse_pairs(s: &str, name: &str) -> HashMap<String, i64> {
    let prefix = format!("{name}:");
    let mut lines = s
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(prefix.as_str()));
    let mut out = HashMap::new();
    while let (Some(keys), Some(values)) = (lines.next(), lines.next()) {
        for (k, v) in keys
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            if let Ok(v) = v.parse() {
                out.insert(k.to_owned(), v);
            }
        }
    }
    out
}

/// The TCP counters of one network namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TcpCounters {
    pub retrans_segs: u64,
    pub estab_resets: u64,
    pub out_rsts: u64,
    /// `TcpExt: TCPTimeouts`; `None` when net/netstat is unreadable.
    pub timeouts: Option<u64>,
}

pub(crate) fn parse_tcp(snmp: &str, netstat: Option<&str>) -> Option<TcpCounters> {
    let t = parse_pairs(snmp, "Tcp");
    let get = |k: &str| t.get(k).map(|v| (*v).max(0) as u64);
    Some(TcpCounters {
        retrans_segs: get("RetransSegs")?,
        estab_resets: get("EstabResets")?,
        out_rsts: get("OutRsts")?,
        timeouts: netstat.and_then(|n| {
            parse_pairs(n, "TcpExt")
                .get("TCPTimeouts")
                .map(|v| (*v).max(0) as u64)
        }),
    })
}

/// `/proc/<pid>/task/<tid>/schedstat`: (run ns, run-queue wait ns, timeslices).
pub(crate) fn parse_schedstat(s: &str) -> Option<(u64, u64, u64)> {
    let mut f = s.split_whitespace().map(|x| x.parse::<u64>().ok());
    Some((f.next()??, f.next()??, f.next()??))
}

/// One PSI file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Psi {
    pub some_avg10: f64,
    pub some_avg60: f64,
}

pub(crate) fn parse_psi(s: &str) -> Option<Psi> {
    let line = s.lines().find(|l| l.starts_with("some "))?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k)?.strip_prefix('=')?.parse::<f64>().ok())
    };
    Some(Psi {
        some_avg10: field("avg10")?,
        some_avg60: field("avg60")?,
    })
}

/// Reports a pressure once when it rises above [`PSI_HIGH`], re-arms below [`PSI_LOW`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PsiGate {
    high: bool,
}

impl PsiGate {
    /// `true` when this sample crosses the threshold upwards.
    pub(crate) fn step(&mut self, avg10: f64) -> bool {
        if !self.high && avg10 >= PSI_HIGH {
            self.high = true;
            return true;
        }
        if self.high && avg10 < PSI_LOW {
            self.high = false;
        }
        false
    }
}

/// Which procfs signals this poller reports (the others are eBPF's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcfsOpts {
    pub tcp: bool,
    pub runq: bool,
    pub system_psi: bool,
}

#[derive(Default)]
struct PState {
    pid: u32,
    last_ns: u64,
    tcp: Option<TcpCounters>,
    /// Per task: (wait ns, timeslices), from the previous sample.
    tasks: Option<HashMap<u32, (u64, u64)>>,
    /// When `tasks` was sampled.
    tasks_ns: u64,
}

/// Polls the /proc files of every watched container, plus system-wide PSI.
pub(crate) struct ProcfsPoller {
    sys: std::sync::Arc<dyn Sys>,
    opts: ProcfsOpts,
    state: HashMap<String, PState>,
    psi: [PsiGate; 3],
}

impl ProcfsPoller {
    pub(crate) fn new(sys: std::sync::Arc<dyn Sys>, opts: ProcfsOpts) -> Self {
        Self {
            sys,
            opts,
            state: HashMap::new(),
            psi: Default::default(),
        }
    }

    /// Every task of every process of the container, with its schedstat.
    fn sample_tasks(&self, w: &Watched) -> HashMap<u32, (u64, u64)> {
        let sys = &*self.sys;
        let procs: Vec<u32> =
            w.cg.as_ref()
                .and_then(|cg| cg.procs_dir())
                .and_then(|d| sys.read(&d.join("cgroup.procs")).ok())
                .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
                .filter(|v: &Vec<u32>| !v.is_empty())
                .unwrap_or_else(|| vec![w.c.pid]);
        let mut out = HashMap::new();
        for pid in procs {
            let Ok(tids) = sys.read_dir_names(Path::new(&format!("/proc/{pid}/task"))) else {
                continue;
            };
            for tid in tids.iter().filter_map(|t| t.parse::<u32>().ok()) {
                let path = format!("/proc/{pid}/task/{tid}/schedstat");
                if let Some((_, wait, slices)) = sys
                    .read(Path::new(&path))
                    .ok()
                    .as_deref()
                    .and_then(parse_schedstat)
                {
                    out.insert(tid, (wait, slices));
                }
            }
        }
        out
    }

    fn poll_container(&mut self, now: u64, w: &Watched, out: &mut Vec<Observation>) {
        if w.c.pid == 0 {
            return;
        }
        let due = self.state.get(&w.c.id).is_none_or(|s| {
            s.pid != w.c.pid || s.tasks.is_none() || now >= s.tasks_ns + RUNQ_WINDOW_NS
        });
        let tasks = (self.opts.runq && due).then(|| self.sample_tasks(w));
        let sys = self.sys.clone();
        let st = self.state.entry(w.c.id.clone()).or_default();
        if st.pid != w.c.pid {
            // A (re)start: a new network namespace and new tasks; the first sample is the baseline.
            *st = PState {
                pid: w.c.pid,
                last_ns: now,
                ..PState::default()
            };
        }
        let interval_ms = (now.saturating_sub(st.last_ns) / 1_000_000).to_string();
        st.last_ns = now;
        let role = w.c.role.as_str();
        let pid = w.c.pid;

        if self.opts.tcp
            && let Ok(snmp) = sys.read(Path::new(&format!("/proc/{pid}/net/snmp")))
        {
            let netstat = sys
                .read(Path::new(&format!("/proc/{pid}/net/netstat")))
                .ok();
            if let Some(t) = parse_tcp(&snmp, netstat.as_deref()) {
                if let Some(p) = st.tcp {
                    let retrans = t.retrans_segs.saturating_sub(p.retrans_segs);
                    let timeouts = match (t.timeouts, p.timeouts) {
                        (Some(a), Some(b)) => a.saturating_sub(b),
                        _ => 0,
                    };
                    if retrans > 0 || timeouts > 0 {
                        out.push(observation(
                            now,
                            kind::TCP_RETRANSMIT,
                            Source::Procfs,
                            Some(role),
                            [
                                ("count", retrans.to_string()),
                                ("timeouts", timeouts.to_string()),
                                ("interval_ms", interval_ms.clone()),
                            ],
                        ));
                    }
                    let estab = t.estab_resets.saturating_sub(p.estab_resets);
                    let out_rsts = t.out_rsts.saturating_sub(p.out_rsts);
                    if estab > 0 || out_rsts > 0 {
                        out.push(observation(
                            now,
                            kind::TCP_RESET,
                            Source::Procfs,
                            Some(role),
                            [
                                ("estab_resets", estab.to_string()),
                                ("out_rsts", out_rsts.to_string()),
                                ("interval_ms", interval_ms.clone()),
                            ],
                        ));
                    }
                }
                st.tcp = Some(t);
            }
        }

        if let Some(tasks) = tasks {
            if let Some(prev) = &st.tasks {
                let (mut wait_ns, mut slices, mut max_ns, mut waited) = (0u64, 0u64, 0u64, 0u32);
                for (tid, (w_ns, s)) in &tasks {
                    // A task new since the last sample waited all its recorded time in this interval.
                    let (pw, ps) = prev.get(tid).copied().unwrap_or((0, 0));
                    let d = w_ns.saturating_sub(pw);
                    wait_ns += d;
                    slices += s.saturating_sub(ps);
                    max_ns = max_ns.max(d);
                    waited += u32::from(d > 0);
                }
                if wait_ns / 1000 >= RUNQ_MIN_WAIT_US {
                    out.push(observation(
                        now,
                        kind::RUNQ_DELAY,
                        Source::Procfs,
                        Some(role),
                        [
                            ("wait_us", (wait_ns / 1000).to_string()),
                            ("max_task_wait_us", (max_ns / 1000).to_string()),
                            ("tasks", waited.to_string()),
                            ("timeslices", slices.to_string()),
                            ("interval_ms", ((now - st.tasks_ns) / 1_000_000).to_string()),
                        ],
                    ));
                }
            }
            st.tasks = Some(tasks);
            st.tasks_ns = now;
        }
    }

    fn poll_system_psi(&mut self, now: u64, out: &mut Vec<Observation>) {
        for (i, (res, k)) in [
            ("memory", kind::MEMORY_PRESSURE),
            ("cpu", kind::CPU_PRESSURE),
            ("io", kind::IO_PRESSURE),
        ]
        .into_iter()
        .enumerate()
        {
            let path = format!("/proc/pressure/{res}");
            let Some(p) = self
                .sys
                .read(Path::new(&path))
                .ok()
                .as_deref()
                .and_then(parse_psi)
            else {
                continue;
            };
            if self.psi[i].step(p.some_avg10) {
                out.push(observation(
                    now,
                    k,
                    Source::Procfs,
                    None,
                    [
                        ("avg10", format!("{:.2}", p.some_avg10)),
                        ("avg60", format!("{:.2}", p.some_avg60)),
                        ("threshold", format!("{PSI_HIGH:.0}")),
                        ("scope", "system".to_owned()),
                    ],
                ));
            }
        }
    }
}

impl Poller for ProcfsPoller {
    fn poll(&mut self, now: u64, shared: &Shared, out: &mut Vec<Observation>) {
        if self.opts.tcp || self.opts.runq {
            for w in shared.snapshot(&*self.sys) {
                self.poll_container(now, &w, out);
            }
        }
        if self.opts.system_psi {
            self.poll_system_psi(now, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sys::fake::FakeSys;
    use super::super::{Shared, WatchedContainer};
    use super::*;
    use std::sync::Arc;

    fn snmp(retrans: u64, estab_resets: u64, out_rsts: u64) -> String {
        format!(
            "Ip: Forwarding DefaultTTL InReceives\nIp: 1 64 100\n\
             Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n\
             Tcp: 1 200 120000 -1 10 5 0 {estab_resets} 2 100 100 {retrans} 0 {out_rsts} 0\n\
             Udp: InDatagrams NoPorts\nUdp: 1 2\n"
        )
    }

    fn netstat(timeouts: u64) -> String {
        format!(
            "TcpExt: SyncookiesSent TW TCPTimeouts TCPLossProbes\nTcpExt: 0 181 {timeouts} 3\n\
             IpExt: InNoRoutes InOctets\nIpExt: 0 435125261\n"
        )
    }

    #[test]
    fn snmp_and_netstat_parse() {
        let t = parse_tcp(&snmp(3, 1, 4), Some(&netstat(9))).unwrap();
        assert_eq!(
            t,
            TcpCounters {
                retrans_segs: 3,
                estab_resets: 1,
                out_rsts: 4,
                timeouts: Some(9)
            }
        );
        assert_eq!(parse_pairs(&snmp(0, 0, 0), "Tcp")["MaxConn"], -1);
        assert_eq!(parse_tcp(&snmp(3, 1, 4), None).unwrap().timeouts, None);
        assert_eq!(parse_tcp("Ip: A\nIp: 1\n", None), None);
    }

    #[test]
    fn schedstat_and_psi_parse() {
        assert_eq!(
            parse_schedstat("151254 2553485 2\n"),
            Some((151254, 2553485, 2))
        );
        assert_eq!(parse_schedstat("1 2"), None);
        let p = parse_psi(
            "some avg10=4.09 avg60=4.53 avg300=9.58 total=74639108\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        assert_eq!(
            p,
            Psi {
                some_avg10: 4.09,
                some_avg60: 4.53
            }
        );
        let mut g = PsiGate::default();
        let fired: Vec<bool> = [1.0, 12.0, 30.0, 6.0, 11.0, 4.0, 10.0]
            .into_iter()
            .map(|a| g.step(a))
            .collect();
        assert_eq!(fired, [false, true, false, false, false, false, true]);
    }

    const ID: &str = "aa11";

    fn setup(sys: &FakeSys) -> Shared {
        sys.set(
            "/proc/self/mountinfo",
            "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        );
        sys.set("/proc/100/cgroup", "0::/docker/aa11\n");
        sys.set("/sys/fs/cgroup/docker/aa11/cgroup.procs", "100\n200\n");
        let shared = Shared::default();
        shared.watch(
            sys,
            WatchedContainer {
                role: "orders".into(),
                id: ID.into(),
                pid: 100,
            },
        );
        shared
    }

    fn opts() -> ProcfsOpts {
        ProcfsOpts {
            tcp: true,
            runq: true,
            system_psi: true,
        }
    }

    #[test]
    fn tcp_retransmits_resets_and_timeouts() {
        let sys = Arc::new(FakeSys::new());
        let shared = setup(&sys);
        sys.set("/proc/100/net/snmp", snmp(10, 0, 0));
        sys.set("/proc/100/net/netstat", netstat(1));
        let mut p = ProcfsPoller::new(
            sys.clone(),
            ProcfsOpts {
                runq: false,
                ..opts()
            },
        );
        let mut out = Vec::new();
        p.poll(0, &shared, &mut out);
        assert!(out.is_empty());
        sys.set("/proc/100/net/snmp", snmp(17, 1, 2));
        sys.set("/proc/100/net/netstat", netstat(3));
        p.poll(200_000_000, &shared, &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].kind, kind::TCP_RETRANSMIT);
        assert_eq!(out[0].source, Source::Procfs);
        assert_eq!(out[0].container.as_deref(), Some("orders"));
        assert_eq!(out[0].detail["count"], "7");
        assert_eq!(out[0].detail["timeouts"], "2");
        assert_eq!(out[1].kind, kind::TCP_RESET);
        assert_eq!(out[1].detail["estab_resets"], "1");
        assert_eq!(out[1].detail["out_rsts"], "2");
        p.poll(400_000_000, &shared, &mut out);
        assert_eq!(out.len(), 2, "unchanged counters, no events");
    }

    #[test]
    fn runq_delay_sums_every_task_of_every_process() {
        let sys = Arc::new(FakeSys::new());
        let shared = setup(&sys);
        sys.set("/proc/100/task/100/schedstat", "1000 1000000 10\n");
        sys.set("/proc/200/task/200/schedstat", "1000 2000000 10\n");
        sys.set("/proc/200/task/201/schedstat", "1000 0 1\n");
        let mut p = ProcfsPoller::new(
            sys.clone(),
            ProcfsOpts {
                tcp: false,
                ..opts()
            },
        );
        let mut out = Vec::new();
        p.poll(0, &shared, &mut out);
        sys.set("/proc/100/task/100/schedstat", "1000 1100000 12\n");
        p.poll(1_000_000_000, &shared, &mut out);
        assert!(out.is_empty(), "100 us of waiting is noise: {out:?}");
        sys.set("/proc/100/task/100/schedstat", "1000 41100000 20\n");
        sys.set("/proc/200/task/200/schedstat", "1000 12000000 15\n");
        sys.set("/proc/200/task/202/schedstat", "1000 500000 1\n"); // a new thread
        p.poll(1_500_000_000, &shared, &mut out);
        assert!(out.is_empty(), "summed per 1 s window: {out:?}");
        p.poll(2_000_000_000, &shared, &mut out);
        assert_eq!(out.len(), 1);
        let o = &out[0];
        assert_eq!(o.kind, kind::RUNQ_DELAY);
        assert_eq!(o.detail["wait_us"], "50500");
        assert_eq!(o.detail["max_task_wait_us"], "40000");
        assert_eq!(o.detail["tasks"], "3");
        assert_eq!(o.detail["timeslices"], "14");
        assert_eq!(o.detail["interval_ms"], "1000");
    }

    #[test]
    fn system_psi_is_marked_system_wide() {
        let sys = Arc::new(FakeSys::new());
        let shared = Shared::default();
        let mut p = ProcfsPoller::new(sys.clone(), opts());
        let psi = |a: &str| {
            format!(
                "some avg10={a} avg60=2.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
            )
        };
        sys.set("/proc/pressure/memory", psi("0.50"));
        let mut out = Vec::new();
        p.poll(0, &shared, &mut out);
        sys.set("/proc/pressure/memory", psi("22.00"));
        p.poll(1, &shared, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, kind::MEMORY_PRESSURE);
        assert_eq!(out[0].container, None);
        assert_eq!(out[0].detail["scope"], "system");
        assert_eq!(out[0].detail["avg10"], "22.00");
    }
}
