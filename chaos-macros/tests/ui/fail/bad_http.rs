use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    faults(
        http_abort(target = "orders", status = "5xx"),
        http_abort(target = "orders", status = "600", method = "FETCH"),
        http_delay(target = "orders", path = "orders", latency = "soon"),
        http_reset(target = "orders", status = "503"),
    ),
    recover_within = "10s"
)]
async fn http_faults_check_their_parameters(run: ChaosRun) {
    let _ = run;
}

fn main() {}
