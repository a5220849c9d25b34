//! Plumbing for the code `#[chaos_test]` expands to. Not a public API.
pub use crate::spec::{FaultSpec, Spec, SteadySpec};

use std::future::Future;
use std::pin::Pin;

/// The body of a chaos test, boxed by the macro: receives the finished run.
pub type Body = Box<dyn FnOnce(crate::ChaosRun) -> Pin<Box<dyn Future<Output = ()>>>>;

/// The one entry point of every `#[chaos_test]`: runs the experiment described by `spec`,
/// asserts its budgets and snapshot, then hands the finished run to `body`.
pub fn run(spec: &'static Spec, body: Body) {
    crate::run::run_test(spec, body)
}
