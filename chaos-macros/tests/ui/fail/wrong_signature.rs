use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "kill", target = "postgres", recover_within = "10s")]
async fn two_arguments(run: ChaosRun, other: ChaosRun) {
    let _ = (run, other);
}

#[chaos_test(fault = "kill", target = "postgres", recover_within = "10s")]
async fn borrowed_run(run: &ChaosRun) {
    let _ = run;
}

#[chaos_test(fault = "kill", target = "postgres", recover_within = "10s")]
async fn generic<T: Default>(run: ChaosRun) {
    let _ = (run, T::default());
}

#[chaos_test(fault = "kill", target = "postgres", recover_within = "10s")]
async fn returns_a_value(run: ChaosRun) -> Result<(), String> {
    let _ = run;
    Ok(())
}

fn main() {}
