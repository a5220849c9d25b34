//! A queueing discipline on a target's `eth0`, one way or both, inside its network namespace:
//! egress as the root qdisc of `eth0`, ingress by redirecting what arrives on `eth0` to an `ifb`
//! device made in the namespace and shaping that device's egress. Used by `latency` (netem) and
//! `bandwidth` (tbf). Every step runs through the namespace handle taken at injection, so the
//! removal acts on exactly the namespace the qdiscs went into.
use super::netns::Netns;

/// The ifb device made inside the target's namespace for ingress shaping.
pub(crate) const IFB: &str = "chaos-ifb0";

/// Which way packets are shaped, seen from the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ways {
    /// What the target sends.
    pub egress: bool,
    /// What it receives.
    pub ingress: bool,
}

/// Adds `qdisc` (e.g. `["netem", "delay", "100ms"]`) each way asked; on a failure part-way
/// removes what was added. `Err` names the failed step and what tc said.
pub(crate) async fn install(ns: &Netns, ways: Ways, qdisc: &[&str]) -> Result<(), String> {
    let mut steps: Vec<Vec<&str>> = Vec::new();
    if ways.egress {
        steps.push([&["tc", "qdisc", "add", "dev", "eth0", "root"][..], qdisc].concat());
    }
    if ways.ingress {
        steps.push(vec!["ip", "link", "add", IFB, "type", "ifb"]);
        steps.push(vec!["ip", "link", "set", IFB, "up"]);
        steps.push(vec![
            "tc", "qdisc", "add", "dev", "eth0", "handle", "ffff:", "ingress",
        ]);
        // u32 matching everything rather than `matchall`: cls_matchall is missing from some
        // kernels (this one), cls_u32 is everywhere tc is.
        steps.push(vec![
            "tc", "filter", "add", "dev", "eth0", "parent", "ffff:", "protocol", "all", "u32",
            "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", IFB,
        ]);
        steps.push([&["tc", "qdisc", "add", "dev", IFB, "root"][..], qdisc].concat());
    }
    for step in &steps {
        if let Err(e) = ns.exec(step).await {
            let _ = remove(ns, ways).await;
            return Err(e);
        }
    }
    Ok(())
}

/// Removes what [`install`] added; the errors of the steps that failed.
pub(crate) async fn remove(ns: &Netns, ways: Ways) -> Vec<String> {
    let mut steps: Vec<&[&str]> = Vec::new();
    if ways.egress {
        steps.push(&["tc", "qdisc", "del", "dev", "eth0", "root"]);
    }
    if ways.ingress {
        steps.push(&["tc", "qdisc", "del", "dev", "eth0", "ingress"]);
        steps.push(&["ip", "link", "del", IFB]);
    }
    let mut errors = Vec::new();
    for step in steps {
        if let Err(e) = ns.exec(step).await {
            errors.push(e);
        }
    }
    errors
}

/// Bytes and packets the qdisc `kind` (`netem`, `tbf`) sent on `dev`, from `tc -s qdisc show`.
pub(crate) async fn sent(ns: &Netns, dev: &str, kind: &str) -> (u64, u64) {
    let out = ns
        .exec(&["tc", "-s", "qdisc", "show", "dev", dev])
        .await
        .unwrap_or_default();
    parse_sent(&out, kind)
}

/// `qdisc netem 8001: root ... \n Sent 1234 bytes 17 pkt (dropped 0, ...)` -> (1234, 17) for
/// `kind` = `netem`; (0, 0) when that qdisc is not listed.
pub fn parse_sent(tc_output: &str, kind: &str) -> (u64, u64) {
    let head = format!("qdisc {kind}");
    let mut inside = false;
    for line in tc_output.lines() {
        let line = line.trim();
        if line.starts_with("qdisc ") {
            inside = line.starts_with(&head);
        } else if inside && let Some(rest) = line.strip_prefix("Sent ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let before = |unit: &str| {
                words
                    .iter()
                    .position(|w| *w == unit)
                    .and_then(|i| words.get(i.wrapping_sub(1)))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            return (before("bytes"), before("pkt"));
        }
    }
    (0, 0)
}

#[cfg(test)]
mod tests {
    use super::parse_sent;

    #[test]
    fn sent_bytes_and_packets_of_the_named_qdisc() {
        let out = "qdisc tbf 8001: root refcnt 2 rate 8Mbit burst 32Kb lat 50ms \n \
                   Sent 123456 bytes 89 pkt (dropped 0, overlimits 12 requeues 0) \n\
                   qdisc ingress ffff: parent ffff:fff1 ---------------- \n \
                   Sent 999 bytes 9 pkt (dropped 0, overlimits 0 requeues 0) \n";
        assert_eq!(parse_sent(out, "tbf"), (123456, 89));
        assert_eq!(parse_sent(out, "netem"), (0, 0));
        assert_eq!(parse_sent("", "tbf"), (0, 0));
    }
}
