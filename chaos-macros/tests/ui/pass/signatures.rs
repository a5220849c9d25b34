//! The signatures `#[chaos_test]` accepts, and the attributes it moves to the `#[test]` fn.
use chaos_runtime::chaos_test;

#[chaos_test(fault = "kill", target = "redis", recover_within = "10s")]
async fn takes_nothing() {}

#[chaos_test(fault = "kill", target = "redis", recover_within = "10s")]
async fn full_path_and_unit_return(mut run: ::chaos_runtime::ChaosRun) -> () {
    let _ = &mut run;
}

/// Documented.
#[chaos_test(fault = "kill", target = "redis", recover_within = "10s")]
#[ignore = "needs docker"]
#[should_panic(expected = "lost writes")]
#[allow(unused_variables)]
async fn attributes_kept(run: chaos_runtime::ChaosRun) {}

pub mod nested {
    #[chaos_runtime::chaos_test(fault = "stop", target = "postgres", recover_within = "10s")]
    pub async fn public_in_a_module(_: chaos_runtime::ChaosRun) {}
}

fn main() {}
