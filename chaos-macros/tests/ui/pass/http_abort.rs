// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    fault = "http_abort",
    target = "orders",
    ratio = "20%",
    status = "503",
    method = "POST",
    path = "/orders",
    duration = "3s",
    recover_within = "10s"
)]
async fn a_http_abort_case(run: ChaosRun) {
    let _ = run;
}

fn main() {}
