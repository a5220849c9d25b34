//! Container lifecycle faults: kill (SIGKILL), stop (SIGTERM then SIGKILL), pause (freezer).
use super::{FaultCx, FaultError, Healing, Injected};
use crate::spec::FaultSpec;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use testcontainers::bollard::query_parameters::{
    KillContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The target's init process, held by a pidfd (readable once the process has exited), taken
/// before the run decides to kill or stop it. Docker's kill and stop return only after the
/// daemon has handled the exit (state, mounts, network: 250-300 ms on a loaded 2-core host
/// with fuse-overlayfs), well after the process is dead; the pidfd says when it died. A pidfd
/// names one process, never a recycled pid.
pub struct Init(AsyncFd<OwnedFd>);

impl Init {
    /// The init process of a running target; `None` where it has none, or where `pidfd_open`
    /// is refused (a kernel before 5.3, a pid from another pid namespace): then the return of
    /// the Docker call counts.
    pub async fn of(cx: &FaultCx, role: &str) -> Option<Init> {
        let w = cx.stack.watched(role).await.ok()?;
        // Opened first, then checked: the pidfd pins the process, so the check is of it.
        let init = Init::open(w.pid)?;
        crate::stack::pid_seen_here(w.pid, &w.id).then_some(init)
    }

    fn open(pid: u32) -> Option<Init> {
        if pid == 0 {
            return None;
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just returned to us and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the AsyncFd owns `fd`, which stays open until the AsyncFd is dropped.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .ok()
            .map(Init)
    }

    /// Whether the process has exited already (polled without waiting).
    fn exited_already(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.0.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) != 0 }
    }

    /// Marks the fault in effect when the process exits; never returns (raced against the
    /// Docker call, which ends the race).
    async fn mark_exit(&self) {
        if self.0.readable().await.is_ok() {
            super::in_effect();
        }
        std::future::pending::<()>().await
    }
}

/// Where a target's freeze shows, taken before the run decides to pause it: v1
/// `freezer.state` (`FROZEN`), v2 `cgroup.events` (`frozen 1`). Docker's pause returns after
/// runc has frozen the cgroup and containerd and the daemon have recorded it; the file says
/// when the processes stopped.
pub struct Freezer {
    file: std::path::PathBuf,
    v1: bool,
}

impl Freezer {
    /// The freezer of a running target; `None` where its cgroup is not readable from here.
    pub async fn of(cx: &FaultCx, role: &str) -> Option<Freezer> {
        let w = cx.stack.watched(role).await.ok()?;
        let pid = w.pid;
        if !crate::stack::pid_seen_here(pid, &w.id) {
            return None;
        }
        let paths = super::cgroup::of_pid(&crate::observe::sys::RealSys, pid).ok()?;
        let f = match (paths.v1.get("freezer"), &paths.v2) {
            (Some(h), _) => Freezer {
                file: h.dir.join("freezer.state"),
                v1: true,
            },
            (None, Some(h)) => Freezer {
                file: h.dir.join("cgroup.events"),
                v1: false,
            },
            (None, None) => return None,
        };
        // Readable, and not frozen already (then it would say nothing of this pause).
        let now = std::fs::read_to_string(&f.file).ok()?;
        (!frozen(f.v1, &now)).then_some(f)
    }

    /// Marks the fault in effect once the cgroup reads frozen (checked every millisecond);
    /// never returns (raced against the Docker call, which ends the race).
    async fn mark_frozen(&self) {
        loop {
            if std::fs::read_to_string(&self.file).is_ok_and(|s| frozen(self.v1, &s)) {
                super::in_effect();
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        std::future::pending::<()>().await
    }
}

/// Whether a freezer file's text says frozen: v1 `freezer.state` is `FROZEN` (not `FREEZING`),
/// v2 `cgroup.events` has the line `frozen 1`.
fn frozen(v1: bool, text: &str) -> bool {
    if v1 {
        text.trim() == "FROZEN"
    } else {
        text.lines().any(|l| l.trim() == "frozen 1")
    }
}

/// Runs a Docker call that kills the target, marking the fault in effect when its init exits.
async fn killing<T>(init: Option<Init>, call: impl Future<Output = T>) -> T {
    // A process that exited already (the target restarted since) says nothing of this call.
    match init.filter(|i| !i.exited_already()) {
        Some(init) => tokio::select! {
            r = call => r,
            () = init.mark_exit() => unreachable!("mark_exit never returns"),
        },
        None => call.await,
    }
}

/// What a container fault takes before the decision, to see its effect: the init process of a
/// target to kill or stop, the freezer of one to pause.
pub enum Watch {
    /// See [`Init`].
    Exit(Option<Init>),
    /// See [`Freezer`].
    Freeze(Option<Freezer>),
}

impl Watch {
    /// What to watch for `spec`'s kind.
    pub async fn of(cx: &FaultCx, spec: &FaultSpec) -> Watch {
        match spec.kind {
            "pause" => Watch::Freeze(Freezer::of(cx, spec.target).await),
            _ => Watch::Exit(Init::of(cx, spec.target).await),
        }
    }
}

/// Injects kill, stop or pause; `watch` taken before the decision.
pub async fn inject_prepared(
    cx: &FaultCx,
    spec: &FaultSpec,
    watch: Watch,
) -> Result<Injected, FaultError> {
    let (init, freezer) = match watch {
        Watch::Exit(i) => (i, None),
        Watch::Freeze(f) => (None, f),
    };
    let svc = cx
        .stack
        .service(spec.target)
        .expect("macro validated the target");
    let docker = cx.stack.docker();
    let fault = format!("{} {}", spec.kind, spec.target);
    let err = |call: &str| FaultError::docker(&fault, call);
    match spec.kind {
        "kill" => {
            killing(
                init,
                docker.kill_container(
                    &svc.id,
                    Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
                ),
            )
            .await
            .map_err(err("kill -s KILL"))?;
            Ok(Injected {
                mechanism: "docker kill -s KILL".into(),
                healing: restart_healing(spec.target),
            })
        }
        "stop" => {
            killing(
                init,
                docker.stop_container(
                    &svc.id,
                    Some(StopContainerOptionsBuilder::new().t(5).build()),
                ),
            )
            .await
            .map_err(err("stop"))?;
            Ok(Injected {
                mechanism: "docker stop".into(),
                healing: restart_healing(spec.target),
            })
        }
        "pause" => {
            let pause = docker.pause_container(&svc.id);
            match &freezer {
                Some(f) => tokio::select! {
                    r = pause => r,
                    () = f.mark_frozen() => unreachable!("mark_frozen never returns"),
                },
                None => pause.await,
            }
            .map_err(err("pause"))?;
            Ok(Injected {
                mechanism: "docker pause (cgroup freezer)".into(),
                healing: {
                    let role = spec.target.to_string();
                    Healing::new(move |cx, _| async move { unpause(&cx, &role).await })
                },
            })
        }
        other => unreachable!("container fault {other}"),
    }
}

/// Heals a dead container: start it, re-point the observers, wait until it serves.
pub fn restart_healing(role: &str) -> Healing {
    let role = role.to_string();
    Healing::new(move |cx, deadline| async move { restart(&cx, &role, deadline).await })
}

/// Starts a dead container again, re-points the observers and waits until it serves.
pub async fn restart(cx: &FaultCx, role: &str, deadline: Duration) -> Result<(), FaultError> {
    let fault = format!("restart {role}");
    cx.stack
        .start_service(role)
        .await
        .map_err(|source| FaultError::Stack {
            fault: fault.clone(),
            source,
        })?;
    // Undone: the container runs again (serving again is recovery, measured by the run).
    super::in_effect();
    cx.rewatch(role).await;
    cx.event("container_restarted", role, &[]);
    cx.serving(role, deadline, fault).await
}

/// Unpauses a frozen container.
pub async fn unpause(cx: &FaultCx, role: &str) -> Result<(), FaultError> {
    let svc = cx.stack.service(role).expect("role exists");
    cx.stack
        .docker()
        .unpause_container(&svc.id)
        .await
        .map_err(FaultError::docker(&format!("unpause {role}"), "unpause"))
}

#[cfg(test)]
mod tests {
    use super::{Init, killing};

    #[tokio::test]
    async fn a_kill_is_in_effect_when_the_process_exits_not_when_the_call_returns() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let init = Init::open(child.id()).expect("pidfd_open works on this kernel");
        assert!(!init.exited_already());
        let call = async {
            let _ = child.kill();
            let _ = child.wait();
            // The call goes on after the death (as Docker's does) until the exit is marked.
            while super::super::IN_EFFECT.with(|c| c.get()).is_none() {
                tokio::task::yield_now().await;
            }
            crate::clock::mono_ns()
        };
        let (returned, at) = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            super::super::timed(killing(Some(init), call)),
        )
        .await
        .expect("the exit was seen");
        assert!(at <= returned, "the exit counts, not the return");
    }

    #[test]
    fn freezer_files_read_frozen_only_when_frozen() {
        assert!(super::frozen(true, "FROZEN\n"));
        assert!(!super::frozen(true, "FREEZING\n"));
        assert!(!super::frozen(true, "THAWED\n"));
        assert!(super::frozen(false, "populated 1\nfrozen 1\n"));
        assert!(!super::frozen(false, "populated 1\nfrozen 0\n"));
    }

    #[tokio::test]
    async fn a_process_gone_before_the_call_is_not_taken_for_its_death() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("true runs");
        let init = Init::open(child.id()).expect("pidfd_open works on this kernel");
        let _ = child.wait();
        assert!(init.exited_already());
        let (returned, at) =
            super::super::timed(killing(Some(init), async { crate::clock::mono_ns() })).await;
        assert!(at >= returned, "unmarked: the return counts");
        assert!(Init::open(0).is_none());
    }
}
