//! The stack under test: a [`System`] started for one run, on a Docker network of its own, every
//! container labelled, ports published on 127.0.0.1 only, plus the fault proxy when a fault needs
//! it.
//!
//! Every container, network and volume carries `chaos.managed=true`, `chaos.run=<run id>` and
//! `chaos.pid=<test process pid>`. [`sweep`] removes what a killed run (whose pid is gone) left.
use crate::observe::WatchedContainer;
use crate::system::{self, PROXY_ROLE, Placement, System, Wiring};
use crate::{image, progress};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use testcontainers::bollard::Docker;
use testcontainers::bollard::models::{NetworkCreateRequest, VolumeCreateRequest};
use testcontainers::bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptions,
};
use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncBuilder;
use testcontainers::{GenericBuildableImage, ImageExt};

mod timing;
pub use timing::{ServiceTiming, StartTiming, TIMING_ENV};

/// Label every managed resource carries.
pub const LABEL_MANAGED: &str = "chaos.managed";
/// Label naming the run.
pub const LABEL_RUN: &str = "chaos.run";
/// Label naming the pid of the test process that owns the resource.
pub const LABEL_PID: &str = "chaos.pid";
/// Label naming the owner beyond doubt: `<boot id>/<pid namespace>/<pid>/<start time>`. Only a
/// process of the same boot and pid namespace can prove the owner gone ([`Owner::is_gone`]).
pub const LABEL_OWNER: &str = chaos_proxy::reaper::OWNER_LABEL;
/// Label of resources made while `CHAOS_KEEP` was set: neither the sweep nor a reaper removes them.
pub const LABEL_KEEP: &str = chaos_proxy::reaper::KEEP_LABEL;

/// Who made a resource: the identity of a process that no other process, host or pid namespace
/// can share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// `/proc/sys/kernel/random/boot_id` of the machine.
    pub boot_id: String,
    /// The inode of the process's pid namespace.
    pub pid_ns: String,
    /// The pid, in that namespace.
    pub pid: u32,
    /// Its start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`).
    pub start: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            boot_id: boot_id(),
            pid_ns: pid_ns("self"),
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// `<boot id>/<pid ns>/<pid>/<start>`.
    pub fn label(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.boot_id, self.pid_ns, self.pid, self.start
        )
    }

    /// Reads a label back.
    pub fn parse(label: &str) -> Option<Owner> {
        let mut it = label.split('/');
        let (b, n, p, t) = (it.next()?, it.next()?, it.next()?, it.next()?);
        Some(Owner {
            boot_id: b.to_string(),
            pid_ns: n.to_string(),
            pid: p.parse().ok()?,
            start: t.parse().ok()?,
        })
    }

    /// Whether `me` can prove this owner is gone: same boot and pid namespace (else the owner
    /// lives where we cannot look: another host, a CI job container, a remote engine's client),
    /// and its pid is free or taken by a process started at another time.
    pub fn is_gone(&self, me: &Owner, start_of: impl Fn(u32) -> Option<u64>) -> bool {
        if self.boot_id.is_empty() || self.boot_id != me.boot_id || self.pid_ns != me.pid_ns {
            return false;
        }
        start_of(self.pid) != Some(self.start)
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn pid_ns(who: &str) -> String {
    std::fs::read_link(format!("/proc/{who}/ns/pid"))
        .map(|p| {
            p.to_string_lossy()
                .trim_start_matches("pid:[")
                .trim_end_matches(']')
                .to_string()
        })
        .unwrap_or_default()
}

/// Start time of `pid` in clock ticks since boot; `None` when no such process exists.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Why the stack could not be started or changed.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A fixture binary is not where the runtime looks for it.
    #[error(
        "the {what} binary is not at {path}. Fix: run the suite with `cargo test` from the workspace \
         (it builds the binary), or set {env} to its path"
    )]
    MissingBinary {
        /// Which binary.
        what: &'static str,
        /// Where it was looked for.
        path: String,
        /// The override variable.
        env: &'static str,
    },
    /// A Docker call failed.
    #[error("docker {call} failed")]
    Docker {
        /// The call.
        call: String,
        /// The cause.
        #[source]
        source: testcontainers::bollard::errors::Error,
    },
    /// testcontainers could not start a service.
    #[error("starting {role} failed; its last log lines:\n{logs}")]
    Start {
        /// The role.
        role: String,
        /// Its log tail.
        logs: String,
        /// The cause.
        #[source]
        source: Box<testcontainers::TestcontainersError>,
    },
    /// A service did not become ready in time.
    #[error("{role} was not ready within {secs} s ({why}); its last log lines:\n{logs}")]
    NotReady {
        /// The role.
        role: String,
        /// The deadline.
        secs: u64,
        /// The last readiness error.
        why: String,
        /// Its log tail.
        logs: String,
    },
    /// The system or the test's use of it is wrong.
    #[error(transparent)]
    System(#[from] system::SystemError),
    /// The base image could not be had.
    #[error(transparent)]
    Image(#[from] image::ImageError),
    /// An image of the system could not be built from its Dockerfile.
    #[error(
        "building the image {image} from its Dockerfile failed. Fix the Dockerfile or its context (the cause below)"
    )]
    Build {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: Box<testcontainers::TestcontainersError>,
    },
    /// Local I/O (config files, free ports).
    #[error("{call} failed")]
    Io {
        /// The call.
        call: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// One running service.
pub struct Service {
    /// Its role.
    pub role: String,
    /// Docker container name (its DNS name on the stack network).
    pub name: String,
    /// Docker container id.
    pub id: String,
    /// Container port -> host port on 127.0.0.1.
    pub ports: BTreeMap<u16, u16>,
}

/// What a run adds to the system: the fault proxy in front of some roles.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Roles the fault proxy fronts (every declared port of each).
    pub behind_proxy: Vec<String>,
    /// Whether a fault of the run acts through the host agent: it is then started beside the
    /// services, not at injection.
    pub agent: bool,
}

/// The running stack of one test.
pub struct Stack {
    /// The run id (names and labels every resource).
    pub run_id: String,
    /// The per-test network.
    pub network: String,
    docker: Docker,
    services: BTreeMap<String, Service>,
    /// What the system declared per role (probes, PostgreSQL access).
    declared: BTreeMap<String, system::Service>,
    /// Proxy names per role, in declared-port order (see [`Stack::proxies_of`]).
    proxies: BTreeMap<String, Vec<String>>,
    /// (role, port) -> (proxy host, proxy listen port).
    proxied: BTreeMap<(String, u16), (String, u16)>,
    volumes: std::sync::Mutex<Vec<String>>,
    handles: std::sync::Mutex<Vec<Box<dyn std::any::Any + Send + Sync>>>,
    /// How this process reaches the services.
    reach: crate::reach::Reach,
    /// The run's host agent, started on first need.
    agent: tokio::sync::OnceCell<Result<std::sync::Arc<crate::agent::Agent>, String>>,
    /// Where the start's time went.
    timing: StartTiming,
    /// The instant the start began.
    origin: timing::Origin,
}

fn docker_err(
    call: impl Into<String>,
) -> impl FnOnce(testcontainers::bollard::errors::Error) -> StackError {
    let call = call.into();
    move |source| StackError::Docker { call, source }
}

/// A free TCP port on 127.0.0.1 for a published port (fixed host ports survive container
/// restarts; ephemeral ones may not). Chosen below the kernel's ephemeral range
/// (`ip_local_port_range`): a port of that range can be taken, between this check and Docker's
/// bind, as the source port of any outgoing connection or by Docker's own random publishing
/// (seen once: "Bind for 127.0.0.1:34189 failed: port is already allocated").
fn free_port() -> Result<u16, StackError> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let (from, span) = below_ephemeral(low);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..200 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = from + (seed.wrapping_add(n.wrapping_mul(7_919)) % span);
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return Ok(port as u16);
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| StackError::Io {
        call: "bind 127.0.0.1:0".into(),
        source,
    })?;
    Ok(l.local_addr()
        .map_err(|source| StackError::Io {
            call: "local_addr".into(),
            source,
        })?
        .port())
}

/// The CPU weight (cgroup v1 `cpu.shares`, the lowest Docker accepts) of a stack started while
/// another run measures: it starts on what that run leaves idle.
const STAGED_CPU_SHARES: i64 = 2;

/// Removes a container (by id or name), running or not, with its anonymous volumes; whether
/// the engine said it did.
async fn force_remove(docker: &Docker, container: &str) -> bool {
    let opts = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    docker.remove_container(container, Some(opts)).await.is_ok()
}

/// Whether a container's start failed because a host port it publishes is taken.
fn port_taken(error: &str) -> bool {
    error.contains("port is already allocated") || error.contains("address already in use")
}

/// Where [`free_port`] looks: (first port, how many), under the ephemeral range's `low` end.
fn below_ephemeral(low: u32) -> (u32, u32) {
    if low > 20_000 {
        (low - 12_000, 12_000)
    } else {
        // An unusual range: anything above it instead.
        (61_000, 4_000)
    }
}

/// Whether `pid`, as the engine reports it, is in this process's view a process of container
/// `id` (its cgroup names the container): false in a CI job container or for a remote engine,
/// where the engine's pids name other processes here, or none.
pub(crate) fn pid_seen_here(pid: u32, id: &str) -> bool {
    pid > 0 && std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|s| s.contains(id))
}

/// Where a binary built by cargo lives: `env` if set, beside the test binary or its parent
/// directory (where cargo puts a workspace's bins), or on `PATH`.
pub fn fixture_binary(name: &'static str, env: &'static str) -> Result<PathBuf, StackError> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(StackError::MissingBinary {
                what: name,
                path: p.display().to_string(),
                env,
            })
        };
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join(name));
        if let Some(up) = dir.parent() {
            candidates.push(up.join(name));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| StackError::MissingBinary {
            what: name,
            path: candidates
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            env,
        })
}

/// The container port the proxy listens on for `port`: 10000 + port, or the next free one.
fn proxy_listen_port(port: u16, taken: &[u16]) -> u16 {
    let mut p = port.saturating_add(10_000);
    while taken.contains(&p) || p == PROXY_API_PORT {
        p = p.wrapping_add(1).max(1024);
    }
    p
}

/// The fault proxy's HTTP API port inside its container.
pub const PROXY_API_PORT: u16 = 8474;

type Routes = (
    BTreeMap<(String, u16), (String, u16)>,
    BTreeMap<String, Vec<String>>,
    Option<Vec<String>>,
);

/// Where the proxy listens for each fronted (role, port), its proxy names per role, and its
/// command line (`None`: no proxy in this run).
fn proxy_routes(
    system: &System,
    plan: &Plan,
    proxy_host: &str,
    name: &dyn Fn(&str) -> String,
) -> Routes {
    let mut routes = BTreeMap::new();
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut taken = Vec::new();
    let mut cmd = vec![
        "/usr/local/bin/chaos-proxy".to_string(),
        "--api".into(),
        format!("0.0.0.0:{PROXY_API_PORT}"),
    ];
    for svc in system
        .services
        .iter()
        .filter(|s| plan.behind_proxy.contains(&s.role))
    {
        for (i, port) in svc.ports.iter().enumerate() {
            let listen = proxy_listen_port(*port, &taken);
            taken.push(listen);
            let pname = if i == 0 {
                svc.role.clone()
            } else {
                format!("{}-{port}", svc.role)
            };
            cmd.push("--proxy".into());
            cmd.push(format!(
                "{pname}=0.0.0.0:{listen}={}:{port}",
                name(&svc.role)
            ));
            names.entry(svc.role.clone()).or_default().push(pname);
            routes.insert((svc.role.clone(), *port), (proxy_host.to_string(), listen));
        }
    }
    let cmd = (!routes.is_empty()).then_some(cmd);
    (routes, names, cmd)
}

/// The fault proxy as a service of the run: the `chaos-proxy` binary in the base image.
fn proxy_service(cmd: Vec<String>) -> Result<system::Service, StackError> {
    let helper = crate::helper::binary("chaos-proxy", "CHAOS_PROXY_BIN")?;
    let path = &helper.path;
    // Only what runs: a debug build's debug information is most of the file.
    let bin = system::loadable_part(path).map_err(|_| StackError::MissingBinary {
        what: "chaos-proxy",
        path: path.display().to_string(),
        env: "CHAOS_PROXY_BIN",
    })?;
    let self_as = helper.self_as.clone();
    let listens: Vec<u16> = cmd
        .iter()
        .filter_map(|a| a.split('=').nth(1)?.rsplit(':').next()?.parse().ok())
        .collect();
    let mut svc = system::Service::new(PROXY_ROLE, move |w: &Wiring| {
        let image = w
            .base_image()
            .with_wait_for(WaitFor::message_on_stdout("chaos-proxy ready"))
            .with_copy_to(
                testcontainers::CopyTargetOptions::new("/usr/local/bin/chaos-proxy")
                    .with_mode(0o755),
                bin.clone(),
            )
            .with_cmd(cmd.clone());
        match &self_as {
            Some((k, v)) => image.with_env_var(k, v),
            None => image,
        }
    })
    .port(PROXY_API_PORT)
    .ready(system::Probe::http(PROXY_API_PORT, "/version"));
    for p in listens {
        svc = svc.port(p);
    }
    Ok(svc)
}

/// Builds the system's Dockerfile images, with `CHAOS_BASE_IMAGE` as a build argument.
async fn build_images(builds: Vec<GenericBuildableImage>) -> Result<(), StackError> {
    use testcontainers::core::BuildableImage;
    for b in builds {
        let image = b.descriptor();
        progress::line("image", &format!("building {image} from its Dockerfile"));
        let opts = testcontainers::core::BuildImageOptions::new()
            .with_build_arg("CHAOS_BASE_IMAGE", image::tag());
        let _built = b
            .build_image_with(opts)
            .await
            .map_err(|source| StackError::Build {
                image,
                source: Box::new(source),
            })?;
    }
    Ok(())
}

impl Stack {
    /// Starts `system` as this run's stack: the images it builds, a labelled network, then its
    /// services wave by wave (each wave in parallel, each service waited for), plus the fault
    /// proxy in front of `plan.behind_proxy`. On error everything started is removed.
    pub async fn start(
        docker: &Docker,
        system: &System,
        plan: &Plan,
        run_id: &str,
    ) -> Result<Stack, StackError> {
        let origin = timing::Origin::now();
        let name = |role: &str| format!("chaos-{run_id}-{role}");
        let labels = labels(run_id);
        let network = format!("chaos-{run_id}");
        let (proxied, proxies, proxy_cmd) = proxy_routes(system, plan, &name(PROXY_ROLE), &name);
        let wiring = Wiring {
            names: system
                .services
                .iter()
                .map(|s| (s.role.clone(), name(&s.role)))
                .collect(),
            proxied: proxied.clone(),
            base_image: image::tag(),
            base_used: AtomicBool::new(false),
            run_id: run_id.to_string(),
            volumes: std::sync::Mutex::new(Vec::new()),
        };
        let mut pending: BTreeMap<String, system::Pending> = system
            .services
            .iter()
            .map(|s| (s.role.clone(), (s.make)(&wiring)))
            .collect();
        let proxy = match proxy_cmd {
            Some(cmd) => Some(proxy_service(cmd)?),
            None => None,
        };
        if let Some(p) = &proxy {
            pending.insert(PROXY_ROLE.to_string(), (p.make)(&wiring));
        }
        let reach = crate::reach::detect(docker)
            .await
            .map_err(|why| StackError::System(system::SystemError::Reach(why)))?;
        let builds = std::mem::take(&mut *system.builds.lock().unwrap());
        if wiring.base_used.load(std::sync::atomic::Ordering::Relaxed) || !builds.is_empty() {
            image::ensure(docker).await?;
        }
        build_images(builds).await?;
        let images_ms = origin.ms();

        let mut stack = Stack {
            run_id: run_id.to_string(),
            network: network.clone(),
            docker: docker.clone(),
            services: BTreeMap::new(),
            declared: system
                .services
                .iter()
                .chain(proxy.iter())
                .map(|s| (s.role.clone(), s.clone()))
                .collect(),
            proxies,
            proxied,
            volumes: std::sync::Mutex::new(Vec::new()),
            handles: std::sync::Mutex::new(Vec::new()),
            agent: tokio::sync::OnceCell::new(),
            reach,
            timing: StartTiming {
                images_ms,
                ..Default::default()
            },
            origin,
        };
        let created = stack.create_resources(&wiring, &labels).await;
        stack.timing.resources_ms = origin.ms();
        let result = match created {
            Ok(()) if plan.agent || stack.agent_likely() => {
                // The agent's start (~0.3 s) overlaps the services'; its error is kept for the
                // fault that needs it, which says it with the fix.
                let (waves, agent) = tokio::join!(
                    stack.start_waves(system, proxy.as_ref(), pending, &wiring, &labels),
                    crate::agent::Agent::start(docker, run_id, labels.clone())
                );
                let _ = stack.agent.set(agent.map(std::sync::Arc::new));
                waves
            }
            Ok(()) => {
                stack
                    .start_waves(system, proxy.as_ref(), pending, &wiring, &labels)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            stack.teardown().await;
            return Err(e);
        }
        stack.timing.ready_ms = origin.ms();
        stack
            .timing
            .services
            .sort_by(|a, b| a.ready_ms.total_cmp(&b.ready_ms));
        progress::line(
            "stack",
            &format!("{run_id}: ready in {:.1} s", stack.timing.ready_ms / 1000.0),
        );
        if timing::wanted() {
            for line in stack.start_breakdown().await.lines() {
                progress::line("stack", &format!("{run_id}: {line}"));
            }
        }
        Ok(stack)
    }

    /// Where this stack's start went, as measured while it started (Docker's create and start
    /// instants not filled in; see [`Stack::start_breakdown`]).
    pub fn start_timing(&self) -> &StartTiming {
        &self.timing
    }

    /// [`Stack::start_timing`] with Docker's create and start instant of each container, read
    /// from the daemon's event log (one call).
    pub async fn start_breakdown(&self) -> StartTiming {
        self.timing
            .clone()
            .with_docker_events(&self.docker, &self.run_id, self.origin)
            .await
    }

    /// The network and the volumes the services asked for, labelled with the run.
    async fn create_resources(
        &self,
        wiring: &Wiring,
        labels: &HashMap<String, String>,
    ) -> Result<(), StackError> {
        self.docker
            .create_network(NetworkCreateRequest {
                name: self.network.clone(),
                driver: Some("bridge".into()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(docker_err(format!("network create {}", self.network)))?;
        if let crate::reach::Reach::Direct { own } = &self.reach {
            self.docker
                .connect_network(
                    &self.network,
                    testcontainers::bollard::models::NetworkConnectRequest {
                        container: own.clone(),
                        ..Default::default()
                    },
                )
                .await
                .map_err(docker_err(format!(
                    "network connect {} (this process's container joins the run's network)",
                    self.network
                )))?;
        }
        let wanted = std::mem::take(&mut *wiring.volumes.lock().unwrap());
        for (volume, size) in wanted {
            let driver_opts = size.map(|bytes| {
                HashMap::from([
                    ("type".to_string(), "tmpfs".to_string()),
                    ("device".to_string(), "tmpfs".to_string()),
                    ("o".to_string(), format!("size={bytes}")),
                ])
            });
            self.docker
                .create_volume(VolumeCreateRequest {
                    name: Some(volume.clone()),
                    labels: Some(labels.clone()),
                    driver_opts,
                    ..Default::default()
                })
                .await
                .map_err(docker_err(format!("volume create {volume}")))?;
            self.volumes.lock().unwrap().push(volume);
        }
        Ok(())
    }

    /// Starts the services wave by wave; the proxy joins the first wave.
    async fn start_waves(
        &mut self,
        system: &System,
        proxy: Option<&system::Service>,
        mut pending: BTreeMap<String, system::Pending>,
        wiring: &Wiring,
        labels: &HashMap<String, String>,
    ) -> Result<(), StackError> {
        let mut waves = system.start_waves().map_err(StackError::System)?;
        if let (Some(p), Some(first)) = (proxy, waves.first_mut()) {
            first.push(p);
        }
        let count: usize = waves.iter().map(Vec::len).sum();
        progress::line(
            "stack",
            &format!(
                "{}: starting {count} services in {} wave(s)",
                self.run_id,
                waves.len()
            ),
        );
        for wave in waves {
            let mut starts = Vec::new();
            let begin_ms = self.origin.ms();
            let this = &*self;
            for svc in wave {
                let req = pending.remove(&svc.role).expect("one request per role");
                starts.push(async move {
                    let r = this.start_one(svc, req, wiring, labels).await;
                    (r, this.origin.ms())
                });
            }
            let mut first_err = None;
            let mut timings = Vec::new();
            for (r, up_ms) in futures::future::join_all(starts).await {
                match r {
                    Ok((service, handle)) => {
                        self.handles.lock().unwrap().push(handle);
                        timings.push(ServiceTiming {
                            role: service.role.clone(),
                            begin_ms,
                            up_ms,
                            ready_ms: up_ms,
                            ..Default::default()
                        });
                        self.services.insert(service.role.clone(), service);
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
            let roles: Vec<String> = self.services.keys().cloned().collect();
            let this = &*self;
            let probes = roles
                .iter()
                .filter(|r| this.declared.get(*r).is_some_and(|d| d.ready.is_some()))
                .map(|r| async move {
                    let ready = this.wait_ready(r, Duration::from_secs(20)).await;
                    (r, ready, this.origin.ms())
                });
            for (role, r, ready_ms) in futures::future::join_all(probes).await {
                r?;
                if let Some(t) = timings.iter_mut().find(|t| &t.role == role) {
                    t.ready_ms = ready_ms;
                }
            }
            self.timing.services.extend(timings);
        }
        Ok(())
    }

    /// Starts one service on published ports chosen free. A bind check cannot see a port
    /// Docker's allocator still holds for a container being removed (seen in CI: "Bind for
    /// 127.0.0.1:23509 failed: port is already allocated", as the previous run's stack went
    /// away), so a start refused for its port is retried on other ports, twice at most, its
    /// request made again from the service's declaration and the refused container removed.
    async fn start_one(
        &self,
        svc: &system::Service,
        mut req: system::Pending,
        wiring: &Wiring,
        labels: &HashMap<String, String>,
    ) -> Result<(Service, Box<dyn std::any::Any + Send + Sync>), StackError> {
        let name = format!("chaos-{}-{}", self.run_id, svc.role);
        let mut labels: BTreeMap<String, String> = labels.clone().into_iter().collect();
        labels.insert("chaos.role".into(), svc.role.clone());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut ports = BTreeMap::new();
            for p in &svc.ports {
                ports.insert(*p, free_port()?);
            }
            let placement = Placement {
                network: self.network.clone(),
                name: name.clone(),
                labels: labels.clone(),
                ports: ports.clone(),
                publish_ip: self.reach.publish_ip(),
                startup_timeout: svc.startup_timeout,
                cpu_shares: crate::slots::prestart().then_some(STAGED_CPU_SHARES),
            };
            match req.start(placement).await {
                Ok(started) => {
                    return Ok((
                        Service {
                            role: svc.role.clone(),
                            name,
                            id: started.id,
                            ports,
                        },
                        started.handle,
                    ));
                }
                Err(source) if attempt < 3 && port_taken(&source.to_string()) => {
                    progress::line(
                        "stack",
                        &format!(
                            "{}: {}'s published port was still held by Docker ({}); starting it again on other ports",
                            self.run_id,
                            svc.role,
                            source.to_string().lines().next().unwrap_or_default()
                        ),
                    );
                    force_remove(&self.docker, &name).await;
                    req = (svc.make)(wiring);
                }
                Err(source) => {
                    return Err(StackError::Start {
                        role: svc.role.clone(),
                        logs: log_tail(&self.docker, &name, 20).await,
                        source: Box::new(source),
                    });
                }
            }
        }
    }

    /// Gives a stack started beside a measurement (at [`STAGED_CPU_SHARES`]) the default CPU
    /// weight, now that it measures itself.
    pub(crate) async fn promote(&self) {
        let updates = self.services.values().map(|s| {
            self.docker.update_container(
                &s.id,
                testcontainers::bollard::models::ContainerUpdateBody {
                    cpu_shares: Some(1024),
                    ..Default::default()
                },
            )
        });
        for r in futures::future::join_all(updates).await {
            if let Err(e) = r {
                progress::line(
                    "stack",
                    &format!("{}: cpu weight not restored: {e}", self.run_id),
                );
            }
        }
    }

    /// The fault proxy's names for `role`'s ports, in declared order (empty when not proxied):
    /// `role` for the first port, `role-PORT` for the others.
    pub fn proxies_of(&self, role: &str) -> &[String] {
        self.proxies.get(role).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The Docker client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// A service by role.
    pub fn service(&self, role: &str) -> Option<&Service> {
        self.services.get(role)
    }

    /// Roles of the running services.
    pub fn roles(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }

    /// The engine's host port of a service's container port (published on 127.0.0.1 when the
    /// engine is local). [`Stack::addr`] is how the test process reaches it.
    pub fn host_port(&self, role: &str, port: u16) -> u16 {
        self.services
            .get(role)
            .and_then(|s| s.ports.get(&port).copied())
            .unwrap_or_else(|| panic!("the stack has no port {port} for {role}"))
    }

    /// `host:port` at which the test process reaches `role`'s `port` directly.
    pub fn addr(&self, role: &str, port: u16) -> String {
        let (host, port) = self.endpoint(role, port);
        format!("{host}:{port}")
    }

    /// Host and port at which the test process reaches `role`'s `port` (see `crate::reach`):
    /// the engine's host and the published port, or, from a container of the same engine, the
    /// container's name on the run's network and the port itself.
    pub fn endpoint(&self, role: &str, port: u16) -> (String, u16) {
        match &self.reach {
            crate::reach::Reach::Published { host } => (host.clone(), self.host_port(role, port)),
            crate::reach::Reach::Direct { .. } => {
                self.host_port(role, port);
                (self.services[role].name.clone(), port)
            }
        }
    }

    /// How this process reaches the services, in words (for the run's header).
    pub fn reach(&self) -> String {
        self.reach.describe()
    }

    /// `host:port` at which clients of the system reach `role`'s `port`: through the fault
    /// proxy when this run puts it in front of `role`, directly otherwise.
    pub fn client_addr(&self, role: &str, port: u16) -> String {
        match self.proxied.get(&(role.to_string(), port)) {
            Some((_, listen)) => self.addr(PROXY_ROLE, *listen),
            None => self.addr(role, port),
        }
    }

    /// Every published (role, port) and the address clients use for it.
    pub(crate) fn client_addrs(&self) -> BTreeMap<(String, u16), String> {
        self.services
            .values()
            .flat_map(|s| s.ports.keys().map(move |p| (s.role.clone(), *p)))
            .map(|(r, p)| {
                let a = self.client_addr(&r, p);
                ((r, p), a)
            })
            .collect()
    }

    /// How to log into `role` if the system declared it as PostgreSQL (tokio-postgres syntax).
    pub fn postgres_config(&self, role: &str) -> Option<String> {
        let pg = self.declared.get(role)?.postgres.as_ref()?;
        let (host, port) = self.endpoint(role, pg.port);
        Some(format!(
            "host={host} port={port} user={} dbname={} connect_timeout=2",
            pg.user, pg.database
        ))
    }

    /// What the system declared for `role`.
    pub fn declared(&self, role: &str) -> Option<&system::Service> {
        self.declared.get(role)
    }

    /// Docker's view of `role`'s container now.
    async fn inspect(
        &self,
        role: &str,
    ) -> Result<
        (
            &Service,
            testcontainers::bollard::models::ContainerInspectResponse,
        ),
        StackError,
    > {
        let svc = self.services.get(role).expect("unknown role");
        let info = self
            .docker
            .inspect_container(&svc.id, None::<InspectContainerOptions>)
            .await
            .map_err(docker_err(format!("inspect {}", svc.name)))?;
        Ok((svc, info))
    }

    /// What observers need to attribute events to a service (pid refreshed from Docker).
    pub async fn watched(&self, role: &str) -> Result<WatchedContainer, StackError> {
        let (svc, info) = self.inspect(role).await?;
        let pid = info.state.and_then(|s| s.pid).unwrap_or(0).max(0) as u32;
        Ok(WatchedContainer {
            role: role.to_string(),
            id: svc.id.clone(),
            pid,
        })
    }

    /// Whether this process sees the containers' processes as the engine reports them: its
    /// `/proc/<pid>/cgroup` names the container (false in a CI job container, for a remote
    /// engine, or before any service runs).
    pub(crate) async fn sees_engine_pids(&self) -> bool {
        if matches!(self.reach, crate::reach::Reach::Direct { .. }) {
            return false;
        }
        for role in self.roles() {
            if let Ok(w) = self.watched(&role).await
                && w.pid > 0
            {
                return pid_seen_here(w.pid, &w.id);
            }
        }
        false
    }

    /// Whether the run will want its host agent whatever the fault: the observers read the
    /// engine's host through it when this process is not root or runs in a container.
    fn agent_likely(&self) -> bool {
        // SAFETY: geteuid has no preconditions.
        matches!(self.reach, crate::reach::Reach::Direct { .. }) || unsafe { libc::geteuid() } != 0
    }

    /// The IPv4 address of `role` on the stack network, while it runs (`None` when it has none).
    pub async fn address(&self, role: &str) -> Result<Option<String>, StackError> {
        let (_, info) = self.inspect(role).await?;
        Ok(info
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut nets| nets.remove(&self.network))
            .and_then(|n| n.ip_address)
            .filter(|ip| !ip.is_empty()))
    }

    /// Starts a stopped (killed) service again and waits until it serves.
    pub async fn start_service(&self, role: &str) -> Result<(), StackError> {
        let svc = self.services.get(role).expect("unknown role");
        self.docker
            .start_container(
                &svc.id,
                None::<testcontainers::bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(docker_err(format!("start {}", svc.name)))?;
        Ok(())
    }

    /// Waits until a service is ready by its probe (see [`system::Probe`]) after a (re)start;
    /// without a probe, until its first port accepts a connection.
    pub async fn wait_ready(&self, role: &str, deadline: Duration) -> Result<(), StackError> {
        let Some(svc) = self.declared.get(role) else {
            return Ok(());
        };
        match &svc.ready {
            Some(system::Probe::Postgres { .. }) => self.wait_postgres(role, deadline).await,
            Some(system::Probe::Exchange { port, send, expect }) => {
                self.wait_tcp_banner(role, *port, send, expect, deadline)
                    .await
            }
            Some(system::Probe::Tcp(port)) => {
                self.wait_tcp_banner(role, *port, b"", b"", deadline).await
            }
            Some(system::Probe::Http { port, path }) => {
                self.wait_http_ok(role, *port, path, deadline).await
            }
            None => match svc.ports.first() {
                Some(port) => self.wait_tcp_banner(role, *port, b"", b"", deadline).await,
                None => Ok(()),
            },
        }
    }

    async fn wait_postgres(&self, role: &str, deadline: Duration) -> Result<(), StackError> {
        let Some(cfg) = self.postgres_config(role) else {
            return Err(self
                .not_ready(
                    role,
                    deadline,
                    "its probe is Probe::Postgres but the service is not declared with Service::postgres".into(),
                )
                .await);
        };
        let until = Instant::now() + deadline;
        let mut last = String::new();
        while Instant::now() < until {
            match tokio::time::timeout(
                Duration::from_secs(2),
                tokio_postgres::connect(&cfg, tokio_postgres::NoTls),
            )
            .await
            {
                Ok(Ok((client, conn))) => {
                    let h = tokio::spawn(conn);
                    let ok = client.simple_query("select 1").await.is_ok();
                    drop(client);
                    h.abort();
                    if ok {
                        return Ok(());
                    }
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "connect timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(self.not_ready(role, deadline, last).await)
    }

    async fn wait_tcp_banner(
        &self,
        role: &str,
        port: u16,
        send: &[u8],
        expect: &[u8],
        deadline: Duration,
    ) -> Result<(), StackError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.addr(role, port);
        let until = Instant::now() + deadline;
        let mut last = String::new();
        while Instant::now() < until {
            let attempt = async {
                let mut s = tokio::net::TcpStream::connect(&addr).await?;
                if send.is_empty() {
                    return Ok(true);
                }
                s.write_all(send).await?;
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).await?;
                Ok::<_, std::io::Error>(buf[..n].starts_with(expect))
            };
            match tokio::time::timeout(Duration::from_secs(1), attempt).await {
                Ok(Ok(true)) => return Ok(()),
                Ok(Ok(false)) => last = "unexpected answer".into(),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "no answer within 1 s".into(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(self.not_ready(role, deadline, last).await)
    }

    async fn wait_http_ok(
        &self,
        role: &str,
        port: u16,
        path: &str,
        deadline: Duration,
    ) -> Result<(), StackError> {
        let url = format!("http://{}{path}", self.addr(role, port));
        let until = Instant::now() + deadline;
        let mut last = String::new();
        while Instant::now() < until {
            match crate::http::get(&url, Duration::from_secs(1)).await {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => last = format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(self.not_ready(role, deadline, last).await)
    }

    async fn not_ready(&self, role: &str, deadline: Duration, why: String) -> StackError {
        let name = self
            .services
            .get(role)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        StackError::NotReady {
            role: role.into(),
            secs: deadline.as_secs(),
            why,
            logs: log_tail(&self.docker, &name, 20).await,
        }
    }

    /// The last `n` log lines of a service (stdout and stderr).
    pub async fn logs(&self, role: &str, n: usize) -> String {
        match self.services.get(role) {
            Some(s) => log_tail(&self.docker, &s.name, n).await,
            None => String::new(),
        }
    }

    /// The run's host agent, started on first call; its error is kept and said again.
    pub(crate) async fn agent(&self) -> Result<std::sync::Arc<crate::agent::Agent>, String> {
        self.agent
            .get_or_init(|| async {
                crate::agent::Agent::start(&self.docker, &self.run_id, labels(&self.run_id))
                    .await
                    .map(std::sync::Arc::new)
            })
            .await
            .clone()
    }

    /// The network namespace of `role`'s process `pid`, held by the run's host agent.
    pub(crate) async fn netns(
        &self,
        pid: u32,
        role: &str,
    ) -> Result<crate::fault::netns::Netns, String> {
        crate::fault::netns::Netns::open(self.agent().await?, pid, role).await
    }

    /// Removes every container, the network and the volume; bounded, never panics.
    pub async fn teardown(&self) {
        let handles: Vec<_> =
            std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        let mut ids: Vec<String> = self.services.values().map(|s| s.id.clone()).collect();
        // Containers created but never registered (a failed parallel start) carry our run label.
        let filter = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_RUN}={}", self.run_id)],
        )]);
        if let Ok(list) = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filter)
                    .build(),
            ))
            .await
        {
            ids.extend(list.into_iter().filter_map(|c| c.id));
        }
        ids.sort();
        ids.dedup();
        let removals = ids.into_iter().map(|id| {
            let docker = self.docker.clone();
            async move {
                force_remove(&docker, &id).await;
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(removals))
            .await;
        // The handles' own Drop would remove again; they are gone already, so forget them.
        for h in handles {
            std::mem::forget(h);
        }
        remove_network(&self.docker, &self.network).await;
        let volumes = self
            .volumes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for v in volumes {
            let _ = self
                .docker
                .remove_volume(&v, None::<RemoveVolumeOptions>)
                .await;
        }
    }

    /// Keeps everything running (CHAOS_KEEP=1 on a failed test) and says how to remove it.
    pub fn keep(&self) -> String {
        for h in std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner())) {
            std::mem::forget(h);
        }
        format!(
            "kept stack {} (network {}, containers {}); remove with `docker rm -f $(docker ps -aq --filter label=chaos.run={})`",
            self.run_id,
            self.network,
            self.services
                .values()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.run_id
        )
    }
}

fn labels(run_id: &str) -> HashMap<String, String> {
    let mut l = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_RUN.to_string(), run_id.to_string()),
        (LABEL_PID.to_string(), std::process::id().to_string()),
        (LABEL_OWNER.to_string(), Owner::current().label()),
    ]);
    if std::env::var_os("CHAOS_KEEP").is_some_and(|v| v != "0") {
        l.insert(LABEL_KEEP.to_string(), "true".to_string());
    }
    l
}

/// Whether the sweep may remove a resource with these labels: not kept, and its owner provably
/// gone. Resources without an owner label (older versions) fall back to the pid label, read in
/// our own pid namespace, as before.
fn sweepable(labels: Option<&HashMap<String, String>>, me: &Owner) -> bool {
    let Some(l) = labels else { return false };
    if l.contains_key(LABEL_KEEP) {
        return false;
    }
    match l.get(LABEL_OWNER).and_then(|o| Owner::parse(o)) {
        Some(owner) => owner.is_gone(me, start_time),
        None => l
            .get(LABEL_PID)
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| !pid_alive(pid)),
    }
}

/// The last `n` log lines of a container by name or id.
pub async fn log_tail(docker: &Docker, name: &str, n: usize) -> String {
    use futures::StreamExt;
    let opts = testcontainers::bollard::query_parameters::LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(&n.to_string())
        .build();
    let mut out = String::new();
    let mut stream = docker.logs(name, Some(opts));
    let collect = async {
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&chunk.to_string());
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), collect).await;
    out
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes every container, network and volume labelled with `run_id` (a run interrupted while
/// its stack was starting, before a [`Stack`] existed). Returns how many were removed.
pub async fn remove_run(docker: &Docker, run_id: &str) -> usize {
    remove_labelled(docker, &format!("{LABEL_RUN}={run_id}"), |_| true).await
}

/// Removes a network after disconnecting what is still attached to it (a test process's own
/// container joins its runs' networks; see `crate::reach`). Whether it is gone.
async fn remove_network(docker: &Docker, name: &str) -> bool {
    if let Ok(net) = docker
        .inspect_network(
            name,
            None::<testcontainers::bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
    {
        for container in net.containers.unwrap_or_default().into_keys() {
            let _ = docker
                .disconnect_network(
                    name,
                    testcontainers::bollard::models::NetworkDisconnectRequest {
                        container,
                        force: Some(true),
                    },
                )
                .await;
        }
    }
    docker.remove_network(name).await.is_ok()
}

/// Removes the containers (first), networks and volumes carrying `label` whose labels `pick`
/// accepts. Returns how many were removed.
async fn remove_labelled(
    docker: &Docker,
    label: &str,
    pick: impl Fn(Option<&HashMap<String, String>>) -> bool,
) -> usize {
    let filter = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let mut removed = 0;
    let containers = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filter)
        .build();
    for c in docker
        .list_containers(Some(containers))
        .await
        .unwrap_or_default()
    {
        if pick(c.labels.as_ref())
            && let Some(id) = c.id
        {
            removed += usize::from(force_remove(docker, &id).await);
        }
    }
    let networks = ListNetworksOptionsBuilder::new().filters(&filter).build();
    for n in docker
        .list_networks(Some(networks))
        .await
        .unwrap_or_default()
    {
        if pick(n.labels.as_ref())
            && let Some(name) = n.name
        {
            removed += usize::from(remove_network(docker, &name).await);
        }
    }
    let volumes = ListVolumesOptionsBuilder::new().filters(&filter).build();
    let listed = docker.list_volumes(Some(volumes)).await.ok();
    for v in listed.and_then(|l| l.volumes).unwrap_or_default() {
        if pick(Some(&v.labels)) {
            let gone = docker
                .remove_volume(&v.name, None::<RemoveVolumeOptions>)
                .await
                .is_ok();
            removed += usize::from(gone);
        }
    }
    removed
}

/// Removes containers, networks and volumes left by runs whose test process is provably gone
/// (a SIGKILLed `cargo test`, a CI timeout): same boot, same pid namespace, and the owner's pid
/// free or reused by a later process. Resources of live processes, of processes in other pid
/// namespaces or on other hosts sharing the daemon, and of `CHAOS_KEEP` runs are left alone
/// (`cargo chaos clean` removes those on request).
pub async fn sweep(docker: &Docker) -> usize {
    let me = Owner::current();
    remove_labelled(docker, LABEL_MANAGED, |labels| sweepable(labels, &me)).await
        + sweep_unstarted_reapers(docker, &me).await
}

/// Removes reaper containers that were created but never started by a process that is
/// provably gone (killed between the reaper's creation and its start, a fraction of a
/// second). A reaper that started removes itself (auto-remove): only these are left.
async fn sweep_unstarted_reapers(docker: &Docker, me: &Owner) -> usize {
    let filter = HashMap::from([
        (
            "label".to_string(),
            vec![crate::reaper::LABEL_REAPER.to_string()],
        ),
        ("status".to_string(), vec!["created".to_string()]),
    ]);
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filter)
        .build();
    let mut removed = 0;
    for c in docker.list_containers(Some(opts)).await.unwrap_or_default() {
        let gone = c
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::reaper::LABEL_REAPER))
            .and_then(|o| Owner::parse(o))
            .is_some_and(|owner| owner.is_gone(me, start_time));
        if gone && let Some(id) = c.id {
            removed += usize::from(force_remove(docker, &id).await);
        }
    }
    removed
}

#[cfg(test)]
mod ownership_tests {
    use super::*;

    #[test]
    fn published_ports_are_chosen_below_the_ephemeral_range() {
        assert_eq!(below_ephemeral(32_768), (20_768, 12_000));
        assert_eq!(below_ephemeral(1_024), (61_000, 4_000));
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(32_768);
        for _ in 0..20 {
            let p = free_port().unwrap();
            assert!(
                p < low || low <= 20_000,
                "{p} is in the ephemeral range from {low}"
            );
        }
    }

    fn me() -> Owner {
        Owner {
            boot_id: "b1".into(),
            pid_ns: "4026531836".into(),
            pid: 100,
            start: 5000,
        }
    }

    #[test]
    fn an_owner_label_reads_back() {
        let o = Owner::current();
        assert_eq!(Owner::parse(&o.label()), Some(o.clone()));
        assert!(o.start > 0 && !o.boot_id.is_empty() && !o.pid_ns.is_empty());
    }

    #[test]
    fn only_a_dead_owner_of_our_boot_and_pid_namespace_is_gone() {
        let dead = Owner {
            pid: 200,
            start: 7000,
            ..me()
        };
        // The pid is free: gone.
        assert!(dead.is_gone(&me(), |_| None));
        // The pid was reused by a process that started later: gone.
        assert!(dead.is_gone(&me(), |_| Some(9000)));
        // The same process still runs: not gone.
        assert!(!dead.is_gone(&me(), |_| Some(7000)));
        // Another pid namespace (a CI job container on the same daemon): cannot tell, keep.
        let elsewhere = Owner {
            pid_ns: "4026532000".into(),
            ..dead.clone()
        };
        assert!(!elsewhere.is_gone(&me(), |_| None));
        // Another boot or host (a remote engine's other clients): keep.
        let other_host = Owner {
            boot_id: "b2".into(),
            ..dead
        };
        assert!(!other_host.is_gone(&me(), |_| None));
    }

    #[test]
    fn kept_stacks_are_never_swept() {
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_KEEP.to_string(), "true".to_string()),
            (LABEL_PID.to_string(), "999999999".to_string()),
        ]);
        assert!(!sweepable(Some(&labels), &Owner::current()));
        let mut unkept = labels.clone();
        unkept.remove(LABEL_KEEP);
        assert!(sweepable(Some(&unkept), &Owner::current()));
    }
}
