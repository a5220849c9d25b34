//! Experiment 15: HTTP faults in front of the order service, per request.
//!
//! The fault proxy sits between nginx and the order service (the runtime puts it there for an
//! HTTP fault, as for latency) and acts on whole requests: it answers a share of them itself,
//! holds them, or resets their connection, optionally only for a method and a path prefix. The
//! client-visible effect is measured at the client, through nginx.
use chaos_runtime::timeline::Sample;
use chaos_runtime::{ChaosRun, chaos_test};
use chaos_trading::system;

fn in_phase<'a>(run: &'a ChaosRun, name: &str) -> Vec<&'a Sample> {
    let tl = run.timeline();
    let ph = tl
        .phases
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no {name} phase"));
    tl.samples
        .iter()
        .filter(|s| s.t_ms >= ph.start_ms && s.t_ms < ph.end_ms)
        .collect()
}

/// The asked share of POST /orders answered 503 by the proxy.
const ABORT_PCT: f64 = 20.0;

// The proxy's share is exact over the requests it sees; the client's measure can differ by
// the requests in flight when the toxic went in or out, so ±3 points.
#[chaos_test(
    fault = "http_abort",
    target = "orders",
    ratio = "20%",
    status = "503",
    method = "POST",
    path = "/orders",
    duration = "4s",
    recover_within = "2s"
)]
async fn a_fifth_of_the_orders_are_refused_with_503_and_the_rest_go_through(run: ChaosRun) {
    let text = run.timeline().render_text();
    let fault = in_phase(&run, "fault");
    let refused = fault.iter().filter(|s| s.status == 503).count();
    let other_failures = fault.iter().filter(|s| !s.ok && s.status != 503).count();
    let pct = 100.0 * refused as f64 / fault.len().max(1) as f64;
    let hit: u64 = run
        .events("toxic_removed")
        .first()
        .and_then(|e| e.detail.get("requests_hit"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    eprintln!(
        "fault phase: {} orders, {refused} answered 503 ({pct:.2} %, asked {ABORT_PCT} %), \
         {other_failures} other failures; the proxy hit {hit} requests",
        fault.len()
    );
    assert!(
        (pct - ABORT_PCT).abs() <= 3.0,
        "{pct:.2} % refused, asked {ABORT_PCT} %:\n{text}"
    );
    assert_eq!(other_failures, 0, "orders failed otherwise:\n{text}");
    assert!(
        hit as usize >= refused,
        "the proxy hit {hit}, the client saw {refused}"
    );
    // Refused orders were never placed: nothing acknowledged is missing.
    assert!(
        run.lost_writes().is_empty(),
        "lost acknowledged orders: {:?}",
        run.lost_writes()
    );
}

// Only reads of one order (`GET /orders/<id>`) are held 100 ms; the steady state allows it
// (p99 budget 200 ms), so the test is about the added latency, measured at the client.
#[chaos_test(
    fault = "http_delay",
    target = "orders",
    latency = "100ms",
    method = "GET",
    path = "/orders/",
    workload = "reads",
    duration = "4s",
    recover_within = "2s"
)]
async fn held_reads_arrive_a_hundred_milliseconds_later(run: ChaosRun) {
    let text = run.timeline().render_text();
    let p50 =
        |v: &[&Sample]| chaos_runtime::timeline::percentile(v.iter().map(|s| s.latency_ms), 0.5);
    let (base, fault) = (in_phase(&run, "baseline"), in_phase(&run, "fault"));
    let added = p50(&fault) - p50(&base);
    eprintln!(
        "reads: baseline p50 {:.2} ms, fault p50 {:.2} ms: +{added:.2} ms (asked 100 ms); {} failed",
        p50(&base),
        p50(&fault),
        fault.iter().filter(|s| !s.ok).count()
    );
    assert!(
        (95.0..=115.0).contains(&added),
        "reads were held {added:.2} ms, asked 100 ms:\n{text}"
    );
    assert!(fault.iter().all(|s| s.ok), "held reads failed:\n{text}");
}

// A reset connection between nginx and the service is a 502 for the client.
#[chaos_test(
    fault = "http_reset",
    target = "orders",
    ratio = "10%",
    duration = "4s",
    recover_within = "2s"
)]
async fn reset_requests_reach_the_client_as_bad_gateway(run: ChaosRun) {
    let text = run.timeline().render_text();
    let fault = in_phase(&run, "fault");
    let bad = fault.iter().filter(|s| s.status == 502).count();
    let pct = 100.0 * bad as f64 / fault.len().max(1) as f64;
    eprintln!(
        "fault phase: {} orders, {bad} answered 502 ({pct:.2} %, asked 10 %), {} other failures",
        fault.len(),
        fault.iter().filter(|s| !s.ok && s.status != 502).count()
    );
    assert!((pct - 10.0).abs() <= 3.0, "{pct:.2} % reset:\n{text}");
    assert!(run.lost_writes().is_empty(), "{:?}", run.lost_writes());
}
