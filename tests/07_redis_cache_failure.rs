//! Experiment 07: Redis cache failure.
//!
//! Redis is SIGKILLed under a stream of reads (`GET /orders/{id}`, cache-aside) and restarted
//! 3 s later, empty (it keeps nothing on disk). Reads must keep succeeding through PostgreSQL
//! while the cache is gone (`x-cache: bypass`), at a measured latency cost, and the cache must
//! fill again once Redis is back (`miss`, then `hit`).
use chaos_runtime::timeline::Sample;
use chaos_runtime::{ChaosRun, chaos_test};
use chaos_trading::system;

fn p(v: &[f64], q: f64) -> f64 {
    chaos_runtime::timeline::percentile(v.iter().copied(), q)
}

// Measured over 5 runs: reads never failed (0 of 443-482 in the fault phase, nearly all
// `x-cache: bypass`); cache hits in the baseline p50 1.8-2.2 ms / p99 8-19 ms, bypass reads
// while Redis was dead p50 2.1-2.5 ms / p99 7-19 ms (a PostgreSQL read instead of a Redis GET:
// +0.1-0.4 ms at the median in 4 runs of 5, noise at the tail); the steady state held again
// 30-305 ms after the restart began (a burst of reads waits out the service's 200 ms Redis
// timeout while the container comes up); after the restart each of the 18 orders read missed
// once, then every read was a hit.
// Budgets: 0 failed reads, because a read never needs Redis; p99 under 250 ms while Redis is
// dead, the most one bypass can cost (200 ms Redis timeout plus a query); recovery within 2 s,
// room for Redis's ~0.4 s restart and a reconnect hold-off on a loaded machine, while a
// service that kept using its dead connection (timing out every read) would not make it.
#[chaos_test(
    fault = "kill",
    target = "redis",
    duration = "3s",
    recover_within = "2s",
    workload = "reads"
)]
async fn reads_survive_redis_death_through_postgres(run: ChaosRun) {
    let tl = run.timeline();
    // The kill really happened.
    assert!(
        run.events("container_die")
            .iter()
            .any(|e| e.container.as_deref() == Some("redis")
                && e.detail.get("signal").map(String::as_str) == Some("9")),
        "no death of redis by SIGKILL in the timeline:\n{}",
        tl.render_text()
    );
    let phase = |name: &str| {
        tl.phases
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name} phase"))
    };
    let reads_in = |name: &str| -> Vec<&Sample> {
        let ph = phase(name);
        tl.samples
            .iter()
            .filter(|s| s.t_ms >= ph.start_ms && s.t_ms < ph.end_ms && s.tag("cache").is_some())
            .collect()
    };
    let with = |v: &[&Sample], c: &str| v.iter().filter(|s| s.tag("cache") == Some(c)).count();
    let lat = |v: &[&Sample]| v.iter().map(|s| s.latency_ms).collect::<Vec<_>>();

    let base = reads_in("baseline");
    let fault = reads_in("fault");
    let failed_reads = run.metrics().phase("fault").expect("a fault phase").failed;
    eprintln!(
        "baseline reads {} (hit {}): p50 {:.2} ms p99 {:.2} ms | fault reads {} (bypass {}, hit {}, failed requests {}): p50 {:.2} ms p99 {:.2} ms | recovered {:?} ms after heal",
        base.len(),
        with(&base, "hit"),
        p(&lat(&base), 0.5),
        p(&lat(&base), 0.99),
        fault.len(),
        with(&fault, "bypass"),
        with(&fault, "hit"),
        failed_reads,
        p(&lat(&fault), 0.5),
        p(&lat(&fault), 0.99),
        run.metrics().time_to_recover_ms
    );
    // Baseline: a warm cache.
    assert!(
        with(&base, "hit") * 10 >= base.len() * 9,
        "the cache was not warm before the fault"
    );
    // Reads kept succeeding through PostgreSQL while Redis was dead.
    assert!(
        with(&fault, "bypass") * 2 >= fault.len(),
        "reads did not bypass the dead cache"
    );
    assert!(
        failed_reads == 0,
        "{failed_reads} requests failed while Redis was dead"
    );
    // Degraded, but bounded: a bypass costs at most Redis's 200 ms timeout plus a query.
    assert!(
        p(&lat(&fault), 0.99) < 250.0,
        "reads slowed down too much without the cache"
    );
    // The cache fills again after Redis comes back (empty): each order misses once, then hits.
    let back = run
        .events("service_ready")
        .into_iter()
        .find(|e| e.container.as_deref() == Some("redis"))
        .map(|e| e.t_ms)
        .expect("redis came back");
    let end = tl.phases.last().map(|p| p.end_ms).unwrap_or_default();
    let after: Vec<&Sample> = tl
        .samples
        .iter()
        .filter(|s| s.t_ms >= back && s.t_ms < end && s.tag("cache").is_some())
        .collect();
    // The run ends a recovery window after the steady state held again; its last reads are
    // of a full cache: more reads than there are orders, every one a hit.
    let tail = &after[after.len().saturating_sub(20)..];
    let misses = with(&after, "miss");
    eprintln!(
        "after redis came back: {} reads, {} misses, {} hits; last {}: {} hits",
        after.len(),
        misses,
        with(&after, "hit"),
        tail.len(),
        with(tail, "hit")
    );
    assert!(
        (1..=20).contains(&misses),
        "{misses} misses after Redis came back empty (20 orders are read)"
    );
    assert!(
        tail.len() == 20 && with(tail, "hit") == tail.len(),
        "the cache did not fill again: of the last {} reads, {} were hits",
        tail.len(),
        with(tail, "hit")
    );
    assert!(run.lost_writes().is_empty());
}
