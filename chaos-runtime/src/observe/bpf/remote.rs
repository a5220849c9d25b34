//! eBPF observers loaded by the run's host agent instead of the test process.
//!
//! The programs must be loaded into the engine's kernel by a process that may do so: the test
//! process when it is root on the engine's host, else the host agent (`CAP_SYS_ADMIN`,
//! `--pid=host`). The agent side ([`serve`]) is the same [`BpfObserver`] with its sink kept in
//! the agent; the client side ([`AgentBpf`]) takes what it saw every 100 ms
//! ([`chaos_agent::Op::BpfTake`]) and feeds the run's sink, so a timeline does not know which
//! process loaded the programs.
use super::{Attach, BpfObserver};
use crate::agent::Agent;
use crate::observe::{Observation, ObserveError, Sink, WatchedContainer};
use chaos_agent::{Op, Reply};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How often the client takes what the agent's observers saw.
const TAKE_EVERY: Duration = Duration::from_millis(100);
/// At most this many observations in one answer (one answer is one JSON line).
const TAKE_AT_MOST: usize = 4096;
/// Clocks this far apart are different kernels' (a remote engine): observation times are
/// shifted onto this process's clock. Closer than this they are one kernel's, and left alone.
const OTHER_KERNEL: u64 = 1_000_000_000;

/// The observers held by the agent process for its one session.
struct Served {
    rt: tokio::runtime::Runtime,
    observer: Option<BpfObserver>,
    rx: mpsc::UnboundedReceiver<Observation>,
}

static SERVED: Mutex<Option<Served>> = Mutex::new(None);

/// The agent's side: serves `Bpf*` operations (the [`chaos_agent::Extension`] of the suite's
/// agent binary).
pub fn serve(op: Op) -> Result<Reply, String> {
    let mut served = SERVED.lock().unwrap_or_else(PoisonError::into_inner);
    match op {
        Op::BpfLoad { attach } => {
            if served.is_some() {
                return Err("the eBPF observers are already loaded in this agent".into());
            }
            let attach = match attach.as_str() {
                "tp_btf" => Attach::TpBtf,
                "tracepoint" => Attach::Tracepoint,
                _ => Attach::Auto,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the observers' runtime: {e}"))?;
            let (tx, rx) = mpsc::unbounded_channel();
            let mut observer = {
                let _in_rt = rt.enter();
                BpfObserver::load_with(tx, attach).map_err(|e| match e {
                    ObserveError::BpfUnavailable { why, fix } => format!("{why}. Fix: {fix}"),
                    other => other.to_string(),
                })?
            };
            // The agent's own network namespace is its container's (`--network none`); the
            // host's is the one no container may be blamed for.
            observer.own_net(&format!("/proc/{}/ns/net", chaos_agent::host_pid()));
            let reply = Reply::Bpf {
                signals: observer
                    .signals()
                    .into_iter()
                    .map(|(s, r)| (s.to_string(), r.err()))
                    .collect(),
                attached: observer.attached().to_vec(),
                load_us: observer.load_time().as_micros() as u64,
                mono_ns: crate::clock::mono_ns(),
            };
            *served = Some(Served {
                rt,
                observer: Some(observer),
                rx,
            });
            Ok(reply)
        }
        Op::BpfWatch { role, pid } => {
            let s = served.as_mut().ok_or(NOT_LOADED)?;
            let observer = s.observer.as_ref().ok_or(STOPPED)?;
            observer
                .watch(&WatchedContainer {
                    role,
                    id: String::new(),
                    pid,
                })
                .map(|()| Reply::Done)
                .map_err(|e| e.to_string())
        }
        Op::BpfTake => {
            let s = served.as_mut().ok_or(NOT_LOADED)?;
            let lost = s.observer.as_ref().map_or(0, BpfObserver::lost_events);
            Ok(take(&mut s.rx, lost))
        }
        Op::BpfStop => {
            let s = served.as_mut().ok_or(NOT_LOADED)?;
            let mut lost = 0;
            if let Some(observer) = s.observer.take() {
                lost = observer.lost_events();
                s.rt.block_on(observer.stop());
            }
            Ok(take(&mut s.rx, lost))
        }
        other => Err(format!("{other:?} is not an eBPF operation")),
    }
}

const NOT_LOADED: &str = "the eBPF observers are not loaded in this agent (bpf_load first)";
const STOPPED: &str = "the eBPF observers of this agent were stopped";

fn take(rx: &mut mpsc::UnboundedReceiver<Observation>, lost: u64) -> Reply {
    let mut observations = Vec::new();
    while observations.len() < TAKE_AT_MOST {
        let Ok(o) = rx.try_recv() else { break };
        if let Ok(line) = serde_json::to_string(&o) {
            observations.push(line);
        }
    }
    Reply::Observed { observations, lost }
}

/// The test process's side: eBPF observers living in the run's host agent.
pub(crate) struct AgentBpf {
    agent: Arc<Agent>,
    signals: Vec<(&'static str, Result<(), String>)>,
    attached: Vec<String>,
    load_time: Duration,
    shift: Shift,
    sink: Sink,
    stop_tx: watch::Sender<bool>,
    taker: JoinHandle<()>,
}

/// How the agent's clock maps onto this process's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shift {
    /// Agent's clock minus this process's, in ns.
    ahead: i128,
}

impl Shift {
    /// From the agent's clock read between `before` and `after` on this process's clock.
    fn measure(agent_ns: u64, before: u64, after: u64) -> Shift {
        let here = (before as i128 + after as i128) / 2;
        let ahead = agent_ns as i128 - here;
        Shift {
            ahead: if ahead.unsigned_abs() < OTHER_KERNEL as u128 {
                0
            } else {
                ahead
            },
        }
    }

    fn apply(self, at_ns: u64) -> u64 {
        (at_ns as i128 - self.ahead).clamp(0, u64::MAX as i128) as u64
    }
}

/// The signal names the runtime knows (the agent answers with owned strings).
fn signal_name(s: &str) -> Option<&'static str> {
    super::programs::FAMILIES
        .iter()
        .map(|f| f.signal)
        .find(|&known| known == s)
}

impl AgentBpf {
    /// Asks `agent` to load the observers; starts taking what they see into `sink`.
    pub(crate) async fn load(
        agent: Arc<Agent>,
        attach: Attach,
        sink: Sink,
    ) -> Result<AgentBpf, ObserveError> {
        let attach = match attach {
            Attach::Auto => "auto",
            Attach::TpBtf => "tp_btf",
            Attach::Tracepoint => "tracepoint",
        };
        let before = crate::clock::mono_ns();
        let reply = agent
            .call(Op::BpfLoad {
                attach: attach.into(),
            })
            .await;
        let after = crate::clock::mono_ns();
        let unavailable = |why: String| ObserveError::BpfUnavailable {
            why: format!("the host agent could not load eBPF: {why}"),
            fix: "see the reason; the agent container needs CAP_SYS_ADMIN (Docker's default \
                  seccomp profile then allows bpf and perf_event_open) and the engine's \
                  kernel BTF at /sys/kernel/btf/vmlinux"
                .into(),
        };
        let (signals, attached, load_us, mono_ns) = match reply {
            Ok(Reply::Bpf {
                signals,
                attached,
                load_us,
                mono_ns,
            }) => (signals, attached, load_us, mono_ns),
            Ok(other) => return Err(unavailable(format!("unexpected answer {other:?}"))),
            Err(why) => return Err(unavailable(why)),
        };
        let signals = signals
            .into_iter()
            .filter_map(|(s, err)| signal_name(&s).map(|s| (s, err.map_or(Ok(()), Err))))
            .collect();
        let shift = Shift::measure(mono_ns, before, after);
        let (stop_tx, stop_rx) = watch::channel(false);
        let taker = tokio::spawn(take_task(agent.clone(), shift, sink.clone(), stop_rx));
        Ok(AgentBpf {
            agent,
            signals,
            attached,
            load_time: Duration::from_micros(load_us),
            shift,
            sink,
            stop_tx,
            taker,
        })
    }

    /// See [`BpfObserver::signals`].
    pub(crate) fn signals(&self) -> Vec<(&'static str, Result<(), String>)> {
        self.signals.clone()
    }

    /// See [`BpfObserver::attached`].
    pub(crate) fn attached(&self) -> &[String] {
        &self.attached
    }

    /// See [`BpfObserver::load_time`] (as the agent measured it).
    pub(crate) fn load_time(&self) -> Duration {
        self.load_time
    }

    /// See [`BpfObserver::watch`]; `c.pid` is the engine host's, as the agent sees it.
    pub(crate) async fn watch(&self, c: &WatchedContainer) -> Result<(), String> {
        match self
            .agent
            .call(Op::BpfWatch {
                role: c.role.clone(),
                pid: c.pid,
            })
            .await?
        {
            Reply::Done => Ok(()),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Stops taking, has the agent flush and detach, and passes on the rest.
    pub(crate) async fn stop(self) {
        let _ = self.stop_tx.send(true);
        let _ = self.taker.await;
        if let Ok(Reply::Observed { observations, .. }) = self.agent.call(Op::BpfStop).await {
            forward(&observations, self.shift, &self.sink);
        }
    }
}

fn forward(lines: &[String], shift: Shift, sink: &Sink) {
    for line in lines {
        if let Ok(mut o) = serde_json::from_str::<Observation>(line) {
            o.at_ns = shift.apply(o.at_ns);
            let _ = sink.send(o);
        }
    }
}

async fn take_task(agent: Arc<Agent>, shift: Shift, sink: Sink, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TAKE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut said = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        match agent.call(Op::BpfTake).await {
            Ok(Reply::Observed { observations, .. }) => forward(&observations, shift, &sink),
            Ok(_) => {}
            Err(why) if !said => {
                said = true;
                eprintln!("chaos-runtime: taking eBPF observations from the host agent: {why}");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_kernels_clock_is_left_alone_and_another_kernels_is_shifted() {
        let same = Shift::measure(1_000_400_000, 1_000_000_000, 1_000_600_000);
        assert_eq!(same.ahead, 0);
        assert_eq!(same.apply(5), 5);
        let remote = Shift::measure(50_000_000_000, 2_000_000_000, 2_000_000_000);
        assert_eq!(remote.ahead, 48_000_000_000);
        assert_eq!(remote.apply(50_000_000_123), 2_000_000_123);
        assert_eq!(remote.apply(1), 0, "clamped, never wraps");
    }

    #[test]
    fn every_signal_the_agent_names_is_one_the_runtime_knows() {
        for f in super::super::programs::FAMILIES {
            assert_eq!(signal_name(f.signal), Some(f.signal));
        }
        assert_eq!(signal_name("made_up"), None);
    }

    #[test]
    fn operations_before_load_say_to_load_first() {
        let e = serve(Op::BpfTake).unwrap_err();
        assert!(e.contains("bpf_load first"), "{e}");
        let e = serve(Op::Hello).unwrap_err();
        assert!(e.contains("not an eBPF operation"), "{e}");
    }
}
