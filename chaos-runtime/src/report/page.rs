//! The HTML page of one run, and the index over all runs. Pure: journals in, text out.
use super::chart::{self, source_colour};
use super::fmt::{clip, collapse, dur, esc, opt_dur, src, url_path, utc};
use super::{CSS, Entry};
use crate::journal::Journal;
use crate::timeline::Sample;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Event kinds that show each observed signal (for "who observed what").
const SIGNAL_KINDS: &[(&str, &[&str])] = &[
    ("process", &["process_exit", "signal"]),
    ("oom", &["oom_kill"]),
    ("tcp", &["tcp_retransmit", "tcp_reset", "tcp_state"]),
    ("runq", &["runq_delay"]),
    ("block_io", &["block_io_latency", "io_throttled"]),
    ("cpu_throttle", &["cpu_throttled"]),
];

/// The service's `x-cache` answer of a read (`hit`, `miss`, `bypass`), when the workload
/// recorded one. Read through the serialized form: journals written before the workload
/// recorded it simply have none.
pub(crate) fn cache_of(x: &Sample) -> Option<String> {
    match serde_json::to_value(x).ok()?.get("cache")? {
        serde_json::Value::String(c) => Some(c.clone()),
        _ => None,
    }
}

/// Lines of an attachment (a service log) shown on the page: its tail.
const ATTACHMENT_LINES: usize = 300;

fn head(s: &mut String, title: &str) {
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta name=\"generator\" content=\"chaos-runtime report\"><title>{}</title><style>{CSS}</style></head><body>",
        esc(title)
    );
}

/// `kill postgres after 0 ms for 2000 ms` (as the journal declares it) -> `kill postgres for 2 s`;
/// anything else unchanged.
pub fn pretty_fault(declared: &str) -> String {
    let parse = |s: &str| {
        s.strip_suffix(" ms")
            .and_then(|n| n.trim().parse::<f64>().ok())
    };
    let Some((head, rest)) = declared.split_once(" after ") else {
        return declared.to_string();
    };
    let Some((after, hold)) = rest.split_once(" for ") else {
        return declared.to_string();
    };
    match (parse(after), parse(hold)) {
        (Some(a), Some(h)) if a > 0.0 => format!("{head} after {} for {}", dur(a), dur(h)),
        (Some(_), Some(h)) => format!("{head} for {}", dur(h)),
        _ => declared.to_string(),
    }
}

/// A snake_case name with line-break opportunities after its underscores.
fn breakable(name: &str) -> String {
    esc(name).replace('_', "_<wbr>")
}

/// The short name of a test: the function, without its module path.
pub fn short_name(test: &str) -> &str {
    test.rsplit("::").next().unwrap_or(test)
}

/// The page of one run. `journal_file` is the journal's file name, shown in the footer.
pub fn run_page(j: &Journal, journal_file: &str) -> String {
    let short = short_name(&j.test);
    let verdict = if j.passed { "pass" } else { "fail" };
    let mut s = String::with_capacity(128 * 1024);
    head(
        &mut s,
        &format!("{} · {short} · chaos report", verdict.to_uppercase()),
    );
    header(&mut s, j);
    cards(&mut s, j);
    chart_section(&mut s, j);
    numbers(&mut s, j);
    failures(&mut s, j);
    observers(&mut s, j);
    observations(&mut s, j);
    violations(&mut s, j);
    attachments(&mut s, j);
    footer(&mut s, j, journal_file);
    s
}

fn header(s: &mut String, j: &Journal) {
    let tl = &j.timeline;
    let short = short_name(&j.test);
    let module = j
        .test
        .strip_suffix(short)
        .map(|p| p.trim_end_matches("::"))
        .unwrap_or("");
    let verdict = if j.passed { "pass" } else { "fail" };
    let _ = write!(
        s,
        r#"<header class="page-head"><nav><a href="index.html">← all runs</a></nav><div class="title-row"><span id="verdict-badge" class="badge {verdict}">{}</span><h1>{}</h1></div><p class="sub">{}{} · started {} · {}</p></header>"#,
        verdict.to_uppercase(),
        breakable(short),
        if module.is_empty() {
            String::new()
        } else {
            format!("<code>{}</code> · ", esc(module))
        },
        esc(&j.file),
        esc(&utc(tl.started_unix_ms)),
        if j.declared.is_empty() {
            "no fault declared".to_string()
        } else {
            esc(&j
                .declared
                .iter()
                .map(|d| pretty_fault(d))
                .collect::<Vec<_>>()
                .join("; "))
        }
    );
}

fn cards(s: &mut String, j: &Journal) {
    let tl = &j.timeline;
    let m = &tl.metrics;
    s.push_str(r#"<section class="cards">"#);
    let budget = j.recover_within_ms as f64;
    let (rec_val, rec_cls) = match m.time_to_recover_ms {
        Some(t) if t <= budget => (dur(t), "good"),
        Some(t) => (dur(t), "bad"),
        None => ("never".to_string(), "bad"),
    };
    let track = m.time_to_recover_ms.unwrap_or(budget).max(budget).max(1.0);
    let fill = m
        .time_to_recover_ms
        .map(|t| (t / track * 100.0).clamp(0.0, 100.0))
        .unwrap_or(100.0);
    let _ = write!(
        s,
        r#"<div class="card wide {rec_cls}" id="card-recovery"><div class="label">Time to recover</div><div class="value">{rec_val}</div><div class="meter" title="time to recover vs budget"><div class="fill {rec_cls}" style="width:{fill:.1}%"></div><div class="tick" style="left:{bud:.1}%"></div></div><div class="foot">budget {} after heal{}</div></div>"#,
        dur(budget),
        match m.time_to_recover_ms {
            Some(t) if t <= budget => format!(" · {:.0}% used", t / budget.max(1.0) * 100.0),
            Some(t) => format!(" · over by {}", dur(t - budget)),
            None => " · the steady state never returned".to_string(),
        },
        bud = budget / track * 100.0
    );
    card(
        s,
        "Time to first error",
        &opt_dur(m.time_to_first_error_ms),
        "after the injection",
        "",
    );
    card(
        s,
        "Error window",
        &opt_dur(m.error_window_ms),
        "first failed request to last",
        "",
    );
    let lost = tl.lost_writes.len();
    card(
        s,
        "Lost writes",
        &lost.to_string(),
        &format!(
            "of {} acknowledged, {} indeterminate",
            m.acknowledged_writes, m.indeterminate_writes
        ),
        if lost > 0 { "bad" } else { "good" },
    );
    let ok = tl.samples.iter().filter(|x| x.ok).count();
    let failed = tl.samples.len() - ok;
    card(
        s,
        "Requests",
        &format!("{ok} ok"),
        &format!("{failed} failed"),
        "",
    );
    s.push_str("</section>");
}

fn chart_section(s: &mut String, j: &Journal) {
    let _ = write!(
        s,
        r#"<section class="panel chart"><h2>Timeline</h2><p class="hint">Hover a bar, point or marker for its numbers. The hatched window is the fault; the green line is where the steady state returned; the dashed orange line is the recovery budget.</p>{}</section>"#,
        chart::timeline_svg(j)
    );
}

fn numbers(s: &mut String, j: &Journal) {
    let tl = &j.timeline;
    let m = &tl.metrics;
    let cached = tl.samples.iter().any(|x| cache_of(x).is_some());
    let _ = write!(
        s,
        r#"<section class="grid2"><div class="panel"><h2>Phases</h2><table id="phases"><thead><tr><th>phase</th><th class="num">start</th><th class="num">length</th><th class="num">ok</th><th class="num">failed</th><th class="num">p50</th><th class="num">p99</th>{}</tr></thead><tbody>"#,
        if cached {
            r#"<th class="num" title="x-cache: hit among answered reads">cache hits</th>"#
        } else {
            ""
        }
    );
    for p in &tl.phases {
        let st = m.phase(&p.name);
        let hits = if cached {
            let answered: Vec<&Sample> = tl
                .samples
                .iter()
                .filter(|x| x.t_ms >= p.start_ms && x.t_ms < p.end_ms && cache_of(x).is_some())
                .collect();
            let hit = answered
                .iter()
                .filter(|x| cache_of(x).as_deref() == Some("hit"))
                .count();
            if answered.is_empty() {
                r#"<td class="num">—</td>"#.to_string()
            } else {
                format!(
                    r#"<td class="num">{:.0}%</td>"#,
                    hit as f64 / answered.len() as f64 * 100.0
                )
            }
        } else {
            String::new()
        };
        let _ = write!(
            s,
            r#"<tr class="phase-{cls}"><td><span class="dot phase-{cls}"></span>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num{}">{}</td><td class="num">{}</td><td class="num">{}</td>{hits}</tr>"#,
            esc(&p.name),
            dur(p.start_ms),
            dur(p.end_ms - p.start_ms),
            st.map(|x| x.ok.to_string()).unwrap_or_default(),
            if st.is_some_and(|x| x.failed > 0) {
                " bad"
            } else {
                ""
            },
            st.map(|x| x.failed.to_string()).unwrap_or_default(),
            st.map(|x| dur(x.p50_ms)).unwrap_or_default(),
            st.map(|x| dur(x.p99_ms)).unwrap_or_default(),
            cls = esc(&p.name)
        );
    }
    if tl.phases.is_empty() {
        s.push_str(r#"<tr><td colspan="8" class="muted">no phases recorded</td></tr>"#);
    }
    s.push_str("</tbody></table>");
    let h = &tl.hypothesis;
    let _ = write!(
        s,
        r#"<p class="hint">Steady state: in every {} window at least {:.0}% of requests succeed{}, with at least {} requests.</p></div>"#,
        dur(h.window_ms),
        h.min_ok_ratio * 100.0,
        h.max_p99_ms
            .map(|p| format!(" and p99 stays under {}", dur(p)))
            .unwrap_or_default(),
        h.min_samples
    );

    s.push_str(r#"<div class="panel"><h2>Faults</h2><table id="faults"><thead><tr><th>fault</th><th>mechanism</th><th class="num">injected</th><th class="num" title="from the decision to inject to the fault in effect">in effect after</th><th class="num">healed</th><th class="num" title="from the decision to heal to the fault undone">undone after</th><th class="num">held</th></tr></thead><tbody>"#);
    for f in &tl.faults {
        let params: Vec<String> = f.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(
            s,
            r#"<tr><td><b>{}</b> {}{}</td><td><code>{}</code></td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            esc(&f.kind),
            esc(&f.target),
            if params.is_empty() {
                String::new()
            } else {
                format!(
                    " <span class=\"muted\">({})</span>",
                    esc(&params.join(", "))
                )
            },
            esc(&f.mechanism),
            dur(f.injected_ms),
            opt_dur(f.inject_ms),
            opt_dur(f.healed_ms),
            opt_dur(f.heal_ms),
            f.healed_ms
                .map(|h| dur(h - f.injected_ms))
                .unwrap_or_else(|| "never healed".into())
        );
    }
    if tl.faults.is_empty() {
        s.push_str(r#"<tr><td colspan="7" class="muted">no fault was injected</td></tr>"#);
    }
    s.push_str("</tbody></table>");
    let mo = chart::moments(j);
    let budget = j.recover_within_ms as f64;
    let lost = tl.lost_writes.len();
    let _ = write!(
        s,
        r#"<table class="kv"><tbody><tr><th>time to first error</th><td>{}</td></tr><tr><th>error window</th><td>{}</td></tr><tr><th>time to recover</th><td>{} <span class="muted">(budget {}, line at {})</span></td></tr><tr><th>acknowledged writes</th><td>{}</td></tr><tr><th>indeterminate writes</th><td>{}</td></tr><tr><th>lost writes</th><td class="{}">{}</td></tr></tbody></table></div></section>"#,
        opt_dur(m.time_to_first_error_ms),
        opt_dur(m.error_window_ms),
        opt_dur(m.time_to_recover_ms),
        dur(budget),
        opt_dur(mo.budget_ms),
        m.acknowledged_writes,
        m.indeterminate_writes,
        if lost > 0 { "bad" } else { "" },
        lost
    );
}

fn failures(s: &mut String, j: &Journal) {
    let tl = &j.timeline;
    let reasons = failure_reasons(&tl.samples);
    if !reasons.is_empty() {
        s.push_str(r#"<section class="panel"><h2>Why requests failed</h2><table id="failures"><thead><tr><th>error</th><th class="num">count</th><th class="num">first</th><th class="num">last</th></tr></thead><tbody>"#);
        for (reason, (count, first, last)) in reasons.iter().take(10) {
            let _ = write!(
                s,
                r#"<tr><td><code>{}</code></td><td class="num">{count}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                esc(reason),
                dur(*first),
                dur(*last)
            );
        }
        if reasons.len() > 10 {
            let _ = write!(
                s,
                r#"<tr><td colspan="4" class="muted">+{} more distinct errors</td></tr>"#,
                reasons.len() - 10
            );
        }
        s.push_str("</tbody></table></section>");
    }
}

fn observers(s: &mut String, j: &Journal) {
    let tl = &j.timeline;
    s.push_str(r#"<section class="panel"><h2>Who observed what</h2><table id="observers"><thead><tr><th>signal</th><th>source</th><th class="num">events</th><th>how</th></tr></thead><tbody>"#);
    for c in &tl.observers {
        let kinds = SIGNAL_KINDS
            .iter()
            .find(|(sig, _)| *sig == c.signal)
            .map(|(_, k)| *k)
            .unwrap_or(&[]);
        let seen = tl
            .events
            .iter()
            .filter(|e| e.source == c.source && kinds.contains(&e.kind.as_str()))
            .count();
        let _ = write!(
            s,
            r#"<tr><td><b>{}</b></td><td><span class="chip" style="--c:{}">{}</span></td><td class="num">{seen}</td><td class="muted">{}</td></tr>"#,
            esc(&c.signal),
            source_colour(c.source),
            esc(&src(c.source)),
            esc(&c.note)
        );
    }
    if tl.observers.is_empty() {
        s.push_str(r#"<tr><td colspan="4" class="muted">no observer choices recorded</td></tr>"#);
    }
    s.push_str("</tbody></table></section>");
}

fn observations(s: &mut String, j: &Journal) {
    let tl = &j.timeline;
    let markers = collapse(&tl.events);
    let _ = write!(
        s,
        r#"<section class="panel"><h2>Observations <span class="muted">({} events, {} kinds)</span></h2><table id="events"><thead><tr><th>source</th><th>what</th><th>where</th><th class="num">count</th><th class="num">first</th><th class="num">last</th><th>first occurrence</th></tr></thead><tbody>"#,
        tl.events.len(),
        markers.len()
    );
    for mk in &markers {
        let _ = write!(
            s,
            r#"<tr><td><span class="chip" style="--c:{}">{}</span></td><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="detail"><code>{}</code></td></tr>"#,
            source_colour(mk.source),
            esc(&src(mk.source)),
            esc(&mk.kind),
            esc(mk.container.as_deref().unwrap_or("—")),
            mk.count,
            dur(mk.first_ms),
            dur(mk.last_ms),
            esc(&clip(&mk.detail, 160))
        );
    }
    if markers.is_empty() {
        s.push_str(r#"<tr><td colspan="7" class="muted">nothing was observed</td></tr>"#);
    }
    s.push_str("</tbody></table></section>");
}

fn violations(s: &mut String, j: &Journal) {
    let tl = &j.timeline;
    if !tl.lost_writes.is_empty() {
        let ids: Vec<String> = tl
            .lost_writes
            .iter()
            .take(200)
            .map(|v| esc(&v.to_string()))
            .collect();
        let _ = write!(
            s,
            r#"<section class="panel bad-panel"><h2>Invariant violations ({})</h2><p>Found by the system's invariants after recovery:</p><pre id="lost-writes">{}</pre>{}</section>"#,
            tl.lost_writes.len(),
            ids.join("\n"),
            if tl.lost_writes.len() > 200 {
                " …"
            } else {
                ""
            }
        );
    }
}

fn attachments(s: &mut String, j: &Journal) {
    let tl = &j.timeline;
    for (name, text) in &tl.attachments {
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(ATTACHMENT_LINES)..];
        let _ = write!(
            s,
            r#"<section class="panel attachment"><details><summary>{} <span class="muted">({} lines{})</span></summary><pre>{}</pre></details></section>"#,
            esc(name),
            lines.len(),
            if tail.len() < lines.len() {
                format!(", the last {ATTACHMENT_LINES} shown")
            } else {
                String::new()
            },
            esc(&tail.join("\n"))
        );
    }
}

fn footer(s: &mut String, j: &Journal, journal_file: &str) {
    let tl = &j.timeline;
    let _ = write!(
        s,
        r#"<section class="panel"><details><summary>Text timeline (as printed on failure)</summary><pre>{}</pre></details></section><footer>chaos report · journal <code>runs/{}</code> (schema v{}) · {} requests, {} events</footer></body></html>"#,
        esc(&tl.render_text()),
        esc(journal_file),
        j.schema_version,
        tl.samples.len(),
        tl.events.len()
    );
}

fn card(s: &mut String, label: &str, value: &str, foot: &str, cls: &str) {
    let _ = write!(
        s,
        r#"<div class="card {cls}"><div class="label">{}</div><div class="value">{}</div><div class="foot">{}</div></div>"#,
        esc(label),
        esc(value),
        esc(foot)
    );
}

/// Failed requests grouped by their error text: (count, first start, last start), most first.
pub fn failure_reasons(samples: &[Sample]) -> Vec<(String, (usize, f64, f64))> {
    let mut by: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
    for x in samples.iter().filter(|x| !x.ok) {
        let reason = match &x.error {
            Some(e) => clip(e, 140),
            None if x.status > 0 => format!("HTTP {}", x.status),
            None => "no answer".to_string(),
        };
        let e = by.entry(reason).or_insert((0, x.t_ms, x.t_ms));
        e.0 += 1;
        e.1 = e.1.min(x.t_ms);
        e.2 = e.2.max(x.t_ms);
    }
    let mut v: Vec<_> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.1.1.total_cmp(&b.1.1)));
    v
}

/// The index over all runs, newest first within each file. `dir_label` names the journal folder.
pub fn index_page(entries: &[Entry], dir_label: &str) -> String {
    let mut s = String::with_capacity(32 * 1024);
    let passed = entries
        .iter()
        .filter(|(_, e)| e.as_ref().is_ok_and(|x| x.passed))
        .count();
    let failed = entries
        .iter()
        .filter(|(_, e)| e.as_ref().is_ok_and(|x| !x.passed))
        .count();
    let broken = entries.len() - passed - failed;
    head(
        &mut s,
        &format!("chaos runs · {passed} passed, {failed} failed"),
    );
    let _ = write!(
        s,
        r#"<header class="page-head"><div class="title-row"><h1>Chaos runs</h1></div><p class="sub"><span class="badge pass">{passed} passed</span> <span class="badge {}">{failed} failed</span>{} · journals in <code>{}</code></p></header>"#,
        if failed > 0 { "fail" } else { "neutral" },
        if broken > 0 {
            format!(r#" <span class="badge neutral">{broken} unreadable</span>"#)
        } else {
            String::new()
        },
        esc(dir_label)
    );
    s.push_str(r#"<section class="panel"><table id="runs"><thead><tr><th>verdict</th><th>experiment</th><th>faults</th><th>recovery vs budget</th><th class="num">error window</th><th class="num">lost writes</th></tr></thead><tbody>"#);
    if entries.is_empty() {
        s.push_str(r#"<tr><td colspan="6" class="muted">No journals yet. Run <code>chaos run</code> or <code>cargo test</code>.</td></tr>"#);
    }
    for (stem, e) in entries {
        let href = url_path(&format!("{stem}.html"));
        match e {
            Ok(x) => {
                let v = if x.passed { "pass" } else { "fail" };
                let budget = x.recover_within_ms as f64;
                let track = x.time_to_recover_ms.unwrap_or(budget).max(budget).max(1.0);
                let fill = x
                    .time_to_recover_ms
                    .map(|t| t / track * 100.0)
                    .unwrap_or(100.0);
                let ok = x.time_to_recover_ms.is_some_and(|t| t <= budget);
                let _ = write!(
                    s,
                    r#"<tr class="run {v}"><td><span class="badge {v}">{}</span></td><td class="name"><a href="{href}"><b>{}</b></a><div class="muted small">{} · {}</div></td><td class="small">{}</td><td class="nowrap"><div class="meter small-meter"><div class="fill {q}" style="width:{fill:.1}%"></div><div class="tick" style="left:{bud:.1}%"></div></div><span class="small">{} / {}</span></td><td class="num">{}</td><td class="num{}">{}</td></tr>"#,
                    v.to_uppercase(),
                    breakable(short_name(&x.test)),
                    esc(&x.file),
                    esc(&utc(x.started_unix_ms)),
                    x.declared
                        .iter()
                        .map(|d| esc(&pretty_fault(d)))
                        .collect::<Vec<_>>()
                        .join("<br>"),
                    x.time_to_recover_ms
                        .map(dur)
                        .unwrap_or_else(|| "never".into()),
                    dur(budget),
                    opt_dur(x.error_window_ms),
                    if x.lost_writes > 0 { " bad" } else { "" },
                    x.lost_writes,
                    q = if ok { "good" } else { "bad" },
                    bud = budget / track * 100.0,
                );
            }
            Err(why) => {
                let _ = write!(
                    s,
                    r#"<tr class="run broken"><td><span class="badge neutral">?</span></td><td class="name"><b>{}</b></td><td colspan="4" class="muted small">unreadable journal: {}</td></tr>"#,
                    esc(stem),
                    esc(&clip(why, 200))
                );
            }
        }
    }
    s.push_str("</tbody></table></section><footer>chaos report · rebuilt after every run and by <code>chaos report</code></footer></body></html>");
    s
}
