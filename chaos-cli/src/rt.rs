//! Everything this crate uses of chaos-runtime, in one place: the progress file's records,
//! the journals and their pages, the host probes, the Docker label. When the runtime's
//! modules move, only this file changes.
pub use chaos_runtime::doctor::probe_all as probe_host;
pub use chaos_runtime::progress::{FILE_ENV as PROGRESS_FILE_ENV, Record, What, phases};
pub use chaos_runtime::reaper::{
    SHARED_ENV as REAPER_ENV, start_shared_blocking as start_suite_reaper,
};
pub use chaos_runtime::report::Summary;
pub use chaos_runtime::report::fmt::civil;
pub use chaos_runtime::slots::prestart;
pub use chaos_runtime::stack::LABEL_MANAGED;
use std::path::{Path, PathBuf};

/// One progress record of a line of the progress file, if it is one.
pub fn parse_progress(line: &str) -> Option<Record> {
    chaos_runtime::progress::parse(line)
}

/// The journals under `<chaos dir>/runs`: (page stem, path).
pub fn journals(dir: &Path) -> Vec<(String, PathBuf)> {
    chaos_runtime::report::journals(dir).unwrap_or_default()
}

/// A journal's summary.
pub fn summary(path: &Path) -> Option<Summary> {
    chaos_runtime::report::read_summary(path).ok()
}

/// The HTML page of the journal named `stem`.
pub fn page_path(dir: &Path, stem: &str) -> PathBuf {
    chaos_runtime::report::page_path(dir, stem)
}

/// Rebuilds the pages and the index; the index's path, or the error with its causes.
pub fn render_all(dir: &Path) -> Result<PathBuf, String> {
    chaos_runtime::report::render_all(dir).map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        msg
    })
}

/// `1.44 s`, `850 ms`: the report's duration format.
pub fn dur(ms: f64) -> String {
    chaos_runtime::report::fmt::dur(ms)
}
