use super::*;
use crate::observe::{SignalChoice, Source};
use crate::timeline::{Event, FaultRecord, Hypothesis, Phase, PhaseStats, Sample, Timeline};
use std::collections::BTreeMap;

/// A request; built through serde so that fields added to `Sample` later (with serde defaults)
/// need no change here.
fn sample(t_ms: f64, latency_ms: f64, ok: bool, error: Option<&str>) -> Sample {
    serde_json::from_value(serde_json::json!({
        "t_ms": t_ms,
        "latency_ms": latency_ms,
        "ok": ok,
        "status": if ok { 201 } else { 503 },
        "error": error,
    }))
    .expect("a sample")
}

/// A run like experiment 01: baseline, postgres killed 2.2 s, failures, recovery 1.4 s after heal.
fn journal() -> Journal {
    let (inject, heal, recovered, end) = (2_500.0, 4_700.0, 6_100.0, 9_000.0);
    let mut samples = Vec::new();
    let mut t = 30.0;
    while t < end {
        let failing = t >= inject + 30.0 && t < recovered - 20.0;
        let latency = if failing && (t as u64 / 100).is_multiple_of(7) {
            1_004.0
        } else if failing {
            6.0
        } else {
            3.0 + (t % 5.0)
        };
        samples.push(sample(
            t,
            latency,
            !failing,
            failing.then_some("HTTP 503: {\"error\":\"database unavailable\"}"),
        ));
        t += 11.0;
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
            &[("fault", "kill")],
        ),
        ev(
            inject + 40.0,
            "first_error",
            Source::Workload,
            None,
            &[("reason", "http_5xx")],
        ),
        ev(
            inject + 75.0,
            "container_die",
            Source::DockerEvents,
            Some("postgres"),
            &[("signal", "9")],
        ),
        ev(heal, "fault_healed", Source::Runtime, Some("postgres"), &[]),
        ev(recovered, "recovered", Source::Workload, None, &[]),
    ];
    for i in 0..500 {
        events.push(ev(
            i as f64 * 18.0,
            "tcp_state",
            Source::Bpf,
            Some("orders"),
            &[("new", "CLOSE")],
        ));
    }
    events.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    let phases = vec![
        Phase {
            name: "warmup".into(),
            start_ms: 0.0,
            end_ms: 500.0,
        },
        Phase {
            name: "baseline".into(),
            start_ms: 500.0,
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
    ];
    let mut tl = Timeline {
        name: "01_database_sudden_death::orders_survive_postgres_sudden_death".into(),
        started_unix_ms: 1_795_668_922_184,
        phases,
        faults: vec![FaultRecord {
            kind: "kill".into(),
            target: "postgres".into(),
            mechanism: "docker kill -s KILL".into(),
            injected_ms: inject,
            healed_ms: Some(heal),
            inject_ms: Some(3.4),
            heal_ms: Some(180.0),
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
        observers: vec![SignalChoice {
            signal: "process".into(),
            source: Source::Bpf,
            note: "eBPF".into(),
        }],
        lost_writes: vec![],
        attachments: BTreeMap::from([(
            "postgres.log".to_string(),
            "LOG:  database system is ready <now>".to_string(),
        )]),
    };
    tl.compute_metrics(inject, heal, Some(recovered), 5000.0);
    tl.metrics.acknowledged_writes = 600;
    Journal {
        schema_version: SCHEMA_VERSION,
        test: tl.name.clone(),
        file: "tests/01_database_sudden_death.rs".into(),
        declared: vec!["kill postgres after 0 ms for 2200 ms".into()],
        recover_within_ms: 5000,
        passed: true,
        timeline: tl,
    }
}

fn empty() -> Journal {
    Journal {
        schema_version: SCHEMA_VERSION,
        test: "x::empty".into(),
        file: "tests/x.rs".into(),
        declared: vec![],
        recover_within_ms: 0,
        passed: false,
        timeline: Timeline {
            name: "x::empty".into(),
            started_unix_ms: 0,
            phases: vec![],
            faults: vec![],
            events: vec![],
            samples: vec![],
            hypothesis: Hypothesis {
                window_ms: 1000.0,
                min_ok_ratio: 1.0,
                max_p99_ms: None,
                min_samples: 5,
            },
            metrics: Default::default(),
            observers: vec![],
            lost_writes: vec![],
            attachments: BTreeMap::new(),
        },
    }
}

/// What every page must be: one SVG, no script, nothing fetched, no broken numbers.
fn assert_self_contained(html: &str) {
    assert_eq!(html.matches("<svg").count(), 1, "one svg");
    assert_eq!(html.matches("</svg>").count(), 1);
    assert!(!html.to_lowercase().contains("<script"), "no script");
    for bad in [
        "NaN",
        "inf\"",
        "=\"inf",
        "src=\"http",
        "href=\"http",
        "url(http",
        "@import",
    ] {
        assert!(!html.contains(bad), "page holds {bad:?}");
    }
    let without_ns = html.replace("http://www.w3.org/2000/svg", "");
    assert!(
        !without_ns.contains("http://") && !without_ns.contains("https://"),
        "no network reference"
    );
}

fn attr_of<'a>(html: &'a str, id: &str, attr: &str) -> &'a str {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let tag_start = html[..at].rfind('<').unwrap();
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>').unwrap()];
    let k = tag
        .find(&format!(" {attr}=\""))
        .unwrap_or_else(|| panic!("#{id} has no {attr}: {tag}"))
        + attr.len()
        + 3;
    &tag[k..k + tag[k..].find('"').unwrap()]
}

#[test]
fn page_of_a_realistic_run_has_every_element_a_reader_needs() {
    let j = journal();
    let html = run_page(&j, "orders_survive_postgres_sudden_death.json");
    assert_self_contained(&html);
    for needle in [
        r#"id="timeline""#,
        r#"id="fault-window-0""#,
        r#"class="series-ok""#,
        r#"class="series-failed""#,
        r#"class="series-p50""#,
        r#"class="series-p99""#,
        r#"id="recovery-marker""#,
        r#"id="budget-line""#,
        r#"id="verdict""#,
        r#"class="phase-boundary""#,
        "kill postgres · held 2.2 s · docker kill -s KILL",
        "kill postgres for 2.2 s",
        "PASS",
        "recovered 1.4 s after heal",
        r#"id="phases""#,
        r#"id="observers""#,
        "database unavailable",
        "postgres.log",
        "database system is ready &lt;now&gt;",
    ] {
        assert!(html.contains(needle), "page lacks {needle}");
    }
    // The fault window spans injection to heal; the budget line sits at heal + 5 s, after recovery.
    let x = |id: &str, a: &str| attr_of(&html, id, a).parse::<f64>().unwrap();
    let (fx, fw) = (x("fault-window-0", "x"), x("fault-window-0", "width"));
    let budget = x("budget-line", "x1");
    assert!(
        fx > 290.0 && fw > 50.0 && budget > fx + fw,
        "fault {fx}+{fw}, budget {budget}"
    );
    assert!(
        budget <= chart::WIDTH,
        "the budget line is inside the drawing"
    );
    // 500 tcp_state events are one marker with a count.
    assert_eq!(html.matches(r#"data-kind="tcp_state""#).count(), 1);
    assert!(html.contains(r#"data-count="500""#) && html.contains("×500</tspan>"));
    // Failed requests are drawn in the fault phase, not in the baseline.
    let failed = &html[html.find(r#"class="series-failed""#).unwrap()..];
    let failed = &failed[..failed.find("</g>").unwrap()];
    assert!(failed.matches("<rect").count() >= 5, "failed buckets drawn");
}

#[test]
fn the_faults_table_shows_how_long_injecting_and_healing_took() {
    let mut j = journal();
    let html = run_page(&j, "x.json");
    let table = &html[html.find(r#"id="faults""#).unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(table.contains("in effect after") && table.contains("undone after"));
    assert!(
        table.contains(r#"<td class="num">3.4 ms</td>"#)
            && table.contains(r#"<td class="num">180 ms</td>"#),
        "{table}"
    );
    // A journal from before the latencies were recorded: dashes, same columns.
    j.timeline.faults[0].inject_ms = None;
    j.timeline.faults[0].heal_ms = None;
    let html = run_page(&j, "x.json");
    let table = &html[html.find(r#"id="faults""#).unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(
        table.matches(r#"<td class="num">—</td>"#).count(),
        2,
        "{table}"
    );
}

#[test]
fn text_from_the_journal_is_escaped_everywhere() {
    let mut j = journal();
    j.test = "m::<script>alert(1)</script>".into();
    j.timeline.faults[0].mechanism = "tc \"qdisc\" & <netem>".into();
    j.timeline.events[0].container = Some("<b>x</b>".into());
    j.timeline.events[0]
        .detail
        .insert("k'".into(), "</text><script>".into());
    j.declared = vec!["<img src=x onerror=alert(1)>".into()];
    let html = run_page(&j, "a<b.json");
    assert_self_contained(&html);
    assert!(
        !html.contains("<b>x</b>") && !html.contains("<img") && !html.contains("</text><script>")
    );
    assert!(html.contains("tc &quot;qdisc&quot; &amp; &lt;netem&gt;"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[test]
fn an_empty_timeline_still_renders() {
    let html = run_page(&empty(), "empty.json");
    assert_self_contained(&html);
    assert!(html.contains("no requests were recorded"));
    assert!(html.contains("nothing was observed"));
    assert!(html.contains("no fault was injected"));
    assert!(!html.contains("id=\"recovery-marker\"") && !html.contains("id=\"budget-line\""));
    assert!(!html.contains("id=\"fault-window-0\""));
    assert!(html.contains("FAIL"));
}

#[test]
fn a_long_fault_label_stays_inside_the_plot() {
    let mut j = journal();
    let mut second = j.timeline.faults[0].clone();
    second.kind = "network_partition".into();
    second.mechanism = "iptables -I INPUT -s 172.20.0.0/16 -j DROP; iptables -I OUTPUT -d 172.20.0.0/16 -j DROP in postgres netns".into();
    second.injected_ms = 3_000.0;
    second.healed_ms = Some(4_000.0);
    j.timeline.faults.push(second);
    let html = run_page(&j, "x.json");
    assert!(html.contains(r#"id="fault-window-1""#));
    let x: f64 = attr_of(&html, "fault-label-1", "x").parse().unwrap();
    let anchor = attr_of(&html, "fault-label-1", "text-anchor");
    let label = &html[html.find(r#"id="fault-label-1""#).unwrap()..];
    let text = &label[label.find('>').unwrap() + 1..label.find("</text>").unwrap()];
    let width = text.chars().count() as f64 * 6.3;
    let (left, right) = if anchor == "end" {
        (x - width, x)
    } else {
        (x, x + width)
    };
    assert!(
        left >= 290.0 && right <= chart::WIDTH,
        "{anchor} {left}..{right}: {text}"
    );
    assert!(text.ends_with('…'), "cut: {text}");
}

#[test]
fn a_run_that_never_recovered_says_so() {
    let mut j = journal();
    j.passed = false;
    j.timeline.phases.retain(|p| p.name != "steady");
    j.timeline.events.retain(|e| e.kind != "recovered");
    j.timeline.metrics.time_to_recover_ms = None;
    let html = run_page(&j, "x.json");
    assert_self_contained(&html);
    assert!(html.contains(r#"id="no-recovery""#) && !html.contains(r#"id="recovery-marker""#));
    assert!(html.contains(r#"id="budget-line""#));
    assert!(html.contains("never recovered"));
}

#[test]
fn a_fault_never_healed_and_a_budget_past_the_end_stay_on_the_chart() {
    let mut j = journal();
    j.recover_within_ms = 60_000;
    let html = run_page(&j, "x.json");
    let bx: f64 = attr_of(&html, "budget-line", "x1").parse().unwrap();
    assert!(
        bx <= chart::WIDTH - 20.0,
        "the axis stretches to the budget: {bx}"
    );
    j.timeline.faults[0].healed_ms = None;
    let html = run_page(&j, "x.json");
    assert_self_contained(&html);
    assert!(html.contains("never healed"));
}

#[test]
fn many_kinds_of_observations_are_capped_in_the_chart_but_listed_in_the_table() {
    let mut j = journal();
    for i in 0..(chart::MAX_ROWS + 7) {
        j.timeline.events.push(Event {
            t_ms: 100.0 + i as f64,
            kind: format!("kind_{i}"),
            source: Source::Procfs,
            container: None,
            detail: BTreeMap::new(),
        });
    }
    let html = run_page(&j, "x.json");
    let svg = &html[html.find("<svg").unwrap()..html.find("</svg>").unwrap()];
    assert_eq!(svg.matches(r#"class="marker "#).count(), chart::MAX_ROWS);
    assert!(svg.contains("more kinds in the table below"));
    assert!(html.contains("kind_36"), "the table lists every kind");
}

#[test]
fn index_lists_runs_with_verdict_recovery_and_links() {
    let ok = Summary::from(&journal());
    let mut bad = ok.clone();
    bad.passed = false;
    bad.test = "m::slow one".into();
    bad.time_to_recover_ms = Some(9_000.0);
    let html = index_page(
        &[
            ("orders_survive".into(), Ok(ok)),
            ("slow one".into(), Ok(bad)),
            ("broken".into(), Err("expected value at line 1".into())),
        ],
        "target/chaos/runs",
    );
    assert!(html.contains(r#"href="orders_survive.html""#));
    assert!(html.contains(r#"href="slow%20one.html""#));
    assert!(
        html.contains("1 passed") && html.contains("1 failed") && html.contains("1 unreadable")
    );
    assert!(html.contains("1.4 s / 5 s") && html.contains("9 s / 5 s"));
    assert!(html.contains("unreadable journal: expected value"));
    assert!(!html.contains("<script"));
    assert!(
        html.contains("kill postgres for 2.2 s"),
        "declared faults read well"
    );
    assert_eq!(
        page::pretty_fault("kill redis after 1000 ms for 4000 ms"),
        "kill redis after 1 s for 4 s"
    );
    assert_eq!(page::pretty_fault("odd after x"), "odd after x");
    let none = index_page(&[], "runs");
    assert!(none.contains("No journals yet"));
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("chaos-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("runs")).unwrap();
    d
}

#[test]
fn render_all_and_render_run_write_pages_and_the_index() {
    let dir = temp_dir("all");
    let j = journal();
    std::fs::write(
        dir.join("runs/orders.json"),
        serde_json::to_vec(&j).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("runs/empty.json"),
        serde_json::to_vec(&empty()).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("runs/broken.json"), b"{ not json").unwrap();
    let mut newer = serde_json::to_value(&j).unwrap();
    newer["schema_version"] = 99.into();
    std::fs::write(
        dir.join("runs/future.json"),
        serde_json::to_vec(&newer).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("runs/notes.txt"), b"ignored").unwrap();

    let index = render_all(&dir).unwrap();
    assert_eq!(index, dir.join("index.html"));
    let html = std::fs::read_to_string(&index).unwrap();
    assert!(html.contains(r#"href="orders.html""#) && html.contains(r#"href="empty.html""#));
    assert!(html.contains("broken") && html.contains("unreadable journal"));
    assert!(html.contains("schema v99"), "a newer schema is named");
    assert!(dir.join("orders.html").exists() && dir.join("empty.html").exists());
    assert!(!dir.join("broken.html").exists());
    // Experiments sort by file: the empty one (tests/x.rs) after tests/01_...
    assert!(html.find("orders.html").unwrap() < html.find("empty.html").unwrap());

    assert_eq!(
        read_summary(&dir.join("runs/orders.json")).unwrap(),
        Summary::from(&j)
    );
    std::fs::remove_file(dir.join("orders.html")).unwrap();
    let page = render_run(&dir.join("runs/orders.json")).unwrap();
    assert_eq!(page, dir.join("orders.html"));
    assert!(
        std::fs::read_to_string(&page)
            .unwrap()
            .contains(r#"id="fault-window-0""#)
    );
    // The index after a run reads the other journals' summaries from the cache: a journal
    // whose summary is cached is not read again (here: made unreadable, and still listed).
    assert!(dir.join(".summaries.json").exists());
    let empty_json = dir.join("runs/empty.json");
    let key_before = file_key(&empty_json).unwrap();
    let mut cache = SummaryCache::load(&dir);
    cache.0.get_mut("empty").unwrap().1.test = "x::from_the_cache".into();
    cache.save(&dir);
    render_run(&dir.join("runs/orders.json")).unwrap();
    assert_eq!(file_key(&empty_json).unwrap(), key_before);
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(
        html.contains("from_<wbr>the_<wbr>cache"),
        "cached summary used"
    );
    // A changed journal (another length) is read again.
    std::fs::write(&empty_json, serde_json::to_vec_pretty(&empty()).unwrap()).unwrap();
    render_run(&dir.join("runs/orders.json")).unwrap();
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(
        !html.contains("from_<wbr>the_<wbr>cache") && html.contains("empty"),
        "changed journal re-read"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn render_all_of_a_missing_dir_writes_an_empty_index() {
    let dir = std::env::temp_dir().join(format!("chaos-report-none-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let index = render_all(&dir).unwrap();
    assert!(
        std::fs::read_to_string(index)
            .unwrap()
            .contains("No journals yet")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn phase_stats_feed_the_table() {
    let j = journal();
    let fault: &PhaseStats = j.timeline.metrics.phase("fault").unwrap();
    let html = run_page(&j, "x.json");
    let table = &html[html.find(r#"id="phases""#).unwrap()..];
    let row = &table[table.find("phase-fault").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains(&format!(">{}<", fault.failed)), "{row}");
}

#[test]
fn cache_hits_show_per_phase_when_the_workload_recorded_them() {
    let mut j = journal();
    let with_cache = |s: &Sample, c: &str| -> Sample {
        let mut v = serde_json::to_value(s).unwrap();
        v["cache"] = c.into();
        serde_json::from_value(v).unwrap()
    };
    let recorded = page::cache_of(&with_cache(&j.timeline.samples[0], "hit")).is_some();
    for (i, s) in j.timeline.samples.iter_mut().enumerate() {
        *s = with_cache(s, if i % 4 == 0 { "miss" } else { "hit" });
    }
    let html = run_page(&j, "x.json");
    // Older runtimes have no `cache` on samples: then there is no column, and no error.
    assert_eq!(html.contains("cache hits"), recorded);
    if recorded {
        assert!(html.contains(">75%<"), "3 of 4 reads hit");
    }
    assert!(!run_page(&journal(), "x.json").contains("cache hits"));
}
