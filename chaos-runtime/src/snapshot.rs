//! The insta snapshot of a run: its normalised timeline, a picture of the system's behaviour.
//!
//! A snapshot holds what the *system* did, never how this host did it: one committed snapshot
//! must pass unchanged with eBPF or the fallback observers, netem or the fault proxy, iptables or
//! nft, cgroup v1 or v2. Mechanisms and observer sources go to the journal and the report.
use crate::observe::{Source, kind};
use crate::spec::Spec;
use crate::timeline::{Behaviour, Event, Metrics, Timeline};

/// Signals whose delivery is behaviour (a kill, a stop, a crash), not a service's own chatter
/// (postgres signals its children with SIGUSR1/SIGALRM/SIGINT/SIGQUIT all the time).
const FATAL_SIGNALS: &[&str] = &["9", "15", "6", "11", "19"];

/// What an event shows about the system, in words every observer can say. Two observers that
/// saw the same thing (eBPF's, the cgroup's and the kernel log's OOM kill) give the same
/// behaviour; the fault machinery's own bookkeeping (rules added, toxics
/// removed, a container restarted by the heal) and measurements whose presence is timing (TCP
/// state changes, run-queue histograms, pressure) give none.
///
/// Kills show at the container level only (Docker's `die` with its signal, the OOM killer):
/// every observer tier sees those. A signal to one process inside a container is visible to
/// eBPF alone, so it stays in the journal; a snapshot holding it would differ without eBPF.
pub(crate) fn behaviour(e: &Event) -> Vec<Behaviour> {
    let signal = || {
        e.detail
            .get("signal")
            .filter(|s| FATAL_SIGNALS.contains(&s.as_str()))
            .map(|s| format!("signal={s}"))
    };
    match e.source {
        // The harness's own markers and the mechanisms' bookkeeping are not the system's doing.
        Source::Runtime | Source::Proxy | Source::Service | Source::DockerStats => return vec![],
        // What the clients saw: first/last error (with its class), recovery.
        Source::Workload => {
            let detail = e.detail.get("reason").map(|r| format!("reason={r}"));
            return match e.kind.as_str() {
                "first_error" | "last_error" | "recovered" => vec![Behaviour {
                    kind: e.kind.clone(),
                    detail,
                }],
                _ => vec![],
            };
        }
        _ => {}
    }
    match e.kind.as_str() {
        kind::OOM_KILL => vec![Behaviour::new("oom_kill")],
        kind::CONTAINER_DIE => vec![Behaviour {
            kind: "container_died".into(),
            detail: signal(),
        }],
        kind::CONTAINER_START => vec![Behaviour::new("container_started")],
        kind::CPU_THROTTLED => vec![Behaviour::new("cpu_throttled")],
        _ => vec![],
    }
}

pub(crate) fn assert_snapshot(spec: &Spec, tl: &Timeline) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(std::path::Path::new(spec.manifest_dir).join("tests/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_input_file(spec.file);
    settings.set_description(format!(
        "behaviour of {} (host-independent: mechanisms and observers are in the journal)",
        spec.name
    ));
    let normalised = mask_addresses(snapshot_view(tl).normalised(behaviour));
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
/// The events after which the fault no longer acts at all: its mechanism is undone, or the
/// healed service serves again (our readiness probe, after a restart or a partition).
const FAULT_LIFTED_KINDS: &[&str] = &[
    "network_restored",
    "pool_released",
    "toxic_removed",
    "netem_removed",
    "service_ready",
];

/// The timeline as snapshots see it; metrics and the journal keep the real times.
/// - A request that started after `fault_healed` but before the fault was lifted (removing a
///   partition's rules and listing them back takes 10-40 ms, more on a loaded machine; a killed
///   database restarts and replays its WAL for a second) met the fault, not the recovery, and
///   whether one did is a matter of timing: such failures, and a `last_error` among them, count
///   in the fault phase.
/// - A request that started before the fault went in but failed after it (in flight when a
///   partition's rules landed) met the fault; whether one was in flight is timing: such
///   failures count in the fault phase.
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
    let (Some(inject), Some(heal)) = (start("fault"), start("recovery")) else {
        return Cow::Borrowed(tl);
    };
    let steady = start("steady").unwrap_or(f64::INFINITY);
    // Our readiness probe and the workload race to see a restarted service back: when the probe
    // is later, every failure before the steady window met the fault; hence the cap, not a filter.
    let lifted = tl
        .events
        .iter()
        .filter(|e| FAULT_LIFTED_KINDS.contains(&e.kind.as_str()) && e.t_ms >= heal)
        .map(|e| e.t_ms)
        .fold(heal, f64::max)
        .min(steady);
    // A heal that restarts a container: until the steady window, clients meet a service that
    // is still starting or their connections to the killed one (which of them fails first
    // after our probe saw it back is timing); the budget measures how long that lasts.
    let restarted = tl.events.iter().any(|e| {
        e.t_ms >= heal
            && e.t_ms < steady
            && (e.kind == "container_restarted" || e.kind == "container_start")
    });
    let lifted = if restarted { steady } else { lifted };
    let met_fault = |ok: bool, t: f64| !ok && t >= heal && t < lifted;
    let in_flight =
        |s: &crate::timeline::Sample| !s.ok && s.t_ms < inject && s.t_ms + s.latency_ms >= inject;
    let late_heal = |e: &Event| HEAL_DONE_KINDS.contains(&e.kind.as_str()) && e.t_ms >= steady;
    if !tl
        .samples
        .iter()
        .any(|s| met_fault(s.ok, s.t_ms) || in_flight(s))
        && !tl.events.iter().any(late_heal)
    {
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
    for s in v.samples.iter_mut().filter(|s| in_flight(s)) {
        s.t_ms = inject;
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
        for v in f.params.values_mut() {
            *v = mask_ipv4(v);
        }
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

#[cfg(test)]
mod tests {
    use super::{Event, behaviour, mask_ipv4, snapshot_view};
    use crate::timeline::Timeline;

    fn timeline(lifted_ms: Option<f64>) -> Timeline {
        let mut events = vec![
            serde_json::json!({"t_ms": 2000.0, "kind": "fault_healed", "source": "runtime", "container": "postgres"}),
            serde_json::json!({"t_ms": 2010.0, "kind": "last_error", "source": "workload"}),
            serde_json::json!({"t_ms": 2300.0, "kind": "recovered", "source": "workload"}),
            serde_json::json!({"t_ms": 2500.0, "kind": "container_start", "source": "docker_events", "container": "redis"}),
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
    fn a_request_in_flight_when_the_fault_went_in_failed_in_the_fault_phase() {
        let errors = |tl: &Timeline, phase: &str| {
            snapshot_view(tl)
                .normalised(behaviour)
                .phases
                .iter()
                .find(|p| p.phase == phase)
                .map(|p| p.errors)
        };
        let mut tl = timeline(Some(2030.0));
        // Started 3 ms before the injection, failed 40 ms later: the partition's doing.
        tl.samples.push(
            serde_json::from_value(
                serde_json::json!({"t_ms": 997.0, "latency_ms": 40.0, "ok": false, "status": 503}),
            )
            .expect("a sample"),
        );
        tl.samples.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        tl.compute_metrics(1000.0, 2000.0, Some(2300.0), 3000.0);
        assert_eq!(
            tl.metrics.phases[0].failed, 1,
            "the journal keeps it where it started"
        );
        assert_eq!(errors(&tl, "baseline"), Some(false));
        assert_eq!(errors(&tl, "fault"), Some(true));
        // One that failed before the injection is the baseline's.
        tl.samples[1].latency_ms = 2.0;
        tl.compute_metrics(1000.0, 2000.0, Some(2300.0), 3000.0);
        assert_eq!(errors(&tl, "baseline"), Some(true));
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
        let lifted = snapshot_view(&timeline(Some(2030.0))).normalised(behaviour);
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
        assert_eq!(phase_of(&lifted, "container_started"), "recovery");
        // Without a lifted partition, a failure after the heal is the recovery's.
        let kept = snapshot_view(&timeline(None)).normalised(behaviour);
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
    fn every_observer_tier_gives_the_same_behaviour() {
        use crate::observe::Source;
        let ev = |kind: &str, source: Source, detail: &[(&str, &str)]| Event {
            t_ms: 0.0,
            kind: kind.into(),
            source,
            container: Some("postgres".into()),
            detail: detail
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let kinds = |e: &Event| {
            behaviour(e)
                .into_iter()
                .map(|b| format!("{} {}", b.kind, b.detail.unwrap_or_default()))
                .collect::<Vec<_>>()
        };
        // The OOM kill, whoever saw it.
        for source in [
            Source::Bpf,
            Source::Cgroup,
            Source::Kmsg,
            Source::DockerEvents,
        ] {
            assert_eq!(
                kinds(&ev("oom_kill", source, &[("pid", "7")])),
                ["oom_kill "]
            );
        }
        // A signal to one process is eBPF's alone: journal, not snapshot.
        assert!(kinds(&ev("signal", Source::Bpf, &[("signal", "15")])).is_empty());
        assert!(kinds(&ev("process_exit", Source::Bpf, &[("signal", "9")])).is_empty());
        // The container's death is seen by every tier, with its signal.
        assert_eq!(
            kinds(&ev(
                "container_die",
                Source::DockerEvents,
                &[("signal", "9"), ("exit_code", "137")]
            )),
            ["container_died signal=9"]
        );
        // The fault machinery's bookkeeping and timing-bound measurements are not behaviour.
        assert!(kinds(&ev("toxic_added", Source::Runtime, &[])).is_empty());
        assert!(kinds(&ev("proxy_stats", Source::Proxy, &[])).is_empty());
        assert!(kinds(&ev("tcp_retransmit", Source::Bpf, &[])).is_empty());
        assert!(kinds(&ev("pg_connections", Source::Service, &[])).is_empty());
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
