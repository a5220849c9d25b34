//! Latency and jitter on a service's traffic, by one of two mechanisms:
//!
//! - `proxy`: a `latency` toxic on the fault proxy that sits in front of the target (the stack
//!   puts it there for every `latency` fault; it fronts PostgreSQL and Redis), set over the
//!   proxy's Toxiproxy API on its published 127.0.0.1 port. `direction` is seen from the
//!   target: `egress` (its responses) is the proxy's `downstream` stream, `ingress` (the
//!   requests it receives) is `upstream`, `both` adds one toxic per stream. At heal the toxics
//!   are removed and the proxy's counters must show that they acted.
//! - `netem`: `tc qdisc add dev eth0 root netem delay L J` inside the target's network
//!   namespace (opened once at injection, the heal uses the same handle; see `netns`); ingress through an `ifb` device the ingress traffic is
//!   redirected to. Needs `sch_netem` (and `ifb` for ingress) in the kernel.
//!
//! `CHAOS_LATENCY=proxy|netem|auto` picks one (default `auto`: netem when a throwaway network
//! namespace shows the kernel has what it needs, the proxy otherwise). The mechanism that acted,
//! and why auto chose it, is the fault's `mechanism` in the timeline.
use super::tc;
use super::{FaultCx, FaultError, Healing, Injected};
use crate::clock::mono_ns;
use crate::observe::{Observation, Source};
use crate::progress;
use crate::spec::FaultSpec;
use crate::stack::PROXY_API_PORT;
use crate::system::PROXY_ROLE;
use chaos_proxy::{ProxyClient, Stream, Toxic};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;

/// Environment variable choosing the mechanism.
pub const ENV: &str = "CHAOS_LATENCY";
/// Latency when the fault does not say (ms).
pub const DEFAULT_LATENCY_MS: u64 = 100;

/// Whether `CHAOS_LATENCY` asks for netem and nothing else.
pub(crate) fn forced_netem() -> bool {
    std::env::var(ENV).is_ok_and(|v| Mechanism::parse(&v) == Some(Mechanism::Netem))
}

/// Which mechanism to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// The fault proxy's latency toxic.
    Proxy,
    /// tc netem in the target's network namespace.
    Netem,
    /// Netem where the kernel has it, the proxy otherwise.
    Auto,
}

impl Mechanism {
    /// Parses `proxy`, `netem` or `auto`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "proxy" | "toxiproxy" => Some(Self::Proxy),
            "netem" | "tc" => Some(Self::Netem),
            "auto" | "" => Some(Self::Auto),
            _ => None,
        }
    }

    fn from_env() -> Result<Self, FaultError> {
        match std::env::var(ENV) {
            Err(_) => Ok(Self::Auto),
            Ok(v) => Self::parse(&v).ok_or_else(|| FaultError::Other {
                fault: "latency".into(),
                what: format!("{ENV}={v:?} is not a mechanism; use {ENV}=proxy, netem or auto"),
            }),
        }
    }
}

/// What a latency fault asks for, from its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Base delay, ms.
    pub latency_ms: u64,
    /// Half-width of the uniform jitter, ms.
    pub jitter_ms: u64,
    /// Delay the target's responses (its egress).
    pub egress: bool,
    /// Delay the requests it receives (its ingress).
    pub ingress: bool,
}

impl Shape {
    /// From `latency_ms`, `jitter_ms` and `direction` (default egress, as Toxiproxy's downstream).
    pub fn of(spec: &FaultSpec) -> Self {
        let ms = |k: &str, d: u64| spec.param(k).and_then(|v| v.parse().ok()).unwrap_or(d);
        let direction = spec.param("direction").unwrap_or("egress");
        Shape {
            latency_ms: ms("latency_ms", DEFAULT_LATENCY_MS),
            jitter_ms: ms("jitter_ms", 0),
            egress: direction != "ingress",
            ingress: direction != "egress",
        }
    }

    /// The proxy streams that carry the asked directions.
    pub fn streams(&self) -> Vec<Stream> {
        let mut v = Vec::new();
        if self.egress {
            v.push(Stream::Downstream);
        }
        if self.ingress {
            v.push(Stream::Upstream);
        }
        v
    }

    fn direction(&self) -> &'static str {
        match (self.egress, self.ingress) {
            (true, true) => "both",
            (false, true) => "ingress",
            _ => "egress",
        }
    }
}

fn toxic_name(stream: Stream) -> String {
    format!("chaos-latency-{stream}")
}

fn other(target: &str, what: impl Into<String>) -> FaultError {
    FaultError::Other {
        fault: format!("latency {target}"),
        what: what.into(),
    }
}

/// The mechanism a latency fault uses, chosen before the run decides to inject it: `auto`'s
/// netem probe starts processes in a throwaway namespace, which is no part of injecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chosen {
    /// The fault proxy; with why `auto` did not pick netem.
    Proxy(Option<String>),
    /// tc netem in the target's namespace.
    Netem,
}

/// Chooses the mechanism (`CHAOS_LATENCY`, and for `auto` whether this kernel has netem).
pub async fn choose(spec: &FaultSpec) -> Result<Chosen, FaultError> {
    let shape = Shape::of(spec);
    Ok(match Mechanism::from_env()? {
        Mechanism::Proxy => Chosen::Proxy(None),
        Mechanism::Netem => Chosen::Netem,
        Mechanism::Auto => match netem_support(shape.ingress).await {
            Ok(()) => Chosen::Netem,
            Err(why) => {
                progress::line(
                    "fault",
                    &format!("latency {}: {why}; using the fault proxy", spec.target),
                );
                Chosen::Proxy(Some(why))
            }
        },
    })
}

/// Injects latency with the mechanism chosen already.
pub async fn inject_chosen(
    cx: &Arc<FaultCx>,
    spec: &FaultSpec,
    chosen: Chosen,
) -> Result<Injected, FaultError> {
    let shape = Shape::of(spec);
    match chosen {
        Chosen::Proxy(note) => proxy(cx, spec.target, shape, note).await,
        Chosen::Netem => netem(cx, spec.target, shape).await,
    }
}

/// Whether this kernel can run netem (and ifb for ingress), tried in a throwaway network
/// namespace so nothing of the stack is touched. `Err` says what is missing, in stable words.
pub async fn netem_support(ingress: bool) -> Result<(), String> {
    let mut script = "tc qdisc add dev lo root netem delay 1ms".to_string();
    if ingress {
        script.push_str(" && ip link add chaos-probe type ifb");
    }
    match Command::new("unshare")
        .args(["-n", "--", "sh", "-c", &script])
        .output()
        .await
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            Err(if err.contains("qdisc kind is unknown") {
                "auto: no sch_netem in this kernel".into()
            } else if ingress && err.contains("ifb") {
                "auto: no ifb device support in this kernel (netem ingress)".into()
            } else {
                format!(
                    "auto: netem probe failed ({})",
                    err.lines().next().unwrap_or("").trim()
                )
            })
        }
        Err(e) => Err(format!(
            "auto: cannot run unshare/tc for the netem probe ({})",
            e.kind()
        )),
    }
}

fn proxy_event(cx: &FaultCx, kind: &str, target: &str, detail: &[(&str, String)]) {
    let _ = cx.sink.send(Observation {
        at_ns: mono_ns(),
        kind: kind.into(),
        source: Source::Proxy,
        container: Some(target.into()),
        detail: detail
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    });
}

/// The latency toxic(s) on the fault proxy in front of the target.
async fn proxy(
    cx: &Arc<FaultCx>,
    target: &str,
    shape: Shape,
    auto_note: Option<String>,
) -> Result<Injected, FaultError> {
    if cx.stack.service(PROXY_ROLE).is_none() {
        return Err(FaultError::Unsupported {
            fault: format!("latency {target}"),
            why: "the stack has no fault proxy".into(),
            fix: "declare the latency fault in #[chaos_test] (the runtime then starts the proxy in front of the target)"
                .into(),
        });
    }
    let api = ProxyClient::new(cx.stack.addr(PROXY_ROLE, PROXY_API_PORT))
        .with_timeout(Duration::from_secs(5));
    let before = match api.proxy(target).await {
        Ok(p) => p.stats.unwrap_or_default(),
        Err(e) if e.status() == Some(404) => {
            return Err(FaultError::Unsupported {
                fault: format!("latency {target}"),
                why: format!("the fault proxy does not front {target} in this run"),
                fix: "declare the latency fault in the test's attribute (the runtime then puts the proxy in front of every declared port of the target)".into(),
            });
        }
        Err(e) => return Err(other(target, format!("asking the fault proxy: {e}"))),
    };
    let streams = shape.streams();
    for s in &streams {
        let toxic = Toxic::latency(toxic_name(*s), *s, shape.latency_ms, shape.jitter_ms);
        api.add_toxic(target, &toxic)
            .await
            .map_err(|e| other(target, format!("adding the {s} latency toxic: {e}")))?;
        cx.event(
            "toxic_added",
            target,
            &[
                ("direction", shape.direction().into()),
                ("stream", s.to_string()),
                ("latency_ms", shape.latency_ms.to_string()),
                ("jitter_ms", shape.jitter_ms.to_string()),
            ],
        );
    }
    // In effect: every toxic is on the proxy (which applies them to open connections too).
    super::in_effect();
    let names: Vec<&str> = streams.iter().map(|s| s.as_str()).collect();
    let mut mechanism = format!("fault proxy latency toxic ({})", names.join("+"));
    if let Some(note) = auto_note {
        mechanism.push_str(&format!("; {note}"));
    }
    let target = target.to_string();
    Ok(Injected {
        mechanism,
        healing: Healing::new(move |cx, _| async move {
            let mut failed = None;
            for s in &streams {
                match api.remove_toxic(&target, &toxic_name(*s)).await {
                    Ok(()) => {}
                    Err(e) if e.status() == Some(404) => {}
                    Err(e) => failed = Some(format!("removing the {s} latency toxic: {e}")),
                }
            }
            if let Some(f) = failed {
                return Err(other(&target, f));
            }
            // Undone: the toxics are gone (the counters read next prove they acted).
            super::in_effect();
            cx.event(
                "toxic_removed",
                &target,
                &[("direction", shape.direction().into())],
            );
            let after = api
                .proxy(&target)
                .await
                .map_err(|e| other(&target, format!("reading the proxy's stats: {e}")))?
                .stats
                .unwrap_or_default();
            let applied = after.toxics_applied.saturating_sub(before.toxics_applied);
            proxy_event(
                &cx,
                "proxy_stats",
                &target,
                &[
                    ("toxics_applied", applied.to_string()),
                    (
                        "bytes_upstream",
                        after
                            .bytes_upstream
                            .saturating_sub(before.bytes_upstream)
                            .to_string(),
                    ),
                    (
                        "bytes_downstream",
                        after
                            .bytes_downstream
                            .saturating_sub(before.bytes_downstream)
                            .to_string(),
                    ),
                    ("connections_active", after.connections_active.to_string()),
                ],
            );
            if applied == 0 {
                return Err(other(
                    &target,
                    "the latency toxic never acted: no traffic to the target went through the fault proxy while it held",
                ));
            }
            Ok(())
        }),
    })
}

fn netem_args(shape: Shape) -> Vec<String> {
    let mut v = vec![
        "netem".into(),
        "delay".into(),
        format!("{}ms", shape.latency_ms),
    ];
    if shape.jitter_ms > 0 {
        v.push(format!("{}ms", shape.jitter_ms));
    }
    v
}

/// `qdisc netem 8001: root ... \n Sent 1234 bytes 17 pkt (dropped 0, ...)` -> 17.
pub fn parse_netem_sent(tc_output: &str) -> u64 {
    tc::parse_sent(tc_output, "netem").1
}

fn ways(shape: Shape) -> tc::Ways {
    tc::Ways {
        egress: shape.egress,
        ingress: shape.ingress,
    }
}

/// tc netem inside the target's network namespace.
async fn netem(cx: &Arc<FaultCx>, target: &str, shape: Shape) -> Result<Injected, FaultError> {
    let pid = cx
        .stack
        .watched(target)
        .await
        .map_err(|e| other(target, format!("finding its pid: {e}")))?
        .pid;
    if pid == 0 {
        return Err(other(target, "the target is not running"));
    }
    // The namespace is taken now and the heal uses this handle: never a pid looked up again.
    let ns = cx
        .stack
        .netns(pid, target)
        .await
        .map_err(|e| FaultError::Unsupported {
            fault: format!("latency {target}"),
            why: format!("cannot enter the network namespace of {target}: {e}"),
            fix: format!("{}, or use {ENV}=proxy", crate::agent::FIX),
        })?;
    let delay = netem_args(shape);
    let delay: Vec<&str> = delay.iter().map(String::as_str).collect();
    if let Err(e) = tc::install(&ns, ways(shape), &delay).await {
        return Err(FaultError::Unsupported {
            fault: format!("latency {target}"),
            why: format!("tc netem failed in the target's network namespace: {e}"),
            fix: format!("load sch_netem (and ifb for ingress), or use {ENV}=proxy"),
        });
    }
    // In effect: the qdiscs are installed.
    super::in_effect();
    cx.event(
        "netem_added",
        target,
        &[
            ("direction", shape.direction().into()),
            ("latency_ms", shape.latency_ms.to_string()),
            ("jitter_ms", shape.jitter_ms.to_string()),
        ],
    );
    let mechanism = match shape.direction() {
        "egress" => "tc netem in the target's netns (eth0 egress)",
        "ingress" => "tc netem in the target's netns (ingress via ifb)",
        _ => "tc netem in the target's netns (eth0 egress + ingress via ifb)",
    };
    let target = target.to_string();
    Ok(Injected {
        mechanism: mechanism.into(),
        healing: Healing::new(move |cx, _| async move {
            let mut delayed = 0;
            if shape.egress {
                delayed += tc::sent(&ns, "eth0", "netem").await.1;
            }
            if shape.ingress {
                delayed += tc::sent(&ns, tc::IFB, "netem").await.1;
            }
            let errors = tc::remove(&ns, ways(shape)).await;
            super::in_effect();
            cx.event(
                "netem_removed",
                &target,
                &[("delayed_packets", delayed.to_string())],
            );
            if !errors.is_empty() {
                return Err(other(
                    &target,
                    format!("removing netem: {}", errors.join("; ")),
                ));
            }
            if delayed == 0 {
                return Err(other(&target, "netem delayed no packet while it held"));
            }
            Ok(())
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(params: &'static [(&'static str, &'static str)]) -> FaultSpec {
        FaultSpec {
            kind: "latency",
            target: "redis",
            after_ms: 0,
            duration_ms: 1000,
            params,
        }
    }

    #[test]
    fn direction_maps_to_proxy_streams() {
        let s = Shape::of(&spec(&[("latency_ms", "100"), ("direction", "egress")]));
        assert_eq!((s.latency_ms, s.jitter_ms), (100, 0));
        assert_eq!(s.streams(), vec![Stream::Downstream]);
        assert_eq!(
            Shape::of(&spec(&[("direction", "ingress")])).streams(),
            vec![Stream::Upstream]
        );
        assert_eq!(
            Shape::of(&spec(&[("direction", "both")])).streams(),
            vec![Stream::Downstream, Stream::Upstream]
        );
        // Toxiproxy's default stream is downstream: the target's responses.
        let d = Shape::of(&spec(&[("jitter_ms", "5")]));
        assert_eq!(
            (d.latency_ms, d.jitter_ms, d.streams()),
            (DEFAULT_LATENCY_MS, 5, vec![Stream::Downstream])
        );
    }

    #[test]
    fn mechanism_names() {
        assert_eq!(Mechanism::parse("netem"), Some(Mechanism::Netem));
        assert_eq!(Mechanism::parse(" Proxy "), Some(Mechanism::Proxy));
        assert_eq!(Mechanism::parse(""), Some(Mechanism::Auto));
        assert_eq!(Mechanism::parse("carrier-pigeon"), None);
    }

    #[test]
    fn netem_args_carry_jitter_only_when_asked() {
        let mut s = Shape::of(&spec(&[("latency_ms", "100")]));
        assert_eq!(netem_args(s), ["netem", "delay", "100ms"]);
        s.jitter_ms = 20;
        assert_eq!(netem_args(s), ["netem", "delay", "100ms", "20ms"]);
    }

    #[test]
    fn parses_netem_packet_counts() {
        let out = "qdisc netem 8001: root refcnt 2 limit 1000 delay 100ms\n Sent 4321 bytes 37 pkt (dropped 0, overlimits 0 requeues 0)\n backlog 0b 0p requeues 0\nqdisc noqueue 0: dev lo root refcnt 2\n Sent 99 bytes 3 pkt (dropped 0)\n";
        assert_eq!(parse_netem_sent(out), 37);
        assert_eq!(
            parse_netem_sent("qdisc noqueue 0: root\n Sent 5 bytes 1 pkt\n"),
            0
        );
    }
}
