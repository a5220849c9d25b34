//! The live display on stderr, with indicatif: the suite's overall bar (tests done, ETA from
//! earlier runs' journals), and for each running test a line with one bar per phase reached.
//! Plain lines instead when stderr is not a terminal, `CI` is set or `TERM=dumb` (and
//! with `--verbose`, which streams the tests' own output).
use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

/// Whether a live display fits: stderr is a terminal, `CI` is unset (or empty / `false` /
/// `0`) and `TERM` is not `dumb`.
pub fn live_wanted() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
    std::io::stderr().is_terminal()
        && !ci
        && std::env::var("TERM").map(|t| t != "dumb").unwrap_or(true)
}

/// What a phase is called on screen.
pub fn phase_label(p: &str) -> &str {
    use crate::rt::phases;
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

/// `1m 05s`, `42s`.
pub fn eta(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

struct TestBars {
    header: ProgressBar,
    phases: Vec<(String, ProgressBar)>,
}

/// The display.
pub struct Ui {
    live: bool,
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    status: Option<ProgressBar>,
    tests: BTreeMap<String, TestBars>,
}

/// A bar that draws nowhere until a [`MultiProgress`] adopts it. A bar made with
/// `ProgressBar::new` draws to stderr by itself, so a `set_prefix` or `set_message` before
/// `add`/`insert_*` writes a line the multi-bar does not know about, and its next redraw
/// moves the cursor up one line too few: a stale copy of the top bar stays in the scrollback.
fn unattached(len: Option<u64>) -> ProgressBar {
    ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden())
}

fn spinner_style(t: &str) -> ProgressStyle {
    ProgressStyle::with_template(t)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏✔")
}

impl Ui {
    /// Live when [`live_wanted`] and not `verbose`.
    pub fn new(verbose: bool) -> Self {
        let live = !verbose && live_wanted();
        let target = if live {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        Ui {
            live,
            multi: MultiProgress::with_draw_target(target),
            overall: None,
            status: None,
            tests: BTreeMap::new(),
        }
    }

    /// Whether the display redraws in place.
    pub fn live(&self) -> bool {
        self.live
    }

    /// A line above the bars (or just a line).
    pub fn line(&self, s: &str) {
        if self.live {
            let _ = self.multi.println(s);
        } else {
            eprintln!("{s}");
        }
    }

    /// The status line under the bars: what cargo or the runtime is doing.
    pub fn status(&mut self, msg: &str) {
        if !self.live {
            return;
        }
        let bar = self.status.get_or_insert_with(|| {
            let b = self.multi.add(unattached(None));
            b.set_style(spinner_style("{spinner:.yellow} {wide_msg:.dim}"));
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        bar.set_message(msg.to_string());
    }

    /// Hides the status line.
    pub fn clear_status(&mut self) {
        if let Some(b) = self.status.take() {
            b.finish_and_clear();
        }
    }

    /// Starts the suite's bar: `tests` tests expected.
    pub fn start_suite(&mut self, tests: u64) {
        if !self.live {
            return;
        }
        let b = unattached(Some(tests.max(1)));
        b.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} tests · {elapsed} · {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▓░"),
        );
        b.set_prefix("suite");
        let b = match &self.status {
            Some(s) => self.multi.insert_before(s, b),
            None => self.multi.add(b),
        };
        b.enable_steady_tick(Duration::from_millis(250));
        self.overall = Some(b);
    }

    /// Updates the suite's bar: tests done, and the estimated time left (None: unknown).
    pub fn suite_progress(&self, done: u64, left_s: Option<f64>, what: &str) {
        if let Some(b) = &self.overall {
            b.set_position(done);
            b.set_message(match left_s {
                Some(s) => format!("ETA {} · {what}", eta(s)),
                None => what.to_string(),
            });
        }
    }

    /// A test reached a phase (the first record of a test starts its lines).
    pub fn phase(&mut self, test: &str, phase: &str, detail: &str) {
        if !self.live {
            return;
        }
        if !self.tests.contains_key(test) {
            let header = unattached(None);
            header.set_style(spinner_style(
                "{spinner:.yellow} {elapsed:>3.dim} {prefix:.bold} {wide_msg}",
            ));
            header.set_prefix(test.to_string());
            let header = match &self.overall {
                Some(o) => self.multi.insert_after(o, header),
                None => self.multi.add(header),
            };
            header.enable_steady_tick(Duration::from_millis(100));
            self.tests.insert(
                test.to_string(),
                TestBars {
                    header,
                    phases: Vec::new(),
                },
            );
        }
        let Some(t) = self.tests.get_mut(test) else {
            return;
        };
        if let Some((name, prev)) = t.phases.last() {
            let took = prev.elapsed().as_secs_f64();
            prev.set_style(spinner_style("    {msg}"));
            prev.finish_with_message(format!(
                "{} {:<15} {}",
                style("✔").green(),
                phase_label(name),
                style(format!("{took:.1}s")).dim()
            ));
        }
        let after = t
            .phases
            .last()
            .map(|p| p.1.clone())
            .unwrap_or_else(|| t.header.clone());
        let bar = unattached(None);
        let last = phase == crate::rt::phases::VERDICT;
        bar.set_style(spinner_style(if last {
            "    {msg}"
        } else {
            "    {spinner:.yellow} {elapsed:>3.dim} {wide_msg}"
        }));
        let label = format!("{:<15}", phase_label(phase));
        let msg = if detail.is_empty() {
            label
        } else {
            format!("{label} {}", style(detail).dim())
        };
        let bar = self.multi.insert_after(&after, bar);
        if last {
            bar.finish_with_message(msg);
        } else {
            bar.set_message(msg);
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        t.header
            .set_message(style(phase_label(phase)).yellow().to_string());
        t.phases.push((phase.to_string(), bar));
    }

    /// A test finished: its lines go, `summary` is printed in their place.
    pub fn test_done(&mut self, test: &str, summary: &str) {
        if let Some(t) = self.tests.remove(test) {
            for (_, b) in t.phases {
                b.finish_and_clear();
            }
            t.header.finish_and_clear();
        }
        self.line(summary);
    }

    /// Removes every bar (before the summary).
    pub fn finish(&mut self) {
        let names: Vec<String> = self.tests.keys().cloned().collect();
        for n in names {
            if let Some(t) = self.tests.remove(&n) {
                for (_, b) in t.phases {
                    b.finish_and_clear();
                }
                t.header.finish_and_clear();
            }
        }
        self.clear_status();
        if let Some(o) = self.overall.take() {
            o.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_reads_as_minutes_and_seconds() {
        assert_eq!(eta(42.4), "42s");
        assert_eq!(eta(65.0), "1m 05s");
        assert_eq!(eta(-3.0), "0s");
    }

    #[test]
    fn a_hidden_display_takes_every_call() {
        let mut ui = Ui::new(true);
        assert!(!ui.live());
        ui.start_suite(3);
        ui.status("compiling");
        ui.phase("07_x::t", "baseline", "");
        ui.suite_progress(1, Some(10.0), "07_x");
        ui.test_done("07_x::t", "done");
        ui.finish();
    }
}
