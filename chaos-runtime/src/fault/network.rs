//! Network partition: cut the target off from the stack's own network, both ways or one way.
//!
//! The cut is a packet filter inside the target's network namespace, set up from the host (the
//! container needs no `NET_ADMIN`): the runtime opens `/proc/<pid>/ns/net` of the target once,
//! and runs the host's `iptables` in that namespace (`setns` before `exec`, like `nsenter -n`).
//!
//! | direction (seen from the target) | rules |
//! |---|---|
//! | `ingress` | `-I INPUT -s <stack subnet> -j DROP` |
//! | `egress` | `-I OUTPUT -d <stack subnet> -j DROP` |
//! | `both` (default) | both |
//!
//! Only the stack network's subnet (from `docker network inspect`) is dropped: loopback and
//! Docker's embedded DNS (127.0.0.11) inside the container keep working, and nothing outside the
//! namespace is touched. Dropping (rather than `docker network disconnect`) keeps the target's
//! address, its DNS name and its port published on 127.0.0.1, and looks like a real partition
//! to the peers: silence, retransmissions, timeouts; no refusal, no ICMP.
//!
//! Backends are tried in order: `iptables`, `iptables-nft`, `iptables-legacy` (each through its
//! `-restore --noflush`, so every rule of a fault goes in, and later out, in one transaction: a
//! both-ways partition never passes through a one-way one), then `nft` (a table of its own). The
//! one that acted is named in the mechanism. Rules carry a comment tag unique to the fault; the
//! healing removes every rule it added and proves by listing that none is left. The namespace
//! is held open from injection to heal, so the rules are removed from exactly the namespace they
//! were added to, even when the container was restarted in between. The guard heals on drop,
//! so a panicking test removes them too; a SIGKILLed test leaves them in a namespace that dies
//! with its container (the next run's sweep removes that).
use super::netns::Netns;
use super::{FaultCx, FaultError, Healing, Injected};
use crate::spec::FaultSpec;
use std::sync::atomic::{AtomicU32, Ordering};

/// Which way packets are dropped, seen from the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Nothing from the stack network reaches the target.
    Ingress,
    /// Nothing the target sends reaches the stack network.
    Egress,
    /// Both.
    Both,
}

impl Direction {
    /// `both` (also when absent), `ingress` or `egress`.
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("both") {
            "both" => Some(Self::Both),
            "ingress" => Some(Self::Ingress),
            "egress" => Some(Self::Egress),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Both => "both",
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// What a rule does with the packets it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Drops every one (a partition).
    Drop,
    /// Drops a random share, in parts per 10 000 (packet loss): iptables' `statistic` match,
    /// nft's `numgen random`. Each packet is drawn on its own, as a lossy link does.
    DropShare(u32),
    /// Only counts them: beside a `DropShare`, the packets seen, so the loss that was realised
    /// can be read back from the two counters.
    Count,
}

/// One rule over the stack subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `INPUT` or `OUTPUT`.
    pub chain: &'static str,
    /// The stack subnet (IPv4 CIDR).
    pub cidr: String,
    /// What it does.
    pub action: Action,
}

impl Rule {
    /// `-s` for INPUT (packets from the subnet), `-d` for OUTPUT (packets to it).
    fn flag(&self) -> &'static str {
        if self.chain == "INPUT" { "-s" } else { "-d" }
    }

    /// What follows the comment match in iptables syntax (empty for a counting rule).
    fn iptables_tail(&self) -> String {
        match self.action {
            Action::Drop => " -j DROP".into(),
            Action::DropShare(n) => format!(
                " -m statistic --mode random --probability {} -j DROP",
                probability(n)
            ),
            Action::Count => String::new(),
        }
    }

    /// What follows the address match in nft syntax.
    fn nft_tail(&self) -> String {
        match self.action {
            Action::Drop => " drop".into(),
            Action::DropShare(n) => format!(" numgen random mod 10000 < {n} counter drop"),
            Action::Count => " counter".into(),
        }
    }
}

/// Parts per 10 000 as iptables' probability (`1000` → `0.1000`).
fn probability(per_10k: u32) -> String {
    format!("{}.{:04}", per_10k / 10_000, per_10k % 10_000)
}

/// `"10"` or `"2.5"` percent as parts per 10 000; `None` outside (0, 100].
pub fn share_of_percent(pct: &str) -> Option<u32> {
    let v: f64 = pct.parse().ok()?;
    (v > 0.0 && v <= 100.0).then(|| (v * 100.0).round() as u32)
}

/// The rules of a direction over the stack's subnets.
pub fn rules(direction: Direction, subnets: &[String]) -> Vec<Rule> {
    let mut out = Vec::new();
    for cidr in subnets {
        for chain in chains(direction) {
            out.push(Rule {
                chain,
                cidr: cidr.clone(),
                action: Action::Drop,
            });
        }
    }
    out
}

/// The chains a direction acts on.
fn chains(direction: Direction) -> Vec<&'static str> {
    let mut out = Vec::new();
    if matches!(direction, Direction::Ingress | Direction::Both) {
        out.push("INPUT");
    }
    if matches!(direction, Direction::Egress | Direction::Both) {
        out.push("OUTPUT");
    }
    out
}

/// Packet loss: per chain and subnet a rule dropping `per_10k` of the packets at random, and a
/// rule counting every packet, ahead of it (see [`restore_script`] and [`nft_script`]).
pub fn loss_rules(direction: Direction, subnets: &[String], per_10k: u32) -> Vec<Rule> {
    let mut out = Vec::new();
    for cidr in subnets {
        for chain in chains(direction) {
            for action in [Action::DropShare(per_10k), Action::Count] {
                out.push(Rule {
                    chain,
                    cidr: cidr.clone(),
                    action,
                });
            }
        }
    }
    out
}

/// The iptables-compatible binaries, in the order they are tried.
const IPTABLES: &[&str] = &["iptables", "iptables-nft", "iptables-legacy"];

/// A packet filter that can hold the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An iptables binary (`iptables`, `iptables-nft`, `iptables-legacy`); rules carry a comment tag.
    Iptables(&'static str),
    /// `nft`, with a table of its own named by the tag.
    Nft,
}

/// Arguments of `iptables` adding (`-I`) or deleting (`-D`) one rule, tagged with a comment.
pub fn iptables_args(op: &str, rule: &Rule, tag: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "-w",
        "5",
        op,
        rule.chain,
        rule.flag(),
        &rule.cidr,
        "-m",
        "comment",
        "--comment",
        tag,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(rule.iptables_tail().split_whitespace().map(str::to_string));
    args
}

/// An `iptables-restore --noflush` script adding (`-I`) or deleting (`-D`) every rule in one
/// transaction: a both-ways partition starts and ends at once, never passing through one way.
/// Counting rules go in last, so each lands above its drop rule (`-I` inserts at the top) and
/// counts every packet, the dropped ones included.
pub fn restore_script(op: &str, rules: &[Rule], tag: &str) -> String {
    let mut s = String::from("*filter\n");
    let (counts, drops): (Vec<&Rule>, Vec<&Rule>) =
        rules.iter().partition(|r| r.action == Action::Count);
    for r in drops.into_iter().chain(counts) {
        s.push_str(&format!(
            "{op} {} {} {} -m comment --comment {tag}{}\n",
            r.chain,
            r.flag(),
            r.cidr,
            r.iptables_tail()
        ));
    }
    s.push_str("COMMIT\n");
    s
}

/// The nft table name of a tag (nft names allow letters, digits and `_`).
pub fn nft_table(tag: &str) -> String {
    tag.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// An `nft -f -` script creating a table whose base chains drop the rules' packets. Priority -10
/// runs before the default filter chains; a drop is final in nftables whatever else accepts.
/// Counting rules come first in their chain, so they count every packet.
pub fn nft_script(rules: &[Rule], tag: &str) -> String {
    let mut s = format!("table ip {} {{\n", nft_table(tag));
    for (chain, hook, field) in [("INPUT", "input", "saddr"), ("OUTPUT", "output", "daddr")] {
        let mut matching: Vec<&Rule> = rules.iter().filter(|r| r.chain == chain).collect();
        if matching.is_empty() {
            continue;
        }
        matching.sort_by_key(|r| r.action != Action::Count);
        s.push_str(&format!(
            "  chain {hook} {{\n    type filter hook {hook} priority -10; policy accept;\n"
        ));
        for r in matching {
            s.push_str(&format!("    ip {field} {}{}\n", r.cidr, r.nft_tail()));
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    s
}

/// Lines of `iptables -S` output that carry the tag (rules this fault added and did not remove).
pub fn tagged_lines<'a>(listing: &'a str, tag: &str) -> Vec<&'a str> {
    listing
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w.trim_matches('"') == tag))
        .collect()
}

/// Packets a chain's rules of one tag counted: every packet seen, and those dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Packets the counting rules matched (all of the direction's packets to/from the stack).
    pub seen: u64,
    /// Packets the random-drop rules dropped.
    pub dropped: u64,
}

impl Tally {
    /// The share dropped, in percent; `None` with nothing seen.
    pub fn loss_pct(&self) -> Option<f64> {
        (self.seen > 0).then(|| 100.0 * self.dropped as f64 / self.seen as f64)
    }
}

/// Per chain (`INPUT`, `OUTPUT`), from `iptables -S -v` (`-A INPUT ... --comment TAG -c PKTS
/// BYTES [-j DROP]`): a line with `-j DROP` dropped, one without only counted.
pub fn iptables_tallies(listing: &str, tag: &str) -> std::collections::BTreeMap<String, Tally> {
    let mut out = std::collections::BTreeMap::<String, Tally>::new();
    for line in tagged_lines(listing, tag) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .and_then(|i| words.get(i + 1))
        };
        let (Some(chain), Some(pkts)) = (after("-A"), after("-c")) else {
            continue;
        };
        let Ok(pkts) = pkts.parse::<u64>() else {
            continue;
        };
        let t = out.entry(chain.to_string()).or_default();
        if words.windows(2).any(|w| w == ["-j", "DROP"]) {
            t.dropped += pkts;
        } else {
            t.seen += pkts;
        }
    }
    out
}

/// Per chain, from `nft list table ip TABLE`: `chain input {` opens a chain, `counter packets
/// N bytes M` counts, a trailing `drop` says dropped.
pub fn nft_tallies(listing: &str) -> std::collections::BTreeMap<String, Tally> {
    let mut out = std::collections::BTreeMap::<String, Tally>::new();
    let mut chain = None;
    for line in listing.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("chain ") {
            chain = match rest.split_whitespace().next() {
                Some("input") => Some("INPUT"),
                Some("output") => Some("OUTPUT"),
                _ => None,
            };
            continue;
        }
        let (Some(chain), Some(at)) = (chain, line.find("counter packets ")) else {
            continue;
        };
        let Some(Ok(pkts)) = line[at + "counter packets ".len()..]
            .split_whitespace()
            .next()
            .map(str::parse::<u64>)
        else {
            continue;
        };
        let t = out.entry(chain.to_string()).or_default();
        if line.ends_with(" drop") {
            t.dropped += pkts;
        } else {
            t.seen += pkts;
        }
    }
    out
}

/// How the rules read in the timeline, e.g. `iptables -I INPUT -s 172.18.0.0/16 -j DROP in postgres netns`.
pub fn describe(backend: &Backend, rules: &[Rule], role: &str) -> String {
    let what: Vec<String> = match backend {
        Backend::Iptables(bin) => rules
            .iter()
            .filter(|r| r.action != Action::Count)
            .map(|r| {
                format!(
                    "{bin} -I {} {} {}{}",
                    r.chain,
                    r.flag(),
                    r.cidr,
                    r.iptables_tail()
                )
            })
            .collect(),
        Backend::Nft => rules
            .iter()
            .filter(|r| r.action != Action::Count)
            .map(|r| {
                let (hook, field) = if r.chain == "INPUT" {
                    ("input", "saddr")
                } else {
                    ("output", "daddr")
                };
                format!("nft {hook} hook: ip {field} {}{}", r.cidr, r.nft_tail())
            })
            .collect(),
    };
    format!("{} in {role} netns", what.join("; "))
}

impl Netns {
    /// Adds the rules with one backend; on a failure part-way removes what it added. Err(why).
    async fn add(&self, backend: &Backend, rules: &[Rule], tag: &str) -> Result<(), String> {
        match backend {
            Backend::Iptables(bin) => {
                let restore = format!("{bin}-restore");
                let args = ["-w".to_string(), "5".into(), "--noflush".into()];
                match self
                    .run(&restore, &args, Some(&restore_script("-I", rules, tag)))
                    .await
                {
                    Ok(ran) if ran.ok => Ok(()),
                    Ok(ran) => Err(format!("`{restore} --noflush` said: {}", ran.stderr)),
                    Err(e) => Err(format!("cannot run {restore}: {e}")),
                }
            }
            Backend::Nft => match self
                .run(
                    "nft",
                    &["-f".into(), "-".into()],
                    Some(&nft_script(rules, tag)),
                )
                .await
            {
                Ok(ran) if ran.ok => Ok(()),
                Ok(ran) => Err(format!("`nft -f -` said: {}", ran.stderr)),
                Err(e) => Err(format!("cannot run nft: {e}")),
            },
        }
    }

    /// The rules of this tag still in the namespace, one line each (`iptables -S` / nft table).
    async fn leftovers(&self, backend: &Backend, tag: &str) -> Result<Vec<String>, String> {
        match backend {
            Backend::Iptables(bin) => match self
                .run(bin, &["-w".into(), "5".into(), "-S".into()], None)
                .await
            {
                Ok(ran) if ran.ok => Ok(tagged_lines(&ran.stdout, tag)
                    .into_iter()
                    .map(str::to_string)
                    .collect()),
                Ok(ran) => Err(format!("`{bin} -S` said: {}", ran.stderr)),
                Err(e) => Err(format!("cannot run {bin}: {e}")),
            },
            Backend::Nft => match self
                .run("nft", &["list".into(), "tables".into()], None)
                .await
            {
                Ok(ran) if ran.ok => {
                    let table = nft_table(tag);
                    Ok(ran
                        .stdout
                        .lines()
                        .filter(|l| l.split_whitespace().last() == Some(table.as_str()))
                        .map(str::to_string)
                        .collect())
                }
                Ok(ran) => Err(format!("`nft list tables` said: {}", ran.stderr)),
                Err(e) => Err(format!("cannot run nft: {e}")),
            },
        }
    }

    /// What this tag's rules counted, per chain.
    async fn tallies(
        &self,
        backend: &Backend,
        tag: &str,
    ) -> Result<std::collections::BTreeMap<String, Tally>, String> {
        match backend {
            Backend::Iptables(bin) => {
                let args = ["-w".to_string(), "5".into(), "-S".into(), "-v".into()];
                match self.run(bin, &args, None).await {
                    Ok(ran) if ran.ok => Ok(iptables_tallies(&ran.stdout, tag)),
                    Ok(ran) => Err(format!("`{bin} -S -v` said: {}", ran.stderr)),
                    Err(e) => Err(format!("cannot run {bin}: {e}")),
                }
            }
            Backend::Nft => {
                let args = [
                    "list".to_string(),
                    "table".into(),
                    "ip".into(),
                    nft_table(tag),
                ];
                match self.run("nft", &args, None).await {
                    Ok(ran) if ran.ok => Ok(nft_tallies(&ran.stdout)),
                    Ok(ran) => Err(format!("`nft list table` said: {}", ran.stderr)),
                    Err(e) => Err(format!("cannot run nft: {e}")),
                }
            }
        }
    }

    /// Removes the rules, then lists to prove none is left.
    async fn remove(&self, backend: &Backend, rules: &[Rule], tag: &str) -> Result<usize, String> {
        match backend {
            Backend::Iptables(bin) => {
                let restore = format!("{bin}-restore");
                let args = ["-w".to_string(), "5".into(), "--noflush".into()];
                let at_once = self
                    .run(&restore, &args, Some(&restore_script("-D", rules, tag)))
                    .await;
                if !at_once.is_ok_and(|r| r.ok) {
                    // One rule gone already fails the transaction: remove the others one by one
                    // ("Bad rule (does a matching rule exist in that chain?)" is that one).
                    for r in rules {
                        let _ = self.run(bin, &iptables_args("-D", r, tag), None).await;
                    }
                }
            }
            Backend::Nft => {
                let args = [
                    "delete".to_string(),
                    "table".into(),
                    "ip".into(),
                    nft_table(tag),
                ];
                let _ = self.run("nft", &args, None).await;
            }
        }
        // A heal is in effect once the rules are out (listed below to prove it).
        super::in_effect();
        let left = self.leftovers(backend, tag).await?;
        if left.is_empty() {
            Ok(rules.len())
        } else {
            Err(format!(
                "rules still in the {} netns after removal: {}",
                self.role,
                left.join(" | ")
            ))
        }
    }
}

static NEXT_TAG: AtomicU32 = AtomicU32::new(1);

/// The IPv4 subnets of the stack network.
async fn stack_subnets(cx: &FaultCx, fault: &str) -> Result<Vec<String>, FaultError> {
    let net = cx
        .stack
        .docker()
        .inspect_network(
            &cx.stack.network,
            None::<testcontainers::bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .map_err(FaultError::docker(
            fault,
            &format!("network inspect {}", cx.stack.network),
        ))?;
    let all: Vec<String> = net
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.subnet)
        .collect();
    if let Some(v6) = all.iter().find(|s| s.contains(':')) {
        return Err(FaultError::Unsupported {
            fault: fault.into(),
            why: format!(
                "the stack network {} has an IPv6 subnet ({v6}) and partitions filter IPv4 only",
                cx.stack.network
            ),
            fix: "run the stack on an IPv4-only network (the default of Stack::start)".into(),
        });
    }
    if all.is_empty() {
        return Err(FaultError::Other {
            fault: fault.into(),
            what: format!(
                "`docker network inspect {}` shows no IPv4 subnet to cut",
                cx.stack.network
            ),
        });
    }
    Ok(all)
}

/// Which backends can hold a partition on this host, found the way `inject` finds one: each is
/// tried in the same order with the same namespace calls (add, list, remove) in a throwaway
/// network namespace (`unshare -n`), so nothing of the host or of a stack is touched. Returns
/// `(the iptables backend that works, nft)`, each `Err(why not)`. `chaos doctor` reports this.
pub async fn backends_here() -> (Result<String, String>, Result<String, String>) {
    let not = |why: String| (Err(why.clone()), Err(why));
    let child = match tokio::process::Command::new("unshare")
        .args(["-n", "sleep", "20"])
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return not(format!("cannot run unshare (util-linux): {e}")),
    };
    let Some(pid) = child.id() else {
        return not("unshare exited at once".into());
    };
    // unshare execs sleep once the namespace exists; bounded wait for that.
    let mut netns = None;
    for _ in 0..200 {
        match Netns::open_local(pid, "probe") {
            Ok(ns) => {
                netns = Some(ns);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
    let Some(netns) = netns else {
        return not("no throwaway network namespace (unshare -n needs root)".into());
    };
    let rules = rules(Direction::Both, &["192.0.2.0/24".to_string()]);
    let mut iptables = Err("no iptables binary (iptables, iptables-nft, iptables-legacy)".into());
    let mut nft = Err("nft is missing".to_string());
    for (i, backend) in IPTABLES
        .iter()
        .map(|b| Backend::Iptables(b))
        .chain([Backend::Nft])
        .enumerate()
    {
        let bin = match &backend {
            Backend::Iptables(b) => *b,
            Backend::Nft => "nft",
        };
        if crate::doctor::which(bin).is_none() {
            continue;
        }
        let tag = format!("chaos-probe-{}-{i}", std::process::id());
        let works = match netns.add(&backend, &rules, &tag).await {
            Ok(()) => match netns.remove(&backend, &rules, &tag).await {
                Ok(_) => Ok(bin.to_string()),
                Err(why) => Err(why),
            },
            Err(why) => Err(why),
        };
        match backend {
            Backend::Iptables(_) if iptables.is_err() => iptables = works,
            Backend::Iptables(_) => {}
            Backend::Nft => nft = works,
        }
    }
    drop(child);
    (iptables, nft)
}

/// The target's namespace with the rules in: the backend that took them and their tag.
struct Installed {
    netns: Netns,
    backend: Backend,
    tag: String,
}

fn direction_of(spec: &FaultSpec, fault: &str) -> Result<Direction, FaultError> {
    Direction::parse(spec.param("direction")).ok_or_else(|| FaultError::Other {
        fault: fault.to_string(),
        what: format!(
            "direction {:?} is none of both, ingress, egress",
            spec.param("direction")
        ),
    })
}

/// Opens the target's network namespace and adds `rules` with the first backend that takes
/// them, then lists them back.
async fn install(
    cx: &FaultCx,
    spec: &FaultSpec,
    fault: &str,
    rules: &[Rule],
) -> Result<Installed, FaultError> {
    let watched = cx.watched(fault, spec.target).await?;
    if watched.pid == 0 {
        return Err(FaultError::Other {
            fault: fault.to_string(),
            what: "the target is not running: it has no network namespace to filter".into(),
        });
    }
    let netns = cx
        .stack
        .netns(watched.pid, spec.target)
        .await
        .map_err(|e| FaultError::Unsupported {
            fault: fault.to_string(),
            why: format!("cannot enter the network namespace of {}: {e}", spec.target),
            fix: crate::agent::FIX.into(),
        })?;
    let tag = format!(
        "chaos-{}-p{}",
        cx.stack.run_id,
        NEXT_TAG.fetch_add(1, Ordering::Relaxed)
    );

    let mut tried = Vec::new();
    let mut acted = None;
    for backend in IPTABLES
        .iter()
        .map(|b| Backend::Iptables(b))
        .chain([Backend::Nft])
    {
        match netns.add(&backend, rules, &tag).await {
            Ok(()) => {
                // In effect: the DROP rules are installed (listed back below).
                super::in_effect();
                acted = Some(backend);
                break;
            }
            Err(why) => tried.push(why),
        }
    }
    let Some(backend) = acted else {
        return Err(FaultError::Unsupported {
            fault: fault.to_string(),
            why: format!("no packet filter could add a DROP rule in the {} netns ({})", spec.target, tried.join("; ")),
            fix: "install iptables (nf_tables or legacy) or nftables on the Docker host (`apt-get install iptables`) \
                  and run the tests as root (CAP_NET_ADMIN over the container's network namespace)"
                .into(),
        });
    };
    // The rules must really be there: list them back.
    match netns.leftovers(&backend, &tag).await {
        Ok(present) if !present.is_empty() => {}
        other => {
            let _ = netns.remove(&backend, rules, &tag).await;
            return Err(FaultError::Other {
                fault: fault.to_string(),
                what: format!("the DROP rules were added but do not list back ({other:?})"),
            });
        }
    }
    Ok(Installed {
        netns,
        backend,
        tag,
    })
}

/// The subnets a partition cuts: the stack network's, which stay what they are for the whole
/// run, so the run looks them up before it decides to inject.
pub async fn prepare(cx: &FaultCx, spec: &FaultSpec) -> Result<Vec<String>, FaultError> {
    stack_subnets(cx, &format!("network_partition {}", spec.target)).await
}

/// Injects `network_partition` over the stack subnets looked up already.
pub async fn inject_prepared(
    cx: &FaultCx,
    spec: &FaultSpec,
    subnets: Vec<String>,
) -> Result<Injected, FaultError> {
    let fault = format!("network_partition {}", spec.target);
    let direction = direction_of(spec, &fault)?;
    let rules = rules(direction, &subnets);
    let installed = install(cx, spec, &fault, &rules).await?;
    let mechanism = describe(&installed.backend, &rules, spec.target);
    let role = spec.target.to_string();
    Ok(Injected {
        mechanism,
        healing: Healing::new(move |cx, deadline| async move {
            lift(
                &cx,
                &installed,
                &rules,
                &role,
                direction,
                deadline,
                "network_partition",
            )
            .await
        }),
    })
}

/// Heals a cut: removes the rules (proven gone by listing), then waits until the target serves
/// again. Events `network_restored` and `service_ready`.
async fn lift(
    cx: &FaultCx,
    installed: &Installed,
    rules: &[Rule],
    role: &str,
    direction: Direction,
    deadline: std::time::Duration,
    kind: &str,
) -> Result<(), FaultError> {
    let fault = format!("heal {kind} {role}");
    let removed = installed
        .netns
        .remove(&installed.backend, rules, &installed.tag)
        .await
        .map_err(|what| FaultError::Other {
            fault: fault.clone(),
            what,
        })?;
    cx.event(
        "network_restored",
        role,
        &[
            ("direction", direction.name().to_string()),
            ("rules_removed", removed.to_string()),
        ],
    );
    cx.serving(role, deadline, fault).await
}

/// Docker's embedded DNS server, as every container on a user-defined network sees it.
pub const EMBEDDED_DNS: &str = "127.0.0.11";
/// How long the name check waits for an answer (Docker's server answers in about a millisecond).
const DNS_CHECK_MS: u64 = 500;

/// The rule of `dns_failure`: drop what the target sends to Docker's embedded DNS server (UDP
/// and TCP; after the container's own DNAT of port 53 the address is still 127.0.0.11).
pub fn dns_rules() -> Vec<Rule> {
    vec![Rule {
        chain: "OUTPUT",
        cidr: format!("{EMBEDDED_DNS}/32"),
        action: Action::Drop,
    }]
}

/// Asks the embedded DNS server, from inside the target's namespace, for `name`: its
/// addresses, or why there were none.
async fn check_name(netns: &Netns, name: &str) -> Result<Vec<String>, String> {
    netns
        .resolve(&format!("{EMBEDDED_DNS}:53"), name, DNS_CHECK_MS)
        .await
}

/// Injects `dns_failure`: in the target's netns, a rule dropping its packets to Docker's
/// embedded DNS server, so no name resolves while connections already open keep working.
/// Names are checked from inside the namespace before and after the rule goes in and after it
/// goes out (event `dns_checked`: the name of another service, `resolved` or the error), so
/// the fault is shown, not assumed.
pub async fn inject_dns(cx: &FaultCx, spec: &FaultSpec) -> Result<Injected, FaultError> {
    let fault = format!("dns_failure {}", spec.target);
    // Another service's container name: its DNS name on the stack network.
    let peer = cx
        .stack
        .roles()
        .into_iter()
        .find(|r| r != spec.target)
        .and_then(|r| cx.stack.service(&r).map(|s| s.name.clone()))
        .ok_or_else(|| FaultError::Other {
            fault: fault.clone(),
            what: "the stack has no other service whose name could be resolved".into(),
        })?;
    let rules = dns_rules();
    let installed = install(cx, spec, &fault, &rules).await?;
    let during = check_name(&installed.netns, &peer).await;
    if let Ok(addrs) = &during {
        let _ = installed
            .netns
            .remove(&installed.backend, &rules, &installed.tag)
            .await;
        return Err(FaultError::Other {
            fault,
            what: format!(
                "{peer} still resolves ({}) with the DNS rule in place: the target does not use \
                 Docker's embedded DNS at {EMBEDDED_DNS} (a default bridge network or its own \
                 resolver)",
                addrs.join(", ")
            ),
        });
    }
    cx.event(
        "dns_checked",
        spec.target,
        &[
            ("name", peer.clone()),
            ("when", "fault".into()),
            ("resolved", "false".into()),
            ("error", during.err().unwrap_or_default()),
        ],
    );
    let mechanism = format!(
        "{}: queries to Docker's embedded DNS dropped",
        describe(&installed.backend, &rules, spec.target)
    );
    let role = spec.target.to_string();
    Ok(Injected {
        mechanism,
        healing: Healing::new(move |cx, deadline| async move {
            let fault = format!("heal dns_failure {role}");
            let removed = installed
                .netns
                .remove(&installed.backend, &rules, &installed.tag)
                .await
                .map_err(|what| FaultError::Other {
                    fault: fault.clone(),
                    what,
                })?;
            let after = check_name(&installed.netns, &peer).await;
            cx.event(
                "dns_restored",
                &role,
                &[
                    ("rules_removed", removed.to_string()),
                    ("name", peer.clone()),
                    ("resolved", after.is_ok().to_string()),
                    (
                        "answer",
                        match &after {
                            Ok(a) => a.join(","),
                            Err(e) => e.clone(),
                        },
                    ),
                ],
            );
            if let Err(e) = after {
                return Err(FaultError::Other {
                    fault,
                    what: format!("{peer} does not resolve after the DNS rule went: {e}"),
                });
            }
            cx.serving(&role, deadline, fault).await
        }),
    })
}

/// Injects `packet_loss`: in the target's netns, a rule per direction that drops `loss` percent
/// of the packets to/from the stack subnet at random (default 10 %), beside a rule counting
/// them all, and a UDP probe stream across the link (see `fault/probe.rs`). At heal the probe
/// stops and the counters are read (event `packet_loss_measured`: packets seen and dropped per
/// direction, the realised loss) before the rules go.
pub async fn inject_loss(cx: &FaultCx, spec: &FaultSpec) -> Result<Injected, FaultError> {
    let fault = format!("packet_loss {}", spec.target);
    let direction = direction_of(spec, &fault)?;
    let asked = spec.param("loss_pct").unwrap_or("10").to_string();
    let per_10k = share_of_percent(&asked).ok_or_else(|| FaultError::Other {
        fault: fault.clone(),
        what: format!("loss {asked}% is not above 0 and at most 100 percent"),
    })?;
    let subnets = stack_subnets(cx, &fault).await?;
    let rules = loss_rules(direction, &subnets, per_10k);
    let installed = install(cx, spec, &fault, &rules).await?;
    let probe = super::probe::between(cx, spec.target, direction, &installed.netns).await;
    let mechanism = format!(
        "{}; probe: {}",
        describe(&installed.backend, &rules, spec.target),
        match &probe {
            Ok(p) => format!(
                "{} UDP datagrams/s each way, {}",
                super::probe::RATE,
                p.between
            ),
            Err(why) => format!("none ({why})"),
        }
    );
    let role = spec.target.to_string();
    Ok(Injected {
        mechanism,
        healing: Healing::new(move |cx, deadline| async move {
            let probe_sent = match probe {
                Ok(p) => Some(p.stop().await),
                Err(_) => None,
            };
            // Read before removing: the counters go with the rules.
            let tallies = installed
                .netns
                .tallies(&installed.backend, &installed.tag)
                .await;
            let mut detail = vec![
                ("direction", direction.name().to_string()),
                ("asked_pct", asked.clone()),
            ];
            if let Some(sent) = probe_sent {
                detail.push(("probe_sent", sent.to_string()));
            }
            match tallies {
                Ok(t) => {
                    let mut all = Tally::default();
                    for (chain, seen, dropped) in [
                        ("INPUT", "ingress_seen", "ingress_dropped"),
                        ("OUTPUT", "egress_seen", "egress_dropped"),
                    ] {
                        if let Some(c) = t.get(chain) {
                            all.seen += c.seen;
                            all.dropped += c.dropped;
                            detail.push((seen, c.seen.to_string()));
                            detail.push((dropped, c.dropped.to_string()));
                        }
                    }
                    if let Some(pct) = all.loss_pct() {
                        detail.push(("realised_pct", format!("{pct:.2}")));
                    }
                }
                Err(why) => detail.push(("counters_unreadable", why)),
            }
            cx.event("packet_loss_measured", &role, &detail);
            lift(
                &cx,
                &installed,
                &rules,
                &role,
                direction,
                deadline,
                "packet_loss",
            )
            .await
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn net() -> Vec<String> {
        vec!["172.18.0.0/16".to_string()]
    }

    #[test]
    fn directions_map_to_chains() {
        let chains = |d| {
            rules(d, &net())
                .into_iter()
                .map(|r| r.chain)
                .collect::<Vec<_>>()
        };
        assert_eq!(chains(Direction::Both), ["INPUT", "OUTPUT"]);
        assert_eq!(chains(Direction::Ingress), ["INPUT"]);
        assert_eq!(chains(Direction::Egress), ["OUTPUT"]);
        assert_eq!(Direction::parse(None), Some(Direction::Both));
        assert_eq!(Direction::parse(Some("egress")), Some(Direction::Egress));
        assert_eq!(Direction::parse(Some("sideways")), None);
    }

    #[test]
    fn iptables_rules_are_tagged_and_limited_to_the_subnet() {
        let r = &rules(Direction::Both, &net());
        assert_eq!(
            iptables_args("-I", &r[0], "chaos-x-p1").join(" "),
            "-w 5 -I INPUT -s 172.18.0.0/16 -m comment --comment chaos-x-p1 -j DROP"
        );
        assert_eq!(
            iptables_args("-D", &r[1], "chaos-x-p1").join(" "),
            "-w 5 -D OUTPUT -d 172.18.0.0/16 -m comment --comment chaos-x-p1 -j DROP"
        );
        assert_eq!(
            describe(&Backend::Iptables("iptables"), r, "postgres"),
            "iptables -I INPUT -s 172.18.0.0/16 -j DROP; iptables -I OUTPUT -d 172.18.0.0/16 -j DROP in postgres netns"
        );
    }

    #[test]
    fn both_directions_go_in_and_out_in_one_transaction() {
        let r = rules(Direction::Both, &net());
        assert_eq!(
            restore_script("-I", &r, "chaos-x-p1"),
            "*filter\n\
             -I INPUT -s 172.18.0.0/16 -m comment --comment chaos-x-p1 -j DROP\n\
             -I OUTPUT -d 172.18.0.0/16 -m comment --comment chaos-x-p1 -j DROP\n\
             COMMIT\n"
        );
        assert!(
            restore_script("-D", &r, "t")
                .lines()
                .filter(|l| l.starts_with("-D "))
                .count()
                == 2
        );
    }

    #[test]
    fn leftovers_are_found_by_tag_only() {
        let listing = "-P INPUT ACCEPT\n\
                       -A INPUT -s 172.18.0.0/16 -m comment --comment chaos-x-p1 -j DROP\n\
                       -A INPUT -s 172.18.0.0/16 -m comment --comment \"chaos-x-p12\" -j DROP\n";
        assert_eq!(tagged_lines(listing, "chaos-x-p1").len(), 1);
        assert_eq!(tagged_lines(listing, "chaos-x-p12").len(), 1);
        assert!(tagged_lines("-P INPUT ACCEPT\n", "chaos-x-p1").is_empty());
    }

    /// The real boundary, in a network namespace of its own (`unshare -n`), every backend the
    /// host has: rules go in, list back, come out, and the host's own rules are never touched.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_backend_adds_lists_and_removes_its_rules_in_the_target_namespace() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: entering another network namespace needs root");
            return;
        }
        let Ok(mut child) = std::process::Command::new("unshare")
            .args(["-n", "sleep", "30"])
            .spawn()
        else {
            eprintln!("skipped: `unshare` (util-linux) is not installed");
            return;
        };
        // unshare execs sleep once the namespace exists.
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        let ns_path = format!("/proc/{}/ns/net", child.id());
        while std::fs::read_link(&ns_path).is_ok_and(|l| l == own) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let netns = Netns::open_local(child.id(), "probe").unwrap();
        let partition = rules(Direction::Both, &net());
        let loss = loss_rules(Direction::Both, &net(), 1000);
        let mut exercised = Vec::new();
        for rules in [&partition, &loss] {
            for (i, backend) in IPTABLES
                .iter()
                .map(|b| Backend::Iptables(b))
                .chain([Backend::Nft])
                .enumerate()
            {
                let tag = format!("chaos-unit-{}-p{i}-{}", std::process::id(), rules.len());
                if let Err(why) = netns.add(&backend, rules, &tag).await {
                    eprintln!("{backend:?} not usable here: {why}");
                    continue;
                }
                // Only the target namespace holds them (other stacks may change the host's rules
                // meanwhile, so look for ours, not for no change). Not through iptables-legacy:
                // listing with it would itself create empty legacy tables on the host.
                let host = match &backend {
                    Backend::Iptables("iptables-legacy") => None,
                    Backend::Iptables(bin) => {
                        Some(std::process::Command::new(bin).arg("-S").output())
                    }
                    Backend::Nft => Some(
                        std::process::Command::new("nft")
                            .args(["list", "tables"])
                            .output(),
                    ),
                };
                if let Some(host) = host {
                    let host = String::from_utf8_lossy(&host.unwrap().stdout).into_owned();
                    assert!(
                        !host.contains(&tag) && !host.contains(&nft_table(&tag)),
                        "{backend:?} put rules on the host"
                    );
                }
                let listed = netns.leftovers(&backend, &tag).await.unwrap();
                assert!(
                    !listed.is_empty(),
                    "{backend:?}: the rules do not list back"
                );
                if rules == &loss {
                    // Both chains' counters read back (nothing crossed this empty namespace).
                    let t = netns.tallies(&backend, &tag).await.unwrap();
                    assert_eq!(t.len(), 2, "{backend:?}: {t:?}");
                    assert!(t.values().all(|c| *c == Tally::default()), "{t:?}");
                }
                assert_eq!(
                    netns.remove(&backend, rules, &tag).await,
                    Ok(rules.len()),
                    "{backend:?}"
                );
                // Removing again finds nothing left and still verifies.
                assert_eq!(
                    netns.remove(&backend, rules, &tag).await,
                    Ok(rules.len()),
                    "{backend:?}"
                );
                exercised.push(backend);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            !exercised.is_empty(),
            "no packet filter backend works on this host"
        );
    }

    #[test]
    fn loss_counts_every_packet_ahead_of_the_random_drop() {
        assert_eq!(share_of_percent("10"), Some(1000));
        assert_eq!(share_of_percent("2.5"), Some(250));
        assert_eq!(share_of_percent("100"), Some(10_000));
        assert_eq!(share_of_percent("0"), None);
        assert_eq!(share_of_percent("120"), None);
        assert_eq!(probability(1000), "0.1000");
        assert_eq!(probability(10_000), "1.0000");
        let r = loss_rules(Direction::Ingress, &net(), 3000);
        // iptables: `-I` puts each rule at the top, so the counting rule goes in last.
        assert_eq!(
            restore_script("-I", &r, "t"),
            "*filter\n\
             -I INPUT -s 172.18.0.0/16 -m comment --comment t -m statistic --mode random --probability 0.3000 -j DROP\n\
             -I INPUT -s 172.18.0.0/16 -m comment --comment t\n\
             COMMIT\n"
        );
        assert_eq!(
            iptables_args("-D", &r[1], "t").join(" "),
            "-w 5 -D INPUT -s 172.18.0.0/16 -m comment --comment t"
        );
        // nft: rules run in order, so the counter comes first.
        let n = nft_script(&r, "t");
        let count = n.find("ip saddr 172.18.0.0/16 counter\n").expect(&n);
        let drop = n
            .find("ip saddr 172.18.0.0/16 numgen random mod 10000 < 3000 counter drop")
            .expect(&n);
        assert!(count < drop, "{n}");
        assert_eq!(
            describe(&Backend::Iptables("iptables"), &r, "postgres"),
            "iptables -I INPUT -s 172.18.0.0/16 -m statistic --mode random --probability 0.3000 -j DROP in postgres netns"
        );
    }

    #[test]
    fn tallies_read_back_from_both_listings() {
        // As `iptables -S -v` (1.8.9, nf_tables) prints them.
        let listing = "-P INPUT ACCEPT -c 0 0\n\
             -A INPUT -s 172.18.0.0/16 -m comment --comment t1 -c 1000 52000\n\
             -A INPUT -s 172.18.0.0/16 -m comment --comment t1 -m statistic --mode random --probability 0.10000000009 -c 98 5096 -j DROP\n\
             -A OUTPUT -d 172.18.0.0/16 -m comment --comment t1 -c 500 26000\n\
             -A OUTPUT -d 172.18.0.0/16 -m comment --comment t1 -m statistic --mode random --probability 0.10000000009 -c 52 2704 -j DROP\n\
             -A OUTPUT -d 172.18.0.0/16 -m comment --comment t12 -c 7 7\n";
        let t = iptables_tallies(listing, "t1");
        assert_eq!(
            t["INPUT"],
            Tally {
                seen: 1000,
                dropped: 98
            }
        );
        assert_eq!(
            t["OUTPUT"],
            Tally {
                seen: 500,
                dropped: 52
            }
        );
        assert!((t["INPUT"].loss_pct().unwrap() - 9.8).abs() < 1e-9);
        assert_eq!(Tally::default().loss_pct(), None);
        // As `nft list table ip T` prints them.
        let listing = "table ip t1 {\n\
             \tchain input {\n\
             \t\ttype filter hook input priority filter - 10; policy accept;\n\
             \t\tip saddr 172.18.0.0/16 counter packets 400 bytes 1\n\
             \t\tip saddr 172.18.0.0/16 numgen random mod 10000 < 3000 counter packets 121 bytes 2 drop\n\
             \t}\n\
             }\n";
        let t = nft_tallies(listing);
        assert_eq!(
            t["INPUT"],
            Tally {
                seen: 400,
                dropped: 121
            }
        );
        assert!(!t.contains_key("OUTPUT"));
    }

    #[test]
    fn nft_script_has_one_base_chain_per_direction() {
        let s = nft_script(&rules(Direction::Egress, &net()), "chaos-ab-1-p2");
        assert!(s.starts_with("table ip chaos_ab_1_p2 {"), "{s}");
        assert!(s.contains("type filter hook output priority -10; policy accept;"));
        assert!(s.contains("ip daddr 172.18.0.0/16 drop"));
        assert!(!s.contains("hook input"));
        assert_eq!(
            describe(&Backend::Nft, &rules(Direction::Ingress, &net()), "redis"),
            "nft input hook: ip saddr 172.18.0.0/16 drop in redis netns"
        );
    }
}
