//! Experiment 11: packet loss on the database's link, without netem.
//!
//! A random share of PostgreSQL's packets to and from the stack is dropped, each packet drawn
//! on its own (iptables' `statistic` match or nft's `numgen random`, inside its network
//! namespace), next to a rule that counts every packet: at heal the two counters give the loss
//! that was realised, which must be the one asked for. TCP hides a lossy link behind
//! retransmissions: the kernel must show them, acknowledged orders must all be there, and the
//! steady state must return once the link is clean.
use chaos_runtime::{ChaosRun, Event, chaos_test};
use chaos_trading::system;

/// How far the realised loss may sit from the asked one, in percentage points.
const TOLERANCE_PTS: f64 = 2.0;

// Budget: the loss rules go in one transaction and out in another; what is left to recover
// is the order service's pool (connections that timed out were discarded) and the
// retransmission timers of segments still in flight, which back off to at most a few hundred
// ms at these rates. 3 s is the partition's budget.
// No snapshot here: at 10 % whether any request fails is itself a draw. A request fails only
// when one of its segments is lost three times in a row (the retransmissions at ~200 and
// ~600 ms, then the service's 1 s deadline), 1 in 1,000 segments, about one expected failure
// in the ~900 segments of a 5 s fault: a snapshot would say "errors" in half the runs. At 30 %
// that is 1 in 37, and the failures are certain enough to snapshot.
#[chaos_test(
    fault = "packet_loss",
    target = "postgres",
    loss = "10%",
    duration = "5s",
    recover_within = "3s",
    snapshot = false
)]
async fn orders_ride_out_ten_percent_loss_on_the_database_link(run: ChaosRun) {
    assert_loss_behaviour(&run, 10.0);
}

#[chaos_test(
    fault = "packet_loss",
    target = "postgres",
    loss = "30%",
    duration = "5s",
    recover_within = "3s"
)]
async fn orders_recover_from_thirty_percent_loss_on_the_database_link(run: ChaosRun) {
    assert_loss_behaviour(&run, 30.0);
}

/// What every loss run must show.
fn assert_loss_behaviour(run: &ChaosRun, asked: f64) {
    let tl = run.timeline();
    let fault = &tl.faults[0];
    let (injected, healed) = (
        fault.injected_ms,
        fault.healed_ms.expect("the loss was healed"),
    );
    assert!(
        fault.mechanism.contains("random") && fault.mechanism.contains("in postgres netns"),
        "mechanism {:?} is not a random drop in postgres' netns",
        fault.mechanism
    );
    // The counters: every packet seen, and those dropped, per direction.
    let measured = run.events("packet_loss_measured");
    let m = measured
        .first()
        .unwrap_or_else(|| panic!("no packet_loss_measured event:\n{}", tl.render_text()));
    let n = |k: &str| -> u64 {
        m.detail
            .get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("packet_loss_measured lacks {k}: {:?}", m.detail))
    };
    let (seen, dropped) = (
        n("ingress_seen") + n("egress_seen"),
        n("ingress_dropped") + n("egress_dropped"),
    );
    let realised = 100.0 * dropped as f64 / seen as f64;
    eprintln!(
        "packet loss asked {asked}%: realised {realised:.2}% ({dropped} of {seen} packets; \
         ingress {} of {}, egress {} of {})",
        n("ingress_dropped"),
        n("ingress_seen"),
        n("egress_dropped"),
        n("egress_seen")
    );
    // Both directions carried traffic and lost some of it.
    assert!(
        n("ingress_dropped") > 0 && n("egress_dropped") > 0,
        "a direction lost nothing: {:?}",
        m.detail
    );
    assert!(
        (realised - asked).abs() <= TOLERANCE_PTS,
        "realised loss {realised:.2}% is not within {TOLERANCE_PTS} points of {asked}% \
         ({dropped} of {seen} packets)\n{}",
        tl.render_text()
    );
    // TCP saw the loss: the order service retransmitted segments to PostgreSQL.
    let during = |e: &&Event| e.t_ms >= injected && e.t_ms <= healed + 500.0;
    let retransmits = run
        .events("tcp_retransmit")
        .into_iter()
        .filter(during)
        .filter(|e| e.container.as_deref() == Some("orders"))
        .count();
    assert!(
        retransmits > 0,
        "no TCP retransmission by the order service under {asked}% loss:\n{}",
        tl.render_text()
    );
    eprintln!("tcp_retransmit events in the order service during the loss: {retransmits}");
    // Clean link again, steady state back within the budget, nothing acknowledged lost.
    assert!(!run.events("network_restored").is_empty());
    let recovered = run
        .metrics()
        .time_to_recover_ms
        .expect("the steady state returned");
    assert!(
        recovered <= run.metrics().recover_budget_ms,
        "recovery took {recovered} ms"
    );
    assert!(
        run.lost_writes().is_empty(),
        "lost acknowledged orders: {:?}",
        run.lost_writes()
    );
    assert!(!run.acknowledged_writes().is_empty());
}
