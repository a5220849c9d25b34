//! `disk_io`: starve the target's writes to its data.
//!
//! The data path is the container's first writable volume (else bind mount, else `/`): for
//! PostgreSQL `/var/lib/postgresql/data`, WAL included. Its device comes from the container's
//! own `/proc/<pid>/mountinfo` (st_dev of that mount), mapped to the whole disk through
//! `/sys/dev/block` (throttles act on disks, not partitions). Then, by what the host allows:
//!
//! 1. **Write throttle** of the container's cgroup for that disk: cgroup v1
//!    `blkio.throttle.write_bps_device` + `blkio.throttle.write_iops_device`, cgroup v2 `io.max`
//!    (`wbps=`, `wiops=`). The I/O rate is `write_bps / 4 KiB`, so small synchronous writes
//!    (a commit's WAL page and its flush) are held back as much as big ones. Applies to what
//!    the container's own tasks submit: `fsync`/`O_DIRECT` writes, i.e. commits. (cgroup v1
//!    does not see buffered writeback, which the kernel's flusher threads submit.)
//! 2. **I/O hog** where no throttle can apply (no blkio/io controller, the path is on
//!    overlay/FUSE/tmpfs and not on a block device, a write the kernel refused): a `dd` loop in
//!    the container writing 16 MiB at a time with `O_DIRECT` and `fsync` to the data path,
//!    competing for the same disk. The mechanism says which acted and why.
//!
//! Heal: the throttle lines are written back as `0` (v1) / `max` (v2), or the hog is stopped
//! and its file removed.
use super::cgroup::{self as cg, Dev, Files, MountDev, human_bytes};
use super::{FaultCx, FaultError, Healing, Injected};
use crate::clock::mono_ns;
use crate::observe::sys::Sys;
use crate::spec::FaultSpec;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use testcontainers::bollard::models::MountPoint;
use testcontainers::bollard::query_parameters::InspectContainerOptions;

/// `write_bps` when the test does not set one.
pub const DEFAULT_WRITE_BPS: u64 = 1 << 20;
/// One throttled I/O is worth this many bytes of the byte rate.
const IO_SIZE: u64 = 4096;
/// Where the hog writes its pid (inside the container).
const HOG_PID_FILE: &str = "/tmp/chaos-iohog.pid";

/// The writable mount a service keeps its data on: the first volume, else the first bind
/// mount, by destination; `/` when it has none.
pub(crate) fn data_path(mounts: &[MountPoint]) -> String {
    let pick = |t: &str| {
        let mut d: Vec<&str> = mounts
            .iter()
            .filter(|m| m.typ.as_deref() == Some(t) && m.rw != Some(false))
            .filter_map(|m| m.destination.as_deref())
            .collect();
        d.sort_unstable();
        d.first().map(|s| s.to_string())
    };
    pick("volume")
        .or_else(|| pick("bind"))
        .unwrap_or_else(|| "/".into())
}

/// Why a write throttle cannot act on `path`, or the mount and disk it acts on. Pure: the
/// host's answers come in as arguments.
pub(crate) fn plan(
    files: Option<Files>,
    mount: Option<MountDev>,
    path: &str,
    disk: impl Fn(Dev) -> Result<Dev, String>,
) -> Result<(Files, MountDev, Dev), String> {
    let files =
        files.ok_or("the container has no blkio (cgroup v1) or io (cgroup v2) controller")?;
    let mount = mount.ok_or_else(|| format!("no mount holds {path} in the container"))?;
    let disk = disk(mount.dev).map_err(|why| format!("{path} is on {} ({why})", mount.fstype))?;
    Ok((files, mount, disk))
}

/// Injects `disk_io`.
pub async fn inject(cx: &Arc<FaultCx>, spec: &FaultSpec) -> Result<Injected, FaultError> {
    let role = spec.target.to_string();
    let fault = format!("disk_io {role}");
    let id = cx
        .stack
        .service(&role)
        .expect("macro validated the target")
        .id
        .clone();
    let docker = cx.stack.docker().clone();
    let wbps = spec
        .param("write_bps_bytes")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(DEFAULT_WRITE_BPS);
    let wiops = (wbps / IO_SIZE).max(1);
    let info = docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
        .map_err(FaultError::docker(&fault, "inspect"))?;
    let pid = info.state.as_ref().and_then(|s| s.pid).unwrap_or(0).max(0) as u32;
    let path = data_path(info.mounts.as_deref().unwrap_or_default());

    let sys = cx.observers.sys();
    let paths = cg::of_pid(&*sys, pid);
    let files = paths
        .as_ref()
        .ok()
        .and_then(|p| cg::controller_on_host(&*sys, p, "blkio", "io"));
    let mount = sys
        .read(Path::new(&format!("/proc/{pid}/mountinfo")))
        .ok()
        .and_then(|mi| cg::mount_of(&mi, &path));
    let planned = match &paths {
        Err(e) => Err(format!(
            "the container's cgroups are not readable from here ({e})"
        )),
        // The pid came from an inspect a moment ago; a cgroup file is written only when its
        // directory is this container's (a recycled pid would name another process's).
        Ok(_) if files.as_ref().is_some_and(|f| !cg::belongs_to(f, &id)) => Err(format!(
            "{} is not the cgroup of container {} (its pid was reused?); not writing there",
            files
                .as_ref()
                .map(|f| f.dir().display().to_string())
                .unwrap_or_default(),
            &id[..id.len().min(12)]
        )),
        Ok(_) => plan(files, mount, &path, |d| {
            cg::whole_disk(Path::new("/sys/dev/block"), d)
        }),
    };
    let why_not = match planned {
        Ok((files, mount, dev)) => match apply(&*sys, &files, dev, wbps, wiops) {
            Ok(()) => {
                let names = match &files {
                    Files::V1(_) => "blkio.throttle.write_bps_device + write_iops_device",
                    Files::V2(_) => "io.max wbps + wiops",
                };
                let mechanism = format!(
                    "write throttle {}/s and {wiops} IO/s on the disk of {path} ({names}, {})",
                    human_bytes(wbps),
                    files.version()
                );
                let read = |p: &Path| sys.read(p).ok();
                let before = cg::written(&files, dev, read);
                cx.event(
                    "io_limit_set",
                    &role,
                    &[
                        ("device", dev.to_string()),
                        ("mount_device", mount.dev.to_string()),
                        ("fstype", mount.fstype.clone()),
                        ("path", path.clone()),
                        ("wbps", wbps.to_string()),
                        ("wiops", wiops.to_string()),
                        ("dir", files.dir().display().to_string()),
                    ],
                );
                let set_at = Instant::now();
                let healing = Healing::new(move |cx, _| async move {
                    // Stamped when the heal starts, with `fault_healed`: the event belongs there,
                    // not after the first request that already met the free disk.
                    let at = mono_ns();
                    let sys = cx.observers.sys();
                    let after = cg::written(&files, dev, |p: &Path| sys.read(p).ok());
                    let removed = cg::write_lines(&*sys, &cg::unthrottle_lines(&files, dev));
                    super::in_effect();
                    let mut detail = vec![("held_ms", set_at.elapsed().as_millis().to_string())];
                    if let (Some(b), Some(a)) = (before, after) {
                        detail.push(("written_bytes", a.0.saturating_sub(b.0).to_string()));
                        detail.push(("written_ios", a.1.saturating_sub(b.1).to_string()));
                    }
                    cx.event_at(at, "io_limit_removed", &role, &detail);
                    match removed {
                        // The container was restarted meanwhile: its old cgroup, and the rule, are gone.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                        Err(e) => Err(FaultError::Other {
                            fault: format!("disk_io {role}"),
                            what: format!("removing the write throttle: {e}"),
                        }),
                        Ok(()) => Ok(()),
                    }
                });
                return Ok(Injected { mechanism, healing });
            }
            Err(why) => why,
        },
        Err(why) => why,
    };
    if why_not.starts_with(DENIED) {
        // Not the hog: a throttle this process may not write is a missing privilege, and an
        // I/O hog instead would be another fault with another verdict.
        return Err(FaultError::Unsupported {
            fault,
            why: why_not,
            fix: crate::agent::FIX.into(),
        });
    }
    hog(cx, &fault, &role, &id, &path, &why_not).await
}

/// How [`apply`] says that writing the throttle was not permitted.
const DENIED: &str = "not permitted to write the throttle";

/// Writes the throttle and checks the kernel kept it; undoes a partial write.
fn apply(sys: &dyn Sys, files: &Files, dev: Dev, wbps: u64, wiops: u64) -> Result<(), String> {
    let undo = || {
        let _ = cg::write_lines(sys, &cg::unthrottle_lines(files, dev));
    };
    if let Err(e) = cg::write_lines(sys, &cg::throttle_lines(files, dev, wbps, wiops)) {
        undo();
        return Err(if e.kind() == std::io::ErrorKind::PermissionDenied {
            format!("{DENIED}: {e}")
        } else {
            format!("the kernel refused the throttle: {e}")
        });
    }
    // In effect: the throttle is written (read back next).
    super::in_effect();
    match cg::write_limits(files, dev, |p| sys.read(p).ok()) {
        (Some(b), Some(i)) if b == wbps && i == wiops => Ok(()),
        other => {
            undo();
            Err(format!("the throttle did not stick (read back {other:?})"))
        }
    }
}

/// The fallback: a `dd` loop writing to the data path with O_DIRECT and fsync.
async fn hog(
    cx: &Arc<FaultCx>,
    fault: &str,
    role: &str,
    id: &str,
    path: &str,
    why_not: &str,
) -> Result<Injected, FaultError> {
    let file = format!("{}/.chaos-iohog", path.trim_end_matches('/'));
    let dd = |flags: &str| format!("dd if=/dev/zero of={file} bs=1M count=16 {flags} 2>/dev/null");
    // The loop waits on each dd in the background so TERM (heal) interrupts it at once.
    let script = format!(
        "echo $$ > {HOG_PID_FILE}; trap 'kill $c 2>/dev/null; rm -f {file}; exit 0' TERM; \
         while :; do {{ {} || {}; }} & c=$!; wait $c; done",
        dd("oflag=direct conv=fsync"),
        dd("conv=fsync")
    );
    cg::exec_detached(cx.stack.docker(), id, "0", &["sh", "-c", &script])
        .await
        .map_err(|what| FaultError::Other {
            fault: fault.to_string(),
            what: format!("starting the I/O hog: {what}"),
        })?;
    // In effect: the hog runs.
    super::in_effect();
    cx.event(
        "io_hog_started",
        role,
        &[("path", file.clone()), ("why", why_not.to_string())],
    );
    let mechanism = format!(
        "I/O hog (dd 16 MiB, O_DIRECT + fsync, in a loop) writing to {path}: no write throttle here, {why_not}"
    );
    let (id, role, file) = (id.to_string(), role.to_string(), file);
    let healing = Healing::new(move |cx, _| async move {
        let at = mono_ns();
        let script = format!(
            "kill $(cat {HOG_PID_FILE}) 2>/dev/null; sleep 0.2; rm -f {file} {HOG_PID_FILE}"
        );
        let r = cg::exec(cx.stack.docker(), &id, "0", &["sh", "-c", &script]).await;
        cx.event_at(at, "io_hog_stopped", &role, &[]);
        match r {
            Ok(_) => Ok(()),
            // A container that is gone has no hog left either.
            Err(_)
                if !cg::state(cx.stack.docker(), &id)
                    .await
                    .map(|s| s.0)
                    .unwrap_or(false) =>
            {
                Ok(())
            }
            Err(what) => Err(FaultError::Other {
                fault: format!("disk_io {role}"),
                what: format!("stopping the I/O hog: {what}"),
            }),
        }
    });
    Ok(Injected { mechanism, healing })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn mount(t: &str, dest: &str, rw: bool) -> MountPoint {
        MountPoint {
            typ: Some(t.into()),
            destination: Some(dest.into()),
            rw: Some(rw),
            ..Default::default()
        }
    }

    #[test]
    fn the_data_path_is_the_first_writable_volume() {
        const BIND: &str = "bind";
        const VOLUME: &str = "volume";
        let pg = [
            mount(BIND, "/etc/chaos/x.conf", false),
            mount(VOLUME, "/var/lib/postgresql/data", true),
        ];
        assert_eq!(data_path(&pg), "/var/lib/postgresql/data");
        let orders = [mount(BIND, "/usr/local/bin/order-service", false)];
        assert_eq!(data_path(&orders), "/");
        assert_eq!(
            data_path(&[mount(BIND, "/data", true), mount(BIND, "/cache", true)]),
            "/cache"
        );
        assert_eq!(data_path(&[]), "/");
    }

    fn m(dev: &str, fstype: &str) -> Option<MountDev> {
        Some(MountDev {
            dev: dev.parse().unwrap(),
            mount_point: "/var/lib/postgresql/data".into(),
            fstype: fstype.into(),
            source: String::new(),
        })
    }

    #[test]
    fn throttle_on_a_disk_hog_elsewhere() {
        let v1 = Some(Files::V1(PathBuf::from("/sys/fs/cgroup/blkio/docker/x")));
        let sysfs = |d: Dev| {
            if d.major == 0 {
                Err(format!("{d} is not a block device"))
            } else {
                Ok(Dev {
                    major: d.major,
                    minor: 0,
                })
            }
        };
        // A volume on a partition of vda: the throttle goes on the disk.
        let (f, mnt, disk) = plan(
            v1.clone(),
            m("254:1", "ext4"),
            "/var/lib/postgresql/data",
            sysfs,
        )
        .unwrap();
        assert_eq!(
            (f.version(), mnt.dev.to_string(), disk.to_string()),
            ("cgroup v1", "254:1".into(), "254:0".into())
        );
        // The container's own file system through fuse-overlayfs: no block device, so the hog.
        assert_eq!(
            plan(v1.clone(), m("0:52", "fuse.fuse-overlayfs"), "/", sysfs).unwrap_err(),
            "/ is on fuse.fuse-overlayfs (0:52 is not a block device)"
        );
        assert_eq!(
            plan(None, m("254:0", "ext4"), "/data", sysfs).unwrap_err(),
            "the container has no blkio (cgroup v1) or io (cgroup v2) controller"
        );
        assert_eq!(
            plan(v1, None, "/data", sysfs).unwrap_err(),
            "no mount holds /data in the container"
        );
        let v2 = Some(Files::V2(PathBuf::from(
            "/sys/fs/cgroup/system.slice/docker-x.scope",
        )));
        assert_eq!(
            plan(v2, m("259:3", "xfs"), "/data", sysfs)
                .unwrap()
                .0
                .version(),
            "cgroup v2"
        );
    }
}
