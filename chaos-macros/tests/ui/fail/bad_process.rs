use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    faults(
        process_kill(target = "postgres"),
        process_stop(target = "postgres", process = "wal\"writer"),
        process_stop(target = "postgres", process = ""),
    ),
    recover_within = "10s"
)]
async fn a_process_fault_needs_a_process_to_signal(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(fault = "process_kill", target = "postgres", recover_within = "10s")]
async fn also_with_one_fault(run: ChaosRun) {
    let _ = run;
}

fn main() {}
