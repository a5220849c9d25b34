use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "kil", target = "postgres", recover_within = "10s")]
async fn typo_in_the_fault(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(faults(partition(target = "postgres")), recover_within = "10s")]
async fn typo_in_a_composite_fault(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(fault = "explode", target = "postgres", recover_within = "10s")]
async fn nothing_close(run: ChaosRun) {
    let _ = run;
}

fn main() {}
