//! The fallback observers against the real kernel: a process in a 32 MiB memory cgroup touches
//! 200 MiB and is OOM-killed; the cgroup source (memory.oom_control / memory.events) and the
//! kernel-log source (/dev/kmsg) must both report it, with the victim's pid.
//!
//! Driven through `Observers` in fallback mode, exactly as a chaos run uses it, with a pseudo
//! container whose cgroup is resolved from the process's /proc/<pid>/cgroup. Needs root, a
//! writable memory cgroup (v1 or v2) and /dev/kmsg; skips with the reason otherwise.

use chaos_runtime::observe::{
    Observation, ObserverMode, Observers, Source, WatchedContainer, kind,
};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const LIMIT: u64 = 32 << 20;
const TOUCH_MIB: u64 = 200;

/// A memory cgroup made for the test, removed on drop (its processes killed first).
struct TestCgroup {
    dir: PathBuf,
    v2: bool,
}

impl TestCgroup {
    fn create(name: &str) -> Result<Self, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("mountinfo: {e}"))?;
        let mut v1 = None;
        let mut v2 = None;
        for l in mountinfo.lines() {
            let Some((pre, post)) = l.split_once(" - ") else {
                continue;
            };
            let mp = pre.split(' ').nth(4).unwrap_or("");
            let post: Vec<&str> = post.split(' ').collect();
            match post.first() {
                Some(&"cgroup")
                    if post
                        .get(2)
                        .is_some_and(|o| o.split(',').any(|o| o == "memory")) =>
                {
                    v1 = Some(PathBuf::from(mp))
                }
                Some(&"cgroup2") => v2 = Some(PathBuf::from(mp)),
                _ => {}
            }
        }
        let (root, is_v2) = match (v1, v2) {
            (Some(r), _) => (r, false),
            (None, Some(r)) => {
                let ctl = std::fs::read_to_string(r.join("cgroup.controllers")).unwrap_or_default();
                if !ctl.split_whitespace().any(|c| c == "memory") {
                    return Err(format!(
                        "the cgroup2 root {} has no memory controller",
                        r.display()
                    ));
                }
                // Children of the root only get memory.max when the root delegates it.
                let _ = std::fs::write(r.join("cgroup.subtree_control"), "+memory");
                (r, true)
            }
            (None, None) => return Err("no memory cgroup is mounted".into()),
        };
        let dir = root.join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let cg = Self { dir, v2: is_v2 };
        let set = |f: &str, v: &str| {
            std::fs::write(cg.dir.join(f), v).map_err(|e| format!("write {f}: {e}"))
        };
        if is_v2 {
            set("memory.max", &LIMIT.to_string())?;
            let _ = set("memory.swap.max", "0");
        } else {
            set("memory.limit_in_bytes", &LIMIT.to_string())?;
            // Without this a host with swap would page instead of OOM-killing.
            let _ = set("memory.memsw.limit_in_bytes", &LIMIT.to_string());
        }
        Ok(cg)
    }

    fn add(&self, pid: u32) -> Result<(), String> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("cgroup.procs: {e}"))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) with a pid we read from our own cgroup; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove {} (v2: {})", self.dir.display(), self.v2);
    }
}

fn preflight() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (cgroup creation and /dev/kmsg)".into());
    }
    std::fs::File::open("/dev/kmsg").map_err(|e| format!("/dev/kmsg is not readable: {e}"))?;
    Ok(())
}

fn python3() -> Option<String> {
    ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"]
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
}

fn oom_kills<'a>(obs: &'a [Observation], source: Source, role: &str) -> Vec<&'a Observation> {
    obs.iter()
        .filter(|o| {
            o.kind == kind::OOM_KILL && o.source == source && o.container.as_deref() == Some(role)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_and_kmsg_both_report_a_memcg_oom_kill_with_the_victim_pid() {
    if let Err(why) = preflight() {
        eprintln!(
            "SKIPPED cgroup_and_kmsg_both_report_a_memcg_oom_kill_with_the_victim_pid: {why}"
        );
        return;
    }
    let name = format!("chaos-fallback-test-{}", std::process::id());
    let cg = match TestCgroup::create(&name) {
        Ok(cg) => cg,
        Err(why) => {
            eprintln!(
                "SKIPPED cgroup_and_kmsg_both_report_a_memcg_oom_kill_with_the_victim_pid: {why}"
            );
            return;
        }
    };

    // `sh` waits for a line, then becomes the hog: with python3 the victim keeps sh's pid
    // (exec), so the expected pid is known before the kill.
    let (script, expect_comm) = match python3() {
        Some(py) => (
            format!(
                "read go; exec {py} -c 'b = bytearray({TOUCH_MIB} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1'"
            ),
            Some("python3"),
        ),
        None => (
            format!("read go; head -c {TOUCH_MIB}M /dev/zero | tail"),
            None,
        ),
    };
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sh");
    let pid = child.id().expect("child pid");
    cg.add(pid).expect("move the child into the test cgroup");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let docker =
        testcontainers::bollard::Docker::connect_with_local_defaults().expect("docker client");
    let observers = Observers::start(ObserverMode::Fallback, docker, tx)
        .await
        .expect("start observers");
    for c in observers.choices() {
        assert_ne!(c.source, Source::Bpf, "{c:?}");
        assert!(c.note.starts_with("eBPF disabled by"), "{c:?}");
    }
    let oom_choice = observers
        .choices()
        .into_iter()
        .find(|c| c.signal == "oom")
        .unwrap();
    assert_eq!(oom_choice.source, Source::Cgroup);
    assert!(
        !oom_choice.note.contains("unreadable"),
        "{}",
        oom_choice.note
    );

    observers
        .watch(WatchedContainer {
            role: "hog".into(),
            id: name.clone(),
            pid,
        })
        .await;
    // Let the cgroup source take its baseline (it polls every 200 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let go = chaos_runtime::clock::mono_ns();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"go\n")
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the hog was not killed within 60 s")
        .unwrap();
    let exited = chaos_runtime::clock::mono_ns();
    use std::os::unix::process::ExitStatusExt;
    if expect_comm.is_some() {
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the hog must die by the OOM killer: {status:?}"
        );
    }

    // Wait until both sources reported, at most 3 s, then stop (which flushes).
    let mut seen = Vec::new();
    let mut kmsg_received = None;
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while oom_kills(&seen, Source::Cgroup, "hog").is_empty()
        || oom_kills(&seen, Source::Kmsg, "hog").is_empty()
    {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(o)) => {
                if o.source == Source::Kmsg {
                    kmsg_received.get_or_insert(chaos_runtime::clock::mono_ns());
                }
                seen.push(o)
            }
            _ => break,
        }
    }
    let t_stop = std::time::Instant::now();
    observers.stop().await;
    let stop_took = t_stop.elapsed();
    while let Ok(o) = rx.try_recv() {
        seen.push(o);
    }
    drop(cg);

    let cgroup = oom_kills(&seen, Source::Cgroup, "hog");
    let kmsg = oom_kills(&seen, Source::Kmsg, "hog");
    assert_eq!(kmsg.len(), 1, "kmsg OOM kills: {seen:#?}");
    assert_eq!(cgroup.len(), 1, "cgroup OOM kills: {seen:#?}");
    let (k, c) = (kmsg[0], cgroup[0]);
    let victim = k.detail["pid"].clone();
    if let Some(comm) = expect_comm {
        assert_eq!(victim, pid.to_string(), "kmsg names the hog: {k:?}");
        assert_eq!(k.detail["comm"], comm);
    } else {
        assert_eq!(k.detail["comm"], "tail");
    }
    assert_eq!(
        c.detail.get("pid"),
        Some(&victim),
        "cgroup source enriched from kmsg: {c:?}"
    );
    assert_eq!(c.detail["count"], "1");
    assert!(
        stop_took < Duration::from_secs(2),
        "stop took {stop_took:?}"
    );

    let ms = |a: u64, b: u64| (a as f64 - b as f64) / 1e6;
    eprintln!(
        "OOM kill of pid {victim}: kernel log stamp {:+.1} ms after go, child reaped {:+.1} ms; \
         kmsg record delivered {:+.1} ms after its stamp; cgroup counter seen {:+.1} ms after \
         the kernel stamp; stop took {stop_took:?}",
        ms(k.at_ns, go),
        ms(exited, go),
        ms(kmsg_received.unwrap_or(k.at_ns), k.at_ns),
        ms(c.at_ns, k.at_ns),
    );
    eprintln!("kmsg:   {k:?}\ncgroup: {c:?}");
}

/// `docker` CLI, for a test that only needs a container to exist.
fn docker_cli(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Removes the container on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker_cli(&["rm", "-f", &self.0]);
    }
}

async fn wait_for(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Observation>,
    seen: &mut Vec<Observation>,
    within: Duration,
    done: impl Fn(&[Observation]) -> bool,
) {
    let until = tokio::time::Instant::now() + within;
    while !done(seen) {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(o)) => seen.push(o),
            _ => return,
        }
    }
}

fn has(seen: &[Observation], k: &str, source: Source) -> bool {
    seen.iter()
        .any(|o| o.kind == k && o.source == source && o.container.as_deref() == Some("box"))
}

/// A container (32 MiB) whose sh, 2 s after start, runs a perl that touches 200 MiB. PID 1 (sh)
/// survives the OOM kill of its child, so the container and its cgroup stay.
fn oom_container(image: &str) -> Result<(Container, String, u32), String> {
    let script = "sleep 2; perl -e '$x = q(a) x (200 * 1024 * 1024)'; exec sleep 60";
    let id = docker_cli(&[
        "run",
        "-d",
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        "--label",
        "chaos-fallback-test=1",
        image,
        "sh",
        "-c",
        script,
    ])?;
    let container = Container(id.clone());
    let pid = docker_cli(&["inspect", "--format", "{{.State.Pid}}", &id])?
        .parse()
        .map_err(|e| format!("State.Pid: {e}"))?;
    Ok((container, id, pid))
}

/// The image the stack tests build, or why this test cannot run.
fn built_image() -> Result<String, String> {
    let image = chaos_runtime::image::tag();
    docker_cli(&["image", "inspect", "--format", "{{.Id}}", &image])
        .map(|_| image.clone())
        .map_err(|why| format!("the image {image} is not built (any stack test builds it): {why}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_auto_mode_a_signal_ebpf_observes_has_no_second_kernel_source() {
    let name = "in_auto_mode_a_signal_ebpf_observes_has_no_second_kernel_source";
    let image = match preflight().and_then(|_| built_image()) {
        Ok(i) => i,
        Err(why) => return eprintln!("SKIPPED {name}: {why}"),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let docker =
        testcontainers::bollard::Docker::connect_with_local_defaults().expect("docker client");
    let observers = Observers::start(ObserverMode::Auto, docker, tx)
        .await
        .expect("auto never fails");
    let oom = observers
        .choices()
        .into_iter()
        .find(|c| c.signal == "oom")
        .unwrap();
    if oom.source != Source::Bpf {
        observers.stop().await;
        return eprintln!(
            "SKIPPED {name}: eBPF does not observe OOM kills here: {}",
            oom.note
        );
    }
    let (container, id, pid) = oom_container(&image).expect("docker run");
    observers
        .watch(WatchedContainer {
            role: "box".into(),
            id,
            pid,
        })
        .await;
    let mut seen = Vec::new();
    wait_for(&mut rx, &mut seen, Duration::from_secs(15), |s| {
        has(s, kind::OOM_KILL, Source::Bpf) && has(s, kind::OOM_KILL, Source::DockerEvents)
    })
    .await;
    // Give the fallbacks (were they wrongly on) time for a few rounds.
    tokio::time::sleep(Duration::from_millis(700)).await;
    observers.stop().await;
    while let Ok(o) = rx.try_recv() {
        seen.push(o);
    }
    drop(container);
    let ooms: Vec<(Source, Option<&String>)> = seen
        .iter()
        .filter(|o| o.kind == kind::OOM_KILL && o.container.as_deref() == Some("box"))
        .map(|o| (o.source, o.detail.get("pid")))
        .collect();
    eprintln!("OOM kills seen in auto mode: {ooms:?}");
    assert_eq!(
        oom_kills(&seen, Source::Cgroup, "box").len(),
        0,
        "{seen:#?}"
    );
    assert_eq!(oom_kills(&seen, Source::Kmsg, "box").len(), 0, "{seen:#?}");
    assert_eq!(oom_kills(&seen, Source::Bpf, "box").len(), 1, "{seen:#?}");
    assert!(
        has(&seen, kind::OOM_KILL, Source::DockerEvents),
        "Docker events stay on: {seen:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_container_oom_kill_and_restart_are_seen_by_every_fallback_source() {
    if let Err(why) = preflight() {
        eprintln!(
            "SKIPPED a_real_container_oom_kill_and_restart_are_seen_by_every_fallback_source: {why}"
        );
        return;
    }
    let image = match built_image() {
        Ok(i) => i,
        Err(why) => {
            return eprintln!(
                "SKIPPED a_real_container_oom_kill_and_restart_are_seen_by_every_fallback_source: {why}"
            );
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let docker =
        testcontainers::bollard::Docker::connect_with_local_defaults().expect("docker client");
    let observers = Observers::start(ObserverMode::Fallback, docker, tx)
        .await
        .expect("start observers");

    let (container, id, pid) = oom_container(&image).expect("docker run");
    observers
        .watch(WatchedContainer {
            role: "box".into(),
            id: id.clone(),
            pid,
        })
        .await;

    let mut seen = Vec::new();
    wait_for(&mut rx, &mut seen, Duration::from_secs(15), |s| {
        has(s, kind::OOM_KILL, Source::Kmsg) && has(s, kind::OOM_KILL, Source::Cgroup)
    })
    .await;
    let kmsg = oom_kills(&seen, Source::Kmsg, "box");
    let cgroup = oom_kills(&seen, Source::Cgroup, "box");
    assert_eq!(kmsg.len(), 1, "{seen:#?}");
    assert_eq!(kmsg[0].detail["comm"], "perl");
    assert_eq!(cgroup.len(), 1, "{seen:#?}");
    assert_eq!(cgroup[0].detail.get("pid"), Some(&kmsg[0].detail["pid"]));

    docker_cli(&["kill", &id]).unwrap();
    wait_for(&mut rx, &mut seen, Duration::from_secs(10), |s| {
        has(s, kind::CONTAINER_DIE, Source::DockerEvents)
    })
    .await;
    let sig = seen
        .iter()
        .find(|o| o.kind == kind::SIGNAL && o.source == Source::DockerEvents);
    assert_eq!(
        sig.map(|o| o.detail["signal"].as_str()),
        Some("9"),
        "{seen:#?}"
    );
    let die = seen
        .iter()
        .find(|o| o.kind == kind::CONTAINER_DIE)
        .expect("die");
    assert_eq!(
        (
            die.detail["exit_code"].as_str(),
            die.detail["signal"].as_str()
        ),
        ("137", "9")
    );

    docker_cli(&["start", &id]).unwrap();
    // As the stack does after every (re)start: a new init pid and a new cgroup.
    let pid: u32 = docker_cli(&["inspect", "--format", "{{.State.Pid}}", &id])
        .unwrap()
        .parse()
        .unwrap();
    observers
        .watch(WatchedContainer {
            role: "box".into(),
            id: id.clone(),
            pid,
        })
        .await;
    wait_for(&mut rx, &mut seen, Duration::from_secs(10), |s| {
        has(s, kind::CONTAINER_START, Source::DockerEvents)
    })
    .await;
    assert!(
        has(&seen, kind::CONTAINER_START, Source::DockerEvents),
        "{seen:#?}"
    );
    observers.stop().await;
    while let Ok(o) = rx.try_recv() {
        seen.push(o);
    }
    drop(container);

    let docker_oom = seen
        .iter()
        .any(|o| o.kind == kind::OOM_KILL && o.source == Source::DockerEvents);
    let now = chaos_runtime::clock::mono_ns();
    for o in &seen {
        assert!(o.at_ns <= now, "{o:?}");
        eprintln!(
            "{:>8.1} ms before the end  {:?} {} {:?}",
            (now - o.at_ns) as f64 / 1e6,
            o.source,
            o.kind,
            o.detail
        );
    }
    eprintln!("Docker reported the OOM kill of a non-init process as an `oom` event: {docker_oom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_names_one_source_per_signal_and_stops_within_two_seconds() {
    if let Err(why) = preflight() {
        eprintln!(
            "SKIPPED auto_mode_names_one_source_per_signal_and_stops_within_two_seconds: {why}"
        );
        return;
    }
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let docker =
        testcontainers::bollard::Docker::connect_with_local_defaults().expect("docker client");
    let t = std::time::Instant::now();
    let observers = Observers::start(ObserverMode::Auto, docker, tx)
        .await
        .expect("auto never fails");
    let started = t.elapsed();
    let choices = observers.choices();
    let signals: Vec<&str> = choices.iter().map(|c| c.signal.as_str()).collect();
    assert_eq!(
        signals,
        ["process", "oom", "tcp", "runq", "block_io", "cpu_throttle"]
    );
    for c in &choices {
        assert!(!c.note.is_empty(), "{c:?}");
        eprintln!("{:<12} {:?}: {}", c.signal, c.source, c.note);
    }
    let t = std::time::Instant::now();
    observers.stop().await;
    let stopped = t.elapsed();
    eprintln!("auto mode: start took {started:?}, stop took {stopped:?}");
    assert!(stopped < Duration::from_secs(2), "stop took {stopped:?}");
}
