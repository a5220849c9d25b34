use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    fault = "kill",
    target = "postgres",
    faults(kill(target = "redis"), pause(target = "postgres", after = "1s")),
    recover_within = "10s"
)]
async fn one_or_several(run: ChaosRun) {
    let _ = run;
}

fn main() {}
