// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    fault = "network_partition",
    target = "postgres",
    direction = "ingress",
    duration = "2s",
    recover_within = "10s"
)]
async fn orders_survive_db_partition(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(fault = "network_partition", target = "redis", recover_within = "10s")]
async fn both_directions_by_default(run: ChaosRun) {
    let _ = run;
}

fn main() {}
