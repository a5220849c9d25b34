use chaos_runtime::{ChaosRun, chaos_test};

// Roles belong to the system and are checked when the run starts; the attribute checks their
// shape (they become part of container names).
#[chaos_test(fault = "kill", target = "Postgres DB", recover_within = "10s")]
async fn not_a_role_name(run: ChaosRun) {
    let _ = run;
}

#[chaos_test(faults(kill(target = "9redis")), recover_within = "10s", workload = "")]
async fn bad_names_inside_faults_and_workload(run: ChaosRun) {
    let _ = run;
}

fn main() {}
