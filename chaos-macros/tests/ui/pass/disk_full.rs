// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    fault = "disk_full",
    target = "postgres",
    path = "/var/lib/postgresql/disk",
    duration = "3s",
    recover_within = "10s"
)]
async fn a_disk_full_case(run: ChaosRun) {
    let _ = run;
}

fn main() {}
