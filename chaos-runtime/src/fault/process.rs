//! Process faults: one process inside a container, not the container.
//!
//! `process_kill` SIGKILLs and `process_stop` SIGSTOPs (SIGCONT at heal) the process whose
//! command line contains `process` (`"walwriter"`: PostgreSQL names its processes in their
//! command lines, `postgres: walwriter`). The engine lists the container's processes with
//! their host pids (`docker top`, wherever the engine is); the run's host agent, in the host's
//! pid namespace, sends the signal after checking that the pid still belongs to the container,
//! and the heal's SIGCONT does the same, so a recycled pid is never signalled. The container's
//! own first process is never chosen: that is what `kill` and `stop` are for.
use super::{FaultCx, FaultError, Healing, Injected};
use crate::spec::FaultSpec;
use chaos_agent::{Op, Reply};
use testcontainers::bollard::query_parameters::TopOptionsBuilder;

/// One process of a container, as the engine lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    /// Its pid on the engine's host.
    pub pid: u32,
    /// Its command line.
    pub args: String,
}

/// The processes in `docker top`'s answer (`pid,args` columns).
pub fn parse_top(titles: &[String], rows: &[Vec<String>]) -> Vec<Proc> {
    let col = |name: &str| titles.iter().position(|t| t.eq_ignore_ascii_case(name));
    let (Some(pid), Some(args)) = (col("PID"), col("COMMAND").or_else(|| col("ARGS"))) else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|r| {
            Some(Proc {
                pid: r.get(pid)?.trim().parse().ok()?,
                args: r.get(args)?.trim().to_string(),
            })
        })
        .collect()
}

/// The process to signal: the lowest pid whose command line contains `pattern`, other than
/// the container's first process `init`.
pub fn choose<'a>(procs: &'a [Proc], pattern: &str, init: u32) -> Option<&'a Proc> {
    procs
        .iter()
        .filter(|p| p.pid != init && p.args.contains(pattern))
        .min_by_key(|p| p.pid)
}

const SIGKILL: i32 = 9;
const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

async fn signal(cx: &FaultCx, fault: &str, pid: u32, sig: i32, id: &str) -> Result<(), FaultError> {
    let agent = cx.agent(fault, "send the signal").await?;
    match agent
        .call(Op::Signal {
            pid,
            signal: sig,
            container: id.to_string(),
        })
        .await
    {
        Ok(Reply::Done) => Ok(()),
        Ok(other) => Err(FaultError::Other {
            fault: fault.to_string(),
            what: format!("the host agent answered signal with {other:?}"),
        }),
        Err(what) => Err(FaultError::Other {
            fault: fault.to_string(),
            what,
        }),
    }
}

/// Injects `process_kill` or `process_stop`.
pub async fn inject(cx: &FaultCx, spec: &FaultSpec) -> Result<Injected, FaultError> {
    let fault = format!("{} {}", spec.kind, spec.target);
    let pattern = spec
        .param("process")
        .ok_or_else(|| FaultError::Other {
            fault: fault.clone(),
            what: "no `process` to signal (process = \"walwriter\")".into(),
        })?
        .to_string();
    let svc = cx
        .stack
        .service(spec.target)
        .expect("macro validated the target");
    let id = svc.id.clone();
    let watched = cx.watched(&fault, spec.target).await?;
    let top = cx
        .stack
        .docker()
        .top_processes(
            &id,
            Some(TopOptionsBuilder::new().ps_args("-eo pid,args").build()),
        )
        .await
        .map_err(FaultError::docker(&fault, "top"))?;
    let procs = parse_top(
        &top.titles.unwrap_or_default(),
        &top.processes.unwrap_or_default(),
    );
    let chosen = choose(&procs, &pattern, watched.pid)
        .cloned()
        .ok_or_else(|| FaultError::Other {
            fault: fault.clone(),
            what: format!(
                "no process of {} but its first one has {pattern:?} in its command line; it runs: {}",
                spec.target,
                procs
                    .iter()
                    .map(|p| p.args.as_str())
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
        })?;
    let sig = if spec.kind == "process_stop" {
        SIGSTOP
    } else {
        SIGKILL
    };
    signal(cx, &fault, chosen.pid, sig, &id).await?;
    cx.event(
        "process_signalled",
        spec.target,
        &[
            ("pid", chosen.pid.to_string()),
            ("args", chosen.args.clone()),
            ("signal", sig.to_string()),
        ],
    );
    let role = spec.target.to_string();
    let mechanism = format!(
        "kill -{} of one process ({:?}) by the run's host agent",
        if sig == SIGSTOP { "STOP" } else { "KILL" },
        chosen.args
    );
    let healing = if sig == SIGSTOP {
        Healing::new(move |cx, deadline| async move {
            let fault = format!("heal process_stop {role}");
            // A process that died meanwhile needs no SIGCONT; any other refusal is an error.
            match signal(&cx, &fault, chosen.pid, SIGCONT, &id).await {
                Ok(()) => cx.event(
                    "process_continued",
                    &role,
                    &[("pid", chosen.pid.to_string())],
                ),
                Err(FaultError::Other { what, .. }) if what.contains("is gone") => {}
                Err(e) => return Err(e),
            }
            cx.serving(&role, deadline, fault).await
        })
    } else {
        Healing::new(move |cx, deadline| async move {
            let fault = format!("heal process_kill {role}");
            cx.serving(&role, deadline, fault).await
        })
    };
    Ok(Injected { mechanism, healing })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_lowest_matching_process_other_than_the_first_is_chosen() {
        let procs = parse_top(
            &s(&["PID", "COMMAND"]),
            &[
                s(&["100", "postgres -D /data"]),
                s(&["120", "postgres: walwriter "]),
                s(&["111", "postgres: checkpointer "]),
                s(&["130", "postgres: postgres postgres 172.18.0.5(4321) idle"]),
                s(&["x", "garbage"]),
            ],
        );
        assert_eq!(procs.len(), 4);
        assert_eq!(choose(&procs, "walwriter", 100).unwrap().pid, 120);
        assert_eq!(choose(&procs, "postgres", 100).unwrap().pid, 111);
        assert!(
            choose(&procs, "postgres -D", 100).is_none(),
            "never the first process"
        );
        assert!(choose(&procs, "autovacuum", 100).is_none());
        assert!(parse_top(&s(&["USER"]), &[s(&["root"])]).is_empty());
    }
}
