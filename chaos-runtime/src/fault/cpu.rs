//! `cpu_throttle`: a CFS bandwidth limit on the target, `cpus` CPUs' worth of time per period.
//!
//! Set with `update_container` (`cpu_period` + `cpu_quota`; Docker writes `cpu.cfs_quota_us` /
//! `cpu.cfs_period_us` on cgroup v1 and `cpu.max` on v2, live). A container created with
//! `--cpus` (`NanoCpus`) keeps that style, since Docker refuses to mix the two. The fault reads
//! the quota back from the cgroup and names the file that holds it.
//!
//! Heal: the quota goes back to what it was (`-1`, unlimited, for a container that had none).
use super::cgroup as cg;
use super::{FaultCx, FaultError, Healing, Injected};
use crate::spec::FaultSpec;
use std::sync::Arc;
use testcontainers::bollard::models::ContainerUpdateBody;
use testcontainers::bollard::query_parameters::InspectContainerOptions;

/// `cpus` when the test does not set one.
pub const DEFAULT_CPUS: f64 = 0.1;
/// The CFS period Docker uses when none is set, µs.
const DEFAULT_PERIOD_US: i64 = 100_000;
/// The kernel refuses quotas under 1 ms.
const MIN_QUOTA_US: i64 = 1_000;

/// The bandwidth settings of a container, as Docker holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bandwidth {
    pub nano_cpus: i64,
    pub period_us: i64,
    pub quota_us: i64,
}

/// The update that throttles to `cpus`: in the style the container already uses.
pub(crate) fn throttle(before: Bandwidth, cpus: f64) -> ContainerUpdateBody {
    if before.nano_cpus > 0 {
        return ContainerUpdateBody {
            nano_cpus: Some((cpus * 1e9).round().max(1e6) as i64),
            ..Default::default()
        };
    }
    let period = if before.period_us > 0 {
        before.period_us
    } else {
        DEFAULT_PERIOD_US
    };
    let quota = ((cpus * period as f64).round() as i64).max(MIN_QUOTA_US);
    ContainerUpdateBody {
        cpu_period: Some(period),
        cpu_quota: Some(quota),
        ..Default::default()
    }
}

/// The update that puts `before` back (`-1` = no quota: Docker treats 0 as "unchanged").
pub(crate) fn restore(before: Bandwidth) -> ContainerUpdateBody {
    if before.nano_cpus > 0 {
        return ContainerUpdateBody {
            nano_cpus: Some(before.nano_cpus),
            ..Default::default()
        };
    }
    ContainerUpdateBody {
        cpu_period: Some(if before.period_us > 0 {
            before.period_us
        } else {
            DEFAULT_PERIOD_US
        }),
        cpu_quota: Some(if before.quota_us > 0 {
            before.quota_us
        } else {
            -1
        }),
        ..Default::default()
    }
}

/// Injects `cpu_throttle`.
pub async fn inject(cx: &Arc<FaultCx>, spec: &FaultSpec) -> Result<Injected, FaultError> {
    let role = spec.target.to_string();
    let fault = format!("cpu_throttle {role}");
    let cpus = spec
        .param("cpus")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|c| *c > 0.0)
        .unwrap_or(DEFAULT_CPUS);
    let id = cx
        .stack
        .service(&role)
        .expect("macro validated the target")
        .id
        .clone();
    let docker = cx.stack.docker().clone();
    let err = |call: &str| FaultError::docker(&fault, call);
    let info = docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
        .map_err(err("inspect"))?;
    let hc = info.host_config.unwrap_or_default();
    let before = Bandwidth {
        nano_cpus: hc.nano_cpus.unwrap_or(0),
        period_us: hc.cpu_period.unwrap_or(0),
        quota_us: hc.cpu_quota.unwrap_or(0),
    };
    let pid = info.state.and_then(|s| s.pid).unwrap_or(0).max(0) as u32;
    let update = throttle(before, cpus);
    let wanted = update.cpu_quota.zip(update.cpu_period);
    docker
        .update_container(&id, update)
        .await
        .map_err(err("update (CPU quota)"))?;
    // In effect: Docker wrote the quota (read back from the cgroup below).
    super::in_effect();

    // Which file acted, read back from the container's cgroup on the engine's host.
    let sys = cx.observers.sys();
    let read_back = cg::of_pid(&*sys, pid)
        .ok()
        .and_then(|p| cg::controller_on_host(&*sys, &p, "cpu", "cpu"))
        .and_then(|f| {
            let (q, file) = cg::read_cpu_quota(&*sys, &f)?;
            Some((q, format!("{file}, {}", f.version())))
        });
    let what = match wanted {
        Some((q, p)) => format!("CFS quota {q} us per {p} us period"),
        None => format!("{cpus} CPUs (NanoCpus)"),
    };
    let via = match read_back {
        Some((q, file))
            if wanted.is_none_or(|(wq, wp)| {
                q.quota_us == Some(wq as u64) && q.period_us == wp as u64
            }) =>
        {
            file
        }
        Some((q, file)) => {
            let _ = docker.update_container(&id, restore(before)).await;
            return Err(FaultError::Other {
                fault,
                what: format!(
                    "update_container answered, but {file} shows {q:?}, not the quota asked for ({what})"
                ),
            });
        }
        None => "cgroup not readable from here".into(),
    };
    let mechanism = format!("{what} via update_container ({via})");
    let healing = Healing::new(move |cx, _| async move {
        cx.stack
            .docker()
            .update_container(&id, restore(before))
            .await
            .map_err(FaultError::docker(
                &format!("cpu_throttle {role}"),
                "update (restore the CPU quota)",
            ))
    });
    Ok(Injected { mechanism, healing })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Bandwidth = Bandwidth {
        nano_cpus: 0,
        period_us: 0,
        quota_us: 0,
    };

    #[test]
    fn quota_from_cpus_and_back_to_unlimited() {
        let t = throttle(NONE, 0.05);
        assert_eq!(
            (t.cpu_quota, t.cpu_period, t.nano_cpus),
            (Some(5_000), Some(100_000), None)
        );
        let r = restore(NONE);
        assert_eq!((r.cpu_quota, r.cpu_period), (Some(-1), Some(100_000)));
    }

    #[test]
    fn an_existing_period_and_quota_are_kept_and_restored() {
        let before = Bandwidth {
            nano_cpus: 0,
            period_us: 50_000,
            quota_us: 150_000,
        };
        let t = throttle(before, 0.5);
        assert_eq!((t.cpu_quota, t.cpu_period), (Some(25_000), Some(50_000)));
        let r = restore(before);
        assert_eq!((r.cpu_quota, r.cpu_period), (Some(150_000), Some(50_000)));
    }

    #[test]
    fn tiny_quotas_are_raised_to_the_kernel_minimum() {
        assert_eq!(throttle(NONE, 0.001).cpu_quota, Some(1_000));
    }

    #[test]
    fn nano_cpus_style_is_kept() {
        let before = Bandwidth {
            nano_cpus: 2_000_000_000,
            period_us: 0,
            quota_us: 0,
        };
        let t = throttle(before, 0.25);
        assert_eq!((t.nano_cpus, t.cpu_quota), (Some(250_000_000), None));
        assert_eq!(restore(before).nano_cpus, Some(2_000_000_000));
    }
}
