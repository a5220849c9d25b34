//! The kernel log (`Source::Kmsg`): OOM kills with the victim's pid and comm.
//!
//! /dev/kmsg is opened non-blocking and positioned at its end, then drained every 50 ms. A
//! memcg OOM kill logs two records:
//!
//! ```text
//! 6,2301,912345678,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/docker/<id>,task_memcg=/docker/<id>,task=postgres,pid=4242,uid=999
//! 3,2302,912345702,-;Memory cgroup out of memory: Killed process 4242 (postgres) total-vm:...
//! ```
//!
//! The victim is attributed through the `task_memcg` of the `oom-kill:` record (the kernel's
//! own word, and the victim is usually gone by the time we could read its /proc entry); kernels
//! older than 4.19 do not log it, and then `/proc/<pid>/cgroup` is read. The third field of a
//! record is CLOCK_MONOTONIC µs, the clock of every observation.

use super::cgroup::memcg_of;
use super::sys::{KmsgReader, Sys};
use super::{Observation, Poller, Shared, Source, Watched, kind, observation};
use std::path::Path;

/// An OOM kill the kernel log named, kept for the cgroup source to enrich its counter events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KmsgOom {
    pub container_id: String,
    pub pid: u32,
    pub comm: String,
    pub at_ns: u64,
    /// Taken by a cgroup OOM event.
    pub claimed: bool,
}

/// A record: (CLOCK_MONOTONIC µs, message without the continuation lines).
pub(crate) fn parse_record(s: &str) -> Option<(u64, &str)> {
    let (prefix, msg) = s.split_once(';')?;
    let ts = prefix.split(',').nth(2)?.parse().ok()?;
    Some((ts, msg.split('\n').next().unwrap_or("")))
}

/// The `oom-kill:` summary record (Linux 4.19+).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct OomKillLine {
    pub constraint: String,
    pub oom_memcg: Option<String>,
    pub task_memcg: Option<String>,
    pub task: String,
    pub pid: u32,
}

pub(crate) fn parse_oom_kill_line(msg: &str) -> Option<OomKillLine> {
    let rest = msg.strip_prefix("oom-kill:")?;
    let mut l = OomKillLine::default();
    // `mems_allowed=0,2` has commas of its own; parts without `=` are skipped.
    for part in rest.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        match k {
            "constraint" => l.constraint = v.to_owned(),
            "oom_memcg" => l.oom_memcg = Some(v.to_owned()),
            "task_memcg" => l.task_memcg = Some(v.to_owned()),
            "task" => l.task = v.to_owned(),
            "pid" => l.pid = v.parse().ok()?,
            _ => {}
        }
    }
    (l.pid != 0).then_some(l)
}

/// A `Killed process <pid> (<comm>)` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Killed {
    pub pid: u32,
    pub comm: String,
    /// "Memory cgroup out of memory" rather than the global "Out of memory".
    pub memcg: bool,
}

pub(crate) fn parse_killed(msg: &str) -> Option<Killed> {
    // "Killed process" since 5.1-ish; "Kill process .. score .. or sacrifice child" before.
    let (before, rest) = msg
        .split_once("Killed process ")
        .or_else(|| msg.split_once("Kill process "))?;
    let (pid, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('(')?;
    // comm may contain ')' itself: prefer the delimiter that follows it in both formats.
    let end = [") total-vm", ") score", ", UID", ")"]
        .iter()
        .find_map(|d| rest.find(d))?;
    Some(Killed {
        pid: pid.parse().ok()?,
        comm: rest[..end].to_owned(),
        memcg: before.contains("Memory cgroup"),
    })
}

/// Whether the memory cgroup `memcg` (as the kernel prints it) belongs to the container.
pub(crate) fn memcg_matches(w: &Watched, memcg: &str) -> bool {
    if let Some(rel) = w.cg.as_ref().and_then(|c| c.memcg()).filter(|r| *r != "/")
        && (memcg == rel || memcg.strip_prefix(rel).is_some_and(|r| r.starts_with('/')))
    {
        return true;
    }
    // Both Docker drivers put the full id in the path (`/docker/<id>`, `docker-<id>.scope`).
    w.c.id.len() >= 12
        && w.c.id.bytes().all(|b| b.is_ascii_hexdigit())
        && memcg.contains(w.c.id.as_str())
}

/// Drains /dev/kmsg.
pub(crate) struct KmsgPoller {
    sys: std::sync::Arc<dyn Sys>,
    reader: Box<dyn KmsgReader>,
    last_summary: Option<(u64, OomKillLine)>,
    /// Why reading stopped, once it did (reported once).
    failed: bool,
}

impl KmsgPoller {
    pub(crate) fn open(sys: std::sync::Arc<dyn Sys>) -> std::io::Result<Self> {
        let reader = sys.open_kmsg()?;
        Ok(Self {
            sys,
            reader,
            last_summary: None,
            failed: false,
        })
    }

    fn handle(
        &mut self,
        now: u64,
        record: &str,
        watched: &[Watched],
        shared: &Shared,
        out: &mut Vec<Observation>,
    ) {
        let Some((ts_us, msg)) = parse_record(record) else {
            return;
        };
        let at_ns = ts_us.saturating_mul(1000).min(now);
        if let Some(l) = parse_oom_kill_line(msg) {
            self.last_summary = Some((ts_us, l));
            return;
        }
        let Some(k) = parse_killed(msg) else { return };
        // The summary belongs to this kill when it names the same pid and came just before it.
        let summary = self
            .last_summary
            .take()
            .filter(|(t, l)| l.pid == k.pid && ts_us.saturating_sub(*t) < 5_000_000)
            .map(|(_, l)| l);
        let (memcg, via) = match summary
            .as_ref()
            .and_then(|l| l.task_memcg.clone().or(l.oom_memcg.clone()))
        {
            Some(m) => (Some(m), "oom-kill record"),
            None => (
                self.sys
                    .read(Path::new(&format!("/proc/{}/cgroup", k.pid)))
                    .ok()
                    .as_deref()
                    .and_then(memcg_of),
                "/proc/<pid>/cgroup",
            ),
        };
        let Some(memcg) = memcg else { return };
        let Some(w) = watched.iter().find(|w| memcg_matches(w, &memcg)) else {
            return;
        };
        let mut detail = vec![
            ("pid", k.pid.to_string()),
            ("comm", k.comm.clone()),
            ("memcg", memcg.clone()),
            ("attributed_by", via.to_owned()),
            ("scope", if k.memcg { "memcg" } else { "global" }.to_owned()),
        ];
        if let Some(l) = &summary {
            detail.push(("constraint", l.constraint.clone()));
        }
        out.push(observation(
            at_ns,
            kind::OOM_KILL,
            Source::Kmsg,
            Some(&w.c.role),
            detail,
        ));
        shared
            .kmsg_ooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(KmsgOom {
                container_id: w.c.id.clone(),
                pid: k.pid,
                comm: k.comm,
                at_ns,
                claimed: false,
            });
    }
}

impl Poller for KmsgPoller {
    fn poll(&mut self, now: u64, shared: &Shared, out: &mut Vec<Observation>) {
        if self.failed {
            return;
        }
        let mut watched = None;
        loop {
            match self.reader.read_record() {
                Ok(Some(r)) => {
                    // Cheap pre-filter: most records are not about the OOM killer.
                    if !(r.contains("oom-kill:") || r.contains("Kill")) {
                        continue;
                    }
                    let w = watched.get_or_insert_with(|| shared.snapshot(&*self.sys));
                    self.handle(now, &r, w, shared, out);
                }
                Ok(None) => break,
                Err(_) => {
                    self.failed = true;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sys::fake::FakeSys;
    use super::super::{Shared, WatchedContainer};
    use super::*;
    use std::sync::Arc;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn records_parse() {
        assert_eq!(
            parse_record("6,1234,5678901234,-;hello\n SUBSYSTEM=x\n"),
            Some((5678901234, "hello"))
        );
        assert_eq!(
            parse_record("6,1234,5678901234,-,caller=T12;hi"),
            Some((5678901234, "hi"))
        );
        assert_eq!(parse_record("garbage"), None);

        let l = parse_oom_kill_line(&format!(
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,2,\
             oom_memcg=/docker/{ID},task_memcg=/docker/{ID},task=postgres,pid=4242,uid=999"
        ))
        .unwrap();
        assert_eq!(l.constraint, "CONSTRAINT_MEMCG");
        assert_eq!(
            l.task_memcg.as_deref(),
            Some(format!("/docker/{ID}").as_str())
        );
        assert_eq!((l.task.as_str(), l.pid), ("postgres", 4242));

        let k = parse_killed(
            "Memory cgroup out of memory: Killed process 4242 (postgres) total-vm:215304kB, \
             anon-rss:30464kB, file-rss:0kB, shmem-rss:0kB, UID:999 pgtables:120kB oom_score_adj:0",
        )
        .unwrap();
        assert_eq!(
            k,
            Killed {
                pid: 4242,
                comm: "postgres".into(),
                memcg: true
            }
        );
        let k = parse_killed(
            "Out of memory: Killed process 77 (my (odd) prog) total-vm:1kB, anon-rss:1kB",
        )
        .unwrap();
        assert_eq!(
            (k.pid, k.comm.as_str(), k.memcg),
            (77, "my (odd) prog", false)
        );
        // Pre-5.x wording.
        let k = parse_killed(
            "Memory cgroup out of memory: Kill process 9 (java) score 1000 or sacrifice child",
        )
        .unwrap();
        assert_eq!((k.pid, k.comm.as_str()), (9, "java"));
        assert_eq!(
            parse_killed("oom_reaper: reaped process 4242 (postgres), now anon-rss:0kB"),
            None
        );
    }

    fn setup(sys: &FakeSys) -> Shared {
        sys.set(
            "/proc/self/mountinfo",
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        );
        sys.set("/proc/10/cgroup", format!("4:memory:/docker/{ID}\n"));
        sys.set("/proc/20/cgroup", "4:memory:/chaos-fallback-test-1\n");
        let shared = Shared::default();
        shared.watch(
            sys,
            WatchedContainer {
                role: "postgres".into(),
                id: ID.into(),
                pid: 10,
            },
        );
        shared.watch(
            sys,
            WatchedContainer {
                role: "hog".into(),
                id: "chaos-fallback-test-1".into(),
                pid: 20,
            },
        );
        shared
    }

    #[test]
    fn memcg_oom_is_attributed_by_the_summary_record() {
        let sys = Arc::new(FakeSys::new());
        let shared = setup(&sys);
        let mut p = KmsgPoller::open(sys.clone()).unwrap();
        sys.push_kmsg(
            "4,100,900000000,-;postgres invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0",
        );
        sys.push_kmsg(format!(
            "6,101,900000100,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,\
             oom_memcg=/docker/{ID},task_memcg=/docker/{ID},task=postgres,pid=4242,uid=999"
        ));
        sys.push_kmsg(
            "3,102,900000120,-;Memory cgroup out of memory: Killed process 4242 (postgres) total-vm:1kB, anon-rss:1kB",
        );
        let mut out = Vec::new();
        p.poll(2_000_000_000_000, &shared, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        let o = &out[0];
        assert_eq!(
            (o.kind.as_str(), o.source, o.container.as_deref()),
            (kind::OOM_KILL, Source::Kmsg, Some("postgres"))
        );
        assert_eq!(o.at_ns, 900_000_120_000);
        assert_eq!(o.detail["pid"], "4242");
        assert_eq!(o.detail["comm"], "postgres");
        assert_eq!(o.detail["attributed_by"], "oom-kill record");
        assert_eq!(o.detail["constraint"], "CONSTRAINT_MEMCG");
        let reg = shared.kmsg_ooms.lock().unwrap();
        assert_eq!(reg.len(), 1);
        assert_eq!((reg[0].container_id.as_str(), reg[0].pid), (ID, 4242));
    }

    #[test]
    fn without_summary_the_pid_cgroup_is_read() {
        let sys = Arc::new(FakeSys::new());
        let shared = setup(&sys);
        sys.set(
            "/proc/555/cgroup",
            "4:memory:/chaos-fallback-test-1\n0::/\n",
        );
        let mut p = KmsgPoller::open(sys.clone()).unwrap();
        sys.push_kmsg(
            "3,7,1000,-;Memory cgroup out of memory: Killed process 555 (python3) total-vm:1kB",
        );
        let mut out = Vec::new();
        p.poll(5_000_000, &shared, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].container.as_deref(), Some("hog"));
        assert_eq!(out[0].detail["attributed_by"], "/proc/<pid>/cgroup");
        assert_eq!(out[0].at_ns, 1_000_000);
    }

    #[test]
    fn other_cgroups_and_vanished_pids_are_ignored() {
        let sys = Arc::new(FakeSys::new());
        let shared = setup(&sys);
        let mut p = KmsgPoller::open(sys.clone()).unwrap();
        // Someone else's container (a parallel test), named by the summary record.
        sys.push_kmsg(
            "6,1,1,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/docker/ffff,task_memcg=/docker/ffff,task=x,pid=9,uid=0",
        );
        sys.push_kmsg("3,2,2,-;Memory cgroup out of memory: Killed process 9 (x) total-vm:1kB");
        // A victim with no summary and no /proc entry left.
        sys.push_kmsg("3,3,3,-;Out of memory: Killed process 31337 (gone) total-vm:1kB");
        // A prefix of a watched cgroup path is not a match.
        sys.push_kmsg(
            "6,4,4,-;oom-kill:constraint=CONSTRAINT_MEMCG,task_memcg=/chaos-fallback-test-10,task=y,pid=11,uid=0",
        );
        sys.push_kmsg("3,5,5,-;Memory cgroup out of memory: Killed process 11 (y) total-vm:1kB");
        let mut out = Vec::new();
        p.poll(1_000_000_000, &shared, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn memcg_matching() {
        let sys = FakeSys::new();
        let shared = setup(&sys);
        let w = shared.snapshot(&sys);
        let pg = w.iter().find(|w| w.c.role == "postgres").unwrap();
        assert!(memcg_matches(pg, &format!("/docker/{ID}")));
        assert!(memcg_matches(pg, &format!("/docker/{ID}/child")));
        assert!(memcg_matches(
            pg,
            &format!("/system.slice/docker-{ID}.scope")
        ));
        assert!(!memcg_matches(pg, "/docker/0123"));
    }
}
