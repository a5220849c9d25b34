//! Where a stack start's time goes: per service, when its start began (its dependencies ready),
//! when Docker created and started its container, when the image's own wait conditions passed
//! and when its readiness probe did. Every figure is milliseconds from the first Docker call of
//! [`super::Stack::start`], the instant the `ready in X s` figure counts from.
//!
//! `CHAOS_STACK_TIMING=1` prints the breakdown under the `ready in` line; the stack-start bench
//! (`scripts/stack-start-bench`) prints it per run. Docker's create and start instants come from
//! its event log, read once after the stack is ready, so the start itself pays nothing for them.
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};
use testcontainers::bollard::Docker;
use testcontainers::bollard::query_parameters::EventsOptionsBuilder;

/// The environment variable that turns the breakdown line on.
pub const TIMING_ENV: &str = "CHAOS_STACK_TIMING";

/// Whether `CHAOS_STACK_TIMING` asks for the breakdown.
pub fn wanted() -> bool {
    std::env::var_os(TIMING_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Where one stack start's time went.
#[derive(Clone, Debug, Default)]
pub struct StartTiming {
    /// The base image found (or built) and the system's Dockerfile images built.
    pub images_ms: f64,
    /// The network and the volumes created.
    pub resources_ms: f64,
    /// Every service ready: the `ready in` figure.
    pub ready_ms: f64,
    /// One entry per service (the fault proxy included), in the order they became ready.
    pub services: Vec<ServiceTiming>,
}

/// One service's start, in ms from the first Docker call of the stack start.
#[derive(Clone, Debug, Default)]
pub struct ServiceTiming {
    /// The role.
    pub role: String,
    /// Its dependencies were ready (0 without any): its start began.
    pub begin_ms: f64,
    /// Docker's `create` event (known once the start has read Docker's event log).
    pub created_ms: Option<f64>,
    /// Docker's `start` event (likewise).
    pub started_ms: Option<f64>,
    /// The image's own wait conditions passed (testcontainers returned the container).
    pub up_ms: f64,
    /// Its readiness probe passed (`up_ms` when it declares none).
    pub ready_ms: f64,
}

/// The clock of one start: a monotonic origin and the wall-clock instant of the same moment
/// (Docker stamps its events with wall-clock time).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Origin {
    pub fn now() -> Self {
        Origin {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// ms since the origin.
    pub fn ms(&self) -> f64 {
        ms(self.mono.elapsed())
    }

    fn wall_ns(&self) -> i128 {
        self.wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl StartTiming {
    /// Fills in Docker's create and start instants from its event log (containers labelled with
    /// the run, between the origin and now). Leaves them `None` when Docker does not answer.
    pub(crate) async fn with_docker_events(
        mut self,
        docker: &Docker,
        run_id: &str,
        origin: Origin,
    ) -> Self {
        use futures::StreamExt;
        let since = origin.wall_ns() / 1_000_000_000 - 1;
        let until = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() + 1)
            .unwrap_or(0);
        let run_label = format!("{}={run_id}", super::LABEL_RUN);
        let filters = HashMap::from([
            ("type", vec!["container"]),
            ("event", vec!["create", "start"]),
            ("label", vec![run_label.as_str()]),
        ]);
        let opts = EventsOptionsBuilder::new()
            .since(&since.to_string())
            .until(&until.to_string())
            .filters(&filters)
            .build();
        let mut seen: HashMap<(String, String), f64> = HashMap::new();
        let mut events = docker.events(Some(opts));
        let collect = async {
            while let Some(Ok(ev)) = events.next().await {
                let attrs = ev.actor.as_ref().and_then(|a| a.attributes.as_ref());
                let (Some(role), Some(action), Some(t)) = (
                    attrs.and_then(|a| a.get("chaos.role")).cloned(),
                    ev.action.clone(),
                    ev.time_nano,
                ) else {
                    continue;
                };
                let at = (i128::from(t) - origin.wall_ns()) as f64 / 1e6;
                // The first of each: a restart later in the run is not the start.
                seen.entry((role, action)).or_insert(at);
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), collect).await;
        for s in &mut self.services {
            s.created_ms = seen.get(&(s.role.clone(), "create".into())).copied();
            s.started_ms = seen.get(&(s.role.clone(), "start".into())).copied();
        }
        self
    }

    /// The breakdown as lines: one for the stack, one per service.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "images {:.0} ms, network+volumes {:.0} ms, ready {:.0} ms",
            self.images_ms, self.resources_ms, self.ready_ms
        )];
        let opt = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.0}"));
        for s in &self.services {
            out.push(format!(
                "{:<10} begin {:>5.0}  created {:>5}  started {:>5}  up {:>5.0}  ready {:>5.0} ms",
                s.role,
                s.begin_ms,
                opt(s.created_ms),
                opt(s.started_ms),
                s.up_ms,
                s.ready_ms
            ));
        }
        out
    }
}
