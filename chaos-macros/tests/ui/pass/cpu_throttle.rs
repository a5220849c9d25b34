// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "cpu_throttle", target = "orders", cpus = "0.25", duration = "5s", recover_within = "10s")]
async fn throttled_service_recovers(run: ChaosRun) {
    let _ = run;
}

fn main() {}
