// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "pool_exhaustion", target = "postgres", recover_within = "10s")]
async fn exhausted_pool_recovers(run: ChaosRun) {
    let _ = run;
}

fn main() {}
