//! What one `#[chaos_test]` asks for, as the macro renders it.
//!
//! The macro validates every option at compile time and renders plain `'static` data:
//! durations already in milliseconds, sizes in bytes, fault kinds and parameters checked against
//! the lists of `chaos-spec`. Roles and workloads belong to the system, which exists only at run
//! time: the runtime checks those before anything starts.

/// One chaos test: its faults, its budgets and how it is observed.
#[derive(Clone, Debug)]
pub struct Spec {
    /// `module_path!()::fn_name`, names the run in reports.
    pub name: &'static str,
    /// The test function's name; names the snapshot.
    pub fn_name: &'static str,
    /// `file!()` of the test.
    pub file: &'static str,
    /// `env!("CARGO_MANIFEST_DIR")` of the crate holding the test; snapshots go to `<it>/tests/snapshots`.
    pub manifest_dir: &'static str,
    /// The faults, in declaration order. One for `fault = ".."`, several for `faults(..)`.
    pub faults: &'static [FaultSpec],
    /// `recover_within`: the budget from heal to steady state, ms.
    pub recover_within_ms: u64,
    /// `observer = "auto" | "bpf" | "fallback"`; `None` leaves it to `CHAOS_OBSERVER` (default auto).
    pub observer: Option<&'static str>,
    /// `workload = ".."`: a workload of the system (default: its first).
    pub workload: Option<&'static str>,
    /// `snapshot = false` turns the insta snapshot off (default true).
    pub snapshot: bool,
    /// `system = path`: declares the system under test.
    pub system: fn() -> crate::System,
    /// Overrides of the system's steady-state hypothesis.
    pub steady: SteadySpec,
}

/// Per-test overrides of the system's [`crate::system::SteadyState`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SteadySpec {
    /// `steady_ok_ratio`.
    pub ok_ratio: Option<f64>,
    /// `steady_p99`: a fixed p99 ceiling, ms.
    pub p99_ms: Option<u64>,
    /// `steady_window`: the recovery window, ms.
    pub window_ms: Option<u64>,
}

/// One fault of a test.
#[derive(Clone, Debug)]
pub struct FaultSpec {
    /// One of [`FAULT_KINDS`].
    pub kind: &'static str,
    /// A role of the system.
    pub target: &'static str,
    /// Start offset from the first fault's injection, ms (`after = "1s"`, composite only; 0 otherwise).
    pub after_ms: u64,
    /// How long the fault holds before it is healed, ms (`duration`, default 3000).
    pub duration_ms: u64,
    /// Fault-specific parameters, normalised by the macro: durations as `<key>_ms` in ms,
    /// sizes as `<key>_bytes` in bytes, the rest verbatim. See [`FAULT_PARAMS`].
    pub params: &'static [(&'static str, &'static str)],
}

impl FaultSpec {
    /// A parameter by its normalised key.
    pub fn param(&self, key: &str) -> Option<&'static str> {
        self.params.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

pub use chaos_spec::{FAULT_KINDS, FAULT_PARAMS, Needs, ParamType};

impl SteadySpec {
    /// No override: the system's steady state as declared.
    pub const NONE: SteadySpec = SteadySpec {
        ok_ratio: None,
        p99_ms: None,
        window_ms: None,
    };
}
