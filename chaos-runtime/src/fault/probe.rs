//! A steady stream of UDP datagrams across a lossy link, so the loss that was realised can be
//! measured whatever the workload's TCP does.
//!
//! TCP backs off under loss: at 30 % a request/response workload sends a few hundred packets in
//! a few seconds, too few to tell 28 % from 30 % (one standard deviation is 2.5 points at 330
//! packets). For the length of a `packet_loss` fault the runtime therefore sends 1,000 datagrams
//! a second each way between the target and one peer of the stack, from sockets made inside
//! their network namespaces by the run's host agent (no traffic leaves the stack network,
//! nothing is sent from the host's). They go to the discard port (9), where nothing listens; the peer's ICMP answers are
//! rate-limited by its kernel. The loss rules count every packet, the probe's and the system's.
use super::netns::Netns;
use super::network::Direction;
use chaos_agent::{Op, Reply, UdpFlow};
use std::sync::Arc;

/// Datagrams a second in each direction.
pub const RATE: u64 = 1_000;

/// A running probe (sent by the run's host agent); [`Probe::stop`] ends it and says how many
/// datagrams went out.
pub(crate) struct Probe {
    agent: Arc<crate::agent::Agent>,
    handle: Option<u64>,
    /// `postgres <-> orders (172.18.0.3)`, for the timeline.
    pub(crate) between: String,
}

impl Probe {
    /// Starts the stream between the target (`netns`, `target_ip`) and a peer; ingress is the
    /// peer sending to the target, egress the target sending to the peer.
    pub(crate) async fn start(
        direction: Direction,
        netns: &Netns,
        target_ip: &str,
        peer: &Netns,
        peer_ip: &str,
    ) -> Result<Probe, String> {
        let (agent, target) = netns.held()?;
        let (_, peer) = peer.held()?;
        let mut flows = Vec::new();
        if matches!(direction, Direction::Ingress | Direction::Both) {
            flows.push(UdpFlow {
                handle: peer,
                to: format!("{target_ip}:9"),
            });
        }
        if matches!(direction, Direction::Egress | Direction::Both) {
            flows.push(UdpFlow {
                handle: target,
                to: format!("{peer_ip}:9"),
            });
        }
        match agent.call(Op::UdpStart { flows, rate: RATE }).await? {
            Reply::Handle { handle } => Ok(Probe {
                agent,
                handle: Some(handle),
                between: String::new(),
            }),
            other => Err(format!("the host agent answered udp_start with {other:?}")),
        }
    }

    /// Stops the stream; the number of datagrams sent.
    pub(crate) async fn stop(mut self) -> u64 {
        let Some(handle) = self.handle.take() else {
            return 0;
        };
        match self.agent.call(Op::UdpStop { handle }).await {
            Ok(Reply::Count { n }) => n,
            _ => 0,
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let agent = self.agent.clone();
            rt.spawn(async move {
                let _ = agent.call(Op::UdpStop { handle }).await;
            });
        }
    }
}

/// A role of the stack other than the target, to send to and from: its address and namespace,
/// and the target's address.
pub(crate) struct Peer {
    /// The target's address on the stack network.
    pub(crate) target_ip: String,
    /// The peer's role.
    pub(crate) role: String,
    /// Its address on the stack network.
    pub(crate) ip: String,
    /// Its network namespace.
    pub(crate) netns: Netns,
}

/// The first other role of the stack that runs and has an address on the stack network.
pub(crate) async fn peer(cx: &super::FaultCx, target: &str) -> Result<Peer, String> {
    let target_ip = cx
        .stack
        .address(target)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{target} has no address on the stack network"))?;
    let mut why = Vec::new();
    for role in cx.stack.roles().into_iter().filter(|r| r != target) {
        let pid = match cx.stack.watched(&role).await {
            Ok(w) if w.pid > 0 => w.pid,
            _ => continue,
        };
        let Ok(Some(ip)) = cx.stack.address(&role).await else {
            continue;
        };
        match cx.stack.netns(pid, &role).await {
            Ok(netns) => {
                return Ok(Peer {
                    target_ip,
                    role,
                    ip,
                    netns,
                });
            }
            Err(e) => why.push(format!("{role}: {e}")),
        }
    }
    Err(if why.is_empty() {
        "no other running role with an address on the stack network".into()
    } else {
        why.join("; ")
    })
}

/// Starts a probe between `target` and a [`peer`]. `Err(why not)`: the fault goes on without it.
pub(crate) async fn between(
    cx: &super::FaultCx,
    target: &str,
    direction: Direction,
    netns: &Netns,
) -> Result<Probe, String> {
    let peer = peer(cx, target).await?;
    let mut p = Probe::start(direction, netns, &peer.target_ip, &peer.netns, &peer.ip)
        .await
        .map_err(|e| format!("{}: {e}", peer.role))?;
    p.between = format!(
        "{target} ({}) <-> {} ({})",
        peer.target_ip, peer.role, peer.ip
    );
    Ok(p)
}
