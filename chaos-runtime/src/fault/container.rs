//! Container lifecycle faults: kill (SIGKILL), stop (SIGTERM then SIGKILL), pause (freezer).
use super::{FaultCx, FaultError, Healing, Injected};
use crate::spec::FaultSpec;
use std::time::Duration;
use testcontainers::bollard::query_parameters::{
    KillContainerOptionsBuilder, StopContainerOptionsBuilder,
};

/// Injects kill, stop or pause.
pub async fn inject(cx: &FaultCx, spec: &FaultSpec) -> Result<Injected, FaultError> {
    let svc = cx
        .stack
        .service(spec.target)
        .expect("macro validated the target");
    let docker = cx.stack.docker();
    let fault = format!("{} {}", spec.kind, spec.target);
    let err = |call: &str| FaultError::docker(&fault, call);
    match spec.kind {
        "kill" => {
            docker
                .kill_container(
                    &svc.id,
                    Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()),
                )
                .await
                .map_err(err("kill -s KILL"))?;
            Ok(Injected {
                mechanism: "docker kill -s KILL".into(),
                healing: restart_healing(spec.target),
            })
        }
        "stop" => {
            docker
                .stop_container(
                    &svc.id,
                    Some(StopContainerOptionsBuilder::new().t(5).build()),
                )
                .await
                .map_err(err("stop"))?;
            Ok(Injected {
                mechanism: "docker stop".into(),
                healing: restart_healing(spec.target),
            })
        }
        "pause" => {
            docker
                .pause_container(&svc.id)
                .await
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
