//! How the test process reaches the services of a run, wherever the Docker engine is.
//!
//! - **Published** (the default): each service port is published by the engine and reached at
//!   the engine's host: `TESTCONTAINERS_HOST_OVERRIDE` when set, else the host of a
//!   `tcp://`/`http(s)://` `DOCKER_HOST`, else `127.0.0.1` (a local socket). Ports are published
//!   on 127.0.0.1 when that host is a loopback address, on every address otherwise.
//! - **Direct**: the test process runs in a container of the same engine (a CI job container
//!   with only the Docker socket, where the engine's 127.0.0.1 is not its own). The run then
//!   connects that container to the run's network and reaches each service by its container
//!   name and container port, as the services reach each other; the network is left (and the
//!   container disconnected) at teardown.
//!
//! `CHAOS_REACH=published|direct` forces one; otherwise a process that sees `/.dockerenv` and
//! finds its own container on the engine (by its hostname, else by the id in its mount table)
//! is Direct.
use std::sync::OnceLock;
use testcontainers::bollard::Docker;

/// How this process reaches services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Through ports published on `host`.
    Published {
        /// The engine's host as this process addresses it.
        host: String,
    },
    /// On the run's network, from this process's own container `own` (its id).
    Direct {
        /// The container this process runs in.
        own: String,
    },
}

impl Reach {
    /// The address services' ports are published on.
    pub fn publish_ip(&self) -> &'static str {
        match self {
            Reach::Published { host } if !is_loopback(host) => "0.0.0.0",
            _ => "127.0.0.1",
        }
    }

    /// Whether the engine is on this machine, reached through ports published on loopback
    /// (not from a container of the engine, not on another host).
    pub fn engine_is_local(&self) -> bool {
        matches!(self, Reach::Published { host } if is_loopback(host))
    }

    /// One line for the run's progress output and journal.
    pub fn describe(&self) -> String {
        match self {
            Reach::Published { host } => format!("published ports on {host}"),
            Reach::Direct { own } => format!(
                "the run's network, from this process's container {}",
                &own[..own.len().min(12)]
            ),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The engine's host named by a `DOCKER_HOST` value, if it is a network address.
pub fn host_of_docker_host(value: &str) -> Option<String> {
    let rest = ["tcp://", "http://", "https://"]
        .iter()
        .find_map(|p| value.strip_prefix(p))?;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        format!("[{}]", v6.split(']').next()?)
    } else {
        authority.split(':').next()?.to_string()
    };
    (!host.is_empty()).then_some(host)
}

/// What the environment says, before asking the engine: `Some` when it decides alone.
fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Reach>, String> {
    let published = |host: String| Ok(Some(Reach::Published { host }));
    let host = get("TESTCONTAINERS_HOST_OVERRIDE")
        .filter(|h| !h.is_empty())
        .or_else(|| get("DOCKER_HOST").as_deref().and_then(host_of_docker_host));
    match get("CHAOS_REACH").as_deref() {
        None | Some("") | Some("auto") => {}
        Some("published") => return published(host.unwrap_or_else(|| "127.0.0.1".into())),
        Some("direct") => return Ok(None),
        Some(other) => {
            return Err(format!(
                "CHAOS_REACH={other:?} is not a reach: use `published`, `direct` or `auto`"
            ));
        }
    }
    match host {
        Some(h) => published(h),
        None => Ok(None),
    }
}

static DETECTED: OnceLock<Reach> = OnceLock::new();

/// How this process reaches services (found once per process).
pub async fn detect(docker: &Docker) -> Result<Reach, String> {
    if let Some(r) = DETECTED.get() {
        return Ok(r.clone());
    }
    let forced_direct = std::env::var("CHAOS_REACH").is_ok_and(|v| v == "direct");
    let reach = match from_env(|k| std::env::var(k).ok())? {
        Some(r) => r,
        None => match own_container(docker).await {
            Some(own) => Reach::Direct { own },
            None if forced_direct => {
                return Err(
                    "CHAOS_REACH=direct, but this process's container is not found on the engine \
                     (by hostname): run the tests in a container of the same engine, or unset \
                     CHAOS_REACH"
                        .into(),
                );
            }
            None => Reach::Published {
                host: "127.0.0.1".into(),
            },
        },
    };
    Ok(DETECTED.get_or_init(|| reach).clone())
}

/// This process's container on `docker`'s engine, if it runs in one.
async fn own_container(docker: &Docker) -> Option<String> {
    let forced = std::env::var("CHAOS_REACH").is_ok_and(|v| v == "direct");
    if !forced && !std::path::Path::new("/.dockerenv").exists() {
        return None;
    }
    // Docker names a container's hostname after its id unless the job sets another; its
    // mounts name the id in any case (`/var/lib/docker/containers/<id>/hostname`).
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut candidates = vec![hostname.trim().to_string()];
    candidates.extend(ids_in_mountinfo(&mountinfo));
    for c in candidates.into_iter().filter(|c| !c.is_empty()) {
        if let Ok(info) = docker
            .inspect_container(
                &c,
                None::<testcontainers::bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            return info.id;
        }
    }
    None
}

/// The container ids named by `/containers/<64 hex>/` in a mount table.
fn ids_in_mountinfo(mountinfo: &str) -> Vec<String> {
    let mut out: Vec<String> = mountinfo
        .split("/containers/")
        .skip(1)
        .filter_map(|rest| {
            let id: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
            (id.len() == 64).then_some(id)
        })
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn only_published_ports_on_loopback_mean_a_local_engine() {
        let published = |h: &str| Reach::Published { host: h.into() };
        assert!(published("127.0.0.1").engine_is_local());
        assert!(published("localhost").engine_is_local());
        assert!(!published("build-box").engine_is_local());
        assert!(!Reach::Direct { own: "abc".into() }.engine_is_local());
    }

    #[test]
    fn the_engine_host_comes_from_the_override_then_docker_host() {
        assert_eq!(
            host_of_docker_host("tcp://127.0.0.1:2375").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            host_of_docker_host("tcp://[::1]:2376").as_deref(),
            Some("[::1]")
        );
        assert_eq!(
            host_of_docker_host("https://docker.example:2376/").as_deref(),
            Some("docker.example")
        );
        assert_eq!(host_of_docker_host("unix:///var/run/docker.sock"), None);
        let pub_ = |h: &str| {
            Ok(Some(Reach::Published {
                host: h.to_string(),
            }))
        };
        assert_eq!(from_env(env(&[])), Ok(None));
        assert_eq!(
            from_env(env(&[("DOCKER_HOST", "tcp://10.0.0.5:2375")])),
            pub_("10.0.0.5")
        );
        assert_eq!(
            from_env(env(&[
                ("DOCKER_HOST", "tcp://10.0.0.5:2375"),
                ("TESTCONTAINERS_HOST_OVERRIDE", "192.168.1.9")
            ])),
            pub_("192.168.1.9")
        );
        assert_eq!(
            from_env(env(&[("CHAOS_REACH", "published")])),
            pub_("127.0.0.1")
        );
        assert_eq!(
            from_env(env(&[
                ("CHAOS_REACH", "direct"),
                ("DOCKER_HOST", "tcp://127.0.0.1:2375")
            ])),
            Ok(None)
        );
        assert!(
            from_env(env(&[("CHAOS_REACH", "sideways")]))
                .unwrap_err()
                .contains("`published`, `direct` or `auto`")
        );
    }

    #[test]
    fn the_own_container_id_is_found_in_the_mount_table() {
        let id = "e5f03cfb841035461cfa89b81c545442251c721f441f407c458990e09179292b";
        let mi = format!(
            "612 590 254:1 /var/lib/docker/containers/{id}/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda1 rw\n\
             613 590 254:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/vda1 rw\n\
             614 590 0:5 /containers/short /x rw - tmpfs t rw\n"
        );
        assert_eq!(ids_in_mountinfo(&mi), vec![id.to_string()]);
        assert!(ids_in_mountinfo("1 0 0:1 / / rw - ext4 x rw\n").is_empty());
    }

    #[test]
    fn ports_are_published_on_loopback_unless_the_engine_is_elsewhere() {
        let p = |h: &str| Reach::Published { host: h.into() };
        assert_eq!(p("127.0.0.1").publish_ip(), "127.0.0.1");
        assert_eq!(p("localhost").publish_ip(), "127.0.0.1");
        assert_eq!(p("[::1]").publish_ip(), "127.0.0.1");
        assert_eq!(p("10.0.0.5").publish_ip(), "0.0.0.0");
        assert_eq!(Reach::Direct { own: "ab".into() }.publish_ip(), "127.0.0.1");
    }
}
