//! The Docker boundary: connecting, with an error that says how to fix a missing daemon.
use std::time::Duration;
use testcontainers::bollard::Docker;

/// Why Docker could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// No daemon answered.
    #[error(
        "cannot reach the Docker daemon at {endpoint}: {why}. Fix: start it (`systemctl start docker`, \
         or `dockerd &` where there is no systemd) or point DOCKER_HOST at a running engine"
    )]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// What the client said.
        why: String,
    },
}

/// The endpoint Docker is reached at (DOCKER_HOST or the default socket).
pub fn endpoint() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// Connects and pings within 5 s: a missing daemon is reported in seconds, never a hang.
pub async fn connect() -> Result<Docker, DockerError> {
    let unreachable = |why: String| DockerError::Unreachable {
        endpoint: endpoint(),
        why,
    };
    let docker = Docker::connect_with_defaults().map_err(|e| unreachable(e.to_string()))?;
    match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => return Err(unreachable("no answer within 5 s".into())),
    }
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(docker)
}
