//! `disk_full`: the filesystem of a directory inside the target, filled to the brim.
//!
//! The run's host agent creates a file in that directory, through the target's root as the
//! host sees it (`/proc/<pid>/root/<path>`), and writes zeros into it until the filesystem
//! answers ENOSPC; the heal removes the file. Meant for a size-limited volume
//! ([`crate::system::Wiring::sized_volume`]): a directory on a large disk would be filled up
//! to a bound of 4 GiB instead, and the fault says so.
use super::{FaultCx, FaultError, Healing, Injected};
use crate::spec::FaultSpec;
use chaos_agent::{Op, Reply};

/// The most a fill writes.
const MAX_FILL: u64 = 4 << 30;

/// The filler's path inside the target, for a directory and a run.
pub fn filler(dir: &str, run_id: &str) -> String {
    format!("{}/.chaos-disk-full-{run_id}", dir.trim_end_matches('/'))
}

/// Injects `disk_full`.
pub async fn inject(cx: &FaultCx, spec: &FaultSpec) -> Result<Injected, FaultError> {
    let fault = format!("disk_full {}", spec.target);
    let other = |what: String| FaultError::Other {
        fault: fault.clone(),
        what,
    };
    let dir = spec
        .param("path")
        .ok_or_else(|| other("no `path` to fill (path = \"/data\")".into()))?;
    let watched = cx.watched(&fault, spec.target).await?;
    if watched.pid == 0 {
        return Err(other("the target is not running".into()));
    }
    let agent = cx.agent(&fault, "fill the disk").await?;
    let inside = filler(dir, &cx.stack.run_id);
    let path = format!("/proc/{}/root{inside}", watched.pid);
    let written = match agent
        .call(Op::Fill {
            path: path.clone(),
            max_bytes: MAX_FILL,
        })
        .await
    {
        Ok(Reply::Count { n }) => n,
        Ok(r) => return Err(other(format!("the host agent answered fill with {r:?}"))),
        Err(what) => return Err(other(what)),
    };
    let full = written < MAX_FILL;
    cx.event(
        "disk_filled",
        spec.target,
        &[
            ("path", dir.to_string()),
            ("bytes", written.to_string()),
            ("full", full.to_string()),
        ],
    );
    if !full {
        let _ = agent.call(Op::Remove { path: path.clone() }).await;
        return Err(FaultError::Unsupported {
            fault,
            why: format!(
                "{dir} took {written} bytes without running out of space: it is not on a size-limited filesystem"
            ),
            fix: "mount a size-limited volume there (`Wiring::sized_volume`)".into(),
        });
    }
    let role = spec.target.to_string();
    Ok(Injected {
        mechanism: format!(
            "{written} bytes of zeros in {inside} by the run's host agent, until ENOSPC"
        ),
        healing: Healing::new(move |cx, deadline| async move {
            let fault = format!("heal disk_full {role}");
            match agent.call(Op::Remove { path }).await {
                Ok(_) => {}
                // The target restarted and its filesystem went with the file.
                Err(e) if e.contains("No such file") => {}
                Err(what) => return Err(FaultError::Other { fault, what }),
            }
            cx.event("disk_freed", &role, &[("bytes", written.to_string())]);
            cx.serving(&role, deadline, fault).await
        }),
    })
}
