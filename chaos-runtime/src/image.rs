//! The base image (Debian bookworm with PostgreSQL 15, Redis, nginx, iproute2, iptables), built
//! locally from Debian packages (no registry needed).
//!
//! The recipe (`image/` in this crate) is embedded in this crate; the image tag is a hash of it, so a
//! changed recipe builds a new image and an unchanged one is reused. The first test to need the
//! image builds it under a file lock; every other test, in this process or another, waits on the
//! lock and then finds the image.
use crate::progress;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;
use testcontainers::bollard::Docker;

const BUILD_SH: &str = include_str!("../image/build.sh");
const PACKAGES: &str = include_str!("../image/packages");
const ROOTFS: &[(&str, &str)] = &[(
    "usr/local/bin/chaos-postgres",
    include_str!("../image/rootfs/usr/local/bin/chaos-postgres"),
)];

/// Why the image could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A tool the build needs is missing.
    #[error("building the image {tag} needs {what}. Fix: {fix}")]
    Missing {
        /// The tag that was to be built.
        tag: String,
        /// What is missing.
        what: String,
        /// How to get it.
        fix: String,
    },
    /// The build ran and failed.
    #[error(
        "building the image {tag} failed (exit {code:?}); its last output:\n{tail}\nFix the cause above, then rerun; the build restarts from scratch"
    )]
    BuildFailed {
        /// The tag that was to be built.
        tag: String,
        /// Exit code of the recipe.
        code: Option<i32>,
        /// Its last lines of output.
        tail: String,
    },
    /// The build's lock file cannot be used.
    #[error(transparent)]
    Lock(#[from] crate::slots::LockError),
    /// Local I/O around the build (temp dir, lock file).
    #[error("{call} failed")]
    Io {
        /// The call.
        call: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The image tag: `chaos-base:<12 hex of the recipe hash>`.
pub fn tag() -> String {
    let mut h = Sha256::new();
    h.update(BUILD_SH);
    h.update(PACKAGES);
    for (p, c) in ROOTFS {
        h.update(p);
        h.update(c);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("chaos-base:{hex}")
}

/// Ensures the image exists, building it at most once across all parallel tests.
pub async fn ensure(docker: &Docker) -> Result<String, ImageError> {
    let tag = tag();
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    let lock_path = crate::slots::lock_dir().join(format!("{}.lock", tag.replace(':', "-")));
    let lock = crate::slots::open_lock(&lock_path)?;
    let lock = tokio::task::spawn_blocking(move || {
        use fs2::FileExt;
        if lock.try_lock_exclusive().is_err() {
            progress::line(
                "image",
                "another test is building the image; waiting for it",
            );
            lock.lock_exclusive().map(|_| lock)
        } else {
            Ok(lock)
        }
    })
    .await
    .expect("lock task panicked")
    .map_err(|source| ImageError::Io {
        call: format!("flock {}", lock_path.display()),
        source,
    })?;
    // Whoever held the lock before us may have built it.
    if docker.inspect_image(&tag).await.is_ok() {
        drop(lock);
        return Ok(tag);
    }
    let t2 = tag.clone();
    let result = tokio::task::spawn_blocking(move || build(&t2))
        .await
        .expect("build task panicked");
    drop(lock);
    result.map(|_| tag)
}

fn preflight(tag: &str) -> Result<(), ImageError> {
    let missing = |what: &str, fix: &str| ImageError::Missing {
        tag: tag.to_string(),
        what: what.to_string(),
        fix: fix.to_string(),
    };
    // As root debootstrap runs in one go; otherwise its first stage runs under fakeroot and
    // the second in a container (see build.sh).
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools: &[(&str, &str)] = if root {
        &[
            ("debootstrap", "debootstrap"),
            ("docker", "docker.io (the docker CLI)"),
        ]
    } else {
        &[
            ("debootstrap", "debootstrap"),
            ("docker", "docker.io (the docker CLI)"),
            (
                "fakeroot",
                "fakeroot (an ordinary user's image build unpacks Debian's packages under it)",
            ),
        ]
    };
    for (tool, pkg) in tools {
        if crate::doctor::which(tool).is_none() {
            return Err(missing(tool, &format!("apt-get install -y {pkg}")));
        }
    }
    Ok(())
}

fn build(tag: &str) -> Result<(), ImageError> {
    preflight(tag)?;
    let io = |call: String| move |source| ImageError::Io { call, source };
    let dir = std::env::temp_dir().join(format!("chaos-recipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io(format!("mkdir {}", dir.display())))?;
    std::fs::write(dir.join("build.sh"), BUILD_SH).map_err(io("write build.sh".into()))?;
    std::fs::write(dir.join("packages"), PACKAGES).map_err(io("write packages".into()))?;
    for (path, content) in ROOTFS {
        let f = dir.join("rootfs").join(path);
        std::fs::create_dir_all(f.parent().unwrap())
            .map_err(io(format!("mkdir {}", f.display())))?;
        std::fs::write(&f, content).map_err(io(format!("write {}", f.display())))?;
    }
    progress::line(
        "image",
        &format!(
            "building {tag} from Debian packages (first use only: ~1 min as root, ~3 min as another user)"
        ),
    );
    let started = Instant::now();
    let mut child = Command::new("sh")
        .arg(dir.join("build.sh"))
        .arg(tag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("spawn sh build.sh".into()))?;
    let stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut out_lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        progress::line(
            "image",
            &format!("[{:>4.0}s] {line}", started.elapsed().as_secs_f64()),
        );
        out_lines.push(line);
    }
    let status = child.wait().map_err(io("wait build.sh".into()))?;
    let err_lines = err_reader.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        let tail: Vec<_> = out_lines
            .iter()
            .chain(err_lines.iter())
            .rev()
            .take(25)
            .cloned()
            .collect();
        let tail: Vec<_> = tail.into_iter().rev().collect();
        return Err(ImageError::BuildFailed {
            tag: tag.into(),
            code: status.code(),
            tail: tail.join("\n"),
        });
    }
    progress::line(
        "image",
        &format!("built {tag} in {:.0} s", started.elapsed().as_secs_f64()),
    );
    Ok(())
}
