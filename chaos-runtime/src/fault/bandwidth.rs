//! Bandwidth: a token-bucket limit (`tbf`) on the target's link to the stack, each way asked,
//! inside its network namespace (egress on `eth0`, ingress through an `ifb` device: see
//! `fault/tc.rs`). No netem involved.
//!
//! The rate is measured, not assumed: for the first [`MEASURE_FOR`] of the fault the runtime
//! pushes a bulk TCP transfer through each limited direction, between the target and one peer of
//! the stack, from sockets made inside their namespaces (nothing leaves the stack network), and
//! reports per direction (event `bandwidth_measured`) what the limiting qdisc sent per second
//! over the transfer (`*_wire_bytes_per_s`: frames, headers included, the median of 250 ms
//! windows — the limit itself; each window's in `*_wire_windows`) and
//! the TCP payload the receiver got (`*_bytes_per_s`, a few percent less: the frames' headers,
//! and whatever TCP had to send again). The transfer then stops, so the rest of the fault shows the system alone on the
//! narrowed link.
use super::netns::Netns;
use super::network::Direction;
use super::tc;
use super::{FaultCx, FaultError, Healing, Injected};
use crate::spec::FaultSpec;
use std::sync::Arc;
use std::time::Duration;

/// How long the bulk transfer of the measurement runs (its first 0.7 s is left out).
pub const MEASURE_FOR: Duration = Duration::from_millis(2_500);
/// The start of the transfer that is not counted: TCP's slow start and the bucket's burst.
const WARM_UP: Duration = Duration::from_millis(700);
/// Rate when the fault does not say: 1 MiB/s.
pub const DEFAULT_RATE: u64 = 1 << 20;

/// `tbf` arguments for `bytes_per_s`: a burst of 20 ms of traffic (at least 16 KiB, so a
/// full-size segment always fits) and at most 50 ms of queue.
pub fn tbf_args(bytes_per_s: u64) -> Vec<String> {
    let burst = (bytes_per_s / 50).max(16 * 1024);
    vec![
        "tbf".into(),
        "rate".into(),
        format!("{}bit", bytes_per_s * 8),
        "burst".into(),
        format!("{burst}b"),
        "latency".into(),
        "50ms".into(),
    ]
}

/// Bytes a second from receiver samples `(since start, cumulative bytes)`, counted after
/// `warm_up`; `None` with too little to tell.
pub fn rate_after(samples: &[(Duration, u64)], warm_up: Duration) -> Option<f64> {
    let first = samples.iter().find(|(t, _)| *t >= warm_up)?;
    let last = samples.last()?;
    let secs = (last.0 - first.0).as_secs_f64();
    (secs >= 0.5).then(|| (last.1 - first.1) as f64 / secs)
}

/// The rate of each 250 ms window after `warm_up` in cumulative samples `(since start, bytes)`
/// (a window ends at the first sample at least that long after its start), and their median;
/// `None` with fewer than three windows.
///
/// The limit's rate is the median window's: a window in which the senders stalled (a loaded
/// machine keeping the measuring threads or their timers from running) shows the senders, not
/// the limit, and a window right after one shows the bucket's burst; the median shows neither.
pub fn median_window_rate(
    samples: &[(Duration, u64)],
    warm_up: Duration,
) -> Option<(f64, Vec<f64>)> {
    let mut rates = Vec::new();
    let mut from = samples.iter().find(|(t, _)| *t >= warm_up)?;
    for s in samples {
        if s.0 >= from.0 + WINDOW {
            rates.push((s.1 - from.1) as f64 / (s.0 - from.0).as_secs_f64());
            from = s;
        }
    }
    if rates.len() < 3 {
        return None;
    }
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    Some((sorted[sorted.len() / 2], rates))
}

/// The span of one rate in [`median_window_rate`]: at 1 MiB/s, ~175 full frames.
const WINDOW: Duration = Duration::from_millis(250);

/// What one transfer measured after the warm-up, bytes a second.
struct Measured {
    /// TCP payload the receiver got.
    goodput: f64,
    /// What the limiting qdisc sent (frames, headers included), the median window's: the limit
    /// itself.
    wire: f64,
    /// Each window's rate on the wire, in time order.
    windows: Vec<f64>,
}

/// Parallel connections of one transfer: one flow, even paced, leaves the link idle now and
/// then (93-98 % of the rate on the wire); four paced ones keep it busy (99.3-100.3 %).
const STREAMS: usize = 4;

/// The transfer's pace, per cent of the asked rate: above it, so the bucket always has
/// something queued and is what limits; not far above, so its queue never overflows. On an
/// egress limit a flow whose segment the full queue refuses has nothing in flight to clock it
/// and waits for a probe timer: unpaced, four flows once left the link idle a tenth of the
/// time (90.0 % on the wire, a CI run).
const PACE_PCT: u64 = 125;

/// One bulk transfer, made by the run's host agent: `from` opens [`STREAMS`] connections to a
/// listener made in `to`'s namespace at `to_ip` and writes for `MEASURE_FOR`, paced at
/// [`PACE_PCT`] of `rate`; the receivers' rate after the warm-up and, over the same samples,
/// the rate the `tbf` on device `dev` of `shaper` sent. The agent reads both counts at the same
/// instants (the qdisc's over rtnetlink, in microseconds) where this process used to time a
/// `tc` run taking 10-100 ms under load.
async fn transfer(
    from: &Netns,
    to: &Netns,
    to_ip: &str,
    shaper: &Netns,
    dev: &str,
    rate: u64,
) -> Result<Measured, String> {
    let (agent, from) = from.held()?;
    let (_, to) = to.held()?;
    let (_, shaper) = shaper.held()?;
    let reply = agent
        .call(chaos_agent::Op::Transfer {
            from,
            to,
            to_ip: to_ip.to_string(),
            streams: STREAMS as u32,
            millis: MEASURE_FOR.as_millis() as u64,
            count: Some((shaper, dev.to_string(), "tbf".to_string())),
            pace: rate * PACE_PCT / 100,
        })
        .await?;
    let (samples, sent) = match reply {
        chaos_agent::Reply::Samples { samples, sent } => (samples, sent),
        other => return Err(format!("the host agent answered transfer with {other:?}")),
    };
    let at = |(ms, _): &(u64, u64)| Duration::from_millis(*ms);
    let received: Vec<(Duration, u64)> = samples.iter().map(|s| (at(s), s.1)).collect();
    let got = received.last().map_or(0, |s| s.1);
    let goodput = rate_after(&received, WARM_UP)
        .ok_or_else(|| format!("too little arrived ({got} bytes)"))?;
    let on_wire: Vec<(Duration, u64)> = samples.iter().map(at).zip(sent).collect();
    let (wire, windows) = median_window_rate(&on_wire, WARM_UP)
        .ok_or_else(|| format!("the host agent did not count what the tbf on {dev} sent"))?;
    Ok(Measured {
        goodput,
        wire,
        windows,
    })
}

/// Injects `bandwidth`: tbf at `rate_bytes` per second each way asked (default both).
pub async fn inject(cx: &Arc<FaultCx>, spec: &FaultSpec) -> Result<Injected, FaultError> {
    let target = spec.target.to_string();
    let fault = format!("bandwidth {target}");
    let direction = Direction::parse(spec.param("direction")).ok_or_else(|| FaultError::Other {
        fault: fault.clone(),
        what: format!("direction {:?}", spec.param("direction")),
    })?;
    let rate: u64 = match spec.param("rate_bytes") {
        Some(r) => r.parse().map_err(|_| FaultError::Other {
            fault: fault.clone(),
            what: format!("rate {r:?} is not a number of bytes"),
        })?,
        None => DEFAULT_RATE,
    };
    let ways = tc::Ways {
        egress: matches!(direction, Direction::Egress | Direction::Both),
        ingress: matches!(direction, Direction::Ingress | Direction::Both),
    };
    let pid = cx
        .stack
        .watched(&target)
        .await
        .map_err(|source| FaultError::Stack {
            fault: fault.clone(),
            source,
        })?
        .pid;
    if pid == 0 {
        return Err(FaultError::Other {
            fault,
            what: "the target is not running: it has no link to limit".into(),
        });
    }
    let ns = cx
        .stack
        .netns(pid, &target)
        .await
        .map_err(|e| FaultError::Unsupported {
            fault: fault.clone(),
            why: format!("cannot enter the network namespace of {target}: {e}"),
            fix: crate::agent::FIX.into(),
        })?;
    let args = tbf_args(rate);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tc::install(&ns, ways, &args)
        .await
        .map_err(|e| FaultError::Unsupported {
            fault: fault.clone(),
            why: format!("tc tbf failed in the target's network namespace: {e}"),
            fix: "install iproute2 on the Docker host; ingress limits also need the ifb module (`modprobe ifb`)".into(),
        })?;
    let ns = Arc::new(ns);
    let measuring = tokio::spawn(measure(cx.clone(), target.clone(), ns.clone(), ways, rate));
    let mechanism = format!(
        "tc tbf rate {} KiB/s in the target's netns ({})",
        rate / 1024,
        match direction {
            Direction::Egress => "eth0 egress",
            Direction::Ingress => "ingress via ifb",
            Direction::Both => "eth0 egress + ingress via ifb",
        }
    );
    Ok(Injected {
        mechanism,
        healing: Healing::new(move |cx, _| async move {
            // A fault shorter than the measurement ends it.
            measuring.abort();
            let mut detail = vec![("asked_bytes_per_s", rate.to_string())];
            for (on, dev, key) in [
                (ways.egress, "eth0", "egress_qdisc_bytes"),
                (ways.ingress, tc::IFB, "ingress_qdisc_bytes"),
            ] {
                if on {
                    detail.push((key, tc::sent(&ns, dev, "tbf").await.0.to_string()));
                }
            }
            let errors = tc::remove(&ns, ways).await;
            cx.event("bandwidth_restored", &target, &detail);
            if !errors.is_empty() {
                return Err(FaultError::Other {
                    fault: format!("heal bandwidth {target}"),
                    what: format!("removing tbf: {}", errors.join("; ")),
                });
            }
            Ok(())
        }),
    })
}

/// The measurement transfers, each limited way at once; the event `bandwidth_measured`.
async fn measure(cx: Arc<FaultCx>, target: String, ns: Arc<Netns>, ways: tc::Ways, rate: u64) {
    let mut detail = Vec::new();
    match super::probe::peer(&cx, &target).await {
        Err(why) => detail.push(("not_measured", why)),
        Ok(super::probe::Peer {
            target_ip,
            role,
            ip: peer_ip,
            netns: peer,
        }) => {
            detail.push(("peer", role));
            let ingress = async {
                if ways.ingress {
                    Some(transfer(&peer, &ns, &target_ip, &ns, tc::IFB, rate).await)
                } else {
                    None
                }
            };
            let egress = async {
                if ways.egress {
                    Some(transfer(&ns, &peer, &peer_ip, &ns, "eth0", rate).await)
                } else {
                    None
                }
            };
            let (ingress, egress) = tokio::join!(ingress, egress);
            for (got, [key, wire, windows], way) in [
                (
                    ingress,
                    [
                        "ingress_bytes_per_s",
                        "ingress_wire_bytes_per_s",
                        "ingress_wire_windows",
                    ],
                    "ingress",
                ),
                (
                    egress,
                    [
                        "egress_bytes_per_s",
                        "egress_wire_bytes_per_s",
                        "egress_wire_windows",
                    ],
                    "egress",
                ),
            ] {
                match got {
                    Some(Ok(m)) => {
                        detail.push((key, format!("{:.0}", m.goodput)));
                        detail.push((wire, format!("{:.0}", m.wire)));
                        let each: Vec<String> =
                            m.windows.iter().map(|r| format!("{r:.0}")).collect();
                        detail.push((windows, each.join(" ")));
                    }
                    Some(Err(why)) => detail.push(("not_measured", format!("{way}: {why}"))),
                    None => {}
                }
            }
        }
    }
    cx.event("bandwidth_measured", &target, &detail);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_takes_bits_and_a_burst_that_fits_a_segment() {
        assert_eq!(
            tbf_args(1 << 20).join(" "),
            "tbf rate 8388608bit burst 20971b latency 50ms"
        );
        assert_eq!(
            tbf_args(64 * 1024).join(" "),
            "tbf rate 524288bit burst 16384b latency 50ms"
        );
    }

    #[test]
    fn the_rate_leaves_the_warm_up_out() {
        let ms = Duration::from_millis;
        // 10 MB in the first 100 ms (a burst), then 1 MB/s.
        let samples = [
            (ms(100), 10_000_000),
            (ms(1000), 10_900_000),
            (ms(2000), 11_900_000),
        ];
        let r = rate_after(&samples, ms(700)).unwrap();
        assert!((r - 1_000_000.0).abs() < 1.0, "{r}");
        assert_eq!(rate_after(&samples[..2], ms(700)), None);
        assert_eq!(rate_after(&[], ms(0)), None);
    }

    #[test]
    fn the_limit_is_the_median_window_not_a_stall_or_a_burst() {
        let ms = Duration::from_millis;
        // 1 MB/s sampled every 50 ms from 0.7 s, with the senders stalled from 1.2 to 1.45 s
        // and the bucket's 20 kB burst once they are back.
        let mut samples = vec![(ms(100), 500_000u64)];
        let mut bytes = 500_000u64;
        for i in 14..=50u64 {
            let t = i * 50;
            if !(1200..1450).contains(&t) {
                bytes += 50_000;
            }
            if t == 1500 {
                bytes += 20_000;
            }
            samples.push((ms(t), bytes));
        }
        let (median, windows) = median_window_rate(&samples, ms(700)).unwrap();
        assert!((median - 1_000_000.0).abs() < 1.0, "{median} {windows:?}");
        assert_eq!(windows.len(), 7);
        assert!(windows.iter().any(|r| *r < 900_000.0), "{windows:?}");
        // The whole span's average would have read the stall as the limit.
        assert!(rate_after(&samples, ms(700)).unwrap() < 900_000.0);
        // Fewer than three windows: too little to tell.
        assert_eq!(median_window_rate(&samples[..12], ms(700)), None);
    }
}
