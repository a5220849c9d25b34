//! Compile-time behaviour of `#[chaos_test]`: what it accepts (`ui/pass`, one case per fault
//! kind so that a divergence from `chaos-runtime/src/spec.rs` shows up) and what it refuses, with
//! the exact messages (`ui/fail/*.stderr`; regenerate with `TRYBUILD=overwrite`, then read them).
//!
//! The pass cases are binaries: their `#[test]` fns are compiled out, so these cases check what
//! the attribute accepts; `tests/expansion.rs` type-checks the expansion against the runtime.

#[test]
fn ui() {
    // trybuild builds the cases in a project of its own, without this workspace's profiles: with
    // the default full debug info, the 21 pass cases are 21 binaries of ~270 MB each (they link
    // the runtime), which filled a CI machine's disk. The cases' verdicts need no debug info.
    // SAFETY: this binary's only test sets these before trybuild starts any cargo.
    unsafe {
        std::env::set_var("CARGO_PROFILE_DEV_DEBUG", "0");
        std::env::set_var("CARGO_PROFILE_DEV_STRIP", "debuginfo");
    }
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
