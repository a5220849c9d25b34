// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    fault = "latency",
    target = "postgres",
    latency = "100ms",
    jitter = "5ms",
    direction = "egress",
    recover_within = "10s"
)]
async fn slow_database_keeps_orders_flowing(run: ChaosRun) {
    let _ = run;
}

fn main() {}
