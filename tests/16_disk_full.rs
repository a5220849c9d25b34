//! Experiment 16: PostgreSQL's disk runs out of space.
//!
//! PostgreSQL keeps its data on a 96 MiB volume of its own (`system_on_a_small_disk`). The run's
//! host agent fills that filesystem to the brim with one file, then removes it at heal. The
//! hypothesis: PostgreSQL refuses the writes it cannot place with a clear error (no space left
//! on device), the order service passes that on as a failed order, no acknowledged order is
//! lost, and orders succeed again once space is freed.
use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    fault = "disk_full",
    target = "postgres",
    path = "/var/lib/postgresql/disk",
    duration = "4s",
    recover_within = "5s",
    system = chaos_trading::system_on_a_small_disk
)]
async fn orders_are_refused_clearly_while_the_database_disk_is_full(run: ChaosRun) {
    let tl = run.timeline();
    let text = tl.render_text();
    let filled = run.events("disk_filled");
    let f = filled
        .first()
        .unwrap_or_else(|| panic!("no disk_filled event:\n{text}"));
    assert_eq!(f.detail.get("full").map(String::as_str), Some("true"));
    let bytes: u64 = f.detail["bytes"].parse().unwrap();
    assert!(bytes > 0 && bytes < chaos_trading::SMALL_DISK_BYTES);
    let fault = run.metrics().phase("fault").expect("a fault phase");
    let errors: Vec<&str> = tl
        .samples
        .iter()
        .filter(|s| !s.ok)
        .filter_map(|s| s.error.as_deref())
        .collect();
    eprintln!(
        "filled {bytes} bytes; fault phase {} ok, {} failed; first error: {:?}; recovered {:?} ms after heal",
        fault.ok,
        fault.failed,
        errors.first(),
        run.metrics().time_to_recover_ms
    );
    assert!(fault.failed > 0, "no order failed on a full disk:\n{text}");
    assert!(
        errors
            .iter()
            .any(|e| e.to_ascii_lowercase().contains("no space left on device")),
        "no failure said why (no space left on device): {:?}",
        &errors[..errors.len().min(3)]
    );
    assert!(
        run.lost_writes().is_empty(),
        "lost acknowledged orders: {:?}",
        run.lost_writes()
    );
}
