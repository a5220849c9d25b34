//! Experiment 01: database sudden death.
//!
//! PostgreSQL is SIGKILLed under a steady stream of orders, held dead for 2 s, then started
//! again (crash recovery replays the WAL). The order service must fail fast while it is gone
//! (503s, no hangs), recover on its own once it is back, and lose no acknowledged order.
use chaos_runtime::{ChaosRun, chaos_test};
use chaos_trading::system;

// Measured here: the error window is ~3.3 s (2 s dead + restart and WAL replay); the service is
// back 0.37-1.08 s after the restart was issued on a quiet machine (5 runs in a row), 1.2-2.2 s
// while other builds loaded both cores. The budget of 5 s leaves room for a loaded CI machine
// while still catching a service that needs a restart of its own, or one whose pool keeps
// handing out dead connections (that takes > 10 s to clear).
#[chaos_test(
    fault = "kill",
    target = "postgres",
    duration = "2s",
    recover_within = "5s"
)]
async fn orders_survive_postgres_sudden_death(run: ChaosRun) {
    // The kill really happened, and was seen: the container died by signal 9.
    let deaths = run.events("container_die");
    assert!(
        deaths
            .iter()
            .any(|e| e.container.as_deref() == Some("postgres")
                && e.detail.get("signal").map(String::as_str) == Some("9")),
        "no death of postgres by SIGKILL in the timeline:\n{}",
        run.timeline().render_text()
    );
    // Requests failed while it was dead, and failed fast (the service's 1 s DB timeout, not a hang).
    let fault = run.metrics().phase("fault").expect("a fault phase");
    assert!(
        fault.failed > 0,
        "killing PostgreSQL caused no failed request"
    );
    assert!(
        fault.p99_ms < 1_500.0,
        "requests hung while PostgreSQL was dead: p99 {} ms",
        fault.p99_ms
    );
    // Every acknowledged order is in PostgreSQL after recovery.
    assert!(
        run.lost_writes().is_empty(),
        "lost acknowledged orders: {:?}",
        run.lost_writes()
    );
    assert!(!run.acknowledged_writes().is_empty());
}

// The ledger check is real: an order removed behind the ledger's back is reported as lost.
#[chaos_test(
    fault = "kill",
    target = "postgres",
    duration = "1s",
    recover_within = "5s",
    snapshot = false
)]
async fn ledger_reports_an_acknowledged_order_removed_behind_its_back(run: ChaosRun) {
    assert!(
        run.check_invariants()
            .await
            .expect("ledger check")
            .is_empty()
    );
    let acked = run.acknowledged_writes();
    let victim: i64 = acked[acked.len() / 2]
        .key
        .parse()
        .expect("order ids are numbers");
    let db = run
        .postgres("postgres")
        .await
        .expect("connect to the stack's PostgreSQL");
    let removed = db
        .execute("DELETE FROM orders WHERE id = $1", &[&victim])
        .await
        .expect("delete");
    assert_eq!(removed, 1);
    let lost = run.check_invariants().await.expect("ledger check");
    let keys: Vec<String> = lost.iter().filter_map(|v| v.key.clone()).collect();
    assert_eq!(
        keys,
        vec![victim.to_string()],
        "the ledger did not report the removed order: {lost:?}"
    );
}
