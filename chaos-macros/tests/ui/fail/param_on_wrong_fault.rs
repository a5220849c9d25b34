use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "kill", target = "postgres", latency = "100ms", recover_within = "10s")]
async fn kill_has_no_latency(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(
    faults(cpu_throttle(target = "orders", cpus = "0.5", direction = "egress")),
    recover_within = "10s"
)]
async fn throttle_has_no_direction(run: ChaosRun) {
    let _ = run;
}

fn main() {}
