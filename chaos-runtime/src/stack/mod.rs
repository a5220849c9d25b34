//! The stack under test: a per-test Docker network and labelled containers of the trading system
//! (PostgreSQL, Redis, the order service, nginx, and the fault proxy when a fault needs it),
//! started in parallel, each with a readiness condition, ports published on 127.0.0.1 only.
//!
//! Every container, network and volume carries `chaos.managed=true`, `chaos.run=<run id>` and
//! `chaos.pid=<test process pid>`. [`sweep`] removes what a killed run (whose pid is gone) left.
use crate::observe::WatchedContainer;
use crate::progress;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use testcontainers::bollard::Docker;
use testcontainers::bollard::models::{NetworkCreateRequest, PortBinding, VolumeCreateRequest};
use testcontainers::bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptions,
};
use testcontainers::core::{AccessMode, IntoContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

const NGINX_CONF: &str = include_str!("../../../fixtures/nginx.conf");

/// Label every managed resource carries.
pub const LABEL_MANAGED: &str = "chaos.managed";
/// Label naming the run.
pub const LABEL_RUN: &str = "chaos.run";
/// Label naming the pid of the test process that owns the resource.
pub const LABEL_PID: &str = "chaos.pid";

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

/// What the stack looks like. The defaults are the bundled trading system.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Roles that sit behind the fault proxy (the order service reaches them through it).
    pub behind_proxy: Vec<String>,
    /// PostgreSQL `max_connections`.
    pub pg_max_connections: u32,
    /// The order service's connection pool size.
    pub db_pool_size: u32,
    /// Extra environment of the order service.
    pub orders_env: Vec<(String, String)>,
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            behind_proxy: Vec::new(),
            pg_max_connections: 30,
            db_pool_size: 8,
            orders_env: Vec::new(),
        }
    }
}

/// One running service.
pub struct Service {
    /// Its role: postgres, redis, orders, nginx, proxy.
    pub role: String,
    /// Docker container name.
    pub name: String,
    /// Docker container id.
    pub id: String,
    /// Container port -> host port on 127.0.0.1.
    pub ports: BTreeMap<u16, u16>,
}

/// The running stack of one test.
pub struct Stack {
    /// The run id (names and labels every resource).
    pub run_id: String,
    /// The per-test network.
    pub network: String,
    /// The PostgreSQL data volume.
    pub volume: String,
    docker: Docker,
    services: BTreeMap<String, Service>,
    containers: std::sync::Mutex<Vec<ContainerAsync<GenericImage>>>,
    tmp: PathBuf,
}

fn docker_err(
    call: impl Into<String>,
) -> impl FnOnce(testcontainers::bollard::errors::Error) -> StackError {
    let call = call.into();
    move |source| StackError::Docker { call, source }
}

/// A free TCP port on 127.0.0.1 (fixed host ports survive container restarts; ephemeral ones may not).
fn free_port() -> Result<u16, StackError> {
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

/// Where a fixture binary built by the suite's `cargo test` lives: beside the test binary's parent.
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
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| StackError::MissingBinary {
            what: name,
            path: candidates
                .last()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            env,
        })
}

impl Stack {
    /// Starts the stack: network, volume, then every service in parallel, each waited for.
    pub async fn start(
        docker: &Docker,
        image: &str,
        run_id: &str,
        cfg: &StackConfig,
    ) -> Result<Stack, StackError> {
        let started = Instant::now();
        let orders_bin = fixture_binary("order-service", "CHAOS_ORDER_SERVICE_BIN")?;
        let proxy_bin = if cfg.behind_proxy.is_empty() {
            None
        } else {
            Some(fixture_binary("chaos-proxy", "CHAOS_PROXY_BIN")?)
        };
        let labels = labels(run_id);
        let network = format!("chaos-{run_id}");
        docker
            .create_network(NetworkCreateRequest {
                name: network.clone(),
                driver: Some("bridge".into()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(docker_err(format!("network create {network}")))?;
        let volume = format!("chaos-{run_id}-pgdata");
        let mut stack = Stack {
            run_id: run_id.to_string(),
            network: network.clone(),
            volume: volume.clone(),
            docker: docker.clone(),
            services: BTreeMap::new(),
            containers: std::sync::Mutex::new(Vec::new()),
            tmp: std::env::temp_dir().join(format!("chaos-{run_id}")),
        };
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(docker_err(format!("volume create {volume}")))?;
        std::fs::create_dir_all(&stack.tmp).map_err(|source| StackError::Io {
            call: format!("mkdir {}", stack.tmp.display()),
            source,
        })?;

        let name = |role: &str| format!("chaos-{run_id}-{role}");
        let (pg_host, pg_port, redis_host, redis_port) = if cfg.behind_proxy.is_empty() {
            (name("postgres"), 5432, name("redis"), 6379)
        } else {
            let pg = if cfg.behind_proxy.iter().any(|r| r == "postgres") {
                (name("proxy"), 15432)
            } else {
                (name("postgres"), 5432)
            };
            let rd = if cfg.behind_proxy.iter().any(|r| r == "redis") {
                (name("proxy"), 16379)
            } else {
                (name("redis"), 6379)
            };
            (pg.0, pg.1, rd.0, rd.1)
        };
        let nginx_conf = stack.tmp.join("nginx.conf");
        std::fs::write(
            &nginx_conf,
            NGINX_CONF.replace("orders:8080", &format!("{}:8080", name("orders"))),
        )
        .map_err(|source| StackError::Io {
            call: format!("write {}", nginx_conf.display()),
            source,
        })?;

        let base = |role: &str, wait: WaitFor| {
            GenericImage::new(image_name(image), image_tag(image))
                .with_wait_for(wait)
                .with_container_name(name(role))
        };
        let mut specs: Vec<(
            String,
            Vec<u16>,
            testcontainers::ContainerRequest<GenericImage>,
        )> = Vec::new();
        specs.push((
            "postgres".into(),
            vec![5432],
            base(
                "postgres",
                WaitFor::message_on_stderr("database system is ready to accept connections"),
            )
            .with_user("postgres")
            .with_env_var("PG_MAX_CONNECTIONS", cfg.pg_max_connections.to_string())
            .with_mount(Mount::volume_mount(
                volume.clone(),
                "/var/lib/postgresql/data",
            ))
            .with_cmd(["chaos-postgres"]),
        ));
        specs.push((
            "redis".into(),
            vec![6379],
            base(
                "redis",
                WaitFor::message_on_stdout("Ready to accept connections"),
            )
            .with_cmd([
                "redis-server",
                "--bind",
                "0.0.0.0",
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ]),
        ));
        let mut orders = base(
            "orders",
            WaitFor::message_on_stdout("order-service listening"),
        )
        .with_mount(
            Mount::bind_mount(
                orders_bin.display().to_string(),
                "/usr/local/bin/order-service",
            )
            .with_access_mode(AccessMode::ReadOnly),
        )
        .with_env_var(
            "DATABASE_URL",
            format!("postgres://postgres@{pg_host}:{pg_port}/postgres"),
        )
        .with_env_var("REDIS_URL", format!("redis://{redis_host}:{redis_port}"))
        .with_env_var("DB_POOL_SIZE", cfg.db_pool_size.to_string())
        .with_cmd(["/usr/local/bin/order-service"]);
        for (k, v) in &cfg.orders_env {
            orders = orders.with_env_var(k, v);
        }
        specs.push(("orders".into(), vec![8080], orders));
        specs.push((
            "nginx".into(),
            vec![80],
            base("nginx", WaitFor::Nothing)
                .with_mount(
                    Mount::bind_mount(nginx_conf.display().to_string(), "/etc/chaos/nginx.conf")
                        .with_access_mode(AccessMode::ReadOnly),
                )
                .with_cmd(["nginx", "-c", "/etc/chaos/nginx.conf", "-g", "daemon off;"]),
        ));
        if let Some(bin) = proxy_bin {
            let mut cmd = vec![
                "/usr/local/bin/chaos-proxy".to_string(),
                "--api".into(),
                "0.0.0.0:8474".into(),
            ];
            for role in &cfg.behind_proxy {
                let (listen, upstream) = match role.as_str() {
                    "postgres" => (15432, format!("{}:5432", name("postgres"))),
                    "redis" => (16379, format!("{}:6379", name("redis"))),
                    other => panic!("the fault proxy can front postgres or redis, not {other}"),
                };
                cmd.push("--proxy".into());
                cmd.push(format!("{role}=0.0.0.0:{listen}={upstream}"));
            }
            specs.push((
                "proxy".into(),
                vec![8474],
                base("proxy", WaitFor::message_on_stdout("chaos-proxy ready"))
                    .with_mount(
                        Mount::bind_mount(bin.display().to_string(), "/usr/local/bin/chaos-proxy")
                            .with_access_mode(AccessMode::ReadOnly),
                    )
                    .with_cmd(cmd),
            ));
        }

        progress::line(
            "stack",
            &format!("{run_id}: starting {} services", specs.len()),
        );
        let mut starts = Vec::new();
        for (role, ports, req) in specs {
            let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
            let mut map = BTreeMap::new();
            for p in &ports {
                let host = free_port()?;
                map.insert(*p, host);
                bindings.insert(
                    format!("{p}/tcp"),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(host.to_string()),
                    }]),
                );
            }
            let mut req = req
                .with_network(network.clone())
                .with_labels(labels.clone())
                .with_label("chaos.role", role.clone())
                .with_startup_timeout(Duration::from_secs(60))
                .with_host_config_modifier(move |hc| {
                    hc.publish_all_ports = Some(false);
                    hc.port_bindings = Some(bindings.clone());
                });
            for p in &ports {
                req = req.with_mapped_port(map[p], p.tcp());
            }
            let docker = docker.clone();
            let cname = name(&role);
            starts.push(async move {
                let res = req.start().await;
                match res {
                    Ok(c) => Ok((role, map, c)),
                    Err(source) => {
                        let logs = log_tail(&docker, &cname, 20).await;
                        Err(StackError::Start {
                            role,
                            logs,
                            source: Box::new(source),
                        })
                    }
                }
            });
        }
        let results = futures::future::join_all(starts).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok((role, ports, c)) => {
                    stack.services.insert(
                        role.clone(),
                        Service {
                            name: name(&role),
                            id: c.id().to_string(),
                            role,
                            ports,
                        },
                    );
                    stack.containers.lock().unwrap().push(c);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            stack.teardown().await;
            return Err(e);
        }
        // nginx has no log line that proves it proxies: ask it for the order service's health.
        if let Err(e) = stack
            .wait_http_ok("nginx", 80, "/health", Duration::from_secs(20))
            .await
        {
            stack.teardown().await;
            return Err(e);
        }
        progress::line(
            "stack",
            &format!(
                "{run_id}: ready in {:.1} s",
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(stack)
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

    /// Host port (on 127.0.0.1) of a service's container port.
    pub fn host_port(&self, role: &str, port: u16) -> u16 {
        self.services
            .get(role)
            .and_then(|s| s.ports.get(&port).copied())
            .unwrap_or_else(|| panic!("the stack has no port {port} for {role}"))
    }

    /// Base URL of the front door (nginx) on 127.0.0.1.
    pub fn front_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.host_port("nginx", 80))
    }

    /// tokio-postgres connection string of PostgreSQL on 127.0.0.1.
    pub fn postgres_config(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=2",
            self.host_port("postgres", 5432)
        )
    }

    /// What observers need to attribute events to a service (pid refreshed from Docker).
    pub async fn watched(&self, role: &str) -> Result<WatchedContainer, StackError> {
        let svc = self.services.get(role).expect("unknown role");
        let info = self
            .docker
            .inspect_container(&svc.id, None::<InspectContainerOptions>)
            .await
            .map_err(docker_err(format!("inspect {}", svc.name)))?;
        let pid = info.state.and_then(|s| s.pid).unwrap_or(0).max(0) as u32;
        Ok(WatchedContainer {
            role: role.to_string(),
            id: svc.id.clone(),
            pid,
        })
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

    /// Waits until a service answers on its own protocol after a (re)start.
    pub async fn wait_ready(&self, role: &str, deadline: Duration) -> Result<(), StackError> {
        match role {
            "postgres" => self.wait_postgres(deadline).await,
            "redis" => {
                self.wait_tcp_banner(role, 6379, b"PING\r\n", b"+PONG", deadline)
                    .await
            }
            "orders" => self.wait_http_ok("orders", 8080, "/health", deadline).await,
            "nginx" => self.wait_http_ok("nginx", 80, "/health", deadline).await,
            "proxy" => self.wait_http_ok("proxy", 8474, "/version", deadline).await,
            _ => Ok(()),
        }
    }

    async fn wait_postgres(&self, deadline: Duration) -> Result<(), StackError> {
        let cfg = self.postgres_config();
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
        Err(self.not_ready("postgres", deadline, last).await)
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
        let addr = format!("127.0.0.1:{}", self.host_port(role, port));
        let until = Instant::now() + deadline;
        let mut last = String::new();
        while Instant::now() < until {
            let attempt = async {
                let mut s = tokio::net::TcpStream::connect(&addr).await?;
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
        let url = format!("http://127.0.0.1:{}{path}", self.host_port(role, port));
        let until = Instant::now() + deadline;
        let mut last = String::new();
        while Instant::now() < until {
            match crate::http::get(&url, Duration::from_secs(1)).await {
                Ok((200, _)) => return Ok(()),
                Ok((code, body)) => {
                    last = format!("HTTP {code}: {}", String::from_utf8_lossy(&body))
                }
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

    /// Removes every container, the network and the volume; bounded, never panics.
    pub async fn teardown(&self) {
        let handles: Vec<_> =
            std::mem::take(&mut *self.containers.lock().unwrap_or_else(|e| e.into_inner()));
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
                let _ = docker
                    .remove_container(
                        &id,
                        Some(
                            RemoveContainerOptionsBuilder::new()
                                .force(true)
                                .v(true)
                                .build(),
                        ),
                    )
                    .await;
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(removals))
            .await;
        // The handles' own Drop would remove again; they are gone already, so forget them.
        for h in handles {
            std::mem::forget(h);
        }
        let _ = self.docker.remove_network(&self.network).await;
        let _ = self
            .docker
            .remove_volume(&self.volume, None::<RemoveVolumeOptions>)
            .await;
        let _ = std::fs::remove_dir_all(&self.tmp);
    }

    /// Keeps everything running (CHAOS_KEEP=1 on a failed test) and says how to remove it.
    pub fn keep(&self) -> String {
        for h in std::mem::take(&mut *self.containers.lock().unwrap_or_else(|e| e.into_inner())) {
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

fn image_name(image: &str) -> String {
    image.split(':').next().unwrap_or(image).to_string()
}

fn image_tag(image: &str) -> String {
    image.split(':').nth(1).unwrap_or("latest").to_string()
}

fn labels(run_id: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_RUN.to_string(), run_id.to_string()),
        (LABEL_PID.to_string(), std::process::id().to_string()),
    ])
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

/// Removes containers, networks and volumes left by runs whose test process is gone
/// (a SIGKILLed `cargo test`, a CI timeout). Resources of live processes are left alone,
/// so parallel test processes never remove each other's stacks.
pub async fn sweep(docker: &Docker) -> usize {
    let filter = HashMap::from([("label".to_string(), vec![LABEL_MANAGED.to_string()])]);
    let mut removed = 0;
    let stale = |labels: Option<&HashMap<String, String>>| {
        labels
            .and_then(|l| l.get(LABEL_PID))
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| !pid_alive(pid))
    };
    if let Ok(list) = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
    {
        for c in list {
            if stale(c.labels.as_ref())
                && let Some(id) = c.id
            {
                let _ = docker
                    .remove_container(
                        &id,
                        Some(
                            RemoveContainerOptionsBuilder::new()
                                .force(true)
                                .v(true)
                                .build(),
                        ),
                    )
                    .await;
                removed += 1;
            }
        }
    }
    if let Ok(list) = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filter).build(),
        ))
        .await
    {
        for n in list {
            if stale(n.labels.as_ref())
                && let Some(name) = n.name
            {
                let _ = docker.remove_network(&name).await;
                removed += 1;
            }
        }
    }
    if let Ok(list) = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filter).build(),
        ))
        .await
    {
        for v in list.volumes.unwrap_or_default() {
            if stale(Some(&v.labels)) {
                let _ = docker
                    .remove_volume(&v.name, None::<RemoveVolumeOptions>)
                    .await;
                removed += 1;
            }
        }
    }
    removed
}
