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

pub mod clock;
pub mod docker;
pub mod doctor;
pub mod experiment;
pub mod fault;
mod http;
pub mod image;
pub mod journal;
pub mod ledger;
pub mod observe;
pub mod progress;
pub mod report;
mod run;
pub mod slots;
pub mod spec;
pub mod stack;
pub mod timeline;
pub mod workload;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use chaos_macros::chaos_test;
pub use experiment::{Experiment, Fault};
pub use spec::{FaultSpec, Spec};
pub use timeline::{Event, Metrics, Timeline};

use std::sync::Arc;

/// A finished chaos run, handed to the test body. The stack is still running while the body runs.
#[derive(Clone)]
pub struct ChaosRun {
    pub(crate) timeline: Timeline,
    pub(crate) acked: Vec<i64>,
    pub(crate) stack: Arc<stack::Stack>,
}

impl ChaosRun {
    pub(crate) fn clone_for_body(&self) -> ChaosRun {
        self.clone()
    }

    /// The full timeline: phases, faults, events, samples, metrics.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// The numbers: time to first error, error window, time to recover, per-phase stats.
    pub fn metrics(&self) -> &Metrics {
        &self.timeline.metrics
    }

    /// Acknowledged writes that were not found in PostgreSQL after recovery.
    pub fn lost_writes(&self) -> &[i64] {
        &self.timeline.lost_writes
    }

    /// Every write the service acknowledged (order ids).
    pub fn acknowledged_writes(&self) -> &[i64] {
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

    /// A fresh PostgreSQL connection to the stack's database (through its 127.0.0.1 port).
    pub async fn postgres(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.stack.postgres_config(), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Checks the ledger again now: acknowledged writes missing from PostgreSQL.
    pub async fn recheck_ledger(&self) -> Result<Vec<i64>, ledger::LedgerError> {
        ledger::missing(&self.stack.postgres_config(), &self.acked).await
    }
}
