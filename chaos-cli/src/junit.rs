//! The results of a run, and their JUnit XML (one `<testsuite>` per test target, one
//! `<testcase>` per test; a failure carries the test's failure text, which for a broken
//! budget is the runtime's text timeline, and the path of the run's HTML page).
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;

/// One test's result (or a target's, when its build or harness failed before any test).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// The package.
    pub package: String,
    /// The test target (`07_redis_cache_failure`).
    pub experiment: String,
    /// The test, or `(build or harness)` / `(no test ran)`.
    pub test: String,
    /// Passed.
    pub passed: bool,
    /// Wall time from its first phase to its result, seconds.
    pub duration_s: Option<f64>,
    /// `1.44 s / 5 s`, or `—`.
    pub recovery: String,
    /// Lost writes, when a journal says.
    pub lost_writes: Option<usize>,
    /// The run's HTML page.
    pub report: Option<PathBuf>,
    /// The failure text (panic message and timeline, or the end of cargo's output).
    pub failure: Option<String>,
}

/// Escapes text for XML content and attributes, dropping characters XML 1.0 cannot hold
/// (ANSI escapes' ESC and other control characters) and ANSI colour sequences.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI ... final byte: drop the whole sequence.
                if chars.peek() == Some(&'[') {
                    for d in chars.by_ref() {
                        if d.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// The first line of a failure text that says what broke (for the `message` attribute).
pub fn failure_message(text: &str) -> String {
    let pick = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("chaos budget failed") || l.contains("panicked at"))
        .or_else(|| text.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("failed");
    // The line after `panicked at file:line:col:` holds the message.
    if pick.contains("panicked at") {
        let mut it = text.lines().map(str::trim);
        if it.by_ref().any(|l| l == pick)
            && let Some(next) = it.find(|l| !l.is_empty())
        {
            return next.chars().take(300).collect();
        }
    }
    pick.chars().take(300).collect()
}

/// The JUnit XML of a run named `name`; `timestamp` as ISO 8601 (UTC).
pub fn to_xml(name: &str, outcomes: &[Outcome], timestamp: &str) -> String {
    let mut suites: Vec<(&str, &str, Vec<&Outcome>)> = Vec::new();
    for o in outcomes {
        match suites
            .iter_mut()
            .find(|s| s.0 == o.package && s.1 == o.experiment)
        {
            Some(s) => s.2.push(o),
            None => suites.push((&o.package, &o.experiment, vec![o])),
        }
    }
    let time = |v: &[&Outcome]| v.iter().filter_map(|o| o.duration_s).sum::<f64>();
    let failures = |v: &[&Outcome]| v.iter().filter(|o| !o.passed).count();
    let all: Vec<&Outcome> = outcomes.iter().collect();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" time=\"{:.3}\">",
        xml_escape(name),
        all.len(),
        failures(&all),
        time(&all)
    );
    for (package, target, cases) in &suites {
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"0\" time=\"{:.3}\" timestamp=\"{}\">",
            xml_escape(target),
            cases.len(),
            failures(cases),
            time(cases),
            xml_escape(timestamp)
        );
        let _ = writeln!(
            x,
            "    <properties><property name=\"package\" value=\"{}\"/></properties>",
            xml_escape(package)
        );
        for o in cases {
            let _ = write!(
                x,
                "    <testcase name=\"{}\" classname=\"{}::{}\" time=\"{:.3}\"",
                xml_escape(&o.test),
                xml_escape(package),
                xml_escape(target),
                o.duration_s.unwrap_or(0.0)
            );
            let mut out = format!("recovery / budget: {}\n", o.recovery);
            if let Some(n) = o.lost_writes {
                let _ = writeln!(out, "lost writes: {n}");
            }
            if let Some(p) = &o.report {
                let _ = writeln!(out, "report: {}", p.display());
            }
            x.push_str(">\n");
            if !o.passed {
                let text = o.failure.as_deref().unwrap_or("failed (no output)");
                let mut body = text.trim_end().to_string();
                if let Some(p) = &o.report {
                    let _ = write!(body, "\n\nreport: {}", p.display());
                }
                let _ = writeln!(
                    x,
                    "      <failure message=\"{}\" type=\"{}\">{}</failure>",
                    xml_escape(&failure_message(text)),
                    if text.contains("chaos budget failed") {
                        "chaos budget"
                    } else {
                        "test failure"
                    },
                    xml_escape(&body)
                );
            }
            let _ = writeln!(x, "      <system-out>{}</system-out>", xml_escape(&out));
            x.push_str("    </testcase>\n");
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// Now, as `2026-09-22T04:49:00Z`.
pub fn now_iso8601() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d, hh, mm, ss) = crate::rt::civil(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_xml_well_formed() {
        assert_eq!(
            xml_escape("a<b & \"c\" 'd'>"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;"
        );
        assert_eq!(xml_escape("\x1b[31mred\x1b[0m\x07 ok\n"), "red ok\n");
    }

    #[test]
    fn the_message_is_what_broke() {
        let t = "---- x stdout ----\nthread 'x' panicked at tests/a.rs:3:5:\nchaos budget failed for a::x:\n  - never";
        assert_eq!(failure_message(t), "chaos budget failed for a::x:");
        let t = "thread 'x' panicked at tests/a.rs:3:5:\nassertion failed: 1 == 2\n";
        assert_eq!(failure_message(t), "assertion failed: 1 == 2");
    }

    #[test]
    fn timestamps_are_iso8601() {
        let t = now_iso8601();
        assert_eq!(t.len(), 20);
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
