use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    faults(
        packet_loss(target = "postgres", loss = "10"),
        packet_loss(target = "redis", loss = "150%"),
        packet_loss(target = "orders", loss = "0%"),
    ),
    recover_within = "10s"
)]
async fn percentages_need_their_sign_and_a_range(run: ChaosRun) {
    let _ = run;
}

fn main() {}
