//! Compile-time behaviour of `#[chaos_test]`: what it accepts (`ui/pass`, one case per fault
//! kind so that a divergence from `chaos-runtime/src/spec.rs` shows up) and what it refuses, with
//! the exact messages (`ui/fail/*.stderr`; regenerate with `TRYBUILD=overwrite`, then read them).
//!
//! The pass cases are binaries: their `#[test]` fns are compiled out, so these cases check what
//! the attribute accepts; `tests/expansion.rs` type-checks the expansion against the runtime.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
