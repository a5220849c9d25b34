use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    faults(
        kill,
        pause(target = "redis", recover_within = "10s"),
        stop(target = "redis", jitter = "5ms"),
    ),
    recover_within = "10s"
)]
async fn composite_syntax(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(faults(), recover_within = "10s")]
async fn empty_faults(run: ChaosRun) {
    let _ = run;
}

fn main() {}
