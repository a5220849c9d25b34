//! The Docker events stream (`Source::DockerEvents`): container lifecycle, on in every mode.
//!
//! | Docker action | observation | detail |
//! |---|---|---|
//! | `die` | [`kind::CONTAINER_DIE`] | `exit_code`, `signal` = exit_code - 128 when above 128 |
//! | `start` | [`kind::CONTAINER_START`] | |
//! | `oom` | [`kind::OOM_KILL`] | (Docker names no pid) |
//! | `kill` | [`kind::SIGNAL`] | `signal` |
//!
//! The subscription starts with `since` = the observer's start, so an event that happens while
//! the stream is still connecting (or reconnecting) is replayed, not lost. Docker stamps events
//! with wall-clock `timeNano`; it is mapped onto CLOCK_MONOTONIC through the offset between the
//! two clocks measured at start.

use super::{Observation, Shared, Source, kind, observation};
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use testcontainers::bollard::Docker;
use testcontainers::bollard::models::{EventMessage, EventMessageTypeEnum};
use testcontainers::bollard::query_parameters::EventsOptionsBuilder;

/// Maps Docker's wall-clock event times onto CLOCK_MONOTONIC.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WallToMono {
    /// wall ns - mono ns, measured once.
    offset: i128,
}

impl WallToMono {
    pub(crate) fn now() -> Self {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        Self {
            offset: wall - i128::from(crate::clock::mono_ns()),
        }
    }

    #[cfg(test)]
    pub(crate) fn with_offset(offset: i128) -> Self {
        Self { offset }
    }

    /// The monotonic time of a wall-clock ns stamp, never later than `now_mono`.
    pub(crate) fn mono(&self, wall_ns: Option<i64>, now_mono: u64) -> u64 {
        match wall_ns {
            Some(w) => (i128::from(w) - self.offset).clamp(0, i128::from(now_mono)) as u64,
            None => now_mono,
        }
    }

    /// The wall-clock time of a monotonic one, as Docker's `since` (`secs.nanos`).
    fn since(&self, mono: u64) -> String {
        let wall = i128::from(mono) + self.offset;
        format!(
            "{}.{:09}",
            wall.div_euclid(1_000_000_000),
            wall.rem_euclid(1_000_000_000)
        )
    }
}

/// The observation for one Docker event of the container playing `role`.
pub(crate) fn map_event(ev: &EventMessage, role: &str, at_ns: u64) -> Option<Observation> {
    if ev.typ != Some(EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    let attrs = ev.actor.as_ref().and_then(|a| a.attributes.as_ref());
    let attr = |k: &str| attrs.and_then(|a| a.get(k)).cloned();
    let (k, detail): (&str, Vec<(&'static str, String)>) = match ev.action.as_deref()? {
        "die" => {
            let mut d = Vec::new();
            if let Some(code) = attr("exitCode") {
                if let Some(sig) = code.parse::<i64>().ok().filter(|c| *c > 128) {
                    d.push(("signal", (sig - 128).to_string()));
                }
                d.push(("exit_code", code));
            }
            (kind::CONTAINER_DIE, d)
        }
        "start" => (kind::CONTAINER_START, Vec::new()),
        "oom" => (kind::OOM_KILL, Vec::new()),
        "kill" => (
            kind::SIGNAL,
            attr("signal")
                .map(|s| ("signal", signal_number(&s)))
                .into_iter()
                .collect(),
        ),
        _ => return None,
    };
    Some(observation(
        at_ns,
        k,
        Source::DockerEvents,
        Some(role),
        detail,
    ))
}

/// Docker 20.10 sends the number (`"9"`); other engines may send the name.
fn signal_number(s: &str) -> String {
    const NAMES: [(&str, i32); 8] = [
        ("KILL", libc::SIGKILL),
        ("TERM", libc::SIGTERM),
        ("INT", libc::SIGINT),
        ("HUP", libc::SIGHUP),
        ("QUIT", libc::SIGQUIT),
        ("STOP", libc::SIGSTOP),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
    ];
    let name = s.trim_start_matches("SIG");
    NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| s.to_owned())
}

/// Streams Docker events until `stop` turns true, reconnecting (with `since`) when the stream ends.
pub(crate) async fn run(
    docker: Docker,
    shared: Arc<Shared>,
    sink: super::Sink,
    mut stop: tokio::sync::watch::Receiver<bool>,
    clock: WallToMono,
    started_mono: u64,
) {
    let mut filters = HashMap::new();
    filters.insert("type", vec!["container"]);
    filters.insert("event", vec!["die", "start", "oom", "kill"]);
    let mut since_mono = started_mono;
    // The replay after a reconnect repeats events at the `since` boundary: skip those seen.
    let mut seen: VecDeque<(i64, String, String)> = VecDeque::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        let opts = EventsOptionsBuilder::new()
            .since(&clock.since(since_mono))
            .filters(&filters)
            .build();
        let mut events = docker.events(Some(opts));
        loop {
            let next = tokio::select! {
                biased;
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        // Flush what already arrived, then leave.
                        while let Some(Some(Ok(ev))) = futures::FutureExt::now_or_never(events.next()) {
                            deliver(&ev, &shared, &sink, clock, &mut seen);
                        }
                        return;
                    }
                    continue;
                }
                n = events.next() => n,
            };
            match next {
                Some(Ok(ev)) => {
                    backoff = Duration::from_millis(200);
                    if let Some(t) = ev.time_nano {
                        since_mono = clock.mono(Some(t), crate::clock::mono_ns());
                    }
                    deliver(&ev, &shared, &sink, clock, &mut seen);
                }
                Some(Err(_)) | None => break,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn deliver(
    ev: &EventMessage,
    shared: &Shared,
    sink: &super::Sink,
    clock: WallToMono,
    seen: &mut VecDeque<(i64, String, String)>,
) {
    let Some(id) = ev.actor.as_ref().and_then(|a| a.id.clone()) else {
        return;
    };
    let key = (
        ev.time_nano.unwrap_or(0),
        id.clone(),
        ev.action.clone().unwrap_or_default(),
    );
    if seen.contains(&key) {
        return;
    }
    seen.push_back(key);
    if seen.len() > 64 {
        seen.pop_front();
    }
    let Some(role) = shared.role_of(&id) else {
        return;
    };
    if let Some(o) = map_event(ev, &role, clock.mono(ev.time_nano, crate::clock::mono_ns())) {
        let _ = sink.send(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testcontainers::bollard::models::EventActor;

    fn ev(action: &str, attrs: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("abc".into()),
                attributes: Some(
                    attrs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            time_nano: Some(1_700_000_000_500_000_000),
            ..Default::default()
        }
    }

    #[test]
    fn die_with_signal_exit_code() {
        let o = map_event(
            &ev("die", &[("exitCode", "137"), ("name", "pg")]),
            "postgres",
            5,
        )
        .unwrap();
        assert_eq!(
            (o.kind.as_str(), o.source, o.at_ns),
            (kind::CONTAINER_DIE, Source::DockerEvents, 5)
        );
        assert_eq!(o.container.as_deref(), Some("postgres"));
        assert_eq!(o.detail["exit_code"], "137");
        assert_eq!(o.detail["signal"], "9");
        let o = map_event(&ev("die", &[("exitCode", "1")]), "postgres", 5).unwrap();
        assert_eq!(o.detail["exit_code"], "1");
        assert!(!o.detail.contains_key("signal"));
    }

    #[test]
    fn start_oom_kill_and_others() {
        assert_eq!(
            map_event(&ev("start", &[]), "redis", 1).unwrap().kind,
            kind::CONTAINER_START
        );
        let o = map_event(&ev("oom", &[]), "redis", 1).unwrap();
        assert_eq!(o.kind, kind::OOM_KILL);
        assert!(o.detail.is_empty());
        let o = map_event(&ev("kill", &[("signal", "9")]), "redis", 1).unwrap();
        assert_eq!(
            (o.kind.as_str(), o.detail["signal"].as_str()),
            (kind::SIGNAL, "9")
        );
        assert_eq!(
            map_event(&ev("kill", &[("signal", "SIGTERM")]), "r", 1)
                .unwrap()
                .detail["signal"],
            "15"
        );
        assert_eq!(map_event(&ev("exec_create: sh", &[]), "r", 1), None);
        let mut net = ev("connect", &[]);
        net.typ = Some(EventMessageTypeEnum::NETWORK);
        assert_eq!(map_event(&net, "r", 1), None);
    }

    #[test]
    fn wall_clock_maps_onto_monotonic() {
        let c = WallToMono::with_offset(1_700_000_000_000_000_000);
        assert_eq!(
            c.mono(Some(1_700_000_000_500_000_000), 10_000_000_000),
            500_000_000
        );
        // Never in the future, never before boot, and "now" without a stamp.
        assert_eq!(c.mono(Some(1_800_000_000_000_000_000), 7), 7);
        assert_eq!(c.mono(Some(1), 7), 0);
        assert_eq!(c.mono(None, 7), 7);
        assert_eq!(c.since(1_250_000_000), "1700000001.250000000");
        let real = WallToMono::now();
        let now = crate::clock::mono_ns();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        assert!(real.mono(Some(wall), u64::MAX).abs_diff(now) < 50_000_000);
    }

    #[test]
    fn only_watched_containers_are_delivered_once() {
        let shared = Shared::default();
        let sys = super::super::sys::fake::FakeSys::new();
        shared.watch(
            &sys,
            super::super::WatchedContainer {
                role: "postgres".into(),
                id: "abc".into(),
                pid: 0,
            },
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let clock = WallToMono::with_offset(0);
        let mut seen = VecDeque::new();
        deliver(&ev("start", &[]), &shared, &tx, clock, &mut seen);
        deliver(&ev("start", &[]), &shared, &tx, clock, &mut seen);
        let mut other = ev("die", &[]);
        other.actor.as_mut().unwrap().id = Some("zzz".into());
        deliver(&other, &shared, &tx, clock, &mut seen);
        drop(tx);
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, kind::CONTAINER_START);
    }
}
