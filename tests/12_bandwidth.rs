//! Experiment 12: the database's link narrowed to 1 MiB/s, both ways, without netem.
//!
//! A token bucket (`tbf`) limits what PostgreSQL sends (its `eth0`) and what it receives
//! (redirected through an `ifb` device), inside its network namespace. The runtime measures the
//! rate reached with a bulk TCP transfer through each direction during the first 2.5 s of the
//! fault (between PostgreSQL and a peer, from sockets inside their namespaces), so the limit is
//! shown, not assumed. Orders are small: they must keep succeeding on the narrowed link, queued
//! behind the transfer for at most the bucket's 50 ms, and lose nothing.
use chaos_runtime::{ChaosRun, chaos_test};
use chaos_trading::system;

/// The asked rate, bytes a second.
const ASKED: f64 = 1_048_576.0;
/// How far the rate on the wire (what the limiting qdisc sent during the bulk transfer, counted
/// by the host agent at the receivers' instants) may sit from the asked one.
const TOLERANCE: f64 = 0.10;
/// The TCP payload the receivers got is less: the bucket counts each segment's headers (66 of
/// 1,514 bytes), and TCP sends again what the bucket's 50 ms queue dropped.
const GOODPUT_AT_LEAST: f64 = 0.80;

// Budget: removing two qdiscs and an ifb device; nothing in the system has to reconnect.
#[chaos_test(
    fault = "bandwidth",
    target = "postgres",
    rate = "1MiB",
    duration = "4s",
    recover_within = "2s"
)]
async fn orders_keep_flowing_while_the_database_link_is_narrowed_to_one_mib(run: ChaosRun) {
    let tl = run.timeline();
    let fault = &tl.faults[0];
    assert!(
        fault.mechanism.contains("tbf") && fault.mechanism.contains("ingress via ifb"),
        "mechanism {:?}",
        fault.mechanism
    );
    let measured = run.events("bandwidth_measured");
    let m = measured
        .first()
        .unwrap_or_else(|| panic!("no bandwidth_measured event:\n{}", tl.render_text()));
    let rate = |k: &str| -> f64 {
        m.detail
            .get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bandwidth_measured lacks {k}: {:?}", m.detail))
    };
    for way in ["ingress", "egress"] {
        let wire = rate(&format!("{way}_wire_bytes_per_s"));
        let goodput = rate(&format!("{way}_bytes_per_s"));
        eprintln!(
            "bandwidth {way}: asked {ASKED:.0} B/s, on the wire {wire:.0} B/s ({:.1} %), \
             TCP payload {goodput:.0} B/s ({:.1} %)",
            100.0 * wire / ASKED,
            100.0 * goodput / ASKED
        );
        assert!(
            (wire / ASKED - 1.0).abs() <= TOLERANCE,
            "{way}: {wire:.0} B/s on the wire, not within {:.0} % of {ASKED:.0} B/s\n{}",
            TOLERANCE * 100.0,
            tl.render_text()
        );
        assert!(
            goodput >= GOODPUT_AT_LEAST * ASKED,
            "{way}: {goodput:.0} B/s of payload for {wire:.0} B/s on the wire\n{}",
            tl.render_text()
        );
    }
    // The qdiscs carried the traffic they limited.
    let restored = run.events("bandwidth_restored");
    let r = restored.first().expect("a bandwidth_restored event");
    for key in ["egress_qdisc_bytes", "ingress_qdisc_bytes"] {
        let bytes: u64 = r.detail.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!(
            bytes > 1_000_000,
            "{key} = {bytes}: the limit carried nothing"
        );
    }
    // Small requests got through the narrowed link: nothing failed, nothing was lost.
    let stats = run.metrics().phase("fault").expect("a fault phase");
    assert_eq!(
        stats.failed,
        0,
        "orders failed on a 1 MiB/s link:\n{}",
        tl.render_text()
    );
    assert!(stats.ok > 0);
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
}
