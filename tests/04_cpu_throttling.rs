//! Experiment 04: CPU throttling.
//!
//! The order service gets a CFS quota of 0.02 CPUs (2 ms of CPU time per 100 ms period) under a
//! steady stream of orders. It must get slower, not fail: every request still answered, none
//! lost, and its latency back at the baseline's as soon as the quota is lifted.
//!
//! Proof the fault happened: the kernel's own throttling counters (`cpu.stat` `nr_throttled`,
//! throttled time) moved for the orders container while the quota held, and only then. The
//! second test runs the same experiment without eBPF; throttling is a cgroup counter in both
//! modes, the run-queue delay comes from /proc schedstat instead of sched tracepoints.
use chaos_runtime::{ChaosRun, chaos_test};
use chaos_trading::system;

/// How much slower requests must be while throttled: fault p50 / baseline p50, and fault p99 /
/// the unfaulted p99 (the lower of the baseline's and the steady phase's).
///
/// Measured here over 10 runs of each test: p50 1.3-2.9 ms -> 56-79 ms (ratio 27-43), p99
/// 2.7-11.2 ms -> 155-179 ms (ratio 16-57); on a busier machine earlier, baseline p99 reached
/// 28-41 ms. A request needs ~0.3 ms of CPU and waits for the next 100 ms period once the
/// 2 ms are spent. 5x (p50) and 2x (p99) stay far below every measured ratio, even against a
/// noisy baseline, while a quota that does not act (e.g. written to the wrong cgroup) never
/// comes close. The kernel throttled 39-40 of the ~40 periods, 3.2-4.1 s (summed over both
/// CPUs) of the 4 s held.
const MIN_P50_RATIO: f64 = 5.0;
const MIN_P99_RATIO: f64 = 2.0;

// recover_within: latency is back at baseline with the first requests after the heal (measured
// 0-35 ms: the quota lifts at once, and 4 clients leave no backlog to drain). 2 s covers a
// loaded CI machine and fails a service that stays slow after its CPU is back.
#[chaos_test(
    fault = "cpu_throttle",
    target = "orders",
    cpus = "0.02",
    duration = "4s",
    recover_within = "2s"
)]
async fn orders_slow_down_but_never_fail_while_the_service_is_cpu_throttled(run: ChaosRun) {
    throttled_not_failed(&run);
}

#[chaos_test(
    fault = "cpu_throttle",
    target = "orders",
    cpus = "0.02",
    duration = "4s",
    recover_within = "2s",
    observer = "fallback"
)]
async fn orders_slow_down_but_never_fail_while_the_service_is_cpu_throttled_seen_without_ebpf(
    run: ChaosRun,
) {
    throttled_not_failed(&run);
    // Without eBPF the run-queue delay comes from /proc schedstat.
    assert!(
        run.events("runq_delay")
            .iter()
            .all(|e| e.source == chaos_runtime::observe::Source::Procfs),
        "{}",
        run.timeline().render_text()
    );
}

fn throttled_not_failed(run: &ChaosRun) {
    let text = run.timeline().render_text();
    let m = run.metrics();
    let (base, fault, steady) = (
        m.phase("baseline").expect("baseline"),
        m.phase("fault").expect("fault"),
        m.phase("steady").expect("steady"),
    );
    println!(
        "p50 baseline {:.1} ms, fault {:.1} ms, steady {:.1} ms; p99 baseline {:.1} ms, fault {:.1} ms, steady {:.1} ms",
        base.p50_ms, fault.p50_ms, steady.p50_ms, base.p99_ms, fault.p99_ms, steady.p99_ms
    );
    // Slower, measurably, by the run's own numbers.
    assert!(
        fault.p50_ms >= MIN_P50_RATIO * base.p50_ms,
        "median latency under the quota {} ms is not {MIN_P50_RATIO}x the baseline's {} ms:\n{text}",
        fault.p50_ms,
        base.p50_ms
    );
    // The unfaulted tail: the lower p99 of the two windows without the fault (baseline and
    // steady). One hiccup of the shared machine in one of them (seen once: a baseline p99 of
    // 111 ms among runs of 4-11 ms) says nothing about the fault.
    let normal_p99 = base.p99_ms.min(steady.p99_ms);
    assert!(
        fault.p99_ms >= MIN_P99_RATIO * normal_p99,
        "p99 latency under the quota {} ms is not {MIN_P99_RATIO}x the unfaulted p99 {} ms (baseline {} ms, steady {} ms):\n{text}",
        fault.p99_ms,
        normal_p99,
        base.p99_ms,
        steady.p99_ms
    );
    // But never failing: a slow service is not a down one.
    assert_eq!(
        fault.failed + steady.failed,
        0,
        "requests failed while only the CPU was throttled:\n{text}"
    );
    assert!(run.lost_writes().is_empty());

    // The kernel throttled the orders container, for a good part of the time the quota held.
    let f = &run.timeline().faults[0];
    let healed = f.healed_ms.expect("healed");
    let throttled = run.events("cpu_throttled");
    assert!(
        throttled
            .iter()
            .all(|e| e.container.as_deref() == Some("orders")),
        "{text}"
    );
    assert!(
        throttled
            .iter()
            .all(|e| e.source == chaos_runtime::observe::Source::Cgroup),
        "cpu.stat is the throttling source in every mode:\n{text}"
    );
    let sum = |k: &str| -> u64 {
        throttled
            .iter()
            .filter(|e| e.t_ms >= f.injected_ms && e.t_ms <= healed + 300.0)
            .filter_map(|e| e.detail.get(k)?.parse::<u64>().ok())
            .sum()
    };
    let (periods, throttled_us) = (sum("nr_throttled"), sum("throttled_us"));
    let held_ms = healed - f.injected_ms;
    println!(
        "throttled in {periods} periods, {} ms of {held_ms:.0} ms",
        throttled_us / 1000
    );
    assert!(
        periods >= 10,
        "only {periods} throttled periods while the quota held:\n{text}"
    );
    assert!(
        throttled_us as f64 / 1000.0 >= 0.25 * held_ms,
        "throttled for {} ms of the {held_ms:.0} ms the quota held:\n{text}",
        throttled_us / 1000
    );
    // Nothing throttles without the quota: not before it, not once it is lifted (one poll later).
    assert!(
        throttled
            .iter()
            .all(|e| e.t_ms >= f.injected_ms && e.t_ms <= healed + 300.0),
        "throttling outside the fault:\n{text}"
    );
    // Back at the baseline's latency once the quota is lifted (the run's hypothesis already holds
    // p99 under 4x the baseline's for the recovery window; the median too must be back).
    assert!(
        steady.p50_ms <= (2.0 * base.p50_ms).max(base.p50_ms + 5.0),
        "median latency after the heal {} ms, baseline {} ms:\n{text}",
        steady.p50_ms,
        base.p50_ms
    );
}
