//! The system under test, declared in code: its services, workloads, steady state and invariants.
//!
//! A chaos test runs against a [`System`]: a plain value a function of yours returns, the way
//! `#[sqlx::test(migrator = ..)]` names a migrator. Services are testcontainers requests (any
//! [`Image`], a [`GenericImage`], an image built from your Dockerfile with
//! [`System::build`], or one already in the local engine) plus what chaos needs: a role name,
//! the ports to publish, a readiness probe that also says when a restarted service is back.
//!
//! ```no_run
//! use chaos_runtime::system::{Probe, Service, System};
//! use chaos_runtime::workload::HttpWorkload;
//! use testcontainers::ImageExt;
//!
//! pub fn system() -> System {
//!     System::new("shop")
//!         .service(
//!             Service::new("db", |w| w.base_image().with_cmd(["chaos-postgres"]).with_user("postgres"))
//!                 .port(5432)
//!                 .postgres("postgres", "postgres")
//!                 .ready(Probe::Postgres { port: 5432 }),
//!         )
//!         .service(
//!             Service::new("web", |w| {
//!                 testcontainers::GenericImage::new("my-shop", "dev")
//!                     .with_env_var("DATABASE_URL", format!("postgres://postgres@{}/postgres", w.addr("db", 5432)))
//!             })
//!             .port(8080)
//!             .depends_on(["db"])
//!             .ready(Probe::http(8080, "/health")),
//!         )
//!         .workload("browse", HttpWorkload::get("web", 8080, "/products/{seq}"))
//! }
//! ```
//!
//! Services refer to each other through [`Wiring`]: `w.addr("db", 5432)` is the address the
//! other containers reach `db` at in this run, and when a fault puts the fault proxy in front of
//! `db` it is the proxy's address instead, so the wiring never changes by hand.
use crate::invariant::Invariant;
use crate::workload::Workload;
use chaos_spec::suggest::{did_you_mean, listing};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use testcontainers::core::{IntoContainerPort, Mount};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerRequest, GenericBuildableImage, GenericImage, Image, ImageExt};

/// The role of the fault proxy the runtime adds when a fault needs it. Systems cannot use it.
pub const PROXY_ROLE: &str = "proxy";

/// A system under test: services, named workloads, the steady-state hypothesis, invariants.
pub struct System {
    pub(crate) name: String,
    pub(crate) services: Vec<Service>,
    pub(crate) workloads: Vec<(String, Arc<dyn Workload>)>,
    pub(crate) steady: SteadyState,
    pub(crate) invariants: Vec<Arc<dyn Invariant>>,
    pub(crate) builds: std::sync::Mutex<Vec<GenericBuildableImage>>,
}

impl System {
    /// An empty system named `name` (the name shows in reports).
    pub fn new(name: impl Into<String>) -> Self {
        System {
            name: name.into(),
            services: Vec::new(),
            workloads: Vec::new(),
            steady: SteadyState::default(),
            invariants: Vec::new(),
            builds: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Adds a service.
    pub fn service(mut self, service: Service) -> Self {
        self.services.push(service);
        self
    }

    /// Adds a named workload. The first one is the default; a test picks another with
    /// `workload = "name"`.
    pub fn workload(mut self, name: impl Into<String>, workload: impl Workload) -> Self {
        self.workloads.push((name.into(), Arc::new(workload)));
        self
    }

    /// The steady-state hypothesis of this system (tests may override parts of it).
    pub fn steady_state(mut self, steady: SteadyState) -> Self {
        self.steady = steady;
        self
    }

    /// Adds an invariant, checked once the steady state has returned.
    pub fn invariant(mut self, invariant: impl Invariant) -> Self {
        self.invariants.push(Arc::new(invariant));
        self
    }

    /// An image to build from a Dockerfile before any service starts (testcontainers'
    /// [`GenericBuildableImage`]; Docker's layer cache makes a rebuild of an unchanged context
    /// quick). The build argument `CHAOS_BASE_IMAGE` names the framework's local Debian image
    /// (PostgreSQL 15, Redis, nginx, iproute2), so a Dockerfile can start
    /// `ARG CHAOS_BASE_IMAGE` / `FROM ${CHAOS_BASE_IMAGE}` on a machine with no registry.
    pub fn build(self, image: GenericBuildableImage) -> Self {
        self.builds.lock().unwrap().push(image);
        self
    }

    /// The system's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared roles, in declaration order.
    pub fn roles(&self) -> Vec<&str> {
        self.services.iter().map(|s| s.role.as_str()).collect()
    }

    /// A service by role.
    pub fn get(&self, role: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.role == role)
    }

    pub(crate) fn workload_named(&self, name: Option<&str>) -> Option<(&str, Arc<dyn Workload>)> {
        match name {
            None => self.workloads.first(),
            Some(n) => self.workloads.iter().find(|(w, _)| w == n),
        }
        .map(|(n, w)| (n.as_str(), w.clone()))
    }

    /// Checks the declaration itself: role names, duplicates, dependencies, workloads.
    pub fn validate(&self) -> Result<(), SystemError> {
        let bad = |what: String| {
            Err(SystemError::Invalid {
                system: self.name.clone(),
                what,
            })
        };
        let roles = self.roles();
        for (i, s) in self.services.iter().enumerate() {
            if !chaos_spec::valid_role(&s.role) {
                return bad(format!(
                    "the role `{}` is not a valid name: lowercase letters, digits, `-` and `_`, starting with a letter, at most 32 characters",
                    s.role
                ));
            }
            if s.role == PROXY_ROLE {
                return bad(format!(
                    "the role `{PROXY_ROLE}` is the fault proxy's; name the service otherwise"
                ));
            }
            if roles[..i].contains(&s.role.as_str()) {
                return bad(format!("the role `{}` is declared twice", s.role));
            }
            for d in &s.depends_on {
                if !roles.contains(&d.as_str()) {
                    return bad(format!(
                        "`{}` depends on `{d}`, which is not a role of the system{}",
                        s.role,
                        hint(d, &roles)
                    ));
                }
            }
        }
        if self.services.is_empty() {
            return bad("it declares no service".into());
        }
        if self.workloads.is_empty() {
            return bad("it declares no workload: add one with `.workload(name, ..)` (e.g. `HttpWorkload::get(role, port, path)`)".into());
        }
        self.start_waves().map(drop)
    }

    /// Services grouped into waves: each wave starts in parallel once the previous is ready.
    pub(crate) fn start_waves(&self) -> Result<Vec<Vec<&Service>>, SystemError> {
        let mut done: Vec<&str> = Vec::new();
        let mut waves = Vec::new();
        while done.len() < self.services.len() {
            let wave: Vec<&Service> = self
                .services
                .iter()
                .filter(|s| !done.contains(&s.role.as_str()))
                .filter(|s| s.depends_on.iter().all(|d| done.contains(&d.as_str())))
                .collect();
            if wave.is_empty() {
                let left: Vec<&str> = self
                    .services
                    .iter()
                    .map(|s| s.role.as_str())
                    .filter(|r| !done.contains(r))
                    .collect();
                return Err(SystemError::Invalid {
                    system: self.name.clone(),
                    what: format!("its dependencies form a cycle among {}", listing(&left)),
                });
            }
            done.extend(wave.iter().map(|s| s.role.as_str()));
            waves.push(wave);
        }
        Ok(waves)
    }
}

fn hint(input: &str, candidates: &[&str]) -> String {
    match did_you_mean(input, candidates) {
        Some(g) => format!(" (did you mean `{g}`?)"),
        None => format!("; its roles are {}", listing(candidates)),
    }
}

/// What a system or a test asks for that cannot be, found before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// How to reach the services could not be decided (see `crate::reach`).
    #[error("{0}")]
    Reach(String),
    /// The declaration itself is wrong.
    #[error("the system `{system}` is not valid: {what}")]
    Invalid {
        /// The system.
        system: String,
        /// What is wrong, and how to fix it.
        what: String,
    },
    /// A test names a role the system does not have.
    #[error("`{role}` is not a role of the system `{system}`{hint}")]
    UnknownRole {
        /// The system.
        system: String,
        /// The role the test names.
        role: String,
        /// A did-you-mean, or the list of roles.
        hint: String,
    },
    /// A test names a workload the system does not have.
    #[error("`{workload}` is not a workload of the system `{system}`{hint}")]
    UnknownWorkload {
        /// The system.
        system: String,
        /// The workload the test names.
        workload: String,
        /// A did-you-mean, or the list of workloads.
        hint: String,
    },
    /// A fault cannot act on the role it names.
    #[error("the fault `{fault}` cannot target `{role}`: {why}")]
    Unfit {
        /// The fault kind.
        fault: String,
        /// The role.
        role: String,
        /// Why, and what would fit.
        why: String,
    },
}

impl SystemError {
    pub(crate) fn unknown_role(system: &System, role: &str) -> Self {
        SystemError::UnknownRole {
            system: system.name.clone(),
            role: role.to_string(),
            hint: hint(role, &system.roles()),
        }
    }

    pub(crate) fn unknown_workload(system: &System, workload: &str) -> Self {
        let names: Vec<&str> = system.workloads.iter().map(|(n, _)| n.as_str()).collect();
        SystemError::UnknownWorkload {
            system: system.name.clone(),
            workload: workload.to_string(),
            hint: hint(workload, &names),
        }
    }
}

/// The steady-state hypothesis: what "the system works" means, measured on the workload.
#[derive(Clone, Debug)]
pub struct SteadyState {
    /// The share of requests that must succeed in a window (default 1.0: every one).
    pub ok_ratio: f64,
    /// How long the hypothesis must hold before the fault is injected (default 2 s).
    pub baseline_window: Duration,
    /// How long it must hold after heal for the system to count as recovered (default 1 s).
    /// The run ends as soon as the first such window is final: every request that started in
    /// it has completed (a request still in flight holds it open, up to its timeout).
    pub recovery_window: Duration,
    /// The latency ceiling of the recovery window.
    pub p99: Ceiling,
    /// Requests a window needs to count (default 5; the baseline needs twice as many).
    pub min_samples: usize,
    /// How long the system may take to reach its steady state before any fault (default 30 s).
    pub baseline_deadline: Duration,
}

impl Default for SteadyState {
    fn default() -> Self {
        SteadyState {
            ok_ratio: 1.0,
            baseline_window: Duration::from_secs(2),
            recovery_window: Duration::from_secs(1),
            p99: Ceiling::FromBaseline {
                factor: 4.0,
                plus: Duration::from_millis(50),
            },
            min_samples: 5,
            baseline_deadline: Duration::from_secs(30),
        }
    }
}

/// The p99 latency a recovered system must stay under.
#[derive(Clone, Copy, Debug)]
pub enum Ceiling {
    /// `max(baseline p99 × factor, baseline p99 + plus)`: relative to what this run measured.
    FromBaseline {
        /// Multiplier of the baseline p99.
        factor: f64,
        /// Or this much above it, whichever is larger.
        plus: Duration,
    },
    /// A fixed ceiling.
    Fixed(Duration),
    /// No latency condition.
    None,
}

/// When a service is ready: after it starts (once the image's own wait conditions passed) and
/// after a fault restarted it. Probes run from the test process against the published port.
#[derive(Clone, Debug)]
pub enum Probe {
    /// A TCP connection is accepted.
    Tcp(u16),
    /// Sending `send` gets an answer starting with `expect` (e.g. Redis' `PING` → `+PONG`).
    Exchange {
        /// The container port.
        port: u16,
        /// What to send.
        send: Vec<u8>,
        /// How the answer must start.
        expect: Vec<u8>,
    },
    /// `GET path` answers 200.
    Http {
        /// The container port.
        port: u16,
        /// The path, e.g. `/health`.
        path: String,
    },
    /// `select 1` succeeds (the service must be declared with [`Service::postgres`]).
    Postgres {
        /// The container port.
        port: u16,
    },
}

impl Probe {
    /// `GET path` on `port` answers 200.
    pub fn http(port: u16, path: impl Into<String>) -> Self {
        Probe::Http {
            port,
            path: path.into(),
        }
    }

    /// `send` on `port` is answered with something starting with `expect`.
    pub fn exchange(port: u16, send: impl Into<Vec<u8>>, expect: impl Into<Vec<u8>>) -> Self {
        Probe::Exchange {
            port,
            send: send.into(),
            expect: expect.into(),
        }
    }
}

/// How the test process and faults log into a PostgreSQL service.
#[derive(Clone, Debug)]
pub struct PgAccess {
    /// The user (trust or no password on the stack's network).
    pub user: String,
    /// The database.
    pub database: String,
    /// The container port (5432 unless told).
    pub port: u16,
}

/// One service of a system: a role name and how to make its container.
#[derive(Clone)]
pub struct Service {
    pub(crate) role: String,
    pub(crate) make: Arc<dyn Fn(&Wiring) -> Pending + Send + Sync>,
    pub(crate) ports: Vec<u16>,
    pub(crate) ready: Option<Probe>,
    pub(crate) depends_on: Vec<String>,
    pub(crate) postgres: Option<PgAccess>,
    pub(crate) startup_timeout: Duration,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("role", &self.role)
            .field("ports", &self.ports)
            .field("ready", &self.ready)
            .field("depends_on", &self.depends_on)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service named `role` whose container `make` describes, given this run's [`Wiring`].
    /// `make` returns any testcontainers request: a [`GenericImage`], an [`Image`] of yours, or
    /// either with `.with_*` calls ([`ImageExt`]). The runtime adds the network, the container
    /// name, labels and the port bindings.
    pub fn new<I, R, F>(role: impl Into<String>, make: F) -> Self
    where
        I: Image + 'static,
        R: Into<ContainerRequest<I>>,
        F: Fn(&Wiring) -> R + Send + Sync + 'static,
    {
        Service {
            role: role.into(),
            make: Arc::new(move |w| Pending::of(make(w).into())),
            ports: Vec::new(),
            ready: None,
            depends_on: Vec::new(),
            postgres: None,
            startup_timeout: Duration::from_secs(60),
        }
    }

    /// A TCP port of the container: published on the engine's host for the test process, and
    /// the ports the fault proxy fronts when a fault puts it in front of this service.
    pub fn port(mut self, port: u16) -> Self {
        if !self.ports.contains(&port) {
            self.ports.push(port);
        }
        self
    }

    /// When the service is ready (see [`Probe`]). Without one, the image's wait conditions
    /// decide at start, and a TCP connect to the first port after a restart.
    pub fn ready(mut self, probe: Probe) -> Self {
        self.ready = Some(probe);
        self
    }

    /// Roles that must be ready before this one starts. Services without dependencies start
    /// in parallel.
    pub fn depends_on<S: Into<String>>(mut self, roles: impl IntoIterator<Item = S>) -> Self {
        self.depends_on.extend(roles.into_iter().map(Into::into));
        self
    }

    /// Declares the service as PostgreSQL (port 5432): `pool_exhaustion` can target it, the
    /// SQL invariants and [`crate::ChaosRun::postgres`] connect to it, and `memory_oom`
    /// pushes one of its sessions (not the postmaster) past the limit.
    pub fn postgres(mut self, user: impl Into<String>, database: impl Into<String>) -> Self {
        self.postgres = Some(PgAccess {
            user: user.into(),
            database: database.into(),
            port: 5432,
        });
        self.port(5432)
    }

    /// How long the start may take, the image's wait conditions included (default 60 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// The role.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The declared ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }
}

/// What the runtime adds to every request: where, under which name and labels, which ports.
pub(crate) struct Placement {
    pub network: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// container port -> host port, bound on `publish_ip` of the engine's host.
    pub ports: BTreeMap<u16, u16>,
    /// Where ports are published (see `crate::reach`).
    pub publish_ip: &'static str,
    pub startup_timeout: Duration,
    /// A CPU weight for a stack started beside a measurement (unless the service sets one).
    pub cpu_shares: Option<i64>,
}

/// A started container, with the handle testcontainers gave (kept alive, forgotten at teardown).
pub(crate) struct Started {
    pub id: String,
    pub handle: Box<dyn std::any::Any + Send + Sync>,
}

type StartFn = Box<
    dyn FnOnce(
            Placement,
        ) -> BoxFuture<'static, Result<Started, testcontainers::TestcontainersError>>
        + Send,
>;

/// A request with its image type erased, ready to be placed and started.
pub struct Pending(StartFn);

impl Pending {
    fn of<I: Image + 'static>(req: ContainerRequest<I>) -> Self {
        Pending(Box::new(move |p: Placement| {
            Box::pin(async move {
                let user_modifier = req.host_config_modifier().cloned();
                let publish_ip = p.publish_ip;
                let cpu_shares = p.cpu_shares;
                let bindings: std::collections::HashMap<String, Option<Vec<_>>> = p
                    .ports
                    .iter()
                    .map(|(c, h)| {
                        (
                            format!("{c}/tcp"),
                            Some(vec![testcontainers::bollard::models::PortBinding {
                                host_ip: Some(publish_ip.into()),
                                host_port: Some(h.to_string()),
                            }]),
                        )
                    })
                    .collect();
                let mut req = req
                    .with_network(p.network)
                    .with_container_name(p.name)
                    .with_labels(p.labels)
                    .with_startup_timeout(p.startup_timeout)
                    .with_host_config_modifier(move |hc| {
                        if let Some(m) = &user_modifier {
                            m(hc);
                        }
                        hc.cpu_shares = hc.cpu_shares.or(cpu_shares);
                        hc.publish_all_ports = Some(false);
                        hc.port_bindings = Some(bindings.clone());
                    });
                for (c, h) in &p.ports {
                    req = req.with_mapped_port(*h, c.tcp());
                }
                let c = req.start().await?;
                Ok(Started {
                    id: c.id().to_string(),
                    handle: Box::new(c),
                })
            })
        }))
    }

    pub(crate) async fn start(
        self,
        placement: Placement,
    ) -> Result<Started, testcontainers::TestcontainersError> {
        (self.0)(placement).await
    }
}

/// The part of an executable the kernel and the dynamic loader read: the file up to the end of
/// its last segment, without the section headers (so without the debug information, which
/// lies after the segments). Copy this into a container instead of the whole file: a debug
/// build of a Rust service is mostly debug information, and every stack pays for the copy.
/// A file that is not a 64-bit little-endian ELF is returned whole.
///
/// The runtime copies the fault proxy and the host agent this way; a system's own binaries
/// can go the same way:
///
/// ```no_run
/// use chaos_runtime::system::{loadable_part, Service};
/// use testcontainers::{CopyTargetOptions, ImageExt};
///
/// let bin = loadable_part("target/debug/my-service".as_ref()).expect("built by cargo");
/// let service = Service::new("app", move |w| {
///     // Bytes are copied as 0644 unless told otherwise.
///     let exe = CopyTargetOptions::new("/usr/local/bin/my-service").with_mode(0o755);
///     w.base_image()
///         .with_copy_to(exe, bin.clone())
///         .with_cmd(["/usr/local/bin/my-service"])
/// });
/// ```
pub fn loadable_part(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let mut head = [0u8; 64];
    if f.read_exact(&mut head).is_err() {
        return std::fs::read(path);
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as u64;
    let u64_at =
        |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    // ELF magic, 64-bit, little-endian.
    if head[..4] != *b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return std::fs::read(path);
    }
    let (phoff, phentsize, phnum) = (
        u64_at(&head, 0x20),
        u16_at(&head, 0x36),
        u16_at(&head, 0x38),
    );
    if phentsize < 56 || phnum == 0 {
        return std::fs::read(path);
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    f.seek(SeekFrom::Start(phoff))?;
    f.read_exact(&mut table)?;
    let mut end = phoff + phentsize * phnum;
    for ph in table.chunks_exact(phentsize as usize) {
        end = end.max(u64_at(ph, 8).saturating_add(u64_at(ph, 32)));
    }
    let len = f.metadata()?.len();
    if end >= len {
        return std::fs::read(path);
    }
    let mut out = vec![0u8; end as usize];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut out)?;
    // No section headers: e_shoff, e_shnum and e_shstrndx say so.
    out[0x28..0x30].fill(0);
    out[0x3c..0x40].fill(0);
    Ok(out)
}

/// The clock file of a service started with [`Wiring::skewable_clock_env`]: libfaketime's
/// offset (`+0` until the `clock_skew` fault writes another).
pub const FAKETIME_FILE: &str = "/etc/chaos/faketime";

/// This run's addresses, handed to [`Service::new`]'s closure.
pub struct Wiring {
    pub(crate) names: BTreeMap<String, String>,
    /// (role, port) -> (proxy container name, proxy listen port).
    pub(crate) proxied: BTreeMap<(String, u16), (String, u16)>,
    pub(crate) base_image: String,
    pub(crate) base_used: AtomicBool,
    pub(crate) run_id: String,
    /// Volumes to create: name, and a size for a tmpfs-backed one.
    pub(crate) volumes: std::sync::Mutex<Vec<(String, Option<u64>)>>,
}

impl Wiring {
    /// The container's DNS name on the stack's network (unique per run).
    pub fn host(&self, role: &str) -> String {
        self.names
            .get(role)
            .cloned()
            .unwrap_or_else(|| panic!("`{role}` is not a role of this system"))
    }

    /// `host:port` at which the other containers reach `role`'s `port` in this run: the fault
    /// proxy's listener when this run puts the proxy in front of `role`, the service otherwise.
    pub fn addr(&self, role: &str, port: u16) -> String {
        match self.proxied.get(&(role.to_string(), port)) {
            Some((host, listen)) => format!("{host}:{listen}"),
            None => format!("{}:{port}", self.host(role)),
        }
    }

    /// The framework's Debian image, built locally on first use (PostgreSQL 15 with a
    /// `chaos-postgres` start script, Redis, nginx, iproute2, iptables, procps): for systems
    /// on a machine with no registry.
    pub fn base_image(&self) -> GenericImage {
        self.base_used.store(true, Ordering::Relaxed);
        let (name, tag) = self
            .base_image
            .split_once(':')
            .unwrap_or((&self.base_image, "latest"));
        GenericImage::new(name, tag)
    }

    /// This run's id (names every resource).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// A Docker volume of this run mounted at `path`: created (labelled) before the services
    /// start, removed with the stack. It survives a container's restart, so data written before
    /// a kill is there after it (and, unlike the container's own filesystem, cgroup I/O
    /// throttles reach it).
    pub fn volume(&self, name: &str, path: &str) -> Mount {
        self.volume_of(name, path, None)
    }

    /// A volume of this run holding at most `bytes` (the local driver's tmpfs with `size=`),
    /// mounted at `path`: a disk that can be filled (the `disk_full` fault). Its mount point
    /// is world-writable (tmpfs's 1777); a service that must own its data directory keeps it
    /// in a subdirectory. Being memory, its content lasts while a container of the run uses
    /// it: it does not survive a restart of its only user.
    pub fn sized_volume(&self, name: &str, path: &str, bytes: u64) -> Mount {
        self.volume_of(name, path, Some(bytes))
    }

    fn volume_of(&self, name: &str, path: &str, size: Option<u64>) -> Mount {
        let volume = format!("chaos-{}-{name}", self.run_id);
        let mut v = self.volumes.lock().unwrap();
        if !v.iter().any(|(n, _)| *n == volume) {
            v.push((volume.clone(), size));
        }
        Mount::volume_mount(volume, path)
    }

    /// The environment that puts a service's processes on a wall clock the `clock_skew` fault
    /// can move: libfaketime preloaded (the base image has it at `/usr/local/lib`), reading
    /// its offset from [`FAKETIME_FILE`] on every call, the monotonic clock left alone. Copy
    /// the file in too, with `+0`:
    ///
    /// ```no_run
    /// # use chaos_runtime::{Service, system::FAKETIME_FILE};
    /// # use testcontainers::ImageExt;
    /// Service::new("db", |w| {
    ///     let mut image = w.base_image().with_copy_to(FAKETIME_FILE, b"+0\n".to_vec());
    ///     for (k, v) in w.skewable_clock_env() {
    ///         image = image.with_env_var(k, v);
    ///     }
    ///     image
    /// });
    /// ```
    pub fn skewable_clock_env(&self) -> [(&'static str, &'static str); 4] {
        [
            ("LD_PRELOAD", "/usr/local/lib/libfaketime.so.1"),
            ("FAKETIME_TIMESTAMP_FILE", FAKETIME_FILE),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
    }

    /// A read-only bind mount of a host file (prefer `with_copy_to`, which also works when the
    /// Docker engine is on another machine).
    pub fn bind_read_only(&self, host: &str, container: &str) -> Mount {
        Mount::bind_mount(host, container)
            .with_access_mode(testcontainers::core::AccessMode::ReadOnly)
    }
}
