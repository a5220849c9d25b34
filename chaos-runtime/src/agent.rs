//! The run's host agent: the one way a fault acts on the Docker engine's host.
//!
//! Whatever must happen on the engine's host rather than through the Docker API (a command in
//! a target's network namespace: `iptables`, `nft`, `tc`) is a request to the `chaos-agent`
//! binary (crate `chaos-agent`) in a privileged container of the run, started from the base
//! image on the same engine as the stack: SYS_ADMIN, SYS_PTRACE and NET_ADMIN, `--pid=host` (it sees the containers' pids as the
//! engine reports them), the host's cgroup namespace, no network of its own. The runtime talks
//! to it over the container's attached standard streams, the one stream the Docker API gives
//! wherever the engine is: the test process may be on the host, in a CI job container with
//! only the Docker socket, or on another machine (`DOCKER_HOST`), and need not be root.
//!
//! The agent is used the same way when the test runs on the host itself: there is no second
//! implementation of a fault. Its binary is copied into the container (nothing is mounted from
//! the test's filesystem). It lives exactly as long as its run: the container's standard input
//! is the attach connection, so when the run ends (or its process dies) the agent reads end of
//! file, exits and is removed by the engine; the run's teardown also removes it by label.
use crate::image;
use crate::progress;
use chaos_agent::{Op, PROTOCOL, Reply, Request, Response};
use futures::StreamExt;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testcontainers::bollard::Docker;
use testcontainers::bollard::container::LogOutput;
use testcontainers::bollard::models::{ContainerCreateBody, HostConfig};
use testcontainers::bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    StartContainerOptions, UploadToContainerOptionsBuilder,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// What to do when the agent cannot act: said by every fault that needs it.
pub(crate) const FIX: &str = "the run's host agent must start: the Docker engine must allow \
     containers with SYS_ADMIN, SYS_PTRACE and NET_ADMIN in the host's pid namespace (rootless Docker and some hosted engines \
     do not), and the chaos-agent binary must be built (`cargo test` builds it; or set \
     CHAOS_AGENT_BIN)";

/// Bound on one request (a command in a namespace is bounded to 10 s by the agent itself).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on the agent's start, from create to its first answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Reply, String>>>>>;

/// A running host agent.
pub(crate) struct Agent {
    name: String,
    input: tokio::sync::Mutex<Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
    pending: Pending,
    next: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
    /// What the agent last wrote to its standard error (why it died, if it did).
    stderr: Arc<Mutex<String>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A one-file tar archive (ustar), for Docker's copy-into-container.
pub(crate) fn tar_one(name: &str, mode: u32, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, len: usize, s: &[u8]| {
        h[at..at + s.len().min(len)].copy_from_slice(&s[..s.len().min(len)]);
    };
    put(&mut h, 0, 100, name.as_bytes());
    put(&mut h, 100, 8, format!("{mode:07o}\0").as_bytes());
    put(&mut h, 108, 8, b"0000000\0");
    put(&mut h, 116, 8, b"0000000\0");
    put(&mut h, 124, 12, format!("{:011o}\0", data.len()).as_bytes());
    put(&mut h, 136, 12, b"00000000000\0");
    h[156] = b'0';
    put(&mut h, 257, 6, b"ustar\0");
    put(&mut h, 263, 2, b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

impl Agent {
    /// Starts the agent of run `run_id` on `docker`'s engine, with the run's `labels`.
    pub(crate) async fn start(
        docker: &Docker,
        run_id: &str,
        labels: HashMap<String, String>,
    ) -> Result<Agent, String> {
        let started = Instant::now();
        let name = format!("chaos-{run_id}-agent");
        match tokio::time::timeout(START_TIMEOUT, Self::start_inner(docker, &name, labels)).await {
            Ok(Ok((agent, kernel))) => {
                progress::line(
                    "agent",
                    &format!(
                        "host agent {name} ready in {} ms (engine kernel {kernel})",
                        started.elapsed().as_millis()
                    ),
                );
                Ok(agent)
            }
            Ok(Err(e)) => {
                remove(docker, &name).await;
                Err(e)
            }
            Err(_) => {
                remove(docker, &name).await;
                Err(format!(
                    "the host agent {name} did not answer within {} s",
                    START_TIMEOUT.as_secs()
                ))
            }
        }
    }

    /// The agent, and the engine host's kernel release it read.
    async fn start_inner(
        docker: &Docker,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<(Agent, String), String> {
        let tag = image::ensure(docker).await.map_err(|e| e.to_string())?;
        let bin =
            crate::helper::binary("chaos-agent", "CHAOS_AGENT_BIN").map_err(|e| e.to_string())?;
        let (data, env) = (bin.loadable().await?, bin.env());
        let body = ContainerCreateBody {
            image: Some(tag),
            cmd: Some(vec!["/usr/local/bin/chaos-agent".into(), "session".into()]),
            env: Some(env),
            labels: Some(labels),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            host_config: Some(HostConfig {
                // The capabilities it uses, not `--privileged`: a host whose own bounding set
                // lacks one (a sandboxed VM without CAP_SYS_RESOURCE) refuses every privileged
                // container. setns(2) needs SYS_ADMIN (and the default seccomp profile allows
                // it only then), opening another process's namespace SYS_PTRACE, the packet
                // filter and qdiscs NET_ADMIN, the kernel log (its OOM killer's victims)
                // SYSLOG and the /dev/kmsg device. SYS_ADMIN also lets it load the eBPF
                // observers (bpf(2), tracepoints) on kernels without CAP_BPF and CAP_PERFMON.
                cap_add: Some(
                    ["SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN", "NET_RAW", "SYSLOG"]
                        .map(str::to_string)
                        .to_vec(),
                ),
                security_opt: Some(vec![
                    "seccomp=unconfined".into(),
                    "apparmor=unconfined".into(),
                ]),
                devices: Some(vec![testcontainers::bollard::models::DeviceMapping {
                    path_on_host: Some("/dev/kmsg".into()),
                    path_in_container: Some("/dev/kmsg".into()),
                    cgroup_permissions: Some("r".into()),
                }]),
                pid_mode: Some("host".into()),
                cgroupns_mode: Some(
                    testcontainers::bollard::models::HostConfigCgroupnsModeEnum::HOST,
                ),
                network_mode: Some("none".into()),
                auto_remove: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::new().name(name).build();
        docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| format!("creating the host agent {name}: {e}"))?;
        docker
            .upload_to_container(
                name,
                Some(
                    UploadToContainerOptionsBuilder::new()
                        .path("/usr/local/bin")
                        .build(),
                ),
                testcontainers::bollard::body_full(tar_one("chaos-agent", 0o755, &data).into()),
            )
            .await
            .map_err(|e| format!("copying chaos-agent into {name}: {e}"))?;
        let attached = docker
            .attach_container(
                name,
                Some(
                    AttachContainerOptionsBuilder::new()
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .build(),
                ),
            )
            .await
            .map_err(|e| format!("attaching to the host agent {name}: {e}"))?;
        docker
            .start_container(name, None::<StartContainerOptions>)
            .await
            .map_err(|e| {
                format!(
                    "starting the host agent {name} (--pid=host, SYS_ADMIN/SYS_PTRACE/NET_ADMIN): {e}"
                )
            })?;
        let pending: Pending = Arc::default();
        let stderr = Arc::new(Mutex::new(String::new()));
        let reader = tokio::spawn(read_responses(
            attached.output,
            pending.clone(),
            stderr.clone(),
        ));
        let agent = Agent {
            name: name.to_string(),
            input: tokio::sync::Mutex::new(attached.input),
            pending,
            next: AtomicU64::new(1),
            reader,
            stderr,
        };
        match agent.call(Op::Hello).await? {
            Reply::Hello {
                protocol, kernel, ..
            } if protocol == PROTOCOL => Ok((agent, kernel)),
            Reply::Hello { protocol, .. } => Err(format!(
                "the host agent speaks protocol {protocol}, this runtime {PROTOCOL}: \
                 rebuild the chaos-agent binary with this version (cargo build)"
            )),
            other => Err(format!("the host agent answered hello with {other:?}")),
        }
    }

    /// Sends `op` and waits for its answer.
    pub(crate) async fn call(&self, op: Op) -> Result<Reply, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let mut line = serde_json::to_string(&Request { id, op }).map_err(|e| e.to_string())?;
        line.push('\n');
        let sent = {
            let mut input = self.input.lock().await;
            match input.write_all(line.as_bytes()).await {
                Ok(()) => input.flush().await,
                Err(e) => Err(e),
            }
        };
        let gone = || {
            let said = self
                .stderr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            format!(
                "the host agent {} is gone{}",
                self.name,
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            )
        };
        if let Err(e) = sent {
            self.forget(id);
            return Err(format!("{} ({e})", gone()));
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(gone()),
            Err(_) => {
                self.forget(id);
                Err(format!(
                    "the host agent {} did not answer within {} s",
                    self.name,
                    CALL_TIMEOUT.as_secs()
                ))
            }
        }
    }

    fn forget(&self, id: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// Splits the agent's standard output into responses and hands each to its caller. When the
/// stream ends, every caller still waiting learns that the agent is gone.
async fn read_responses(
    mut output: Pin<
        Box<
            dyn futures::Stream<Item = Result<LogOutput, testcontainers::bollard::errors::Error>>
                + Send,
        >,
    >,
    pending: Pending,
    stderr: Arc<Mutex<String>>,
) {
    let mut buf = Vec::<u8>::new();
    while let Some(Ok(chunk)) = output.next().await {
        match chunk {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                buf.extend_from_slice(&message);
                while let Some(at) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=at).collect();
                    if let Ok(r) = serde_json::from_slice::<Response>(&line) {
                        let tx = pending
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&r.id);
                        if let Some(tx) = tx {
                            let _ = tx.send(r.result);
                        }
                    }
                }
            }
            LogOutput::StdErr { message } => {
                let mut s = stderr.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(String::from_utf8_lossy(&message).trim());
                let keep = s.len().saturating_sub(400);
                s.drain(..keep);
            }
            LogOutput::StdIn { .. } => {}
        }
    }
    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

async fn remove(docker: &Docker, name: &str) {
    let _ = docker
        .remove_container(
            name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;
}

/// The engine's host as the observers and faults read it (see `crate::observe::sys`), through
/// the agent: what a process in a CI job container, on another machine or without root cannot
/// read itself. Calls block the calling worker (`block_in_place`) for one round trip.
pub(crate) struct AgentSys {
    agent: Arc<Agent>,
    rt: tokio::runtime::Handle,
}

impl AgentSys {
    /// Over `agent`, on the current runtime (a multi-threaded one: the run's).
    pub(crate) fn new(agent: Arc<Agent>) -> AgentSys {
        AgentSys {
            agent,
            rt: tokio::runtime::Handle::current(),
        }
    }

    fn call(&self, op: Op) -> std::io::Result<Reply> {
        let agent = self.agent.clone();
        let rt = self.rt.clone();
        let run = move || rt.block_on(agent.call(op));
        let result = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            Ok(_) => std::thread::scope(|s| s.spawn(run).join())
                .unwrap_or_else(|_| Err("the agent call panicked".into())),
            Err(_) => run(),
        };
        result.map_err(|e| {
            // The agent says the OS error in words; a vanished file is NotFound here too.
            let kind = if e.contains("(os error 2)") || e.contains("(os error 3)") {
                std::io::ErrorKind::NotFound
            } else if e.contains("(os error 13)") || e.contains("(os error 1)") {
                std::io::ErrorKind::PermissionDenied
            } else {
                std::io::ErrorKind::Other
            };
            std::io::Error::new(kind, e)
        })
    }
}

fn unexpected(op: &str, r: Reply) -> std::io::Error {
    std::io::Error::other(format!("the host agent answered {op} with {r:?}"))
}

impl crate::observe::sys::Sys for AgentSys {
    fn read(&self, path: &std::path::Path) -> std::io::Result<String> {
        match self.call(Op::Read {
            path: path.display().to_string(),
        })? {
            Reply::Text { text } => Ok(text),
            r => Err(unexpected("read", r)),
        }
    }

    fn read_dir_names(&self, path: &std::path::Path) -> std::io::Result<Vec<String>> {
        match self.call(Op::ReadDir {
            path: path.display().to_string(),
        })? {
            Reply::Names { names } => Ok(names),
            r => Err(unexpected("read_dir", r)),
        }
    }

    fn open_kmsg(&self) -> std::io::Result<Box<dyn crate::observe::sys::KmsgReader>> {
        match self.call(Op::KmsgOpen)? {
            Reply::Handle { handle } => Ok(Box::new(AgentKmsg {
                sys: AgentSys {
                    agent: self.agent.clone(),
                    rt: self.rt.clone(),
                },
                handle,
                pending: std::collections::VecDeque::new(),
            })),
            r => Err(unexpected("kmsg_open", r)),
        }
    }

    fn write(&self, path: &std::path::Path, data: &str) -> std::io::Result<()> {
        match self.call(Op::Write {
            path: path.display().to_string(),
            data: data.to_string(),
        })? {
            Reply::Done => Ok(()),
            r => Err(unexpected("write", r)),
        }
    }
}

/// The host's kernel log, read through the agent a batch at a time.
struct AgentKmsg {
    sys: AgentSys,
    handle: u64,
    pending: std::collections::VecDeque<String>,
}

impl crate::observe::sys::KmsgReader for AgentKmsg {
    fn read_record(&mut self) -> std::io::Result<Option<String>> {
        if self.pending.is_empty() {
            match self.sys.call(Op::KmsgRead {
                handle: self.handle,
            })? {
                Reply::Names { names } => self.pending.extend(names),
                r => return Err(unexpected("kmsg_read", r)),
            }
        }
        Ok(self.pending.pop_front())
    }
}

#[cfg(test)]
mod tests {
    use super::tar_one;
    use crate::system::loadable_part;

    #[test]
    fn only_the_loadable_part_of_an_executable_is_copied_and_it_still_runs() {
        let me = std::env::current_exe().unwrap();
        let whole = std::fs::metadata(&me).unwrap().len();
        let part = loadable_part(&me).unwrap();
        assert!(
            (part.len() as u64) < whole / 2,
            "{} of {whole} bytes",
            part.len()
        );
        let dir = std::env::temp_dir().join(format!("chaos-loadable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("t");
        std::fs::write(&copy, &part).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        // This test binary, cut to its segments, lists its tests like the whole one.
        // Another test thread may fork while the copy's write descriptor is open; the
        // child holds it until its exec, and exec of the copy then fails with ETXTBSY
        // for that moment. Retry on that error only, within a deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let out = loop {
            match std::process::Command::new(&copy)
                .args(["--list", "loadable_part"])
                .output()
            {
                Err(e)
                    if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => break r.unwrap(),
            }
        };
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("loadable_part"));
        // Not an ELF file: whole.
        let text = loadable_part(std::path::Path::new(env!("CARGO_MANIFEST_PATH"))).unwrap();
        assert_eq!(text, std::fs::read(env!("CARGO_MANIFEST_PATH")).unwrap());
    }

    #[test]
    fn the_archive_is_one_ustar_entry_with_its_mode_and_size() {
        let t = tar_one("chaos-agent", 0o755, b"#!/bin/sh\n");
        assert_eq!(t.len() % 512, 0);
        assert_eq!(t.len(), 512 + 512 + 1024);
        assert_eq!(&t[0..11], b"chaos-agent");
        assert_eq!(&t[100..107], b"0000755");
        assert_eq!(&t[124..135], b"00000000012");
        assert_eq!(&t[257..262], b"ustar");
        // The checksum is the header's byte sum with the checksum field as spaces.
        let mut h = t[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert_eq!(&t[512..522], b"#!/bin/sh\n");
    }
}
