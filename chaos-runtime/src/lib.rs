//! chaos-runtime: the engine behind `#[chaos_test]`.
//!
//! A chaos test is one annotated function:
//!
//! ```no_run
//! use chaos_runtime::{chaos_test, ChaosRun};
//!
//! #[chaos_test(fault = "kill", target = "postgres", duration = "2s", recover_within = "10s")]
//! async fn orders_survive_postgres_death(run: ChaosRun) {
//!     assert!(run.lost_writes().is_empty());
//! }
//! ```
//!
//! The attribute starts the trading stack in containers, drives orders through nginx, waits
//! for the steady state, injects the fault, observes the kernel and the services, heals,
//! measures when the steady state returns, asserts the recovery budget and the ledger of
//! acknowledged writes, and snapshots the normalised timeline with insta. The body then
//! receives the finished [`ChaosRun`] (with the stack still up) for extra assertions.
//!
//! # Design: when in doubt, say no
//! - One entry point (`__private::run`); the macro renders plain data, all behaviour lives here.
//! - No timed assertions in tests beyond the declared budget; performance lives in benches.
//! - Every resource is labelled and removed, even on panic; a sweep removes what killed runs left.
#![warn(missing_docs)]

mod agent;
pub mod clock;
pub mod docker;
pub mod doctor;
pub mod experiment;
pub mod fault;
mod helper;
pub mod http;
pub mod image;
mod interrupt;
pub mod invariant;
pub mod journal;
pub mod observe;
pub mod progress;
pub mod reach;
pub mod reaper;
pub mod report;
mod run;
pub mod slots;
mod snapshot;
pub mod spec;
pub mod stack;
pub mod system;
pub mod timeline;
pub mod workload;

/// An error and its causes on one line, each cause once (clients repeat their source's words).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !out.contains(&said) {
            out.push_str(": ");
            out.push_str(&said);
        }
        cause = c.source();
    }
    out
}

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use chaos_macros::chaos_test;
pub use chaos_spec as vocabulary;
pub use experiment::{Experiment, Fault};
pub use invariant::{Invariant, SqlLedger, Violation};
pub use spec::{FaultSpec, Spec};
pub use system::{Probe, Service, SteadyState, System};
pub use timeline::{Event, Metrics, Timeline};
pub use workload::{Ack, HttpWorkload, Outcome, Workload, WorkloadCx};

use std::sync::Arc;

/// The `chaos-agent` binary that runs start in their host-agent container: the `chaos-agent`
/// crate's server, with this crate's eBPF observers so that the agent can load them into the
/// engine's kernel when the test process cannot (not root, in a CI job container, on another
/// machine).
///
/// ```no_run
/// // the whole of src/bin/chaos-agent.rs, inside its `fn main`:
/// chaos_runtime::agent_main();
/// ```
pub fn agent_main() {
    chaos_agent::main_with(observe::bpf::serve);
}

/// A finished chaos run, handed to the test body. The stack is still running while the body runs.
#[derive(Clone)]
pub struct ChaosRun {
    pub(crate) timeline: Timeline,
    pub(crate) acked: Vec<workload::Ack>,
    pub(crate) stack: Arc<stack::Stack>,
    pub(crate) invariants: Arc<Vec<Arc<dyn invariant::Invariant>>>,
}

impl ChaosRun {
    /// The full timeline: phases, faults, events, samples, metrics.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// The numbers: time to first error, error window, time to recover, per-phase stats.
    pub fn metrics(&self) -> &Metrics {
        &self.timeline.metrics
    }

    /// What the system's invariants found broken after recovery (e.g. acknowledged writes that
    /// are not stored, or not as written). Empty when every invariant held.
    pub fn lost_writes(&self) -> &[invariant::Violation] {
        &self.timeline.lost_writes
    }

    /// Every write the system acknowledged during the run.
    pub fn acknowledged_writes(&self) -> &[workload::Ack] {
        &self.acked
    }

    /// Events of one kind (`container_die`, `oom_kill`, `first_error`, ...).
    pub fn events(&self, kind: &str) -> Vec<&Event> {
        self.timeline.events_of(kind)
    }

    /// The running stack (ports, logs, Docker handle).
    pub fn stack(&self) -> &stack::Stack {
        &self.stack
    }

    /// A fresh connection to the PostgreSQL service `role` (declared with
    /// [`system::Service::postgres`]).
    pub async fn postgres(&self, role: &str) -> Result<tokio_postgres::Client, String> {
        let cfg = self
            .stack
            .postgres_config(role)
            .ok_or_else(|| format!("`{role}` is not declared as PostgreSQL"))?;
        let (client, conn) = tokio_postgres::connect(&cfg, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Checks the system's invariants again now.
    pub async fn check_invariants(&self) -> Result<Vec<invariant::Violation>, String> {
        invariant::check_all(&self.invariants, &self.stack, &self.acked).await
    }
}
