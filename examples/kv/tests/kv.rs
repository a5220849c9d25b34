//! Chaos tests of the kv example, written as a team would for its own system.
use chaos_example_kv::system;
use chaos_runtime::{ChaosRun, chaos_test};

// With `appendfsync always`, a SET is on disk before Redis answers it: a SIGKILL loses no
// acknowledged key, and the store serves again once restarted.
#[chaos_test(
    fault = "kill",
    target = "store",
    duration = "1s",
    recover_within = "5s"
)]
async fn acknowledged_keys_survive_the_store_being_killed(run: ChaosRun) {
    let fault = run.metrics().phase("fault").expect("a fault phase");
    assert!(fault.failed > 0, "killing the store failed no write");
    assert!(
        run.lost_writes().is_empty(),
        "keys lost: {:?}",
        run.lost_writes()
    );
    assert!(run.acknowledged_writes().len() > 50);
}

// A frozen store accepts connections (the kernel does) but answers nothing: writes time out
// instead of failing fast, and none of them is acknowledged. The pause (2 s) outlasts the
// workload's 1 s request timeout, so a request that meets it times out: with a 1 s pause the
// first requests could still be answered at 1.03 s, just past the freeze, on a loaded machine.
#[chaos_test(
    fault = "pause",
    target = "store",
    duration = "2s",
    recover_within = "3s"
)]
async fn writes_time_out_while_the_store_is_frozen(run: ChaosRun) {
    let tl = run.timeline();
    let fault = tl.phases.iter().find(|p| p.name == "fault").unwrap();
    let timeouts = tl
        .samples
        .iter()
        .filter(|s| s.t_ms >= fault.start_ms && s.t_ms < fault.end_ms)
        .filter(|s| s.class.as_deref() == Some("timeout"))
        .count();
    assert!(timeouts > 0, "{}", tl.render_text());
    assert!(run.lost_writes().is_empty(), "{:?}", run.lost_writes());
}

// A role the system does not have is refused before anything starts, with a did-you-mean.
#[chaos_test(
    fault = "kill",
    target = "stroe",
    recover_within = "1s",
    snapshot = false
)]
#[should_panic(expected = "`stroe` is not a role of the system `kv` (did you mean `store`?)")]
async fn a_misspelt_role_is_refused_before_anything_starts() {}
