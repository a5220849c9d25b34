//! A machine-wide limit on concurrent measuring, so a 2-core machine does not thrash, and the
//! rule that keeps the next run's work out of a measurement.
//!
//! `CHAOS_JOBS` slots (default: one per two cores, at least one), each a lock file in the lock
//! directory (`CHAOS_LOCK_DIR`, default the temp dir); a run holds one while it measures. Works
//! across test binaries, nextest's processes and users, since the locks are `flock`s: a lock of
//! a process that died is free again, and a lock file is usable by whoever can read it.
//!
//! With stacks started ahead (`CHAOS_PRESTART=1`, see [`prestart`]) three more kinds of lock order the
//! work around a measurement:
//! - a *staging place* (`chaos-stage-N`): the right to start a stack before holding a slot;
//! - *quiet* (`chaos-quiet-N`): held exclusively by the run of slot N from its baseline until its
//!   faults are healed (its baseline and fault windows; the recovery windows after stay
//!   exposed, which is why this is opt-in); *noisy* work (a stack's start, a
//!   stack's removal, a report page, a reaper's start) holds it shared, so it waits for them;
//! - *intent* (`chaos-intent-N`): held by a staged run from its stack being ready until it
//!   holds quiet, so that the run it waits for cannot begin its noisy teardown in the moment
//!   between giving the slot back and this run's baseline.
use crate::progress;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A lock file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "the lock file {} cannot be opened ({source}); it belongs to {owner}. Fix: remove it (`sudo rm {}`), or set CHAOS_LOCK_DIR to a directory of your own",
    path.display(), path.display()
)]
pub struct LockError {
    /// The file.
    pub path: PathBuf,
    /// Its owner, as `user (uid N), mode 0NNN`.
    pub owner: String,
    /// Why it could not be opened.
    #[source]
    pub source: std::io::Error,
}

/// Where lock files live: `CHAOS_LOCK_DIR`, else the temp dir.
pub fn lock_dir() -> PathBuf {
    std::env::var_os("CHAOS_LOCK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// Opens (creating it, readable and writable by every user) a lock file. `flock` needs no write
/// access, so a file another user created is opened read-only; one nobody may read is an error
/// that names the file, its owner and the fix, at once.
pub fn open_lock(path: &Path) -> Result<File, LockError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o666)
        .open(path);
    if let Ok(f) = created {
        // The umask took bits away: give them back, so that other users can lock it too.
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o666));
        return Ok(f);
    }
    std::fs::OpenOptions::new()
        .read(true)
        .open(path)
        .map_err(|source| LockError {
            path: path.to_path_buf(),
            owner: owner_of(path),
            source,
        })
}

fn owner_of(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(path) else {
        return "an unknown user".into();
    };
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[2] == m.uid().to_string())
                .map(|f| f[0].to_string())
        })
        .unwrap_or_else(|| "?".into());
    format!("{name} (uid {}), mode {:04o}", m.uid(), m.mode() & 0o7777)
}

/// A held slot, staging place, intent or quiet lock; released on drop.
pub struct Slot {
    _file: File,
    index: usize,
}

impl Slot {
    /// Which of the `count()` locks of its kind this is.
    pub fn index(&self) -> usize {
        self.index
    }
}

/// Shared holds of every quiet lock: noisy work may proceed while this lives.
pub struct Noisy {
    _files: Vec<File>,
}

fn lock_file(prefix: &str, i: usize) -> Result<File, LockError> {
    lock_file_in(&lock_dir(), prefix, i)
}

fn lock_file_in(dir: &Path, prefix: &str, i: usize) -> Result<File, LockError> {
    open_lock(&dir.join(format!("{prefix}-{i}.lock")))
}

/// Waits until no run is in its quiet windows and none is about to begin them, then holds every
/// quiet lock shared (a run about to measure waits for this work to end). Only where stacks
/// start ahead ([`prestart`]); otherwise at once.
pub async fn noisy() -> Result<Noisy, LockError> {
    if !prestart() {
        return Ok(Noisy { _files: Vec::new() });
    }
    noisy_in(&lock_dir(), count()).await
}

async fn noisy_in(dir: &Path, n: usize) -> Result<Noisy, LockError> {
    use fs2::FileExt;
    let intents = (0..n)
        .map(|i| lock_file_in(dir, "chaos-intent", i))
        .collect::<Result<Vec<_>, _>>()?;
    loop {
        let no_intent = intents.iter().all(|f| {
            let free = f.try_lock_shared().is_ok();
            let _ = FileExt::unlock(f);
            free
        });
        if no_intent {
            let mut held = Vec::with_capacity(n);
            for i in 0..n {
                let f = lock_file_in(dir, "chaos-quiet", i)?;
                if f.try_lock_shared().is_err() {
                    break;
                }
                held.push(f);
            }
            if held.len() == n {
                return Ok(Noisy { _files: held });
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Marks this staged run as next to measure (see the module's notes); held until [`quiet`].
pub async fn intent(stage: &Slot) -> Result<Slot, LockError> {
    exclusive("chaos-intent", stage.index).await
}

/// The quiet lock of the run holding `slot`: waits for noisy work in progress to end.
pub async fn quiet(slot: &Slot) -> Result<Slot, LockError> {
    exclusive("chaos-quiet", slot.index).await
}

async fn exclusive(prefix: &str, index: usize) -> Result<Slot, LockError> {
    exclusive_in(&lock_dir(), prefix, index).await
}

async fn exclusive_in(dir: &Path, prefix: &str, index: usize) -> Result<Slot, LockError> {
    use fs2::FileExt;
    let f = lock_file_in(dir, prefix, index)?;
    loop {
        if f.try_lock_exclusive().is_ok() {
            return Ok(Slot { _file: f, index });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Number of slots.
pub fn count() -> usize {
    std::env::var("CHAOS_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or_else(|| {
            (std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                / 2)
            .max(1)
        })
}

/// Waits for a free slot; a slot's lock file that cannot be opened is an error at once.
pub async fn acquire() -> Result<Slot, LockError> {
    take(
        "chaos-slot",
        "slots",
        "waiting for a running experiment to finish",
    )
    .await
}

/// Whether a run starts its stack before it holds a slot (`CHAOS_PRESTART=1`; off by default).
/// On: the suite's wall time drops by a sixth on a 2-core machine, but a stack starting or
/// being removed beside a measurement disturbs it there (a baseline's p50, a recovery's
/// window: BENCHMARKS.md, "Suite wall time"), so the default keeps every measurement alone.
pub fn prestart() -> bool {
    std::env::var("CHAOS_PRESTART").is_ok_and(|v| v == "1")
}

/// Waits for a free staging place: the right to start a stack before a slot is free, so that
/// the next run's stack starts while the current run measures (one staged stack per slot).
/// Held from the stack's start until [`acquire`] returns; a run never asks for it while it
/// holds a slot, so the two never wait on each other.
pub async fn acquire_stage() -> Result<Slot, LockError> {
    take(
        "chaos-stage",
        "staging places",
        "waiting for a started stack to begin measuring",
    )
    .await
}

async fn take(prefix: &str, what: &str, waiting: &str) -> Result<Slot, LockError> {
    use fs2::FileExt;
    let n = count();
    let mut files = (0..n)
        .map(|i| lock_file(prefix, i).map(Some))
        .collect::<Result<Vec<_>, _>>()?;
    let mut announced = false;
    loop {
        for (index, f) in files.iter_mut().enumerate() {
            if f.as_ref().is_some_and(|f| f.try_lock_exclusive().is_ok()) {
                return Ok(Slot {
                    _file: f.take().expect("checked"),
                    index,
                });
            }
        }
        if !announced {
            progress::line(
                "slots",
                &format!("all {n} {what} busy (CHAOS_JOBS={n}); {waiting}"),
            );
            announced = true;
        }
        // A short poll: a staged run takes the slot the moment the measuring one lets it go.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pending<T>(f: impl std::future::Future<Output = T>) -> bool {
        tokio::time::timeout(Duration::from_millis(150), f)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn noisy_work_waits_for_a_quiet_run_and_for_one_about_to_be_quiet() {
        let dir = std::env::temp_dir().join(format!("chaos-quiet-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A run in its quiet windows: noisy work waits, and goes on once it is over.
        let quiet = exclusive_in(&dir, "chaos-quiet", 0).await.unwrap();
        assert!(pending(noisy_in(&dir, 1)).await);
        drop(quiet);
        let noisy = noisy_in(&dir, 1).await.unwrap();
        // Noisy work in progress: a run about to measure waits for it.
        assert!(pending(exclusive_in(&dir, "chaos-quiet", 0)).await);
        drop(noisy);
        // A staged run's intent: no new noisy work, though no run is quiet yet.
        let intent = exclusive_in(&dir, "chaos-intent", 0).await.unwrap();
        assert!(pending(noisy_in(&dir, 1)).await);
        let quiet = exclusive_in(&dir, "chaos-quiet", 0).await.unwrap();
        drop(intent);
        assert!(pending(noisy_in(&dir, 1)).await);
        drop(quiet);
        assert!(!pending(noisy_in(&dir, 1)).await);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_lock_file_is_created_usable_by_every_user_and_reopened() {
        let dir = std::env::temp_dir().join(format!("chaos-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.lock");
        drop(open_lock(&path).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        // Read-only is enough to lock it: a file of another user still works.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        use fs2::FileExt;
        open_lock(&path).unwrap().try_lock_exclusive().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unusable_lock_file_names_itself_its_owner_and_the_fix() {
        let e = LockError {
            path: "/tmp/chaos-slot-0.lock".into(),
            owner: "root (uid 0), mode 0600".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let said = e.to_string();
        assert!(said.contains("/tmp/chaos-slot-0.lock") && said.contains("root (uid 0)"));
        assert!(said.contains("sudo rm /tmp/chaos-slot-0.lock") && said.contains("CHAOS_LOCK_DIR"));
    }
}
