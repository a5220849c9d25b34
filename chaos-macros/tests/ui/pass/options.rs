// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    fault = "kill",
    target = "nginx",
    recover_within = "10s",
    observer = "bpf",
    workload = "reads",
    snapshot = false
)]
async fn reads_survive_proxy_death(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(fault = "kill", target = "nginx", recover_within = "10s", observer = "auto", workload = "orders", snapshot = true)]
async fn explicit_defaults(run: ChaosRun) {
    let _ = run;
}

fn main() {}
