use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "kill", target = "postgres", recover_whithin = "10s")]
async fn typo_in_a_key(run: ChaosRun) {
    let _ = run;
}

fn main() {}
