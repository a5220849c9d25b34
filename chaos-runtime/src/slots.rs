//! A machine-wide limit on concurrent stacks, so a 2-core machine does not thrash.
//!
//! `CHAOS_JOBS` slots (default: one per two cores, at least one), each a lock file in the lock
//! directory (`CHAOS_LOCK_DIR`, default the temp dir); a test holds one for its whole run. Works
//! across test binaries, nextest's processes and users, since the locks are `flock`s: a lock of
//! a process that died is free again, and a lock file is usable by whoever can read it.
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

/// A held slot; released on drop.
pub struct Slot {
    _file: File,
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
    use fs2::FileExt;
    let n = count();
    let mut announced = false;
    loop {
        for i in 0..n {
            let f = open_lock(&lock_dir().join(format!("chaos-slot-{i}.lock")))?;
            if f.try_lock_exclusive().is_ok() {
                return Ok(Slot { _file: f });
            }
        }
        if !announced {
            progress::line(
                "slots",
                &format!(
                    "all {n} slots busy (CHAOS_JOBS={n}); waiting for a running experiment to finish"
                ),
            );
            announced = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
