// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "stop", target = "orders", recover_within = "30s")]
async fn orders_service_restarts_cleanly(run: ChaosRun) {
    assert!(run.lost_writes().is_empty());
}

fn main() {}
