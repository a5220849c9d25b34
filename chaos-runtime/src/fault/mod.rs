//! Faults. Each kind lives in its own module and returns a [`Healing`]: what undoes it.
//! [`FaultGuard`] heals on drop, so a fault is healed even when the test panics.
use crate::clock::mono_ns;
use crate::observe::{Observation, Observers, Sink, Source};
use crate::spec::FaultSpec;
use crate::stack::{Stack, StackError};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub mod bandwidth;
pub(crate) mod cgroup;
pub mod clock_skew;
pub mod container;
pub mod cpu;
pub mod disk;
pub mod disk_full;
pub mod http;
pub mod latency;
pub mod memory;
pub(crate) mod netns;
pub mod network;
pub mod pool;
pub(crate) mod probe;
pub mod process;
pub(crate) mod tc;

/// Whether a fault kind acts through the run's host agent (see `crate::agent`): a command in
/// the target's network namespace. The run then starts the agent beside the services.
pub fn needs_agent(kind: &str) -> bool {
    matches!(
        kind,
        "network_partition"
            | "packet_loss"
            | "bandwidth"
            | "dns_failure"
            | "process_kill"
            | "process_stop"
            | "disk_full"
            | "clock_skew"
    ) || (kind == "latency" && latency::forced_netem())
}

/// Why a fault could not be injected or healed.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// A Docker call failed.
    #[error("{fault}: docker {call} failed")]
    Docker {
        /// The fault.
        fault: String,
        /// The call.
        call: String,
        /// The cause.
        #[source]
        source: testcontainers::bollard::errors::Error,
    },
    /// The stack did not come back.
    #[error("{fault}: the target did not come back")]
    Stack {
        /// The fault.
        fault: String,
        /// The cause.
        #[source]
        source: StackError,
    },
    /// The host lacks what this fault needs.
    #[error("{fault} cannot run here: {why}. Fix: {fix}")]
    Unsupported {
        /// The fault.
        fault: String,
        /// What is missing.
        why: String,
        /// How to get it.
        fix: String,
    },
    /// Anything else, with what was being done.
    #[error("{fault}: {what}")]
    Other {
        /// The fault.
        fault: String,
        /// What went wrong.
        what: String,
    },
}

impl FaultError {
    /// For `map_err` on a Docker call: `fault` names the fault, `call` the Docker call.
    pub fn docker(
        fault: &str,
        call: &str,
    ) -> impl FnOnce(testcontainers::bollard::errors::Error) -> FaultError + use<> {
        let (fault, call) = (fault.to_string(), call.to_string());
        move |source| FaultError::Docker {
            fault,
            call,
            source,
        }
    }
}

/// What faults act on: the stack, the observers (to follow restarted containers), the event sink.
pub struct FaultCx {
    /// The stack under test.
    pub stack: Arc<Stack>,
    /// The observers, re-pointed at a container after it restarts.
    pub observers: Arc<Observers>,
    /// Where runtime events go.
    pub sink: Sink,
}

impl FaultCx {
    /// Records a runtime event.
    pub fn event(&self, kind: &str, container: &str, detail: &[(&str, String)]) {
        self.event_at(mono_ns(), kind, container, detail)
    }

    /// Waits until `role` serves again after a heal (its readiness probe, bounded by
    /// `deadline`), then records `service_ready`. `fault` names the heal in the error.
    pub async fn serving(
        &self,
        role: &str,
        deadline: Duration,
        fault: String,
    ) -> Result<(), FaultError> {
        self.stack
            .wait_ready(role, deadline)
            .await
            .map_err(|source| FaultError::Stack { fault, source })?;
        self.event("service_ready", role, &[]);
        Ok(())
    }

    /// Records a runtime event that happened at `at_ns` (CLOCK_MONOTONIC).
    pub fn event_at(&self, at_ns: u64, kind: &str, container: &str, detail: &[(&str, String)]) {
        let _ = self.sink.send(Observation {
            at_ns,
            kind: kind.to_string(),
            source: Source::Runtime,
            container: Some(container.to_string()),
            detail: detail
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        });
    }

    /// `role`'s container as the observers watch it (its host pid, 0 when not running), with
    /// `fault` named in the error.
    pub(crate) async fn watched(
        &self,
        fault: &str,
        role: &str,
    ) -> Result<crate::observe::WatchedContainer, FaultError> {
        self.stack
            .watched(role)
            .await
            .map_err(|source| FaultError::Stack {
                fault: fault.to_string(),
                source,
            })
    }

    /// The run's host agent, or the error that says how to get one; `to` says what `fault`
    /// needs it for ("send the signal").
    pub(crate) async fn agent(
        &self,
        fault: &str,
        to: &str,
    ) -> Result<Arc<crate::agent::Agent>, FaultError> {
        self.stack
            .agent()
            .await
            .map_err(|why| FaultError::Unsupported {
                fault: fault.to_string(),
                why: format!("no host agent to {to}: {why}"),
                fix: crate::agent::FIX.into(),
            })
    }

    /// Re-points the observers at a service after it (re)started.
    pub async fn rewatch(&self, role: &str) {
        if let Ok(w) = self.stack.watched(role).await {
            self.observers.watch(w).await;
        }
    }
}

/// What undoes an injected fault: a boxed async closure each fault module builds.
pub struct Healing(HealFn);

type HealFn =
    Box<dyn FnOnce(Arc<FaultCx>, Duration) -> BoxFuture<'static, Result<(), FaultError>> + Send>;

impl Healing {
    /// Wraps the undo step. `deadline` bounds how long the target may take to come back.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: FnOnce(Arc<FaultCx>, Duration) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), FaultError>> + Send + 'static,
    {
        Healing(Box::new(move |cx, d| Box::pin(f(cx, d))))
    }

    /// Undoes the fault.
    pub async fn heal(self, cx: Arc<FaultCx>, deadline: Duration) -> Result<(), FaultError> {
        (self.0)(cx, deadline).await
    }
}

/// An injected fault: what it is, how it acted, and how to heal it.
pub struct Injected {
    /// The mechanism that acted, for the timeline (e.g. `docker kill -s KILL`).
    pub mechanism: String,
    /// What undoes it.
    pub healing: Healing,
}

tokio::task_local! {
    /// The instant ([`mono_ns`]) the fault being injected or healed by this task took effect,
    /// as marked by [`in_effect`]; read by [`timed`].
    static IN_EFFECT: std::cell::Cell<Option<u64>>;
}

/// Marks now as the instant the fault being injected (or healed) is in effect: the rule is
/// installed, the toxic active, the limit written, the connections held. A fault module calls it
/// at that point when it still has work to do afterwards (reading a limit back, starting a hog,
/// waiting for a service); the last mark wins. Without a mark, the instant `inject` (or the
/// heal) returned counts. Outside [`timed`] it does nothing.
pub fn in_effect() {
    let now = mono_ns();
    let _ = IN_EFFECT.try_with(|c| c.set(Some(now)));
}

/// Runs an injection or a heal, and returns with its result the instant it took effect: the
/// last [`in_effect`] mark made while it ran, else the instant it returned.
pub async fn timed<F: std::future::Future>(f: F) -> (F::Output, u64) {
    IN_EFFECT
        .scope(std::cell::Cell::new(None), async move {
            let out = f.await;
            let returned = mono_ns();
            let at = IN_EFFECT.with(|c| c.get()).unwrap_or(returned);
            (out, at)
        })
        .await
}

/// What a fault found out or set up before the run decided to inject it (see [`prepare`]).
pub enum Prepared {
    /// Nothing: the kind injects from nothing.
    Nothing,
    /// A latency fault's mechanism.
    Latency(latency::Chosen),
    /// A partition's subnets.
    Partition(Vec<String>),
    /// What shows a container fault's effect (its init's exit, its freezer).
    Container(container::Watch),
    /// A pool exhaustion's control connection and spare sockets.
    Pool(Box<pool::Armed>),
    /// A clock skew's target clock before the fault.
    Clock(clock_skew::Before),
}

/// Does what a fault needs done before it can act but that is no part of the fault itself, so
/// that the run's decision to inject is followed by the fault alone: `auto` latency probes for
/// netem, a partition looks up the stack's subnets, a kill or stop takes a pidfd of the
/// target's init (to see it die), a pause finds its freezer (to see it frozen), a pool
/// exhaustion opens its control connection and the spare sockets it fills the server with, a
/// clock skew reads the target's clock. Nothing here changes what the system under test sees
/// (a spare socket holds no connection slot). The run prepares every fault before the fault
/// phase begins.
pub async fn prepare(cx: &Arc<FaultCx>, spec: &FaultSpec) -> Result<Prepared, FaultError> {
    Ok(match spec.kind {
        "latency" => Prepared::Latency(latency::choose(spec).await?),
        "network_partition" => Prepared::Partition(network::prepare(cx, spec).await?),
        "kill" | "stop" | "pause" => Prepared::Container(container::Watch::of(cx, spec).await),
        "pool_exhaustion" => Prepared::Pool(Box::new(pool::arm(cx, spec).await?)),
        "clock_skew" => Prepared::Clock(clock_skew::prepare(cx, spec).await?),
        _ => Prepared::Nothing,
    })
}

/// Injects a prepared fault (see [`prepare`]).
pub async fn inject_prepared(
    cx: &Arc<FaultCx>,
    spec: &FaultSpec,
    prepared: Prepared,
) -> Result<Injected, FaultError> {
    match prepared {
        Prepared::Latency(chosen) => latency::inject_chosen(cx, spec, chosen).await,
        Prepared::Partition(subnets) => network::inject_prepared(cx, spec, subnets).await,
        Prepared::Container(watch) => container::inject_prepared(cx, spec, watch).await,
        Prepared::Pool(armed) => pool::inject_armed(cx, *armed).await,
        Prepared::Clock(before) => clock_skew::inject_prepared(cx, spec, before).await,
        Prepared::Nothing => inject_unprepared(cx, spec).await,
    }
}

/// Injects one fault: [`prepare`], then [`inject_prepared`] at once.
pub async fn inject(cx: &Arc<FaultCx>, spec: &FaultSpec) -> Result<Injected, FaultError> {
    let prepared = prepare(cx, spec).await?;
    inject_prepared(cx, spec, prepared).await
}

/// The kinds [`prepare`] has nothing to do for; each lives in its own module with an
/// `inject(cx, spec)`.
async fn inject_unprepared(cx: &Arc<FaultCx>, spec: &FaultSpec) -> Result<Injected, FaultError> {
    match spec.kind {
        "memory_oom" => memory::inject(cx, spec).await,
        "cpu_throttle" => cpu::inject(cx, spec).await,
        "disk_io" => disk::inject(cx, spec).await,
        "packet_loss" => network::inject_loss(cx, spec).await,
        "dns_failure" => network::inject_dns(cx, spec).await,
        "process_kill" | "process_stop" => process::inject(cx, spec).await,
        "disk_full" => disk_full::inject(cx, spec).await,
        "http_abort" | "http_delay" | "http_reset" => http::inject(cx, spec).await,
        "bandwidth" => bandwidth::inject(cx, spec).await,
        other => Err(FaultError::Unsupported {
            fault: format!("{other} {}", spec.target),
            why: format!("the fault kind {other} is not implemented in this version"),
            fix: format!("use one of {}", crate::spec::FAULT_KINDS.join(", ")),
        }),
    }
}

/// Heals on drop when the run did not heal explicitly (a panic in between).
pub struct FaultGuard {
    healing: Option<Healing>,
    cx: Arc<FaultCx>,
}

impl FaultGuard {
    /// Wraps a healing.
    pub fn new(healing: Healing, cx: Arc<FaultCx>) -> Self {
        Self {
            healing: Some(healing),
            cx,
        }
    }

    /// Heals now.
    pub async fn heal(mut self, deadline: Duration) -> Result<(), FaultError> {
        match self.healing.take() {
            Some(h) => h.heal(self.cx.clone(), deadline).await,
            None => Ok(()),
        }
    }
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        if let Some(h) = self.healing.take() {
            let cx = self.cx.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                // Multi-thread runtime: block this worker while healing, as testcontainers does.
                tokio::task::block_in_place(|| {
                    // A daemon that stopped answering cannot take an API heal: seconds, not 30.
                    let bound = if crate::docker::seen_lost() { 5 } else { 30 };
                    let _ = handle.block_on(h.heal(cx, Duration::from_secs(bound)));
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::clock::mono_ns;

    #[tokio::test]
    async fn timed_takes_the_last_mark_else_the_return() {
        // Marked: the last mark counts, not the work done after it.
        let ((between, marked), at) = super::timed(async {
            super::in_effect();
            let between = mono_ns();
            tokio::task::yield_now().await;
            super::in_effect();
            let marked = mono_ns();
            tokio::task::yield_now().await;
            (between, marked)
        })
        .await;
        assert!(between <= at && at <= marked, "the second mark");
        // Unmarked: the instant it returned, which is after everything it did.
        let (done, at) = super::timed(async { mono_ns() }).await;
        assert!(at >= done);
        // Outside `timed` a mark is nothing (no panic, no effect on the next one).
        super::in_effect();
        let (x, _) = super::timed(async { 7 }).await;
        assert_eq!(x, 7);
    }

    #[tokio::test]
    async fn concurrent_faults_keep_their_own_marks() {
        // As a composite's faults run: joined in one task, each scope sees only its own marks.
        let a = super::timed(async {
            tokio::task::yield_now().await;
            super::in_effect();
            let at = mono_ns();
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            at
        });
        let b = super::timed(async {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            mono_ns()
        });
        let ((a_marked, a_at), (b_returned, b_at)) = tokio::join!(a, b);
        assert!(a_at <= a_marked, "a's mark, taken before its later work");
        assert!(b_at >= b_returned, "b was never marked: its return counts");
    }
    #[test]
    fn the_faults_that_act_on_the_engines_host_go_through_the_agent() {
        let kinds = || crate::spec::FAULT_KINDS.iter().copied();
        let agent: Vec<&str> = kinds().filter(|k| super::needs_agent(k)).collect();
        // latency goes through the agent only when netem is forced (CHAOS_LATENCY=netem).
        if !super::latency::forced_netem() {
            assert_eq!(
                agent,
                [
                    "network_partition",
                    "packet_loss",
                    "bandwidth",
                    "clock_skew",
                    "dns_failure",
                    "disk_full",
                    "process_kill",
                    "process_stop"
                ]
            );
        }
    }
}
