//! Experiment 13: the order service loses DNS.
//!
//! Inside the order service's network namespace a rule drops every query to Docker's embedded
//! DNS server (127.0.0.11), so no service name resolves there, while the connections it already
//! holds (its PostgreSQL pool, its Redis connection) are plain TCP to addresses it resolved
//! before. The runtime asks the embedded server for another service's name from inside the
//! namespace once the rule is in (no answer) and once it is gone (the address), so the fault is
//! shown, not assumed. The hypothesis: orders keep succeeding on the open connections, nothing
//! is lost, and names resolve again at once after heal.
use chaos_runtime::{ChaosRun, chaos_test};
use chaos_trading::system;

// Budget: removing one rule; nothing in the system has to reconnect.
#[chaos_test(
    fault = "dns_failure",
    target = "orders",
    duration = "4s",
    recover_within = "2s"
)]
async fn orders_keep_flowing_on_open_connections_while_the_service_cannot_resolve_names(
    run: ChaosRun,
) {
    let tl = run.timeline();
    let text = tl.render_text();
    let fault = &tl.faults[0];
    assert!(
        fault.mechanism.contains("127.0.0.11"),
        "mechanism {:?}",
        fault.mechanism
    );
    // During the fault the name did not resolve from inside the service's namespace ...
    let during = run.events("dns_checked");
    let d = during
        .first()
        .unwrap_or_else(|| panic!("no dns_checked event:\n{text}"));
    assert_eq!(d.detail.get("resolved").map(String::as_str), Some("false"));
    eprintln!(
        "during the fault, {} from orders: {}",
        d.detail["name"], d.detail["error"]
    );
    // ... and after heal it did, to an address on the stack network.
    let after = run.events("dns_restored");
    let a = after
        .first()
        .unwrap_or_else(|| panic!("no dns_restored event:\n{text}"));
    assert_eq!(
        a.detail.get("resolved").map(String::as_str),
        Some("true"),
        "{:?}",
        a.detail
    );
    eprintln!(
        "after heal, {} resolves to {}",
        a.detail["name"], a.detail["answer"]
    );
    // Open connections kept working: no order failed, none was lost.
    let stats = run.metrics().phase("fault").expect("a fault phase");
    eprintln!(
        "fault phase: {} orders acknowledged, {} failed",
        stats.ok, stats.failed
    );
    assert!(
        stats.ok > 0,
        "no order went through during the fault:\n{text}"
    );
    assert_eq!(
        stats.failed, 0,
        "orders failed although their connections were open:\n{text}"
    );
    assert!(
        run.lost_writes().is_empty(),
        "lost acknowledged orders: {:?}",
        run.lost_writes()
    );
}

// Which requests fail without DNS: the ones that need a new connection. PostgreSQL is killed
// 1 s into a 6 s DNS failure of the order service and is back about 2 s later, but every
// connection the service held died with it and a new one needs the name `postgres` resolved:
// orders keep failing (503, fast) while PostgreSQL serves again, until names resolve; then the
// service reconnects at once. (A first version killed Redis instead: reads then fail only when
// the bypassing load needs more PostgreSQL connections than the pool had open, 0 or 44-77 of
// ~1,000 depending on the run, too much of a draw for a snapshot.)
#[chaos_test(
    faults(
        dns_failure(target = "orders", duration = "6s"),
        kill(target = "postgres", after = "1s", duration = "1s")
    ),
    recover_within = "3s"
)]
async fn orders_fail_while_the_service_cannot_resolve_a_restarted_database(run: ChaosRun) {
    let tl = run.timeline();
    let text = tl.render_text();
    let at = |kind: &str, role: &str| {
        run.events(kind)
            .into_iter()
            .find(|e| e.container.as_deref() == Some(role))
            .map(|e| e.t_ms)
            .unwrap_or_else(|| panic!("no {kind} of {role}:\n{text}"))
    };
    let pg_back = at("service_ready", "postgres");
    // The heal's start: the rule goes a few milliseconds later, and `dns_restored` is recorded
    // once a name resolved again.
    let dns_back = tl
        .faults
        .iter()
        .find(|f| f.target == "orders")
        .and_then(|f| f.healed_ms)
        .unwrap_or_else(|| panic!("the DNS failure was not healed:\n{text}"));
    assert!(at("dns_restored", "orders") >= dns_back);
    assert!(
        pg_back + 1000.0 < dns_back,
        "postgres was back at {pg_back} ms, names at {dns_back} ms:\n{text}"
    );
    // PostgreSQL serves again, but the service cannot name it: its orders fail.
    let stranded: Vec<_> = tl
        .samples
        .iter()
        .filter(|s| s.t_ms >= pg_back + 200.0 && s.t_ms < dns_back)
        .collect();
    let failed = stranded.iter().filter(|s| !s.ok).count();
    let end = tl.phases.last().map(|p| p.end_ms).unwrap_or_default();
    let last_second: Vec<_> = tl
        .samples
        .iter()
        .filter(|s| s.t_ms >= end - 1000.0 && s.t_ms < end)
        .collect();
    eprintln!(
        "postgres back at {pg_back:.0} ms, names at {dns_back:.0} ms: {failed} of {} orders \
         in between failed; last second {} of {} ok; recovered {:?} ms after heal",
        stranded.len(),
        last_second.iter().filter(|s| s.ok).count(),
        last_second.len(),
        run.metrics().time_to_recover_ms
    );
    assert!(
        !stranded.is_empty(),
        "no orders while PostgreSQL was back without DNS:\n{text}"
    );
    assert_eq!(
        failed,
        stranded.len(),
        "orders succeeded on a connection the service could not have opened:\n{text}"
    );
    // Once names resolve, the service reconnects and orders succeed again.
    assert!(
        !last_second.is_empty() && last_second.iter().all(|s| s.ok),
        "orders did not succeed again after DNS came back:\n{text}"
    );
    assert!(
        run.lost_writes().is_empty(),
        "lost acknowledged orders: {:?}",
        run.lost_writes()
    );
}
