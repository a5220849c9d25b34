use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "kill", target = "postgres", after = "1s", recover_within = "10s")]
async fn single_fault_has_no_offset(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(faults(kill(target = "redis"), pause(target = "postgres")), after = "1s", duration = "2s", recover_within = "10s")]
async fn offsets_go_on_each_fault(run: ChaosRun) {
    let _ = run;
}

fn main() {}
