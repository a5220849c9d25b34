//! What the resource faults (`memory_oom`, `cpu_throttle`, `disk_io`) share: where the target's
//! cgroup files are on this host, which block device holds a path inside the container, the
//! throttle lines each cgroup version wants, and `docker exec` into the target.
//!
//! Nothing here assumes a cgroup layout. A container's directories come from its init pid's
//! `/proc/<pid>/cgroup` mapped through `/proc/self/mountinfo` (the observers' resolver), so
//! cgroup v1 (`/sys/fs/cgroup/<controller>/docker/<id>`), hybrid hosts and cgroup v2 with the
//! cgroupfs or systemd driver (`/sys/fs/cgroup/docker/<id>`,
//! `/sys/fs/cgroup/system.slice/docker-<id>.scope`) all resolve the same way:
//!
//! | what | cgroup v1 | cgroup v2 |
//! |---|---|---|
//! | memory limit | `memory.limit_in_bytes` | `memory.max` |
//! | CPU quota | `cpu.cfs_quota_us` + `cpu.cfs_period_us` | `cpu.max` (`<quota|max> <period>`) |
//! | write throttle | `blkio.throttle.write_bps_device` + `write_iops_device` (`MAJ:MIN N`, 0 removes) | `io.max` (`MAJ:MIN wbps=N wiops=N`, `max` removes) |
//!
//! Pure functions do the parsing and formatting (unit-tested with fake v1 and v2 trees below);
//! the few functions that touch the host say so.
use crate::observe::cgroup::{CgroupPaths, parse_mountinfo, paths_from};
use crate::observe::sys::Sys;
use futures::StreamExt;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testcontainers::bollard::Docker;
use testcontainers::bollard::exec::{StartExecOptions, StartExecResults};
use testcontainers::bollard::models::ExecConfig;

/// The cgroup directories of the process `pid` (a container's init pid), read from the
/// engine's host through `sys`.
pub(crate) fn of_pid(sys: &dyn Sys, pid: u32) -> io::Result<CgroupPaths> {
    if pid == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the container is not running",
        ));
    }
    let mounts = sys.read(Path::new("/proc/self/mountinfo"))?;
    let own = sys.read(Path::new(&format!("/proc/{pid}/cgroup")))?;
    Ok(paths_from(&parse_mountinfo(&mounts), &own))
}

/// Whether `files` is container `id`'s own cgroup directory: Docker names it after the full
/// container id with every driver and version (`.../docker/<id>`, `.../docker-<id>.scope`),
/// nested engines included (`.../docker/<outer>/docker/<id>`).
pub(crate) fn belongs_to(files: &Files, id: &str) -> bool {
    !id.is_empty()
        && files.dir().file_name().is_some_and(|name| {
            let name = name.to_string_lossy();
            name == id || name == format!("docker-{id}.scope")
        })
}

/// The cgroup version whose files a fault writes or reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Files {
    /// A v1 controller's directory.
    V1(PathBuf),
    /// The container's directory in the unified (v2) hierarchy.
    V2(PathBuf),
}

impl Files {
    /// `cgroup v1` / `cgroup v2`.
    pub(crate) fn version(&self) -> &'static str {
        match self {
            Files::V1(_) => "cgroup v1",
            Files::V2(_) => "cgroup v2",
        }
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        match self {
            Files::V1(d) | Files::V2(d) => d,
        }
    }
}

/// Where a controller's files are: its v1 hierarchy when it is bound to one (v1 and hybrid
/// hosts), else the unified hierarchy when the container's cgroup there has it enabled.
/// `v2_controllers` is the contents of the unified directory's `cgroup.controllers`.
pub(crate) fn controller(
    paths: &CgroupPaths,
    v1_name: &str,
    v2_name: &str,
    v2_controllers: Option<&str>,
) -> Option<Files> {
    if let Some(h) = paths.v1.get(v1_name) {
        return Some(Files::V1(h.dir.clone()));
    }
    let h = paths.v2.as_ref()?;
    v2_controllers
        .is_some_and(|c| c.split_whitespace().any(|x| x == v2_name))
        .then(|| Files::V2(h.dir.clone()))
}

/// [`controller`] with the unified directory's `cgroup.controllers` read through `sys`.
pub(crate) fn controller_on_host(
    sys: &dyn Sys,
    paths: &CgroupPaths,
    v1_name: &str,
    v2_name: &str,
) -> Option<Files> {
    let enabled = paths
        .v2
        .as_ref()
        .and_then(|h| sys.read(&h.dir.join("cgroup.controllers")).ok());
    controller(paths, v1_name, v2_name, enabled.as_deref())
}

/// A `limit` value of v1 (`9223372036854771712` = none) or v2 (`max` = none); `None` = no limit.
pub(crate) fn parse_limit(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" || s == "-1" {
        return None;
    }
    // v1 prints "no limit" as PAGE_COUNTER_MAX pages in bytes, just under i64::MAX.
    s.parse::<u64>().ok().filter(|v| *v < (1 << 62))
}

/// The memory limit file of a memory controller directory.
pub(crate) fn memory_limit_file(f: &Files) -> PathBuf {
    match f {
        Files::V1(d) => d.join("memory.limit_in_bytes"),
        Files::V2(d) => d.join("memory.max"),
    }
}

/// A CFS bandwidth setting: `quota_us` per `period_us` (`None` quota = unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CpuQuota {
    pub quota_us: Option<u64>,
    pub period_us: u64,
}

/// v2 `cpu.max`: `max 100000` or `5000 100000`.
pub(crate) fn parse_cpu_max(s: &str) -> Option<CpuQuota> {
    let mut f = s.split_whitespace();
    let quota = f.next()?;
    let period_us = f.next().map_or(Some(100_000), |p| p.parse().ok())?;
    let quota_us = if quota == "max" {
        None
    } else {
        Some(quota.parse().ok()?)
    };
    Some(CpuQuota {
        quota_us,
        period_us,
    })
}

/// v1 `cpu.cfs_quota_us` (`-1` = unlimited) and `cpu.cfs_period_us`.
pub(crate) fn parse_cfs(quota: &str, period: &str) -> Option<CpuQuota> {
    let q: i64 = quota.trim().parse().ok()?;
    Some(CpuQuota {
        quota_us: u64::try_from(q).ok(),
        period_us: period.trim().parse().ok()?,
    })
}

/// The CFS quota in force, read through `sys`; with the file that holds it.
pub(crate) fn read_cpu_quota(sys: &dyn Sys, f: &Files) -> Option<(CpuQuota, &'static str)> {
    let read = |n: &str| sys.read(&f.dir().join(n)).ok();
    match f {
        Files::V1(_) => Some((
            parse_cfs(&read("cpu.cfs_quota_us")?, &read("cpu.cfs_period_us")?)?,
            "cpu.cfs_quota_us",
        )),
        Files::V2(_) => Some((parse_cpu_max(&read("cpu.max")?)?, "cpu.max")),
    }
}

/// A block device number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Dev {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl std::str::FromStr for Dev {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (a, b) = s.trim().split_once(':').ok_or(())?;
        Ok(Dev {
            major: a.parse().map_err(|_| ())?,
            minor: b.parse().map_err(|_| ())?,
        })
    }
}

/// The mount that holds a path, from a mountinfo file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountDev {
    /// `st_dev` of the mounted file system.
    pub dev: Dev,
    /// Where it is mounted.
    pub mount_point: String,
    /// `ext4`, `xfs`, `fuse.fuse-overlayfs`, `overlay`, `tmpfs` ...
    pub fstype: String,
    /// The mount source (`/dev/vda`, `fuse-overlayfs`, ...).
    pub source: String,
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(
                (u32::from(b[i + 1] - b'0') * 64
                    + u32::from(b[i + 2] - b'0') * 8
                    + u32::from(b[i + 3] - b'0')) as u8,
            );
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path` in a mountinfo file: the longest mount point that is a prefix of
/// it; of several mounts on one point, the last (it hides the ones below).
pub(crate) fn mount_of(mountinfo: &str, path: &str) -> Option<MountDev> {
    let under = |mp: &str| {
        mp == "/" || path == mp || path.strip_prefix(mp).is_some_and(|r| r.starts_with('/'))
    };
    let mut best: Option<MountDev> = None;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 2 {
            continue;
        }
        let mp = unescape(pre[4]);
        let Ok(dev) = pre[2].parse::<Dev>() else {
            continue;
        };
        if !under(&mp)
            || best
                .as_ref()
                .is_some_and(|b| b.mount_point.len() > mp.len())
        {
            continue;
        }
        best = Some(MountDev {
            dev,
            mount_point: mp,
            fstype: post[0].to_string(),
            source: unescape(post[1]),
        });
    }
    best
}

/// The whole disk a device number belongs to, through sysfs (`<sys_dev_block>/MAJ:MIN`, normally
/// `/sys/dev/block`): a partition maps to its disk (block throttling acts on disks, not on
/// partitions); anything that is no block device (0:N of overlay, FUSE, tmpfs, btrfs
/// subvolumes) is an error saying so.
pub(crate) fn whole_disk(sys_dev_block: &Path, dev: Dev) -> Result<Dev, String> {
    let link = sys_dev_block.join(dev.to_string());
    let real = std::fs::canonicalize(&link).map_err(|_| format!("{dev} is not a block device"))?;
    if !real.join("partition").exists() {
        return Ok(dev);
    }
    let parent = real
        .parent()
        .ok_or_else(|| format!("partition {dev} has no disk"))?;
    std::fs::read_to_string(parent.join("dev"))
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("cannot read the disk of partition {dev}"))
}

/// The files and lines that throttle writes to `dev` to `wbps` bytes/s and `wiops` I/Os per s.
pub(crate) fn throttle_lines(f: &Files, dev: Dev, wbps: u64, wiops: u64) -> Vec<(PathBuf, String)> {
    match f {
        Files::V1(d) => vec![
            (
                d.join("blkio.throttle.write_bps_device"),
                format!("{dev} {wbps}"),
            ),
            (
                d.join("blkio.throttle.write_iops_device"),
                format!("{dev} {wiops}"),
            ),
        ],
        Files::V2(d) => vec![(d.join("io.max"), format!("{dev} wbps={wbps} wiops={wiops}"))],
    }
}

/// The files and lines that remove the write throttle of `dev`.
pub(crate) fn unthrottle_lines(f: &Files, dev: Dev) -> Vec<(PathBuf, String)> {
    match f {
        Files::V1(d) => vec![
            (
                d.join("blkio.throttle.write_bps_device"),
                format!("{dev} 0"),
            ),
            (
                d.join("blkio.throttle.write_iops_device"),
                format!("{dev} 0"),
            ),
        ],
        Files::V2(d) => vec![(d.join("io.max"), format!("{dev} wbps=max wiops=max"))],
    }
}

/// The write limits of `dev` in force, from the contents of the files [`throttle_lines`]
/// writes: `(bps, iops)`, `None` when unlimited.
pub(crate) fn write_limits(
    f: &Files,
    dev: Dev,
    read: impl Fn(&Path) -> Option<String>,
) -> (Option<u64>, Option<u64>) {
    let prefix = format!("{dev} ");
    match f {
        Files::V1(d) => {
            let get = |n: &str| {
                read(&d.join(n))?
                    .lines()
                    .find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<u64>().ok())
                    .filter(|v| *v > 0)
            };
            (
                get("blkio.throttle.write_bps_device"),
                get("blkio.throttle.write_iops_device"),
            )
        }
        Files::V2(d) => {
            let text = read(&d.join("io.max")).unwrap_or_default();
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or("");
            let get = |k: &str| {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            (get("wbps"), get("wiops"))
        }
    }
}

/// Writes each line to its file through `sys` (cgroup files take one line per `write`).
pub(crate) fn write_lines(sys: &dyn Sys, lines: &[(PathBuf, String)]) -> io::Result<()> {
    for (path, line) in lines {
        sys.write(path, line).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("write {line:?} to {}: {e}", path.display()),
            )
        })?;
    }
    Ok(())
}

/// Bytes and I/Os written to `dev` by the cgroup so far: v1 `blkio.throttle.io_service_bytes`
/// + `io_serviced` (`MAJ:MIN Write N` lines), v2 `io.stat` (`MAJ:MIN wbytes=N wios=N`).
pub(crate) fn written(
    f: &Files,
    dev: Dev,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<(u64, u64)> {
    let prefix = format!("{dev} ");
    match f {
        Files::V1(d) => {
            let get = |n: &str| -> Option<u64> {
                let text = read(&d.join(n))?;
                Some(
                    text.lines()
                        .filter_map(|l| l.strip_prefix(&prefix)?.strip_prefix("Write "))
                        .filter_map(|v| v.trim().parse::<u64>().ok())
                        .sum(),
                )
            };
            Some((
                get("blkio.throttle.io_service_bytes")?,
                get("blkio.throttle.io_serviced")?,
            ))
        }
        Files::V2(d) => {
            let text = read(&d.join("io.stat"))?;
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or("");
            let get = |k: &str| {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            Some((get("wbytes"), get("wios")))
        }
    }
}

/// The pids of a `/proc/<pid>/status` `NSpid:` line, outermost (this host's) first.
pub(crate) fn parse_nspid(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|r| {
            r.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The host pid of the process whose pid is `ns_pid` inside the container whose `cgroup.procs`
/// is in `procs_dir`.
pub(crate) fn host_pid_of(sys: &dyn Sys, procs_dir: &Path, ns_pid: u32) -> Option<u32> {
    let procs = sys.read(&procs_dir.join("cgroup.procs")).ok()?;
    procs
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|hp| {
            let status = sys
                .read(Path::new(&format!("/proc/{hp}/status")))
                .unwrap_or_default();
            parse_nspid(&status).last() == Some(&ns_pid)
        })
}

/// How long one `docker exec` may take.
const EXEC_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `cmd` in the container as `user` and waits for it: (exit code, stdout + stderr).
pub(crate) async fn exec(
    docker: &Docker,
    id: &str,
    user: &str,
    cmd: &[&str],
) -> Result<(i64, String), String> {
    let run = async {
        let created = docker
            .create_exec(
                id,
                ExecConfig {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    user: Some(user.to_string()),
                    cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("docker exec create: {e}"))?;
        let mut out = String::new();
        if let StartExecResults::Attached { mut output, .. } = docker
            .start_exec(&created.id, None::<StartExecOptions>)
            .await
            .map_err(|e| format!("docker exec start: {e}"))?
        {
            while let Some(chunk) = output.next().await {
                out.push_str(
                    &chunk
                        .map_err(|e| format!("docker exec output: {e}"))?
                        .to_string(),
                );
            }
        }
        let code = docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| format!("docker exec inspect: {e}"))?
            .exit_code
            .unwrap_or(-1);
        Ok((code, out))
    };
    tokio::time::timeout(EXEC_TIMEOUT, run).await.map_err(|_| {
        format!(
            "`{}` did not finish within {} s",
            cmd.join(" "),
            EXEC_TIMEOUT.as_secs()
        )
    })?
}

/// Starts `cmd` in the container as `user` and leaves it running.
pub(crate) async fn exec_detached(
    docker: &Docker,
    id: &str,
    user: &str,
    cmd: &[&str],
) -> Result<(), String> {
    let created = docker
        .create_exec(
            id,
            ExecConfig {
                user: Some(user.to_string()),
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("docker exec create: {e}"))?;
    docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: true,
                tty: false,
                output_capacity: None,
            }),
        )
        .await
        .map_err(|e| format!("docker exec start: {e}"))?;
    Ok(())
}

/// Whether the container is running, and its init pid (0 when not running).
pub(crate) async fn state(
    docker: &Docker,
    id: &str,
) -> Result<(bool, u32), testcontainers::bollard::errors::Error> {
    let info = docker
        .inspect_container(
            id,
            None::<testcontainers::bollard::query_parameters::InspectContainerOptions>,
        )
        .await?;
    let st = info.state.unwrap_or_default();
    Ok((
        st.running.unwrap_or(false),
        st.pid.unwrap_or(0).max(0) as u32,
    ))
}

/// `64 MiB`, `1.5 GiB`, `512 KiB`, `100 B`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (u, size) in UNITS {
        if n >= size {
            return if n.is_multiple_of(size) {
                format!("{} {u}", n / size)
            } else {
                format!("{:.1} {u}", n as f64 / size as f64)
            };
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0443f4657714d97ff2cf4e77dfa430c772faf446fc690f2db14186b5ff33d049";

    /// This host: v1 controllers each in its own hierarchy, cgroup2 at /sys/fs/cgroup/unified.
    const MOUNTINFO_V1: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const MOUNTINFO_V2: &str = "\
25 1 259:2 / / rw,relatime - ext4 /dev/nvme0n1p2 rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    fn v1_paths() -> CgroupPaths {
        let proc = format!(
            "9:name=systemd:/docker/{ID}\n7:blkio:/docker/{ID}\n4:memory:/docker/{ID}\n2:cpuacct:/docker/{ID}\n1:cpu:/docker/{ID}\n0::/docker/{ID}\n"
        );
        paths_from(&parse_mountinfo(MOUNTINFO_V1), &proc)
    }

    fn v2_paths(cg: &str) -> CgroupPaths {
        paths_from(&parse_mountinfo(MOUNTINFO_V2), &format!("0::{cg}\n"))
    }

    #[test]
    fn v1_controllers_are_found_in_their_own_hierarchies() {
        let p = v1_paths();
        // On a hybrid host the unified directory exists too, but the v1 binding wins.
        let all = Some("cpu io memory pids");
        assert_eq!(
            controller(&p, "blkio", "io", all),
            Some(Files::V1(PathBuf::from(format!(
                "/sys/fs/cgroup/blkio/docker/{ID}"
            ))))
        );
        let cpu = controller(&p, "cpu", "cpu", None).unwrap();
        assert_eq!(
            cpu.dir(),
            Path::new(&format!("/sys/fs/cgroup/cpu/docker/{ID}"))
        );
        assert_eq!(cpu.version(), "cgroup v1");
        let mem = controller(&p, "memory", "memory", None).unwrap();
        assert_eq!(
            memory_limit_file(&mem),
            PathBuf::from(format!(
                "/sys/fs/cgroup/memory/docker/{ID}/memory.limit_in_bytes"
            ))
        );
        // A controller that is bound nowhere (pids is not mounted here) and not enabled in v2.
        assert_eq!(controller(&p, "pids", "pids", Some("")), None);
    }

    #[test]
    fn v2_systemd_and_cgroupfs_layouts() {
        for (cg, dir) in [
            (
                format!("/system.slice/docker-{ID}.scope"),
                format!("/sys/fs/cgroup/system.slice/docker-{ID}.scope"),
            ),
            (
                format!("/docker/{ID}"),
                format!("/sys/fs/cgroup/docker/{ID}"),
            ),
        ] {
            let p = v2_paths(&cg);
            let enabled = Some("cpuset cpu io memory hugetlb pids rdma misc\n");
            let io = controller(&p, "blkio", "io", enabled).unwrap();
            assert_eq!(io, Files::V2(PathBuf::from(&dir)));
            assert_eq!(io.version(), "cgroup v2");
            assert_eq!(
                memory_limit_file(&controller(&p, "memory", "memory", enabled).unwrap()),
                Path::new(&dir).join("memory.max")
            );
            // io not delegated to the container's cgroup: no throttle possible there.
            assert_eq!(controller(&p, "blkio", "io", Some("cpu memory pids")), None);
            assert_eq!(controller(&p, "blkio", "io", None), None);
        }
    }

    #[test]
    fn limits_parse_for_both_versions() {
        assert_eq!(parse_limit("67108864\n"), Some(64 << 20));
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(
            parse_cpu_max("5000 100000\n"),
            Some(CpuQuota {
                quota_us: Some(5000),
                period_us: 100_000
            })
        );
        assert_eq!(
            parse_cpu_max("max 100000\n"),
            Some(CpuQuota {
                quota_us: None,
                period_us: 100_000
            })
        );
        assert_eq!(
            parse_cfs("-1\n", "100000\n"),
            Some(CpuQuota {
                quota_us: None,
                period_us: 100_000
            })
        );
        assert_eq!(
            parse_cfs("5000\n", "100000\n"),
            Some(CpuQuota {
                quota_us: Some(5000),
                period_us: 100_000
            })
        );
        assert_eq!(parse_cfs("x", "100000"), None);
    }

    #[test]
    fn throttle_lines_per_version() {
        let dev = Dev {
            major: 254,
            minor: 0,
        };
        let v1 = Files::V1(PathBuf::from("/sys/fs/cgroup/blkio/docker/x"));
        assert_eq!(
            throttle_lines(&v1, dev, 262_144, 64),
            [
                (
                    PathBuf::from("/sys/fs/cgroup/blkio/docker/x/blkio.throttle.write_bps_device"),
                    "254:0 262144".to_string()
                ),
                (
                    PathBuf::from("/sys/fs/cgroup/blkio/docker/x/blkio.throttle.write_iops_device"),
                    "254:0 64".to_string()
                ),
            ]
        );
        assert_eq!(unthrottle_lines(&v1, dev)[0].1, "254:0 0");
        let v2 = Files::V2(PathBuf::from("/sys/fs/cgroup/docker/x"));
        assert_eq!(
            throttle_lines(&v2, dev, 1_048_576, 256),
            [(
                PathBuf::from("/sys/fs/cgroup/docker/x/io.max"),
                "254:0 wbps=1048576 wiops=256".to_string()
            )]
        );
        assert_eq!(
            unthrottle_lines(&v2, dev),
            [(
                PathBuf::from("/sys/fs/cgroup/docker/x/io.max"),
                "254:0 wbps=max wiops=max".to_string()
            )]
        );
    }

    /// A fake cgroup directory: what the kernel would show after the writes.
    fn fake_dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("chaos-fault-cgroup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn limits_and_counters_read_back_v1() {
        let d = fake_dir("v1");
        let f = Files::V1(d.clone());
        let dev = Dev {
            major: 254,
            minor: 0,
        };
        let read = |p: &Path| std::fs::read_to_string(p).ok();
        assert_eq!(write_limits(&f, dev, read), (None, None));
        write_lines(
            &crate::observe::sys::RealSys,
            &throttle_lines(&f, dev, 262_144, 64),
        )
        .unwrap();
        assert_eq!(write_limits(&f, dev, read), (Some(262_144), Some(64)));
        // The kernel lists other devices' rules too, and drops a rule written as 0.
        std::fs::write(
            d.join("blkio.throttle.write_bps_device"),
            "8:0 100\n254:0 0\n",
        )
        .unwrap();
        assert_eq!(write_limits(&f, dev, read).0, None);
        std::fs::write(
            d.join("blkio.throttle.io_service_bytes"),
            "254:0 Read 4096\n254:0 Write 2097152\n254:0 Sync 2097152\n254:0 Total 2101248\n8:0 Write 7\nTotal 2101255\n",
        )
        .unwrap();
        std::fs::write(
            d.join("blkio.throttle.io_serviced"),
            "254:0 Read 1\n254:0 Write 512\n254:0 Total 513\n",
        )
        .unwrap();
        assert_eq!(written(&f, dev, read), Some((2_097_152, 512)));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn limits_and_counters_read_back_v2() {
        let d = fake_dir("v2");
        let f = Files::V2(d.clone());
        let dev = Dev {
            major: 259,
            minor: 0,
        };
        let read = |p: &Path| std::fs::read_to_string(p).ok();
        std::fs::write(
            d.join("io.max"),
            "259:0 rbps=max wbps=1048576 riops=max wiops=256\n",
        )
        .unwrap();
        assert_eq!(write_limits(&f, dev, read), (Some(1_048_576), Some(256)));
        std::fs::write(d.join("io.max"), "").unwrap();
        assert_eq!(write_limits(&f, dev, read), (None, None));
        std::fs::write(d.join("io.stat"), "8:0 rbytes=1 wbytes=1 rios=1 wios=1\n259:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n").unwrap();
        assert_eq!(written(&f, dev, read), Some((8192, 2)));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_mount_holding_a_path() {
        // A PostgreSQL container here: fuse-overlayfs root, the data directory a volume on vda.
        let mi = "\
1201 1180 0:52 / / rw,relatime - fuse.fuse-overlayfs fuse-overlayfs rw,user_id=0
1202 1201 0:55 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1210 1201 254:0 /var/lib/docker/volumes/chaos-x-pgdata/_data /var/lib/postgresql/data rw,relatime - ext4 /dev/vda rw
1211 1201 254:0 /var/lib/docker/containers/abc/hosts /etc/hosts rw,relatime - ext4 /dev/vda rw
1212 1201 0:60 / /var/lib/postgresql/data/pg\\040tmp rw - tmpfs tmpfs rw
";
        let m = mount_of(mi, "/var/lib/postgresql/data").unwrap();
        assert_eq!(
            (m.dev, m.fstype.as_str(), m.source.as_str()),
            (
                Dev {
                    major: 254,
                    minor: 0
                },
                "ext4",
                "/dev/vda"
            )
        );
        assert_eq!(
            mount_of(mi, "/var/lib/postgresql/data/pg_wal")
                .unwrap()
                .dev
                .to_string(),
            "254:0"
        );
        // A sibling with a common prefix is not under the mount.
        assert_eq!(
            mount_of(mi, "/var/lib/postgresql/database").unwrap().fstype,
            "fuse.fuse-overlayfs"
        );
        assert_eq!(
            mount_of(mi, "/tmp").unwrap().dev,
            Dev {
                major: 0,
                minor: 52
            }
        );
        assert_eq!(
            mount_of(mi, "/var/lib/postgresql/data/pg tmp/x")
                .unwrap()
                .fstype,
            "tmpfs"
        );
        // Over-mounted points: the last mount wins.
        let over = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 8:2 / /data rw - ext4 /dev/sda2 rw\n3 1 8:3 / /data rw - xfs /dev/sda3 rw\n";
        assert_eq!(
            mount_of(over, "/data/x").unwrap().dev,
            Dev { major: 8, minor: 3 }
        );
    }

    #[test]
    fn partitions_map_to_their_disk_and_non_block_devices_are_refused() {
        let root = fake_dir("sysfs");
        let disk = root.join("devices/virtio1/block/vda");
        std::fs::create_dir_all(disk.join("vda1")).unwrap();
        std::fs::write(disk.join("dev"), "254:0\n").unwrap();
        std::fs::write(disk.join("vda1/dev"), "254:1\n").unwrap();
        std::fs::write(disk.join("vda1/partition"), "1\n").unwrap();
        let by_dev = root.join("dev/block");
        std::fs::create_dir_all(&by_dev).unwrap();
        std::os::unix::fs::symlink("../../devices/virtio1/block/vda", by_dev.join("254:0"))
            .unwrap();
        std::os::unix::fs::symlink("../../devices/virtio1/block/vda/vda1", by_dev.join("254:1"))
            .unwrap();
        let vda = Dev {
            major: 254,
            minor: 0,
        };
        assert_eq!(whole_disk(&by_dev, vda), Ok(vda));
        assert_eq!(
            whole_disk(
                &by_dev,
                Dev {
                    major: 254,
                    minor: 1
                }
            ),
            Ok(vda)
        );
        assert_eq!(
            whole_disk(
                &by_dev,
                Dev {
                    major: 0,
                    minor: 52
                }
            ),
            Err("0:52 is not a block device".to_string())
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn nspid_lists_host_pid_first() {
        let status = "Name:\tpostgres\nTgid:\t4242\nNSpid:\t4242\t87\nNSpgid:\t4100\t1\n";
        assert_eq!(parse_nspid(status), [4242, 87]);
        assert_eq!(parse_nspid("Name:\tx\n"), Vec::<u32>::new());
    }

    #[test]
    fn only_the_containers_own_directory_belongs_to_it() {
        let id = "3f2a9c";
        for dir in [
            "/sys/fs/cgroup/blkio/docker/3f2a9c",
            "/sys/fs/cgroup/system.slice/docker-3f2a9c.scope",
            "/sys/fs/cgroup/docker/outer/docker/3f2a9c",
        ] {
            assert!(belongs_to(&Files::V1(dir.into()), id), "{dir}");
        }
        // A recycled pid in another container, a host service, the root: never.
        for dir in [
            "/sys/fs/cgroup/blkio/docker/77aa01",
            "/sys/fs/cgroup/system.slice/ssh.service",
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/blkio/docker/3f2a9c/child",
        ] {
            assert!(!belongs_to(&Files::V2(dir.into()), id), "{dir}");
        }
        assert!(!belongs_to(&Files::V2("/".into()), ""));
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(256 << 10), "256 KiB");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
        assert_eq!(human_bytes(100), "100 B");
    }
}
