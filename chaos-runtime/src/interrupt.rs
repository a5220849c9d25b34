//! SIGINT and SIGTERM during a run: heal the active faults, remove the stack, say what was
//! cleaned in one line, exit non-zero. A second signal exits at once.
//!
//! One listener thread per process (installed by the first run) owns the signals: while no run is
//! active a signal ends the process as it would have without us (exit 128 + signal), so a test
//! binary stays killable between and after its chaos tests. While runs are active, each run
//! hears it through a watch channel, drops its pipeline (the fault guards heal on drop), removes
//! its stack, and the last one to finish exits.
use crate::stack::Stack;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Runs in progress in this process.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// How many signals were received (the second one exits at once).
static RECEIVED: AtomicUsize = AtomicUsize::new(0);

fn channel() -> &'static tokio::sync::watch::Sender<Option<i32>> {
    static TX: OnceLock<tokio::sync::watch::Sender<Option<i32>>> = OnceLock::new();
    TX.get_or_init(|| tokio::sync::watch::channel(None).0)
}

/// Installs the listener thread once; later calls do nothing.
fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = std::thread::Builder::new()
            .name("chaos-signals".into())
            .spawn(listen);
    });
}

fn listen() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            let signo = tokio::select! {
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
            };
            let name = if signo == libc::SIGINT { "SIGINT" } else { "SIGTERM" };
            if ACTIVE.load(Ordering::SeqCst) == 0 {
                std::process::exit(128 + signo);
            }
            if RECEIVED.fetch_add(1, Ordering::SeqCst) > 0 {
                eprintln!("[chaos] second {name}: exiting now; the next run's sweep removes what is left");
                std::process::exit(128 + signo);
            }
            eprintln!("[chaos] {name}: healing the active faults and removing the stacks (again to exit at once)");
            let _ = channel().send(Some(signo));
        }
    });
}

/// One run's registration: counts it as active, and holds its stack once it exists.
pub(crate) struct Guard {
    stack: Arc<Mutex<Option<Arc<Stack>>>>,
    run_id: Arc<Mutex<Option<String>>>,
}

impl Guard {
    /// Registers a run (installs the listener on first use).
    pub(crate) fn register() -> Guard {
        install();
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        Guard {
            stack: Arc::new(Mutex::new(None)),
            run_id: Arc::new(Mutex::new(None)),
        }
    }

    /// Where the run puts its id before anything is created (resources carry it as a label).
    pub(crate) fn run_id_slot(&self) -> Arc<Mutex<Option<String>>> {
        self.run_id.clone()
    }

    /// Where the run puts its stack once started, so that an interrupt can remove it.
    pub(crate) fn slot(&self) -> Arc<Mutex<Option<Arc<Stack>>>> {
        self.stack.clone()
    }

    /// Resolves with the signal number when the process is told to stop.
    pub(crate) async fn interrupted(&self) -> i32 {
        let mut rx = channel().subscribe();
        loop {
            if let Some(s) = *rx.borrow_and_update() {
                return s;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// After the pipeline was dropped (its faults healed): removes the stack, says so, and
    /// exits once every run of the process is done.
    pub(crate) async fn clean_up_and_exit(self, signo: i32) -> ! {
        let stack = self.stack.lock().unwrap_or_else(|e| e.into_inner()).take();
        match stack {
            Some(s) => {
                let roles = s.roles();
                s.teardown().await;
                eprintln!(
                    "[chaos] interrupted: faults healed, stack {} removed ({} containers: {}, network {}, its volumes)",
                    s.run_id,
                    roles.len(),
                    roles.join(", "),
                    s.network
                );
            }
            None => {
                let id = self
                    .run_id
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                match (id, crate::docker::connect().await) {
                    (Some(id), Ok(docker)) => {
                        let n = crate::stack::remove_run(&docker, &id).await;
                        eprintln!(
                            "[chaos] interrupted while run {id} was starting: removed {n} of its resources"
                        );
                    }
                    _ => eprintln!(
                        "[chaos] interrupted before any resource existed: nothing to remove"
                    ),
                }
            }
        }
        if ACTIVE.fetch_sub(1, Ordering::SeqCst) == 1 {
            std::process::exit(128 + signo);
        }
        // Another run of this process is still cleaning up; it exits when it is done.
        std::future::pending::<()>().await;
        unreachable!("pending never resolves")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}
