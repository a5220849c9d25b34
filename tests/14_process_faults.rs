//! Experiment 14: one process of PostgreSQL, not the container.
//!
//! The run's host agent signals a single process chosen by its command line: PostgreSQL's WAL
//! writer (`postgres: walwriter`). The container stays up in both tests; what changes is how
//! the database as a whole answers a partial failure.
use chaos_runtime::{ChaosRun, chaos_test};
use chaos_trading::system;

fn signalled(run: &ChaosRun) -> (String, String) {
    let e = run.events("process_signalled");
    let e = e.first().unwrap_or_else(|| {
        panic!(
            "no process_signalled event:\n{}",
            run.timeline().render_text()
        )
    });
    (e.detail["args"].clone(), e.detail["pid"].clone())
}

// A SIGKILLed child is a crash to PostgreSQL's postmaster: it ends every other backend and
// starts again through crash recovery, all inside the same container.
#[chaos_test(
    fault = "process_kill",
    target = "postgres",
    process = "walwriter",
    duration = "3s",
    recover_within = "5s"
)]
async fn one_killed_wal_writer_restarts_the_whole_database_inside_its_container(run: ChaosRun) {
    let tl = run.timeline();
    let text = tl.render_text();
    let (args, pid) = signalled(&run);
    eprintln!("killed {pid}: {args}");
    assert!(args.contains("walwriter"), "signalled {args:?}");
    // The container never died: only processes inside it did.
    assert!(
        run.events("container_die").is_empty(),
        "the container died, not one process:\n{text}"
    );
    let stats = run.metrics().phase("fault").expect("a fault phase");
    eprintln!(
        "fault phase: {} ok, {} failed; recovered {:?} ms after heal",
        stats.ok,
        stats.failed,
        run.metrics().time_to_recover_ms
    );
    assert!(
        stats.failed > 0,
        "no order failed although the postmaster restarts on a crashed child:\n{text}"
    );
    assert!(
        run.lost_writes().is_empty(),
        "lost acknowledged orders: {:?}",
        run.lost_writes()
    );
}

// A stopped WAL writer is not missed: each committing backend flushes its own WAL
// (synchronous_commit is on), so orders keep succeeding and stay durable.
#[chaos_test(
    fault = "process_stop",
    target = "postgres",
    process = "walwriter",
    duration = "3s",
    recover_within = "2s"
)]
async fn a_stopped_wal_writer_does_not_stop_commits(run: ChaosRun) {
    let tl = run.timeline();
    let text = tl.render_text();
    let (args, pid) = signalled(&run);
    eprintln!("stopped {pid}: {args}");
    assert!(args.contains("walwriter"), "signalled {args:?}");
    assert_eq!(
        run.events("process_continued").len(),
        1,
        "the stopped process was not continued at heal:\n{text}"
    );
    let stats = run.metrics().phase("fault").expect("a fault phase");
    eprintln!("fault phase: {} ok, {} failed", stats.ok, stats.failed);
    assert!(stats.ok > 0, "no order went through:\n{text}");
    assert_eq!(stats.failed, 0, "orders failed:\n{text}");
    assert!(
        run.lost_writes().is_empty(),
        "lost acknowledged orders: {:?}",
        run.lost_writes()
    );
}
