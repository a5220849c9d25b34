//! Progress of long work (image build, phases of a run), for people and for tools.
//!
//! [`line()`] writes `[chaos <scope>] <msg>` straight to the process's stderr, not through
//! `eprintln!`, so the test harness's output capture does not swallow it: a one-minute image
//! build is never silent. `CHAOS_QUIET=1` turns these lines off.
//!
//! When `CHAOS_PROGRESS_FILE` names a file, every [`line()`] and every [`phase`] is also appended
//! to it as one JSON object per line (the `chaos` command tails it to draw its progress display):
//!
//! ```json
//! {"t_unix_ms":1795668922184,"pid":4242,"type":"line","scope":"stack","msg":"..."}
//! {"t_unix_ms":1795668928001,"pid":4242,"type":"phase","test":"01_x::orders_survive","phase":"fault_injected","detail":"kill postgres"}
//! ```
//!
//! Each record is written with a single `write(2)` on a file opened with `O_APPEND`, so records
//! of tests running in parallel (threads or processes) never interleave. Writing is best
//! effort: a progress file that cannot be written never fails a test.
use serde::{Deserialize, Serialize};
use std::io::Write;

/// The environment variable naming the JSON-lines progress file.
pub const FILE_ENV: &str = "CHAOS_PROGRESS_FILE";

/// Phases of one run, in the order [`phase`] reports them.
pub mod phases {
    /// The stack's containers are being started.
    pub const STACK_STARTING: &str = "stack_starting";
    /// The stack is up; waiting for the steady state to hold for a baseline window.
    pub const BASELINE: &str = "baseline";
    /// The baseline held; the faults are being injected and held.
    pub const FAULT_INJECTED: &str = "fault_injected";
    /// The faults were healed; waiting for the steady state to return.
    pub const HEALED: &str = "healed";
    /// The steady state returned (detail: time after heal) or did not (detail starts with `never`).
    pub const RECOVERED: &str = "recovered";
    /// The verdict of the budgets and the body: detail `pass` or `fail`, then what.
    pub const VERDICT: &str = "verdict";
    /// All of them, in order.
    pub const ALL: &[&str] = &[
        STACK_STARTING,
        BASELINE,
        FAULT_INJECTED,
        HEALED,
        RECOVERED,
        VERDICT,
    ];
}

/// One record of the progress file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Wall clock, ms since the Unix epoch.
    pub t_unix_ms: u64,
    /// The writing process.
    pub pid: u32,
    /// What it is.
    #[serde(flatten)]
    pub what: What,
}

/// The payload of a [`Record`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum What {
    /// A human progress line, as [`line()`] printed it.
    Line {
        /// `run`, `stack`, `image`, `observe`, ...
        scope: String,
        /// The message.
        msg: String,
    },
    /// A run reached a phase (see [`phases`]).
    Phase {
        /// The test (`module::fn`).
        test: String,
        /// One of [`phases::ALL`].
        phase: String,
        /// What about it (faults, times, verdict).
        detail: String,
    },
}

/// Prints `[chaos <scope>] <msg>` to stderr (unless `CHAOS_QUIET`), and records it in the
/// progress file when there is one.
pub fn line(scope: &str, msg: &str) {
    append(What::Line {
        scope: scope.to_string(),
        msg: msg.to_string(),
    });
    if std::env::var_os("CHAOS_QUIET").is_some_and(|v| v != "0") {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[chaos {scope}] {msg}");
}

/// Records that `test` reached `phase` (one of [`phases::ALL`]) in the progress file, if any.
/// Prints nothing: the human-readable line is [`line()`]'s job.
pub fn phase(test: &str, phase: &str, detail: &str) {
    append(What::Phase {
        test: test.to_string(),
        phase: phase.to_string(),
        detail: detail.to_string(),
    });
}

fn append(what: What) {
    let Some(path) = std::env::var_os(FILE_ENV).filter(|p| !p.is_empty()) else {
        return;
    };
    let t_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let record = Record {
        t_unix_ms,
        pid: std::process::id(),
        what,
    };
    let Ok(mut bytes) = serde_json::to_vec(&record) else {
        return;
    };
    bytes.push(b'\n');
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write of the whole record: O_APPEND keeps concurrent writers' records whole.
        let _ = f.write_all(&bytes);
    }
}

/// Parses one line of a progress file; `None` for a partial or foreign line.
pub fn parse(line: &str) -> Option<Record> {
    serde_json::from_str(line.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_as_one_json_object_per_line() {
        let r = Record {
            t_unix_ms: 5,
            pid: 7,
            what: What::Phase {
                test: "a::b".into(),
                phase: phases::HEALED.into(),
                detail: "x \"y\"\n".into(),
            },
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(!s.contains('\n'));
        assert!(s.contains(r#""type":"phase""#), "{s}");
        assert_eq!(parse(&s), Some(r));
        let l = r#"{"t_unix_ms":1,"pid":2,"type":"line","scope":"stack","msg":"up"}"#;
        assert_eq!(
            parse(l).unwrap().what,
            What::Line {
                scope: "stack".into(),
                msg: "up".into()
            }
        );
        assert_eq!(parse(r#"{"t_unix_ms":1,"pi"#), None);
    }
}
