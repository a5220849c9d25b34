use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "kill", target = "mysql", recover_within = "10s")]
async fn not_in_the_stack(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(fault = "kill", target = "postgress", recover_within = "10s")]
async fn typo_in_the_target(run: ChaosRun) {
    let _ = run;
}

fn main() {}
