//! Experiment 09: network latency.
//!
//! 100 ms are added to Redis's answers (its egress) by the fault proxy that sits between the
//! order service and Redis (this kernel has no sch_netem; `CHAOS_LATENCY=auto` says so in the
//! mechanism). The measurement is built so that one workload request crosses the proxy exactly
//! once: `workload = "reads"` over a warm cache, where every `GET /orders/{id}` answered with
//! `x-cache: hit` is one Redis `GET` (request and answer, one round trip) and nothing else
//! behind nginx. So the p50 of cache hits must move by the injected latency, and only by it.
//! (Writes, 1 in 10 requests of this workload, never reach Redis; they are left out.)
//!
//! PostgreSQL would be a worse instrument: a `POST /orders` on a warm pooled connection is one
//! round trip (Bind/Execute/Sync in one flight, the statement prepared once per connection),
//! but every new connection costs the startup and a Parse round trip more, and a commit's
//! fsync varies by milliseconds, which would blur a ±2 ms measurement.
use chaos_runtime::timeline::{Sample, percentile};
use chaos_runtime::{ChaosRun, chaos_test};
use chaos_trading::system;

/// Cache hits in the baseline phase, and those that started after the toxic was in place and
/// ended before the heal began (requests in flight at either edge got part of the delay).
fn hits(run: &ChaosRun) -> (Vec<f64>, Vec<f64>) {
    let tl = run.timeline();
    let baseline = tl
        .phases
        .iter()
        .find(|p| p.name == "baseline")
        .expect("baseline phase");
    let added = run
        .events("toxic_added")
        .first()
        .map(|e| e.t_ms)
        .expect("toxic_added event");
    let healing = run
        .events("fault_healed")
        .first()
        .map(|e| e.t_ms)
        .expect("fault_healed event");
    let hit = |s: &&Sample| s.ok && s.tag("cache") == Some("hit");
    let base = tl
        .samples
        .iter()
        .filter(hit)
        .filter(|s| s.t_ms >= baseline.start_ms && s.t_ms + s.latency_ms < baseline.end_ms)
        .map(|s| s.latency_ms)
        .collect();
    let fault = tl
        .samples
        .iter()
        .filter(hit)
        .filter(|s| s.t_ms > added && s.t_ms + s.latency_ms < healing)
        .map(|s| s.latency_ms)
        .collect();
    (base, fault)
}

fn p(v: &[f64], q: f64) -> f64 {
    percentile(v.iter().copied(), q)
}

fn proof(run: &ChaosRun) {
    let f = &run.timeline().faults[0];
    assert!(
        f.mechanism
            .starts_with("fault proxy latency toxic (downstream)"),
        "mechanism: {}",
        f.mechanism
    );
    let stats = run.events("proxy_stats");
    let applied: u64 = stats
        .first()
        .and_then(|e| e.detail.get("toxics_applied"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(applied > 0, "the proxy's stats show no delayed chunk");
    eprintln!("mechanism: {}; proxy delayed {applied} chunks", f.mechanism);
}

// Measured over 5 runs: cache-hit p50 1.6-2.2 ms in the baseline, 102.1-102.9 ms under the
// toxic: a shift of 99.89-100.80 ms; no hit under 100.93 ms.
// Budget: the shift within 100 ± 2 ms, as asked of the mechanism on this kernel: the proxy's
// own overhead is inside the baseline (the proxy fronts Redis for the whole run), so only the
// toxic moves the median, and 2 ms leaves room for scheduling noise on 2 cores while still
// catching a toxic applied twice per request, to both directions, or not at all.
#[chaos_test(
    fault = "latency",
    target = "redis",
    latency = "100ms",
    direction = "egress",
    duration = "4s",
    recover_within = "1s",
    workload = "reads"
)]
async fn cache_reads_slow_down_by_exactly_the_injected_latency(run: ChaosRun) {
    proof(&run);
    let asked = injected_ms(&run, "latency_ms");
    let (base, fault) = hits(&run);
    let shift = p(&fault, 0.5) - p(&base, 0.5);
    eprintln!(
        "hits: baseline n={} p50 {:.2} p99 {:.2} | fault n={} min {:.2} p50 {:.2} p99 {:.2} | p50 shift {:.2} ms",
        base.len(),
        p(&base, 0.5),
        p(&base, 0.99),
        fault.len(),
        p(&fault, 0.0),
        p(&fault, 0.5),
        p(&fault, 0.99),
        shift
    );
    assert!(
        base.len() >= 50 && fault.len() >= 50,
        "too few cache hits to measure: {} / {}",
        base.len(),
        fault.len()
    );
    assert!(
        (shift - asked).abs() <= 2.0,
        "p50 shifted by {shift:.2} ms, not {asked} ± 2 ms"
    );
    // The latency is a floor: no hit got through faster.
    assert!(
        p(&fault, 0.0) >= asked,
        "a hit took {:.2} ms under a {asked} ms latency",
        p(&fault, 0.0)
    );
    assert!(run.lost_writes().is_empty());
}

// Measured over 5 runs: hits under a 100 ± 40 ms toxic ranged 63-143.5 ms: p10 70.8-78.4,
// p50 105.8-111.8, p90 131.4-136.9, p95 134.5-139.0 ms; a p90-p10 spread of 56-65 ms against
// 1.3-2.9 ms in the baseline. Uniform jitter alone would give 64 ms; the answers share one
// multiplexed Redis connection and the proxy keeps their order, so an answer drawn short waits
// behind an earlier long one, which lifts the low end (and the median) a little.
// Budgets: nothing below 60 ms over the baseline's fastest, a p95 no more than 140 ms over the
// baseline's p99 (+10 ms of noise), a spread of at least 40 ms (a toxic without jitter spreads
// by ~2 ms).
#[chaos_test(
    fault = "latency",
    target = "redis",
    latency = "100ms",
    jitter = "40ms",
    direction = "egress",
    duration = "4s",
    recover_within = "1s",
    workload = "reads"
)]
async fn jitter_spreads_cache_read_latency(run: ChaosRun) {
    proof(&run);
    let (latency, jitter) = (
        injected_ms(&run, "latency_ms"),
        injected_ms(&run, "jitter_ms"),
    );
    let (base, fault) = hits(&run);
    let spread = |v: &[f64]| p(v, 0.9) - p(v, 0.1);
    eprintln!(
        "hits: baseline n={} p10 {:.2} p50 {:.2} p90 {:.2} | fault n={} min {:.2} p10 {:.2} p50 {:.2} p90 {:.2} p95 {:.2} max {:.2} | spread {:.2} -> {:.2} ms",
        base.len(),
        p(&base, 0.1),
        p(&base, 0.5),
        p(&base, 0.9),
        fault.len(),
        p(&fault, 0.0),
        p(&fault, 0.1),
        p(&fault, 0.5),
        p(&fault, 0.9),
        p(&fault, 0.95),
        p(&fault, 1.0),
        spread(&base),
        spread(&fault)
    );
    assert!(
        fault.len() >= 50,
        "too few cache hits to measure: {}",
        fault.len()
    );
    // Each answer is delayed by latency ± jitter, uniform: nothing below latency - jitter,
    // nothing far above latency + jitter.
    assert!(
        p(&fault, 0.0) >= latency - jitter + p(&base, 0.0) - 1.0,
        "min {:.2}",
        p(&fault, 0.0)
    );
    // The p95, not the max: one request in a few hundred meets a scheduling hiccup of the
    // 2-core host (seen once: 183 ms), which says nothing about the toxic.
    assert!(
        p(&fault, 0.95) <= latency + jitter + p(&base, 0.99) + 10.0,
        "p95 {:.2} ms: more than {} ms over the baseline",
        p(&fault, 0.95),
        latency + jitter
    );
    assert!(
        spread(&fault) >= jitter,
        "jitter did not spread latency: p90-p10 {:.2} ms",
        spread(&fault)
    );
    assert!(run.lost_writes().is_empty());
}

/// A parameter of the test's latency fault as injected (from the timeline, not restated here).
fn injected_ms(run: &ChaosRun, key: &str) -> f64 {
    run.timeline()
        .faults
        .iter()
        .find(|f| f.kind == "latency")
        .and_then(|f| f.params.get(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the latency fault has no {key}"))
}
