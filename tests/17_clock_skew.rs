//! Experiment 17: PostgreSQL's wall clock jumps an hour ahead, then back.
//!
//! PostgreSQL runs on a clock the fault can move (`system_with_a_skewable_database_clock`:
//! libfaketime preloaded, reading its offset from a file the host agent rewrites). Orders take
//! their `created_at` from the database's `now()`. The hypothesis: the skew breaks nothing a
//! client sees (no order fails, none is lost), but the ledger's timestamps do not follow the
//! order of the orders: those placed during the skew are an hour in the future, and the first
//! order after the heal is "older" than the one before it, which any code sorting or expiring
//! by `created_at` would get wrong.
use chaos_runtime::{ChaosRun, chaos_test};

#[chaos_test(
    fault = "clock_skew",
    target = "postgres",
    offset = "+60m",
    duration = "4s",
    recover_within = "2s",
    system = chaos_trading::system_with_a_skewable_database_clock
)]
async fn an_hour_of_database_clock_skew_reorders_created_at_but_fails_nothing(run: ChaosRun) {
    let tl = run.timeline();
    let text = tl.render_text();
    let skewed = run.events("clock_skewed");
    let s = skewed
        .first()
        .unwrap_or_else(|| panic!("no clock_skewed event:\n{text}"));
    let measured: i64 = s.detail["measured_ms"].parse().unwrap();
    let left: i64 = run.events("clock_restored")[0].detail["left_ms"]
        .parse()
        .unwrap();
    eprintln!(
        "the database's clock moved {measured} ms (asked 3600000), {left} ms left after heal"
    );
    assert!((measured - 3_600_000).abs() <= 1_000, "moved {measured} ms");
    assert!(left.abs() <= 1_000, "{left} ms left after heal");

    let fault = run.metrics().phase("fault").expect("a fault phase");
    assert!(fault.ok > 0, "no order during the skew:\n{text}");
    assert_eq!(
        fault.failed, 0,
        "orders failed under a skewed clock:\n{text}"
    );
    assert!(run.lost_writes().is_empty(), "{:?}", run.lost_writes());

    // The ledger: orders in id order, and where created_at went back in time.
    let db = run
        .postgres("postgres")
        .await
        .expect("a connection to the ledger");
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE created_at > now() + interval '50 minutes'),
                    count(*) FILTER (WHERE gap > interval '50 minutes'),
                    coalesce(max(extract(epoch FROM gap)), 0)::float8
             FROM (SELECT created_at,
                          lag(created_at) OVER (ORDER BY id) - created_at AS gap
                   FROM orders) o",
            &[],
        )
        .await
        .expect("the ledger query");
    let (ahead, backwards, gap): (i64, i64, f64) = (row.get(0), row.get(1), row.get(2));
    eprintln!(
        "ledger: {ahead} orders stamped about an hour ahead; in id order created_at went back \
         by more than 50 minutes {backwards} time(s), by up to {gap:.1} s"
    );
    assert!(ahead > 0, "no order carries the skewed time:\n{text}");
    assert!(
        backwards >= 1 && gap > 3_500.0,
        "created_at never went back by about an hour ({backwards}, {gap:.1} s):\n{text}"
    );
}
