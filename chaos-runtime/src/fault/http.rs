//! HTTP faults: `http_abort`, `http_delay`, `http_reset`, per request, in the fault proxy.
//!
//! The runtime puts the fault proxy in front of the target's declared ports when the test
//! declares one of these faults (as for `latency`), so every other service reaches the target
//! through it. At injection one `http` toxic goes on the target's proxy: of the requests
//! matching `method` and the `path` prefix, an exact share `ratio` (default all for a delay,
//! 10 % otherwise) is answered by the proxy with `status` (default 503), held `latency`
//! (default 100 ms) or reset. Connections opened while the toxic is present are served
//! request by request; the heal removes it and records how many requests it hit.
use super::{FaultCx, FaultError, Healing, Injected};
use crate::spec::FaultSpec;
use crate::stack::PROXY_API_PORT;
use crate::system::PROXY_ROLE;
use chaos_proxy::{ProxyClient, Stream, Toxic, ToxicKind};
use std::time::Duration;

/// The toxic's name on the target's proxy.
const TOXIC: &str = "chaos_http";

/// The toxic a fault spec asks for.
pub fn toxic_of(spec: &FaultSpec) -> Result<Toxic, String> {
    let action = match spec.kind {
        "http_abort" => "abort",
        "http_delay" => "delay",
        "http_reset" => "reset",
        other => return Err(format!("{other} is not an HTTP fault")),
    };
    let default_ratio = if action == "delay" { "100" } else { "10" };
    let percent: f64 = spec
        .param("ratio_pct")
        .unwrap_or(default_ratio)
        .parse()
        .map_err(|e| format!("ratio: {e}"))?;
    let status: u16 = spec
        .param("status")
        .unwrap_or("503")
        .parse()
        .map_err(|e| format!("status: {e}"))?;
    let delay: u64 = spec
        .param("latency_ms")
        .unwrap_or("100")
        .parse()
        .map_err(|e| format!("latency: {e}"))?;
    Ok(Toxic::new(
        TOXIC,
        Stream::Upstream,
        ToxicKind::Http {
            action: action.into(),
            percent,
            status,
            delay,
            method: spec.param("method").unwrap_or("").to_string(),
            path_prefix: spec.param("path").unwrap_or("").to_string(),
        },
    ))
}

/// Injects an HTTP fault on the target's proxy.
pub async fn inject(cx: &FaultCx, spec: &FaultSpec) -> Result<Injected, FaultError> {
    let fault = format!("{} {}", spec.kind, spec.target);
    let other = |what: String| FaultError::Other {
        fault: fault.clone(),
        what,
    };
    if cx.stack.service(PROXY_ROLE).is_none() {
        return Err(FaultError::Unsupported {
            fault: fault.clone(),
            why: "the stack has no fault proxy".into(),
            fix: "declare the HTTP fault in #[chaos_test] (the runtime then starts the proxy in front of the target)"
                .into(),
        });
    }
    let toxic = toxic_of(spec).map_err(other)?;
    let api = ProxyClient::new(cx.stack.addr(PROXY_ROLE, PROXY_API_PORT))
        .with_timeout(Duration::from_secs(5));
    let before = api
        .proxy(spec.target)
        .await
        .map_err(|e| other(format!("asking the fault proxy about {}: {e}", spec.target)))?
        .stats
        .unwrap_or_default();
    api.add_toxic(spec.target, &toxic)
        .await
        .map_err(|e| other(format!("adding the http toxic: {e}")))?;
    let attrs = toxic.kind.attributes();
    cx.event(
        "toxic_added",
        spec.target,
        &[("toxic", "http".into()), ("attributes", attrs.to_string())],
    );
    let mechanism = format!("fault proxy http toxic {attrs}");
    let role = spec.target.to_string();
    Ok(Injected {
        mechanism,
        healing: Healing::new(move |cx, deadline| async move {
            let fault = format!("heal http fault {role}");
            match api.remove_toxic(&role, TOXIC).await {
                Ok(()) => {}
                Err(e) if e.status() == Some(404) => {}
                Err(e) => {
                    return Err(FaultError::Other {
                        fault,
                        what: format!("removing the http toxic: {e}"),
                    });
                }
            }
            let after = api
                .proxy(&role)
                .await
                .ok()
                .and_then(|p| p.stats)
                .unwrap_or_default();
            cx.event(
                "toxic_removed",
                &role,
                &[(
                    "requests_hit",
                    after
                        .toxics_applied
                        .saturating_sub(before.toxics_applied)
                        .to_string(),
                )],
            );
            cx.serving(&role, deadline, fault).await
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_become_http_toxics_with_their_defaults() {
        let spec = FaultSpec {
            kind: "http_abort",
            target: "orders",
            after_ms: 0,
            duration_ms: 3000,
            params: &[("ratio_pct", "20"), ("method", "POST"), ("path", "/orders")],
        };
        let t = toxic_of(&spec).unwrap();
        assert_eq!(t.stream, Stream::Upstream);
        assert_eq!(
            t.kind,
            ToxicKind::Http {
                action: "abort".into(),
                percent: 20.0,
                status: 503,
                delay: 100,
                method: "POST".into(),
                path_prefix: "/orders".into(),
            }
        );
        let delay = FaultSpec {
            kind: "http_delay",
            target: "orders",
            after_ms: 0,
            duration_ms: 3000,
            params: &[],
        };
        match toxic_of(&delay).unwrap().kind {
            ToxicKind::Http { percent, .. } => assert_eq!(percent, 100.0),
            other => panic!("{other:?}"),
        }
    }
}
