use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(system = "my_app::system", fault = "kill", target = "db", recover_within = "10s")]
async fn system_as_a_string(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(
    fault = "kill",
    target = "db",
    recover_within = "10s",
    steady_ok_ratio = "1.5",
    steady_p99 = "0s",
    steady_window = "soon"
)]
async fn bad_steady_state(run: ChaosRun) {
    let _ = run;
}

fn main() {}
