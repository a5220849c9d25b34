use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "kill", target = "postgres")]
async fn no_recovery_budget(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(recover_within = "10s")]
async fn no_fault_and_no_target(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(faults(kill(duration = "1s")), recover_within = "10s")]
async fn composite_fault_without_target(run: ChaosRun) {
    let _ = run;
}

fn main() {}
