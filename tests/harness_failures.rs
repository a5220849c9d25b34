//! The harness itself under failure: a panicking body and a broken budget still remove every
//! container, network and volume, and a broken budget prints the timeline that broke it.
use chaos_runtime::__private::{FaultSpec, Spec, SteadySpec, run};
use std::sync::Mutex;
use std::time::Duration;

/// A run observed by the fallbacks, pausing Redis for `$ms`, with a 10 s recovery budget and
/// no snapshot; `$name` is the test's name in this file. The trading system and its default
/// workload unless given.
macro_rules! pause_redis {
    ($name:literal, $ms:literal) => {
        pause_redis!($name, $ms, None, chaos_trading::system)
    };
    ($name:literal, $ms:literal, $workload:expr, $system:expr) => {
        Spec {
            name: concat!("harness_failures::", $name),
            fn_name: $name,
            file: file!(),
            manifest_dir: env!("CARGO_MANIFEST_DIR"),
            faults: &[FaultSpec {
                kind: "pause",
                target: "redis",
                after_ms: 0,
                duration_ms: $ms,
                params: &[],
            }],
            recover_within_ms: 10_000,
            observer: Some("fallback"),
            workload: $workload,
            system: $system,
            steady: SteadySpec::NONE,
            snapshot: false,
        }
    };
}

static PANICKED_RUN: Mutex<Option<String>> = Mutex::new(None);
static BROKEN_RUN: Mutex<Option<String>> = Mutex::new(None);
static FROZEN_RUN: Mutex<Option<String>> = Mutex::new(None);

/// Journals of these runs stay out of the suite's report (`target/chaos/`).
fn private_report_dir() {
    let dir = std::env::temp_dir().join("chaos-harness-failures");
    // SAFETY: both tests of this binary set the same value; nothing reads it concurrently with a different one.
    unsafe { std::env::set_var("CHAOS_REPORT_DIR", dir) };
}

fn leftovers(run_id: &str) -> Vec<String> {
    listed(&format!("label=chaos.run={run_id}"))
}

/// Containers, networks and volumes matching a `docker ... --filter`.
fn listed(filter: &str) -> Vec<String> {
    let mut out = Vec::new();
    for args in [
        vec!["ps", "-aq", "--filter", filter],
        vec!["network", "ls", "-q", "--filter", filter],
        vec!["volume", "ls", "-q", "--filter", filter],
    ] {
        let o = std::process::Command::new("docker")
            .args(&args)
            .output()
            .expect("docker CLI");
        out.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| format!("{}: {l}", args[0])),
        );
    }
    out
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn a_panicking_body_still_removes_the_stack_and_heals() {
    static SPEC: Spec = pause_redis!("a_panicking_body", 500);
    private_report_dir();
    let result = std::panic::catch_unwind(|| {
        run(
            &SPEC,
            Box::new(|run| {
                Box::pin(async move {
                    *PANICKED_RUN.lock().unwrap() = Some(run.stack().run_id.clone());
                    panic!("deliberate panic in the test body");
                })
            }),
        )
    });
    let err = result.expect_err("the body's panic must fail the test");
    assert!(
        panic_message(&err).contains("deliberate panic"),
        "{}",
        panic_message(&err)
    );
    let id = PANICKED_RUN.lock().unwrap().clone().expect("the body ran");
    assert_eq!(
        leftovers(&id),
        Vec::<String>::new(),
        "resources left behind by run {id}"
    );
}

/// The trading system with one more workload: a Redis PING that panics when Redis does not
/// answer within 500 ms, i.e. while a `pause` holds. It notes its run id (from the label of the
/// container behind the published port) so the test can look for leftovers.
fn ping_or_panic() -> chaos_runtime::System {
    use chaos_runtime::workload::{Outcome, workload_fn};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    chaos_trading::system().workload(
        "ping_or_panic",
        workload_fn(|cx, _| {
            Box::pin(async move {
                let addr = cx.addr("redis", 6379);
                let ping = async {
                    let mut s = tokio::net::TcpStream::connect(&addr).await?;
                    s.write_all(b"PING\r\n").await?;
                    let mut reply = [0u8; 7];
                    s.read_exact(&mut reply).await?;
                    Ok::<_, std::io::Error>(reply)
                };
                match tokio::time::timeout(Duration::from_millis(500), ping).await {
                    Ok(Ok(reply)) if &reply == b"+PONG\r\n" => Outcome::ok(),
                    Ok(Ok(_)) | Ok(Err(_)) => Outcome::failed("protocol", "no PONG"),
                    Err(_) => {
                        let port = addr.rsplit(':').next().unwrap_or_default();
                        let out = std::process::Command::new("docker")
                            .args(["ps", "--filter", &format!("publish={port}")])
                            .args(["--format", "{{.Label \"chaos.run\"}}"])
                            .output()
                            .expect("docker CLI");
                        let run = String::from_utf8_lossy(&out.stdout).trim().to_string();
                        *FROZEN_RUN.lock().unwrap() = Some(run);
                        panic!("deliberate panic while redis is frozen");
                    }
                }
            })
        }),
    )
}

/// A panic in the middle of a fault (here in the workload, while Redis is frozen) unwinds
/// through the run's guards: the fault is healed, the stack removed, the panic is the test's.
#[test]
fn a_panic_while_a_fault_holds_heals_and_removes_everything() {
    static SPEC: Spec = pause_redis!(
        "a_panic_while_a_fault_holds",
        3_000,
        Some("ping_or_panic"),
        ping_or_panic
    );
    private_report_dir();
    let result = std::panic::catch_unwind(|| run(&SPEC, Box::new(|_| Box::pin(async {}))));
    let err = result.expect_err("the workload's panic must fail the test");
    assert!(
        panic_message(&err).contains("deliberate panic while redis is frozen"),
        "{}",
        panic_message(&err)
    );
    let id = FROZEN_RUN.lock().unwrap().clone().expect("the fault held");
    assert!(!id.is_empty(), "the frozen container carried no run label");
    assert_eq!(
        leftovers(&id),
        Vec::<String>::new(),
        "resources left behind by run {id}"
    );
}

#[test]
fn a_broken_budget_prints_the_timeline_and_removes_the_stack() {
    // 1 ms to recover from a SIGKILLed PostgreSQL cannot hold.
    static SPEC: Spec = Spec {
        name: "harness_failures::a_broken_budget",
        fn_name: "a_broken_budget",
        file: file!(),
        manifest_dir: env!("CARGO_MANIFEST_DIR"),
        faults: &[FaultSpec {
            kind: "kill",
            target: "postgres",
            after_ms: 0,
            duration_ms: 1000,
            params: &[],
        }],
        recover_within_ms: 1,
        observer: Some("fallback"),
        workload: None,
        system: chaos_trading::system,
        steady: SteadySpec::NONE,
        snapshot: false,
    };
    private_report_dir();
    let result = std::panic::catch_unwind(|| {
        run(
            &SPEC,
            Box::new(|run| {
                Box::pin(async move {
                    *BROKEN_RUN.lock().unwrap() = Some(run.stack().run_id.clone());
                })
            }),
        )
    });
    let msg = panic_message(&result.expect_err("a 1 ms budget must fail"));
    assert!(msg.contains("chaos budget failed"), "{msg}");
    assert!(
        msg.contains("over the budget of 1 ms") || msg.contains("never returned"),
        "{msg}"
    );
    // The timeline that broke it: phases, the kill, the death seen by Docker.
    for needle in [
        "timeline of",
        "== fault",
        "kill postgres via docker kill",
        "container_die postgres",
    ] {
        assert!(
            msg.contains(needle),
            "the failure message lacks {needle:?}:\n{msg}"
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    let id = BROKEN_RUN.lock().unwrap().clone().expect("the body ran");
    assert_eq!(
        leftovers(&id),
        Vec::<String>::new(),
        "resources left behind by run {id}"
    );
}

/// The run the signal test interrupts: its fault holds 30 s, so the signal always lands while
/// it holds. Ignored: only `sigterm_while_a_fault_holds_heals_and_removes_everything` runs it,
/// in a child process.
#[test]
#[ignore = "run in a child process by sigterm_while_a_fault_holds_heals_and_removes_everything"]
fn victim_of_a_sigterm() {
    static SPEC: Spec = pause_redis!("victim_of_a_sigterm", 30_000);
    run(&SPEC, Box::new(|_run| Box::pin(async {})));
}

/// Starts `victim_of_a_sigterm` in a child process and returns once its fault holds.
fn victim_holding_its_fault(dir: &std::path::Path) -> std::process::Child {
    std::fs::create_dir_all(dir).expect("temp dir");
    let progress = dir.join("progress.jsonl");
    let mut child = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--ignored", "--exact", "victim_of_a_sigterm", "--nocapture"])
        .env("CHAOS_PROGRESS_FILE", &progress)
        .env("CHAOS_REPORT_DIR", dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.txt")).expect("stderr file"))
        .spawn()
        .expect("spawn the victim");
    // Wait (bounded) until the fault is being injected, then give it a second to hold.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while !std::fs::read_to_string(&progress).is_ok_and(|p| p.contains("\"fault_injected\"")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the victim never injected its fault"
        );
        assert!(
            child.try_wait().expect("poll the victim").is_none(),
            "the victim ended before its fault"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    child
}

/// Containers, networks and volumes labelled with a process's pid, and its reaper.
fn leftovers_of_pid(pid: u32) -> Vec<String> {
    let mut out = listed(&format!("label=chaos.pid={pid}"));
    out.extend(
        listed(&format!("name=chaos-reaper-{pid}"))
            .into_iter()
            .filter(|l| l.starts_with("ps")),
    );
    out
}

/// A failed run under `CHAOS_KEEP=1`: its body panics and its stack is kept. Ignored: only
/// `a_kept_stack_outlives_its_process_and_its_reaper` runs it, in a child process.
#[test]
#[ignore = "run in a child process by a_kept_stack_outlives_its_process_and_its_reaper"]
fn victim_kept() {
    static SPEC: Spec = pause_redis!("victim_kept", 500);
    run(
        &SPEC,
        Box::new(|_run| Box::pin(async { panic!("deliberate failure, to keep the stack") })),
    );
}

/// `CHAOS_KEEP=1` keeps a failed run's stack for inspection: the process's reaper, which
/// removes what the process owned once it ends, leaves it too (it used to remove it).
#[test]
fn a_kept_stack_outlives_its_process_and_its_reaper() {
    let dir = std::env::temp_dir().join(format!("chaos-kept-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let child = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--ignored", "--exact", "victim_kept", "--nocapture"])
        .env("CHAOS_KEEP", "1")
        .env("CHAOS_REPORT_DIR", &dir)
        .env_remove("CHAOS_REAPER")
        .env_remove("NEXTEST_RUN_ID")
        .env_remove("CHAOS_QUIET")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.txt")).expect("stderr file"))
        .spawn()
        .expect("spawn the victim");
    let pid = child.id();
    let status = wait_bounded(child, Duration::from_secs(300));
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
    // Its reaper reaps once the process is gone, then exits: wait for that (bounded).
    let reaper = format!("name=chaos-reaper-{pid}");
    let ended = std::time::Instant::now();
    while !listed(&reaper).is_empty() && ended.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let kept = listed(&format!("label=chaos.pid={pid}"));
    // Removed here whatever the verdict.
    for (kind, rm) in [
        ("ps", ["rm", "-f"]),
        ("network", ["network", "rm"]),
        ("volume", ["volume", "rm"]),
    ] {
        for line in kept.iter().filter(|l| l.starts_with(&format!("{kind}:"))) {
            let id = line.split_once(": ").map_or("", |(_, id)| id);
            let _ = std::process::Command::new("docker")
                .args(rm)
                .arg(id)
                .output();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success(), "the victim's body fails:\n{stderr}");
    assert!(stderr.contains("kept stack"), "{stderr}");
    assert!(
        listed(&reaper).is_empty(),
        "the victim's reaper is still there after 60 s"
    );
    let containers = kept.iter().filter(|l| l.starts_with("ps:")).count();
    assert!(
        containers >= 4 && kept.iter().any(|l| l.starts_with("network:")),
        "the kept stack (4 services and their network) should outlive the reaper; left: {kept:?}\n{stderr}"
    );
}

/// SIGKILL cannot be handled: the reaper, holding the process's connection, removes the stack
/// (a frozen Redis among it) within seconds, although no other chaos run ever starts.
#[test]
fn sigkill_while_a_fault_holds_leaves_nothing_behind_within_seconds() {
    let dir = std::env::temp_dir().join(format!("chaos-sigkill-{}", std::process::id()));
    let mut child = victim_holding_its_fault(&dir);
    let pid = child.id();
    assert!(
        !leftovers_of_pid(pid).is_empty(),
        "the victim's stack should exist while its fault holds"
    );
    child.kill().expect("SIGKILL the victim");
    let _ = child.wait();
    let killed = std::time::Instant::now();
    let mut left = leftovers_of_pid(pid);
    while !left.is_empty() && killed.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
        left = leftovers_of_pid(pid);
    }
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
    assert!(
        left.is_empty(),
        "60 s after SIGKILL still left: {left:?}\n{stderr}"
    );
    eprintln!(
        "SIGKILL: everything of pid {pid} gone {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_while_a_fault_holds_heals_and_removes_everything() {
    let dir = std::env::temp_dir().join(format!("chaos-sigterm-{}", std::process::id()));
    let child = victim_holding_its_fault(&dir);
    let pid = child.id();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let status = wait_bounded(child, Duration::from_secs(60));
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "the victim did not exit 143 on SIGTERM:\n{stderr}"
    );
    assert!(
        stderr.contains("[chaos] interrupted: faults healed, stack"),
        "no line saying what was cleaned:\n{stderr}"
    );
    // Right after exit, nothing with its pid label is left: containers, network, volume.
    let label = format!("label=chaos.pid={pid}");
    for args in [
        vec!["ps", "-aq", "--filter", &label],
        vec!["network", "ls", "-q", "--filter", &label],
        vec!["volume", "ls", "-q", "--filter", &label],
    ] {
        let o = std::process::Command::new("docker")
            .args(&args)
            .output()
            .expect("docker CLI");
        assert!(
            o.stdout.is_empty(),
            "docker {} still lists {}",
            args[0],
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The spec of a test that must fail before it starts anything (run as nobody): one fault,
/// no snapshot.
macro_rules! probe_spec {
    ($name:literal, $kind:literal, $target:literal, $observer:expr) => {{
        static SPEC: Spec = Spec {
            name: concat!("harness_failures::", $name),
            fn_name: $name,
            file: file!(),
            manifest_dir: env!("CARGO_MANIFEST_DIR"),
            faults: &[FaultSpec {
                kind: $kind,
                target: $target,
                after_ms: 0,
                duration_ms: 500,
                params: &[],
            }],
            recover_within_ms: 10_000,
            observer: $observer,
            workload: None,
            snapshot: false,
            system: chaos_trading::system,
            steady: SteadySpec::NONE,
        };
        &SPEC
    }};
}

#[test]
#[ignore = "run without the kernel's BTF by a_test_that_needs_ebpf_says_so_where_it_cannot_load"]
fn needs_ebpf() {
    run(
        probe_spec!("needs_ebpf", "kill", "redis", Some("bpf")),
        Box::new(|_run| Box::pin(async {})),
    );
}

/// A host without eBPF, for real: the same test binary, as root on the engine's host (so it
/// would load eBPF itself), in a mount namespace where the kernel's BTF is an empty file, so
/// no CO-RE program can be relocated. (A non-root user is no such host any more: its run's host
/// agent loads eBPF.) A test that demands eBPF fails at once, before any resource exists, in
/// one line that names the fix.
#[test]
fn a_test_that_needs_ebpf_says_so_where_it_cannot_load() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test hides the kernel's BTF in a mount namespace; run the suite as root");
    }
    let dir = std::env::temp_dir().join(format!("chaos-needs-ebpf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let started = std::time::Instant::now();
    let out = std::process::Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount --bind /dev/null /sys/kernel/btf/vmlinux && exec \"$0\" \"$@\"",
        ])
        .arg(std::env::current_exe().expect("this test binary"))
        .args(["--ignored", "--exact", "needs_ebpf", "--nocapture"])
        .env("CHAOS_REPORT_DIR", &dir)
        .env_remove("CHAOS_OBSERVER")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("unshare (util-linux) runs the test binary");
    let _ = std::fs::remove_dir_all(&dir);
    let (status, text) = (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("{text}\n(ended after {:?})", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the refusal took {:?}",
        started.elapsed()
    );
    assert!(
        text.contains("/sys/kernel/btf/vmlinux"),
        "the reason does not name the missing BTF:\n{text}"
    );
    assert!(
        !status.success(),
        "a test needing eBPF passed without it:\n{text}"
    );
    assert!(
        text.contains("needs eBPF observers (observer = \"bpf\") and this host cannot load them")
            && text.contains("Fix:")
            && text.contains("CHAOS_OBSERVER=fallback"),
        "not the one-line reason with its fix:\n{text}"
    );
}

#[test]
#[ignore = "run without privileges by a_user_without_docker_access_is_told_so_before_any_resource"]
fn no_docker_access() {
    run(
        probe_spec!("no_docker_access", "packet_loss", "postgres", None),
        Box::new(|_run| Box::pin(async {})),
    );
}

/// An ordinary user not even in the docker group (nobody), asking for packet loss, which once
/// needed root: no fault needs root now (the host agent acts on the host), so what stops it is
/// the Docker socket, said at once with the fix, before anything is started.
#[test]
fn a_user_without_docker_access_is_told_so_before_any_resource() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test drops root to get an ordinary user; run the suite as root");
    }
    let (status, text) = as_nobody("no_docker_access", "DOCKER_HOST", Duration::from_secs(30));
    assert!(!status.success(), "passed without Docker access:\n{text}");
    assert!(
        text.contains("cannot reach the Docker daemon")
            && text.contains("Permission denied")
            && text.contains("add it to the `docker` group")
            && !text.contains("needs root"),
        "not the one-line reason with its fix:\n{text}"
    );
    assert!(
        !text.contains("[chaos stack]") && !text.contains("[chaos agent]"),
        "something was started first:\n{text}"
    );
}

/// Runs this binary's ignored test `name` as nobody (uid 65534, no groups: no eBPF, no root,
/// no Docker), without `unset` in its environment, at most `limit`: its status and output.
fn as_nobody(name: &str, unset: &str, limit: Duration) -> (std::process::ExitStatus, String) {
    let dir = std::env::temp_dir().join(format!("chaos-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let (out, err) = (dir.join("out.txt"), dir.join("err.txt"));
    let started = std::time::Instant::now();
    let child = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().expect("this test binary"))
        .args(["--ignored", "--exact", name, "--nocapture"])
        .env("CHAOS_REPORT_DIR", &dir)
        .env_remove(unset)
        .stdout(std::fs::File::create(&out).expect("output file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("setpriv (util-linux) runs the test binary unprivileged");
    let status = wait_bounded(child, limit);
    let text = std::fs::read_to_string(&out).unwrap_or_default()
        + &std::fs::read_to_string(&err).unwrap_or_default();
    eprintln!("{text}\n(ended after {:?})", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
    (status, text)
}

/// Waits for a child at most `limit`, killing it (and failing) past that.
fn wait_bounded(mut child: std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let until = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("poll") {
            return status;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("the child did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A process killed between its reaper's creation and its start (a fraction of a second)
/// leaves a container that was never started, so never removes itself: the next run's sweep
/// removes it once its owner is provably gone, and leaves a live owner's alone.
#[test]
fn an_unstarted_reaper_of_a_dead_process_is_swept_and_a_live_ones_is_kept() {
    use chaos_runtime::stack::Owner;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let docker = chaos_runtime::docker::connect().await.expect("Docker");
        let image = chaos_runtime::image::ensure(&docker)
            .await
            .expect("base image");
        let mut gone = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let gone_pid = gone.id();
        gone.wait().expect("wait");
        let me = Owner::current();
        let dead = Owner {
            pid: gone_pid,
            ..me.clone()
        };
        let mut ids = Vec::new();
        for (who, owner) in [("dead", &dead), ("live", &me)] {
            let name = format!("chaos-test-unstarted-reaper-{who}-{}", std::process::id());
            let label = format!("chaos.reaper={}", owner.label());
            let created = std::process::Command::new("docker")
                .args(["create", "--name", &name, "--label", &label, &image, "true"])
                .output()
                .expect("docker create");
            assert!(created.status.success(), "docker create: {created:?}");
            ids.push(name);
        }
        chaos_runtime::stack::sweep(&docker).await;
        let dead_left = listed(&format!("name={}", ids[0]));
        let live_left = listed(&format!("name={}", ids[1]));
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &ids[0], &ids[1]])
            .output();
        assert!(
            dead_left.is_empty(),
            "the dead owner's is still there: {dead_left:?}"
        );
        assert_eq!(
            live_left.len(),
            1,
            "the live owner's must stay: {live_left:?}"
        );
    });
}
