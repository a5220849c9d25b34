//! The JUnit XML of a synthetic run (no Docker): its shape here, and, when python3 with
//! `junitparser` (PyPI) is available, what an independent JUnit parser reads from it.
use chaos_cli::junit::{Outcome, to_xml};
use std::path::PathBuf;
use std::process::Command;

fn outcomes() -> Vec<Outcome> {
    let timeline = "thread '<unnamed>' panicked at tests/01_database_sudden_death.rs:20:1:\n\
chaos budget failed for 01_database_sudden_death::orders_survive:\n  \
- recovery took 2310 ms after heal, over the budget of 1 ms (recover_within)\n\n\
timeline of 01_database_sudden_death::orders_survive (t0 = stack ready)\n\
== baseline   0 ms .. 3000 ms   ok 120 failed 0 p50 2.1 ms p99 9 ms\n\
== fault      3000 ms .. 5000 ms  <kill postgres via docker kill> & \"quotes\" \x1b[31mred\x1b[0m\n\
   3012 ms  container_die postgres (signal 9)\n";
    vec![
        Outcome {
            package: "chaos-suite".into(),
            experiment: "01_database_sudden_death".into(),
            test: "orders_survive".into(),
            passed: false,
            duration_s: Some(14.25),
            recovery: "2.31 s / 1 ms".into(),
            lost_writes: Some(0),
            report: Some(PathBuf::from("/w/target/chaos/orders_survive.html")),
            failure: Some(timeline.into()),
        },
        Outcome {
            package: "chaos-suite".into(),
            experiment: "01_database_sudden_death".into(),
            test: "ledger_reports".into(),
            passed: true,
            duration_s: Some(12.0),
            recovery: "1.44 s / 5 s".into(),
            lost_writes: Some(0),
            report: Some(PathBuf::from("/w/target/chaos/ledger_reports.html")),
            failure: None,
        },
        Outcome {
            package: "chaos-suite".into(),
            experiment: "07_redis_cache_failure".into(),
            test: "reads_survive_redis_death_through_postgres".into(),
            passed: true,
            duration_s: Some(15.5),
            recovery: "310 ms / 2 s".into(),
            lost_writes: None,
            report: None,
            failure: None,
        },
    ]
}

#[test]
fn failures_carry_the_timeline_and_the_page() {
    let x = to_xml("chaos", &outcomes(), "2026-09-22T10:00:00Z");
    assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"chaos\" tests=\"3\" failures=\"1\""));
    assert_eq!(x.matches("<testsuite ").count(), 2);
    assert!(x.contains("<failure message=\"chaos budget failed for 01_database_sudden_death::orders_survive:\" type=\"chaos budget\">"));
    assert!(x.contains("== fault      3000 ms .. 5000 ms  &lt;kill postgres via docker kill&gt; &amp; &quot;quotes&quot; red\n"));
    assert!(x.contains("report: /w/target/chaos/orders_survive.html</failure>"));
    assert!(!x.contains('\x1b'));
}

/// Runs `python3` on `script` with the XML's path; None when python3 or junitparser is missing.
fn python_junitparser(path: &std::path::Path, script: &str) -> Option<String> {
    let probe = Command::new("python3")
        .args(["-c", "import junitparser"])
        .output()
        .ok()?;
    if !probe.status.success() {
        return None;
    }
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "junitparser rejected {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

const READ: &str = r#"
import sys
from junitparser import JUnitXml, Failure
xml = JUnitXml.fromfile(sys.argv[1])
for suite in xml:
    print("suite", suite.name, suite.tests, suite.failures, suite.errors)
    for case in suite:
        fails = [r for r in case.result if isinstance(r, Failure)]
        state = "FAIL" if fails else "PASS"
        print("case", case.classname, case.name, state, case.time)
        for f in fails:
            print("message", f.message)
            print("type", f.type)
            print("has-timeline", "timeline of" in (f.text or ""))
            print("has-page", "report: /w/target/chaos/orders_survive.html" in (f.text or ""))
"#;

#[test]
fn a_junit_parser_reads_it() {
    let path = std::env::temp_dir().join(format!("chaos-cli-junit-{}.xml", std::process::id()));
    std::fs::write(&path, to_xml("chaos", &outcomes(), "2026-09-22T10:00:00Z")).unwrap();
    let Some(got) = python_junitparser(&path, READ) else {
        eprintln!(
            "SKIPPED a_junit_parser_reads_it: python3 with junitparser is not available (pip install junitparser)"
        );
        let _ = std::fs::remove_file(&path);
        return;
    };
    let _ = std::fs::remove_file(&path);
    let expected = "\
suite 01_database_sudden_death 2 1 0
case chaos-suite::01_database_sudden_death orders_survive FAIL 14.25
message chaos budget failed for 01_database_sudden_death::orders_survive:
type chaos budget
has-timeline True
has-page True
case chaos-suite::01_database_sudden_death ledger_reports PASS 12.0
suite 07_redis_cache_failure 1 0 0
case chaos-suite::07_redis_cache_failure reads_survive_redis_death_through_postgres PASS 15.5
";
    assert_eq!(got, expected);
}
