//! Container lifecycle faults: kill (SIGKILL), stop (SIGTERM then SIGKILL), pause (freezer).
use super::{FaultCx, FaultError, Healing, Injected};
use crate::spec::FaultSpec;
use std::time::Duration;
use testcontainers::bollard::query_parameters::{KillContainerOptionsBuilder, StopContainerOptionsBuilder};

pub(super) async fn inject(cx: &FaultCx, spec: &FaultSpec) -> Result<Injected, FaultError> {
    let svc = cx.stack.service(spec.target).expect("macro validated the target");
    let docker = cx.stack.docker();
    let err = |call: &str| {
        let fault = format!("{} {}", spec.kind, spec.target);
        let call = call.to_string();
        move |source| FaultError::Docker { fault, call, source }
    };
    match spec.kind {
        "kill" => {
            docker
                .kill_container(&svc.id, Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()))
                .await
                .map_err(err("kill -s KILL"))?;
            Ok(Injected {
                mechanism: "docker kill -s KILL".into(),
                healing: Healing::Restart { role: spec.target.into() },
            })
        }
        "stop" => {
            docker
                .stop_container(&svc.id, Some(StopContainerOptionsBuilder::new().t(5).build()))
                .await
                .map_err(err("stop"))?;
            Ok(Injected { mechanism: "docker stop".into(), healing: Healing::Restart { role: spec.target.into() } })
        }
        "pause" => {
            docker.pause_container(&svc.id).await.map_err(err("pause"))?;
            Ok(Injected {
                mechanism: "docker pause (cgroup freezer)".into(),
                healing: Healing::Unpause { role: spec.target.into() },
            })
        }
        other => unreachable!("container fault {other}"),
    }
}

pub(super) async fn restart(cx: &FaultCx, role: &str, deadline: Duration) -> Result<(), FaultError> {
    let fault = format!("restart {role}");
    cx.stack.start_service(role).await.map_err(|source| FaultError::Stack { fault: fault.clone(), source })?;
    cx.rewatch(role).await;
    cx.event("container_restarted", role, &[]);
    cx.stack.wait_ready(role, deadline).await.map_err(|source| FaultError::Stack { fault, source })?;
    cx.event("service_ready", role, &[]);
    Ok(())
}

pub(super) async fn unpause(cx: &FaultCx, role: &str) -> Result<(), FaultError> {
    let svc = cx.stack.service(role).expect("role exists");
    cx.stack.docker().unpause_container(&svc.id).await.map_err(|source| FaultError::Docker {
        fault: format!("unpause {role}"),
        call: "unpause".into(),
        source,
    })
}
