//! The report page in a real browser: a synthetic run (baseline, a fault window, failures,
//! recovery) is rendered into a temporary directory and opened in headless Chromium. The DOM
//! Chromium builds must hold the timeline's SVG with the fault window, the ok/failed request
//! series and the recovery marker; a screenshot goes to `target/chaos/screenshots/` for people.
//!
//! Needs Debian's `chromium` (CI installs it); without it the test fails and says so.
use chaos_runtime::journal::{self, Journal, SCHEMA_VERSION};
use chaos_runtime::observe::{SignalChoice, Source};
use chaos_runtime::report;
use chaos_runtime::timeline::{Event, FaultRecord, Hypothesis, Phase, Sample, Timeline};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Chromium never runs longer than this.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// A run like experiment 01: PostgreSQL killed for 2 s under a stream of orders; requests fail
/// fast (503s, a few 1 s timeouts) while it is dead and during its restart, and the steady
/// state returns 1.4 s after the heal, within a 5 s budget.
fn synthetic_journal() -> Journal {
    let (baseline, inject, heal, recovered, end) = (480.0, 2_560.0, 4_800.0, 6_240.0, 9_250.0);
    let mut samples = Vec::new();
    let mut t = 0.0;
    let mut i = 0u64;
    while t < end {
        let failing = t >= inject + 30.0 && t < recovered - 20.0;
        let jitter = ((i * 7919) % 13) as f64 * 0.4;
        let (latency, error) = if failing && i.is_multiple_of(9) {
            (
                1_004.0 + jitter,
                "HTTP 503: {\"error\":\"database unavailable: timed out connecting after 1000 ms\"}",
            )
        } else if failing {
            (
                4.0 + jitter,
                "HTTP 503: {\"error\":\"database unavailable: Connection refused (os error 111)\"}",
            )
        } else {
            (2.5 + jitter + if t < baseline { 30.0 } else { 0.0 }, "")
        };
        // Through serde, so fields added to `Sample` later (with serde defaults) need no change.
        let sample: Sample = serde_json::from_value(serde_json::json!({
            "t_ms": t,
            "latency_ms": latency,
            "ok": !failing,
            "status": if failing { 503 } else { 201 },
            "error": failing.then_some(error),
        }))
        .expect("a sample");
        samples.push(sample);
        t += 9.7;
        i += 1;
    }
    let ev = |t_ms: f64, kind: &str, source: Source, c: Option<&str>, d: &[(&str, &str)]| Event {
        t_ms,
        kind: kind.into(),
        source,
        container: c.map(str::to_string),
        detail: d
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let mut events = vec![
        ev(
            inject,
            "fault_injected",
            Source::Runtime,
            Some("postgres"),
            &[("fault", "kill"), ("mechanism", "docker kill -s KILL")],
        ),
        ev(
            inject + 35.0,
            "first_error",
            Source::Workload,
            None,
            &[("reason", "http_5xx")],
        ),
        ev(
            inject + 60.0,
            "signal",
            Source::Bpf,
            Some("postgres"),
            &[("signal", "9"), ("comm", "postgres")],
        ),
        ev(
            inject + 75.0,
            "container_die",
            Source::DockerEvents,
            Some("postgres"),
            &[("exit_code", "137"), ("signal", "9")],
        ),
        ev(
            heal,
            "fault_healed",
            Source::Runtime,
            Some("postgres"),
            &[("fault", "kill")],
        ),
        ev(
            heal + 360.0,
            "container_start",
            Source::DockerEvents,
            Some("postgres"),
            &[],
        ),
        ev(recovered - 20.0, "last_error", Source::Workload, None, &[]),
        ev(recovered, "recovered", Source::Workload, None, &[]),
    ];
    for k in 0..40 {
        events.push(ev(
            inject + 40.0 + k as f64 * 3.0,
            "tcp_reset",
            Source::Bpf,
            Some("orders"),
            &[("dport", "5432")],
        ));
    }
    for k in 0..9 {
        events.push(ev(
            990.0 + k as f64 * 1000.0,
            "runq_delay",
            Source::Bpf,
            Some("postgres"),
            &[("p99_us", "2048")],
        ));
    }
    events.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    let mut tl = Timeline {
        name: "01_database_sudden_death::orders_survive_postgres_sudden_death".into(),
        started_unix_ms: 1_795_668_922_184,
        phases: vec![
            Phase {
                name: "warmup".into(),
                start_ms: 0.0,
                end_ms: baseline,
            },
            Phase {
                name: "baseline".into(),
                start_ms: baseline,
                end_ms: inject,
            },
            Phase {
                name: "fault".into(),
                start_ms: inject,
                end_ms: heal,
            },
            Phase {
                name: "recovery".into(),
                start_ms: heal,
                end_ms: recovered,
            },
            Phase {
                name: "steady".into(),
                start_ms: recovered,
                end_ms: end,
            },
        ],
        faults: vec![FaultRecord {
            kind: "kill".into(),
            target: "postgres".into(),
            mechanism: "docker kill -s KILL".into(),
            injected_ms: inject,
            healed_ms: Some(heal),
            inject_ms: Some(12.3),
            heal_ms: Some(240.0),
            params: BTreeMap::new(),
        }],
        events,
        samples,
        hypothesis: Hypothesis {
            window_ms: 1000.0,
            min_ok_ratio: 1.0,
            max_p99_ms: Some(72.0),
            min_samples: 5,
        },
        metrics: Default::default(),
        observers: vec![
            SignalChoice {
                signal: "process".into(),
                source: Source::Bpf,
                note: "eBPF: tp_btf/sched_process_exit".into(),
            },
            SignalChoice {
                signal: "tcp".into(),
                source: Source::Bpf,
                note: "eBPF: tp_btf/tcp_receive_reset".into(),
            },
            SignalChoice {
                signal: "cpu_throttle".into(),
                source: Source::Cgroup,
                note: "no eBPF program for this signal; fallback: cpu.stat".into(),
            },
        ],
        lost_writes: vec![],
        attachments: BTreeMap::new(),
    };
    tl.compute_metrics(inject, heal, Some(recovered), 5_000.0);
    tl.metrics.acknowledged_writes = tl.samples.iter().filter(|s| s.ok).count();
    Journal {
        schema_version: SCHEMA_VERSION,
        test: tl.name.clone(),
        file: "tests/01_database_sudden_death.rs".into(),
        declared: vec!["kill postgres after 0 ms for 2000 ms".into()],
        recover_within_ms: 5_000,
        passed: true,
        timeline: tl,
    }
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain([PathBuf::from("/usr/bin")])
        {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "chromium is not installed, so the report cannot be checked in a browser. \
         Fix: apt-get install chromium (scripts/bootstrap does it; CI installs it)"
    );
}

/// Runs headless Chromium with `args` on `url`; its stdout. Killed after [`BROWSER_TIMEOUT`].
fn browse(profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let started = Instant::now();
    loop {
        if child.try_wait().expect("waiting for chromium").is_some() {
            break;
        }
        if started.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within {} s ({args:?} {url})",
                BROWSER_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// The element with `id`, as Chromium serialised it.
fn element<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("the DOM has no #{id}"));
    let start = dom[..at].rfind('<').unwrap();
    &dom[start..start + dom[start..].find('>').unwrap() + 1]
}

/// The inside of the first `<g class="{class}">`.
fn group<'a>(dom: &'a str, class: &str) -> &'a str {
    let at = dom
        .find(&format!("class=\"{class}\""))
        .unwrap_or_else(|| panic!("the DOM has no .{class}"));
    let rest = &dom[at..];
    &rest[..rest.find("</g>").unwrap()]
}

#[test]
fn the_report_page_shows_the_timeline_in_a_real_browser() {
    let dir = std::env::temp_dir().join(format!("chaos-report-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("runs")).unwrap();
    let j = synthetic_journal();
    std::fs::write(
        dir.join("runs/orders_survive_postgres_sudden_death.json"),
        serde_json::to_vec(&j).unwrap(),
    )
    .unwrap();
    let index = report::render_all(&dir).expect("render the report");
    let page = dir.join("orders_survive_postgres_sudden_death.html");
    assert!(page.is_file() && index.is_file());
    let profile = dir.join("chromium-profile");

    let dom = browse(
        &profile,
        &["--dump-dom"],
        &format!("file://{}", page.display()),
    );
    assert!(
        dom.contains("<svg") && dom.contains("id=\"timeline\""),
        "no timeline SVG in the DOM:\n{}",
        &dom[..dom.len().min(2000)]
    );
    // The fault window spans injection to heal, inside the plot.
    let fault = element(&dom, "fault-window-0");
    let num = |el: &str, attr: &str| -> f64 {
        let k = el
            .find(&format!(" {attr}=\""))
            .unwrap_or_else(|| panic!("{el} has no {attr}"))
            + attr.len()
            + 3;
        el[k..k + el[k..].find('"').unwrap()].parse().unwrap()
    };
    let (fx, fw) = (num(fault, "x"), num(fault, "width"));
    assert!(fx > 250.0 && fw > 100.0, "fault window at {fx} width {fw}");
    // Both request series are drawn, failures inside the fault window.
    let ok = group(&dom, "series-ok");
    let failed = group(&dom, "series-failed");
    assert!(
        ok.matches("<rect").count() > 20,
        "ok series: {} bars",
        ok.matches("<rect").count()
    );
    assert!(
        failed.matches("<rect").count() >= 5,
        "failed series: {} bars",
        failed.matches("<rect").count()
    );
    let first_failed = failed.find("<rect").map(|i| &failed[i..]).unwrap();
    let bar = &first_failed[..first_failed.find('>').unwrap()];
    let bar_end = num(bar, "x") + num(bar, "width");
    assert!(
        bar_end > fx,
        "the first failed bar ends ({bar_end}) before the fault starts ({fx})"
    );
    // The recovery marker comes after the heal, the budget line after the recovery.
    assert!(dom.contains("id=\"recovery-marker\""), "no recovery marker");
    let rec = element(&dom, "recovery-marker");
    assert!(rec.contains("recovery-marker"));
    let budget = element(&dom, "budget-line");
    assert!(
        num(budget, "x1") > fx + fw,
        "the budget line is after the heal"
    );
    assert!(
        dom.contains("recovered 1.42 s after heal") || dom.contains("recovered 1.4"),
        "recovery label"
    );
    assert!(dom.contains("PASS"));

    // A person's view of it.
    let shots = journal::chaos_dir().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("report_page.png");
    let _ = std::fs::remove_file(&png);
    browse(
        &profile,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1400,1000",
        ],
        &format!("file://{}", page.display()),
    );
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000,
        "screenshot looks empty"
    );
    eprintln!("screenshot: {}", png.display());

    // The index links to the page.
    let idx = browse(
        &profile,
        &["--dump-dom"],
        &format!("file://{}", index.display()),
    );
    assert!(
        idx.contains("href=\"orders_survive_postgres_sudden_death.html\""),
        "index does not link the page"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
