use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    faults(
        memory_oom(target = "redis", memory_limit = "64 megabytes"),
        cpu_throttle(target = "orders", cpus = "half"),
        network_partition(target = "postgres", direction = "inbound"),
        latency(target = "postgres", latency = "100"),
    ),
    recover_within = "10s",
    observer = "ebpf",
    workload = "writes",
    snapshot = "false"
)]
async fn values_out_of_their_lists(run: ChaosRun) {
    let _ = run;
}

fn main() {}
