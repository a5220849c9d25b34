// A bin: its `#[test]` fns are compiled out, and with them the use of `ChaosRun`.
#![allow(unused_imports)]

use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "disk_io", target = "postgres", write_bps = "512KiB", recover_within = "10s")]
async fn slow_disk_keeps_acknowledged_writes(run: ChaosRun) {
    assert!(run.lost_writes().is_empty());
}

fn main() {}
