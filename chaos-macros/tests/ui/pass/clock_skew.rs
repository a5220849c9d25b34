// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    fault = "clock_skew",
    target = "postgres",
    offset = "-30s",
    duration = "3s",
    recover_within = "10s"
)]
async fn a_clock_skew_case(run: ChaosRun) {
    let _ = run;
}

fn main() {}
