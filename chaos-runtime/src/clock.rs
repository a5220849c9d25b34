//! One clock for every part of a run: CLOCK_MONOTONIC nanoseconds.
//!
//! eBPF programs stamp events with `bpf_ktime_get_ns()`, which reads the same clock,
//! so kernel events and workload samples line up on one axis without conversion.

/// Nanoseconds on CLOCK_MONOTONIC (the clock `bpf_ktime_get_ns` reads).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
