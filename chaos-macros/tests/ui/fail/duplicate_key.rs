use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "kill", target = "postgres", target = "redis", recover_within = "10s")]
async fn two_targets(run: ChaosRun) {
    let _ = run;
}

fn main() {}
