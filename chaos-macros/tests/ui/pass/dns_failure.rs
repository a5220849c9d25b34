// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    fault = "dns_failure",
    target = "postgres",
    duration = "3s",
    recover_within = "10s"
)]
async fn a_dns_failure_case(run: ChaosRun) {
    let _ = run;
}

fn main() {}
