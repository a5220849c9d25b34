//! Experiments built in code, for the cases an attribute cannot express: faults computed in a
//! loop, targets chosen at run time, a composite assembled from helpers.
//!
//! ```no_run
//! use chaos_runtime::{Experiment, Fault};
//! use std::time::Duration;
//!
//! #[test]
//! fn orders_survive_every_backend_dying_in_turn() {
//!     # fn system() -> chaos_runtime::System { unimplemented!() }
//!     let mut exp = Experiment::new("orders_survive_every_backend_dying_in_turn", system)
//!         .recover_within(Duration::from_secs(10));
//!     for (i, target) in ["redis", "postgres"].into_iter().enumerate() {
//!         exp = exp.fault(Fault::new("kill", target).after(Duration::from_secs(2 * i as u64)).hold(Duration::from_secs(1)));
//!     }
//!     exp.run(|run| async move {
//!         assert!(run.lost_writes().is_empty());
//!     });
//! }
//! ```
//!
//! It runs through the same engine as `#[chaos_test]` (the same stack, observers, budget,
//! invariants, snapshot and teardown); the fault kinds and parameters are checked here at run
//! time instead of at compile time, with the same lists (`chaos-spec`), and the roles against the
//! system before anything starts.
use crate::ChaosRun;
use crate::spec::{FAULT_KINDS, FAULT_PARAMS, FaultSpec, Spec, SteadySpec};
use std::future::Future;
use std::time::Duration;

/// One fault of an [`Experiment`].
#[derive(Clone, Debug)]
pub struct Fault {
    kind: String,
    target: String,
    after: Duration,
    hold: Duration,
    params: Vec<(String, String)>,
}

impl Fault {
    /// A fault of `kind` (one of the `#[chaos_test]` fault names) on a stack role.
    pub fn new(kind: &str, target: &str) -> Self {
        Fault {
            kind: kind.into(),
            target: target.into(),
            after: Duration::ZERO,
            hold: Duration::from_secs(3),
            params: Vec::new(),
        }
    }

    /// Offset from the first injection.
    pub fn after(mut self, d: Duration) -> Self {
        self.after = d;
        self
    }

    /// How long the fault holds before it is healed (default 3 s).
    pub fn hold(mut self, d: Duration) -> Self {
        self.hold = d;
        self
    }

    /// A parameter in its normalised form (`latency_ms`, `memory_limit_bytes`, `cpus`, `direction` ...).
    pub fn param(mut self, key: &str, value: impl ToString) -> Self {
        self.params.push((key.into(), value.to_string()));
        self
    }
}

/// A chaos experiment assembled in code.
#[derive(Clone, Debug)]
pub struct Experiment {
    name: String,
    faults: Vec<Fault>,
    recover_within: Duration,
    observer: Option<String>,
    workload: Option<String>,
    snapshot: bool,
    manifest_dir: String,
    system: fn() -> crate::System,
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

impl Experiment {
    /// A new experiment; `name` names its snapshot and report (use the test function's name).
    pub fn new(name: &str, system: fn() -> crate::System) -> Self {
        Experiment {
            name: name.into(),
            faults: Vec::new(),
            recover_within: Duration::from_secs(10),
            observer: None,
            workload: None,
            snapshot: false,
            manifest_dir: std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()),
            system,
        }
    }

    /// Adds a fault.
    pub fn fault(mut self, f: Fault) -> Self {
        self.faults.push(f);
        self
    }

    /// The recovery budget (default 10 s).
    pub fn recover_within(mut self, d: Duration) -> Self {
        self.recover_within = d;
        self
    }

    /// `auto`, `bpf` or `fallback`.
    pub fn observer(mut self, mode: &str) -> Self {
        self.observer = Some(mode.into());
        self
    }

    /// A workload of the system by name (default: its first).
    pub fn workload(mut self, w: &str) -> Self {
        self.workload = Some(w.into());
        self
    }

    /// Snapshot the normalised timeline into `tests/snapshots/<name>.snap` (default off).
    pub fn snapshot(mut self, on: bool) -> Self {
        self.snapshot = on;
        self
    }

    /// Checks the experiment; the same rules the attribute enforces at compile time.
    pub fn validate(&self) -> Result<(), String> {
        if self.faults.is_empty() {
            return Err("an experiment needs at least one fault: add .fault(Fault::new(\"kill\", \"postgres\"))".into());
        }
        for f in &self.faults {
            if !FAULT_KINDS.contains(&f.kind.as_str()) {
                return Err(format!(
                    "unknown fault {:?}; expected one of {}",
                    f.kind,
                    FAULT_KINDS.join(", ")
                ));
            }
            if !chaos_spec::valid_role(&f.target) {
                return Err(format!(
                    "{:?} is not a role name: lowercase letters, digits, `-` and `_`, starting with a letter",
                    f.target
                ));
            }
            let allowed: Vec<String> = FAULT_PARAMS
                .iter()
                .find(|(k, _)| *k == f.kind)
                .map(|(_, ps)| {
                    ps.iter()
                        .map(|(p, t)| match t {
                            crate::spec::ParamType::Duration | crate::spec::ParamType::Offset => {
                                format!("{p}_ms")
                            }
                            crate::spec::ParamType::Size => format!("{p}_bytes"),
                            crate::spec::ParamType::Percent => format!("{p}_pct"),
                            _ => p.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            for (k, _) in &f.params {
                if !allowed.contains(k) {
                    return Err(format!(
                        "{} takes no parameter {k:?}; it takes: {}",
                        f.kind,
                        allowed.join(", ")
                    ));
                }
            }
        }
        if self.recover_within.is_zero() {
            return Err("recover_within must be more than zero".into());
        }
        Ok(())
    }

    /// Runs the experiment (call it from a plain `#[test]`; it builds its own runtime) and hands
    /// the finished run to `body`. Panics with the reason, like `#[chaos_test]`.
    pub fn run<F, Fut>(self, body: F)
    where
        F: FnOnce(ChaosRun) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        if let Err(e) = self.validate() {
            panic!("invalid experiment {}: {e}", self.name);
        }
        let faults: Vec<FaultSpec> = self
            .faults
            .iter()
            .map(|f| FaultSpec {
                kind: leak(f.kind.clone()),
                target: leak(f.target.clone()),
                after_ms: f.after.as_millis() as u64,
                duration_ms: f.hold.as_millis() as u64,
                params: Box::leak(
                    f.params
                        .iter()
                        .map(|(k, v)| (leak(k.clone()), leak(v.clone())))
                        .collect::<Vec<_>>()
                        .into_boxed_slice(),
                ),
            })
            .collect();
        let spec: &'static Spec = Box::leak(Box::new(Spec {
            name: leak(format!("experiment::{}", self.name)),
            fn_name: leak(self.name.clone()),
            file: "<experiment>",
            manifest_dir: leak(self.manifest_dir.clone()),
            faults: Box::leak(faults.into_boxed_slice()),
            recover_within_ms: self.recover_within.as_millis() as u64,
            observer: self.observer.clone().map(leak),
            workload: self.workload.clone().map(leak),
            snapshot: self.snapshot,
            system: self.system,
            steady: SteadySpec::default(),
        }));
        crate::__private::run(spec, Box::new(move |run| Box::pin(body(run))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system() -> crate::System {
        crate::System::new("empty")
    }

    #[test]
    fn validation_names_the_fix() {
        let e = Experiment::new("x", system).validate().unwrap_err();
        assert!(e.contains("Fault::new"), "{e}");
        let e = Experiment::new("x", system)
            .fault(Fault::new("kil", "postgres"))
            .validate()
            .unwrap_err();
        assert!(e.contains("unknown fault") && e.contains("kill"), "{e}");
        let e = Experiment::new("x", system)
            .fault(Fault::new("kill", "My SQL"))
            .validate()
            .unwrap_err();
        assert!(e.contains("not a role name"), "{e}");
        let e = Experiment::new("x", system)
            .fault(Fault::new("kill", "redis").param("latency_ms", 5))
            .validate()
            .unwrap_err();
        assert!(e.contains("takes no parameter"), "{e}");
        Experiment::new("x", system)
            .fault(
                Fault::new("latency", "redis")
                    .param("latency_ms", 100)
                    .param("direction", "egress"),
            )
            .validate()
            .unwrap();
    }
}
