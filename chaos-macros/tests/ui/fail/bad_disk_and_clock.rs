use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    faults(
        disk_full(target = "postgres"),
        disk_full(target = "postgres", path = "data"),
        clock_skew(target = "postgres"),
        clock_skew(target = "postgres", offset = "+0s"),
        clock_skew(target = "postgres", offset = "+1h"),
    ),
    recover_within = "10s"
)]
async fn disk_and_clock_faults_check_their_parameters(run: ChaosRun) {
    let _ = run;
}

fn main() {}
