//! `chaos` and `cargo chaos`: run the experiment suite with live progress, list it, check the
//! host, rebuild the reports, remove Docker leftovers, write JUnit.
//!
//! ```text
//! cargo chaos run [FILTER] [--keep] [--observer auto|bpf|fallback] [--junit FILE] [--json] [-- TEST_ARGS...]
//! cargo chaos list [--json] [--all]
//! cargo chaos report [--open]
//! cargo chaos doctor [--json]
//! cargo chaos clean [--dry-run] [--json]
//! cargo chaos completions <SHELL>
//! ```
//!
//! It works from anywhere inside a Cargo workspace that uses chaos-runtime (the root is the
//! nearest Cargo.toml with `[workspace]` above the current directory). The experiments are
//! found through cargo and libtest (see [`discover`]).
use clap::CommandFactory;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub mod clean;
pub mod cli;
pub mod discover;
pub mod junit;
mod rt;
pub mod runner;
pub mod suite;
pub mod ui;

use cli::{Cli, Command};

/// Prints a line on stdout, stopping quietly on a closed pipe (`chaos list --json | head`).
pub(crate) fn out(s: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{s}");
}

/// `chaos`'s entry point: runs the command line `args` (program name first); the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    main_as(args, "chaos")
}

/// The entry point under another name (`cargo chaos`), for help, errors and completions.
pub fn main_as(args: Vec<OsString>, bin_name: &'static str) -> i32 {
    let cmd = Cli::command().bin_name(bin_name);
    let cli = match cmd
        .try_get_matches_from(args)
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            if e.use_stderr() {
                let _ = e.print();
                return 2;
            }
            // --help, --version: on stdout, ending in a newline.
            out(e.render().to_string().trim_end());
            return 0;
        }
    };
    match cli.command {
        Command::Run(a) => with_root(|root| run(root, &a)),
        Command::List(a) => with_root(|root| list(root, &a)),
        Command::Report(a) => with_root(|root| report(root, a.open)),
        Command::Doctor(a) => doctor(a.json),
        Command::Clean(a) => clean_cmd(a.dry_run, a.json),
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a closed pipe (`| head`).
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, bin_name.replace(' ', "-"), &mut buf);
            use std::io::Write as _;
            let _ = std::io::stdout().lock().write_all(&buf);
            0
        }
    }
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

/// The `target::test` names that have a journal.
fn journaled(dir: &Path) -> std::collections::BTreeSet<String> {
    rt::journals(dir)
        .into_iter()
        .filter_map(|(_, p)| rt::summary(&p).map(|s| s.test))
        .collect()
}

/// Builds the test binaries and lists their tests, with a spinner while cargo works.
fn discover_targets(
    root: &Path,
    packages: &cli::Packages,
    ui: &mut ui::Ui,
) -> Result<Vec<discover::Target>, String> {
    let dir = suite::chaos_dir(root);
    if !ui.live() {
        eprintln!("chaos: building the test binaries (cargo test --no-run)");
    }
    ui.status("building the test binaries (cargo test --no-run)");
    // Without -p/--workspace, build as `cargo test --workspace` does and keep what a plain
    // `cargo test` here would run: a narrower cargo selection resolves the dev-dependencies'
    // features differently and rebuilds half the tree (minutes) after `cargo test --workspace`.
    let default_selection = packages.package.is_empty() && !packages.workspace;
    let args = if default_selection {
        vec!["--workspace".to_string()]
    } else {
        packages.cargo_args()
    };
    let bins = discover::build(root, &args, |l| {
        let l = l.trim();
        if let Some(rest) = l
            .strip_prefix("Compiling ")
            .or_else(|| l.strip_prefix("Blocking "))
        {
            ui.status(&format!(
                "building: {}",
                rest.split(" (").next().unwrap_or(rest)
            ));
        } else if l.starts_with("error") || l.starts_with("warning: unused") {
            // Errors come back in full when the build fails.
        }
    });
    ui.clear_status();
    let mut bins = bins?;
    if default_selection {
        bins = discover::default_selection(root, bins);
    }
    ui.status("listing tests (<test binary> --list)");
    let t = discover::targets(&bins, &journaled(&dir));
    ui.clear_status();
    t
}

fn run(root: &Path, a: &cli::RunArgs) -> i32 {
    let mut ui = ui::Ui::new(a.verbose);
    let all = match discover_targets(root, &a.packages, &mut ui) {
        Ok(t) => t,
        Err(e) => {
            ui.finish();
            eprintln!("chaos run: {e}");
            return 2;
        }
    };
    let experiments: Vec<discover::Target> = all.into_iter().filter(|t| t.experiment).collect();
    if experiments.is_empty() {
        ui.finish();
        eprintln!(
            "chaos run: no integration test here uses #[chaos_test] or Experiment::new. Fix: run inside the workspace of the suite, or pick its package with -p"
        );
        return 2;
    }
    let (selected, harness_filter) = match runner::select(&experiments, a.filter.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            ui.finish();
            eprintln!("chaos run: {e}");
            return 2;
        }
    };
    let dir = suite::chaos_dir(root);
    runner::run(root, &dir, &mut ui, &selected, harness_filter.as_deref(), a)
}

fn list(root: &Path, a: &cli::ListArgs) -> i32 {
    let mut ui = ui::Ui::new(false);
    let targets = match discover_targets(root, &a.packages, &mut ui) {
        Ok(t) => t,
        Err(e) => {
            ui.finish();
            eprintln!("chaos list: {e}");
            return 2;
        }
    };
    ui.finish();
    let shown: Vec<&discover::Target> = targets.iter().filter(|t| a.all || t.experiment).collect();
    let dir = suite::chaos_dir(root);
    let mut last: std::collections::BTreeMap<String, (String, rt::Summary)> = Default::default();
    for (stem, path) in rt::journals(&dir) {
        if let Some(s) = rt::summary(&path) {
            last.insert(s.test.clone(), (stem, s));
        }
    }
    if a.json {
        let v: Vec<serde_json::Value> = shown
            .iter()
            .map(|t| {
                let tests: Vec<serde_json::Value> = t
                    .tests
                    .iter()
                    .map(|x| {
                        let key = format!("{}::{}", t.binary.target, x.name);
                        let mut v = serde_json::to_value(x).unwrap_or_default();
                        v["id"] = key.clone().into();
                        v["last"] = match last.get(&key) {
                            Some((stem, s)) => serde_json::json!({
                                "passed": s.passed,
                                "time_to_recover_ms": s.time_to_recover_ms,
                                "recover_within_ms": s.recover_within_ms,
                                "lost_writes": s.lost_writes,
                                "started_unix_ms": s.started_unix_ms,
                                "report": rt::page_path(&dir, stem),
                            }),
                            None => serde_json::Value::Null,
                        };
                        v
                    })
                    .collect();
                let mut v = serde_json::to_value(t).unwrap_or_default();
                v["tests"] = tests.into();
                v
            })
            .collect();
        out(&serde_json::to_string_pretty(&v).unwrap_or_default());
        return 0;
    }
    for t in &shown {
        out(&format!(
            "{}  ({}, package {}){}",
            t.binary.target,
            runner::display_path(&t.binary.src_path, root),
            t.binary.package,
            if t.experiment {
                ""
            } else {
                "  [not an experiment]"
            }
        ));
        if t.tests.is_empty() {
            out("    (no tests)");
        }
        for x in &t.tests {
            let key = format!("{}::{}", t.binary.target, x.name);
            let verdict = last
                .get(&key)
                .map(|(_, s)| {
                    format!(
                        "last: {}, {}",
                        if s.passed { "PASS" } else { "FAIL" },
                        s.time_to_recover_ms
                            .map(|r| format!("recovered in {}", rt::dur(r)))
                            .unwrap_or_else(|| "never recovered".into())
                    )
                })
                .unwrap_or_else(|| "not run yet".into());
            out(&format!(
                "  {}{}  [{verdict}]",
                x.name,
                if x.ignored { " (ignored)" } else { "" }
            ));
            if t.experiment {
                let faults = if x.faults.is_empty() {
                    "(no fault declared)".to_string()
                } else {
                    x.faults.join(" + ")
                };
                let budget = x
                    .recover_within
                    .as_ref()
                    .map(|r| format!(" · recover within {r}"))
                    .unwrap_or_default();
                out(&format!("      {faults}{budget}"));
            }
        }
    }
    out(&format!(
        "\n{} target(s), {} test(s)",
        shown.len(),
        shown.iter().map(|t| t.tests.len()).sum::<usize>()
    ));
    0
}

fn report(root: &Path, open: bool) -> i32 {
    let dir = suite::chaos_dir(root);
    match rt::render_all(&dir) {
        Ok(index) => {
            let n = rt::journals(&dir).len();
            if n == 0 {
                eprintln!(
                    "no journals in {} yet: run `cargo chaos run` first",
                    dir.join("runs").display()
                );
            } else {
                eprintln!("rebuilt {n} page(s)");
            }
            out(&index.display().to_string());
            if open {
                let opener = if cfg!(target_os = "macos") {
                    "open"
                } else {
                    "xdg-open"
                };
                if let Err(e) = std::process::Command::new(opener).arg(&index).spawn() {
                    eprintln!("chaos report: cannot run {opener}: {e}; open the path above");
                    return 1;
                }
            }
            0
        }
        Err(msg) => {
            eprintln!("chaos report: {msg}");
            1
        }
    }
}

fn doctor(json: bool) -> i32 {
    let r = rt::probe_host();
    if json {
        match serde_json::to_string_pretty(&r) {
            Ok(s) => out(&s),
            Err(e) => {
                eprintln!("chaos doctor: {e}");
                return 1;
            }
        }
    } else {
        out(r.render_text().trim_end());
    }
    if r.all_run() { 0 } else { 1 }
}

fn clean_cmd(dry_run: bool, json: bool) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chaos clean: {e}");
            return 2;
        }
    };
    match rt.block_on(clean::clean(dry_run)) {
        Ok(rs) => {
            if json {
                out(&serde_json::to_string_pretty(&rs).unwrap_or_default());
            } else {
                out(&clean::render(&rs, dry_run));
            }
            if rs.iter().any(|r| r.error.is_some()) {
                1
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("chaos clean: {e}");
            2
        }
    }
}
