//! Type-checks what `#[chaos_test]` expands to against the runtime's `__private` API.
//!
//! These are real chaos tests (they start the stack in Docker), so each is `#[ignore]`d:
//! compiling them is the test. `tests/ui/pass` cannot do this, as trybuild builds its cases
//! as binaries, where `#[test]` fns are compiled out.

use chaos_runtime::{ChaosRun, chaos_test};

/// The default system of this file's tests (`system` at the call site).
fn system() -> chaos_runtime::System {
    chaos_runtime::System::new("expansion")
}

#[chaos_test(
    fault = "kill",
    target = "postgres",
    duration = "2s",
    recover_within = "10s"
)]
#[ignore = "compile check of the expansion; the experiment needs Docker"]
async fn single_fault_taking_the_run(run: ChaosRun) {
    assert!(run.lost_writes().is_empty());
}

/// Doc comments move to the `#[test]` fn.
#[chaos_test(
    faults(
        kill(target = "redis"),
        network_partition(
            target = "postgres",
            after = "1s",
            duration = "2s",
            direction = "egress"
        ),
        latency(target = "postgres", latency = "100ms", jitter = "5ms"),
        memory_oom(target = "redis", memory_limit = "64MiB"),
        cpu_throttle(target = "orders", cpus = "0.5"),
        disk_io(target = "postgres", write_bps = "1MB"),
    ),
    recover_within = "10s",
    observer = "fallback",
    workload = "reads",
    snapshot = false
)]
#[ignore = "compile check of the expansion; the experiment needs Docker"]
async fn composite_with_every_option(run: ChaosRun) {
    let _ = run.lost_writes();
}

#[chaos_test(fault = "pause", target = "nginx", recover_within = "5s")]
#[ignore = "compile check of the expansion; the experiment needs Docker"]
async fn zero_argument_body() {}

#[chaos_test(fault = "stop", target = "orders", recover_within = "5s")]
#[ignore = "compile check of the expansion; the experiment needs Docker"]
#[should_panic]
async fn should_panic_moves_too(_: ::chaos_runtime::ChaosRun) -> () {
    panic!("the body may panic");
}

/// The closure's `run` parameter is hygienic: it does not shadow a test named `run`.
#[chaos_test(fault = "kill", target = "redis", recover_within = "5s")]
#[ignore = "compile check of the expansion; the experiment needs Docker"]
async fn run(run: ChaosRun) {
    let _ = run.lost_writes();
}
