//! Experiment 08: nginx failure.
//!
//! The front door goes away in two ways. Killed (SIGKILL, restarted 2 s later): nothing
//! listens on its port any more, so clients are refused at once instead of waiting, and the
//! stack serves again as soon as nginx is back. Frozen (cgroup freezer, resumed 2 s later): the
//! kernel still accepts connections but nothing answers, so requests time out instead of being
//! refused, and resuming heals it. nginx's own log goes with the run.
use chaos_runtime::timeline::Sample;
use chaos_runtime::{ChaosRun, chaos_test};
use chaos_trading::system;

fn fault_samples(run: &ChaosRun) -> Vec<&Sample> {
    let f = &run.timeline().faults[0];
    let healed = f.healed_ms.expect("healed");
    run.timeline()
        .samples
        .iter()
        .filter(|s| s.t_ms >= f.injected_ms && s.t_ms < healed)
        .collect()
}

fn first_error_reason(run: &ChaosRun) -> String {
    run.events("first_error")
        .first()
        .and_then(|e| e.detail.get("reason").cloned())
        .unwrap_or_else(|| panic!("no first_error:\n{}", run.timeline().render_text()))
}

fn report(run: &ChaosRun, what: &str) {
    let m = run.metrics();
    let f = m.phase("fault").expect("fault phase");
    eprintln!(
        "{what}: fault phase ok {} failed {} p50 {} ms p99 {} ms; first error after {:?} ms, error window {:?} ms, recovered {:?} ms after heal",
        f.ok,
        f.failed,
        f.p50_ms,
        f.p99_ms,
        m.time_to_first_error_ms,
        m.error_window_ms,
        m.time_to_recover_ms
    );
}

// Measured over 5 runs: 397-406 requests failed while nginx was dead, 393-402 of them refused
// in under a millisecond (p99 of the fault phase 0.8-32 ms); the 4 others were connections
// dropped before the first refusal, 43-67 ms after the kill (in flight at the kill, or accepted
// by Docker's port proxy on 127.0.0.1 before it noticed nginx was gone). The stack served again
// 1.07-1.14 s after the restart began: nginx is up in ~0.3 s, then the first requests wait ~1 s
// for a TCP SYN retransmission (their SYN hit the port while Docker was publishing it again).
// Budget: recovery within 3 s, for that 1 s retransmission timeout plus a loaded machine's
// slower container start; an nginx that kept a stale upstream address would never recover.
#[chaos_test(
    fault = "kill",
    target = "nginx",
    duration = "2s",
    recover_within = "3s"
)]
async fn clients_are_refused_while_nginx_is_dead(run: ChaosRun) {
    report(&run, "kill nginx");
    assert!(
        run.events("container_die")
            .iter()
            .any(|e| e.container.as_deref() == Some("nginx")
                && e.detail.get("signal").map(String::as_str) == Some("9")),
        "no death of nginx by SIGKILL in the timeline:\n{}",
        run.timeline().render_text()
    );
    let inject = run.timeline().faults[0].injected_ms;
    let failed: Vec<&Sample> = fault_samples(&run).into_iter().filter(|s| !s.ok).collect();
    let refused = failed
        .iter()
        .filter(|s| s.error.as_deref() == Some("connection refused"))
        .count();
    let first_refused = failed
        .iter()
        .find(|s| s.error.as_deref() == Some("connection refused"))
        .map(|s| s.t_ms - inject);
    let others: Vec<(f64, Option<String>)> = failed
        .iter()
        .filter(|s| s.error.as_deref() != Some("connection refused"))
        .map(|s| (s.t_ms - inject, s.error.clone()))
        .collect();
    eprintln!(
        "kill nginx: first error {}, {} failed in the fault window, {refused} refused (first {first_refused:?} ms after the kill), others: {others:?}",
        first_error_reason(&run),
        failed.len()
    );
    // The first failures are connections dropped under a request (reset, or closed before an
    // answer): requests in flight when nginx died, and, for a few tens of ms, Docker's port
    // proxy on 127.0.0.1 still accepting and then closing because nginx is gone. From then on
    // nothing listens: every request is refused.
    assert_eq!(first_error_reason(&run), "connection_reset");
    assert!(
        others.iter().all(|(t, _)| *t < 200.0),
        "connections dropped long after the kill: {others:?}"
    );
    assert!(refused * 10 >= failed.len() * 9, "clients were not refused");
    // Refused means fast: nobody waits for a dead front door.
    let slowest = failed.iter().map(|s| s.latency_ms).fold(0.0, f64::max);
    assert!(slowest < 100.0, "a refused request took {slowest} ms");
    // nginx's own log is attached: access-log lines of the orders it proxied.
    let log = run
        .timeline()
        .attachments
        .get("nginx.log")
        .expect("nginx.log attached");
    let lines = log
        .lines()
        .filter(|l| l.contains("\"POST /orders HTTP/1.1\" 201"))
        .count();
    assert!(lines > 0, "no access-log line in nginx.log:\n{log}");
    assert!(run.lost_writes().is_empty());
}

// Measured over 5 runs: the 4 requests in flight (one per client) timed out after 2.0 s, those
// started after them were answered when nginx resumed, ~1 s later (p50 of the fault phase
// 980-1014 ms); no request was refused; the stack was steady again 34-39 ms after the resume.
// Budget: recovery within 2 s: resuming is instant, but nginx first answers the backlog queued
// while it was frozen; 2 s still catches a front door that stays wedged.
// The freeze lasts 3 s, longer than the clients' 2 s timeout, so requests time out rather
// than merely slow down.
#[chaos_test(
    fault = "pause",
    target = "nginx",
    duration = "3s",
    recover_within = "2s"
)]
async fn requests_time_out_while_nginx_is_frozen(run: ChaosRun) {
    report(&run, "pause nginx");
    assert_eq!(first_error_reason(&run), "timeout");
    let failed: Vec<&Sample> = fault_samples(&run).into_iter().filter(|s| !s.ok).collect();
    assert!(!failed.is_empty(), "freezing nginx failed no request");
    assert!(
        failed.iter().all(|s| s.error.as_deref() == Some("timeout")),
        "a frozen nginx must not refuse: {:?}",
        failed.iter().map(|s| s.error.clone()).collect::<Vec<_>>()
    );
    let log = run
        .timeline()
        .attachments
        .get("nginx.log")
        .expect("nginx.log attached");
    assert!(
        log.lines()
            .any(|l| l.contains("\"POST /orders HTTP/1.1\" 201")),
        "no access-log line in nginx.log"
    );
    assert!(run.lost_writes().is_empty());
}
