// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    faults(
        kill(target = "redis"),
        network_partition(target = "postgres", after = "1s", duration = "2s"),
    ),
    recover_within = "10s"
)]
async fn cascade(run: ChaosRun) {
    assert!(run.lost_writes().is_empty());
}

#[chaos_test(
    faults(
        latency(target = "postgres", latency = "50ms", jitter = "5ms"),
        cpu_throttle(target = "orders", cpus = "0.5", after = "500ms"),
        memory_oom(target = "redis", memory_limit = "1GiB", after = "1s"),
        disk_io(target = "postgres", write_bps = "4096", after = "1s"),
    ),
    recover_within = "30s",
    observer = "fallback",
)]
async fn everything_at_once(run: ChaosRun) {
    let _ = run;
}

fn main() {}
