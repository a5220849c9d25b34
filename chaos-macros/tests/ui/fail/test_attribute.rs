use chaos_runtime::chaos_test;

#[chaos_test(fault = "kill", target = "postgres", recover_within = "10s")]
#[tokio::test]
async fn two_test_attributes(run: chaos_runtime::ChaosRun) {
    let _ = run;
}

fn main() {}
