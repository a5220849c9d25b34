//! `memory_oom`: lower the target's memory limit and push it past it, so the kernel's
//! memory-cgroup OOM killer acts.
//!
//! The limit is lowered with `update_container` (memory and memory+swap, so swap cannot absorb
//! the push): Docker writes `memory.limit_in_bytes` / `memory.memsw.limit_in_bytes` on cgroup v1
//! and `memory.max` / `memory.swap.max` on v2; the fault reads the file back and names it.
//!
//! Then something in the container allocates and really touches its pages (no compiler in
//! the way), and the victim is chosen on purpose, not left to whichever process is biggest:
//!
//! | target | what allocates | the OOM killer's victim | what happens next |
//! |---|---|---|---|
//! | `postgres` | a backend of our own: `SELECT length(repeat('x', 2 × limit))` | that backend (`oom_score_adj` 1000) | the postmaster sees a child killed by SIGKILL, restarts every backend (crash recovery) and serves again by itself |
//! | any other | a hog exec'd in the container: `perl` growing a list of 1 MiB strings (`tail /dev/zero` without perl) | the service, the container's pid 1 (`oom_score_adj` 1000) | the container dies; heal restarts it |
//!
//! `oom_score_adj` 1000 adds the whole limit to the victim's badness, more than any other
//! process in the cgroup can have. (Making the hog unkillable with -1000 instead needs
//! CAP_SYS_RESOURCE, which `docker exec --privileged` cannot get on every host.)
//!
//! Heal: the limit goes back to what it was (a container that had none gets `i64::MAX`, which
//! the kernel clamps to "no limit": Docker can neither remove a limit nor pass -1 for memory),
//! the hog is stopped, and a container that died is started again and waited for.
use super::cgroup::{self as cg, human_bytes};
use super::{FaultCx, FaultError, Healing, Injected, container};
use crate::spec::FaultSpec;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testcontainers::bollard::models::ContainerUpdateBody;
use testcontainers::bollard::query_parameters::InspectContainerOptions;

/// `memory_limit` when the test does not set one.
pub const DEFAULT_LIMIT: u64 = 128 << 20;
/// The smallest limit Docker accepts.
const DOCKER_MIN: u64 = 6 << 20;
/// PostgreSQL allocates at most 1 GiB - 1 in one piece.
const PG_MAX_ALLOC: u64 = (1 << 30) - 1;
/// How long inject waits for the OOM kill before the fault just holds.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Where the exec'd hog writes its pid (inside the container).
const HOG_PID_FILE: &str = "/tmp/chaos-memhog.pid";

/// Injects `memory_oom`.
pub async fn inject(cx: &Arc<FaultCx>, spec: &FaultSpec) -> Result<Injected, FaultError> {
    let role = spec.target.to_string();
    let fault = format!("memory_oom {role}");
    let svc = cx.stack.service(&role).expect("macro validated the target");
    let id = svc.id.clone();
    let docker = cx.stack.docker().clone();
    let limit = spec
        .param("memory_limit_bytes")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_LIMIT);
    if limit < DOCKER_MIN {
        return Err(FaultError::Other {
            fault,
            what: format!(
                "memory_limit {} is below Docker's minimum of 6 MiB; use memory_limit = \"16MiB\" or more",
                human_bytes(limit)
            ),
        });
    }
    let docker_err = |call: &str| FaultError::docker(&fault, call);
    let info = docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
        .map_err(docker_err("inspect"))?;
    let hc = info.host_config.unwrap_or_default();
    let before = Limits {
        memory: hc.memory.unwrap_or(0),
        swap: hc.memory_swap.unwrap_or(0),
    };
    let pid = info.state.and_then(|s| s.pid).unwrap_or(0).max(0) as u32;

    docker
        .update_container(
            &id,
            ContainerUpdateBody {
                memory: Some(limit as i64),
                memory_swap: Some(limit as i64),
                ..Default::default()
            },
        )
        .await
        .map_err(|source| FaultError::Other {
            fault: fault.clone(),
            what: format!(
                "docker update --memory {} failed: {source}. Fix: a limit below what the target already uses \
                 cannot be set (cgroup v1 answers EBUSY); raise memory_limit",
                human_bytes(limit)
            ),
        })?;
    // In effect: the lowered limit is written (the push past it, and the kill, follow).
    super::in_effect();
    let restore = before.clone();
    let undo_limit = {
        let (docker, id, fault) = (docker.clone(), id.clone(), fault.clone());
        move || async move { restore_limit(&docker, &id, &fault, &restore).await }
    };
    let sys = cx.observers.sys();
    let file = match cg::of_pid(&*sys, pid)
        .ok()
        .and_then(|p| cg::controller_on_host(&*sys, &p, "memory", "memory"))
    {
        Some(f)
            if sys
                .read(&cg::memory_limit_file(&f))
                .ok()
                .as_deref()
                .and_then(cg::parse_limit)
                == Some(limit) =>
        {
            let name = cg::memory_limit_file(&f)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("{name}, {}", f.version())
        }
        _ => "not readable from here".to_string(),
    };
    let set = format!(
        "memory limit {} via update_container ({file})",
        human_bytes(limit)
    );

    let started = if let Some(pg) = cx.stack.postgres_config(&role) {
        backend_hog(cx, &id, &role, &pg, limit).await
    } else {
        process_hog(cx, &id, &role).await
    };
    let hog = match started {
        Ok(h) => h,
        Err(what) => {
            let _ = undo_limit().await;
            return Err(FaultError::Other { fault, what });
        }
    };
    let mechanism = format!("{set} + {}", hog.describe());
    hog.wait_for_kill(&docker, &id).await;
    let healing = Healing::new(move |cx, deadline| async move {
        let restored = undo_limit().await;
        // Undone: the limit is back (a container the OOM killer took is started next, and that
        // counts instead).
        super::in_effect();
        hog.stop(&cx).await;
        if !cg::state(cx.stack.docker(), &id)
            .await
            .map(|s| s.0)
            .unwrap_or(false)
        {
            container::restart(&cx, &role, deadline).await?;
        }
        restored
    });
    Ok(Injected { mechanism, healing })
}

#[derive(Clone, Debug)]
struct Limits {
    memory: i64,
    swap: i64,
}

async fn restore_limit(
    docker: &testcontainers::bollard::Docker,
    id: &str,
    fault: &str,
    before: &Limits,
) -> Result<(), FaultError> {
    // Docker cannot remove a limit, and ignores -1 for memory: i64::MAX is what the kernel
    // clamps to "no limit" (v1 reads back 9223372036854771712, v2 `max`).
    let memory = if before.memory > 0 {
        before.memory
    } else {
        i64::MAX
    };
    let swap = if before.swap > 0 {
        before.swap
    } else {
        i64::MAX
    };
    docker
        .update_container(
            id,
            ContainerUpdateBody {
                memory: Some(memory),
                memory_swap: Some(swap),
                ..Default::default()
            },
        )
        .await
        .map_err(FaultError::docker(
            fault,
            "update (restore the memory limit)",
        ))
}

/// What pushes the target past its limit.
enum Hog {
    /// A PostgreSQL backend of ours running a query that allocates `bytes`.
    Backend {
        bytes: u64,
        task: tokio::task::JoinHandle<Result<(), String>>,
    },
    /// A process exec'd in the container (`perl` or `tail`); the service (pid 1) is the victim.
    Process {
        id: String,
        program: &'static str,
        pid1_adj: String,
    },
}

impl Hog {
    fn describe(&self) -> String {
        match self {
            Hog::Backend { bytes, .. } => format!(
                "a PostgreSQL backend allocating {} (repeat()), oom_score_adj 1000: it is the victim, the postmaster restarts the rest",
                human_bytes(*bytes)
            ),
            Hog::Process { program, .. } => {
                format!(
                    "memory hog ({program}) exec'd in the container; victim: the service, pid 1 (oom_score_adj 1000)"
                )
            }
        }
    }

    /// Waits (bounded) until the OOM killer acted: the backend's query failed, or the container died.
    async fn wait_for_kill(&self, docker: &testcontainers::bollard::Docker, id: &str) -> bool {
        let until = Instant::now() + KILL_WAIT;
        while Instant::now() < until {
            let done = match self {
                Hog::Backend { task, .. } => task.is_finished(),
                Hog::Process { .. } => !cg::state(docker, id).await.map(|s| s.0).unwrap_or(true),
            };
            if done {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Stops whatever is still running of it.
    async fn stop(self, cx: &FaultCx) {
        match self {
            Hog::Backend { task, .. } => task.abort(),
            Hog::Process { id, pid1_adj, .. } => {
                let docker = cx.stack.docker();
                if cg::state(docker, &id).await.map(|s| s.0).unwrap_or(false) {
                    let script = format!(
                        "kill -9 $(cat {HOG_PID_FILE}) 2>/dev/null; rm -f {HOG_PID_FILE}; echo {} > /proc/1/oom_score_adj",
                        pid1_adj.trim()
                    );
                    let _ = cg::exec(docker, &id, "0", &["sh", "-c", &script]).await;
                }
            }
        }
    }
}

/// A backend of our own allocates twice the limit; `oom_score_adj` 1000 makes it the victim.
async fn backend_hog(
    cx: &Arc<FaultCx>,
    id: &str,
    role: &str,
    pg_config: &str,
    limit: u64,
) -> Result<Hog, String> {
    let (client, conn) = tokio_postgres::connect(pg_config, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL for the memory hog: {e}"))?;
    tokio::spawn(conn);
    client
        .simple_query("SET application_name = 'chaos-memhog'")
        .await
        .map_err(|e| format!("SET application_name: {e}"))?;
    let ns_pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(|e| format!("SELECT pg_backend_pid(): {e}"))?
        .get(0);
    let (code, out) = cg::exec(
        cx.stack.docker(),
        id,
        "0",
        &[
            "sh",
            "-c",
            &format!("echo 1000 > /proc/{ns_pid}/oom_score_adj"),
        ],
    )
    .await?;
    if code != 0 {
        return Err(format!(
            "cannot raise the backend's oom_score_adj (exit {code}): {}",
            out.trim()
        ));
    }
    let sys = cx.observers.sys();
    let host_pid = cg::state(cx.stack.docker(), id)
        .await
        .ok()
        .and_then(|(_, pid)| cg::of_pid(&*sys, pid).ok())
        .and_then(|p| p.procs_dir().map(|d| d.to_path_buf()))
        .and_then(|dir| cg::host_pid_of(&*sys, &dir, ns_pid as u32));
    let bytes = (limit * 2).min(PG_MAX_ALLOC);
    let sql = format!("SELECT length(repeat('x', {bytes}))");
    let task = tokio::spawn(async move {
        let r = client.simple_query(&sql).await;
        drop(client);
        r.map(|_| ()).map_err(|e| e.to_string())
    });
    let mut detail = vec![
        ("ns_pid", ns_pid.to_string()),
        ("bytes", bytes.to_string()),
        ("comm", "postgres".to_string()),
    ];
    if let Some(p) = host_pid {
        detail.push(("pid", p.to_string()));
    }
    cx.event("memory_hog_started", role, &detail);
    Ok(Hog::Backend { bytes, task })
}

/// A process in the container allocates without bound; the service (pid 1) is made the victim.
async fn process_hog(cx: &Arc<FaultCx>, id: &str, role: &str) -> Result<Hog, String> {
    let docker = cx.stack.docker();
    let (_, adj) = cg::exec(docker, id, "0", &["cat", "/proc/1/oom_score_adj"]).await?;
    let (code, out) = cg::exec(
        docker,
        id,
        "0",
        &["sh", "-c", "echo 1000 > /proc/1/oom_score_adj"],
    )
    .await?;
    if code != 0 {
        return Err(format!(
            "cannot raise the oom_score_adj of the service (pid 1, exit {code}): {}",
            out.trim()
        ));
    }
    let has_perl = cg::exec(docker, id, "0", &["sh", "-c", "command -v perl"])
        .await
        .is_ok_and(|(c, _)| c == 0);
    // `tail /dev/zero` keeps every byte while it looks for a newline that never comes.
    let (program, script) = if has_perl {
        (
            "perl",
            format!(
                "echo $$ > {HOG_PID_FILE} && exec perl -e '$0 = \"chaos-memhog\"; my @a; while (1) {{ push @a, \"x\" x 1048576 }}'"
            ),
        )
    } else {
        (
            "tail /dev/zero",
            format!("echo $$ > {HOG_PID_FILE} && exec tail /dev/zero"),
        )
    };
    cg::exec_detached(docker, id, "0", &["sh", "-c", &script]).await?;
    cx.event(
        "memory_hog_started",
        role,
        &[(
            "comm",
            if has_perl { "chaos-memhog" } else { "tail" }.to_string(),
        )],
    );
    Ok(Hog::Process {
        id: id.to_string(),
        program,
        pid1_adj: if adj.trim().is_empty() {
            "0".into()
        } else {
            adj
        },
    })
}
