//! Pure helpers of the report: escaping, number formats, scales, buckets, collapsed events.
use crate::observe::Source;
use crate::timeline::{Event, Sample, percentile, source_name};
use std::collections::BTreeMap;

/// Escapes text for HTML/SVG text and attribute values (`& < > " '`).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab/newline are not allowed in XML; drop them.
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// A file name as a relative URL: every byte outside `[A-Za-z0-9._-]` percent-encoded.
pub fn url_path(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Shortens to at most `max` characters, with an ellipsis when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A duration for people: `0.4 ms`, `33 ms`, `1.44 s`, `12.3 s`, `2 min 05 s`.
pub fn dur(ms: f64) -> String {
    if !ms.is_finite() {
        return "—".into();
    }
    let neg = if ms < 0.0 { "−" } else { "" };
    let a = ms.abs();
    let body = if a < 10.0 {
        format!("{a:.1} ms")
    } else if a < 1000.0 {
        format!("{a:.0} ms")
    } else if a < 10_000.0 {
        format!("{} s", trim(format!("{:.2}", a / 1000.0)))
    } else if a < 60_000.0 {
        format!("{} s", trim(format!("{:.1}", a / 1000.0)))
    } else {
        let s = (a / 1000.0).round() as u64;
        format!("{} min {:02} s", s / 60, s % 60)
    };
    format!("{neg}{body}")
}

/// [`dur`] of an optional value, `—` when absent.
pub fn opt_dur(ms: Option<f64>) -> String {
    ms.map(dur).unwrap_or_else(|| "—".into())
}

/// `1.50` -> `1.5`, `2.00` -> `2`.
fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// An SVG coordinate: one decimal, no `-0`, NaN as 0.
pub fn n(x: f64) -> String {
    if !x.is_finite() {
        return "0".into();
    }
    let r = (x * 10.0).round() / 10.0;
    if r == 0.0 {
        "0".into()
    } else {
        trim(format!("{r:.1}"))
    }
}

/// `2026-11-26 04:55:22 UTC` from ms since the Unix epoch.
pub fn utc(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "—".into();
    }
    let (y, m, d, hh, mm, ss) = civil(unix_ms / 1000);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

/// Year, month, day, hour, minute, second (UTC) of seconds since the Unix epoch.
pub fn civil(secs: u64) -> (i64, i64, i64, u64, u64, u64) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A "nice" step (1, 2, 2.5 or 5 times a power of ten) that cuts `span` into about `target` parts.
pub fn nice_step(span: f64, target: usize) -> f64 {
    if !span.is_finite() || span <= 0.0 {
        return 1.0;
    }
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A linear scale from a domain to a range; values outside the domain are clamped to it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Linear {
    /// Domain start.
    pub d0: f64,
    /// Domain end (> d0).
    pub d1: f64,
    /// Range at d0.
    pub r0: f64,
    /// Range at d1.
    pub r1: f64,
}

impl Linear {
    /// A scale; an empty or inverted domain becomes `[d0, d0 + 1]`.
    pub fn new(d0: f64, d1: f64, r0: f64, r1: f64) -> Self {
        let d0 = if d0.is_finite() { d0 } else { 0.0 };
        let d1 = if d1.is_finite() && d1 > d0 {
            d1
        } else {
            d0 + 1.0
        };
        Linear { d0, d1, r0, r1 }
    }

    /// The range position of `v`, clamped to the range.
    pub fn at(&self, v: f64) -> f64 {
        let v = if v.is_finite() {
            v.clamp(self.d0, self.d1)
        } else {
            self.d0
        };
        self.r0 + (v - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)
    }

    /// Tick values at a nice step, about `target` of them, within the domain.
    pub fn ticks(&self, target: usize) -> Vec<f64> {
        let step = nice_step(self.d1 - self.d0, target);
        let mut t = (self.d0 / step).ceil() * step;
        let mut out = Vec::new();
        while t <= self.d1 + step * 1e-9 && out.len() < 1000 {
            out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
            t += step;
        }
        out
    }
}

/// A log10 scale over whole decades; values are clamped into the domain (zero and negatives
/// land on the floor), so a latency of 0 or a timeout far above the rest stays on the chart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Log {
    /// Lowest decade exponent.
    pub e0: i32,
    /// Highest decade exponent (> e0).
    pub e1: i32,
    /// Range at 10^e0.
    pub r0: f64,
    /// Range at 10^e1.
    pub r1: f64,
}

impl Log {
    /// The smallest whole-decade scale holding `[lo, hi]`, at least one decade wide, never below
    /// 10^`floor_exp` (and never above 10^9).
    pub fn covering(lo: f64, hi: f64, floor_exp: i32, r0: f64, r1: f64) -> Self {
        let exp = |v: f64, up: bool| {
            if !v.is_finite() || v <= 0.0 {
                return floor_exp;
            }
            let e = v.log10();
            // A top just past a decade (a 1005 ms timeout) is clamped onto it, not given a decade.
            let slack = 1.25f64.log10();
            (if up && e - e.floor() > slack {
                e.ceil()
            } else {
                e.floor()
            }) as i32
        };
        let e0 = exp(lo, false).clamp(floor_exp, 9);
        let e1 = exp(hi, true).clamp(e0 + 1, 10);
        Log { e0, e1, r0, r1 }
    }

    /// The range position of `v`, clamped.
    pub fn at(&self, v: f64) -> f64 {
        let e = if v.is_finite() && v > 0.0 {
            v.log10()
        } else {
            self.e0 as f64
        };
        let e = e.clamp(self.e0 as f64, self.e1 as f64);
        self.r0 + (e - self.e0 as f64) / (self.e1 - self.e0) as f64 * (self.r1 - self.r0)
    }

    /// The decades, as values.
    pub fn ticks(&self) -> Vec<f64> {
        (self.e0..=self.e1).map(|e| 10f64.powi(e)).collect()
    }
}

/// Requests of one time bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    /// Start, ms since t0.
    pub t0: f64,
    /// Requests that started in it and succeeded.
    pub ok: usize,
    /// Requests that started in it and failed.
    pub failed: usize,
    /// Median latency of its requests, ms.
    pub p50: Option<f64>,
    /// 99th percentile latency of its requests, ms.
    pub p99: Option<f64>,
}

/// The bucket width for a run of `span_ms`: 250 ms, coarser (a nice step) past ~300 buckets.
pub fn bucket_width(span_ms: f64) -> f64 {
    let w = 250.0;
    if span_ms / w <= 300.0 {
        w
    } else {
        nice_step(span_ms, 300).max(w)
    }
}

/// Requests by start time, in buckets of `width` ms covering `[0, end)`; samples outside are
/// put in the first or last bucket.
pub fn buckets(samples: &[Sample], end_ms: f64, width: f64) -> Vec<Bucket> {
    let width = if width.is_finite() && width > 0.0 {
        width
    } else {
        250.0
    };
    let count = ((end_ms / width).ceil().max(1.0) as usize).min(100_000);
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); count];
    let mut out: Vec<Bucket> = (0..count)
        .map(|i| Bucket {
            t0: i as f64 * width,
            ok: 0,
            failed: 0,
            p50: None,
            p99: None,
        })
        .collect();
    for s in samples {
        let i = bucket_index(s.t_ms, width, count);
        if s.ok {
            out[i].ok += 1;
        } else {
            out[i].failed += 1;
        }
        if s.latency_ms.is_finite() {
            lat[i].push(s.latency_ms);
        }
    }
    for (b, l) in out.iter_mut().zip(lat) {
        if !l.is_empty() {
            b.p50 = Some(percentile(l.iter().copied(), 0.5));
            b.p99 = Some(percentile(l.into_iter(), 0.99));
        }
    }
    out
}

/// The bucket of `t`, clamped into `[0, count)`.
pub fn bucket_index(t: f64, width: f64, count: usize) -> usize {
    if !t.is_finite() || t < 0.0 {
        return 0;
    }
    ((t / width) as usize).min(count.saturating_sub(1))
}

/// All events of one (kind, source, container), collapsed into one marker.
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    /// Event kind.
    pub kind: String,
    /// Who saw it.
    pub source: Source,
    /// In which container.
    pub container: Option<String>,
    /// First occurrence, ms.
    pub first_ms: f64,
    /// Last occurrence, ms.
    pub last_ms: f64,
    /// How many.
    pub count: usize,
    /// The first occurrence's details, `k=v` joined by spaces.
    pub detail: String,
    /// Every occurrence's time.
    pub times: Vec<f64>,
}

impl Marker {
    /// `tcp_reset · orders`.
    pub fn title(&self) -> String {
        match &self.container {
            Some(c) => format!("{} · {c}", self.kind),
            None => self.kind.clone(),
        }
    }
}

/// Where a source sorts: what the run did and saw first, then the kernel and cgroup views.
pub fn source_rank(s: Source) -> u8 {
    match s {
        Source::Runtime => 0,
        Source::Workload => 1,
        Source::DockerEvents => 2,
        Source::DockerStats => 3,
        Source::Proxy => 4,
        Source::Service => 5,
        Source::Bpf => 6,
        Source::Cgroup => 7,
        Source::Procfs => 8,
        Source::Kmsg => 9,
    }
}

/// Collapses events by (kind, source, container), ordered by source group then first time.
pub fn collapse(events: &[Event]) -> Vec<Marker> {
    let mut by: BTreeMap<(String, Source, Option<String>), Marker> = BTreeMap::new();
    for e in events {
        let key = (e.kind.clone(), e.source, e.container.clone());
        let m = by.entry(key).or_insert_with(|| Marker {
            kind: e.kind.clone(),
            source: e.source,
            container: e.container.clone(),
            first_ms: e.t_ms,
            last_ms: e.t_ms,
            count: 0,
            detail: e
                .detail
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            times: Vec::new(),
        });
        if e.t_ms < m.first_ms {
            m.first_ms = e.t_ms;
            m.detail = e
                .detail
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
        }
        m.last_ms = m.last_ms.max(e.t_ms);
        m.count += 1;
        m.times.push(e.t_ms);
    }
    let mut out: Vec<Marker> = by.into_values().collect();
    out.sort_by(|a, b| {
        source_rank(a.source)
            .cmp(&source_rank(b.source))
            .then(a.first_ms.total_cmp(&b.first_ms))
            .then(a.kind.cmp(&b.kind))
    });
    out
}

/// The serialized name of a source (`docker_events`), for classes and labels.
pub fn src(s: Source) -> String {
    source_name(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_control_characters() {
        assert_eq!(
            esc(r#"<script>alert("x&y")</script>"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;"
        );
        assert_eq!(esc("it's"), "it&#39;s");
        assert_eq!(esc("a\u{0}b\u{1b}[31m"), "ab[31m");
        assert_eq!(esc("naïve → ok"), "naïve → ok");
        assert_eq!(url_path("a b/c.html"), "a%20b%2Fc.html");
        assert_eq!(url_path("orders_x.fallback.html"), "orders_x.fallback.html");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(dur(0.42), "0.4 ms");
        assert_eq!(dur(32.62), "33 ms");
        assert_eq!(dur(1435.63), "1.44 s");
        assert_eq!(dur(5000.0), "5 s");
        assert_eq!(dur(12_345.0), "12.3 s");
        assert_eq!(dur(125_000.0), "2 min 05 s");
        assert_eq!(dur(-1500.0), "−1.5 s");
        assert_eq!(dur(f64::NAN), "—");
        assert_eq!(opt_dur(None), "—");
        assert_eq!(n(-0.04), "0");
        assert_eq!(n(12.345), "12.3");
        assert_eq!(n(f64::INFINITY), "0");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "—");
        assert_eq!(utc(1_000), "1970-01-01 00:00:01 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_668_922_184), "2026-11-26 04:55:22 UTC");
    }

    #[test]
    fn linear_scale_clamps_and_ticks_nicely() {
        let s = Linear::new(0.0, 9_300.0, 100.0, 1000.0);
        assert_eq!(s.at(0.0), 100.0);
        assert_eq!(s.at(9_300.0), 1000.0);
        assert_eq!(s.at(-50.0), 100.0);
        assert_eq!(s.at(1e9), 1000.0);
        assert_eq!(s.at(f64::NAN), 100.0);
        assert_eq!(s.ticks(8), vec![0.0, 2000.0, 4000.0, 6000.0, 8000.0]);
        assert_eq!(
            s.ticks(10),
            (0..=9).map(|i| i as f64 * 1000.0).collect::<Vec<_>>()
        );
        // An empty domain does not divide by zero.
        let e = Linear::new(5.0, 5.0, 0.0, 10.0);
        assert!(e.at(5.0).is_finite());
        assert_eq!(nice_step(0.0, 5), 1.0);
        assert_eq!(nice_step(100.0, 4), 25.0);
        assert_eq!(nice_step(7.0, 7), 1.0);
    }

    #[test]
    fn log_scale_covers_whole_decades_and_clamps() {
        let s = Log::covering(2.5, 2005.0, -1, 200.0, 0.0);
        assert_eq!((s.e0, s.e1), (0, 4));
        assert_eq!(s.at(1.0), 200.0);
        assert_eq!(s.at(10_000.0), 0.0);
        assert_eq!(s.at(100.0), 100.0);
        assert_eq!(s.at(0.0), 200.0, "zero sits on the floor");
        assert_eq!(s.at(1e12), 0.0, "far above is clamped");
        assert_eq!(s.ticks(), vec![1.0, 10.0, 100.0, 1000.0, 10_000.0]);
        // A 1005 ms timeout is clamped onto the 1 s decade rather than adding one.
        let t = Log::covering(2.5, 1005.0, -1, 200.0, 0.0);
        assert_eq!((t.e0, t.e1), (0, 3));
        assert_eq!(t.at(1005.0), 0.0);
        // Nothing measured: one decade above the floor.
        let e = Log::covering(0.0, 0.0, -1, 1.0, 0.0);
        assert_eq!((e.e0, e.e1), (-1, 0));
        // Everything equal: still a decade wide.
        let one = Log::covering(5.0, 5.0, -1, 1.0, 0.0);
        assert_eq!((one.e0, one.e1), (0, 1));
        let exact = Log::covering(1.0, 100.0, -1, 1.0, 0.0);
        assert_eq!((exact.e0, exact.e1), (0, 2));
    }

    fn sample(t: f64, lat: f64, ok: bool) -> Sample {
        serde_json::from_value(
            serde_json::json!({"t_ms": t, "latency_ms": lat, "ok": ok, "status": 201}),
        )
        .expect("a sample")
    }

    #[test]
    fn buckets_count_and_percentiles() {
        let samples = vec![
            sample(10.0, 2.0, true),
            sample(20.0, 4.0, true),
            sample(260.0, 1000.0, false),
            sample(-3.0, 1.0, true),
            sample(5000.0, 1.0, true),
        ];
        let b = buckets(&samples, 1000.0, 250.0);
        assert_eq!(b.len(), 4);
        assert_eq!(
            (b[0].ok, b[0].failed),
            (3, 0),
            "before t0 lands in the first bucket"
        );
        assert_eq!(b[0].p50, Some(2.0));
        assert_eq!((b[1].ok, b[1].failed, b[1].p99), (0, 1, Some(1000.0)));
        assert_eq!((b[2].ok, b[2].p50), (0, None));
        assert_eq!(b[3].ok, 1, "after the end lands in the last bucket");
        assert_eq!(buckets(&[], 0.0, 250.0).len(), 1);
        assert_eq!(bucket_width(10_000.0), 250.0);
        assert_eq!(bucket_width(600_000.0), 2_000.0);
        assert_eq!(bucket_width(900_000.0), 5_000.0);
    }

    #[test]
    fn collapse_counts_repeats_and_orders_by_source_then_time() {
        let ev = |t: f64, kind: &str, source: Source, c: Option<&str>| Event {
            t_ms: t,
            kind: kind.into(),
            source,
            container: c.map(str::to_string),
            detail: BTreeMap::from([("t".to_string(), format!("{t}"))]),
        };
        let events = vec![
            ev(5.0, "tcp_state", Source::Bpf, Some("nginx")),
            ev(3.0, "tcp_state", Source::Bpf, Some("nginx")),
            ev(9.0, "tcp_state", Source::Bpf, Some("orders")),
            ev(4.0, "fault_injected", Source::Runtime, Some("postgres")),
            ev(6.0, "first_error", Source::Workload, None),
        ];
        let m = collapse(&events);
        let keys: Vec<(String, usize)> = m.iter().map(|m| (m.title(), m.count)).collect();
        assert_eq!(
            keys,
            vec![
                ("fault_injected · postgres".to_string(), 1),
                ("first_error".to_string(), 1),
                ("tcp_state · nginx".to_string(), 2),
                ("tcp_state · orders".to_string(), 1),
            ]
        );
        let nginx = &m[2];
        assert_eq!((nginx.first_ms, nginx.last_ms), (3.0, 5.0));
        assert_eq!(nginx.detail, "t=3", "the detail is the first occurrence's");
        assert!(collapse(&[]).is_empty());
    }
}
