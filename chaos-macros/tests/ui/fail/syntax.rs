use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "kill", target "postgres", recover_within = "10s")]
async fn missing_equals(run: ChaosRun) {
    let _ = run;
}

fn main() {}
