//! The reaper: whatever ends this process, its containers, networks and volumes go.
//!
//! The first run of a test process starts one small container (the base image with the
//! `chaos-proxy` binary copied in, running `chaos-proxy reap`, the Docker socket mounted) and
//! connects to it over a port published on the engine's host (see `crate::reach`), or, from a
//! CI job container, on the job container's own network. The process keeps that connection for
//! its whole life and never writes to it. When the process ends — normally, by a panic, by
//! SIGKILL, by the OOM killer — the kernel closes the socket, the reaper sees the end and
//! removes every resource labelled with this process's owner identity (`chaos.owner`: boot id,
//! pid namespace, pid, start time, unique across hosts and namespaces), then exits and is
//! auto-removed. It acts from the daemon's side, so it also works when the daemon is shared
//! by several CI jobs or remote (`DOCKER_HOST`): no pid is ever looked up on this host.
//!
//! Signals (SIGINT/SIGTERM) are still handled in-process first (heal, then teardown, see
//! `interrupt`); the reaper is for what no handler can catch.
//!
//! A suite runner starts one reaper for all its test processes instead ([`start_shared`]) and
//! hands them its address in [`SHARED_ENV`]: each process then connects, names its owner
//! identity and is held in a few milliseconds, instead of paying a container's start (0.7-1 s
//! on two cores) before its first stack. The shared reaper removes each process's resources
//! when that process's connection ends, and goes once none is left. `chaos run` does this; a
//! process that cannot reach the address starts a reaper of its own, as without it.
//!
//! Under `cargo nextest run`, which starts a process per test, the test processes of one run
//! (`NEXTEST_RUN_ID`) share a reaper without any set-up: the first creates it under a name
//! made of the run's id, the others find it by that name (a creation that conflicts) and
//! register. It stays 10 s after the last process of the run is gone, for the next one, then
//! exits and is auto-removed. `CHAOS_REAPER=own` keeps a reaper per process.
use crate::image;
use crate::progress;
use crate::stack::Owner;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use testcontainers::bollard::Docker;
use testcontainers::bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use testcontainers::bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListNetworksOptionsBuilder,
    StartContainerOptions,
};

/// The label of a reaper container; its value is the owner it reaps for (a shared reaper's:
/// the process that started it).
pub(crate) const LABEL_REAPER: &str = "chaos.reaper";
const PORT: &str = "7070/tcp";

/// The environment variable that hands a test process the address of a suite's shared
/// reaper (`host:port`, as [`start_shared`] returns it). `own`: a reaper of its own, also
/// under nextest.
pub const SHARED_ENV: &str = "CHAOS_REAPER";

/// The variable nextest sets, the same for every test process of one `cargo nextest run`:
/// they share one reaper, started by the first of them.
const NEXTEST_RUN_ENV: &str = "NEXTEST_RUN_ID";

// What a reaper answers once it holds a connection.
use chaos_proxy::reaper::HELD as HELD_ANSWER;

/// The held connection: kept open for the process's life, closed by the kernel at its end.
static HELD: std::sync::Mutex<Option<std::net::TcpStream>> = std::sync::Mutex::new(None);
static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether this process holds a connection to a reaper that is still there. After its `held`
/// answer (read when connecting) the reaper never writes: a live one leaves nothing to read;
/// an end of stream or a reset means it is gone (its daemon restarted, someone removed it).
fn holding() -> bool {
    let held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    held.as_ref().is_some_and(|s| {
        let _ = s.set_nonblocking(true);
        matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    })
}

/// Starts this process's reaper once, and again if it went away (a daemon restart takes it
/// down); otherwise returns at once. A reaper that cannot start is reported in one line and
/// the run goes on (the in-process signal handlers and the next run's sweep of provably dead
/// owners still clean up): it never fails a test.
pub(crate) async fn ensure(docker: &Docker) {
    if std::env::var_os("CHAOS_NO_REAPER").is_some_and(|v| v != "0") || holding() {
        return;
    }
    let _one = STARTING.lock().await;
    if holding() {
        return;
    }
    if HELD
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .is_some()
    {
        progress::line("reaper", "this process's reaper is gone; starting another");
    }
    let started = Instant::now();
    // Keeps the held connection for the process's life and says by whom it is held.
    let keep = |stream, by: &str| {
        *HELD.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream);
        progress::line(
            "reaper",
            &format!(
                "{by} ({} ms): this process's resources go even if it is killed",
                started.elapsed().as_millis()
            ),
        );
    };
    if let Some(addr) = std::env::var(SHARED_ENV)
        .ok()
        .filter(|a| !a.is_empty() && a != "own")
    {
        let owner = Owner::current().label();
        match hold(&addr, Some(&owner), Instant::now() + Duration::from_secs(3)).await {
            Ok(stream) => return keep(stream, &format!("held by the suite's reaper at {addr}")),
            Err(why) => progress::line(
                "reaper",
                &format!(
                    "the suite's reaper at {addr} ({SHARED_ENV}) did not hold this process ({why}); starting one of its own"
                ),
            ),
        }
    }
    if let Some(run) = nextest_run() {
        match start(docker, Mode::Run(run.clone())).await {
            Ok((stream, addr)) => {
                return keep(
                    stream,
                    &format!("held by the reaper of nextest run {run} at {addr}"),
                );
            }
            Err(why) => progress::line(
                "reaper",
                &format!("the reaper of nextest run {run}: {why}; starting one of its own"),
            ),
        }
    }
    match start(docker, Mode::Own).await {
        Ok((stream, _)) => keep(stream, "held by this process's own reaper"),
        Err(why) => progress::line(
            "reaper",
            &format!(
                "no reaper ({why}); a SIGKILLed run is cleaned by the next run's sweep instead. \
                 Fix: make the chaos-proxy binary and the Docker socket available, or set CHAOS_NO_REAPER=1 to silence this"
            ),
        ),
    }
}

/// The network of the job container `own` that the reaper joins: one it was started on, never
/// a run's (the job container joins each run's network, and a run's network goes with its
/// run, which would leave the reaper without a way to see the process end).
async fn job_network(docker: &Docker, own: &str) -> Option<String> {
    let joined = docker
        .inspect_container(own, None::<InspectContainerOptions>)
        .await
        .ok()?
        .network_settings?
        .networks?;
    let filter = HashMap::from([("label", vec![crate::stack::LABEL_MANAGED])]);
    let runs: Vec<String> = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filter).build(),
        ))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.name)
        .collect();
    own_network(joined.into_keys(), &runs)
}

/// The first, by name, of `joined` that is not one of `runs`.
fn own_network(joined: impl Iterator<Item = String>, runs: &[String]) -> Option<String> {
    joined.filter(|n| !runs.contains(n)).min()
}

/// Starts a reaper for a whole suite and holds a connection to it for this process's life
/// (so it stays while this process does, and goes, auto-removed, once this process and every
/// test process that registered with it are gone). Returns the address to hand the test
/// processes in [`SHARED_ENV`]: reachable from this process, so from its children too.
///
/// Takes as long as one container's start (~0.7-1 s on two cores); every test process it
/// holds then saves that much before its first stack.
pub async fn start_shared(docker: &Docker) -> Result<String, String> {
    let _one = STARTING.lock().await;
    let (stream, addr) = start(docker, Mode::Shared).await?;
    *HELD.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream);
    Ok(addr)
}

/// [`start_shared`] from outside an async runtime (a suite runner's `main`, a test harness):
/// connects to Docker, starts the reaper, gives up after 30 s.
pub fn start_shared_blocking() -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let start = async {
            let docker = crate::docker::connect().await.map_err(|e| e.to_string())?;
            start_shared(&docker).await
        };
        tokio::time::timeout(Duration::from_secs(30), start)
            .await
            .map_err(|_| "no answer within 30 s".to_string())?
    })
}

/// A reaper for this process alone, for a suite, or for the test processes of one `cargo
/// nextest` run (named after the run, found by that name, lingering between them).
#[derive(PartialEq, Eq)]
enum Mode {
    Own,
    Shared,
    Run(String),
}

/// How long a nextest run's reaper stays once no test process is left: nextest starts the
/// next one within milliseconds of a slot freeing; a longer gap only costs that process a
/// reaper of its own.
const RUN_LINGER_SECS: u64 = 10;

/// The nextest run this process is a test of ([`NEXTEST_RUN_ENV`]), as a container name's
/// part; `None` outside nextest, or when [`SHARED_ENV`] is `own`.
fn nextest_run() -> Option<String> {
    run_of(
        std::env::var(SHARED_ENV).ok().as_deref(),
        std::env::var(NEXTEST_RUN_ENV).ok().as_deref(),
    )
}

/// [`nextest_run`] of the two variables' values.
fn run_of(shared: Option<&str>, run: Option<&str>) -> Option<String> {
    if shared == Some("own") {
        return None;
    }
    let id: String = run?
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    (!id.is_empty()).then_some(id)
}

/// Starts a reaper; the held connection and the reaper's address. A nextest run's reaper that
/// another test process of the run started already is joined instead.
async fn start(docker: &Docker, mode: Mode) -> Result<(std::net::TcpStream, String), String> {
    let tag = image::ensure(docker).await.map_err(|e| e.to_string())?;
    let bin = crate::helper::binary("chaos-proxy", "CHAOS_PROXY_BIN").map_err(|e| e.to_string())?;
    let reach = crate::reach::detect(docker).await?;
    // From a job container: the reaper joins that container's own network and is reached there.
    let network = match &reach {
        crate::reach::Reach::Direct { own } => job_network(docker, own).await,
        crate::reach::Reach::Published { .. } => None,
    };
    let owner_id = Owner::current();
    let owner = owner_id.label();
    let socket = docker_socket_on_daemon_host();
    let mut cmd: Vec<String> = vec!["/usr/local/bin/chaos-proxy".into(), "reap".into()];
    match &mode {
        Mode::Own => cmd.extend(["--owner".into(), owner.clone()]),
        Mode::Shared => cmd.push("--shared".into()),
        Mode::Run(_) => cmd.extend([
            "--shared".into(),
            "--linger".into(),
            RUN_LINGER_SECS.to_string(),
        ]),
    }
    cmd.extend(["--socket".into(), "/var/run/docker.sock".into()]);
    let body = ContainerCreateBody {
        image: Some(tag),
        cmd: Some(cmd),
        labels: Some(HashMap::from([(LABEL_REAPER.to_string(), owner.clone())])),
        env: Some(bin.env()),
        exposed_ports: Some(vec![PORT.to_string()]),
        host_config: Some(HostConfig {
            auto_remove: Some(true),
            binds: Some(vec![format!("{socket}:/var/run/docker.sock")]),
            network_mode: network.clone(),
            port_bindings: network.is_none().then(|| {
                HashMap::from([(
                    PORT.to_string(),
                    Some(vec![PortBinding {
                        host_ip: Some(reach.publish_ip().into()),
                        host_port: Some(String::new()),
                    }]),
                )])
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Pid and pid namespace: job containers on one engine may each have a process 7. And the
    // start time: a pid namespace's number is reused once it is gone, and the reaper of the
    // job container that had it may still be reaping.
    let name = match &mode {
        Mode::Run(run) => format!("chaos-reaper-nextest-{run}"),
        _ => format!(
            "chaos-reaper-{}{}-{}-{}",
            if mode == Mode::Shared { "suite-" } else { "" },
            owner_id.pid,
            owner_id.pid_ns,
            owner_id.start
        ),
    };
    // Only a shared reaper is told who connects.
    let owner_line = (mode != Mode::Own).then_some(owner.as_str());
    let opts = CreateContainerOptionsBuilder::new().name(&name).build();
    let created = match docker.create_container(Some(opts), body).await {
        Ok(created) => created.id,
        // Another test process of the run made it: hold a connection to it once it answers.
        Err(testcontainers::bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            ..
        }) if matches!(mode, Mode::Run(_)) => {
            return join(docker, &name, &reach, network.as_deref(), owner_line).await;
        }
        Err(e) => return Err(format!("creating {name}: {e}")),
    };
    let cleanup = || async {
        let _ = docker
            .remove_container(
                &created,
                Some(
                    testcontainers::bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .build(),
                ),
            )
            .await;
    };
    let data = match bin.loadable().await {
        Ok(data) => data,
        Err(e) => {
            cleanup().await;
            return Err(e);
        }
    };
    if let Err(e) = docker
        .upload_to_container(
            &created,
            Some(
                testcontainers::bollard::query_parameters::UploadToContainerOptionsBuilder::new()
                    .path("/usr/local/bin")
                    .build(),
            ),
            testcontainers::bollard::body_full(
                crate::agent::tar_one("chaos-proxy", 0o755, &data).into(),
            ),
        )
        .await
    {
        cleanup().await;
        return Err(format!("copying chaos-proxy into {name}: {e}"));
    }
    if let Err(e) = docker
        .start_container(&created, None::<StartContainerOptions>)
        .await
    {
        cleanup().await;
        return Err(format!("starting {name}: {e}"));
    }
    let info = docker
        .inspect_container(&created, None::<InspectContainerOptions>)
        .await
        .map_err(|e| format!("inspecting {name}: {e}"))?;
    let Some(target) = target_of(info, &reach, network.as_deref()) else {
        cleanup().await;
        return Err(format!("{name} has no address this process can reach"));
    };
    // The reaper binds within milliseconds; bounded retries until it answers that it holds.
    match hold(
        &target,
        owner_line,
        Instant::now() + Duration::from_secs(10),
    )
    .await
    {
        Ok(stream) => Ok((stream, target)),
        Err(e) => {
            cleanup().await;
            Err(format!("cannot connect to {name} at {target}: {e}"))
        }
    }
}

/// Where this process reaches the reaper `info` describes (`None`: no address from here, or
/// none yet: a container's port is published when it starts).
fn target_of(
    info: testcontainers::bollard::models::ContainerInspectResponse,
    reach: &crate::reach::Reach,
    network: Option<&str>,
) -> Option<String> {
    let settings = info.network_settings.unwrap_or_default();
    match (reach, network) {
        (_, Some(net)) => settings
            .networks
            .and_then(|n| n.get(net)?.ip_address.clone())
            .filter(|ip| !ip.is_empty())
            .map(|ip| format!("{ip}:{}", PORT.trim_end_matches("/tcp"))),
        (crate::reach::Reach::Published { host }, None) => settings
            .ports
            .and_then(|p| p.get(PORT).cloned().flatten())
            .and_then(|b| b.into_iter().find_map(|b| b.host_port?.parse::<u16>().ok()))
            .map(|port| format!("{host}:{port}")),
        (crate::reach::Reach::Direct { .. }, None) => None,
    }
}

/// Joins the nextest run's reaper `name` that another test process created: waits (at most
/// 10 s) until it runs and has an address, then (at most 2 s) until it holds this process's
/// connection. One that is going (its linger over) is an error: the caller starts its own.
async fn join(
    docker: &Docker,
    name: &str,
    reach: &crate::reach::Reach,
    network: Option<&str>,
    owner: Option<&str>,
) -> Result<(std::net::TcpStream, String), String> {
    let began = Instant::now();
    let deadline = began + Duration::from_secs(10);
    loop {
        use testcontainers::bollard::models::ContainerStateStatusEnum as Status;
        let found = match docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => match info.state.as_ref().and_then(|s| s.status) {
                None | Some(Status::CREATED | Status::RUNNING) => target_of(info, reach, network),
                Some(status) => return Err(format!("{name} is {status}: its linger is over")),
            },
            // Its name is taken as its creation begins, before it can be inspected: a moment
            // later it is there (or it went, its linger over, and this process starts its own).
            Err(testcontainers::bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            }) if began.elapsed() < Duration::from_secs(1) => None,
            Err(e) => return Err(format!("inspecting {name}: {e}")),
        };
        if let Some(target) = found {
            // A live reaper answers within milliseconds.
            let stream = hold(&target, owner, Instant::now() + Duration::from_secs(2)).await?;
            return Ok((stream, target));
        }
        if Instant::now() >= deadline {
            return Err(format!("{name} did not run within 10 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects to the reaper at `target` and waits for its `held` answer, having named `owner`
/// first (a shared reaper); retried every 50 ms until `deadline`. A connection through a
/// published port is accepted by Docker's proxy even before the reaper listens, and then
/// closed: only the answer says the reaper holds it.
async fn hold(
    target: &str,
    owner: Option<&str>,
    deadline: Instant,
) -> Result<std::net::TcpStream, String> {
    let line = owner.map(|o| format!("owner {o}\n"));
    loop {
        let (to, line) = (target.to_string(), line.clone());
        let attempt = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let addr = std::net::ToSocketAddrs::to_socket_addrs(&to)?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("{to} resolves to nothing")))?;
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
            if let Some(line) = &line {
                s.write_all(line.as_bytes())?;
            }
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut answer = [0u8; HELD_ANSWER.len()];
            s.read_exact(&mut answer)?;
            if answer != HELD_ANSWER {
                return Err(std::io::Error::other(format!(
                    "answered {:?}, not held",
                    String::from_utf8_lossy(&answer)
                )));
            }
            s.set_read_timeout(None)?;
            Ok(s)
        })
        .await
        .map_err(|e| e.to_string())?;
        match attempt {
            Ok(s) => return Ok(s),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The daemon's socket path as the daemon sees it (bind sources are the daemon host's paths):
/// `unix://` DOCKER_HOST paths are used as they are, else the standard path (a remote daemon
/// over TCP has its socket there too, as with testcontainers' Ryuk).
fn docker_socket_on_daemon_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".into())
}

#[cfg(test)]
mod tests {
    use super::{own_network, run_of};

    #[test]
    fn a_nextest_run_names_its_reaper_unless_the_process_wants_its_own() {
        let uuid = "0f8a2c3e-5b1d-4c7e-9a6f-2d4b8e1c7a90";
        assert_eq!(run_of(None, Some(uuid)).as_deref(), Some(uuid));
        assert_eq!(run_of(Some("own"), Some(uuid)), None);
        assert_eq!(run_of(None, None), None);
        // Only what a container's name may hold, at most 64 characters of it.
        assert_eq!(run_of(None, Some("a b/c_d")).as_deref(), Some("abcd"));
        assert_eq!(run_of(None, Some("/ ")), None);
        assert_eq!(
            run_of(None, Some(&"x".repeat(100))).map(|r| r.len()),
            Some(64)
        );
    }

    #[test]
    fn the_reaper_joins_the_job_containers_own_network_never_a_runs() {
        let runs = ["chaos-a-run-1a2b3c".to_string()];
        let joined = ["chaos-a-run-1a2b3c", "ci-job"].map(String::from);
        assert_eq!(
            own_network(joined.into_iter(), &runs).as_deref(),
            Some("ci-job")
        );
        let only_runs = ["chaos-a-run-1a2b3c"].map(String::from);
        assert_eq!(own_network(only_runs.into_iter(), &runs), None);
    }
}
