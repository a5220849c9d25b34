//! The runtime leaves the host as it found it. The host's packet-filter rules (iptables and
//! nft), qdiscs, links, network namespaces and mounts are recorded, faults that act inside the
//! target's namespace or cgroup run while their target is killed mid-fault (its pid, its
//! namespace and its cgroup die under the fault), and the host is recorded again: the two must
//! be the same. One test in its own binary, so no other run of this process changes the host
//! meanwhile (Docker's own rules for published ports come and go with every stack).
use chaos_runtime::__private::{FaultSpec, Spec, SteadySpec, run};
use std::collections::BTreeMap;

/// One line per rule, qdisc, link, namespace, mount; counters and timestamps left out.
fn host_state() -> BTreeMap<&'static str, Vec<String>> {
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

#[test]
fn faults_whose_target_dies_mid_fault_leave_the_host_as_it_was() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the faults here act in other namespaces and cgroups: run as root"
    );
    // A partition and a write throttle on PostgreSQL, whose container is killed a second into
    // them and started again a second later (a new pid, namespace and cgroup); the heals run
    // after that, with the handles they took at injection. The order service is throttled too.
    static SPEC: Spec = Spec {
        name: "host_safety::target_dies_mid_fault",
        fn_name: "target_dies_mid_fault",
        file: file!(),
        manifest_dir: env!("CARGO_MANIFEST_DIR"),
        faults: &[
            FaultSpec {
                kind: "network_partition",
                target: "postgres",
                after_ms: 0,
                duration_ms: 3_000,
                params: &[],
            },
            FaultSpec {
                kind: "disk_io",
                target: "postgres",
                after_ms: 0,
                duration_ms: 3_000,
                params: &[],
            },
            FaultSpec {
                kind: "kill",
                target: "postgres",
                after_ms: 1_000,
                duration_ms: 1_000,
                params: &[],
            },
            FaultSpec {
                kind: "cpu_throttle",
                target: "orders",
                after_ms: 0,
                duration_ms: 3_000,
                params: &[],
            },
        ],
        recover_within_ms: 30_000,
        observer: None,
        workload: None,
        system: chaos_trading::system,
        steady: SteadySpec::NONE,
        snapshot: false,
    };
    // SAFETY: the only test of this binary; nothing reads the environment concurrently.
    unsafe {
        std::env::set_var(
            "CHAOS_REPORT_DIR",
            std::env::temp_dir().join("chaos-host-safety"),
        );
        // A reaper is a container with a published port (Docker rules of its own) that lives
        // as long as this process: it would be in "after" only. The SIGKILL tests cover it.
        std::env::set_var("CHAOS_NO_REAPER", "1");
    }
    // Reapers of test processes that just ended exit within seconds; wait for them (bounded)
    // so that the host is recorded at rest.
    let quiet = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < quiet
        && std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", "label=chaos.reaper"])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let before = host_state();
    run(&SPEC, Box::new(|_run| Box::pin(async {})));
    let after = host_state();
    let mut diff = Vec::new();
    for (what, lines) in &before {
        let now = &after[what];
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
    let compared: usize = before.values().map(Vec::len).sum();
    eprintln!(
        "host state: {compared} lines compared ({}), {} differ",
        before
            .iter()
            .map(|(k, v)| format!("{k} {}", v.len()))
            .collect::<Vec<_>>()
            .join(", "),
        diff.len()
    );
    assert!(
        diff.is_empty(),
        "the run changed the host:\n{}",
        diff.join("\n")
    );
}
