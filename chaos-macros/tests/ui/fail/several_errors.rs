use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(fault = "kil", target = "postgress", duration = "2sec", latency = "5ms", recover = "10s")]
fn everything_wrong(run: ChaosRun, extra: u32) -> u32 {
    let _ = run;
    extra
}

fn main() {}
