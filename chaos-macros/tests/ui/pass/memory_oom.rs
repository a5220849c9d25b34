// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "memory_oom", target = "redis", memory_limit = "64MiB", recover_within = "20s")]
async fn cache_oom_is_survived(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(fault = "memory_oom", target = "orders", memory_limit = "64MB", recover_within = "1m")]
async fn decimal_megabytes(run: ChaosRun) {
    let _ = run;
}

fn main() {}
