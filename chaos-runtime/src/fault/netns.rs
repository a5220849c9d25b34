//! A target's network namespace, held open from injection to heal.
//!
//! Faults that act inside a container's network stack (the partition's packet filter, netem's
//! qdiscs, the bandwidth shaper) have the run's host agent (see `crate::agent`) open
//! `/proc/<pid>/ns/net` once, at injection, and run the tools of the agent's image in exactly
//! that namespace (`setns(2)` between `fork` and `exec`, like `nsenter -n`). The heal uses the
//! same handle, never a pid looked up again: a container that died (and whose pid the kernel
//! recycled) cannot lead a `tc qdisc del` or an `iptables -D` into the host's namespace. The
//! agent also refuses, at open, the host's own namespace: a target sharing the host's network
//! (`network_mode: host`) is not a target these faults may touch.
//! The measurement probes (packet loss's datagrams, bandwidth's bulk transfer) are sockets the
//! agent makes inside the namespaces it holds.
use crate::agent::Agent;
use chaos_agent::{Op, Reply};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

/// The network namespace of a target.
pub(crate) struct Netns {
    via: Via,
    pub(crate) role: String,
}

/// Who runs commands in the namespace.
enum Via {
    /// The run's host agent, holding it as `handle`: every fault.
    Agent { agent: Arc<Agent>, handle: u64 },
    /// This process, holding it open: `chaos doctor`'s throwaway namespace and unit tests.
    Local(OwnedFd),
}

/// What a command run in the namespace said.
pub(crate) struct Ran {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Device and inode of a namespace file: its identity.
fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Via::Agent { agent, handle } = &self.via
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (agent, handle) = (agent.clone(), *handle);
            rt.spawn(async move {
                let _ = agent.call(Op::NetnsClose { handle }).await;
            });
        }
    }
}

impl Netns {
    /// Has the run's agent open the namespace of `pid` (a pid as the engine reports it).
    pub(crate) async fn open(agent: Arc<Agent>, pid: u32, role: &str) -> Result<Netns, String> {
        let handle = match agent.call(Op::NetnsOpen { pid }).await? {
            Reply::Handle { handle } => handle,
            other => return Err(format!("the host agent answered netns_open with {other:?}")),
        };
        Ok(Netns {
            via: Via::Agent { agent, handle },
            role: role.to_string(),
        })
    }

    /// The agent holding this namespace and its handle there (`Err` for a local one).
    pub(crate) fn held(&self) -> Result<(Arc<Agent>, u64), String> {
        match &self.via {
            Via::Agent { agent, handle } => Ok((agent.clone(), *handle)),
            Via::Local(_) => Err(format!(
                "{}'s namespace is not held by the host agent",
                self.role
            )),
        }
    }

    /// Opens the namespace of `pid` from this process (a namespace of this host that is not
    /// its own); for `chaos doctor`'s throwaway namespace and unit tests.
    pub(crate) fn open_local(pid: u32, role: &str) -> std::io::Result<Netns> {
        Ok(Netns {
            via: Via::Local(Self::open_here(pid)?),
            role: role.to_string(),
        })
    }

    fn open_here(pid: u32) -> std::io::Result<OwnedFd> {
        let f = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        let own = std::fs::metadata("/proc/self/ns/net")?;
        if identity(&f.metadata()?) == identity(&own) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "pid {pid} is in the runtime's own network namespace; \
                     refusing to change the host's network"
                ),
            ));
        }
        Ok(f.into())
    }

    /// Runs `bin` with `args` inside the namespace, `stdin` as its input.
    pub(crate) async fn run(
        &self,
        bin: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> std::io::Result<Ran> {
        match &self.via {
            Via::Agent { agent, handle } => {
                let argv = std::iter::once(bin.to_string())
                    .chain(args.iter().cloned())
                    .collect();
                match agent
                    .call(Op::NetnsRun {
                        handle: *handle,
                        argv,
                        stdin: stdin.map(str::to_string),
                    })
                    .await
                {
                    Ok(Reply::Ran { ok, stdout, stderr }) => Ok(Ran { ok, stdout, stderr }),
                    Ok(other) => Err(std::io::Error::other(format!(
                        "the host agent answered netns_run with {other:?}"
                    ))),
                    Err(e) => Err(std::io::Error::other(e)),
                }
            }
            Via::Local(fd) => Self::run_here(fd, bin, args, stdin).await,
        }
    }

    /// Runs a binary of this host inside the namespace held by this process, the way the
    /// agent runs one in a namespace it holds (the same function).
    async fn run_here(
        fd: &OwnedFd,
        bin: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> std::io::Result<Ran> {
        let fd = fd.try_clone()?;
        let argv: Vec<String> = std::iter::once(bin.to_string())
            .chain(args.iter().cloned())
            .collect();
        let stdin = stdin.map(str::to_string);
        let (ok, stdout, stderr) =
            tokio::task::spawn_blocking(move || chaos_agent::run_in(&fd, &argv, stdin.as_deref()))
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
        Ok(Ran { ok, stdout, stderr })
    }

    /// Asks the DNS server at `server` (`ip:port`, as seen inside the namespace) for `name`'s
    /// IPv4 addresses, waiting at most `timeout_ms`; through the agent only.
    pub(crate) async fn resolve(
        &self,
        server: &str,
        name: &str,
        timeout_ms: u64,
    ) -> Result<Vec<String>, String> {
        let (agent, handle) = self.held()?;
        match agent
            .call(Op::DnsQuery {
                handle,
                server: server.into(),
                name: name.into(),
                timeout_ms,
            })
            .await?
        {
            Reply::Names { names } => Ok(names),
            other => Err(format!("the host agent answered dns_query with {other:?}")),
        }
    }

    /// Runs `args[0]` with the rest as arguments; its stdout, or `Err` with its stderr.
    pub(crate) async fn exec(&self, args: &[&str]) -> Result<String, String> {
        let (bin, rest) = args.split_first().ok_or("no command")?;
        let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
        match self.run(bin, &rest, None).await {
            Ok(r) if r.ok => Ok(r.stdout),
            Ok(r) => Err(format!("`{}`: {}", args.join(" "), r.stderr)),
            Err(e) => Err(format!("cannot run {bin}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Netns;

    #[test]
    fn the_runtimes_own_namespace_is_refused() {
        let e = Netns::open_local(std::process::id(), "self")
            .err()
            .expect("refused");
        assert!(e.to_string().contains("own network namespace"), "{e}");
    }
}
