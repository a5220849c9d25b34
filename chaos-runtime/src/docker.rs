//! The Docker boundary: connecting, with an error that says how to fix a missing daemon.
use std::time::Duration;
use testcontainers::bollard::Docker;

/// Why Docker could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// No daemon answered, or this user may not use it.
    #[error("cannot reach the Docker daemon at {endpoint}: {why}. Fix: {fix}")]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// What the client said.
        why: String,
        /// What to do about it.
        fix: &'static str,
    },
}

/// The fix for what the Docker client said.
fn fix_for(why: &str) -> &'static str {
    if why.contains("Permission denied") || why.contains("os error 13") {
        "this user may not use the Docker socket: add it to the `docker` group \
         (`sudo usermod -aG docker $USER`, then log in again) or point DOCKER_HOST at an engine \
         it may use; the tests need no root beyond that"
    } else {
        "start it (`systemctl start docker`, or `dockerd &` where there is no systemd) or point \
         DOCKER_HOST at a running engine"
    }
}

/// The endpoint Docker is reached at (DOCKER_HOST or the default socket).
pub fn endpoint() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// Connects and pings within 5 s: a missing daemon is reported in seconds, never a hang.
pub async fn connect() -> Result<Docker, DockerError> {
    let unreachable = |why: String| DockerError::Unreachable {
        endpoint: endpoint(),
        fix: fix_for(&why),
        why,
    };
    let docker =
        Docker::connect_with_defaults().map_err(|e| unreachable(crate::error_chain(&e)))?;
    match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(unreachable(crate::error_chain(&e))),
        Err(_) => return Err(unreachable("no answer within 5 s".into())),
    }
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(docker)
}

/// Set once a run of this process saw its daemon stop answering: heals that go through the
/// Docker API cannot succeed then, so they give up after seconds instead of their usual bound.
static LOST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a run of this process saw the daemon stop answering (and it has not answered since).
pub(crate) fn seen_lost() -> bool {
    LOST.load(std::sync::atomic::Ordering::SeqCst)
}

/// Resolves when the daemon stops answering: three pings in a row refused or unanswered within
/// 3 s (a daemon that went away refuses at once, so this resolves ~1.5 s after it; a daemon
/// that is merely busy answers a ping well within that). Returns what the last ping said.
pub(crate) async fn lost(docker: &Docker) -> String {
    let mut failed = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let why = match tokio::time::timeout(Duration::from_secs(3), docker.ping()).await {
            Ok(Ok(_)) => {
                failed = 0;
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer to a ping within 3 s".to_string(),
        };
        failed += 1;
        if failed >= 3 {
            LOST.store(true, std::sync::atomic::Ordering::SeqCst);
            return why;
        }
    }
}

/// Waits (bounded) for a daemon that stopped answering to answer again; a fresh client, since
/// a restarted daemon is a new socket. `None` if it did not within `within`.
pub(crate) async fn back(within: Duration) -> Option<(Docker, Duration)> {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_secs(3), connect()).await {
            LOST.store(false, std::sync::atomic::Ordering::SeqCst);
            return Some((d, start.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}
