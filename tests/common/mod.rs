//! What the host-level tests share: the host's state as lines, and a wait for the reapers of
//! test processes that just ended (each is a container with published-port rules of its own,
//! gone within seconds of its process).
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One line per rule, qdisc, link, namespace, mount; counters and timestamps left out.
pub fn host_state() -> BTreeMap<&'static str, Vec<String>> {
    let sh = |cmd: &str, args: &[&str]| -> Vec<String> {
        match std::process::Command::new(cmd).args(args).output() {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect(),
            Err(e) => vec![format!("cannot run {cmd}: {e}")],
        }
    };
    let mut state = BTreeMap::new();
    state.insert(
        "iptables",
        sh("iptables-save", &[])
            .into_iter()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.find(" [") {
                // `:INPUT ACCEPT [12:3456]`: the policy stays, the counters go.
                Some(i) if l.starts_with(':') => l[..i].to_string(),
                _ => l,
            })
            .collect(),
    );
    state.insert("nft", sh("nft", &["-s", "list", "ruleset"]));
    state.insert("qdiscs", sh("tc", &["qdisc", "show"]));
    state.insert(
        "links",
        sh("ip", &["-o", "link", "show"])
            .into_iter()
            .map(|l| {
                // `5: docker0: <NO-CARRIER,BROADCAST,MULTICAST,UP>`: whether a bridge has a
                // carrier says only whether some container (of anyone) is attached to it right
                // now, which Docker owns; the link and its other flags stay.
                let mut f = l.split_whitespace().take(3).map(str::to_string);
                let (idx, name) = (f.next().unwrap_or_default(), f.next().unwrap_or_default());
                let flags = f.next().unwrap_or_default();
                let flags = flags
                    .trim_matches(|c| c == '<' || c == '>')
                    .split(',')
                    .filter(|x| !matches!(*x, "NO-CARRIER" | "LOWER_UP" | "M-DOWN"))
                    .collect::<Vec<_>>()
                    .join(",");
                format!("{idx} {name} <{flags}>")
            })
            .collect(),
    );
    state.insert("netns", sh("ip", &["netns", "list"]));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(format!("{} {}", f.get(4)?, f.get(sep + 1)?))
        })
        .collect();
    points.sort();
    state.insert("mounts", points);
    state
}

/// The lines of `before` gone from `after` (`-`) and new in `after` (`+`), per kind.
pub fn host_diff(
    before: &BTreeMap<&'static str, Vec<String>>,
    after: &BTreeMap<&'static str, Vec<String>>,
) -> Vec<String> {
    let mut diff = Vec::new();
    for (what, lines) in before {
        let now = after.get(what).map(Vec::as_slice).unwrap_or_default();
        diff.extend(
            lines
                .iter()
                .filter(|l| !now.contains(l))
                .map(|l| format!("{what} - {l}")),
        );
        diff.extend(
            now.iter()
                .filter(|l| !lines.contains(l))
                .map(|l| format!("{what} + {l}")),
        );
    }
    diff
}

/// Waits (at most 30 s) until no reaper container is left, so that the host is recorded at
/// rest and not with the rules of a reaper that is about to go.
pub fn wait_for_reapers() {
    let quiet = Instant::now() + Duration::from_secs(30);
    while Instant::now() < quiet
        && std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", "label=chaos.reaper"])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    {
        std::thread::sleep(Duration::from_millis(200));
    }
}
