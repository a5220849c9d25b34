//! Errors a user meets before any container starts: each names the fix, within seconds.
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_missing_docker_daemon_is_reported_within_seconds_with_the_fix() {
    // SAFETY: this test binary runs this one test; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("DOCKER_HOST", "unix:///nonexistent/chaos-docker.sock") };
    let started = Instant::now();
    let err = chaos_runtime::docker::connect()
        .await
        .expect_err("no daemon at that socket");
    let msg = err.to_string();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    assert!(msg.contains("/nonexistent/chaos-docker.sock"), "{msg}");
    assert!(msg.contains("Fix: start it"), "{msg}");
}
