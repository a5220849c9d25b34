//! `chaos run`: the experiments found by `discover`, each target's test binary (the one
//! `cargo test --no-run` just built) run directly, as cargo would run it, one after the other, with the live display of `ui` (fed by the
//! runtime's JSON-lines progress file, `CHAOS_PROGRESS_FILE`, and libtest's result lines),
//! then a summary table, the report index, and on request JUnit XML and JSON.
use crate::cli::RunArgs;
use crate::discover::Target;
use crate::junit::Outcome;
use crate::rt::{self, Record, What, phases};
use crate::ui::Ui;
use console::style;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// The targets to run and the test-name filter to pass on: targets whose name contains the
/// filter, else the targets with a test whose name contains it (and the filter goes to libtest).
pub fn select(
    all: &[Target],
    filter: Option<&str>,
) -> Result<(Vec<Target>, Option<String>), String> {
    let Some(f) = filter else {
        return Ok((all.to_vec(), None));
    };
    let by_target: Vec<Target> = all
        .iter()
        .filter(|t| t.binary.target.contains(f))
        .cloned()
        .collect();
    if !by_target.is_empty() {
        return Ok((by_target, None));
    }
    let by_test: Vec<Target> = all
        .iter()
        .filter(|t| t.tests.iter().any(|x| x.name.contains(f)))
        .cloned()
        .collect();
    if by_test.is_empty() {
        let names: Vec<&str> = all.iter().map(|t| t.binary.target.as_str()).collect();
        return Err(format!(
            "no experiment target or test matches {f:?}. The experiments: {}. Fix: `chaos list`, then `chaos run 01` or `chaos run <part of a test name>`",
            names.join(", ")
        ));
    }
    Ok((by_test, Some(f.to_string())))
}

/// The arguments for one target's test binary: libtest's filter, then the user's test args.
///
/// The binary runs directly rather than through a second `cargo test -p P --test T`: a
/// narrower cargo invocation than discovery's resolves the dev-dependencies' features
/// differently and rebuilds much of the tree (minutes on a small machine), as nextest knows.
pub fn harness_args(harness_filter: Option<&str>, test_args: &[String]) -> Vec<String> {
    harness_filter
        .map(str::to_string)
        .into_iter()
        .chain(test_args.iter().cloned())
        .collect()
}

/// The tests of `t` that this run should see run (libtest's substring filters, ignored rules).
pub fn expected_tests(
    t: &Target,
    harness_filter: Option<&str>,
    test_args: &[String],
) -> Vec<String> {
    let names: Vec<&String> = test_args.iter().filter(|a| !a.starts_with('-')).collect();
    let only_ignored = test_args.iter().any(|a| a == "--ignored");
    let include_ignored = test_args.iter().any(|a| a == "--include-ignored");
    t.tests
        .iter()
        .filter(|x| harness_filter.is_none_or(|f| x.name.contains(f)))
        .filter(|x| names.is_empty() || names.iter().any(|n| x.name.contains(n.as_str())))
        .filter(|x| {
            if only_ignored {
                x.ignored
            } else {
                !x.ignored || include_ignored
            }
        })
        .map(|x| x.name.clone())
        .collect()
}

/// Seconds each test (`target::test`) took in its last run, from the journals: the journal's
/// write time minus its start, plus the stack's start-up that comes before the start.
pub fn estimates(dir: &Path) -> BTreeMap<String, f64> {
    const STACK_START_S: f64 = 6.0;
    let mut out = BTreeMap::new();
    for (_, path) in rt::journals(dir) {
        let (Some(s), Ok(m)) = (
            rt::summary(&path),
            std::fs::metadata(&path).and_then(|m| m.modified()),
        ) else {
            continue;
        };
        let end_ms = m
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as f64)
            .unwrap_or(0.0);
        let took = (end_ms - s.started_unix_ms as f64) / 1000.0;
        if s.started_unix_ms > 0 && (0.0..3600.0).contains(&took) {
            out.insert(s.test, took + STACK_START_S);
        }
    }
    out
}

/// One test's progress.
#[derive(Clone, Debug, Default)]
struct TestView {
    /// Phases reached: (phase, detail).
    phases: Vec<(String, String)>,
    /// `ok`, `FAILED`, `ignored` from the harness.
    result: Option<String>,
    first_at: Option<Instant>,
    done_at: Option<Instant>,
}

impl TestView {
    fn verdict(&self) -> Option<bool> {
        match self.result.as_deref() {
            Some("ok") => Some(true),
            Some("FAILED") => Some(false),
            _ => self
                .phases
                .iter()
                .find(|p| p.0 == phases::VERDICT)
                .map(|p| p.1 == "pass"),
        }
    }
}

/// One target's run.
struct TargetRun {
    package: String,
    target: String,
    started: Instant,
    started_wall: SystemTime,
    tests: BTreeMap<String, TestView>,
    order: Vec<String>,
    stdout: Vec<String>,
    output_tail: Vec<String>,
    exit: Option<ExitStatus>,
}

impl TargetRun {
    fn test(&mut self, name: &str) -> &mut TestView {
        if !self.tests.contains_key(name) {
            self.order.push(name.to_string());
        }
        self.tests.entry(name.to_string()).or_default()
    }
    fn done(&self) -> usize {
        self.tests.values().filter(|t| t.result.is_some()).count()
    }
}

enum Msg {
    Out(String),
    Err(String),
}

/// Removes the journals, pages and summary cache of earlier runs (not logs).
fn clear_previous_runs(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir.join("runs"));
    let _ = std::fs::remove_file(dir.join(".summaries.json"));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "html") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The suite's progress: tests done, and the time left as estimated from earlier journals.
struct Suite {
    done: u64,
    expected_s: Vec<f64>,
}

/// Runs `targets` (already selected); returns the exit code.
pub fn run(
    root: &Path,
    dir: &Path,
    ui: &mut Ui,
    targets: &[Target],
    harness_filter: Option<&str>,
    args: &RunArgs,
) -> i32 {
    let est = estimates(dir);
    if args.filter.is_none() && args.test_args.is_empty() {
        // The whole suite: the report shows this run only.
        clear_previous_runs(dir);
    }
    let plan: Vec<(&Target, Vec<String>)> = targets
        .iter()
        .map(|t| (t, expected_tests(t, harness_filter, &args.test_args)))
        .collect();
    let known: Vec<f64> = est.values().copied().collect();
    let fallback = if known.is_empty() {
        20.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    let mut suite = Suite {
        done: 0,
        expected_s: plan
            .iter()
            .flat_map(|(t, names)| {
                names.iter().map(|n| {
                    est.get(&format!("{}::{n}", t.binary.target))
                        .copied()
                        .unwrap_or(fallback)
                })
            })
            .collect(),
    };
    ui.start_suite(suite.expected_s.len() as u64);
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut failed_targets = 0;
    let total = plan.len();
    let hargs = harness_args(harness_filter, &args.test_args);
    let reaper = suite_reaper(ui);
    let spawn = |t: &Target| {
        spawn_one(
            dir,
            &t.binary.executable.display().to_string(),
            &hargs,
            t,
            args,
            reaper.as_deref(),
        )
    };
    // The next target's binary is started once the current one's last stack has started (see
    // `follow`): its first stack starts while that one measures; its experiments measure only
    // once they hold the machine's chaos slot.
    let mut next: Option<Result<Spawned, String>> = None;
    for (i, (t, expected)) in plan.iter().enumerate() {
        let shown = std::iter::once(display_path(&t.binary.executable, root))
            .chain(hargs.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        ui.line(&format!(
            "{} {}",
            style(format!("[{}/{total}] {}", i + 1, t.binary.target)).bold(),
            style(format!("· {shown}")).dim()
        ));
        let spawned = match next.take().unwrap_or_else(|| spawn(t)) {
            Ok(s) => s,
            Err(e) => {
                ui.finish();
                eprintln!("chaos run: {e}");
                return 2;
            }
        };
        let following = plan.get(i + 1).map(|(t, _)| *t);
        let mut staged = || {
            if let Some(n) = following
                && next.is_none()
            {
                next = Some(spawn(n));
            }
        };
        let r = follow(
            root,
            dir,
            spawned,
            t,
            expected,
            args,
            ui,
            &mut suite,
            &mut staged,
        );
        let ok = r.exit.is_some_and(|s| s.success());
        if !ok {
            failed_targets += 1;
            print_failure(&r, dir, ui);
        }
        outcomes.extend(outcomes_of(&r, dir, ok));
    }
    ui.finish();
    let index = rt::render_all(dir);
    print_summary(&outcomes, root);
    match &index {
        Ok(p) => eprintln!("\nreport: {}", style(p.display()).bold()),
        Err(e) => eprintln!("\nchaos run: could not rebuild the report: {e}"),
    }
    let mut code = if failed_targets > 0 {
        eprintln!(
            "{}",
            style(format!(
                "{failed_targets} of {total} experiment target(s) failed"
            ))
            .red()
        );
        1
    } else {
        eprintln!(
            "{}",
            style(format!("all {total} experiment target(s) passed")).green()
        );
        0
    };
    if let Some(path) = &args.junit {
        let xml = crate::junit::to_xml("chaos", &outcomes, &crate::junit::now_iso8601());
        match std::fs::write(path, xml) {
            Ok(()) => eprintln!("junit: {}", path.display()),
            Err(e) => {
                eprintln!("chaos run: cannot write {}: {e}", path.display());
                code = code.max(2);
            }
        }
    }
    if args.json {
        let v = serde_json::json!({
            "passed": code == 0,
            "report": index.as_ref().ok(),
            "results": outcomes,
        });
        crate::out(&serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    code
}

/// One reaper for every test process of the suite (see `chaos_runtime::reaper`): each
/// registers with it in milliseconds instead of starting a container of its own before its
/// first stack (0.7-1 s on two cores, once per target). Its address, or `None` (each process
/// then starts its own, as under `cargo test`): when `CHAOS_NO_REAPER` is set, when the
/// environment already names one, or when it cannot start.
fn suite_reaper(ui: &mut Ui) -> Option<String> {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty() && v != "0");
    if set("CHAOS_NO_REAPER") || set(rt::REAPER_ENV) {
        return None;
    }
    let started = Instant::now();
    match rt::start_suite_reaper() {
        Ok(addr) => {
            ui.line(&format!(
                "{}",
                style(format!(
                    "reaper: one for the suite's test processes, at {addr} ({} ms)",
                    started.elapsed().as_millis()
                ))
                .dim()
            ));
            Some(addr)
        }
        Err(e) => {
            ui.line(&format!(
                "reaper: none for the suite ({e}); each test process starts its own"
            ));
            None
        }
    }
}

/// A target's test binary, started, its output read into a channel by two threads (so it never
/// blocks on a full pipe while the runner is still following the target before it).
struct Spawned {
    child: std::process::Child,
    rx: mpsc::Receiver<Msg>,
    readers: Vec<std::thread::JoinHandle<()>>,
    progress_file: PathBuf,
    log: std::fs::File,
    log_path: PathBuf,
    started: Instant,
    started_wall: SystemTime,
}

/// Starts `t`'s test binary (see [`Spawned`]).
fn spawn_one(
    dir: &Path,
    exe: &str,
    hargs: &[String],
    t: &Target,
    args: &RunArgs,
    reaper: Option<&str>,
) -> Result<Spawned, String> {
    let target = &t.binary.target;
    let progress_dir = dir.join("progress");
    let logs = dir.join("logs");
    for d in [&progress_dir, &logs] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let progress_file = progress_dir.join(format!("{target}.jsonl"));
    std::fs::write(&progress_file, b"")
        .map_err(|e| format!("cannot write {}: {e}", progress_file.display()))?;
    let log_path = logs.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;

    // As `cargo test` runs a test binary: in its package's directory, with its manifest dir.
    let mut cmd = std::process::Command::new(exe);
    cmd.args(hargs)
        .current_dir(&t.binary.package_dir)
        .env("CARGO_MANIFEST_DIR", &t.binary.package_dir)
        .env("CARGO_PKG_NAME", &t.binary.package)
        .env(rt::PROGRESS_FILE_ENV, &progress_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if args.keep {
        cmd.env("CHAOS_KEEP", "1");
    }
    if let Some(addr) = reaper {
        cmd.env(rt::REAPER_ENV, addr);
    }
    if let Some(o) = args.observer {
        cmd.env("CHAOS_OBSERVER", o.as_str());
    }
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "cannot run the test binary {exe}: {e}. Fix: build it again (`cargo test --no-run`)"
        )
    })?;
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut readers = Vec::new();
    if let Some(s) = child.stdout.take() {
        readers.push(reader(Box::new(s), true, tx.clone()));
    }
    if let Some(s) = child.stderr.take() {
        readers.push(reader(Box::new(s), false, tx.clone()));
    }
    drop(tx);
    Ok(Spawned {
        child,
        rx,
        readers,
        progress_file,
        log,
        log_path,
        started: Instant::now(),
        started_wall: SystemTime::now(),
    })
}

/// Follows a started target to its end: its progress records and output lines to the display
/// and the log, its tests' results. `staged` is called once, when every expected test has
/// started its stack (reached its baseline, or ended): the runner starts the next target then,
/// so that its start-up and its first stack's start overlap this target's last measuring (its
/// experiments take the machine's slot only once this target's last one gives it back).
#[allow(clippy::too_many_arguments)]
fn follow(
    root: &Path,
    dir: &Path,
    spawned: Spawned,
    t: &Target,
    expected: &[String],
    args: &RunArgs,
    ui: &mut Ui,
    suite: &mut Suite,
    staged: &mut dyn FnMut(),
) -> TargetRun {
    let target = &t.binary.target;
    let Spawned {
        mut child,
        rx,
        readers,
        progress_file,
        mut log,
        log_path,
        started,
        started_wall,
    } = spawned;
    let mut r = TargetRun {
        package: t.binary.package.clone(),
        target: target.clone(),
        started,
        started_wall,
        tests: BTreeMap::new(),
        order: Vec::new(),
        stdout: Vec::new(),
        output_tail: Vec::new(),
        exit: None,
    };
    for name in expected {
        r.test(name);
    }
    let prestart = rt::prestart();
    let base_done = suite.done;
    let mut tail = Tail::new(progress_file);
    let mut exited_at: Option<Instant> = None;
    let mut told = false;
    loop {
        let mut done_reading = false;
        loop {
            let wait = Duration::from_millis(if r.exit.is_some() { 20 } else { 120 });
            match rx.recv_timeout(wait) {
                Ok(m) => {
                    // Records first: a phase reached before this line was printed comes before it.
                    for rec in tail.read() {
                        on_record(&mut r, rec, ui, args.verbose);
                    }
                    let (line, is_out) = match m {
                        Msg::Out(l) => (l, true),
                        Msg::Err(l) => (l, false),
                    };
                    let _ = writeln!(log, "{line}");
                    if args.verbose {
                        eprintln!("{line}");
                    }
                    on_output(&mut r, &line, is_out, ui, dir);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    done_reading = true;
                    break;
                }
            }
        }
        for rec in tail.read() {
            on_record(&mut r, rec, ui, args.verbose);
        }
        let ready_for_next = if prestart {
            all_staged(&r, expected)
        } else {
            all_measured(&r, expected)
        };
        if !told && ready_for_next {
            told = true;
            staged();
        }
        if r.exit.is_none()
            && let Ok(Some(st)) = child.try_wait()
        {
            r.exit = Some(st);
            exited_at = Some(Instant::now());
        }
        suite.done = base_done + r.done() as u64;
        let left = suite_left(suite, &r);
        ui.suite_progress(suite.done, left, target);
        // A grandchild may hold the pipes open after cargo exited: wait for them briefly only.
        if exited_at.is_some_and(|t| done_reading || t.elapsed() > Duration::from_secs(2)) {
            break;
        }
    }
    for h in readers.into_iter().filter(|h| h.is_finished()) {
        let _ = h.join();
    }
    for rec in tail.read() {
        on_record(&mut r, rec, ui, args.verbose);
    }
    if r.exit.is_none() {
        r.exit = child.wait().ok();
    }
    // Tests that never reported a result (a crash, a build error) count as done now.
    suite.done = base_done + expected.len().max(r.done()) as u64;
    ui.clear_status();
    let ok = r.exit.is_some_and(|s| s.success());
    ui.line(&format!(
        "  {} {} in {:.0} s {}",
        if ok {
            style("✔").green()
        } else {
            style("✘").red()
        },
        target,
        r.started.elapsed().as_secs_f64(),
        style(format!("(log: {})", display_path(&log_path, root))).dim()
    ));
    r
}

/// Whether every expected test has started its stack: it reached a phase after the stack's
/// start, or has its harness result.
fn all_staged(r: &TargetRun, expected: &[String]) -> bool {
    !expected.is_empty()
        && expected.iter().all(|name| {
            r.tests.get(name).is_some_and(|t| {
                t.result.is_some() || t.phases.iter().any(|(p, _)| p != phases::STACK_STARTING)
            })
        })
}

/// Whether every expected test has reached its verdict phase or has its harness result (when
/// stacks do not start early, without `CHAOS_PRESTART=1`: the next target starts then).
fn all_measured(r: &TargetRun, expected: &[String]) -> bool {
    !expected.is_empty()
        && expected.iter().all(|name| {
            r.tests.get(name).is_some_and(|t| {
                t.result.is_some() || t.phases.iter().any(|(p, _)| p == phases::VERDICT)
            })
        })
}

/// Estimated seconds left in the suite: the estimates of the tests not done, less the time
/// the running test already spent.
fn suite_left(suite: &Suite, r: &TargetRun) -> Option<f64> {
    let i = suite.done as usize;
    if i >= suite.expected_s.len() {
        return Some(0.0);
    }
    let running = r
        .tests
        .values()
        .filter(|t| t.result.is_none())
        .filter_map(|t| t.first_at)
        .map(|a| a.elapsed().as_secs_f64())
        .fold(0.0, f64::max);
    let left: f64 = suite.expected_s[i..].iter().sum();
    Some((left - running.min(suite.expected_s[i])).max(0.0))
}

fn reader(
    s: Box<dyn Read + Send>,
    is_out: bool,
    tx: mpsc::Sender<Msg>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(s).lines().map_while(Result::ok) {
            let _ = tx.send(if is_out {
                Msg::Out(line)
            } else {
                Msg::Err(line)
            });
        }
    })
}

/// Reads whole new lines of the progress file as they are appended.
struct Tail {
    path: PathBuf,
    pos: u64,
    partial: String,
}

impl Tail {
    fn new(path: PathBuf) -> Self {
        Tail {
            path,
            pos: 0,
            partial: String::new(),
        }
    }

    fn read(&mut self) -> Vec<Record> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return Vec::new();
        }
        let mut buf = String::new();
        let Ok(n) = f.read_to_string(&mut buf) else {
            return Vec::new();
        };
        self.pos += n as u64;
        self.partial.push_str(&buf);
        let mut out = Vec::new();
        while let Some(nl) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=nl).collect();
            out.extend(rt::parse_progress(&line));
        }
        out
    }
}

/// The test name and result of a libtest result line: `test NAME ... ok`.
pub fn result_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.split_once(" ... ")?;
    let result = result.split_whitespace().next()?.trim_end_matches(',');
    matches!(result, "ok" | "FAILED" | "ignored").then_some((name.trim(), result))
}

/// The failure text of each failed test, from libtest's `failures:` section on stdout
/// (`---- NAME stdout ----` blocks: the test's captured output and its panic message, which
/// for a broken budget holds the runtime's text timeline).
pub fn failure_blocks(stdout: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut cur: Option<(String, Vec<&str>)> = None;
    for l in stdout {
        let header = l
            .strip_prefix("---- ")
            .and_then(|r| r.strip_suffix(" stdout ----"));
        if let Some(name) = header {
            if let Some((n, body)) = cur.take() {
                out.insert(n, body.join("\n").trim().to_string());
            }
            cur = Some((name.to_string(), Vec::new()));
            continue;
        }
        if cur.is_some() && (l.trim() == "failures:" || l.starts_with("test result:")) {
            if let Some((n, body)) = cur.take() {
                out.insert(n, body.join("\n").trim().to_string());
            }
            continue;
        }
        if let Some((_, body)) = cur.as_mut() {
            body.push(l);
        }
    }
    if let Some((n, body)) = cur {
        out.insert(n, body.join("\n").trim().to_string());
    }
    out
}

/// The journal of `target::test` written since `since`: its page and summary.
fn fresh_journal(
    dir: &Path,
    target: &str,
    since: SystemTime,
) -> BTreeMap<String, (PathBuf, rt::Summary)> {
    let mut out = BTreeMap::new();
    for (stem, path) in rt::journals(dir) {
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|m| m >= since);
        if !fresh {
            continue;
        }
        if let Some(s) = rt::summary(&path)
            && let Some(name) = s.test.strip_prefix(&format!("{target}::"))
        {
            out.insert(name.to_string(), (rt::page_path(dir, &stem), s));
        }
    }
    out
}

fn on_output(r: &mut TargetRun, line: &str, is_out: bool, ui: &mut Ui, dir: &Path) {
    r.output_tail.push(line.to_string());
    if r.output_tail.len() > 400 {
        r.output_tail.drain(..100);
    }
    if is_out {
        r.stdout.push(line.to_string());
        if let Some((name, result)) = result_line(line) {
            let key = format!("{}::{name}", r.target);
            let t = r.test(name);
            t.result = Some(result.to_string());
            t.done_at = Some(Instant::now());
            let took = t
                .first_at
                .map(|a| format!(" in {:.0} s", a.elapsed().as_secs_f64()))
                .unwrap_or_default();
            let (mark, word) = match result {
                "ok" => (style("✔").green(), style("PASS").green()),
                "FAILED" => (style("✘").red(), style("FAIL").red()),
                _ => (style("–").dim(), style("ignored").dim()),
            };
            let recovery = fresh_journal(dir, &r.target, r.started_wall)
                .get(name)
                .map(|(_, s)| {
                    format!(
                        " · recovered {} / {}",
                        s.time_to_recover_ms
                            .map(rt::dur)
                            .unwrap_or_else(|| "never".into()),
                        rt::dur(s.recover_within_ms as f64)
                    )
                })
                .unwrap_or_default();
            ui.test_done(&key, &format!("    {mark} {key} {word}{recovery}{took}"));
        }
        return;
    }
    let l = line.trim();
    for (prefix, what) in [
        ("Compiling ", "compiling "),
        ("Running ", "running "),
        ("Blocking ", "waiting: "),
    ] {
        if let Some(rest) = l.strip_prefix(prefix) {
            ui.status(&format!(
                "{what}{}",
                rest.split(" (").next().unwrap_or(rest)
            ));
            if !ui.live() && prefix == "Running " {
                eprintln!("    {}", style(l).dim());
            }
        }
    }
    if l.starts_with("error") && !ui.live() {
        eprintln!("    {}", style(l).red());
    }
}

fn on_record(r: &mut TargetRun, rec: Record, ui: &mut Ui, verbose: bool) {
    let at = rec
        .t_unix_ms
        .checked_sub(
            r.started_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        )
        .map(|ms| ms as f64 / 1000.0)
        .unwrap_or(0.0);
    match rec.what {
        What::Phase {
            test,
            phase,
            detail,
        } => {
            let name = test
                .strip_prefix(&format!("{}::", r.target))
                .unwrap_or(&test)
                .to_string();
            if ui.live() {
                ui.phase(&test, &phase, &detail);
            } else if !verbose {
                eprintln!(
                    "    {:>6}  {}  {}{}",
                    format!("{at:.1}s"),
                    style(&test).bold(),
                    crate::ui::phase_label(&phase),
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {detail}")
                    }
                );
            }
            let t = r.test(&name);
            t.first_at.get_or_insert_with(Instant::now);
            t.phases.push((phase, detail));
        }
        What::Line { scope, msg } => {
            if !ui.live() && !verbose && !matches!(scope.as_str(), "run" | "observe") {
                eprintln!("    {}", style(format!("[chaos {scope}] {msg}")).dim());
            }
            if scope != "report" {
                ui.status(&format!("{scope}: {msg}"));
            }
        }
    }
}

fn print_failure(r: &TargetRun, dir: &Path, ui: &Ui) {
    ui.line(&format!(
        "\n{}",
        style(format!("── {} failed ──", r.target)).red()
    ));
    // The harness's `failures:` section holds every failed test's panic, which for a broken
    // budget is the runtime's compact text timeline.
    let from = r.stdout.iter().position(|l| l.trim() == "failures:");
    let body: Vec<&String> = match from {
        Some(i) => r.stdout[i..]
            .iter()
            .take_while(|l| !l.starts_with("test result:"))
            .collect(),
        None => {
            let n = r.output_tail.len();
            r.output_tail[n.saturating_sub(60)..].iter().collect()
        }
    };
    for l in body {
        ui.line(l);
    }
    ui.line(
        &style(format!(
            "(full output: {})",
            dir.join("logs").join(format!("{}.log", r.target)).display()
        ))
        .dim()
        .to_string(),
    );
}

/// The results of one target: its tests, with their journals when they wrote one.
fn outcomes_of(r: &TargetRun, dir: &Path, target_ok: bool) -> Vec<Outcome> {
    let journals = fresh_journal(dir, &r.target, r.started_wall);
    let failures = failure_blocks(&r.stdout);
    let mut out = Vec::new();
    for name in &r.order {
        let t = &r.tests[name];
        if t.result.as_deref() == Some("ignored") || (t.result.is_none() && target_ok) {
            continue;
        }
        let j = journals.get(name);
        let passed = match t.result.as_deref() {
            Some(res) => res == "ok",
            None => false,
        } && t.verdict() != Some(false);
        out.push(Outcome {
            package: r.package.clone(),
            experiment: r.target.clone(),
            test: name.clone(),
            passed,
            duration_s: match (t.first_at, t.done_at) {
                (Some(a), Some(b)) => Some(b.duration_since(a).as_secs_f64()),
                _ => None,
            },
            recovery: j
                .map(|(_, s)| {
                    format!(
                        "{} / {}",
                        s.time_to_recover_ms
                            .map(rt::dur)
                            .unwrap_or_else(|| "never".into()),
                        rt::dur(s.recover_within_ms as f64)
                    )
                })
                .unwrap_or_else(|| "—".into()),
            lost_writes: j.map(|(_, s)| s.lost_writes),
            report: j.map(|(p, _)| p.clone()).filter(|p| p.exists()),
            failure: if passed {
                None
            } else {
                Some(failures.get(name).cloned().unwrap_or_else(|| {
                    "the test did not report a result (see the target's log)".into()
                }))
            },
        });
    }
    if out.is_empty() {
        let n = r.output_tail.len();
        out.push(Outcome {
            package: r.package.clone(),
            experiment: r.target.clone(),
            test: if target_ok {
                "(no test ran)".into()
            } else {
                "(build or harness)".into()
            },
            passed: target_ok,
            duration_s: Some(r.started.elapsed().as_secs_f64()),
            recovery: "—".into(),
            lost_writes: None,
            report: None,
            failure: (!target_ok).then(|| r.output_tail[n.saturating_sub(60)..].join("\n")),
        });
    }
    out
}

/// A path relative to the workspace root when it is inside it.
pub fn display_path(p: &Path, root: &Path) -> String {
    p.strip_prefix(root)
        .map(|r| r.display().to_string())
        .unwrap_or_else(|_| p.display().to_string())
}

fn print_summary(outcomes: &[Outcome], root: &Path) {
    let rows: Vec<[String; 6]> = outcomes
        .iter()
        .map(|o| {
            [
                o.experiment.clone(),
                o.test.clone(),
                if o.passed { "PASS" } else { "FAIL" }.into(),
                o.recovery.clone(),
                o.lost_writes
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "—".into()),
                o.report
                    .as_ref()
                    .map(|p| display_path(p, root))
                    .unwrap_or_else(|| "—".into()),
            ]
        })
        .collect();
    let head = [
        "experiment",
        "test",
        "verdict",
        "recovery / budget",
        "lost writes",
        "report",
    ];
    let mut w = head.map(|h| h.chars().count());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    w[1] = w[1].min(56);
    let fit = |s: &str, n: usize| -> String {
        if s.chars().count() > n {
            s.chars().take(n - 1).chain(['…']).collect()
        } else {
            s.to_string()
        }
    };
    eprintln!("\n{}", style("Summary").bold());
    let line = |c: [String; 6]| {
        format!(
            "  {:<a$}  {:<b$}  {:<c$}  {:<d$}  {:>e$}  {}",
            c[0],
            fit(&c[1], w[1]),
            c[2],
            c[3],
            c[4],
            c[5],
            a = w[0],
            b = w[1],
            c = w[2],
            d = w[3],
            e = w[4]
        )
    };
    eprintln!("{}", style(line(head.map(String::from))).dim());
    for (o, r) in outcomes.iter().zip(rows) {
        let l = line(r);
        if o.passed {
            eprintln!("{l}");
        } else {
            eprintln!("{}", style(l).red());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::{TestBinary, TestInfo};

    fn target(name: &str, tests: &[(&str, bool)]) -> Target {
        Target {
            binary: TestBinary {
                package: "chaos-suite".into(),
                target: name.into(),
                src_path: PathBuf::from(format!("tests/{name}.rs")),
                executable: PathBuf::from(format!("target/debug/deps/{name}-0")),
                package_dir: PathBuf::from("."),
            },
            experiment: true,
            tests: tests
                .iter()
                .map(|(t, ignored)| TestInfo {
                    name: t.to_string(),
                    ignored: *ignored,
                    chaos_test: true,
                    faults: vec![],
                    recover_within: None,
                })
                .collect(),
        }
    }

    #[test]
    fn filters_pick_targets_first_then_tests() {
        let all = vec![
            target(
                "01_database_sudden_death",
                &[
                    ("orders_survive_postgres_sudden_death", false),
                    ("ledger_reports", false),
                ],
            ),
            target("02_network_partition", &[("orders_fail_fast", false)]),
        ];
        let (s, f) = select(&all, Some("01")).unwrap();
        assert_eq!(
            (s.len(), s[0].binary.target.as_str(), f),
            (1, "01_database_sudden_death", None)
        );
        let (s, f) = select(&all, Some("partition")).unwrap();
        assert_eq!(
            (s[0].binary.target.as_str(), f),
            ("02_network_partition", None)
        );
        let (s, f) = select(&all, Some("ledger")).unwrap();
        assert_eq!((s.len(), f.as_deref()), (1, Some("ledger")));
        assert!(
            select(&all, Some("nope"))
                .unwrap_err()
                .contains("chaos list")
        );
        assert_eq!(select(&all, None).unwrap().0.len(), 2);
    }

    #[test]
    fn expected_tests_follow_libtest_rules() {
        let t = target(
            "01_x",
            &[("a_fast", false), ("b_slow", true), ("c_fast", false)],
        );
        assert_eq!(expected_tests(&t, None, &[]), ["a_fast", "c_fast"]);
        assert_eq!(expected_tests(&t, Some("a_"), &[]), ["a_fast"]);
        assert_eq!(
            expected_tests(&t, None, &["--include-ignored".into()]),
            ["a_fast", "b_slow", "c_fast"]
        );
        assert_eq!(expected_tests(&t, None, &["--ignored".into()]), ["b_slow"]);
        assert_eq!(expected_tests(&t, None, &["c_".into()]), ["c_fast"]);
    }

    #[test]
    fn the_test_binary_gets_the_filter_then_the_test_args() {
        assert!(harness_args(None, &[]).is_empty());
        assert_eq!(
            harness_args(Some("ledger"), &["--nocapture".into()]),
            ["ledger", "--nocapture"]
        );
        assert_eq!(harness_args(None, &["--ignored".into()]), ["--ignored"]);
    }

    #[test]
    fn harness_result_lines_are_recognised() {
        assert_eq!(
            result_line("test orders_survive ... ok"),
            Some(("orders_survive", "ok"))
        );
        assert_eq!(
            result_line("test a::b ... FAILED"),
            Some(("a::b", "FAILED"))
        );
        assert_eq!(
            result_line("test slow ... ignored, needs root"),
            Some(("slow", "ignored"))
        );
        assert_eq!(result_line("test result: ok. 1 passed"), None);
        assert_eq!(
            result_line("test x has been running for over 60 seconds"),
            None
        );
    }

    #[test]
    fn failure_texts_are_cut_per_test() {
        let out: Vec<String> = [
            "running 2 tests",
            "test a ... FAILED",
            "test b ... FAILED",
            "",
            "failures:",
            "",
            "---- a stdout ----",
            "thread 'a' panicked at tests/x.rs:1:1:",
            "chaos budget failed for x::a:",
            "timeline of x::a",
            "",
            "---- b stdout ----",
            "boom",
            "",
            "failures:",
            "    a",
            "    b",
            "",
            "test result: FAILED. 0 passed; 2 failed",
        ]
        .map(String::from)
        .to_vec();
        let f = failure_blocks(&out);
        assert_eq!(f.len(), 2);
        assert!(f["a"].starts_with("thread 'a' panicked") && f["a"].ends_with("timeline of x::a"));
        assert_eq!(f["b"], "boom");
    }

    #[test]
    fn the_progress_file_is_tailed_in_whole_lines() {
        let p = std::env::temp_dir().join(format!("chaos-cli-tail-{}.jsonl", std::process::id()));
        std::fs::write(&p, "").unwrap();
        let mut t = Tail::new(p.clone());
        assert!(t.read().is_empty());
        let rec =
            r#"{"t_unix_ms":1,"pid":2,"type":"phase","test":"a::b","phase":"healed","detail":""}"#;
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        write!(f, "{}", &rec[..20]).unwrap();
        assert!(t.read().is_empty(), "half a record waits");
        writeln!(f, "{}", &rec[20..]).unwrap();
        writeln!(f, "garbage").unwrap();
        let got = t.read();
        assert_eq!(got.len(), 1);
        assert!(matches!(&got[0].what, What::Phase { phase, .. } if phase == "healed"));
        let _ = std::fs::remove_file(p);
    }
}
