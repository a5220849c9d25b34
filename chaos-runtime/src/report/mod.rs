//! Reports a person can look at: one self-contained HTML page per run and an index over all runs.
//!
//! Built from the JSON journals (`<chaos dir>/runs/<test>.json`, see [`crate::journal`]):
//! `<chaos dir>/<test>.html` per run and `<chaos dir>/index.html`, rewritten each time.
//! A page holds an SVG timeline (requests and latency per time bucket, the fault windows,
//! the phases, the observations with the source that saw them, the recovery marker and the
//! budget line), the verdict, and the numbers. Pages are self-contained: inline CSS and SVG,
//! no script, no fetch; they open from disk, from a CI artifact or in a mail.
//!
//! After every run the runtime calls [`after_run`], which renders that run's page and the
//! index (cheap: the other journals are only skimmed for their summary). [`render_all`]
//! rebuilds every page; `chaos report` calls it.
use crate::journal::{Journal, SCHEMA_VERSION};
use crate::timeline::Metrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub mod chart;
pub mod fmt;
pub mod page;

pub use chart::timeline_svg;
pub use page::{index_page, run_page};

/// Why a report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Reading or writing a file failed.
    #[error("{call} failed")]
    Io {
        /// The call and its path (`write target/chaos/index.html`).
        call: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A journal is not valid JSON of the journal schema.
    #[error("{} is not a readable journal", path.display())]
    Journal {
        /// The journal.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A journal written by a newer runtime.
    #[error("{} has journal schema v{found}, this report reads v{SCHEMA_VERSION}. Fix: rerun the experiment, or update chaos-runtime", path.display())]
    Schema {
        /// The journal.
        path: PathBuf,
        /// Its `schema_version`.
        found: u32,
    },
}

fn io(call: impl Into<String>) -> impl FnOnce(std::io::Error) -> ReportError {
    let call = call.into();
    move |source| ReportError::Io { call, source }
}

/// One row of the index: the page name and the run's summary, or why its journal is unreadable.
pub type Entry = (String, Result<Summary, String>);

/// What the index shows of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `module::test_fn`.
    pub test: String,
    /// The test's file.
    pub file: String,
    /// Faults as declared.
    pub declared: Vec<String>,
    /// The budget, ms.
    pub recover_within_ms: u64,
    /// The verdict.
    pub passed: bool,
    /// Heal to steady state, ms.
    pub time_to_recover_ms: Option<f64>,
    /// First to last failed request, ms.
    pub error_window_ms: Option<f64>,
    /// Acknowledged writes not found afterwards.
    pub lost_writes: usize,
    /// Wall-clock start, ms since the Unix epoch.
    pub started_unix_ms: u64,
}

impl From<&Journal> for Summary {
    fn from(j: &Journal) -> Self {
        Summary {
            test: j.test.clone(),
            file: j.file.clone(),
            declared: j.declared.clone(),
            recover_within_ms: j.recover_within_ms,
            passed: j.passed,
            time_to_recover_ms: j.timeline.metrics.time_to_recover_ms,
            error_window_ms: j.timeline.metrics.error_window_ms,
            lost_writes: j.timeline.lost_writes.len(),
            started_unix_ms: j.timeline.started_unix_ms,
        }
    }
}

/// The part of a journal the index needs; samples and events are skipped, not built.
#[derive(Deserialize)]
struct Skim {
    test: String,
    file: String,
    declared: Vec<String>,
    recover_within_ms: u64,
    passed: bool,
    timeline: SkimTimeline,
}

#[derive(Deserialize)]
struct SkimTimeline {
    #[serde(default)]
    started_unix_ms: u64,
    #[serde(default)]
    metrics: Metrics,
    #[serde(default)]
    lost_writes: Vec<serde::de::IgnoredAny>,
}

/// Reads a whole journal.
pub fn read_journal(path: &Path) -> Result<Journal, ReportError> {
    let bytes = std::fs::read(path).map_err(io(format!("read {}", path.display())))?;
    check_schema(path, &bytes)?;
    serde_json::from_slice(&bytes).map_err(|source| ReportError::Journal {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads only a journal's summary.
pub fn read_summary(path: &Path) -> Result<Summary, ReportError> {
    let bytes = std::fs::read(path).map_err(io(format!("read {}", path.display())))?;
    check_schema(path, &bytes)?;
    let s: Skim = serde_json::from_slice(&bytes).map_err(|source| ReportError::Journal {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Summary {
        test: s.test,
        file: s.file,
        declared: s.declared,
        recover_within_ms: s.recover_within_ms,
        passed: s.passed,
        time_to_recover_ms: s.timeline.metrics.time_to_recover_ms,
        error_window_ms: s.timeline.metrics.error_window_ms,
        lost_writes: s.timeline.lost_writes.len(),
        started_unix_ms: s.timeline.started_unix_ms,
    })
}

fn check_schema(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    #[derive(Deserialize)]
    struct Version {
        schema_version: u32,
    }
    // serde_json cannot stop early, but a version-only struct skips everything else cheaply.
    match serde_json::from_slice::<Version>(bytes) {
        Ok(v) if v.schema_version > SCHEMA_VERSION => Err(ReportError::Schema {
            path: path.to_path_buf(),
            found: v.schema_version,
        }),
        Ok(_) => Ok(()),
        Err(source) => Err(ReportError::Journal {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The journals in `<dir>/runs`, sorted by name, with their stems (the page names).
pub fn journals(dir: &Path) -> Result<Vec<(String, PathBuf)>, ReportError> {
    let runs = dir.join("runs");
    let rd = match std::fs::read_dir(&runs) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("read_dir {}", runs.display()))(e)),
    };
    let mut out: Vec<(String, PathBuf)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
        .collect();
    out.sort();
    Ok(out)
}

/// The page of a journal named `stem`: `<dir>/<stem>.html`.
pub fn page_path(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}.html"))
}

/// Writes through a temporary file and a rename, so a reader never sees half a page and two
/// runs finishing at once never interleave.
fn write_atomic(path: &Path, text: &str) -> Result<(), ReportError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(format!("create_dir_all {}", dir.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}-{:?}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("page"),
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, text).map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(format!("rename {} to {}", tmp.display(), path.display()))(e)
    })
}

fn write_index(dir: &Path, mut entries: Vec<Entry>) -> Result<PathBuf, ReportError> {
    // Experiments in file order (01_, 02_ ...), then by test; unreadable journals last.
    entries.sort_by(|a, b| match (&a.1, &b.1) {
        (Ok(x), Ok(y)) => (&x.file, &x.test, &a.0).cmp(&(&y.file, &y.test, &b.0)),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => a.0.cmp(&b.0),
    });
    let path = dir.join("index.html");
    write_atomic(
        &path,
        &index_page(&entries, &dir.join("runs").display().to_string()),
    )?;
    Ok(path)
}

/// Rebuilds every run's page and the index under `dir` (the chaos dir holding `runs/`);
/// returns the index's path. A journal that cannot be read is listed as unreadable in the
/// index rather than failing the others.
pub fn render_all(dir: &Path) -> Result<PathBuf, ReportError> {
    let mut entries = Vec::new();
    let mut cache = SummaryCache::default();
    for (stem, path) in journals(dir)? {
        match read_journal(&path) {
            Ok(j) => {
                let name = format!("{stem}.json");
                write_atomic(&page_path(dir, &stem), &run_page(&j, &name))?;
                let summary = Summary::from(&j);
                if let Some(key) = file_key(&path) {
                    cache.0.insert(stem.clone(), (key, summary.clone()));
                }
                entries.push((stem, Ok(summary)));
            }
            Err(e) => entries.push((stem, Err(crate::error_chain(&e)))),
        }
    }
    cache.save(dir);
    write_index(dir, entries)
}

/// Summaries of the journals already skimmed, keyed by page name, with the journal's
/// (modification time, length) they were read at: after a run only the journals that changed
/// are read again, so rendering the index stays cheap however many runs there are.
#[derive(Default, Serialize, Deserialize)]
struct SummaryCache(BTreeMap<String, ((u128, u64), Summary)>);

/// Where [`SummaryCache`] lives in the chaos dir.
const SUMMARY_CACHE: &str = ".summaries.json";

impl SummaryCache {
    fn load(dir: &Path) -> Self {
        std::fs::read(dir.join(SUMMARY_CACHE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Best effort: a cache that cannot be written only costs time next run.
    fn save(&self, dir: &Path) {
        if let Ok(text) = serde_json::to_string(self) {
            let _ = write_atomic(&dir.join(SUMMARY_CACHE), &text);
        }
    }
}

fn file_key(path: &Path) -> Option<(u128, u64)> {
    let m = std::fs::metadata(path).ok()?;
    let t = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((t.as_nanos(), m.len()))
}

/// Every journal's summary, from the cache where the journal did not change; `fresh` is one
/// the caller just read in full.
fn summaries(dir: &Path, fresh: Option<(&str, Summary)>) -> Result<Vec<Entry>, ReportError> {
    let old = SummaryCache::load(dir);
    let mut new = SummaryCache::default();
    let mut out = Vec::new();
    for (stem, path) in journals(dir)? {
        let key = file_key(&path);
        let summary = match (&fresh, key, old.0.get(&stem)) {
            (Some((f, s)), _, _) if *f == stem => Ok(s.clone()),
            (_, Some(k), Some((ck, s))) if *ck == k => Ok(s.clone()),
            _ => read_summary(&path).map_err(|e| crate::error_chain(&e)),
        };
        if let (Some(k), Ok(s)) = (key, &summary) {
            new.0.insert(stem.clone(), (k, s.clone()));
        }
        out.push((stem, summary));
    }
    new.save(dir);
    Ok(out)
}

/// Renders the page of one journal (`<dir>/runs/<stem>.json` -> `<dir>/<stem>.html`) and the
/// index over all journals beside it; returns the page's path.
pub fn render_run(journal: &Path) -> Result<PathBuf, ReportError> {
    let dir = journal
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let stem = journal
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("run")
        .to_string();
    let j = read_journal(journal)?;
    let page = page_path(dir, &stem);
    let name = journal
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    write_atomic(&page, &run_page(&j, name))?;
    let entries = summaries(dir, Some((&stem, Summary::from(&j))))?;
    write_index(dir, entries)?;
    Ok(page)
}

/// Called by the runtime right after it wrote a run's journal: renders the run's page and the
/// index, and says where the page is. Never fails the run; a problem is reported as a line.
pub fn after_run(journal: Option<&Path>) {
    let Some(journal) = journal else { return };
    match render_run(journal) {
        Ok(page) => crate::progress::line("report", &format!("page: {}", page.display())),
        Err(e) => crate::progress::line(
            "report",
            &format!("could not render the report: {}", crate::error_chain(&e)),
        ),
    }
}

/// The stylesheet every page inlines.
pub const CSS: &str = r#"
:root{--fg:#1c2024;--muted:#60646c;--line:#e4e6eb;--bg:#f6f7f9;--ok:#30a46c;--bad:#e5484d;--good-fg:#18794e;--bad-fg:#ce2c31;--budget:#dc6f14}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1320px;padding:20px 28px 40px;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Liberation Sans",Arial,sans-serif}
code,pre{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,"DejaVu Sans Mono","Liberation Mono",monospace;font-size:12px}
a{color:#0d74ce;text-decoration:none}a:hover{text-decoration:underline}
h1{font-size:22px;margin:0;font-weight:700;word-break:break-word}
h2{font-size:15px;margin:0 0 10px;font-weight:650}
.page-head{margin-bottom:14px}.page-head nav{font-size:13px;margin-bottom:6px}
.title-row{display:flex;align-items:center;gap:12px;flex-wrap:wrap}
.sub{margin:6px 0 0;color:var(--muted);font-size:13px}
.badge{display:inline-block;padding:3px 11px;border-radius:999px;font-weight:750;font-size:12px;letter-spacing:.06em;border:1px solid}
.badge.pass{background:#e9f6ee;color:var(--good-fg);border-color:#b3dfc3}
.badge.fail{background:#feecee;color:var(--bad-fg);border-color:#f8c0c3}
.badge.neutral{background:#f0f0f3;color:var(--muted);border-color:#dcdde3}
.cards{display:grid;grid-template-columns:1.7fr repeat(4,1fr);gap:12px;margin:0 0 4px}
.card{background:#fff;border:1px solid var(--line);border-radius:12px;padding:12px 16px}
.card .label{font-size:11px;text-transform:uppercase;letter-spacing:.07em;color:var(--muted);font-weight:600}
.card .value{font-size:24px;font-weight:700;font-variant-numeric:tabular-nums;margin:2px 0}
.card .foot{font-size:12px;color:var(--muted)}
.card.good .value{color:var(--good-fg)}.card.bad .value{color:var(--bad-fg)}
.meter{position:relative;height:8px;background:#eceef2;border-radius:4px;margin:6px 0 6px}
.meter .fill{position:absolute;left:0;top:0;bottom:0;border-radius:4px;background:var(--ok)}
.meter .fill.bad{background:var(--bad)}
.meter .tick{position:absolute;top:-4px;width:2px;height:16px;margin-left:-1px;background:var(--budget);border-radius:1px}
.small-meter{width:140px;display:inline-block;vertical-align:middle;margin:0 8px 0 0}
.panel{background:#fff;border:1px solid var(--line);border-radius:12px;padding:14px 18px;margin:14px 0}
.bad-panel{border-color:#f8c0c3;background:#fffafa}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:14px}.grid2 .panel{margin:0}
.grid2{margin:14px 0}
@media (max-width:960px){.grid2{grid-template-columns:1fr}.cards{grid-template-columns:1fr 1fr}}
.hint{color:var(--muted);font-size:12px;margin:-4px 0 8px}
table{width:100%;border-collapse:collapse;font-size:13px}
th{text-align:left;color:var(--muted);font-weight:600;font-size:12px;border-bottom:1px solid var(--line);padding:6px 8px}
td{padding:6px 8px;border-bottom:1px solid #f0f1f4;vertical-align:top}
tbody tr:last-child td{border-bottom:0}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.bad,.bad{color:var(--bad-fg);font-weight:600}
.muted{color:var(--muted)}.small{font-size:12px}
table.kv{margin-top:10px}table.kv th{width:42%;border:0;font-weight:500;padding:3px 8px}table.kv td{border:0;padding:3px 8px;font-variant-numeric:tabular-nums}
td.detail code{color:#3a3f47;word-break:break-all}
td.name{min-width:260px}.nowrap{white-space:nowrap}
#runs td:nth-child(3){min-width:200px}
.chip{display:inline-block;padding:1px 8px;border-radius:999px;font-size:11.5px;font-weight:650;color:var(--c);background:color-mix(in srgb,var(--c) 10%,#fff);border:1px solid color-mix(in srgb,var(--c) 30%,#fff);white-space:nowrap}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:7px;background:#c9cbd3}
.dot.phase-baseline{background:#3e63dd}.dot.phase-fault{background:var(--bad)}.dot.phase-recovery{background:#f5b800}.dot.phase-steady{background:var(--ok)}
tr.run.fail td:first-child{box-shadow:inset 3px 0 0 var(--bad)}
details summary{cursor:pointer;font-weight:600}
pre{background:#f6f7f9;border:1px solid var(--line);border-radius:8px;padding:10px 12px;overflow:auto;line-height:1.4}
footer{color:var(--muted);font-size:12px;margin-top:18px}
.chart{padding-bottom:8px}
svg.timeline{display:block;width:100%;height:auto;font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Liberation Sans",Arial,sans-serif}
svg.timeline text{font-size:11px}
:where(svg.timeline text:not([fill])){fill:var(--fg)}
svg.timeline .tick{font-size:10.5px;fill:var(--muted);font-variant-numeric:tabular-nums}
svg.timeline .small{font-size:10.5px}
svg.timeline .muted{fill:var(--muted)}
svg.timeline .section-title{font-size:12.5px;font-weight:650}
svg.timeline .verdict-word{font-size:19px;font-weight:800;letter-spacing:.08em}
svg.timeline .fault-label{fill:#c62a2f;font-weight:650;font-size:11.5px}
svg.timeline .fault-edge{stroke:#e5484d;stroke-opacity:.6;stroke-width:1}
svg.timeline .phase-label{fill:var(--muted);font-size:10px;font-weight:600;text-transform:uppercase;letter-spacing:.1em}
svg.timeline .phase-boundary{stroke:#9a9ca6;stroke-width:1;stroke-dasharray:3 3}
svg.timeline .mark-label{font-weight:650;font-size:11px}
svg.timeline .halo{paint-order:stroke;stroke:#fff;stroke-width:3.5px;stroke-linejoin:round}
svg.timeline .src{font-size:10.5px;font-weight:650}
svg.timeline .note{font-size:10px;fill:var(--muted)}
svg.timeline .count{fill:var(--muted);font-size:10px}
svg.timeline .empty{font-size:12px;font-style:italic}
"#;

#[cfg(test)]
mod tests;
