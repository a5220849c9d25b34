//! Finding the experiments the way cargo and libtest see them: `cargo test --no-run
//! --message-format json` names every integration test binary (package, target, source,
//! executable), and each binary's `--list --format terse` names its tests (`--ignored` the
//! ignored ones). A target is an experiment when its source uses `#[chaos_test]` or
//! `Experiment::new`, or a journal of one of its tests exists; the source scan also gives
//! each test's declared faults and budget, for display only.
use crate::suite;
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An integration test binary cargo built.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TestBinary {
    /// Its package's name.
    pub package: String,
    /// The target's name (`01_database_sudden_death`), the `--test` argument.
    pub target: String,
    /// The target's source file.
    pub src_path: PathBuf,
    /// The executable.
    pub executable: PathBuf,
    /// The package's directory (where `cargo test` runs the binary).
    pub package_dir: PathBuf,
}

/// One test of a target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TestInfo {
    /// The name libtest lists (`orders_survive_postgres_sudden_death`, or `mod::name`).
    pub name: String,
    /// `#[ignore]`d: runs only with `-- --ignored` / `--include-ignored`.
    pub ignored: bool,
    /// A `#[chaos_test]` (or a test with a journal).
    pub chaos_test: bool,
    /// Declared faults, from the source (display only).
    pub faults: Vec<String>,
    /// `recover_within`, from the source (display only).
    pub recover_within: Option<String>,
}

/// One integration test target and its tests.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    /// The binary.
    #[serde(flatten)]
    pub binary: TestBinary,
    /// Whether it holds chaos experiments.
    pub experiment: bool,
    /// Its tests, in libtest's order.
    pub tests: Vec<TestInfo>,
}

/// The package name of a cargo package id: `path+file:///w#chaos-suite@0.1.0` ->
/// `chaos-suite`; `path+file:///w/order-service#0.1.0` -> `order-service`; the old
/// `chaos-suite 0.1.0 (path+file:///w)` -> `chaos-suite`.
pub fn package_name(id: &str) -> String {
    if let Some((url, frag)) = id.split_once('#') {
        return match frag.split_once('@') {
            Some((name, _)) => name.to_string(),
            None => url
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(url)
                .to_string(),
        };
    }
    id.split_whitespace().next().unwrap_or(id).to_string()
}

/// The integration test binaries among cargo's JSON messages (one per line).
pub fn test_binaries(json_lines: &str) -> Vec<TestBinary> {
    let mut out: Vec<TestBinary> = Vec::new();
    for line in json_lines.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let kinds = v["target"]["kind"].as_array().cloned().unwrap_or_default();
        if !kinds.iter().any(|k| k == "test") {
            continue;
        }
        let (Some(exe), Some(name), Some(src), Some(id), Some(manifest)) = (
            v["executable"].as_str(),
            v["target"]["name"].as_str(),
            v["target"]["src_path"].as_str(),
            v["package_id"].as_str(),
            v["manifest_path"].as_str(),
        ) else {
            continue;
        };
        let b = TestBinary {
            package: package_name(id),
            target: name.to_string(),
            src_path: PathBuf::from(src),
            executable: PathBuf::from(exe),
            package_dir: Path::new(manifest)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        if !out.contains(&b) {
            out.push(b);
        }
    }
    out.sort_by(|a, b| (&a.package, &a.target).cmp(&(&b.package, &b.target)));
    out
}

/// The test names of libtest's `--list --format terse` output (`name: test`; benches skipped).
pub fn terse_list(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

/// A `cargo` command for the user's workspace, without the variables cargo sets for the
/// process it runs (`cargo run -p chaos-cli` sets `CARGO_PKG_*`, `CARGO_MANIFEST_DIR`, ...):
/// inherited by the inner cargo they reach build scripts and `env!`s and make it rebuild
/// dependencies (rustls, bollard, chaos-runtime) on every run.
pub fn cargo_command() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
        ]
        .iter()
        .any(|p| k.starts_with(p))
            || matches!(k, "CARGO_PRIMARY_PACKAGE" | "OUT_DIR")
        {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// What a plain `cargo test` in `root` runs, out of a `--workspace` build: the root package's
/// binaries when the root manifest is a package, else every member's.
pub fn default_selection(root: &Path, bins: Vec<TestBinary>) -> Vec<TestBinary> {
    let is_package = std::fs::read_to_string(root.join("Cargo.toml"))
        .is_ok_and(|t| t.lines().any(|l| l.trim() == "[package]"));
    if !is_package {
        return bins;
    }
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let root = canon(root);
    bins.into_iter()
        .filter(|b| canon(&b.package_dir) == root)
        .collect()
}

/// Builds the test binaries (`cargo test --no-run`), calling `status` with each line cargo
/// prints on stderr (`Compiling ...`, errors); returns the integration test binaries.
pub fn build(
    root: &Path,
    packages: &[String],
    mut status: impl FnMut(&str),
) -> Result<Vec<TestBinary>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "test",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ])
    .args(packages)
    .current_dir(root)
    .env("CARGO_TERM_COLOR", "never")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}. Fix: put cargo on PATH"))?;
    // cargo's JSON on stdout, collected aside; its status lines on stderr, live.
    let stdout = child.stdout.take();
    let json = std::thread::spawn(move || {
        let mut json = String::new();
        if let Some(s) = stdout {
            for l in BufReader::new(s).lines().map_while(Result::ok) {
                json.push_str(&l);
                json.push('\n');
            }
        }
        json
    });
    let mut errs: Vec<String> = Vec::new();
    if let Some(s) = child.stderr.take() {
        for l in BufReader::new(s).lines().map_while(Result::ok) {
            status(&l);
            errs.push(l);
        }
    }
    let json = json.join().unwrap_or_default();
    let st = child
        .wait()
        .map_err(|e| format!("waiting for cargo: {e}"))?;
    if !st.success() {
        let tail: Vec<&String> = errs.iter().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().map(String::as_str).collect();
        return Err(format!(
            "`cargo test --no-run {}` failed:\n{}",
            packages.join(" "),
            tail.join("\n")
        ));
    }
    Ok(test_binaries(&json))
}

fn list_of(bin: &TestBinary, ignored: bool) -> Result<Vec<String>, String> {
    let mut cmd = Command::new(&bin.executable);
    cmd.args(["--list", "--format", "terse"]);
    if ignored {
        cmd.arg("--ignored");
    }
    let out = cmd
        .current_dir(&bin.package_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.executable.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --list failed: {}",
            bin.executable.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(terse_list(&String::from_utf8_lossy(&out.stdout)))
}

/// Lists each binary's tests and classifies the targets; `journaled` holds the
/// `target::test` names that have a journal.
pub fn targets(bins: &[TestBinary], journaled: &BTreeSet<String>) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    for b in bins {
        let names = list_of(b, false)?;
        let ignored: BTreeSet<String> = list_of(b, true)?.into_iter().collect();
        let src = std::fs::read_to_string(&b.src_path).unwrap_or_default();
        let scan = suite::scan(&src);
        let tests: Vec<TestInfo> = names
            .into_iter()
            .map(|name| {
                let short = name.rsplit("::").next().unwrap_or(&name).to_string();
                let d = scan.tests.iter().find(|t| t.name == short);
                TestInfo {
                    ignored: ignored.contains(&name),
                    chaos_test: d.is_some_and(|d| d.chaos)
                        || journaled.contains(&format!("{}::{short}", b.target)),
                    faults: d.map(|d| d.faults.clone()).unwrap_or_default(),
                    recover_within: d.and_then(|d| d.recover_within.clone()),
                    name,
                }
            })
            .collect();
        out.push(Target {
            experiment: scan.experiment || tests.iter().any(|t| t.chaos_test),
            binary: b.clone(),
            tests,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_run_keeps_the_root_packages_binaries_of_a_workspace_build() {
        let dir = std::env::temp_dir().join(format!("chaos-sel-{}", std::process::id()));
        let member = dir.join("examples/kv");
        std::fs::create_dir_all(&member).unwrap();
        let bin = |package: &str, package_dir: &Path| TestBinary {
            package: package.into(),
            target: "t".into(),
            src_path: package_dir.join("tests/t.rs"),
            executable: dir.join("target/debug/deps/t-1"),
            package_dir: package_dir.to_path_buf(),
        };
        let bins = vec![bin("suite", &dir), bin("kv", &member)];
        // A virtual workspace: `cargo test` runs every member.
        std::fs::write(
            dir.join("Cargo.toml"),
            "[workspace]\nmembers = [\"examples/kv\"]\n",
        )
        .unwrap();
        assert_eq!(default_selection(&dir, bins.clone()).len(), 2);
        // A root package: `cargo test` runs its tests only.
        std::fs::write(
            dir.join("Cargo.toml"),
            "[package]\nname = \"suite\"\n\n[workspace]\nmembers = [\"examples/kv\"]\n",
        )
        .unwrap();
        let kept = default_selection(&dir, bins);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].package, "suite");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn package_ids_of_every_cargo_format() {
        assert_eq!(
            package_name("path+file:///work/wt-cli#chaos-suite@0.1.0"),
            "chaos-suite"
        );
        assert_eq!(
            package_name("path+file:///work/wt-cli/fixtures/order-service#0.1.0"),
            "order-service"
        );
        assert_eq!(
            package_name("chaos-suite 0.1.0 (path+file:///work/wt-cli)"),
            "chaos-suite"
        );
    }

    #[test]
    fn integration_test_binaries_are_picked_from_cargo_messages() {
        let msgs = [
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w#chaos-suite@0.1.0","manifest_path":"/w/Cargo.toml","target":{"kind":["test"],"name":"01_x","src_path":"/w/tests/01_x.rs"},"profile":{"test":true},"executable":"/w/target/debug/deps/01_x-abc"}"#,
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w#chaos-suite@0.1.0","manifest_path":"/w/Cargo.toml","target":{"kind":["bin"],"name":"order-service","src_path":"/w/src/bin/o.rs"},"profile":{"test":false},"executable":"/w/target/debug/order-service"}"#,
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/c#chaos-cli@0.1.0","manifest_path":"/w/c/Cargo.toml","target":{"kind":["lib"],"name":"chaos_cli","src_path":"/w/c/src/lib.rs"},"profile":{"test":true},"executable":"/w/target/debug/deps/chaos_cli-1"}"#,
            r#"{"reason":"build-finished","success":true}"#,
            "not json",
        ]
        .join("\n");
        let b = test_binaries(&msgs);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].package, "chaos-suite");
        assert_eq!(b[0].target, "01_x");
        assert_eq!(b[0].package_dir, PathBuf::from("/w"));
        assert_eq!(
            b[0].executable,
            PathBuf::from("/w/target/debug/deps/01_x-abc")
        );
    }

    #[test]
    fn terse_lists_name_tests_only() {
        let out = "orders_survive: test\nm::inner: test\nbench_x: benchmark\n\n";
        assert_eq!(terse_list(out), ["orders_survive", "m::inner"]);
    }
}
