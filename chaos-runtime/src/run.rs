//! One chaos test from start to verdict: stack, observers, workload, baseline, fault, recovery,
//! verdict, body, teardown.
use crate::__private::Body;
use crate::clock::mono_ns;
use crate::fault::{self, FaultCx, FaultGuard};
use crate::journal;
use crate::observe::{Observation, ObserverMode, Observers, Source};
use crate::spec::{FaultSpec, Spec};
use crate::stack::{self, Stack, StackConfig};
use crate::timeline::{Event, FaultRecord, Hypothesis, Metrics, Phase, Timeline, percentile};
use crate::workload::{Workload, WorkloadConfig, WorkloadKind};
use crate::{ChaosRun, docker, image, ledger, progress, slots};
use futures::FutureExt;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

/// Event kinds left out of snapshots: their presence depends on timing, not on behaviour.
const NOISY_KINDS: &[&str] = &[
    "tcp_state",
    "tcp_retransmit",
    "tcp_reset",
    "runq_delay",
    "block_io_latency",
    "memory_pressure",
    "io_throttled",
    "cpu_throttled",
    "cpu_pressure",
    "io_pressure",
    // When our own readiness probe sees the service back races with the workload's first success.
    "service_ready",
    // Periodic pg_stat_activity counts: their number depends on the run's length.
    "pg_connections",
];

/// Runs one chaos test; panics (failing the `#[test]`) with a message naming the cause and fix.
pub fn run_test(spec: &'static Spec, body: Body) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("chaos")
        .build()
        .expect("cannot build the tokio runtime");
    let outcome = rt.block_on(run_async(spec, body));
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

fn observer_mode(spec: &Spec) -> Result<(ObserverMode, bool), Failure> {
    if let Some(m) = spec.observer {
        return Ok((ObserverMode::parse(m).unwrap_or_default(), false));
    }
    match ObserverMode::from_env() {
        Ok(Some(m)) => Ok((m, true)),
        Ok(None) => Ok((ObserverMode::Auto, false)),
        Err(e) => Err(Failure::Message(e)),
    }
}

fn stack_config(spec: &Spec) -> StackConfig {
    let mut cfg = StackConfig::default();
    for f in spec.faults {
        if f.kind == "latency" && !cfg.behind_proxy.iter().any(|r| r == f.target) {
            cfg.behind_proxy.push(f.target.to_string());
        }
    }
    cfg
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

async fn run_async(spec: &'static Spec, body: Body) -> Result<(), Failure> {
    let (mode, mode_from_env) = observer_mode(spec)?;
    let docker = docker::connect().await?;
    let swept = stack::sweep(&docker).await;
    if swept > 0 {
        progress::line(
            "stack",
            &format!("removed {swept} resources left by killed runs"),
        );
    }
    let _slot = slots::acquire().await;
    let image = image::ensure(&docker).await?;
    let id = run_id(spec);
    progress::line(
        "run",
        &format!("{}: {}", spec.name, describe_faults(spec.faults)),
    );
    progress::phase(
        spec.name,
        progress::phases::STACK_STARTING,
        &describe_faults(spec.faults),
    );
    let stack = Arc::new(Stack::start(&docker, &image, &id, &stack_config(spec)).await?);
    progress::phase(spec.name, progress::phases::BASELINE, "stack ready");

    let result = AssertUnwindSafe(experiment(spec, stack.clone(), docker.clone(), mode))
        .catch_unwind()
        .await;
    let (timeline, acked) = match result {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            finish_stack(&stack, true).await;
            return Err(e);
        }
        Err(p) => {
            finish_stack(&stack, true).await;
            return Err(Failure::Panic(p));
        }
    };

    let journal_path = journal::write(spec, &timeline);
    crate::report::after_run(journal_path.as_deref());
    let budget_failure = budget_failure(spec, &timeline);
    let run = ChaosRun {
        timeline,
        acked,
        stack: stack.clone(),
    };
    let body_result = AssertUnwindSafe(body(run.clone_for_body()))
        .catch_unwind()
        .await;
    let failed = budget_failure.is_some() || body_result.is_err();
    finish_stack(&stack, failed).await;
    if let Some(p) = &journal_path {
        progress::line("run", &format!("journal: {}", p.display()));
    }
    progress::phase(
        spec.name,
        progress::phases::VERDICT,
        if failed { "fail" } else { "pass" },
    );
    if let Some(msg) = budget_failure {
        return Err(Failure::Message(msg));
    }
    if spec.snapshot {
        assert_snapshot(
            spec,
            &run.timeline,
            if mode_from_env { Some(mode) } else { None },
        );
    }
    body_result.map_err(Failure::Panic)
}

async fn finish_stack(stack: &Stack, failed: bool) {
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

/// Signals whose delivery is behaviour (a kill, a stop, a crash), not a service's own chatter
/// (postgres signals its children with SIGUSR1/SIGALRM/SIGINT all the time).
const FATAL_SIGNALS: &[&str] = &["9", "15", "6", "11", "19"];

fn snapshot_worthy(e: &Event) -> bool {
    if NOISY_KINDS.contains(&e.kind.as_str()) {
        return false;
    }
    match e.kind.as_str() {
        "signal" => e
            .detail
            .get("signal")
            .is_some_and(|s| FATAL_SIGNALS.contains(&s.as_str())),
        // Processes come and go in every service; an exit by a fatal signal is the behaviour.
        "process_exit" => e
            .detail
            .get("signal")
            .is_some_and(|s| FATAL_SIGNALS.contains(&s.as_str())),
        _ => true,
    }
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
        problems.push(format!(
            "{} acknowledged writes are not in PostgreSQL: {:?}",
            tl.lost_writes.len(),
            &tl.lost_writes[..tl.lost_writes.len().min(20)]
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

fn assert_snapshot(spec: &Spec, tl: &Timeline, forced: Option<ObserverMode>) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(std::path::Path::new(spec.manifest_dir).join("tests/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_input_file(spec.file);
    settings.set_description(format!("normalised timeline of {}", spec.name));
    if let Some(m) = forced {
        settings.set_snapshot_suffix(format!("{m:?}").to_lowercase());
    }
    let normalised = mask_addresses(snapshot_view(tl).normalised(snapshot_worthy));
    settings.bind(|| {
        insta::assert_yaml_snapshot!(spec.fn_name, normalised);
    });
}

/// Events that say a heal is done: the fault's mechanism is undone (a partition's rules are gone,
/// a killed container runs again). `fault_healed` is stamped when the heal starts.
const HEAL_DONE_KINDS: &[&str] = &[
    "network_restored",
    "container_restarted",
    "container_start",
    // A pool exhaustion's slots are free again; a latency toxic or netem qdisc is gone (and the
    // proxy's counters, read once it is, prove it acted).
    "pool_released",
    "toxic_removed",
    "proxy_stats",
    "netem_removed",
];
/// Of those, the ones after which the fault no longer acts at all (the service needs no restart).
const FAULT_LIFTED_KINDS: &[&str] = &[
    "network_restored",
    "pool_released",
    "toxic_removed",
    "netem_removed",
];

/// The timeline as snapshots see it; metrics and the journal keep the real times.
/// - A request that started after `fault_healed` but before the fault was lifted (removing a
///   partition's rules and listing them back takes 10-40 ms, more on a loaded machine) met the
///   fault, not the recovery, and whether one did is a matter of timing: such failures, and a
///   `last_error` among them, count in the fault phase.
/// - A heal that completes after the steady state already returned (a service the steady state
///   does not need, e.g. a cache restarted last in a composite) is recovery work; whether the
///   steady window began before or after it is timing: its events count in the recovery phase.
fn snapshot_view(tl: &Timeline) -> std::borrow::Cow<'_, Timeline> {
    use std::borrow::Cow;
    let start = |name: &str| {
        tl.phases
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.start_ms)
    };
    let Some(heal) = start("recovery") else {
        return Cow::Borrowed(tl);
    };
    let steady = start("steady").unwrap_or(f64::INFINITY);
    let lifted = tl
        .events
        .iter()
        .filter(|e| FAULT_LIFTED_KINDS.contains(&e.kind.as_str()))
        .map(|e| e.t_ms)
        .fold(heal, f64::max);
    let met_fault = |ok: bool, t: f64| !ok && t >= heal && t < lifted;
    let late_heal = |e: &Event| HEAL_DONE_KINDS.contains(&e.kind.as_str()) && e.t_ms >= steady;
    if !tl.samples.iter().any(|s| met_fault(s.ok, s.t_ms)) && !tl.events.iter().any(late_heal) {
        return Cow::Borrowed(tl);
    }
    let mut v = tl.clone();
    for e in v.events.iter_mut().filter(|e| late_heal(e)) {
        e.t_ms = (steady - 0.01).max(heal);
    }
    let before = heal - 0.01;
    for s in v.samples.iter_mut().filter(|s| met_fault(s.ok, s.t_ms)) {
        s.t_ms = before;
    }
    for e in v
        .events
        .iter_mut()
        .filter(|e| e.kind == "last_error" && met_fault(false, e.t_ms))
    {
        e.t_ms = before;
    }
    let metrics = tl.metrics.clone();
    v.compute_metrics(0.0, heal, None, metrics.recover_budget_ms);
    v.metrics = Metrics {
        phases: std::mem::take(&mut v.metrics.phases),
        ..metrics
    };
    Cow::Owned(v)
}

/// Snapshots do not name addresses: Docker picks the stack's subnet per run, and a partition's
/// mechanism names it. IPv4 subnets become `<subnet>`, addresses `<ip>`.
fn mask_addresses(mut n: crate::timeline::Normalised) -> crate::timeline::Normalised {
    for f in &mut n.faults {
        *f = mask_ipv4(f);
    }
    for e in &mut n.events {
        if let Some(d) = &mut e.detail {
            *d = mask_ipv4(d);
        }
    }
    n
}

/// Replaces `a.b.c.d` with `<ip>` and `a.b.c.d/n` with `<subnet>`.
fn mask_ipv4(s: &str) -> String {
    let b = s.as_bytes();
    let digits = |mut j: usize| {
        let start = j;
        while j < b.len() && b[j].is_ascii_digit() && j - start < 3 {
            j += 1;
        }
        (j > start).then_some(j)
    };
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.');
        let mut end = None;
        if boundary && b[i].is_ascii_digit() {
            let mut j = i;
            for part in 0..4 {
                match digits(j) {
                    Some(k) if part < 3 && k < b.len() && b[k] == b'.' => j = k + 1,
                    Some(k) if part == 3 => end = Some(k),
                    _ => break,
                }
            }
        }
        match end {
            Some(k) if !(k < b.len() && (b[k].is_ascii_alphanumeric() || b[k] == b'.')) => {
                match digits(k + 1).filter(|_| k < b.len() && b[k] == b'/') {
                    Some(m) => {
                        out.push_str("<subnet>");
                        i = m;
                    }
                    None => {
                        out.push_str("<ip>");
                        i = k;
                    }
                }
            }
            _ => {
                let c = s[i..].chars().next().expect("in bounds");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

const BASELINE_WINDOW_MS: f64 = 2000.0;
const RECOVERY_WINDOW_MS: f64 = 1000.0;

async fn experiment(
    spec: &'static Spec,
    stack: Arc<Stack>,
    docker: testcontainers::bollard::Docker,
    mode: ObserverMode,
) -> Result<(Timeline, Vec<i64>), Failure> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Observation>();
    let observers = Arc::new(Observers::start(mode, docker, tx.clone()).await?);
    for role in stack.roles() {
        if let Ok(w) = stack.watched(&role).await {
            observers.watch(w).await;
        }
    }
    let choices = observers.choices();
    progress::line(
        "observe",
        &choices
            .iter()
            .map(|c| format!("{}={}", c.signal, crate::timeline::source_name(c.source)))
            .collect::<Vec<_>>()
            .join(" "),
    );
    let t0 = mono_ns();
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let now_ms = move || (mono_ns() - t0) as f64 / 1e6;
    let wl_cfg = WorkloadConfig::default();
    let timeout_ms = wl_cfg.request_timeout.as_secs_f64() * 1000.0;
    // Connection counts in the timeline, over a connection opened before any fault fills the server.
    let pg_sampler = if spec.faults.iter().any(|f| f.kind == "pool_exhaustion") {
        Some(fault::pool::PgSampler::start(stack.clone(), tx.clone()).await?)
    } else {
        None
    };
    let workload = Workload::start(
        WorkloadKind::parse(spec.workload),
        stack.front_url(),
        t0,
        wl_cfg,
    )
    .await;

    // 1. Baseline: the steady state must hold for a full window before anything is broken.
    let mut hyp = Hypothesis {
        window_ms: BASELINE_WINDOW_MS,
        min_ok_ratio: 1.0,
        max_p99_ms: None,
        min_samples: 10,
    };
    let baseline_deadline = 30_000.0;
    let baseline_start = loop {
        let samples = workload.samples();
        if let Some(t) = hyp.first_holding(&samples, 500.0, now_ms()) {
            break t;
        }
        if now_ms() > baseline_deadline {
            let samples = workload.stop().await.0;
            let failed: Vec<_> = samples
                .iter()
                .filter(|s| !s.ok)
                .take(3)
                .filter_map(|s| s.error.clone())
                .collect();
            return Err(Failure::Message(format!(
                "the stack never reached its steady state within {:.0} s before the fault: {} requests, {} failed (e.g. {:?}). \
                 Logs of the order service:\n{}",
                baseline_deadline / 1000.0,
                samples.len(),
                samples.iter().filter(|s| !s.ok).count(),
                failed,
                stack.logs("orders", 15).await
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let base_samples: Vec<f64> = workload
        .samples()
        .iter()
        .filter(|s| s.t_ms >= baseline_start && s.t_ms < baseline_start + BASELINE_WINDOW_MS)
        .map(|s| s.latency_ms)
        .collect();
    let base_p99 = percentile(base_samples.iter().copied(), 0.99);
    hyp = Hypothesis {
        window_ms: RECOVERY_WINDOW_MS,
        min_ok_ratio: 1.0,
        max_p99_ms: Some((base_p99 * 4.0).max(base_p99 + 50.0)),
        min_samples: 5,
    };

    // 2. Faults: each injected at its offset, held, healed; a guard heals on panic.
    let cx = Arc::new(FaultCx {
        stack: stack.clone(),
        observers: observers.clone(),
        sink: tx.clone(),
    });
    let inject_ms = now_ms();
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
    let runs = spec.faults.iter().map(|f| {
        let cx = cx.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(f.after_ms - first_after)).await;
            let at = now_ms();
            let at_ns = mono_ns();
            let injected = fault::inject(&cx, f).await?;
            let params: BTreeMap<String, String> = f
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
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
            // Stamped exactly as events are (rounded to 10 us), so `fault_healed` always opens
            // the recovery phase instead of rounding down into the fault phase.
            let healed_ns = mono_ns();
            let healed = ((healed_ns as i128 - t0 as i128) as f64 / 1e6 * 100.0).round() / 100.0;
            cx.event_at(
                healed_ns,
                "fault_healed",
                f.target,
                &[("fault", f.kind.to_string())],
            );
            guard
                .heal(Duration::from_millis(
                    spec.recover_within_ms.max(5_000) + 10_000,
                ))
                .await?;
            Ok::<_, fault::FaultError>(FaultRecord {
                kind: f.kind.to_string(),
                target: f.target.to_string(),
                mechanism: injected.mechanism,
                injected_ms: at,
                healed_ms: Some(healed),
                params,
            })
        }
    });
    let records = futures::future::join_all(runs).await;
    let mut faults = Vec::new();
    for r in records {
        match r {
            Ok(rec) => faults.push(rec),
            Err(e) => {
                let _ = workload.stop().await;
                return Err(e.into());
            }
        }
    }
    let heal_ms = faults
        .iter()
        .filter_map(|f| f.healed_ms)
        .fold(inject_ms, f64::max);
    progress::line(
        "run",
        &format!("{}: healed, waiting for the steady state", spec.fn_name),
    );
    progress::phase(
        spec.name,
        progress::phases::HEALED,
        "waiting for the steady state",
    );

    // 3. Recovery: the first instant after heal from which the hypothesis holds for a full window.
    let recovery_deadline =
        heal_ms + spec.recover_within_ms as f64 + RECOVERY_WINDOW_MS + timeout_ms + 2000.0;
    let recovered = loop {
        let samples = workload.samples();
        // Only windows whose requests have all completed (started > one timeout ago).
        if let Some(t) = hyp.first_holding(&samples, heal_ms, now_ms() - timeout_ms) {
            break Some(t);
        }
        if now_ms() > recovery_deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let end_ms = now_ms();
    let (samples, acked) = workload.stop().await;
    if let Some(s) = pg_sampler {
        s.stop().await;
    }

    // 4. Observations: stop observers (flushes histograms), collect everything.
    drop(cx);
    if let Ok(obs) = Arc::try_unwrap(observers) {
        obs.stop().await;
    }
    drop(tx);
    let mut events = Vec::new();
    while let Ok(o) = rx.try_recv() {
        events.push(Event {
            t_ms: ((o.at_ns as i128 - t0 as i128) as f64 / 1e6 * 100.0).round() / 100.0,
            kind: o.kind,
            source: o.source,
            container: o.container,
            detail: o.detail,
        });
    }
    let mut tl = Timeline {
        name: spec.name.to_string(),
        started_unix_ms,
        phases: vec![
            Phase {
                name: "warmup".into(),
                start_ms: 0.0,
                end_ms: baseline_start,
            },
            Phase {
                name: "baseline".into(),
                start_ms: baseline_start,
                end_ms: inject_ms,
            },
            Phase {
                name: "fault".into(),
                start_ms: inject_ms,
                end_ms: heal_ms,
            },
            Phase {
                name: "recovery".into(),
                start_ms: heal_ms,
                end_ms: recovered.unwrap_or(end_ms),
            },
        ],
        faults,
        events,
        samples,
        hypothesis: hyp,
        metrics: Metrics::default(),
        observers: choices,
        lost_writes: Vec::new(),
        attachments: BTreeMap::new(),
    };
    // The faulted services' own logs go with the run.
    for f in spec.faults {
        let name = format!("{}.log", f.target);
        if let std::collections::btree_map::Entry::Vacant(slot) = tl.attachments.entry(name) {
            slot.insert(stack.logs(f.target, 200).await);
        }
    }
    if let Some(r) = recovered {
        tl.phases.push(Phase {
            name: "steady".into(),
            start_ms: r,
            end_ms,
        });
    }
    tl.compute_metrics(inject_ms, heal_ms, recovered, spec.recover_within_ms as f64);
    tl.metrics.acknowledged_writes = acked.len();
    let workload_events = workload_events(&tl, inject_ms, recovered);
    tl.events.extend(workload_events);
    tl.events.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));

    // 5. Ledger: every acknowledged write must be in PostgreSQL.
    match ledger::missing(&stack.postgres_config(), &acked).await {
        Ok(lost) => tl.lost_writes = lost,
        Err(e) => return Err(e.into()),
    }
    progress::line(
        "run",
        &format!(
            "{}: recovered {} after heal, {} writes acknowledged, {} lost",
            spec.fn_name,
            tl.metrics
                .time_to_recover_ms
                .map(|t| format!("{t:.0} ms"))
                .unwrap_or_else(|| "never".into()),
            acked.len(),
            tl.lost_writes.len()
        ),
    );
    progress::phase(
        spec.name,
        progress::phases::RECOVERED,
        &tl.metrics
            .time_to_recover_ms
            .map(|t| format!("{t:.0} ms after heal"))
            .unwrap_or_else(|| "never".into()),
    );
    Ok((tl, acked))
}

fn workload_events(tl: &Timeline, inject_ms: f64, recovered: Option<f64>) -> Vec<Event> {
    let mut out = Vec::new();
    let first = tl
        .samples
        .iter()
        .filter(|s| !s.ok && s.t_ms >= inject_ms)
        .min_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    if let Some(s) = first {
        let reason = s.error.as_deref().map(classify).unwrap_or("error");
        out.push(Event {
            t_ms: s.t_ms,
            kind: "first_error".into(),
            source: Source::Workload,
            container: None,
            detail: BTreeMap::from([("reason".into(), reason.to_string())]),
        });
    }
    if let Some(last) = tl
        .samples
        .iter()
        .filter(|s| !s.ok && s.t_ms >= inject_ms)
        .max_by(|a, b| a.t_ms.total_cmp(&b.t_ms))
    {
        out.push(Event {
            t_ms: last.t_ms,
            kind: "last_error".into(),
            source: Source::Workload,
            container: None,
            detail: BTreeMap::new(),
        });
    }
    if let Some(r) = recovered {
        out.push(Event {
            t_ms: r,
            kind: "recovered".into(),
            source: Source::Workload,
            container: None,
            detail: BTreeMap::new(),
        });
    }
    out
}

/// A stable class of a request error, for snapshots.
fn classify(e: &str) -> &'static str {
    if e.starts_with("HTTP 5") {
        "http_5xx"
    } else if e.starts_with("HTTP") {
        "http_other"
    } else if e.contains("refused") {
        "connection_refused"
    } else if e.contains("timeout") {
        "timeout"
    } else if e.contains("reset") || e.contains("closed before message completed") {
        // The connection dropped under the request: an RST, or a close before any answer
        // (which of the two a client sees when its peer dies is a matter of timing).
        "connection_reset"
    } else {
        "other"
    }
}

#[cfg(test)]
mod snapshot_normalisation_tests {
    use super::{mask_ipv4, snapshot_view, snapshot_worthy};
    use crate::timeline::Timeline;

    fn timeline(lifted_ms: Option<f64>) -> Timeline {
        let mut events = vec![
            serde_json::json!({"t_ms": 2000.0, "kind": "fault_healed", "source": "runtime", "container": "postgres"}),
            serde_json::json!({"t_ms": 2010.0, "kind": "last_error", "source": "workload"}),
            serde_json::json!({"t_ms": 2300.0, "kind": "recovered", "source": "workload"}),
            serde_json::json!({"t_ms": 2500.0, "kind": "container_restarted", "source": "runtime", "container": "redis"}),
        ];
        if let Some(t) = lifted_ms {
            events.push(serde_json::json!({"t_ms": t, "kind": "network_restored", "source": "runtime", "container": "postgres"}));
        }
        let sample = |t: f64, ok: bool| serde_json::json!({"t_ms": t, "latency_ms": 5.0, "ok": ok, "status": if ok { 201 } else { 503 }});
        let phase =
            |n: &str, a: f64, b: f64| serde_json::json!({"name": n, "start_ms": a, "end_ms": b});
        let mut tl: Timeline = serde_json::from_value(serde_json::json!({
            "name": "t", "started_unix_ms": 0,
            "phases": [phase("baseline", 0.0, 1000.0), phase("fault", 1000.0, 2000.0), phase("recovery", 2000.0, 2300.0), phase("steady", 2300.0, 4000.0)],
            "faults": [], "events": events,
            "samples": [sample(500.0, true), sample(1500.0, false), sample(2010.0, false), sample(2300.0, true), sample(3000.0, true)],
            "hypothesis": {"window_ms": 1000.0, "min_ok_ratio": 1.0, "max_p99_ms": null, "min_samples": 1},
            "metrics": {"time_to_first_error_ms": null, "error_window_ms": null, "time_to_recover_ms": 300.0, "recover_budget_ms": 3000.0, "phases": [], "acknowledged_writes": 0},
            "observers": [], "lost_writes": []
        }))
        .expect("a timeline");
        tl.events.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        tl.compute_metrics(1000.0, 2000.0, Some(2300.0), 3000.0);
        tl
    }

    #[test]
    fn snapshots_count_requests_that_met_a_partition_still_being_lifted_in_the_fault_phase() {
        let phase_of = |n: &crate::timeline::Normalised, kind: &str| {
            n.events
                .iter()
                .find(|e| e.kind == kind)
                .map(|e| e.phase.clone())
                .unwrap_or_default()
        };
        let lifted = snapshot_view(&timeline(Some(2030.0))).normalised(snapshot_worthy);
        assert!(
            !lifted
                .phases
                .iter()
                .find(|p| p.phase == "recovery")
                .unwrap()
                .errors
        );
        assert_eq!(phase_of(&lifted, "last_error"), "fault");
        // A heal done after the steady state returned is recovery work.
        assert_eq!(phase_of(&lifted, "container_restarted"), "recovery");
        // Without a lifted partition, a failure after the heal is the recovery's.
        let kept = snapshot_view(&timeline(None)).normalised(snapshot_worthy);
        assert!(
            kept.phases
                .iter()
                .find(|p| p.phase == "recovery")
                .unwrap()
                .errors
        );
        assert_eq!(phase_of(&kept, "last_error"), "recovery");
    }

    #[test]
    fn subnets_and_addresses_are_masked_words_are_not() {
        assert_eq!(
            mask_ipv4(
                "iptables -I INPUT -s 172.31.0.0/16 -j DROP; iptables -I OUTPUT -d 10.0.0.0/8 -j DROP in postgres netns"
            ),
            "iptables -I INPUT -s <subnet> -j DROP; iptables -I OUTPUT -d <subnet> -j DROP in postgres netns"
        );
        assert_eq!(
            mask_ipv4("daddr=172.18.0.4 dport=5432"),
            "daddr=<ip> dport=5432"
        );
        assert_eq!(
            mask_ipv4("v1.2.3.4 1.2.3 1.2.3.4.5 signal=9"),
            "v1.2.3.4 1.2.3 1.2.3.4.5 signal=9"
        );
    }
}
