//! The runtime leaves the host as it found it. The host's packet-filter rules (iptables and
//! nft), qdiscs, links, network namespaces and mounts are recorded, faults that act inside the
//! target's namespace or cgroup run while their target is killed mid-fault (its pid, its
//! namespace and its cgroup die under the fault), and the host is recorded again: the two must
//! be the same. One test in its own binary, so no other run of this process changes the host
//! meanwhile (Docker's own rules for published ports come and go with every stack).
use chaos_runtime::__private::{FaultSpec, Spec, SteadySpec, run};
mod common;

#[test]
fn faults_whose_target_dies_mid_fault_leave_the_host_as_it_was() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the faults here act in other namespaces and cgroups: run as root"
    );
    // A partition and a write throttle on PostgreSQL, whose container is killed a second into
    // them and started again a second later (a new pid, namespace and cgroup); the heals run
    // after that, with the handles they took at injection. The order service is throttled too.
    static SPEC: Spec = Spec {
        name: "host_safety::target_dies_mid_fault",
        fn_name: "target_dies_mid_fault",
        file: file!(),
        manifest_dir: env!("CARGO_MANIFEST_DIR"),
        faults: &[
            FaultSpec {
                kind: "network_partition",
                target: "postgres",
                after_ms: 0,
                duration_ms: 3_000,
                params: &[],
            },
            FaultSpec {
                kind: "disk_io",
                target: "postgres",
                after_ms: 0,
                duration_ms: 3_000,
                params: &[],
            },
            FaultSpec {
                kind: "kill",
                target: "postgres",
                after_ms: 1_000,
                duration_ms: 1_000,
                params: &[],
            },
            FaultSpec {
                kind: "cpu_throttle",
                target: "orders",
                after_ms: 0,
                duration_ms: 3_000,
                params: &[],
            },
        ],
        recover_within_ms: 30_000,
        observer: None,
        workload: None,
        system: chaos_trading::system,
        steady: SteadySpec::NONE,
        snapshot: false,
    };
    // SAFETY: the only test of this binary; nothing reads the environment concurrently.
    unsafe {
        std::env::set_var(
            "CHAOS_REPORT_DIR",
            std::env::temp_dir().join("chaos-host-safety"),
        );
        // A reaper is a container with a published port (Docker rules of its own) that lives
        // as long as this process: it would be in "after" only. The SIGKILL tests cover it.
        std::env::set_var("CHAOS_NO_REAPER", "1");
    }
    // Reapers of test processes that just ended exit within seconds; wait for them (bounded)
    // so that the host is recorded at rest.
    common::wait_for_reapers();
    let before = common::host_state();
    run(&SPEC, Box::new(|_run| Box::pin(async {})));
    let after = common::host_state();
    let diff = common::host_diff(&before, &after);
    let compared: usize = before.values().map(Vec::len).sum();
    eprintln!(
        "host state: {compared} lines compared ({}), {} differ",
        before
            .iter()
            .map(|(k, v)| format!("{k} {}", v.len()))
            .collect::<Vec<_>>()
            .join(", "),
        diff.len()
    );
    assert!(
        diff.is_empty(),
        "the run changed the host:\n{}",
        diff.join("\n")
    );
}
