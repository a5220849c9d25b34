//! `chaos clean`: the Docker containers, networks and volumes labelled `chaos.managed`,
//! listed through the Docker API and, without `--dry-run`, removed (containers forcibly,
//! with their anonymous volumes). Unlike the runtime's sweep before each run, this removes
//! resources of live test processes too: it is for a human who knows nothing is running.
use crate::rt::LABEL_MANAGED;
use serde::Serialize;
use std::collections::HashMap;
use testcontainers::bollard::Docker;
use testcontainers::bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions,
};

/// A managed resource.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Resource {
    /// `container`, `network` or `volume`.
    pub kind: &'static str,
    /// Its name (or id).
    pub name: String,
    /// The `chaos.run` label.
    pub run: Option<String>,
    /// The `chaos.pid` label: the test process that made it.
    pub pid: Option<String>,
    /// Container state (`running`, `exited`), when a container.
    pub state: Option<String>,
    /// Whether it was removed (false with `--dry-run`, or when removal failed).
    pub removed: bool,
    /// Why removal failed.
    pub error: Option<String>,
}

fn resource(
    kind: &'static str,
    name: String,
    labels: Option<&HashMap<String, String>>,
    state: Option<String>,
) -> Resource {
    Resource {
        kind,
        name,
        run: labels.and_then(|l| l.get("chaos.run").cloned()),
        pid: labels.and_then(|l| l.get("chaos.pid").cloned()),
        state,
        removed: false,
        error: None,
    }
}

/// Lists the managed resources (containers first: networks and volumes in use cannot go
/// before them), removing each unless `dry_run`.
pub async fn clean(dry_run: bool) -> Result<Vec<Resource>, String> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| format!("cannot reach Docker: {e}. Fix: start Docker, or set DOCKER_HOST"))?;
    let filter = HashMap::from([("label".to_string(), vec![LABEL_MANAGED.to_string()])]);
    let mut out = Vec::new();
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
        .map_err(|e| {
            format!("cannot list containers: {e}. Fix: start Docker, or set DOCKER_HOST")
        })?;
    for c in containers {
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .or(c.id.clone())
            .unwrap_or_default();
        let mut r = resource(
            "container",
            name,
            c.labels.as_ref(),
            c.state.map(|s| s.to_string()),
        );
        if !dry_run && let Some(id) = &c.id {
            let opts = RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build();
            match docker.remove_container(id, Some(opts)).await {
                Ok(()) => r.removed = true,
                Err(e) => r.error = Some(e.to_string()),
            }
        }
        out.push(r);
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filter).build(),
        ))
        .await
        .map_err(|e| format!("cannot list networks: {e}"))?;
    for n in networks {
        let Some(name) = n.name.clone() else { continue };
        let mut r = resource("network", name.clone(), n.labels.as_ref(), None);
        if !dry_run {
            match docker.remove_network(&name).await {
                Ok(()) => r.removed = true,
                Err(e) => r.error = Some(e.to_string()),
            }
        }
        out.push(r);
    }
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filter).build(),
        ))
        .await
        .map_err(|e| format!("cannot list volumes: {e}"))?;
    for v in volumes.volumes.unwrap_or_default() {
        let mut r = resource("volume", v.name.clone(), Some(&v.labels), None);
        if !dry_run {
            match docker
                .remove_volume(&v.name, None::<RemoveVolumeOptions>)
                .await
            {
                Ok(()) => r.removed = true,
                Err(e) => r.error = Some(e.to_string()),
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// The table `clean` prints.
pub fn render(rs: &[Resource], dry_run: bool) -> String {
    if rs.is_empty() {
        return format!("no Docker resources labelled {LABEL_MANAGED}");
    }
    let mut s = String::new();
    for r in rs {
        let what = if dry_run {
            "would remove"
        } else if r.removed {
            "removed"
        } else {
            "FAILED to remove"
        };
        s.push_str(&format!(
            "{what:<16} {:<9} {}{}{}{}\n",
            r.kind,
            r.name,
            r.state
                .as_ref()
                .map(|x| format!(" ({x})"))
                .unwrap_or_default(),
            r.run
                .as_ref()
                .map(|x| format!("  run {x}"))
                .unwrap_or_default(),
            r.error
                .as_ref()
                .map(|e| format!("  error: {e}"))
                .unwrap_or_default(),
        ));
    }
    let n = rs.len();
    s.push_str(&if dry_run {
        format!("{n} resource(s) labelled {LABEL_MANAGED}; run without --dry-run to remove them")
    } else {
        format!(
            "removed {} of {n} resource(s) labelled {LABEL_MANAGED}",
            rs.iter().filter(|r| r.removed).count()
        )
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_what_happened() {
        assert!(render(&[], true).starts_with("no Docker resources"));
        let mut r = resource(
            "container",
            "chaos-x-postgres".into(),
            Some(&HashMap::from([("chaos.run".into(), "x-1".into())])),
            Some("running".into()),
        );
        let t = render(std::slice::from_ref(&r), true);
        assert!(t.contains("would remove") && t.contains("chaos-x-postgres (running)  run x-1"));
        r.removed = true;
        assert!(render(&[r], false).contains("removed 1 of 1"));
    }
}
