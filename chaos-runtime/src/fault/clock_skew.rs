//! `clock_skew`: the target's wall clock moves by `offset`, then back at heal.
//!
//! Linux has no per-container wall clock (a time namespace offsets only the monotonic and
//! boot clocks), so the target's processes read their time through libfaketime (Debian's
//! `libfaketime`, in the base image), preloaded with a clock file they re-read on every call:
//! [`crate::system::Wiring::skewable_clock_env`]. The fault writes the offset into that file
//! through the run's host agent (`/proc/<pid>/root/...`), and the heal writes `+0` back. The
//! target's clock is read before and after each change by a process started in the container
//! (`docker exec date`, which inherits the preload), so the skew is measured, not assumed. The
//! monotonic clock is left alone: timeouts and intervals are not what a wall-clock skew is.
use super::cgroup::exec;
use super::{FaultCx, FaultError, Healing, Injected};
use crate::spec::FaultSpec;
use crate::system::FAKETIME_FILE;
use chaos_agent::{Op, Reply};
use std::sync::Arc;

/// The clock file's content for an offset in ms (libfaketime: `+N`/`-N` seconds, fractions
/// allowed).
pub fn faketime_line(offset_ms: i64) -> String {
    let sign = if offset_ms < 0 { '-' } else { '+' };
    let ms = offset_ms.unsigned_abs();
    format!("{sign}{}.{:03}\n", ms / 1000, ms % 1000)
}

/// The target's wall clock minus this process's, in ms, read by a fresh process inside it.
async fn offset_of(cx: &FaultCx, id: &str) -> Result<i64, String> {
    let here = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    let before = here();
    let (code, out) = exec(cx.stack.docker(), id, "root", &["date", "+%s%3N"]).await?;
    let after = here();
    if code != 0 {
        return Err(format!(
            "`date` in the target exited {code}: {}",
            out.trim()
        ));
    }
    let there: i64 = out
        .trim()
        .parse()
        .map_err(|_| format!("`date` in the target printed {:?}", out.trim()))?;
    Ok(there - (before + after) / 2)
}

/// Writes the clock file of the target through the agent.
async fn set(agent: &Arc<crate::agent::Agent>, pid: u32, offset_ms: i64) -> Result<(), String> {
    match agent
        .call(Op::Write {
            path: format!("/proc/{pid}/root{FAKETIME_FILE}"),
            data: faketime_line(offset_ms),
        })
        .await?
    {
        Reply::Done => Ok(()),
        other => Err(format!("the host agent answered write with {other:?}")),
    }
}

/// The target's clock before the fault, read before the run decides to inject it (a process
/// started in the container, ~10-50 ms, is no part of moving its clock).
pub struct Before {
    offset_ms: i64,
}

/// Checks that the target reads a clock the fault can move and reads that clock.
pub async fn prepare(cx: &FaultCx, spec: &FaultSpec) -> Result<Before, FaultError> {
    let fault = format!("clock_skew {}", spec.target);
    let (id, inspect) = inspect(cx, spec, &fault).await?;
    let env = inspect
        .config
        .and_then(|c| c.env)
        .unwrap_or_default()
        .join(" ");
    if !env.contains("libfaketime") || !env.contains(FAKETIME_FILE) {
        return Err(FaultError::Unsupported {
            fault,
            why: format!(
                "{}'s processes do not read a clock the fault can move (no libfaketime preload with {FAKETIME_FILE})",
                spec.target
            ),
            fix: "start the service with `Wiring::skewable_clock_env()` and the clock file (see its docs), from an image with libfaketime (the base image has it)".into(),
        });
    }
    let offset_ms = offset_of(cx, &id)
        .await
        .map_err(|what| FaultError::Other { fault, what })?;
    Ok(Before { offset_ms })
}

async fn inspect(
    cx: &FaultCx,
    spec: &FaultSpec,
    fault: &str,
) -> Result<
    (
        String,
        testcontainers::bollard::models::ContainerInspectResponse,
    ),
    FaultError,
> {
    let id = cx
        .stack
        .service(spec.target)
        .expect("macro validated the target")
        .id
        .clone();
    let inspect = cx
        .stack
        .docker()
        .inspect_container(&id, None)
        .await
        .map_err(FaultError::docker(fault, "inspect"))?;
    Ok((id, inspect))
}

/// Injects `clock_skew` with the clock read before the decision.
pub async fn inject_prepared(
    cx: &FaultCx,
    spec: &FaultSpec,
    before: Before,
) -> Result<Injected, FaultError> {
    let fault = format!("clock_skew {}", spec.target);
    let other = |what: String| FaultError::Other {
        fault: fault.clone(),
        what,
    };
    let offset_ms: i64 = spec
        .param("offset_ms")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| other("no `offset` (offset = \"+60m\")".into()))?;
    let (id, inspect) = inspect(cx, spec, &fault).await?;
    let pid = inspect.state.and_then(|s| s.pid).unwrap_or(0) as u32;
    let agent = cx.agent(&fault, "write the clock file").await?;
    let before = before.offset_ms;
    set(&agent, pid, offset_ms).await.map_err(&other)?;
    // In effect: the processes read the file on every clock call (FAKETIME_NO_CACHE).
    super::in_effect();
    let during = offset_of(cx, &id).await.map_err(&other)?;
    let measured = during - before;
    cx.event(
        "clock_skewed",
        spec.target,
        &[
            ("asked_ms", offset_ms.to_string()),
            ("measured_ms", measured.to_string()),
        ],
    );
    // A clock file the processes do not read would leave the clock where it was.
    if (measured - offset_ms).abs() > 2_000 {
        let _ = set(&agent, pid, 0).await;
        return Err(other(format!(
            "the target's clock moved {measured} ms, not {offset_ms} ms: its processes do not \
             read {FAKETIME_FILE}"
        )));
    }
    let role = spec.target.to_string();
    Ok(Injected {
        mechanism: format!(
            "libfaketime clock file {FAKETIME_FILE} = {} (written by the run's host agent)",
            faketime_line(offset_ms).trim()
        ),
        healing: Healing::new(move |cx, deadline| async move {
            let fault = format!("heal clock_skew {role}");
            set(&agent, pid, 0)
                .await
                .map_err(|what| FaultError::Other {
                    fault: fault.clone(),
                    what,
                })?;
            super::in_effect();
            let left = offset_of(&cx, &id).await.unwrap_or(i64::MAX) - before;
            cx.event("clock_restored", &role, &[("left_ms", left.to_string())]);
            cx.serving(&role, deadline, fault).await
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::faketime_line;

    #[test]
    fn offsets_become_libfaketime_seconds() {
        assert_eq!(faketime_line(3_600_000), "+3600.000\n");
        assert_eq!(faketime_line(-1_500), "-1.500\n");
        assert_eq!(faketime_line(0), "+0.000\n");
    }
}
