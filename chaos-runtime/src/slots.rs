//! A machine-wide limit on concurrent stacks, so a 2-core machine does not thrash.
//!
//! `CHAOS_JOBS` slots (default: one per two cores, at least one), each a lock file in the
//! temp dir; a test holds one for its whole run. Works across test binaries and nextest's
//! processes, since the locks are `flock`s.
use crate::progress;
use std::fs::File;
use std::time::Duration;

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

/// Waits for a free slot.
pub async fn acquire() -> Slot {
    use fs2::FileExt;
    let n = count();
    let mut announced = false;
    loop {
        for i in 0..n {
            let path = std::env::temp_dir().join(format!("chaos-slot-{i}.lock"));
            if let Ok(f) = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                && f.try_lock_exclusive().is_ok()
            {
                return Slot { _file: f };
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
