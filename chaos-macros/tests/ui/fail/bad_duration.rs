use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "kill", target = "postgres", duration = "2 seconds", recover_within = "10")]
async fn durations_need_a_unit(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(fault = "kill", target = "postgres", duration = 2, recover_within = "0s")]
async fn durations_are_strings_and_recovery_takes_time(run: ChaosRun) {
    let _ = run;
}

fn main() {}
