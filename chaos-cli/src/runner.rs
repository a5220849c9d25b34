//! `chaos run`: each selected experiment file through `cargo test -p chaos-suite --test <stem>`,
//! one after the other, with a live display of every test's phases (read from the runtime's
//! JSON-lines progress file, `CHAOS_PROGRESS_FILE`), then a summary table and the report index.
use crate::suite::{self, Experiment};
use crate::term::{Style, Term};
use chaos_runtime::progress::{self, What, phases};
use chaos_runtime::report::{self, Summary};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// What `chaos run` was asked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Opts {
    /// Selects experiment files by stem (`01`, `database`); when no file matches, the tests
    /// whose name contains it.
    pub filter: Option<String>,
    /// Passed to the test harness after `--`.
    pub test_args: Vec<String>,
    /// `CHAOS_KEEP=1`: keep a failed test's stack.
    pub keep: bool,
    /// `CHAOS_OBSERVER`.
    pub observer: Option<String>,
    /// Stream cargo's and the tests' output as it comes, instead of the display.
    pub verbose: bool,
}

/// The experiments to run and the test-name filter to pass on.
pub fn select(
    all: &[Experiment],
    filter: Option<&str>,
) -> Result<(Vec<Experiment>, Option<String>), String> {
    let Some(f) = filter else {
        return Ok((all.to_vec(), None));
    };
    let by_file: Vec<Experiment> = all.iter().filter(|e| e.stem.contains(f)).cloned().collect();
    if !by_file.is_empty() {
        return Ok((by_file, None));
    }
    let by_test: Vec<Experiment> = all
        .iter()
        .filter(|e| e.tests.iter().any(|t| t.name.contains(f)))
        .cloned()
        .collect();
    if by_test.is_empty() {
        let stems: Vec<&str> = all.iter().map(|e| e.stem.as_str()).collect();
        return Err(format!(
            "no experiment file or test matches {f:?}. The experiments: {}. Fix: `chaos list`, then `chaos run 01` or `chaos run <part of a test name>`",
            stems.join(", ")
        ));
    }
    Ok((by_test, Some(f.to_string())))
}

/// The `cargo test` arguments for one experiment.
pub fn cargo_args(stem: &str, harness_filter: Option<&str>, test_args: &[String]) -> Vec<String> {
    let mut v: Vec<String> = ["test", "-p", "chaos-suite", "--test", stem]
        .map(String::from)
        .to_vec();
    if harness_filter.is_some() || !test_args.is_empty() {
        v.push("--".into());
        v.extend(harness_filter.map(str::to_string));
        v.extend(test_args.iter().cloned());
    }
    v
}

/// One test's progress.
#[derive(Clone, Debug, Default)]
struct TestView {
    /// Phases reached: (phase, detail, seconds since the experiment started).
    phases: Vec<(String, String, f64)>,
    /// `ok`, `FAILED`, `ignored` from the harness.
    result: Option<String>,
    seen: bool,
}

impl TestView {
    fn reached(&self, phase: &str) -> Option<&(String, String, f64)> {
        self.phases.iter().find(|p| p.0 == phase)
    }
    fn verdict(&self) -> Option<bool> {
        match self.result.as_deref() {
            Some("ok") => Some(true),
            Some("FAILED") => Some(false),
            _ => self.reached(phases::VERDICT).map(|p| p.1 == "pass"),
        }
    }
}

/// One experiment's run.
struct ExpRun {
    stem: String,
    started: Instant,
    started_wall: SystemTime,
    tests: BTreeMap<String, TestView>,
    order: Vec<String>,
    status: String,
    stdout: Vec<String>,
    output_tail: Vec<String>,
    exit: Option<ExitStatus>,
}

impl ExpRun {
    fn test(&mut self, short: &str) -> &mut TestView {
        if !self.tests.contains_key(short) {
            self.order.push(short.to_string());
        }
        self.tests.entry(short.to_string()).or_default()
    }
    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// A line of output of `cargo test`.
enum Msg {
    Out(String),
    Err(String),
}

/// One row of the summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The experiment file stem.
    pub experiment: String,
    /// The test (short name), or `(build)` when none ran.
    pub test: String,
    /// Passed.
    pub passed: bool,
    /// `1.44 s / 5 s`.
    pub recovery: String,
    /// Lost writes, when a journal says.
    pub lost_writes: Option<usize>,
    /// The run's page.
    pub report: Option<PathBuf>,
}

/// Removes the journals, pages and summary cache of earlier runs (not logs or screenshots).
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

/// Runs the suite; returns the process exit code.
pub fn run(root: &Path, opts: &Opts) -> i32 {
    let term = Term::stderr();
    let all = match suite::experiments(root) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chaos run: {e}");
            return 2;
        }
    };
    let (selected, harness_filter) = match select(&all, opts.filter.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chaos run: {e}");
            return 2;
        }
    };
    let dir = suite::chaos_dir(root);
    if opts.filter.is_none() && opts.test_args.is_empty() {
        // The whole suite: the report shows this run only, not journals of earlier, partial or
        // renamed experiments.
        clear_previous_runs(&dir);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut failed_experiments = 0;
    let total = selected.len();
    for (i, exp) in selected.iter().enumerate() {
        let args = cargo_args(&exp.stem, harness_filter.as_deref(), &opts.test_args);
        eprintln!(
            "{} {} {}",
            term.paint(Style::Bold, &format!("[{}/{total}] {}", i + 1, exp.stem)),
            term.paint(Style::Dim, "·"),
            term.paint(Style::Dim, &format!("cargo {}", args.join(" ")))
        );
        let expected: Vec<String> = exp
            .tests
            .iter()
            .filter(|t| harness_filter.as_deref().is_none_or(|f| t.name.contains(f)))
            .filter(|t| {
                // Names given to the harness after `--` filter too (substring, as libtest does).
                let names: Vec<&String> = opts
                    .test_args
                    .iter()
                    .filter(|a| !a.starts_with('-'))
                    .collect();
                names.is_empty() || names.iter().any(|n| t.name.contains(n.as_str()))
            })
            .filter(|t| {
                !t.ignored
                    || opts
                        .test_args
                        .iter()
                        .any(|a| a == "--ignored" || a == "--include-ignored")
            })
            .map(|t| t.name.clone())
            .collect();
        let r = match run_one(root, &dir, &cargo, &args, &exp.stem, &expected, opts, &term) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("chaos run: {e}");
                return 2;
            }
        };
        let ok = r.exit.is_some_and(|s| s.success());
        if !ok {
            failed_experiments += 1;
            print_failure(&r, &dir, &term);
        }
        outcomes.extend(outcomes_of(&r, &dir, ok));
    }
    let index = report::render_all(&dir);
    print_summary(&outcomes, root, &term);
    match index {
        Ok(p) => eprintln!(
            "\nreport: {}",
            term.paint(Style::Bold, &p.display().to_string())
        ),
        Err(e) => eprintln!("\nchaos run: could not rebuild the report: {e}"),
    }
    if failed_experiments > 0 {
        eprintln!(
            "{}",
            term.paint(
                Style::Red,
                &format!("{failed_experiments} of {total} experiment(s) failed")
            )
        );
        1
    } else {
        eprintln!(
            "{}",
            term.paint(Style::Green, &format!("all {total} experiment(s) passed"))
        );
        0
    }
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    root: &Path,
    dir: &Path,
    cargo: &str,
    args: &[String],
    stem: &str,
    expected: &[String],
    opts: &Opts,
    term: &Term,
) -> Result<ExpRun, String> {
    let progress_dir = dir.join("progress");
    let logs = dir.join("logs");
    for d in [&progress_dir, &logs] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let progress_file = progress_dir.join(format!("{stem}.jsonl"));
    std::fs::write(&progress_file, b"")
        .map_err(|e| format!("cannot write {}: {e}", progress_file.display()))?;
    let log_path = logs.join(format!("{stem}.log"));
    let mut log = std::fs::File::create(&log_path)
        .map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;

    let mut cmd = Command::new(cargo);
    cmd.args(args)
        .current_dir(root)
        .env(progress::FILE_ENV, &progress_file)
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if opts.keep {
        cmd.env("CHAOS_KEEP", "1");
    }
    if let Some(o) = &opts.observer {
        cmd.env("CHAOS_OBSERVER", o);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {cargo}: {e}. Fix: put cargo on PATH"))?;
    let (tx, rx) = mpsc::channel::<Msg>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>)
            .map(|s| (s, true)),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>)
            .map(|s| (s, false)),
    ]
    .into_iter()
    .flatten()
    .map(|(s, is_out)| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                let _ = tx.send(if is_out {
                    Msg::Out(line)
                } else {
                    Msg::Err(line)
                });
            }
        })
    })
    .collect();
    drop(tx);

    let mut r = ExpRun {
        stem: stem.to_string(),
        started: Instant::now(),
        started_wall: SystemTime::now(),
        tests: BTreeMap::new(),
        order: Vec::new(),
        status: "building".into(),
        stdout: Vec::new(),
        output_tail: Vec::new(),
        exit: None,
    };
    for t in expected {
        r.test(t);
    }
    let mut tail = Tail::new(progress_file);
    let mut drawn = 0usize;
    let mut frame = 0usize;
    let mut exited_at: Option<Instant> = None;
    loop {
        let mut done_reading = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(if r.exit.is_some() {
                20
            } else {
                120
            })) {
                Ok(m) => {
                    // Records first: a phase reached before this line was printed comes before it.
                    for rec in tail.read() {
                        on_record(&mut r, rec, term, opts.verbose || !term.live());
                    }
                    let (line, is_out) = match m {
                        Msg::Out(l) => (l, true),
                        Msg::Err(l) => (l, false),
                    };
                    let _ = writeln!(log, "{line}");
                    if opts.verbose {
                        eprintln!("{line}");
                    }
                    on_output(&mut r, &line, is_out, term, opts.verbose || !term.live());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    done_reading = true;
                    break;
                }
            }
        }
        for rec in tail.read() {
            on_record(&mut r, rec, term, opts.verbose || !term.live());
        }
        if r.exit.is_none()
            && let Ok(Some(st)) = child.try_wait()
        {
            r.exit = Some(st);
            exited_at = Some(Instant::now());
        }
        if term.live() && !opts.verbose {
            frame += 1;
            drawn = redraw(&r, term, drawn, frame, false);
        }
        // A grandchild may hold the pipes open after cargo exited: wait for them briefly only.
        if exited_at.is_some_and(|t| done_reading || t.elapsed() > Duration::from_secs(2)) {
            break;
        }
    }
    for h in readers.into_iter().filter(|h| h.is_finished()) {
        let _ = h.join();
    }
    for rec in tail.read() {
        on_record(&mut r, rec, term, opts.verbose || !term.live());
    }
    if r.exit.is_none() {
        r.exit = child.wait().ok();
    }
    if term.live() && !opts.verbose {
        redraw(&r, term, drawn, frame, true);
    } else {
        let ok = r.exit.is_some_and(|s| s.success());
        eprintln!(
            "  {} {} in {:.0} s (log: {})",
            if ok {
                term.paint(Style::Green, "✔")
            } else {
                term.paint(Style::Red, "✘")
            },
            stem,
            r.elapsed(),
            display_path(&log_path, root)
        );
    }
    Ok(r)
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

    fn read(&mut self) -> Vec<progress::Record> {
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
            out.extend(progress::parse(&line));
        }
        out
    }
}

/// The test name of a libtest result line: `test NAME ... ok`.
pub fn result_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.split_once(" ... ")?;
    let result = result.split_whitespace().next()?.trim_end_matches(',');
    matches!(result, "ok" | "FAILED" | "ignored").then_some((name.trim(), result))
}

fn short(test: &str) -> &str {
    test.rsplit("::").next().unwrap_or(test)
}

fn on_output(r: &mut ExpRun, line: &str, is_out: bool, term: &Term, plain: bool) {
    r.output_tail.push(line.to_string());
    if r.output_tail.len() > 400 {
        r.output_tail.drain(..100);
    }
    if is_out {
        r.stdout.push(line.to_string());
        if let Some((name, result)) = result_line(line) {
            let t = r.test(short(name));
            t.result = Some(result.to_string());
            if plain {
                let style = match result {
                    "ok" => Style::Green,
                    "FAILED" => Style::Red,
                    _ => Style::Dim,
                };
                eprintln!("    {}", term.paint(style, line));
            }
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
            r.status = format!("{what}{}", rest.split(" (").next().unwrap_or(rest));
            if plain && prefix == "Running " {
                eprintln!("    {}", term.paint(Style::Dim, l));
            }
        }
    }
    if l.starts_with("error") && plain {
        eprintln!("    {}", term.paint(Style::Red, l));
    }
}

fn on_record(r: &mut ExpRun, rec: progress::Record, term: &Term, plain: bool) {
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
            let name = short(&test).to_string();
            if plain {
                eprintln!(
                    "    {:>6}  {}  {}{}",
                    format!("{at:.1}s"),
                    term.paint(Style::Bold, &name),
                    phase_label(&phase),
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {detail}")
                    }
                );
            }
            let t = r.test(&name);
            t.seen = true;
            t.phases.push((phase, detail, at));
        }
        What::Line { scope, msg } => {
            if plain && !matches!(scope.as_str(), "run" | "observe") {
                eprintln!(
                    "    {}",
                    term.paint(Style::Dim, &format!("[chaos {scope}] {msg}"))
                );
            }
            if scope != "report" {
                r.status = format!("{scope}: {msg}");
            }
        }
    }
}

fn phase_label(p: &str) -> &str {
    match p {
        phases::STACK_STARTING => "stack starting",
        phases::BASELINE => "baseline",
        phases::FAULT_INJECTED => "fault injected",
        phases::HEALED => "healed",
        phases::RECOVERED => "recovered",
        phases::VERDICT => "verdict",
        other => other,
    }
}

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
const STEPS: [(&str, &str); 6] = [
    (phases::STACK_STARTING, "stack"),
    (phases::BASELINE, "baseline"),
    (phases::FAULT_INJECTED, "fault"),
    (phases::HEALED, "healed"),
    (phases::RECOVERED, "recovered"),
    (phases::VERDICT, "verdict"),
];

/// The display lines of an experiment (without styling decisions about the terminal).
fn lines(r: &ExpRun, term: &Term, frame: usize, finished: bool) -> Vec<String> {
    let spin = SPINNER[frame % SPINNER.len()];
    let width = r
        .order
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .min(48);
    let mut out = Vec::new();
    for name in &r.order {
        let t = &r.tests[name];
        let running = t.seen && t.verdict().is_none() && !finished;
        let head = match t.verdict() {
            Some(true) => term.paint(Style::Green, "✔"),
            Some(false) => term.paint(Style::Red, "✘"),
            None if running => term.paint(Style::Yellow, spin),
            None if finished => term.paint(Style::Dim, "–"),
            None => term.paint(Style::Dim, "·"),
        };
        let mut steps = Vec::new();
        let next = STEPS.iter().position(|(p, _)| t.reached(p).is_none());
        for (i, (p, label)) in STEPS.iter().enumerate() {
            let s = match t.reached(p) {
                Some((_, detail, _)) if *p == phases::VERDICT => {
                    if detail == "pass" {
                        term.paint(Style::Green, "PASS")
                    } else {
                        term.paint(Style::Red, "FAIL")
                    }
                }
                Some((_, detail, _)) if *p == phases::RECOVERED && detail.starts_with("never") => {
                    term.paint(Style::Red, "never recovered")
                }
                Some((_, detail, _)) if *p == phases::RECOVERED => term.paint(
                    Style::Green,
                    &format!("recovered {}", detail.trim_end_matches(" after heal")),
                ),
                Some(_) => term.paint(Style::Green, label),
                None if running && next == Some(i) => {
                    term.paint(Style::Yellow, &format!("{label}…"))
                }
                None => term.paint(Style::Dim, label),
            };
            steps.push(s);
        }
        let when = t
            .phases
            .last()
            .map(|p| format!(" {:.0}s", p.2))
            .unwrap_or_default();
        let shown_name: String = if name.chars().count() > width {
            name.chars()
                .take(width.saturating_sub(1))
                .chain(['…'])
                .collect()
        } else {
            name.clone()
        };
        out.push(format!(
            "  {head} {shown_name:<width$}  {}{}",
            steps.join(&term.paint(Style::Dim, " › ")),
            term.paint(Style::Dim, &when)
        ));
    }
    if !finished {
        out.push(format!(
            "  {} {}",
            term.paint(Style::Dim, &format!("{:>4.0}s", r.elapsed())),
            term.paint(Style::Dim, &r.status)
        ));
    }
    out
}

fn redraw(r: &ExpRun, term: &Term, drawn: usize, frame: usize, finished: bool) -> usize {
    let ls = lines(r, term, frame, finished);
    let cols = term.columns();
    let mut err = std::io::stderr().lock();
    if drawn > 0 {
        let _ = write!(err, "\x1b[{drawn}A");
    }
    for l in &ls {
        let _ = writeln!(
            err,
            "\x1b[2K{}",
            crate::term::truncate_visible(l, cols.saturating_sub(1))
        );
    }
    // Lines left over from a longer previous frame: cleared, then the cursor goes back up so
    // the block keeps its height while live and shrinks when final.
    let extra = drawn.saturating_sub(ls.len());
    for _ in 0..extra {
        let _ = writeln!(err, "\x1b[2K");
    }
    if finished && extra > 0 {
        let _ = write!(err, "\x1b[{extra}A");
    }
    let _ = err.flush();
    if finished {
        ls.len()
    } else {
        ls.len().max(drawn)
    }
}

fn print_failure(r: &ExpRun, dir: &Path, term: &Term) {
    eprintln!(
        "\n{}",
        term.paint(Style::Red, &format!("── {} failed ──", r.stem))
    );
    // The harness's `failures:` section holds every failed test's panic, which for a broken
    // budget is the runtime's compact text timeline.
    let from = r.stdout.iter().position(|l| l.trim() == "failures:");
    let body: Vec<&String> = match from {
        Some(i) => r.stdout[i..]
            .iter()
            .take_while(|l| !l.starts_with("test result:"))
            .collect(),
        None => r
            .output_tail
            .iter()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect(),
    };
    for l in body {
        eprintln!("{l}");
    }
    eprintln!(
        "{}",
        term.paint(
            Style::Dim,
            &format!(
                "(full output: {})",
                dir.join("logs").join(format!("{}.log", r.stem)).display()
            )
        )
    );
}

/// The summary rows of one experiment: its tests, with their journals when they wrote one.
fn outcomes_of(r: &ExpRun, dir: &Path, exp_ok: bool) -> Vec<Outcome> {
    let since = r.started_wall;
    let mut journals: BTreeMap<String, (PathBuf, Summary)> = BTreeMap::new();
    for (stem, path) in report::journals(dir).unwrap_or_default() {
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|m| m >= since);
        if !fresh {
            continue;
        }
        if let Ok(s) = report::read_summary(&path)
            && s.test.starts_with(&format!("{}::", r.stem))
        {
            journals.insert(
                short(&s.test).to_string(),
                (report::page_path(dir, &stem), s),
            );
        }
    }
    let mut out = Vec::new();
    for name in &r.order {
        let t = &r.tests[name];
        if t.result.as_deref() == Some("ignored") || (!t.seen && t.result.is_none() && exp_ok) {
            continue;
        }
        let j = journals.get(name);
        let passed = t.verdict().unwrap_or(false) && t.result.as_deref() != Some("FAILED");
        out.push(Outcome {
            experiment: r.stem.clone(),
            test: name.clone(),
            passed: if t.result.is_some() {
                t.result.as_deref() == Some("ok")
            } else {
                passed
            },
            recovery: j
                .map(|(_, s)| {
                    format!(
                        "{} / {}",
                        s.time_to_recover_ms
                            .map(report::fmt::dur)
                            .unwrap_or_else(|| "never".into()),
                        report::fmt::dur(s.recover_within_ms as f64)
                    )
                })
                .unwrap_or_else(|| "—".into()),
            lost_writes: j.map(|(_, s)| s.lost_writes),
            report: j.map(|(p, _)| p.clone()).filter(|p| p.exists()),
        });
    }
    if out.is_empty() {
        out.push(Outcome {
            experiment: r.stem.clone(),
            test: if exp_ok {
                "(no test ran)".into()
            } else {
                "(build or harness)".into()
            },
            passed: exp_ok,
            recovery: "—".into(),
            lost_writes: None,
            report: None,
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

fn print_summary(outcomes: &[Outcome], root: &Path, term: &Term) {
    let rows: Vec<[String; 6]> = outcomes
        .iter()
        .map(|o| {
            [
                o.experiment.clone(),
                o.test.clone(),
                if o.passed {
                    "PASS".into()
                } else {
                    "FAIL".into()
                },
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
    eprintln!("\n{}", term.paint(Style::Bold, "Summary"));
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
    eprintln!("{}", term.paint(Style::Dim, &line(head.map(String::from))));
    for (o, r) in outcomes.iter().zip(rows) {
        let l = line(r);
        eprintln!(
            "{}",
            if o.passed {
                l
            } else {
                term.paint(Style::Red, &l)
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::TestFn;

    fn exp(stem: &str, tests: &[&str]) -> Experiment {
        Experiment {
            stem: stem.into(),
            path: PathBuf::from(format!("tests/{stem}.rs")),
            tests: tests
                .iter()
                .map(|t| TestFn {
                    name: t.to_string(),
                    faults: vec![],
                    recover_within: None,
                    ignored: false,
                })
                .collect(),
        }
    }

    #[test]
    fn filters_pick_files_first_then_tests() {
        let all = vec![
            exp(
                "01_database_sudden_death",
                &["orders_survive_postgres_sudden_death", "ledger_reports"],
            ),
            exp("02_network_partition", &["orders_fail_fast"]),
        ];
        let (s, f) = select(&all, Some("01")).unwrap();
        assert_eq!(
            (s.len(), s[0].stem.as_str(), f),
            (1, "01_database_sudden_death", None)
        );
        let (s, f) = select(&all, Some("partition")).unwrap();
        assert_eq!((s[0].stem.as_str(), f), ("02_network_partition", None));
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
    fn cargo_is_asked_for_one_test_target() {
        assert_eq!(
            cargo_args("01_x", None, &[]),
            ["test", "-p", "chaos-suite", "--test", "01_x"]
        );
        assert_eq!(
            cargo_args("01_x", Some("ledger"), &["--nocapture".into()]),
            [
                "test",
                "-p",
                "chaos-suite",
                "--test",
                "01_x",
                "--",
                "ledger",
                "--nocapture"
            ]
        );
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

    #[test]
    fn the_display_shows_each_test_and_its_phases() {
        let term = Term::plain();
        let mut r = ExpRun {
            stem: "01_x".into(),
            started: Instant::now(),
            started_wall: SystemTime::now(),
            tests: BTreeMap::new(),
            order: vec![],
            status: "compiling chaos-runtime".into(),
            stdout: vec![],
            output_tail: vec![],
            exit: None,
        };
        r.test("waiting_test");
        for (p, d) in [
            ("stack_starting", "kill postgres"),
            ("baseline", ""),
            ("fault_injected", ""),
            ("healed", ""),
            ("recovered", "1436 ms after heal"),
            ("verdict", "pass"),
        ] {
            let t = r.test("orders_survive");
            t.seen = true;
            t.phases.push((p.into(), d.into(), 3.0));
        }
        let ls = lines(&r, &term, 0, false);
        assert_eq!(ls.len(), 3);
        assert!(ls[0].contains("waiting_test") && ls[0].contains("stack › baseline"));
        assert!(
            ls[1].contains("✔ orders_survive") && ls[1].contains("recovered 1436 ms › PASS"),
            "{}",
            ls[1]
        );
        assert!(ls[2].contains("compiling chaos-runtime"));
        let o = outcomes_of(&r, Path::new("/nonexistent"), true);
        assert_eq!(
            o.len(),
            1,
            "a test that never started in a passing run is not listed"
        );
        assert!(o[0].passed && o[0].report.is_none());
    }
}
