// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "pause", target = "redis", duration = "500ms", recover_within = "5s")]
async fn cache_freeze_is_survived(run: ChaosRun) {
    let _ = run;
}

fn main() {}
