// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "kill", target = "postgres", duration = "2s", recover_within = "10s")]
async fn orders_survive_postgres_death(run: ChaosRun) {
    assert!(run.lost_writes().is_empty());
}

fn main() {}
