//! The JSON journal of a run: the full timeline under a versioned schema, for reports and tools.
use crate::spec::Spec;
use crate::timeline::Timeline;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Schema version of [`Journal`]; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// What `target/chaos/runs/<test>.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Journal {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The test function.
    pub test: String,
    /// The test's source file.
    pub file: String,
    /// Faults as declared, e.g. `kill postgres for 2000 ms`.
    pub declared: Vec<String>,
    /// The recovery budget, ms.
    pub recover_within_ms: u64,
    /// Whether the budget and ledger held.
    pub passed: bool,
    /// The timeline.
    pub timeline: Timeline,
}

/// `<target dir>/chaos`: CARGO_TARGET_DIR, else the `target` above the test binary.
pub fn chaos_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CHAOS_REPORT_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d).join("chaos");
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test binary>
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(|t| t.join("chaos"))
        .unwrap_or_else(|| std::env::temp_dir().join("chaos"))
}

/// Writes the journal; returns its path (None when it could not be written, which is reported).
pub fn write(spec: &Spec, tl: &Timeline) -> Option<PathBuf> {
    let dir = chaos_dir().join("runs");
    let suffix = std::env::var("CHAOS_OBSERVER")
        .ok()
        .filter(|_| spec.observer.is_none())
        .map(|m| format!(".{m}"))
        .unwrap_or_default();
    let path = dir.join(format!("{}{suffix}.json", spec.fn_name));
    let passed = tl
        .metrics
        .time_to_recover_ms
        .is_some_and(|t| t <= spec.recover_within_ms as f64)
        && tl.lost_writes.is_empty();
    let journal = Journal {
        schema_version: SCHEMA_VERSION,
        test: spec.name.to_string(),
        file: spec.file.to_string(),
        declared: spec
            .faults
            .iter()
            .map(|f| {
                format!(
                    "{} {} after {} ms for {} ms",
                    f.kind, f.target, f.after_ms, f.duration_ms
                )
            })
            .collect(),
        recover_within_ms: spec.recover_within_ms,
        passed,
        timeline: tl.clone(),
    };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&journal).map_err(std::io::Error::other)?,
        )
    };
    match write() {
        Ok(()) => Some(path),
        Err(e) => {
            crate::progress::line(
                "run",
                &format!("could not write the journal {}: {e}", path.display()),
            );
            None
        }
    }
}
