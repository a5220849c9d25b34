//! The harness itself under failure: a panicking body and a broken budget still remove every
//! container, network and volume, and a broken budget prints the timeline that broke it.
use chaos_runtime::__private::{FaultSpec, Spec, SteadySpec, run};
use std::sync::Mutex;
use std::time::Duration;

static PANICKED_RUN: Mutex<Option<String>> = Mutex::new(None);
static BROKEN_RUN: Mutex<Option<String>> = Mutex::new(None);

/// Journals of these runs stay out of the suite's report (`target/chaos/`).
fn private_report_dir() {
    let dir = std::env::temp_dir().join("chaos-harness-failures");
    // SAFETY: both tests of this binary set the same value; nothing reads it concurrently with a different one.
    unsafe { std::env::set_var("CHAOS_REPORT_DIR", dir) };
}

fn leftovers(run_id: &str) -> Vec<String> {
    let label = format!("label=chaos.run={run_id}");
    let mut out = Vec::new();
    for args in [
        vec!["ps", "-aq", "--filter", &label],
        vec!["network", "ls", "-q", "--filter", &label],
        vec!["volume", "ls", "-q", "--filter", &label],
    ] {
        let o = std::process::Command::new("docker")
            .args(&args)
            .output()
            .expect("docker CLI");
        out.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| format!("{}: {l}", args[0])),
        );
    }
    out
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn a_panicking_body_still_removes_the_stack_and_heals() {
    static SPEC: Spec = Spec {
        name: "harness_failures::a_panicking_body",
        fn_name: "a_panicking_body",
        file: file!(),
        manifest_dir: env!("CARGO_MANIFEST_DIR"),
        faults: &[FaultSpec {
            kind: "pause",
            target: "redis",
            after_ms: 0,
            duration_ms: 500,
            params: &[],
        }],
        recover_within_ms: 10_000,
        observer: Some("fallback"),
        workload: None,
        system: chaos_trading::system,
        steady: SteadySpec::NONE,
        snapshot: false,
    };
    private_report_dir();
    let result = std::panic::catch_unwind(|| {
        run(
            &SPEC,
            Box::new(|run| {
                Box::pin(async move {
                    *PANICKED_RUN.lock().unwrap() = Some(run.stack().run_id.clone());
                    panic!("deliberate panic in the test body");
                })
            }),
        )
    });
    let err = result.expect_err("the body's panic must fail the test");
    assert!(
        panic_message(&err).contains("deliberate panic"),
        "{}",
        panic_message(&err)
    );
    let id = PANICKED_RUN.lock().unwrap().clone().expect("the body ran");
    assert_eq!(
        leftovers(&id),
        Vec::<String>::new(),
        "resources left behind by run {id}"
    );
}

#[test]
fn a_broken_budget_prints_the_timeline_and_removes_the_stack() {
    // 1 ms to recover from a SIGKILLed PostgreSQL cannot hold.
    static SPEC: Spec = Spec {
        name: "harness_failures::a_broken_budget",
        fn_name: "a_broken_budget",
        file: file!(),
        manifest_dir: env!("CARGO_MANIFEST_DIR"),
        faults: &[FaultSpec {
            kind: "kill",
            target: "postgres",
            after_ms: 0,
            duration_ms: 1000,
            params: &[],
        }],
        recover_within_ms: 1,
        observer: Some("fallback"),
        workload: None,
        system: chaos_trading::system,
        steady: SteadySpec::NONE,
        snapshot: false,
    };
    private_report_dir();
    let result = std::panic::catch_unwind(|| {
        run(
            &SPEC,
            Box::new(|run| {
                Box::pin(async move {
                    *BROKEN_RUN.lock().unwrap() = Some(run.stack().run_id.clone());
                })
            }),
        )
    });
    let msg = panic_message(&result.expect_err("a 1 ms budget must fail"));
    assert!(msg.contains("chaos budget failed"), "{msg}");
    assert!(
        msg.contains("over the budget of 1 ms") || msg.contains("never returned"),
        "{msg}"
    );
    // The timeline that broke it: phases, the kill, the death seen by Docker.
    for needle in [
        "timeline of",
        "== fault",
        "kill postgres via docker kill",
        "container_die postgres",
    ] {
        assert!(
            msg.contains(needle),
            "the failure message lacks {needle:?}:\n{msg}"
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    let id = BROKEN_RUN.lock().unwrap().clone().expect("the body ran");
    assert_eq!(
        leftovers(&id),
        Vec::<String>::new(),
        "resources left behind by run {id}"
    );
}
