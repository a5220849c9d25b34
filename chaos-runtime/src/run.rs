//! One chaos test from start to verdict, as a straight pipeline of phases:
//! check → stack → observe → workload → baseline → faults → recovery → collect → invariants →
//! verdict → body → teardown. Each phase is one function below, in that order.
use crate::__private::Body;
use crate::clock::mono_ns;
use crate::fault::{self, FaultCx, FaultGuard};
use crate::invariant;
use crate::observe::{BpfHost, Observation, ObserverMode, Observers, Source};
use crate::spec::{FaultSpec, Needs, Spec};
use crate::stack::{self, Plan, Stack};
use crate::system::{Ceiling, SteadyState, System, SystemError};
use crate::timeline::{Event, FaultRecord, Hypothesis, Metrics, Phase, Timeline, percentile};
use crate::workload::{Ack, Running, Workload, WorkloadCx};
use crate::{ChaosRun, docker, interrupt, journal, progress, slots, snapshot};
use futures::FutureExt;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// Runs one chaos test; panics (failing the `#[test]`) with a message naming the cause and fix.
pub fn run_test(spec: &'static Spec, body: Body) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("chaos")
        .build()
        .expect("cannot build the tokio runtime");
    // SIGINT/SIGTERM drop the pipeline (its fault guards heal on drop), then the stack goes.
    let guard = interrupt::Guard::register();
    let interrupted = rt.block_on(async {
        tokio::select! {
            r = run_async(spec, body, guard.slot(), guard.run_id_slot()) => Ok(r),
            signo = guard.interrupted() => Err(signo),
        }
    });
    let outcome = match interrupted {
        Ok(r) => r,
        Err(signo) => rt.block_on(guard.clean_up_and_exit(signo)),
    };
    // What the guard still holds (a stack's container handles) is dropped in the runtime.
    rt.block_on(async move { drop(guard) });
    rt.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(()) => {}
        Err(Failure::Message(m)) => panic!("{m}"),
        Err(Failure::Panic(p)) => std::panic::resume_unwind(p),
    }
}

enum Failure {
    Message(String),
    Panic(Box<dyn std::any::Any + Send>),
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Self {
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            msg.push_str(&format!("\n  caused by: {s}"));
            src = s.source();
        }
        Failure::Message(msg)
    }
}

/// What the test asks of its system, checked before any resource exists.
struct Checked {
    plan: Plan,
    workload: Arc<dyn Workload>,
    steady: SteadyState,
    /// How the run is observed (eBPF, or the fallbacks).
    mode: ObserverMode,
}

async fn run_async(
    spec: &'static Spec,
    body: Body,
    active: Arc<std::sync::Mutex<Option<Arc<Stack>>>>,
    active_id: Arc<std::sync::Mutex<Option<String>>>,
) -> Result<(), Failure> {
    let mode = observer_mode(spec)?;
    let system = (spec.system)();
    let checked = check(spec, &system, mode)?;
    let docker = docker::connect().await?;
    let local_engine = crate::reach::detect(&docker)
        .await
        .is_ok_and(|r| r.engine_is_local());
    needs(spec, mode, local_engine)?;
    // With `CHAOS_PRESTART=1` the stack starts while another run may still be measuring (one
    // staged stack per slot), though never inside that run's quiet windows (see `slots`); the
    // measuring begins only once this run holds a slot of its own.
    let (stage, noisy) = if slots::prestart() {
        let stage = slots::acquire_stage().await?;
        let noisy = slots::noisy().await?;
        crate::reaper::ensure(&docker).await;
        sweep_left_behind(&docker).await;
        (Staging::Stage(stage), noisy)
    } else {
        // The reaper's start and the sweep overlap the previous run's teardown.
        crate::reaper::ensure(&docker).await;
        sweep_left_behind(&docker).await;
        (
            Staging::Slot(slots::acquire().await?),
            slots::noisy().await?,
        )
    };
    let id = run_id(spec);
    *active_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.clone());
    progress::line(
        "run",
        &format!("{}: {}", spec.name, describe_faults(spec.faults)),
    );
    progress::phase(
        spec.name,
        progress::phases::STACK_STARTING,
        &describe_faults(spec.faults),
    );
    // From here on every step talks to the daemon: one that stops answering ends the run with
    // that said, within seconds, instead of each step timing out on its own.
    let held = active.clone();
    tokio::select! {
        r = staged(spec, body, &system, checked, &docker, &id, active, (stage, noisy)) => r,
        what = async {
            // Said before the dropped pipeline's heals run (they give up within seconds now).
            let what = format!(
                "{}: the Docker daemon at {} stopped answering mid-run ({}); the run cannot be \
                 judged (a daemon that stops takes the stack's containers down with it)",
                spec.name,
                docker::endpoint(),
                docker::lost(&docker).await
            );
            progress::line("run", &what);
            what
        } => Err(daemon_lost(&id, what, held).await),
    }
}

/// The run once its slot (or, with `CHAOS_PRESTART=1`, its staging place) is held: stack, then
/// (once a slot is held) experiment and verdict. A staged stack starts before the slot is
/// free, overlapping the end of the previous run's measuring. The slot is given back before the
/// stack's teardown: removing containers measures nothing (removal only touches this run's
/// labelled resources).
#[allow(clippy::too_many_arguments)]
async fn staged(
    spec: &'static Spec,
    body: Body,
    system: &System,
    checked: Checked,
    docker: &testcontainers::bollard::Docker,
    id: &str,
    active: Arc<std::sync::Mutex<Option<Arc<Stack>>>>,
    (stage, noisy): (Staging, slots::Noisy),
) -> Result<(), Failure> {
    let stack = Arc::new(Stack::start(docker, system, &checked.plan, id).await?);
    *active.lock().unwrap_or_else(|e| e.into_inner()) = Some(stack.clone());
    let (slot, quiet) = match stage {
        Staging::Slot(slot) => {
            drop(noisy);
            (slot, None)
        }
        Staging::Stage(stage) => {
            let held = async {
                let intent = slots::intent(&stage).await?;
                drop(noisy);
                let slot = slots::acquire().await?;
                let quiet = slots::quiet(&slot).await?;
                drop(intent);
                stack.promote().await;
                Ok::<_, slots::LockError>((slot, Some(quiet)))
            }
            .await;
            drop(stage);
            match held {
                Ok(held) => held,
                Err(e) => {
                    stack.teardown().await;
                    return Err(e.into());
                }
            }
        }
    };
    progress::phase(spec.name, progress::phases::BASELINE, "stack ready");

    let result = AssertUnwindSafe(experiment(
        spec,
        system,
        &checked,
        stack.clone(),
        docker.clone(),
        quiet,
    ))
    .catch_unwind()
    .await;
    let (timeline, acked) = match result {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            drop(slot);
            finish_stack(&stack, true).await;
            return Err(e);
        }
        Err(p) => {
            drop(slot);
            finish_stack(&stack, true).await;
            return Err(Failure::Panic(p));
        }
    };
    let invariants = system.invariants.clone();
    verdict(spec, timeline, acked, stack, invariants, body, slot).await
}

/// What a run holds while its stack starts: the slot itself, or, with `CHAOS_PRESTART=1`, a
/// staging place (the slot is taken once the stack is up).
enum Staging {
    Stage(slots::Slot),
    Slot(slots::Slot),
}

/// The daemon stopped answering mid-run (said already, as `what`): wait (bounded) for it to
/// come back and remove what the run left; otherwise name what is left and what removes it.
async fn daemon_lost(
    id: &str,
    what: String,
    active: Arc<std::sync::Mutex<Option<Arc<Stack>>>>,
) -> Failure {
    // The stack (its container handles) is let go here, in the runtime, not after it.
    let stack = active.lock().unwrap_or_else(|e| e.into_inner()).take();
    let wait = Duration::from_secs(20);
    let after = match docker::back(wait).await {
        Some((docker, took)) => {
            // A started stack's teardown lists its run's label itself; a stack that was still
            // starting has only the label.
            let removed = match stack {
                Some(s) => {
                    s.teardown().await;
                    "its stack".to_string()
                }
                None => format!(
                    "{} resources found by its label",
                    crate::stack::remove_run(&docker, id).await
                ),
            };
            format!(
                "it answered again {:.1} s later; removed what run {id} had left ({removed})",
                took.as_secs_f64()
            )
        }
        None => format!(
            "it has not answered for {} s more. Fix: start it again (`systemctl start docker`, \
             or `dockerd &`); then the next chaos run's sweep, or `cargo chaos clean`, removes \
             what run {id} left (label chaos.run={id})",
            wait.as_secs()
        ),
    };
    Failure::Message(format!("{what}; {after}"))
}

/// Check: the test's roles, workload and fault/target pairs against the system.
fn check(spec: &Spec, system: &System, mode: ObserverMode) -> Result<Checked, SystemError> {
    system.validate()?;
    let mut plan = Plan::default();
    for f in spec.faults {
        let Some(svc) = system.get(f.target) else {
            return Err(SystemError::unknown_role(system, f.target));
        };
        let unfit = |why: String| SystemError::Unfit {
            fault: f.kind.to_string(),
            role: f.target.to_string(),
            why,
        };
        match chaos_spec::needs(f.kind) {
            Some(Needs::Postgres) if svc.postgres.is_none() => {
                return Err(unfit(
                    "it needs a PostgreSQL service (declared with `Service::postgres`)".into(),
                ));
            }
            Some(Needs::Ports) if svc.ports.is_empty() => {
                return Err(unfit(
                    "the fault proxy fronts a service's declared ports, and it declares none (`.port(N)`)".into(),
                ));
            }
            _ => {}
        }
        plan.agent |= fault::needs_agent(f.kind);
        // latency and the HTTP faults act in the fault proxy in front of the target.
        if matches!(chaos_spec::needs(f.kind), Some(Needs::Ports))
            && !plan.behind_proxy.iter().any(|r| r == f.target)
        {
            plan.behind_proxy.push(f.target.to_string());
        }
    }
    let (_, workload) = system
        .workload_named(spec.workload)
        .ok_or_else(|| SystemError::unknown_workload(system, spec.workload.unwrap_or("")))?;
    let mut steady = system.steady.clone();
    if let Some(r) = spec.steady.ok_ratio {
        steady.ok_ratio = r;
    }
    if let Some(ms) = spec.steady.p99_ms {
        steady.p99 = Ceiling::Fixed(Duration::from_millis(ms));
    }
    if let Some(ms) = spec.steady.window_ms {
        steady.recovery_window = Duration::from_millis(ms);
    }
    Ok(Checked {
        plan,
        workload,
        steady,
        mode,
    })
}

/// What the test demands of the host, checked with the probes `chaos doctor` reports, before
/// any resource exists: a test that must observe through eBPF on a host that cannot load it
/// fails here in one line with the fix (never a silent pass, never a different verdict, never
/// a stack started for nothing). No fault needs root here: the host agent acts on the host.
///
/// eBPF is probed here only when this process will load it itself (root, with the engine on
/// this machine and reached through published ports, not from a job container); otherwise the
/// run's host agent loads it, and a refusal fails the run as the observers start, with the
/// agent's reason.
fn needs(spec: &Spec, mode: ObserverMode, local_engine: bool) -> Result<(), Failure> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if mode != ObserverMode::Bpf || !root || !local_engine {
        return Ok(());
    }
    crate::observe::bpf::probe().map_err(|why| {
        let asked = if spec.observer.is_some() {
            "observer = \"bpf\""
        } else {
            "CHAOS_OBSERVER=bpf"
        };
        Failure::Message(format!(
            "{} needs eBPF observers ({asked}) and this host cannot load them: {why} \
             (or run it with CHAOS_OBSERVER=fallback: the same verdict and snapshot from /proc, \
             cgroup files, Docker events and the kernel log)",
            spec.name
        ))
    })
}

fn observer_mode(spec: &Spec) -> Result<ObserverMode, Failure> {
    if let Some(m) = spec.observer {
        return Ok(ObserverMode::parse(m).unwrap_or_default());
    }
    match ObserverMode::from_env() {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Ok(ObserverMode::Auto),
        Err(e) => Err(Failure::Message(e)),
    }
}

async fn sweep_left_behind(docker: &testcontainers::bollard::Docker) {
    let swept = stack::sweep(docker).await;
    if swept > 0 {
        progress::line(
            "stack",
            &format!("removed {swept} resources left by killed runs"),
        );
    }
}

fn run_id(spec: &Spec) -> String {
    let slug: String = spec
        .fn_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(24)
        .collect();
    format!(
        "{}-{:x}",
        slug.trim_matches('-'),
        (mono_ns() ^ std::process::id() as u64) & 0xffffff
    )
}

/// Times of a run, relative to its t0.
#[derive(Clone, Copy)]
struct Clock {
    t0: u64,
}

impl Clock {
    fn now_ms(self) -> f64 {
        (mono_ns() - self.t0) as f64 / 1e6
    }

    /// An instant as events are stamped: rounded to 10 us.
    fn stamp(self, at_ns: u64) -> f64 {
        ((at_ns as i128 - self.t0 as i128) as f64 / 1e6 * 100.0).round() / 100.0
    }
}

/// The workload's warm-up before a baseline window may begin (connections made, caches
/// primed), and at least until the observers watch.
const WARM_UP_MS: f64 = 500.0;

/// How often the baseline and recovery waits look for a final window that holds.
const WINDOW_POLL: Duration = Duration::from_millis(25);

/// Everything between a started stack and the verdict.
async fn experiment(
    spec: &'static Spec,
    system: &System,
    checked: &Checked,
    stack: Arc<Stack>,
    docker: testcontainers::bollard::Docker,
    quiet: Option<slots::Slot>,
) -> Result<(Timeline, Vec<Ack>), Failure> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Observation>();
    let clock = Clock { t0: mono_ns() };
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // The observers load (eBPF verification, a Docker event stream) while the workload prepares
    // and warms up; the baseline begins once both are done and the warm-up is over.
    let (observers, started) = tokio::join!(
        async {
            let observers = start_observers(&stack, docker, checked.mode, tx.clone()).await;
            (observers, clock.now_ms())
        },
        async {
            let pg_sampler = start_pg_sampler(spec, &stack, &tx).await?;
            let workload = Running::start(
                checked.workload.clone(),
                WorkloadCx {
                    addrs: stack.client_addrs(),
                    http: crate::http::client(),
                },
                clock.t0,
            )
            .await
            .map_err(|e| Failure::Message(format!("preparing the workload failed: {e}")))?;
            Ok::<_, Failure>((pg_sampler, workload))
        }
    );
    let (pg_sampler, workload) = started?;
    let (observers, observed_ms) = match observers {
        (Ok(o), at) => (o, at),
        (Err(e), _) => {
            // The sampler stops when dropped, as on the run's other error paths.
            let _ = workload.stop().await;
            return Err(e);
        }
    };

    let warmed_ms = observed_ms.max(WARM_UP_MS);
    let (baseline_start, recovery_hyp) =
        match wait_baseline(&checked.steady, &workload, clock, warmed_ms).await {
            Ok(x) => x,
            Err(why) => {
                let samples = workload.stop().await.0;
                return Err(baseline_failure(&stack, &checked.steady, &samples, why).await);
            }
        };
    let cx = Arc::new(FaultCx {
        stack: stack.clone(),
        observers: observers.clone(),
        sink: tx.clone(),
    });
    // Before the fault phase: what each fault needs that is no part of it (see `fault::prepare`).
    let prepared = futures::future::join_all(spec.faults.iter().map(|f| fault::prepare(&cx, f)))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>();
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = workload.stop().await;
            return Err(e.into());
        }
    };
    let inject_ms = clock.now_ms();
    let faults = match run_faults(spec, &cx, clock, prepared).await {
        Ok(f) => f,
        Err(e) => {
            let _ = workload.stop().await;
            return Err(e.into());
        }
    };
    // Healed: the baseline and fault windows are over; with `CHAOS_PRESTART=1` the next run's
    // stack may start now (beside the recovery windows, which it disturbs on 2 cores).
    drop(quiet);
    let heal_ms = faults
        .iter()
        .filter_map(|f| f.healed_ms)
        .fold(inject_ms, f64::max);
    let recovered = wait_recovery(spec, &recovery_hyp, &workload, heal_ms, clock).await;
    let end_ms = clock.now_ms();
    let (samples, acked) = workload.stop().await;
    if let Some(s) = pg_sampler {
        s.stop().await;
    }
    drop(cx);
    let events = collect_events(observers, tx, rx, clock).await;
    let phases = PhaseTimes {
        baseline_start,
        inject_ms,
        heal_ms,
        recovered,
        end_ms,
    };
    let mut tl = timeline(spec, started_unix_ms, phases, faults, events, samples);
    tl.hypothesis = recovery_hyp;
    finish_timeline(spec, &mut tl, &phases, &acked, &stack).await;
    tl.lost_writes = invariant::check_all(&system.invariants, &stack, &acked)
        .await
        .map_err(Failure::Message)?;
    report_recovery(spec, &tl, acked.len());
    Ok((tl, acked))
}

/// How the observers and faults see the engine's host, and who loads eBPF into its kernel:
/// this process, with its own /proc, /sys and /dev/kmsg, when it is root in the engine host's
/// pid namespace (nothing to start), else the run's host agent.
async fn host_view(stack: &Stack) -> (Arc<dyn crate::observe::sys::Sys>, BpfHost, &'static str) {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root && stack.sees_engine_pids().await {
        return (Arc::new(crate::observe::sys::RealSys), BpfHost::Here, "");
    }
    match stack.agent().await {
        Ok(agent) => (
            Arc::new(crate::agent::AgentSys::new(agent.clone())),
            BpfHost::Agent(agent),
            " (host access through the host agent)",
        ),
        Err(why) => {
            progress::line(
                "observe",
                &format!("no host agent ({why}); observing from this process only"),
            );
            let bpf = if root {
                BpfHost::Here
            } else {
                BpfHost::Nowhere(format!(
                    "no host agent ({why}) and this process is not root"
                ))
            };
            (Arc::new(crate::observe::sys::RealSys), bpf, "")
        }
    }
}

/// Observe: the observers, watching every service of the stack.
async fn start_observers(
    stack: &Stack,
    docker: testcontainers::bollard::Docker,
    mode: ObserverMode,
    tx: crate::observe::Sink,
) -> Result<Arc<Observers>, Failure> {
    let (sys, bpf, via) = host_view(stack).await;
    let observers = Arc::new(Observers::start_with(mode, docker, tx, sys, bpf).await?);
    for role in stack.roles() {
        if let Ok(w) = stack.watched(&role).await {
            observers.watch(w).await;
        }
    }
    let choices = observers
        .choices()
        .iter()
        .map(|c| format!("{}={}", c.signal, crate::timeline::source_name(c.source)))
        .collect::<Vec<_>>()
        .join(" ");
    progress::line("observe", &format!("{choices}{via}"));
    Ok(observers)
}

/// Connection counts in the timeline while a pool is exhausted, over a connection opened before
/// any fault fills the server.
async fn start_pg_sampler(
    spec: &Spec,
    stack: &Arc<Stack>,
    tx: &crate::observe::Sink,
) -> Result<Option<fault::pool::PgSampler>, Failure> {
    match spec.faults.iter().find(|f| f.kind == "pool_exhaustion") {
        Some(f) => Ok(Some(
            fault::pool::PgSampler::start(stack.clone(), f.target, tx.clone()).await?,
        )),
        None => Ok(None),
    }
}

/// Baseline: the steady state must hold for a full window before anything is broken. Returns
/// when the holding window began, and the hypothesis recovery is measured against.
async fn wait_baseline(
    steady: &SteadyState,
    workload: &Running,
    clock: Clock,
    warmed_ms: f64,
) -> Result<(f64, Hypothesis), String> {
    let window_ms = steady.baseline_window.as_secs_f64() * 1000.0;
    let hyp = Hypothesis {
        window_ms,
        min_ok_ratio: steady.ok_ratio,
        max_p99_ms: None,
        min_samples: steady.min_samples * 2,
    };
    let deadline_ms = steady.baseline_deadline.as_secs_f64() * 1000.0;
    let start = loop {
        if let Some(t) = workload.first_holding(&hyp, warmed_ms) {
            break t;
        }
        if clock.now_ms() > deadline_ms {
            return Err(format!(
                "the system never reached its steady state within {:.0} s before the fault",
                deadline_ms / 1000.0
            ));
        }
        tokio::time::sleep(WINDOW_POLL).await;
    };
    let base: Vec<f64> = workload.with_samples(|samples| {
        samples
            .iter()
            .filter(|s| s.t_ms >= start && s.t_ms < start + window_ms)
            .map(|s| s.latency_ms)
            .collect()
    });
    let base_p99 = percentile(base.iter().copied(), 0.99);
    let max_p99_ms = match steady.p99 {
        Ceiling::FromBaseline { factor, plus } => {
            Some((base_p99 * factor).max(base_p99 + plus.as_secs_f64() * 1000.0))
        }
        Ceiling::Fixed(d) => Some(d.as_secs_f64() * 1000.0),
        Ceiling::None => None,
    };
    Ok((
        start,
        Hypothesis {
            window_ms: steady.recovery_window.as_secs_f64() * 1000.0,
            min_ok_ratio: steady.ok_ratio,
            max_p99_ms,
            min_samples: steady.min_samples,
        },
    ))
}

async fn baseline_failure(
    stack: &Stack,
    steady: &SteadyState,
    samples: &[crate::timeline::Sample],
    why: String,
) -> Failure {
    let failed: Vec<_> = samples
        .iter()
        .filter(|s| !s.ok)
        .take(3)
        .filter_map(|s| s.error.clone())
        .collect();
    let mut logs = String::new();
    for role in stack.roles() {
        logs.push_str(&format!("--- {role}:\n{}", stack.logs(&role, 10).await));
    }
    Failure::Message(format!(
        "{why}: {} requests, {} failed (e.g. {failed:?}); the hypothesis wants {:.0}% ok in a {:.1} s window. \
         Fix the system or its steady state (`SteadyState`, `steady_ok_ratio`). Logs of the services:\n{logs}",
        samples.len(),
        samples.iter().filter(|s| !s.ok).count(),
        steady.ok_ratio * 100.0,
        steady.baseline_window.as_secs_f64(),
    ))
}

/// Faults: each injected at its offset, held, healed; a guard heals on panic.
async fn run_faults(
    spec: &'static Spec,
    cx: &Arc<FaultCx>,
    clock: Clock,
    prepared: Vec<fault::Prepared>,
) -> Result<Vec<FaultRecord>, fault::FaultError> {
    progress::line(
        "run",
        &format!("{}: baseline held, injecting", spec.fn_name),
    );
    progress::phase(
        spec.name,
        progress::phases::FAULT_INJECTED,
        &describe_faults(spec.faults),
    );
    // `after` counts from the first injection (see `FaultSpec::after_ms`): the earliest fault
    // starts at once, so the fault phase never opens on nothing injected.
    let first_after = spec.faults.iter().map(|f| f.after_ms).min().unwrap_or(0);
    let runs = spec
        .faults
        .iter()
        .zip(prepared)
        .map(|(f, p)| one_fault(spec, f, p, cx.clone(), f.after_ms - first_after, clock));
    let records = futures::future::join_all(runs).await;
    let records = records.into_iter().collect::<Result<Vec<_>, _>>()?;
    progress::line(
        "run",
        &format!("{}: healed, waiting for the steady state", spec.fn_name),
    );
    progress::phase(
        spec.name,
        progress::phases::HEALED,
        "waiting for the steady state",
    );
    Ok(records)
}

async fn one_fault(
    spec: &Spec,
    f: &'static FaultSpec,
    prepared: fault::Prepared,
    cx: Arc<FaultCx>,
    delay_ms: u64,
    clock: Clock,
) -> Result<FaultRecord, fault::FaultError> {
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    let at = clock.now_ms();
    // The decision: from here to the fault in effect is its injection latency.
    let at_ns = mono_ns();
    let (injected, in_effect_ns) = fault::timed(fault::inject_prepared(&cx, f, prepared)).await;
    let injected = injected?;
    cx.event_at(
        at_ns,
        "fault_injected",
        f.target,
        &[
            ("fault", f.kind.to_string()),
            ("mechanism", injected.mechanism.clone()),
        ],
    );
    let guard = FaultGuard::new(injected.healing, cx.clone());
    tokio::time::sleep(Duration::from_millis(f.duration_ms)).await;
    // Stamped exactly as events are, so `fault_healed` always opens the recovery phase
    // instead of rounding down into the fault phase.
    let healed_ns = mono_ns();
    cx.event_at(
        healed_ns,
        "fault_healed",
        f.target,
        &[("fault", f.kind.to_string())],
    );
    let (healed, undone_ns) = fault::timed(guard.heal(Duration::from_millis(
        spec.recover_within_ms.max(5_000) + 10_000,
    )))
    .await;
    healed?;
    Ok(FaultRecord {
        kind: f.kind.to_string(),
        target: f.target.to_string(),
        mechanism: injected.mechanism,
        injected_ms: at,
        healed_ms: Some(clock.stamp(healed_ns)),
        inject_ms: Some(latency_ms(at_ns, in_effect_ns)),
        heal_ms: Some(latency_ms(healed_ns, undone_ns)),
        params: f
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

/// From a decision to the fault (or its heal) in effect, ms, to 10 us as events are stamped.
fn latency_ms(decided_ns: u64, effect_ns: u64) -> f64 {
    (effect_ns.saturating_sub(decided_ns) as f64 / 1e4).round() / 100.0
}

/// Recovery: the first instant after heal from which the hypothesis holds for a full window.
async fn wait_recovery(
    spec: &Spec,
    hyp: &Hypothesis,
    workload: &Running,
    heal_ms: f64,
    clock: Clock,
) -> Option<f64> {
    let timeout_ms = workload.request_timeout.as_secs_f64() * 1000.0;
    let deadline = heal_ms + spec.recover_within_ms as f64 + hyp.window_ms + timeout_ms + 2000.0;
    loop {
        // Only windows whose requests have all completed: those that end before the oldest
        // request still in flight (the same windows, and the same verdict, as waiting out a
        // whole request timeout, found that much sooner).
        if let Some(t) = workload.first_holding(hyp, heal_ms) {
            return Some(t);
        }
        if clock.now_ms() > deadline {
            return None;
        }
        tokio::time::sleep(WINDOW_POLL).await;
    }
}

/// Collect: stop the observers (flushes histograms) and take every observation.
async fn collect_events(
    observers: Arc<Observers>,
    tx: crate::observe::Sink,
    mut rx: UnboundedReceiver<Observation>,
    clock: Clock,
) -> (Vec<Event>, Vec<crate::observe::SignalChoice>) {
    let choices = observers.choices();
    if let Ok(obs) = Arc::try_unwrap(observers) {
        obs.stop().await;
    }
    drop(tx);
    let mut events = Vec::new();
    while let Ok(o) = rx.try_recv() {
        events.push(Event {
            t_ms: clock.stamp(o.at_ns),
            kind: o.kind,
            source: o.source,
            container: o.container,
            detail: o.detail,
        });
    }
    (events, choices)
}

#[derive(Clone, Copy)]
struct PhaseTimes {
    baseline_start: f64,
    inject_ms: f64,
    heal_ms: f64,
    recovered: Option<f64>,
    end_ms: f64,
}

fn timeline(
    spec: &Spec,
    started_unix_ms: u64,
    t: PhaseTimes,
    faults: Vec<FaultRecord>,
    (events, observers): (Vec<Event>, Vec<crate::observe::SignalChoice>),
    samples: Vec<crate::timeline::Sample>,
) -> Timeline {
    let phase = |name: &str, start_ms, end_ms| Phase {
        name: name.into(),
        start_ms,
        end_ms,
    };
    let mut phases = vec![
        phase("warmup", 0.0, t.baseline_start),
        phase("baseline", t.baseline_start, t.inject_ms),
        phase("fault", t.inject_ms, t.heal_ms),
        phase("recovery", t.heal_ms, t.recovered.unwrap_or(t.end_ms)),
    ];
    if let Some(r) = t.recovered {
        phases.push(phase("steady", r, t.end_ms));
    }
    Timeline {
        name: spec.name.to_string(),
        started_unix_ms,
        phases,
        faults,
        events,
        samples,
        hypothesis: Hypothesis::default(),
        metrics: Metrics::default(),
        observers,
        lost_writes: Vec::new(),
        attachments: BTreeMap::new(),
    }
}

/// Metrics, the workload's own events and the faulted services' logs.
async fn finish_timeline(
    spec: &Spec,
    tl: &mut Timeline,
    t: &PhaseTimes,
    acked: &[Ack],
    stack: &Stack,
) {
    for f in spec.faults {
        if let std::collections::btree_map::Entry::Vacant(slot) =
            tl.attachments.entry(format!("{}.log", f.target))
        {
            slot.insert(stack.logs(f.target, 200).await);
        }
    }
    tl.compute_metrics(
        t.inject_ms,
        t.heal_ms,
        t.recovered,
        spec.recover_within_ms as f64,
    );
    tl.metrics.acknowledged_writes = acked.len();
    tl.metrics.indeterminate_writes = tl
        .samples
        .iter()
        .filter(|s| s.tags.contains_key(crate::workload::INDETERMINATE))
        .count();
    let workload_events = workload_events(tl, t.inject_ms, t.recovered);
    tl.events.extend(workload_events);
    tl.events.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
}

fn report_recovery(spec: &Spec, tl: &Timeline, acked: usize) {
    let recovered = tl
        .metrics
        .time_to_recover_ms
        .map(|t| format!("{t:.0} ms after heal"))
        .unwrap_or_else(|| "never".into());
    progress::line(
        "run",
        &format!(
            "{}: recovered {recovered}, {acked} writes acknowledged, {} invariant violations",
            spec.fn_name,
            tl.lost_writes.len()
        ),
    );
    progress::phase(spec.name, progress::phases::RECOVERED, &recovered);
}

/// Verdict: journal and report, budget, the body, teardown, snapshot.
async fn verdict(
    spec: &'static Spec,
    timeline: Timeline,
    acked: Vec<Ack>,
    stack: Arc<Stack>,
    invariants: Vec<Arc<dyn invariant::Invariant>>,
    body: Body,
    slot: slots::Slot,
) -> Result<(), Failure> {
    let journal_path = journal::write(spec, &timeline);
    let budget_failure = budget_failure(spec, &timeline);
    let run = ChaosRun {
        timeline,
        acked,
        stack: stack.clone(),
        invariants: Arc::new(invariants),
    };
    let body_result = AssertUnwindSafe(body(run.clone())).catch_unwind().await;
    let failed = budget_failure.is_some() || body_result.is_err();
    // Nothing after this point is measured: the next run takes the slot, and this one renders
    // its report page and removes its stack, both at once (with `CHAOS_PRESTART=1` once that
    // run's quiet windows are over; at once when no run waits).
    progress::phase(
        spec.name,
        progress::phases::VERDICT,
        if failed { "fail" } else { "pass" },
    );
    drop(slot);
    let noisy = slots::noisy().await.ok();
    let page = {
        let journal = journal_path.clone();
        tokio::task::spawn_blocking(move || crate::report::after_run(journal.as_deref()))
    };
    finish_stack_now(&stack, failed).await;
    let _ = page.await;
    drop(noisy);
    if let Some(p) = &journal_path {
        progress::line("run", &format!("journal: {}", p.display()));
    }
    if let Some(msg) = budget_failure {
        return Err(Failure::Message(msg));
    }
    // Both are checked and both reported: a changed snapshot never hides a failing body.
    let snapshot_result = if spec.snapshot {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            snapshot::assert_snapshot(spec, &run.timeline)
        }))
    } else {
        Ok(())
    };
    match (body_result, snapshot_result) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(p), Ok(())) | (Ok(()), Err(p)) => Err(Failure::Panic(p)),
        (Err(body), Err(_)) => Err(Failure::Message(format!(
            "the test body panicked: {}
and the snapshot of the timeline differs too (its diff is printed above)",
            panic_text(&body)
        ))),
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(a non-text panic)".into())
}

/// Removes (or, with `CHAOS_KEEP`, keeps) a failed run's stack, outside any other run's quiet
/// windows.
async fn finish_stack(stack: &Stack, failed: bool) {
    let noisy = slots::noisy().await.ok();
    finish_stack_now(stack, failed).await;
    drop(noisy);
}

async fn finish_stack_now(stack: &Stack, failed: bool) {
    if failed && std::env::var_os("CHAOS_KEEP").is_some_and(|v| v != "0") {
        progress::line("stack", &stack.keep());
    } else {
        stack.teardown().await;
    }
}

fn describe_faults(faults: &[FaultSpec]) -> String {
    faults
        .iter()
        .map(|f| {
            let after = if f.after_ms > 0 {
                format!(" after {} ms", f.after_ms)
            } else {
                String::new()
            };
            format!("{} {}{} for {} ms", f.kind, f.target, after, f.duration_ms)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn budget_failure(spec: &Spec, tl: &Timeline) -> Option<String> {
    let m = &tl.metrics;
    let mut problems = Vec::new();
    match m.time_to_recover_ms {
        None => problems.push(format!(
            "the steady state never returned after the fault was healed (budget {} ms)",
            spec.recover_within_ms
        )),
        Some(t) if t > spec.recover_within_ms as f64 => problems.push(format!(
            "recovery took {t:.0} ms after heal, over the budget of {} ms (recover_within)",
            spec.recover_within_ms
        )),
        _ => {}
    }
    if !tl.lost_writes.is_empty() {
        let shown: Vec<String> = tl
            .lost_writes
            .iter()
            .take(20)
            .map(|v| v.to_string())
            .collect();
        problems.push(format!(
            "{} invariant violations: {}",
            tl.lost_writes.len(),
            shown.join("; ")
        ));
    }
    if problems.is_empty() {
        None
    } else {
        Some(format!(
            "chaos budget failed for {}:\n  - {}\n\n{}",
            spec.name,
            problems.join("\n  - "),
            tl.render_text()
        ))
    }
}

fn workload_events(tl: &Timeline, inject_ms: f64, recovered: Option<f64>) -> Vec<Event> {
    let event = |t_ms: f64, kind: &str, detail: BTreeMap<String, String>| Event {
        t_ms,
        kind: kind.into(),
        source: Source::Workload,
        container: None,
        detail,
    };
    let failed = || tl.samples.iter().filter(|s| !s.ok && s.t_ms >= inject_ms);
    let mut out = Vec::new();
    if let Some(s) = failed().min_by(|a, b| a.t_ms.total_cmp(&b.t_ms)) {
        let reason = s.class.clone().unwrap_or_else(|| "error".into());
        out.push(event(
            s.t_ms,
            "first_error",
            BTreeMap::from([("reason".into(), reason)]),
        ));
    }
    if let Some(last) = failed().max_by(|a, b| a.t_ms.total_cmp(&b.t_ms)) {
        out.push(event(last.t_ms, "last_error", BTreeMap::new()));
    }
    if let Some(r) = recovered {
        out.push(event(r, "recovered", BTreeMap::new()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn latencies_are_ms_to_10_us_and_never_negative() {
        assert_eq!(super::latency_ms(1_000_000, 4_256_789), 3.26);
        assert_eq!(super::latency_ms(1_000_000, 1_000_000), 0.0);
        assert_eq!(super::latency_ms(5_000_000, 1_000_000), 0.0);
        assert_eq!(super::latency_ms(0, 2_999_994_000), 2999.99);
    }
}
