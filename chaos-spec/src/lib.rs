//! The vocabulary of the chaos test framework, shared by `#[chaos_test]` (compile-time checks),
//! `chaos-runtime` (what it implements, run-time checks of experiments built in code), the
//! doctor and the CLI: fault kinds, their parameters and units, and "did you mean".
//!
//! Like `sqlx-macros-core`, this is a plain crate so that a proc-macro crate and the runtime it
//! expands to can share one copy of the lists.
//!
//! ```
//! use chaos_spec::{ParamType, params_of, units};
//! assert_eq!(params_of("latency").unwrap()[0], ("latency", ParamType::Duration));
//! assert_eq!(units::duration_ms("2s"), Ok(2_000));
//! assert_eq!(chaos_spec::suggest::did_you_mean("kil", chaos_spec::FAULT_KINDS), Some("kill"));
//! ```
#![warn(missing_docs)]

mod kinds;
pub mod suggest;
pub mod units;

pub use kinds::*;
