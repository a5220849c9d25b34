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
///
/// The steps go in batches (`ip -batch -`, then `tc -batch -`): two processes in the
/// namespace instead of one per step, which is most of the time from the decision to the
/// qdiscs being in place (each process is a fork and exec in the namespace, through the host
/// agent where there is one). A batch stops at its first failing line.
pub(crate) async fn install(ns: &Netns, ways: Ways, qdisc: &[&str]) -> Result<(), String> {
    let (links, qdiscs) = install_batches(ways, qdisc);
    for (bin, lines) in [("ip", links), ("tc", qdiscs)] {
        if lines.is_empty() {
            continue;
        }
        let script = lines.join("\n") + "\n";
        let args = ["-batch".to_string(), "-".to_string()];
        let failed = match ns.run(bin, &args, Some(&script)).await {
            Ok(r) if r.ok => None,
            Ok(r) => Some(format!("`{bin} -batch` of {lines:?}: {}", r.stderr.trim())),
            Err(e) => Some(format!("cannot run {bin}: {e}")),
        };
        if let Some(e) = failed {
            let _ = remove(ns, ways).await;
            return Err(e);
        }
    }
    Ok(())
}

/// The lines of the `ip` batch (the ifb device, for ingress) and of the `tc` batch.
fn install_batches(ways: Ways, qdisc: &[&str]) -> (Vec<String>, Vec<String>) {
    let q = qdisc.join(" ");
    let mut links = Vec::new();
    let mut qdiscs = Vec::new();
    if ways.egress {
        qdiscs.push(format!("qdisc add dev eth0 root {q}"));
    }
    if ways.ingress {
        links.push(format!("link add {IFB} type ifb"));
        links.push(format!("link set {IFB} up"));
        qdiscs.push("qdisc add dev eth0 handle ffff: ingress".into());
        // u32 matching everything rather than `matchall`: cls_matchall is missing from some
        // kernels (this one), cls_u32 is everywhere tc is.
        qdiscs.push(format!(
            "filter add dev eth0 parent ffff: protocol all u32 match u32 0 0 action mirred egress redirect dev {IFB}"
        ));
        qdiscs.push(format!("qdisc add dev {IFB} root {q}"));
    }
    (links, qdiscs)
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
    #[test]
    fn both_ways_are_two_batches_with_the_ifb_made_first() {
        let (links, qdiscs) = super::install_batches(
            super::Ways {
                egress: true,
                ingress: true,
            },
            &["tbf", "rate", "1mbit"],
        );
        assert_eq!(
            links,
            ["link add chaos-ifb0 type ifb", "link set chaos-ifb0 up"]
        );
        assert_eq!(qdiscs[0], "qdisc add dev eth0 root tbf rate 1mbit");
        assert_eq!(
            qdiscs.last().unwrap(),
            "qdisc add dev chaos-ifb0 root tbf rate 1mbit"
        );
        assert_eq!(qdiscs.len(), 4);
    }

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
