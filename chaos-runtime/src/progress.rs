//! Progress lines for long work (image build, phases of a run).
//!
//! Written straight to the process's stderr, not through `eprintln!`, so the test harness's
//! output capture does not swallow them: a one-minute image build is never silent.
//! `CHAOS_QUIET=1` turns them off.
use std::io::Write;

/// Prints `[chaos <scope>] <msg>` to stderr.
pub fn line(scope: &str, msg: &str) {
    if std::env::var_os("CHAOS_QUIET").is_some_and(|v| v != "0") {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[chaos {scope}] {msg}");
}
