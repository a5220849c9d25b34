//! The timeline of a run: phases, events, workload samples and the metrics derived from them.
//!
//! Everything here is pure: built from samples and observations, unit-tested without Docker.
//! Times are milliseconds since the run started (`t0`), on CLOCK_MONOTONIC.
use crate::observe::{SignalChoice, Source};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One workload request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Start, ms since t0.
    pub t_ms: f64,
    /// Latency, ms.
    pub latency_ms: f64,
    /// Whether it met the steady-state contract (2xx).
    pub ok: bool,
    /// HTTP status (0 when no answer).
    pub status: u16,
    /// Why it failed (`connection refused`, `timeout`, `HTTP 503: ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The stable class of the failure (`http_5xx`, `timeout`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The workload's tags (e.g. `cache = hit`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl Sample {
    /// A tag of this request, e.g. `s.tag("cache") == Some("hit")`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

/// One thing that happened, from any source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When, ms since t0.
    pub t_ms: f64,
    /// What (`fault_injected`, `container_die`, `oom_kill`, `first_error`, ...).
    pub kind: String,
    /// Who saw it.
    pub source: Source,
    /// In which service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Details.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub detail: BTreeMap<String, String>,
}

/// A named span of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// `baseline`, `fault`, `recovery`, `steady`.
    pub name: String,
    /// Start, ms since t0.
    pub start_ms: f64,
    /// End, ms since t0.
    pub end_ms: f64,
}

/// Request statistics of one phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    /// Phase name.
    pub phase: String,
    /// Requests that succeeded.
    pub ok: usize,
    /// Requests that failed.
    pub failed: usize,
    /// Median latency of all requests, ms.
    pub p50_ms: f64,
    /// 99th percentile latency of all requests, ms.
    pub p99_ms: f64,
}

/// What was injected, how, and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Fault kind (`kill`, `network_partition`, ...).
    pub kind: String,
    /// Target role.
    pub target: String,
    /// The mechanism that acted (`docker kill -s KILL`, `fault proxy latency toxic`, `blkio.throttle`...).
    pub mechanism: String,
    /// Injected at, ms since t0.
    pub injected_ms: f64,
    /// Healed at, ms since t0 (None when healing failed).
    pub healed_ms: Option<f64>,
    /// Injection latency, ms: from `injected_ms` (the run decided to inject) to the fault in
    /// effect (container killed, rule installed, toxic active, limit written, connections
    /// held; see `fault::in_effect`). None in journals written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject_ms: Option<f64>,
    /// Heal latency, ms: from `healed_ms` (the run decided to heal) to the fault undone
    /// (container started again, rule removed, toxic gone, limit restored, connections
    /// released), before any wait for the service to serve again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal_ms: Option<f64>,
    /// Parameters as declared.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

/// The numbers budgets are asserted against.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// First failed request after injection, ms after injection.
    pub time_to_first_error_ms: Option<f64>,
    /// From the first failed request's start to the last failed request's end, ms.
    pub error_window_ms: Option<f64>,
    /// From heal to the start of the first window in which the steady state held again, ms.
    pub time_to_recover_ms: Option<f64>,
    /// The recovery budget, ms.
    pub recover_budget_ms: f64,
    /// Per phase request statistics.
    pub phases: Vec<PhaseStats>,
    /// Writes acknowledged by the service.
    pub acknowledged_writes: usize,
    /// Writes whose outcome is unknown: the service said yes (2xx) but the reply carried no
    /// parseable key, so the ledger cannot check them. Counted and shown, never dropped.
    #[serde(default)]
    pub indeterminate_writes: usize,
}

impl Metrics {
    /// Request statistics of a phase by name (`baseline`, `fault`, `recovery`, `steady`).
    pub fn phase(&self, name: &str) -> Option<&PhaseStats> {
        self.phases.iter().find(|p| p.phase == name)
    }
}

/// The steady-state hypothesis: what "the system works" means, per window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis {
    /// Window length, ms.
    pub window_ms: f64,
    /// Minimum share of successful requests in a window.
    pub min_ok_ratio: f64,
    /// Maximum p99 latency in a window, ms (None during the baseline, derived from it afterwards).
    pub max_p99_ms: Option<f64>,
    /// Minimum requests in a window for it to count.
    pub min_samples: usize,
}

impl Hypothesis {
    /// Does the window of samples hold the hypothesis?
    pub fn holds(&self, window: &[&Sample]) -> bool {
        if window.len() < self.min_samples {
            return false;
        }
        let ok = window.iter().filter(|s| s.ok).count();
        if (ok as f64) < self.min_ok_ratio * window.len() as f64 {
            return false;
        }
        match self.max_p99_ms {
            Some(max) => percentile(window.iter().map(|s| s.latency_ms), 0.99) <= max,
            None => true,
        }
    }

    /// The first start time `t >= from_ms` of a sample such that the samples starting in
    /// `[t, t + window)` hold the hypothesis, considering only windows that end by `until_ms`
    /// (later windows may still have requests in flight).
    pub fn first_holding(&self, samples: &[Sample], from_ms: f64, until_ms: f64) -> Option<f64> {
        let mut sorted: Vec<&Sample> = samples.iter().filter(|s| s.t_ms >= from_ms).collect();
        sorted.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        let mut end = 0;
        for i in 0..sorted.len() {
            let t = sorted[i].t_ms;
            if t + self.window_ms > until_ms {
                return None;
            }
            // Windows start on a success: recovery is the first good request of a good window.
            if !sorted[i].ok {
                continue;
            }
            end = end.max(i);
            while end < sorted.len() && sorted[end].t_ms < t + self.window_ms {
                end += 1;
            }
            if self.holds(&sorted[i..end]) {
                return Some(t);
            }
        }
        None
    }
}

/// Percentile (nearest rank) of a set of values; 0 when empty.
pub fn percentile(values: impl Iterator<Item = f64>, q: f64) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// The whole record of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// `module::test_fn`.
    pub name: String,
    /// Wall-clock start, ms since the Unix epoch (for reports only).
    pub started_unix_ms: u64,
    /// Phases in order.
    pub phases: Vec<Phase>,
    /// Faults in order of injection.
    pub faults: Vec<FaultRecord>,
    /// Events in time order.
    pub events: Vec<Event>,
    /// Workload samples in start order.
    pub samples: Vec<Sample>,
    /// The hypothesis used for recovery.
    pub hypothesis: Hypothesis,
    /// Derived numbers.
    pub metrics: Metrics,
    /// Which source observed each signal.
    pub observers: Vec<SignalChoice>,
    /// Acknowledged writes that could not be read back.
    pub lost_writes: Vec<crate::invariant::Violation>,
    /// Logs and other text attached to the run (e.g. `nginx.log`: the faulted service's own log).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attachments: BTreeMap<String, String>,
}

impl Timeline {
    /// Phase of a time, by name (`after` when past the end).
    pub fn phase_at(&self, t_ms: f64) -> &str {
        self.phases
            .iter()
            .find(|p| t_ms >= p.start_ms && t_ms < p.end_ms)
            .map(|p| p.name.as_str())
            .unwrap_or(if self.phases.first().is_some_and(|p| t_ms < p.start_ms) {
                "before"
            } else {
                "after"
            })
    }

    /// Events of one kind.
    pub fn events_of(&self, kind: &str) -> Vec<&Event> {
        self.events.iter().filter(|e| e.kind == kind).collect()
    }

    /// Computes per-phase statistics and the error metrics from the samples.
    pub fn compute_metrics(
        &mut self,
        inject_ms: f64,
        heal_ms: f64,
        recovered_ms: Option<f64>,
        budget_ms: f64,
    ) {
        let mut phases = Vec::new();
        for p in &self.phases {
            let in_phase: Vec<&Sample> = self
                .samples
                .iter()
                .filter(|s| s.t_ms >= p.start_ms && s.t_ms < p.end_ms)
                .collect();
            phases.push(PhaseStats {
                phase: p.name.clone(),
                ok: in_phase.iter().filter(|s| s.ok).count(),
                failed: in_phase.iter().filter(|s| !s.ok).count(),
                p50_ms: round2(percentile(in_phase.iter().map(|s| s.latency_ms), 0.5)),
                p99_ms: round2(percentile(in_phase.iter().map(|s| s.latency_ms), 0.99)),
            });
        }
        let failures: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| !s.ok && s.t_ms >= inject_ms)
            .collect();
        let first = failures.iter().map(|s| s.t_ms).min_by(f64::total_cmp);
        let last_end = failures
            .iter()
            .map(|s| s.t_ms + s.latency_ms)
            .max_by(f64::total_cmp);
        self.metrics.time_to_first_error_ms = first.map(|f| round2(f - inject_ms));
        self.metrics.error_window_ms = first.zip(last_end).map(|(f, l)| round2(l - f));
        self.metrics.time_to_recover_ms = recovered_ms.map(|r| round2((r - heal_ms).max(0.0)));
        self.metrics.recover_budget_ms = budget_ms;
        self.metrics.phases = phases;
    }

    /// A compact text rendering for terminals and CI logs.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "timeline of {}", self.name);
        for f in &self.faults {
            let _ = writeln!(
                out,
                "  fault: {} {} via {} (injected +{:.3}s{}, healed {}{})",
                f.kind,
                f.target,
                f.mechanism,
                f.injected_ms / 1000.0,
                after(", in effect", f.inject_ms),
                f.healed_ms
                    .map(|h| format!("+{:.3}s", h / 1000.0))
                    .unwrap_or_else(|| "never".into()),
                after(", undone", f.heal_ms),
            );
        }
        let mut lines: Vec<(f64, String)> = Vec::new();
        for (p, st) in self.phases.iter().zip(&self.metrics.phases) {
            lines.push((
                p.start_ms,
                format!(
                    "== {:<9} {:>7.1}s long  ok={} failed={} p50={:.1}ms p99={:.1}ms",
                    p.name,
                    (p.end_ms - p.start_ms) / 1000.0,
                    st.ok,
                    st.failed,
                    st.p50_ms,
                    st.p99_ms
                ),
            ));
        }
        // Collapse repeated events (same kind/source/container) into one line with a count.
        let mut seen: BTreeMap<(String, String, String), (f64, usize, String)> = BTreeMap::new();
        for e in &self.events {
            let key = (
                e.kind.clone(),
                format!("{:?}", e.source),
                e.container.clone().unwrap_or_default(),
            );
            let detail: Vec<String> = e.detail.iter().map(|(k, v)| format!("{k}={v}")).collect();
            seen.entry(key)
                .and_modify(|x| x.1 += 1)
                .or_insert((e.t_ms, 1, detail.join(" ")));
        }
        for ((kind, source, container), (t, n, detail)) in seen {
            let count = if n > 1 {
                format!(" (x{n})")
            } else {
                String::new()
            };
            lines.push((
                t,
                format!(
                    "   {kind} {container} [{}] {detail}{count}",
                    source.to_lowercase()
                ),
            ));
        }
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (t, l) in lines {
            let _ = writeln!(out, "  +{:>8.3}s {l}", t / 1000.0);
        }
        let m = &self.metrics;
        let fmt = |v: Option<f64>| {
            v.map(|x| format!("{:.0} ms", x))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            out,
            "  time to first error {}, error window {}, time to recover {} (budget {:.0} ms), acknowledged writes {} ({} indeterminate), lost writes {}",
            fmt(m.time_to_first_error_ms),
            fmt(m.error_window_ms),
            fmt(m.time_to_recover_ms),
            m.recover_budget_ms,
            m.acknowledged_writes,
            m.indeterminate_writes,
            self.lost_writes.len()
        );
        out
    }

    /// The normalised timeline for snapshots: what the system did, stable from run to run and
    /// from host to host.
    ///
    /// Absolute times jitter, so they are dropped; how this host did things (the mechanism of a
    /// fault, which observer saw what) stays in the journal and the report. What is left: the
    /// faults by kind, target and parameters; the ordered phases with whether requests failed in
    /// them; and each distinct behaviour with the phase it FIRST appeared in. `behaviour` maps an
    /// event to the behaviours it shows (none for a mechanism's own bookkeeping); two observers
    /// that saw the same thing map to the same behaviour and count once.
    pub fn normalised(&self, behaviour: impl Fn(&Event) -> Vec<Behaviour>) -> Normalised {
        // (kind, container, detail) -> earliest phase index.
        let mut first: BTreeMap<(String, String, String), usize> = BTreeMap::new();
        for e in &self.events {
            let phase = self.phase_at(e.t_ms);
            if phase == WARMUP || phase == "before" {
                continue;
            }
            let idx = self
                .phases
                .iter()
                .position(|p| p.name == phase)
                .unwrap_or(usize::MAX);
            for b in behaviour(e) {
                let key = (
                    b.kind,
                    e.container.clone().unwrap_or_default(),
                    b.detail.unwrap_or_default(),
                );
                let at = first.entry(key).or_insert(idx);
                *at = (*at).min(idx);
            }
        }
        let phase_name = |i: usize| {
            self.phases
                .get(i)
                .map(|p| p.name.clone())
                .unwrap_or_else(|| "after".into())
        };
        let mut events: Vec<(usize, String, String, String)> = first
            .into_iter()
            .map(|((kind, container, detail), i)| (i, kind, container, detail))
            .collect();
        events.sort();
        let some = |s: String| (!s.is_empty()).then_some(s);
        Normalised {
            faults: self
                .faults
                .iter()
                .map(|f| NormalisedFault {
                    fault: f.kind.clone(),
                    target: f.target.clone(),
                    params: f.params.clone(),
                })
                .collect(),
            phases: self
                .phases
                .iter()
                .zip(&self.metrics.phases)
                .filter(|(p, _)| p.name != WARMUP)
                .map(|(p, s)| NormalisedPhase {
                    phase: p.name.clone(),
                    errors: s.failed > 0,
                })
                .collect(),
            events: events
                .into_iter()
                .map(|(i, kind, container, detail)| NormalisedEvent {
                    phase: phase_name(i),
                    kind,
                    service: some(container),
                    detail: some(detail),
                })
                .collect(),
        }
    }
}

/// One behaviour an event shows, as snapshots name it (see [`Timeline::normalised`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behaviour {
    /// What happened (`killed`, `oom_kill`, `first_error`...).
    pub kind: String,
    /// A detail that is part of the behaviour (`signal=9`, `reason=timeout`), not of the host.
    pub detail: Option<String>,
}

impl Behaviour {
    /// A behaviour without detail.
    pub fn new(kind: &str) -> Self {
        Self {
            kind: kind.into(),
            detail: None,
        }
    }

    /// A behaviour with a detail.
    pub fn with(kind: &str, detail: String) -> Self {
        Self {
            kind: kind.into(),
            detail: Some(detail),
        }
    }
}

/// The snake_case name of a source, as serialized.
pub fn source_name(s: Source) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A timeline with the jitter and the host taken out: what snapshots hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalised {
    /// Faults by kind, target and parameters.
    pub faults: Vec<NormalisedFault>,
    /// Phases in order, with whether requests failed in them.
    pub phases: Vec<NormalisedPhase>,
    /// Distinct behaviours, each in the phase it first appeared in.
    #[serde(rename = "behaviour")]
    pub events: Vec<NormalisedEvent>,
}

/// `, in effect after 3.2 ms` when a latency was recorded, nothing otherwise.
fn after(what: &str, ms: Option<f64>) -> String {
    ms.map(|ms| format!("{what} after {ms:.1} ms"))
        .unwrap_or_default()
}

/// A fault in a snapshot: what was done, not how this host did it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormalisedFault {
    /// Kind.
    pub fault: String,
    /// Target role.
    pub target: String,
    /// Parameters as declared.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

/// A phase in a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormalisedPhase {
    /// Name.
    pub phase: String,
    /// Whether any request failed in it (counts jitter; their presence does not).
    pub errors: bool,
}

/// The phase before the baseline window: the stack warming up, left out of snapshots.
pub const WARMUP: &str = "warmup";

/// A behaviour in a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormalisedEvent {
    /// Phase it first appeared in.
    pub phase: String,
    /// What happened.
    pub kind: String,
    /// The service (role) it happened to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Its detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: f64, ok: bool) -> Sample {
        Sample {
            t_ms: t,
            latency_ms: 5.0,
            ok,
            status: if ok { 201 } else { 503 },
            error: None,
            class: None,
            tags: BTreeMap::new(),
        }
    }

    fn hyp() -> Hypothesis {
        Hypothesis {
            window_ms: 1000.0,
            min_ok_ratio: 0.99,
            max_p99_ms: None,
            min_samples: 5,
        }
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v = (1..=100).map(|x| x as f64);
        assert_eq!(percentile(v.clone(), 0.5), 50.0);
        assert_eq!(percentile(v, 0.99), 99.0);
        assert_eq!(percentile(std::iter::empty(), 0.5), 0.0);
    }

    #[test]
    fn recovery_is_first_good_request_of_a_good_window() {
        let mut samples = Vec::new();
        for i in 0..30 {
            samples.push(s(i as f64 * 100.0, !(5..12).contains(&i)));
        }
        // Failures at 500..1100 ms; the first good window starts at 1200 ms.
        assert_eq!(hyp().first_holding(&samples, 400.0, 3000.0), Some(1200.0));
        // A window that is not over yet does not count.
        assert_eq!(hyp().first_holding(&samples, 400.0, 2100.0), None);
    }

    #[test]
    fn a_late_failure_pushes_recovery_past_it() {
        let mut samples: Vec<Sample> = (0..40).map(|i| s(i as f64 * 100.0, true)).collect();
        samples[15].ok = false; // 1500 ms
        assert_eq!(hyp().first_holding(&samples, 1000.0, 4000.0), Some(1600.0));
    }

    #[test]
    fn latency_ceiling_counts() {
        let mut h = hyp();
        h.max_p99_ms = Some(10.0);
        let mut samples: Vec<Sample> = (0..40).map(|i| s(i as f64 * 100.0, true)).collect();
        for x in samples.iter_mut().take(20) {
            x.latency_ms = 50.0;
        }
        assert_eq!(h.first_holding(&samples, 0.0, 4000.0), Some(2000.0));
    }

    fn kill(inject_ms: Option<f64>, heal_ms: Option<f64>) -> FaultRecord {
        FaultRecord {
            kind: "kill".into(),
            target: "postgres".into(),
            mechanism: "docker kill -s KILL".into(),
            injected_ms: 1000.0,
            healed_ms: Some(3000.0),
            inject_ms,
            heal_ms,
            params: BTreeMap::new(),
        }
    }

    fn with_faults(faults: Vec<FaultRecord>) -> Timeline {
        Timeline {
            name: "t".into(),
            started_unix_ms: 0,
            phases: vec![],
            faults,
            events: vec![],
            samples: vec![],
            hypothesis: hyp(),
            metrics: Metrics::default(),
            observers: vec![],
            lost_writes: vec![],
            attachments: BTreeMap::new(),
        }
    }

    #[test]
    fn fault_latencies_are_journal_fields_and_optional() {
        let v = serde_json::to_value(kill(Some(3.26), Some(180.5))).unwrap();
        assert_eq!(v["inject_ms"], serde_json::json!(3.26));
        assert_eq!(v["heal_ms"], serde_json::json!(180.5));
        let back: FaultRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, kill(Some(3.26), Some(180.5)));
        // Not recorded: not written; a journal from before they existed still reads.
        let v = serde_json::to_value(kill(None, None)).unwrap();
        assert!(
            v.get("inject_ms").is_none() && v.get("heal_ms").is_none(),
            "{v}"
        );
        let old = serde_json::json!({"kind": "kill", "target": "postgres",
            "mechanism": "docker kill -s KILL", "injected_ms": 1000.0, "healed_ms": 3000.0});
        let old: FaultRecord = serde_json::from_value(old).unwrap();
        assert_eq!(old, kill(None, None));
    }

    #[test]
    fn the_text_timeline_shows_fault_latencies_when_recorded() {
        let text = with_faults(vec![kill(Some(3.26), Some(180.5))]).render_text();
        assert!(
            text.contains(
                "fault: kill postgres via docker kill -s KILL (injected +1.000s, in effect after \
                 3.3 ms, healed +3.000s, undone after 180.5 ms)"
            ),
            "{text}"
        );
        let text = with_faults(vec![kill(None, None)]).render_text();
        assert!(
            text.contains("(injected +1.000s, healed +3.000s)"),
            "{text}"
        );
    }

    #[test]
    fn snapshots_never_see_fault_latencies() {
        // The normalised view (what insta snapshots) is the same whatever the latencies were.
        let view = |f| serde_json::to_string(&with_faults(vec![f]).normalised(|_| vec![])).unwrap();
        let measured = view(kill(Some(3.26), Some(180.5)));
        assert_eq!(measured, view(kill(Some(41.0), None)));
        assert_eq!(measured, view(kill(None, None)));
        assert!(!measured.contains("inject") && !measured.contains("heal_ms"));
    }

    #[test]
    fn normalised_keeps_first_phase_and_drops_times() {
        let mut tl = Timeline {
            name: "t".into(),
            started_unix_ms: 0,
            phases: vec![
                Phase {
                    name: "baseline".into(),
                    start_ms: 0.0,
                    end_ms: 1000.0,
                },
                Phase {
                    name: "fault".into(),
                    start_ms: 1000.0,
                    end_ms: 2000.0,
                },
            ],
            faults: vec![],
            events: vec![],
            samples: vec![s(10.0, true), s(1500.0, false)],
            hypothesis: hyp(),
            metrics: Metrics::default(),
            observers: vec![],
            lost_writes: vec![],
            attachments: BTreeMap::new(),
        };
        for (t, src) in [
            (1500.0, Source::Bpf),
            (1200.0, Source::Bpf),
            (1800.0, Source::DockerEvents),
        ] {
            tl.events.push(Event {
                t_ms: t,
                kind: "process_exit".into(),
                source: src,
                container: Some("postgres".into()),
                detail: BTreeMap::from([
                    ("signal".into(), "9".into()),
                    ("pid".into(), format!("{t}")),
                ]),
            });
        }
        tl.compute_metrics(1000.0, 2000.0, None, 5000.0);
        let n = tl.normalised(|e| {
            vec![Behaviour::with(
                "killed",
                format!("signal={}", e.detail["signal"]),
            )]
        });
        // Three observations of one behaviour: once, in the phase it first appeared in.
        assert_eq!(n.events.len(), 1);
        assert_eq!(n.events[0].phase, "fault");
        assert_eq!(n.events[0].detail.as_deref(), Some("signal=9"));
        assert_eq!(n.events[0].service.as_deref(), Some("postgres"));
        assert!(n.phases[1].errors);
    }
}
