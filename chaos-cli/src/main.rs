//! The `chaos` command: run the experiment suite with progress, list it, check the host,
//! rebuild the reports.
//!
//! ```text
//! chaos run [FILTER] [--keep] [--observer auto|bpf|fallback] [--verbose] [-- TEST_ARGS...]
//! chaos list
//! chaos report
//! chaos doctor [--json]
//! ```
//!
//! It works from anywhere inside the workspace (the root is the nearest Cargo.toml with
//! `[workspace]` above the current directory).
use chaos_runtime::{doctor, report};
use std::path::{Path, PathBuf};

/// `println!` that stops quietly on a closed pipe (`chaos doctor --json | head`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

mod runner;
mod suite;
mod term;

const USAGE: &str = "\
chaos: run the chaos experiment suite, list it, check the host, rebuild the reports

USAGE:
  chaos run [FILTER] [OPTIONS] [-- TEST_ARGS...]
      Runs the experiments (tests/NN_*.rs of the suite) one file after the other, each through
      `cargo test -p chaos-suite --test <file>`, with live progress per test and phase, then a
      summary and the report (target/chaos/index.html). Exits non-zero when any fails.
      FILTER picks experiment files by name (`01`, `partition`); when no file matches, it picks
      the tests whose name contains it.
      --keep                      keep a failed test's containers (CHAOS_KEEP=1)
      --observer auto|bpf|fallback   force the observers (CHAOS_OBSERVER)
      -v, --verbose               stream cargo's and the tests' output as it comes
      TEST_ARGS                   passed to the test harness (e.g. --include-ignored)
  chaos list
      The experiments, their tests and declared faults, and each test's last verdict.
  chaos report
      Rebuilds every run's page and the index from the journals; prints the index's path.
  chaos doctor [--json]
      Probes this host (Docker, root, cgroups, eBPF, BTF, tracefs, netem, iptables, nft,
      debootstrap, clang) and prints which experiments run and how they are observed.
      Exits non-zero only when an experiment cannot run.
  chaos help | --help | --version
";

fn main() {
    std::process::exit(real_main(std::env::args().skip(1).collect()));
}

fn real_main(args: Vec<String>) -> i32 {
    let Some(cmd) = args.first().map(String::as_str) else {
        eprint!("{USAGE}");
        return 2;
    };
    let rest = &args[1..];
    if rest
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-h" || a == "--help")
    {
        out!("{}", USAGE.trim_end());
        return 0;
    }
    match cmd {
        "help" | "-h" | "--help" => {
            out!("{}", USAGE.trim_end());
            0
        }
        "--version" | "-V" | "version" => {
            out!("chaos {}", env!("CARGO_PKG_VERSION"));
            0
        }
        "run" => match parse_run(rest) {
            Ok(opts) => with_root(|root| runner::run(root, &opts)),
            Err(e) => usage_error(&e),
        },
        "list" => no_args(rest).map_or_else(|e| usage_error(&e), |_| with_root(list)),
        "report" => no_args(rest).map_or_else(|e| usage_error(&e), |_| with_root(rebuild_reports)),
        "doctor" => match rest {
            [] => doctor_cmd(false),
            [j] if j == "--json" => doctor_cmd(true),
            _ => usage_error(&format!("doctor takes only --json, not {}", rest.join(" "))),
        },
        other => usage_error(&format!("unknown command {other:?}")),
    }
}

fn usage_error(e: &str) -> i32 {
    eprintln!("chaos: {e}\n\n{USAGE}");
    2
}

fn no_args(rest: &[String]) -> Result<(), String> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!("unexpected arguments: {}", rest.join(" ")))
    }
}

/// Parses `run`'s arguments.
fn parse_run(args: &[String]) -> Result<runner::Opts, String> {
    let mut o = runner::Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--" => {
                o.test_args = it.by_ref().cloned().collect();
            }
            "--keep" => o.keep = true,
            "-v" | "--verbose" => o.verbose = true,
            "--observer" => {
                let m = it
                    .next()
                    .ok_or("--observer needs a mode: auto, bpf or fallback")?;
                if !matches!(m.as_str(), "auto" | "bpf" | "fallback") {
                    return Err(format!(
                        "--observer {m:?} is not a mode: auto, bpf or fallback"
                    ));
                }
                o.observer = Some(m.clone());
            }
            s if s.starts_with("--observer=") => {
                let m = &s["--observer=".len()..];
                if !matches!(m, "auto" | "bpf" | "fallback") {
                    return Err(format!(
                        "--observer {m:?} is not a mode: auto, bpf or fallback"
                    ));
                }
                o.observer = Some(m.to_string());
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s} for run")),
            s => {
                if o.filter.is_some() {
                    return Err(format!("run takes one FILTER; got a second one: {s}"));
                }
                o.filter = Some(s.to_string());
            }
        }
    }
    Ok(o)
}

fn with_root(f: impl FnOnce(&Path) -> i32) -> i32 {
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    match suite::workspace_root(&here) {
        Ok(root) => f(&root),
        Err(e) => {
            eprintln!("chaos: {e}");
            2
        }
    }
}

fn list(root: &Path) -> i32 {
    let exps = match suite::experiments(root) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("chaos list: {e}");
            return 2;
        }
    };
    let dir = suite::chaos_dir(root);
    let mut last: std::collections::BTreeMap<String, report::Summary> = Default::default();
    for (_, path) in report::journals(&dir).unwrap_or_default() {
        if let Ok(s) = report::read_summary(&path) {
            last.insert(s.test.clone(), s);
        }
    }
    for e in &exps {
        out!("{}  ({})", e.stem, runner::display_path(&e.path, root));
        if e.tests.is_empty() {
            out!("    (no #[chaos_test] or #[test] found)");
        }
        for t in &e.tests {
            let verdict = last
                .get(&format!("{}::{}", e.stem, t.name))
                .map(|s| {
                    format!(
                        "last: {}, {}",
                        if s.passed { "PASS" } else { "FAIL" },
                        s.time_to_recover_ms
                            .map(|r| format!("recovered in {}", report::fmt::dur(r)))
                            .unwrap_or_else(|| "never recovered".into())
                    )
                })
                .unwrap_or_else(|| "not run yet".into());
            let faults = if t.faults.is_empty() {
                "(no fault declared)".to_string()
            } else {
                t.faults.join(" + ")
            };
            let budget = t
                .recover_within
                .as_ref()
                .map(|r| format!(" · recover within {r}"))
                .unwrap_or_default();
            out!(
                "  {}{}  [{verdict}]",
                t.name,
                if t.ignored { " (ignored)" } else { "" }
            );
            out!("      {faults}{budget}");
        }
    }
    out!(
        "\n{} experiments, {} tests",
        exps.len(),
        exps.iter().map(|e| e.tests.len()).sum::<usize>()
    );
    0
}

fn rebuild_reports(root: &Path) -> i32 {
    let dir = suite::chaos_dir(root);
    match report::render_all(&dir) {
        Ok(index) => {
            let n = report::journals(&dir).map(|j| j.len()).unwrap_or(0);
            if n == 0 {
                eprintln!(
                    "no journals in {} yet: run `chaos run` first",
                    dir.join("runs").display()
                );
            } else {
                eprintln!("rebuilt {n} page(s)");
            }
            out!("{}", index.display());
            0
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("chaos report: {msg}");
            1
        }
    }
}

fn doctor_cmd(json: bool) -> i32 {
    let r = doctor::probe_all();
    if json {
        match serde_json::to_string_pretty(&r) {
            Ok(s) => out!("{s}"),
            Err(e) => {
                eprintln!("chaos doctor: {e}");
                return 1;
            }
        }
    } else {
        out!("{}", r.render_text().trim_end());
    }
    if r.all_run() { 0 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn run_arguments() {
        let o = parse_run(&s(&[
            "01",
            "--keep",
            "--observer",
            "fallback",
            "--",
            "--nocapture",
        ]))
        .unwrap();
        assert_eq!(o.filter.as_deref(), Some("01"));
        assert!(o.keep && !o.verbose);
        assert_eq!(o.observer.as_deref(), Some("fallback"));
        assert_eq!(o.test_args, ["--nocapture"]);
        assert!(parse_run(&s(&["--observer", "ebpf2"])).is_err());
        assert!(parse_run(&s(&["a", "b"])).is_err());
        assert!(parse_run(&s(&["--frobnicate"])).is_err());
        assert_eq!(
            parse_run(&s(&["--observer=bpf", "-v"]))
                .unwrap()
                .observer
                .as_deref(),
            Some("bpf")
        );
    }

    #[test]
    fn commands_and_usage_errors() {
        assert_eq!(real_main(s(&[])), 2);
        assert_eq!(real_main(s(&["frobnicate"])), 2);
        assert_eq!(real_main(s(&["help"])), 0);
        assert_eq!(real_main(s(&["run", "--help"])), 0);
        assert_eq!(real_main(s(&["list", "extra"])), 2);
        assert_eq!(real_main(s(&["doctor", "--yaml"])), 2);
    }
}
