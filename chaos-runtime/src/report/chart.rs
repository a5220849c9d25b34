//! The SVG timeline of one run: requests and latency per time bucket, phases, fault windows,
//! observation markers, the recovery marker and the budget line. Pure: a journal in, text out.
//!
//! Stable hooks for tests and tools: `id="timeline"` (the `<svg>`), `id="fault-window-N"`,
//! `class="series-ok"`, `class="series-failed"`, `class="series-p50"`, `class="series-p99"`,
//! `class="phase-boundary"`, `class="marker"` (with `data-kind`, `data-source`, `data-count`),
//! `id="recovery-marker"` (or `id="no-recovery"`), `id="budget-line"`, `id="verdict"`.
use super::fmt::{
    Linear, Log, Marker, bucket_index, bucket_width, buckets, clip, collapse, dur, esc, n, src,
};
use crate::journal::Journal;
use crate::observe::Source;
use std::fmt::Write as _;

/// Width of the drawing, in SVG units (it scales to the page).
pub const WIDTH: f64 = 1200.0;
const LEFT: f64 = 290.0;
const RIGHT: f64 = 28.0;
const CHART_H: f64 = 132.0;
const GAP: f64 = 26.0;
const ROW_H: f64 = 15.0;
/// Observation rows drawn at most; the rest are in the table below the chart.
pub const MAX_ROWS: usize = 30;
/// Approximate width of one character of 11px text.
const CHAR_W: f64 = 6.1;

/// Colour of the series and markers.
pub mod colour {
    /// Successful requests.
    pub const OK: &str = "#30a46c";
    /// Failed requests.
    pub const FAILED: &str = "#e5484d";
    /// p50 latency.
    pub const P50: &str = "#3e63dd";
    /// p99 latency.
    pub const P99: &str = "#8e4ec6";
    /// Recovery marker.
    pub const RECOVERED: &str = "#18794e";
    /// Budget line.
    pub const BUDGET: &str = "#dc6f14";
    /// Secondary text.
    pub const MUTED: &str = "#60646c";
}

/// The colour of a source's markers.
pub fn source_colour(s: Source) -> &'static str {
    match s {
        Source::Bpf => "#8e4ec6",
        Source::Cgroup => "#12a594",
        Source::Procfs => "#a35829",
        Source::DockerEvents => "#0d74ce",
        Source::DockerStats => "#5eb1ef",
        Source::Kmsg => "#d6409f",
        Source::Runtime => "#1c2024",
        Source::Workload => "#30a46c",
        Source::Proxy => "#dc6f14",
        Source::Service => "#6e56cf",
    }
}

/// The moments the chart marks, derived from the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    /// When the last fault was healed.
    pub heal_ms: Option<f64>,
    /// When the steady state returned.
    pub recovered_ms: Option<f64>,
    /// Heal + the recovery budget.
    pub budget_ms: Option<f64>,
    /// End of the drawn time axis.
    pub end_ms: f64,
}

/// Heal, recovery, budget and the end of the axis.
pub fn moments(j: &Journal) -> Moments {
    let tl = &j.timeline;
    let heal_ms = tl
        .faults
        .iter()
        .filter_map(|f| f.healed_ms)
        .reduce(f64::max)
        .or_else(|| {
            tl.phases
                .iter()
                .find(|p| p.name == "fault")
                .map(|p| p.end_ms)
        });
    let recovered_ms = tl
        .phases
        .iter()
        .find(|p| p.name == "steady")
        .map(|p| p.start_ms)
        .or_else(|| {
            tl.events
                .iter()
                .find(|e| e.kind == "recovered")
                .map(|e| e.t_ms)
        })
        .or_else(|| {
            heal_ms
                .zip(tl.metrics.time_to_recover_ms)
                .map(|(h, t)| h + t)
        });
    let budget = if j.recover_within_ms > 0 {
        j.recover_within_ms as f64
    } else {
        tl.metrics.recover_budget_ms
    };
    let budget_ms = heal_ms.filter(|_| budget > 0.0).map(|h| h + budget);
    let mut end: f64 = 0.0;
    let mut see = |v: f64| {
        if v.is_finite() {
            end = end.max(v);
        }
    };
    tl.phases.iter().for_each(|p| see(p.end_ms));
    tl.samples
        .iter()
        .for_each(|s| see(s.t_ms + s.latency_ms.max(0.0)));
    tl.events.iter().for_each(|e| see(e.t_ms));
    tl.faults.iter().for_each(|f| {
        see(f.injected_ms);
        f.healed_ms.into_iter().for_each(&mut see);
    });
    [heal_ms, recovered_ms, budget_ms]
        .into_iter()
        .flatten()
        .for_each(&mut see);
    let end_ms = if end > 0.0 { end * 1.015 } else { 1000.0 };
    Moments {
        heal_ms,
        recovered_ms,
        budget_ms,
        end_ms,
    }
}

/// Renders the timeline of a run as a standalone `<svg>` element.
pub fn timeline_svg(j: &Journal) -> String {
    let tl = &j.timeline;
    let m = moments(j);
    let x = Linear::new(0.0, m.end_ms, LEFT, WIDTH - RIGHT);
    let bw = bucket_width(m.end_ms);
    let bks = buckets(&tl.samples, m.end_ms, bw);
    let markers = collapse(&tl.events);
    let shown = markers.len().min(MAX_ROWS);
    let more = markers.len() - shown;

    // Vertical layout.
    let fault_rows = tl.faults.len().max(1) as f64;
    let phase_y = 12.0 + fault_rows * 17.0 + 8.0;
    let req_top = phase_y + 12.0;
    let req_bot = req_top + CHART_H;
    let lat_top = req_bot + GAP;
    let lat_bot = lat_top + CHART_H;
    let obs_top = lat_bot + GAP;
    let rows_top = obs_top + 8.0;
    let obs_bot = rows_top + (shown + usize::from(more > 0)).max(1) as f64 * ROW_H + 4.0;
    let axis_y = obs_bot + 4.0;
    let height = axis_y + 40.0;
    let (x0, x1) = (LEFT, WIDTH - RIGHT);

    let mut s = String::with_capacity(64 * 1024);
    let verdict = if j.passed { "pass" } else { "fail" };
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" id="timeline" class="timeline verdict-{verdict}" viewBox="0 0 {w} {h}" role="img" aria-labelledby="timeline-title">"##,
        w = n(WIDTH),
        h = n(height)
    );
    let _ = write!(
        s,
        r##"<title id="timeline-title">Timeline of {}: requests, latency, faults and observations over time</title>"##,
        esc(&tl.name)
    );
    s.push_str(concat!(
        r##"<defs><pattern id="hatch" width="7" height="7" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">"##,
        r##"<rect width="7" height="7" fill="#e5484d" fill-opacity="0.06"/>"##,
        r##"<line x1="0" y1="0" x2="0" y2="7" stroke="#e5484d" stroke-opacity="0.22" stroke-width="2"/></pattern></defs>"##
    ));

    // Verdict, top left.
    let (vcol, vword) = if j.passed {
        (colour::RECOVERED, "PASS")
    } else {
        (colour::FAILED, "FAIL")
    };
    let vline = match (tl.metrics.time_to_recover_ms, m.heal_ms) {
        (Some(t), _) => format!(
            "recovered {} after heal, budget {}",
            dur(t),
            dur(j.recover_within_ms as f64)
        ),
        (None, Some(_)) => format!(
            "never recovered, budget {}",
            dur(j.recover_within_ms as f64)
        ),
        (None, None) => "no fault was healed".to_string(),
    };
    let _ = write!(
        s,
        r##"<g id="verdict" class="verdict verdict-{verdict}"><text x="12" y="24" class="verdict-word" fill="{vcol}">{vword}</text><text x="12" y="40" class="small muted">{}</text></g>"##,
        esc(&vline)
    );

    // Phase bands (behind everything).
    s.push_str(r#"<g class="phase-bands">"#);
    for p in &tl.phases {
        let fill = match p.name.as_str() {
            "warmup" => Some("#f3f3f5"),
            "recovery" => Some("#fff6dc"),
            "steady" => Some("#eef8f1"),
            _ => None,
        };
        if let Some(fill) = fill {
            let (a, b) = (x.at(p.start_ms), x.at(p.end_ms));
            let _ = write!(
                s,
                r##"<rect class="phase-band phase-{cls}" x="{}" y="{}" width="{}" height="{}" fill="{fill}"/>"##,
                n(a),
                n(req_top),
                n((b - a).max(0.0)),
                n(obs_bot - req_top),
                cls = esc(&p.name)
            );
        }
    }
    s.push_str("</g>");

    // Vertical grid at the time ticks.
    let ticks = x.ticks(12);
    s.push_str(r##"<g class="grid" stroke="#e8e9ee" stroke-width="1">"##);
    for t in &ticks {
        let _ = write!(
            s,
            r#"<line x1="{0}" x2="{0}" y1="{1}" y2="{2}"/>"#,
            n(x.at(*t)),
            n(req_top),
            n(lat_bot)
        );
    }
    s.push_str("</g>");

    // Fault windows and their labels.
    for (i, f) in tl.faults.iter().enumerate() {
        let healed = f.healed_ms.unwrap_or(m.end_ms);
        let (a, b) = (x.at(f.injected_ms), x.at(healed));
        let label = format!(
            "{} {} · {}{} · {}",
            f.kind,
            f.target,
            if f.healed_ms.is_some() {
                "held "
            } else {
                "never healed, "
            },
            dur(healed - f.injected_ms),
            f.mechanism
        );
        let ly = 14.0 + i as f64 * 17.0;
        let (lx, anchor, shown) = label_at(a + 2.0, b - 2.0, &label, x0, x1);
        let _ = write!(
            s,
            r##"<g class="fault" data-kind="{k}" data-target="{t}"><rect id="fault-window-{i}" class="fault-window" x="{}" y="{}" width="{}" height="{}" fill="url(#hatch)"/><line x1="{a}" x2="{a}" y1="{ly2}" y2="{yb}" class="fault-edge"/><line x1="{b}" x2="{b}" y1="{ly2}" y2="{yb}" class="fault-edge"/><line x1="{a}" x2="{b}" y1="{ly2}" y2="{ly2}" class="fault-edge"/><text id="fault-label-{i}" class="fault-label" x="{}" y="{}" text-anchor="{anchor}">{}</text><title>{}</title></g>"##,
            n(a),
            n(req_top),
            n((b - a).max(1.5)),
            n(obs_bot - req_top),
            n(lx),
            n(ly),
            esc(&shown),
            esc(&format!(
                "{label}\ninjected at {}, {}",
                dur(f.injected_ms),
                f.healed_ms
                    .map(|h| format!("healed at {}", dur(h)))
                    .unwrap_or_else(|| "never healed".into())
            )),
            k = esc(&f.kind),
            t = esc(&f.target),
            a = n(a),
            b = n(b),
            ly2 = n(ly + 4.0),
            yb = n(req_top),
        );
    }

    // Phase labels and boundaries.
    s.push_str(r#"<g class="phases">"#);
    for (i, p) in tl.phases.iter().enumerate() {
        let (a, b) = (x.at(p.start_ms), x.at(p.end_ms));
        if i > 0 || p.start_ms > 0.0 {
            let _ = write!(
                s,
                r##"<line class="phase-boundary" data-phase="{}" x1="{1}" x2="{1}" y1="{2}" y2="{3}"/>"##,
                esc(&p.name),
                n(a),
                n(phase_y - 9.0),
                n(obs_bot)
            );
        }
        let w = b - a;
        let name = if (p.name.len() as f64) * CHAR_W + 6.0 <= w {
            p.name.clone()
        } else if w >= 14.0 {
            p.name.chars().take(1).collect()
        } else {
            String::new()
        };
        if !name.is_empty() {
            let _ = write!(
                s,
                r##"<text class="phase-label" x="{}" y="{}" text-anchor="middle">{}<title>{} {}–{} ({})</title></text>"##,
                n((a + b) / 2.0),
                n(phase_y),
                esc(&name),
                esc(&p.name),
                dur(p.start_ms),
                dur(p.end_ms),
                dur(p.end_ms - p.start_ms)
            );
        }
    }
    s.push_str("</g>");

    requests_chart(&mut s, &bks, bw, &x, req_top, req_bot);
    latency_chart(&mut s, j, &bks, bw, &x, lat_top, lat_bot);
    observations(
        &mut s,
        &markers[..shown],
        more,
        &x,
        bw,
        &bks,
        obs_top,
        rows_top,
    );

    // Recovery marker and budget line, over everything.
    let rec_y = req_top + 12.0;
    let bud_y = req_top + 26.0;
    if let Some(r) = m.recovered_ms {
        let rx = x.at(r);
        let after = tl
            .metrics
            .time_to_recover_ms
            .map(|t| format!(" {} after heal", dur(t)))
            .unwrap_or_default();
        let label = format!("recovered{after}");
        let (lx, anchor) = side_label(rx, &label, x0, x1, true);
        let _ = write!(
            s,
            r##"<g id="recovery-marker" class="recovery-marker"><line x1="{0}" x2="{0}" y1="{1}" y2="{2}" stroke="{c}" stroke-width="2"/><text class="mark-label halo" x="{3}" y="{4}" text-anchor="{anchor}" fill="{c}">{5}</text><title>steady state back at {6}</title></g>"##,
            n(rx),
            n(req_top - 4.0),
            n(obs_bot),
            n(lx),
            n(rec_y),
            esc(&label),
            dur(r),
            c = colour::RECOVERED
        );
    } else if let Some(h) = m.heal_ms {
        let label = "did not recover";
        let at = x.at(m.budget_ms.unwrap_or(h));
        let (lx, anchor) = side_label(at, label, x0, x1, false);
        let _ = write!(
            s,
            r##"<text id="no-recovery" class="mark-label halo" x="{}" y="{}" text-anchor="{anchor}" fill="{}">{label}</text>"##,
            n(lx),
            n(rec_y),
            colour::FAILED
        );
    }
    if let Some(bx) = m.budget_ms {
        let px = x.at(bx);
        let label = format!("budget: heal + {}", dur(j.recover_within_ms as f64));
        let (lx, anchor) = side_label(px, &label, x0, x1, false);
        let _ = write!(
            s,
            r##"<g class="budget"><line id="budget-line" class="budget-line" x1="{0}" x2="{0}" y1="{1}" y2="{2}" stroke="{c}" stroke-width="2" stroke-dasharray="6 4"/><text class="mark-label halo" x="{3}" y="{4}" text-anchor="{anchor}" fill="{c}">{5}</text><title>recovery budget ends at {6}</title></g>"##,
            n(px),
            n(req_top - 4.0),
            n(obs_bot),
            n(lx),
            n(bud_y),
            esc(&label),
            dur(bx),
            c = colour::BUDGET
        );
    }

    // Time axis.
    let _ = write!(
        s,
        r##"<g class="axis x-axis"><line x1="{}" x2="{}" y1="{2}" y2="{2}" stroke="#b9bbc6"/>"##,
        n(x0),
        n(x1),
        n(axis_y)
    );
    for t in &ticks {
        let _ = write!(
            s,
            r##"<line x1="{0}" x2="{0}" y1="{1}" y2="{2}" stroke="#b9bbc6"/><text x="{0}" y="{3}" text-anchor="middle" class="tick">{4}</text>"##,
            n(x.at(*t)),
            n(axis_y),
            n(axis_y + 5.0),
            n(axis_y + 17.0),
            esc(&seconds(*t))
        );
    }
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" text-anchor="end" class="small muted">time since the run started · buckets of {}</text></g>"##,
        n(x1),
        n(axis_y + 33.0),
        dur(bw)
    );
    s.push_str("</svg>");
    s
}

/// `0 s`, `2.5 s`, `1 min 30 s`.
fn seconds(ms: f64) -> String {
    let sec = ms / 1000.0;
    if sec >= 60.0 && (sec % 60.0).abs() < 1e-6 {
        format!("{:.0} min", sec / 60.0)
    } else if sec >= 60.0 {
        format!("{:.0} min {:.0} s", (sec / 60.0).floor(), sec % 60.0)
    } else if (sec - sec.round()).abs() < 1e-6 {
        format!("{sec:.0} s")
    } else {
        format!("{sec:.1} s")
    }
}

/// Where a label starting at `a` goes: left-anchored at `a` when it fits before `right_edge`,
/// else right-anchored at `b`.
/// Where a label of the span `[a, b]` goes, and the text cut to the room it has: left-anchored
/// at `a` when it fits before `right_edge`, else right-anchored at `b` when it fits after
/// `left_edge`, else on the roomier side, cut.
fn label_at(
    a: f64,
    b: f64,
    text: &str,
    left_edge: f64,
    right_edge: f64,
) -> (f64, &'static str, String) {
    let fault_w = 6.3; // the fault label's font is larger than the body's
    let w = text.chars().count() as f64 * fault_w;
    let b = b.max(a);
    if a + w <= right_edge {
        return (a, "start", text.to_string());
    }
    if b - w >= left_edge {
        return (b, "end", text.to_string());
    }
    let (right_room, left_room) = (right_edge - a, b - left_edge);
    let fit = |room: f64| ((room / fault_w).floor() as usize).max(8);
    if right_room >= left_room {
        (a, "start", clip(text, fit(right_room)))
    } else {
        (b, "end", clip(text, fit(left_room)))
    }
}

/// A label beside a vertical line at `at`: on the preferred side when it fits in the plot.
fn side_label(at: f64, text: &str, x0: f64, x1: f64, prefer_left: bool) -> (f64, &'static str) {
    let w = text.chars().count() as f64 * CHAR_W + 6.0;
    let left_fits = at - w >= x0;
    let right_fits = at + w <= x1;
    if (prefer_left && left_fits) || !right_fits {
        (at - 5.0, "end")
    } else {
        (at + 5.0, "start")
    }
}

fn gutter_title(s: &mut String, top: f64, title: &str, sub: &str) {
    let _ = write!(
        s,
        r##"<text x="12" y="{}" class="section-title">{}</text><text x="12" y="{}" class="small muted">{}</text>"##,
        n(top + 12.0),
        esc(title),
        n(top + 27.0),
        esc(sub)
    );
}

fn legend_item(s: &mut String, x: f64, y: f64, colour: &str, label: &str, line: bool) {
    if line {
        let _ = write!(
            s,
            r##"<line x1="{}" x2="{}" y1="{2}" y2="{2}" stroke="{colour}" stroke-width="2.5"/>"##,
            n(x),
            n(x + 14.0),
            n(y - 4.0)
        );
    } else {
        let _ = write!(
            s,
            r##"<rect x="{}" y="{}" width="11" height="11" rx="2" fill="{colour}"/>"##,
            n(x),
            n(y - 10.0)
        );
    }
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" class="small">{}</text>"##,
        n(x + 18.0),
        n(y),
        esc(label)
    );
}

fn requests_chart(
    s: &mut String,
    bks: &[super::fmt::Bucket],
    bw: f64,
    x: &Linear,
    top: f64,
    bot: f64,
) {
    let max = bks.iter().map(|b| b.ok + b.failed).max().unwrap_or(0);
    let step = super::fmt::nice_step(max.max(1) as f64, 4).max(1.0);
    let ymax = ((max.max(1) as f64) / step).ceil() * step;
    let y = Linear::new(0.0, ymax, bot, top + 4.0);
    gutter_title(
        s,
        top,
        "Requests",
        &format!("started per {}, by outcome", dur(bw)),
    );
    legend_item(s, 12.0, top + 48.0, colour::OK, "ok", false);
    legend_item(s, 60.0, top + 48.0, colour::FAILED, "failed", false);
    s.push_str(r##"<g class="y-axis">"##);
    for t in y.ticks(4) {
        let _ = write!(
            s,
            r##"<line x1="{}" x2="{}" y1="{2}" y2="{2}" stroke="{3}"/><text x="{4}" y="{5}" text-anchor="end" class="tick">{6}</text>"##,
            n(x.r0),
            n(x.r1),
            n(y.at(t)),
            if t == 0.0 { "#b9bbc6" } else { "#e8e9ee" },
            n(x.r0 - 8.0),
            n(y.at(t) + 4.0),
            t
        );
    }
    s.push_str("</g>");
    if bks.iter().all(|b| b.ok + b.failed == 0) {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" class="muted empty">no requests were recorded</text>"##,
            n((x.r0 + x.r1) / 2.0),
            n((top + bot) / 2.0)
        );
    }
    let mut ok = String::new();
    let mut failed = String::new();
    for b in bks {
        let (a, e) = (x.at(b.t0), x.at(b.t0 + bw));
        let w = (e - a - 1.0).max(0.8);
        let title = format!(
            "{}–{}: {} ok, {} failed",
            seconds(b.t0),
            seconds(b.t0 + bw),
            b.ok,
            b.failed
        );
        if b.ok > 0 {
            let _ = write!(
                ok,
                r#"<rect x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>"#,
                n(a + 0.5),
                n(y.at(b.ok as f64)),
                n(w),
                n(bot - y.at(b.ok as f64)),
                esc(&title)
            );
        }
        if b.failed > 0 {
            let _ = write!(
                failed,
                r#"<rect x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>"#,
                n(a + 0.5),
                n(y.at((b.ok + b.failed) as f64)),
                n(w),
                n(y.at(b.ok as f64) - y.at((b.ok + b.failed) as f64)),
                esc(&title)
            );
        }
    }
    let _ = write!(
        s,
        r##"<g class="series-ok" fill="{}">{ok}</g>"##,
        colour::OK
    );
    let _ = write!(
        s,
        r##"<g class="series-failed" fill="{}">{failed}</g>"##,
        colour::FAILED
    );
}

fn latency_chart(
    s: &mut String,
    j: &Journal,
    bks: &[super::fmt::Bucket],
    bw: f64,
    x: &Linear,
    top: f64,
    bot: f64,
) {
    let lo = bks
        .iter()
        .filter_map(|b| b.p50)
        .fold(f64::INFINITY, f64::min);
    let mut hi = bks.iter().filter_map(|b| b.p99).fold(0.0, f64::max);
    let limit = j
        .timeline
        .hypothesis
        .max_p99_ms
        .filter(|v| v.is_finite() && *v > 0.0);
    if let Some(l) = limit {
        hi = hi.max(l);
    }
    let y = Log::covering(
        if lo.is_finite() { lo } else { 1.0 },
        hi,
        -1,
        bot,
        top + 4.0,
    );
    gutter_title(s, top, "Latency", &format!("per {}, log scale", dur(bw)));
    legend_item(s, 12.0, top + 48.0, colour::P50, "p50", true);
    legend_item(s, 60.0, top + 48.0, colour::P99, "p99", true);
    s.push_str(r##"<g class="y-axis">"##);
    for t in y.ticks() {
        let _ = write!(
            s,
            r##"<line x1="{}" x2="{}" y1="{2}" y2="{2}" stroke="{3}"/><text x="{4}" y="{5}" text-anchor="end" class="tick">{6}</text>"##,
            n(x.r0),
            n(x.r1),
            n(y.at(t)),
            if t == y.ticks()[0] {
                "#b9bbc6"
            } else {
                "#e8e9ee"
            },
            n(x.r0 - 8.0),
            n(y.at(t) + 4.0),
            esc(&dur(t).replace(".0 ms", " ms"))
        );
    }
    s.push_str("</g>");
    if let Some(l) = limit {
        let _ = write!(
            s,
            r##"<g class="p99-limit"><line x1="{}" x2="{}" y1="{2}" y2="{2}" stroke="#80838d" stroke-dasharray="2 3"/><text x="{3}" y="{4}" text-anchor="end" class="small muted halo">steady-state p99 limit {5}</text></g>"##,
            n(x.r0),
            n(x.r1),
            n(y.at(l)),
            n(x.r1 - 4.0),
            n(y.at(l) - 5.0),
            esc(&dur(l))
        );
    }
    if bks.iter().all(|b| b.p50.is_none()) {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" class="muted empty">no latencies were recorded</text>"##,
            n((x.r0 + x.r1) / 2.0),
            n((top + bot) / 2.0)
        );
    }
    for (cls, col, pick) in [
        (
            "series-p99",
            colour::P99,
            (|b: &super::fmt::Bucket| b.p99) as fn(&super::fmt::Bucket) -> Option<f64>,
        ),
        ("series-p50", colour::P50, |b: &super::fmt::Bucket| b.p50),
    ] {
        let mut d = String::new();
        let mut dots = String::new();
        let mut pen_down = false;
        for b in bks {
            match pick(b) {
                Some(v) => {
                    let (px, py) = (x.at(b.t0 + bw / 2.0), y.at(v));
                    let _ = write!(
                        d,
                        "{}{},{} ",
                        if pen_down { "L" } else { "M" },
                        n(px),
                        n(py)
                    );
                    let _ = write!(
                        dots,
                        r#"<circle cx="{}" cy="{}" r="2"><title>{}–{}: {} {}</title></circle>"#,
                        n(px),
                        n(py),
                        seconds(b.t0),
                        seconds(b.t0 + bw),
                        &cls[7..],
                        esc(&dur(v))
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let _ = write!(
            s,
            r##"<g class="{cls}"><path d="{}" fill="none" stroke="{col}" stroke-width="1.8" stroke-linejoin="round"/><g fill="{col}">{dots}</g></g>"##,
            d.trim_end()
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn observations(
    s: &mut String,
    markers: &[Marker],
    more: usize,
    x: &Linear,
    bw: f64,
    bks: &[super::fmt::Bucket],
    top: f64,
    rows_top: f64,
) {
    let _ = write!(
        s,
        r##"<text x="12" y="{}" class="section-title">Observations</text><text x="122" y="{0}" class="small muted">by source; repeats collapsed (×count)</text>"##,
        n(top + 2.0)
    );
    let count = bks.len().max(1);
    for (i, m) in markers.iter().enumerate() {
        let ry = rows_top + i as f64 * ROW_H;
        let yc = ry + ROW_H / 2.0;
        let col = source_colour(m.source);
        let srcname = src(m.source);
        if i.is_multiple_of(2) {
            let _ = write!(
                s,
                r##"<rect x="8" y="{}" width="{}" height="{}" fill="#f7f7f9" class="row-band"/>"##,
                n(ry),
                n(WIDTH - RIGHT - 8.0),
                n(ROW_H)
            );
        }
        let _ = write!(
            s,
            r##"<g class="marker source-{sc}" id="marker-{i}" data-kind="{k}" data-source="{sc}" data-container="{c}" data-count="{cnt}"><title>{title}</title><text x="12" y="{ty}" class="src" fill="{col}">{sc}</text><text x="{lx}" y="{ty}" text-anchor="end" class="row-label">{label}{count}</text>"##,
            sc = esc(&srcname),
            k = esc(&m.kind),
            c = esc(m.container.as_deref().unwrap_or("")),
            cnt = m.count,
            title = esc(&format!(
                "{} seen by {} ×{} from {} to {}{}",
                m.title(),
                srcname,
                m.count,
                dur(m.first_ms),
                dur(m.last_ms),
                if m.detail.is_empty() {
                    String::new()
                } else {
                    format!("\nfirst: {}", m.detail)
                }
            )),
            ty = n(yc + 4.0),
            lx = n(x.r0 - 8.0),
            label = esc(&clip(&m.title(), if m.count > 1 { 26 } else { 32 })),
            count = if m.count > 1 {
                format!(r#"<tspan class="count"> ×{}</tspan>"#, m.count)
            } else {
                String::new()
            },
        );
        if m.count > 1 {
            let mut per = vec![0usize; count];
            for t in &m.times {
                per[bucket_index(*t, bw, count)] += 1;
            }
            let peak = per.iter().copied().max().unwrap_or(1).max(1) as f64;
            for (b, c) in per.iter().enumerate().filter(|(_, c)| **c > 0) {
                let a = x.at(b as f64 * bw);
                let e = x.at((b + 1) as f64 * bw);
                let op = 0.22 + 0.7 * ((1.0 + *c as f64).ln() / (1.0 + peak).ln());
                let _ = write!(
                    s,
                    r##"<rect x="{}" y="{}" width="{}" height="8" rx="1" fill="{col}" fill-opacity="{:.2}"/>"##,
                    n(a + 0.5),
                    n(yc - 4.0),
                    n((e - a - 1.0).max(0.8)),
                    op
                );
            }
        }
        let mx = x.at(m.first_ms);
        let _ = write!(
            s,
            r##"<path class="diamond" d="M{0},{1} L{2},{3} L{0},{4} L{5},{3} Z" fill="{col}" stroke="#fff" stroke-width="1"/>"##,
            n(mx),
            n(yc - 5.5),
            n(mx + 5.5),
            n(yc),
            n(yc + 5.5),
            n(mx - 5.5)
        );
        let note = if m.count > 1 {
            String::new()
        } else {
            clip(&m.detail, 48)
        };
        if !note.is_empty() {
            let w = note.chars().count() as f64 * 5.6;
            let (nx, anchor) = if mx + 9.0 + w <= x.r1 {
                (mx + 9.0, "start")
            } else {
                (mx - 9.0, "end")
            };
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" text-anchor="{anchor}" class="note halo">{}</text>"##,
                n(nx),
                n(yc + 3.5),
                esc(&note)
            );
        }
        s.push_str("</g>");
    }
    if more > 0 {
        let ry = rows_top + markers.len() as f64 * ROW_H;
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end" class="small muted">+{more} more kinds in the table below</text>"##,
            n(x.r0 - 8.0),
            n(ry + 12.0)
        );
    }
    if markers.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" class="muted empty">nothing was observed</text>"##,
            n((x.r0 + x.r1) / 2.0),
            n(rows_top + 10.0)
        );
    }
}
