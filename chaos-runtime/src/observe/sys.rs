//! The one boundary through which the fallback observers and the faults read (and the disk
//! throttle writes) the host: /proc, cgroup files and /dev/kmsg. [`RealSys`] is this process
//! on the engine's host; the run's host agent (`crate::agent::AgentSys`) is the engine's host
//! wherever this process is. Parsers never touch the file system themselves, so unit tests drive them
//! with canned contents through [`fake::FakeSys`] (aya keeps the same split in `sys/fake.rs`).

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// Reads the host's pseudo files.
pub(crate) trait Sys: Send + Sync + 'static {
    /// The whole contents of a (small, pseudo) file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// The names of a directory's entries, unsorted.
    fn read_dir_names(&self, path: &Path) -> io::Result<Vec<String>>;
    /// /dev/kmsg opened non-blocking and positioned at its end: only records logged from now on.
    fn open_kmsg(&self) -> io::Result<Box<dyn KmsgReader>>;
    /// Writes a control file (a cgroup limit) in one `write(2)`.
    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        let _ = (path, data);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this host view is read-only",
        ))
    }
}

/// A reader of kernel log records, one record per call.
pub(crate) trait KmsgReader: Send {
    /// The next record (`prio,seq,ts_us,flags;message`), `None` when none is pending.
    fn read_record(&mut self) -> io::Result<Option<String>>;
}

/// The host itself, from this process (which must be on it, and root to write or read the
/// kernel log).
pub(crate) struct RealSys;

impl Sys for RealSys {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        std::fs::write(path, data)
    }

    fn read_dir_names(&self, path: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn open_kmsg(&self) -> io::Result<Box<dyn KmsgReader>> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")?;
        // SEEK_END on /dev/kmsg skips the backlog: we only want what happens during the run.
        f.seek(SeekFrom::End(0))?;
        Ok(Box::new(RealKmsg {
            f,
            buf: vec![0; 16 * 1024],
        }))
    }
}

struct RealKmsg {
    f: std::fs::File,
    buf: Vec<u8>,
}

impl KmsgReader for RealKmsg {
    fn read_record(&mut self) -> io::Result<Option<String>> {
        loop {
            match self.f.read(&mut self.buf) {
                Ok(0) => return Ok(None),
                Ok(n) => return Ok(Some(String::from_utf8_lossy(&self.buf[..n]).into_owned())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                // EPIPE: records were overwritten before we read them; the next read resumes.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-memory host for unit tests.
    use super::*;
    use std::collections::{BTreeMap, VecDeque};
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    /// Files and kernel log records set by the test.
    #[derive(Default)]
    pub(crate) struct FakeSys {
        files: Mutex<BTreeMap<PathBuf, String>>,
        kmsg: Arc<Mutex<VecDeque<String>>>,
    }

    impl FakeSys {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        pub(crate) fn set(&self, path: impl Into<PathBuf>, contents: impl Into<String>) {
            self.files
                .lock()
                .unwrap()
                .insert(path.into(), contents.into());
        }

        pub(crate) fn push_kmsg(&self, record: impl Into<String>) {
            self.kmsg.lock().unwrap().push_back(record.into());
        }
    }

    impl Sys for FakeSys {
        fn read(&self, path: &Path) -> io::Result<String> {
            self.files
                .lock()
                .unwrap()
                .get(path)
                .cloned()
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{} (fake)", path.display()),
                    )
                })
        }

        fn read_dir_names(&self, path: &Path) -> io::Result<Vec<String>> {
            let files = self.files.lock().unwrap();
            let mut names: Vec<String> = files
                .keys()
                .filter_map(|p| p.strip_prefix(path).ok())
                .filter_map(|rest| rest.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            names.dedup();
            if names.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no such directory (fake)",
                ));
            }
            Ok(names)
        }

        fn open_kmsg(&self) -> io::Result<Box<dyn KmsgReader>> {
            Ok(Box::new(FakeKmsg(self.kmsg.clone())))
        }
    }

    struct FakeKmsg(Arc<Mutex<VecDeque<String>>>);

    impl KmsgReader for FakeKmsg {
        fn read_record(&mut self) -> io::Result<Option<String>> {
            Ok(self.0.lock().unwrap().pop_front())
        }
    }

    #[test]
    fn fake_lists_directories_from_files() {
        let sys = FakeSys::new();
        sys.set("/proc/7/task/7/schedstat", "1 2 3");
        sys.set("/proc/7/task/9/schedstat", "1 2 3");
        let mut names = sys.read_dir_names(Path::new("/proc/7/task")).unwrap();
        names.sort();
        assert_eq!(names, ["7", "9"]);
        assert!(sys.read_dir_names(Path::new("/proc/8/task")).is_err());
    }
}
