// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    fault = "http_delay",
    target = "orders",
    latency = "100ms",
    method = "GET",
    duration = "3s",
    recover_within = "10s"
)]
async fn a_http_delay_case(run: ChaosRun) {
    let _ = run;
}

fn main() {}
