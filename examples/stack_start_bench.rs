//! Stack start benchmark (issue 13): starts the bundled trading stack N times, each time from
//! nothing (network, volume, containers) to every readiness probe passing, removes it, and
//! prints the ready time of each start (the `ready in X s` figure every chaos run prints) with
//! its median, p90, min and max, plus where the time went per service (medians).
//!
//!   scripts/stack-start-bench [N] [--proxy ROLE]... [--each]
//!
//! `--proxy ROLE` puts the fault proxy in front of ROLE, as a `latency` fault does; `--each`
//! prints every start's breakdown, not only the medians. The starts hold a chaos slot like an
//! experiment, so they do not overlap another run's stack on this machine. Not a timed test:
//! nothing is asserted, the figures are for BENCHMARKS.md.
use chaos_runtime::stack::{Plan, Stack, StartTiming};
use std::time::{Duration, Instant};

struct Args {
    n: usize,
    plan: Plan,
    each: bool,
}

fn args() -> Args {
    let mut a = Args {
        n: 10,
        plan: Plan::default(),
        each: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--proxy" => a
                .plan
                .behind_proxy
                .push(it.next().expect("--proxy needs a role")),
            "--each" => a.each = true,
            "-h" | "--help" => {
                println!("usage: stack_start_bench [N] [--proxy ROLE]... [--each]");
                std::process::exit(0);
            }
            n => a.n = n.parse().expect("N is a number of starts"),
        }
    }
    a
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Median of one column over the runs, `?` when Docker's events were missing.
fn column(
    runs: &[StartTiming],
    role: &str,
    f: impl Fn(&chaos_runtime::stack::ServiceTiming) -> Option<f64>,
) -> String {
    let v: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.services.iter().find(|s| s.role == role))
        .filter_map(&f)
        .collect();
    if v.is_empty() {
        "?".into()
    } else {
        format!("{:.0}", median(&sorted(v)))
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let docker = chaos_runtime::docker::connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The image is built on first use (about a minute): not part of any start.
    let tag = chaos_runtime::image::ensure(&docker)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "stack start bench: trading system, {} start(s), proxy in front of {:?}, image {tag}",
        args.n, args.plan.behind_proxy
    );
    let mut ready = Vec::new();
    let mut runs = Vec::new();
    for i in 0..args.n {
        let system = chaos_trading::system();
        let run_id = format!("bench-{:x}-{i}", std::process::id());
        let slot = chaos_runtime::slots::acquire()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        let started = tokio::select! {
            s = Stack::start(&docker, &system, &args.plan, &run_id) => s,
            _ = tokio::signal::ctrl_c() => {
                let n = chaos_runtime::stack::remove_run(&docker, &run_id).await;
                eprintln!("interrupted; removed {n} resource(s) of {run_id}");
                std::process::exit(130);
            }
        };
        let took = t.elapsed().as_secs_f64() * 1000.0;
        let stack = started.unwrap_or_else(|e| panic!("start {i} failed: {e}"));
        let timing = stack.start_breakdown().await;
        stack.teardown().await;
        drop(slot);
        println!(
            "start {:>2}: ready in {:>5.0} ms (the stack's own figure {:.0} ms)",
            i + 1,
            took,
            timing.ready_ms
        );
        if args.each {
            for line in timing.lines() {
                println!("    {line}");
            }
        }
        ready.push(took);
        runs.push(timing);
        // Let the daemon finish the removal's work before the next start.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let s = sorted(ready);
    println!(
        "ready (ms) over {} starts: median {:.0}  p90 {:.0}  min {:.0}  max {:.0}",
        s.len(),
        median(&s),
        pct(&s, 0.9),
        s[0],
        s[s.len() - 1]
    );
    let images = median(&sorted(runs.iter().map(|r| r.images_ms).collect()));
    let resources = median(&sorted(runs.iter().map(|r| r.resources_ms).collect()));
    println!(
        "medians (ms from the first Docker call): images {images:.0}, network+volumes done {resources:.0}"
    );
    println!("  role       begin  created  started     up  ready");
    let mut roles: Vec<String> = runs
        .first()
        .map(|r| r.services.iter().map(|s| s.role.clone()).collect())
        .unwrap_or_default();
    roles.sort_by(|a, b| {
        let key = |role: &str| {
            column(&runs, role, |s| Some(s.ready_ms))
                .parse::<f64>()
                .unwrap_or(0.0)
        };
        key(a).total_cmp(&key(b))
    });
    for role in roles {
        println!(
            "  {role:<10} {:>5}  {:>7}  {:>7}  {:>5}  {:>5}",
            column(&runs, &role, |s| Some(s.begin_ms)),
            column(&runs, &role, |s| s.created_ms),
            column(&runs, &role, |s| s.started_ms),
            column(&runs, &role, |s| Some(s.up_ms)),
            column(&runs, &role, |s| Some(s.ready_ms)),
        );
    }
}
