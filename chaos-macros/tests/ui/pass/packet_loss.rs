// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    fault = "packet_loss",
    target = "postgres",
    loss = "2.5%",
    direction = "egress",
    duration = "3s",
    recover_within = "10s"
)]
async fn orders_survive_a_lossy_db_link(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(fault = "packet_loss", target = "redis", recover_within = "10s")]
async fn ten_percent_both_ways_by_default(run: ChaosRun) {
    let _ = run;
}

fn main() {}
