//! eBPF observers (CO-RE programs from `bpf/*.bpf.c`, loaded with aya).
//!
//! One object per signal family (`process`, `oom`, `tcp`, `sched` for run-queue delay, `block`
//! for block I/O latency), so a family the kernel rejects costs only its own signal. Each hook
//! has a `tp_btf` program and a classic `tracepoint` twin; the first one the kernel accepts is
//! attached ([`Attach`], `CHAOS_BPF_ATTACH`). Records and histograms carry the slot of the
//! watched container they belong to: the programs drop everything else in the kernel, by the
//! task's pid namespace or, for TCP, the socket's network namespace, which [`BpfObserver::watch`]
//! writes into the objects' filter maps.
//!
//! Events come through one ring buffer per family; the programs only wake the reader once
//! ~16 KiB are pending and the reader also drains every 100 ms. Histograms (log2 us buckets,
//! double-buffered per container) are read about once a second.

mod programs;
mod record;
mod remote;

pub(crate) use remote::AgentBpf;
pub use remote::serve;

use super::{Observation, ObserveError, Sink, WatchedContainer};
use aya::maps::{
    Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf,
};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use programs::{FAMILIES, Family, Hook, Output, PROBE, Way};
use record::{MAX_SLOTS, RawEvent, RawHist};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the reader drains the ring buffers even without a wakeup.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// How often histograms become observations.
const HIST_EVERY: Duration = Duration::from_secs(1);
/// How long programs that read the old histogram epoch may still be writing to it.
const EPOCH_GRACE: Duration = Duration::from_millis(2);

const FIX_TOOLCHAIN: &str =
    "apt-get install clang llvm libbpf-dev bpftool, then rebuild chaos-runtime";
const FIX_BTF: &str = "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (CO-RE relocates against /sys/kernel/btf/vmlinux)";

/// Which kind of attachment to use for each hook.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Attach {
    /// `tp_btf` first, the classic tracepoint when the kernel refuses it.
    #[default]
    Auto,
    /// `tp_btf` only.
    TpBtf,
    /// Classic tracepoints only (mounts tracefs when it is missing).
    Tracepoint,
}

impl Attach {
    /// `CHAOS_BPF_ATTACH=auto|tp_btf|tracepoint`; `Auto` when unset.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("CHAOS_BPF_ATTACH") {
            Err(_) => Ok(Self::Auto),
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "auto" => Ok(Self::Auto),
                "tp_btf" | "btf" => Ok(Self::TpBtf),
                "tracepoint" | "classic" => Ok(Self::Tracepoint),
                _ => Err(format!(
                    "CHAOS_BPF_ATTACH={v:?} is not auto, tp_btf or tracepoint"
                )),
            },
        }
    }
}

/// The eBPF observers of one run: loaded programs, the reader tasks, the filter maps.
pub struct BpfObserver {
    signals: Vec<(&'static str, Result<(), String>)>,
    attached: Vec<String>,
    load_time: Duration,
    /// Keeps the programs and their links alive; dropping an object detaches it.
    objects: Vec<Ebpf>,
    /// Per event family: records dropped because its ring buffer was full (per CPU).
    lost: Vec<PerCpuArray<MapData, u64>>,
    shared: Arc<Shared>,
    stop_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Finished>>,
    sink: Sink,
    /// This process's own pid and net namespaces, never watched (that would be the host).
    own_ns: (Option<u64>, Option<u64>),
}

/// What the reader tasks and `watch` share.
struct Shared {
    state: Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    /// Index = slot in the kernel maps.
    slots: Vec<Slot>,
    /// The filter maps of every loaded object.
    filters: Vec<Filters>,
}

struct Slot {
    role: String,
    pidns: Option<u32>,
    netns: Option<u32>,
}

struct Filters {
    pidns: Option<BpfHashMap<MapData, u32, u32>>,
    netns: Option<BpfHashMap<MapData, u32, u32>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `role` of every slot, by slot.
    fn roles(&self) -> Vec<String> {
        self.lock().slots.iter().map(|s| s.role.clone()).collect()
    }
}

/// A histogram family's maps.
struct HistSource {
    kind: &'static str,
    hist: PerCpuArray<MapData, RawHist>,
    epoch: Array<MapData, u32>,
    active: u32,
}

impl HistSource {
    /// Points the programs at the other half; returns the half they just left.
    fn flip(&mut self) -> u32 {
        let idle = self.active;
        self.active ^= 1;
        let _ = self.epoch.set(0, self.active, 0);
        idle
    }

    /// Sums `slot`'s counts in `half` over all CPUs and zeroes them; `None` when empty.
    fn take(&mut self, half: u32, slot: u32) -> Option<RawHist> {
        let idx = half * MAX_SLOTS + slot;
        let per_cpu = self.hist.get(&idx, 0).ok()?;
        let mut sum = RawHist::default();
        for v in per_cpu.iter() {
            sum.merge(v);
        }
        if sum.count == 0 {
            return None;
        }
        if let Ok(zero) = PerCpuValues::try_from(vec![RawHist::default(); per_cpu.len()]) {
            let _ = self.hist.set(idx, zero, 0);
        }
        Some(sum)
    }
}

/// What a reader task hands back when it stops, for the final drain after detaching.
enum Finished {
    Ring(RingBuf<MapData>),
    Hists(Vec<HistSource>),
}

fn unavailable(why: impl Into<String>, fix: impl Into<String>) -> ObserveError {
    ObserveError::BpfUnavailable {
        why: why.into(),
        fix: fix.into(),
    }
}

/// An error and its sources on one line, with a long verifier log cut to its end.
fn chain(e: &dyn std::error::Error) -> String {
    let s = crate::error_chain(e);
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 700 {
        let head: String = s.chars().take(250).collect();
        let tail: String = s
            .chars()
            .rev()
            .take(400)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{head} [...] {tail}")
    } else {
        s
    }
}

/// The concrete fix for an error seen while loading or attaching.
fn fix_for(why: &str) -> &'static str {
    let w = why.to_ascii_lowercase();
    if w.contains("operation not permitted")
        || (w.contains("permission denied") && !w.contains("verifier"))
    {
        "run as root (or with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN), or let the run's host agent load the programs (it does when this process is not root on the engine's host)"
    } else if w.contains("tracefs") {
        "mount -t tracefs tracefs /sys/kernel/tracing"
    } else if w.contains("btf") {
        FIX_BTF
    } else if w.contains("not compiled") {
        FIX_TOOLCHAIN
    } else {
        "use a kernel >= 5.8 with BTF, tracepoints and BPF ring buffers (see the verifier output above)"
    }
}

/// Makes sure classic tracepoints can attach: aya looks for tracefs at /sys/kernel/tracing or
/// /sys/kernel/debug/tracing (and remembers the answer for the life of the process). Mounts it at
/// /sys/kernel/tracing when neither is there; the mount is left in place (it is the default
/// on most distributions).
fn ensure_tracefs() -> Result<(), String> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let present = |p: &str| std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some());
    if present("/sys/kernel/tracing") || present("/sys/kernel/debug/tracing") {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, target, fstype) = (c("tracefs"), c("/sys/kernel/tracing"), c("tracefs"));
    // SAFETY: valid NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    if present("/sys/kernel/tracing") {
        Ok(())
    } else {
        Err("tracefs mounted at /sys/kernel/tracing but it is empty".into())
    }
}

/// Loads `way`'s program of `hook` and attaches it.
fn attach_one(ebpf: &mut Ebpf, btf: &Btf, hook: &Hook, way: Way) -> Result<(), String> {
    let prog_name = match way {
        Way::TpBtf => hook.btf_prog,
        Way::Tracepoint => hook.tp_prog,
    };
    let prog = ebpf
        .program_mut(prog_name)
        .ok_or_else(|| format!("program {prog_name} is not in the object"))?;
    match way {
        Way::TpBtf => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(|e| chain(&e))?;
            p.load(hook.name, btf).map_err(|e| chain(&e))?;
            if let Err(e) = p.attach() {
                let _ = p.unload();
                return Err(chain(&e));
            }
        }
        Way::Tracepoint => {
            ensure_tracefs()?;
            let p: &mut TracePoint = prog.try_into().map_err(|e| chain(&e))?;
            p.load().map_err(|e| chain(&e))?;
            if let Err(e) = p.attach(hook.category, hook.name) {
                let _ = p.unload();
                return Err(chain(&e));
            }
        }
    }
    Ok(())
}

/// Loads one family's object and attaches its hooks. `Err` when a required hook attached in
/// no way; the notes say what attached where.
fn load_family(
    loader: &mut EbpfLoader<'_>,
    btf: &Btf,
    family: &Family,
    attach: Attach,
) -> Result<(Ebpf, Vec<String>), String> {
    let bytes = (family.bytes)();
    if bytes.is_empty() {
        return Err(format!(
            "bpf/{}.bpf.c was not compiled into this build (see the build's cargo warnings)",
            family.object
        ));
    }
    let mut ebpf = loader
        .load(bytes)
        .map_err(|e| format!("loading bpf/{}.bpf.o: {}", family.object, chain(&e)))?;
    let mut notes = Vec::new();
    for hook in family.hooks {
        let mut errors = Vec::new();
        let mut done = None;
        for &way in hook.ways(attach) {
            match attach_one(&mut ebpf, btf, hook, way) {
                Ok(()) => {
                    done = Some(way);
                    break;
                }
                Err(e) => errors.push(format!("{}: {e}", hook.section(way))),
            }
        }
        match done {
            Some(way) => notes.push(format!("{}: {}", family.signal, hook.section(way))),
            None if hook.required => return Err(errors.join("; ")),
            None => notes.push(format!(
                "{}: {} not attached (optional): {}",
                family.signal,
                hook.name,
                errors.join("; ")
            )),
        }
    }
    Ok((ebpf, notes))
}

fn ns_inode(pid: u32, ns: &str) -> Result<u64, ObserveError> {
    let path = format!("/proc/{pid}/ns/{ns}");
    std::fs::metadata(&path)
        .map(|m| m.ino())
        .map_err(|source| ObserveError::Io {
            call: format!("stat {path}"),
            source,
        })
}

fn map_io(call: &str, e: MapError) -> ObserveError {
    let source = match e {
        MapError::SyscallError(s) => s.io_error,
        other => std::io::Error::other(other.to_string()),
    };
    ObserveError::Io {
        call: call.into(),
        source,
    }
}

/// Removes `inum` from a filter map if it still points at `slot` (another container may share it).
fn unfilter(map: &mut BpfHashMap<MapData, u32, u32>, inum: u32, slot: u32) {
    if map.get(&inum, 0).is_ok_and(|s| s == slot) {
        let _ = map.remove(&inum);
    }
}

impl BpfObserver {
    /// Loads and attaches every program; spawns the reader task (tokio) that turns ring-buffer
    /// records into `Observation`s (source = Source::Bpf, at_ns = bpf_ktime_get_ns, container = role)
    /// and sends them to `sink`. Programs that fail to attach are recorded per signal, not fatal,
    /// unless none load. Mounts tracefs at /sys/kernel/tracing if classic tracepoints need it and it is missing.
    ///
    /// `CHAOS_BPF_ATTACH=auto|tp_btf|tracepoint` picks the attachment (see [`Attach`]).
    /// Must be called inside a tokio runtime.
    pub fn load(sink: Sink) -> Result<Self, ObserveError> {
        let attach = Attach::from_env().map_err(|why| {
            unavailable(why, "set CHAOS_BPF_ATTACH to auto, tp_btf or tracepoint")
        })?;
        Self::load_with(sink, attach)
    }

    /// [`BpfObserver::load`] with an explicit [`Attach`] mode.
    pub fn load_with(sink: Sink, attach: Attach) -> Result<Self, ObserveError> {
        if cfg!(chaos_no_bpf) {
            return Err(unavailable(
                format!(
                    "chaos-runtime was built without eBPF programs ({})",
                    env!("CHAOS_BPF_BUILD_NOTE")
                ),
                FIX_TOOLCHAIN,
            ));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(unavailable(
                "BpfObserver::load was called outside a tokio runtime (its readers are tasks)",
                "call it from async code",
            ));
        }
        let started = Instant::now();
        let btf = Btf::from_sys_fs().map_err(|e| {
            unavailable(
                format!("cannot read /sys/kernel/btf/vmlinux: {}", chain(&e)),
                FIX_BTF,
            )
        })?;
        let mut loader = EbpfLoader::new();
        loader.btf(Some(&btf));

        let mut signals = Vec::new();
        let mut attached = Vec::new();
        let mut objects = Vec::new();
        let mut filters = Vec::new();
        let mut rings = Vec::new();
        let mut hists = Vec::new();
        let mut lost = Vec::new();
        for family in FAMILIES {
            let (mut ebpf, notes) = match load_family(&mut loader, &btf, family, attach) {
                Ok(loaded) => loaded,
                Err(why) => {
                    signals.push((family.signal, Err(why)));
                    continue;
                }
            };
            let pidns = ebpf
                .take_map("watched_pidns")
                .and_then(|m| BpfHashMap::try_from(m).ok());
            let netns = ebpf
                .take_map("watched_netns")
                .and_then(|m| BpfHashMap::try_from(m).ok());
            let output = match family.output {
                Output::Events => ebpf
                    .take_map("events")
                    .and_then(|m| RingBuf::try_from(m).ok())
                    .map(|r| rings.push(r)),
                Output::Histogram(kind) => {
                    let hist = ebpf
                        .take_map("hist")
                        .and_then(|m| PerCpuArray::try_from(m).ok());
                    let epoch = ebpf
                        .take_map("hist_epoch")
                        .and_then(|m| Array::try_from(m).ok());
                    hist.zip(epoch).map(|(hist, epoch)| {
                        hists.push(HistSource {
                            kind,
                            hist,
                            epoch,
                            active: 0,
                        })
                    })
                }
            };
            if output.is_none() || (pidns.is_none() && netns.is_none()) {
                signals.push((
                    family.signal,
                    Err(format!("bpf/{}.bpf.o lacks its maps", family.object)),
                ));
                continue;
            }
            if let Some(counter) = ebpf
                .take_map("lost_events")
                .and_then(|m| PerCpuArray::try_from(m).ok())
            {
                lost.push(counter);
            }
            filters.push(Filters { pidns, netns });
            objects.push(ebpf);
            attached.extend(notes);
            signals.push((family.signal, Ok(())));
        }
        if objects.is_empty() {
            let why = signals
                .iter()
                .filter_map(|(s, r)| r.as_ref().err().map(|e| format!("{s}: {e}")))
                .collect::<Vec<_>>()
                .join("; ");
            let fix = fix_for(&why);
            return Err(unavailable(why, fix));
        }
        let load_time = started.elapsed();

        let shared = Arc::new(Shared {
            state: Mutex::new(WatchState {
                slots: Vec::new(),
                filters,
            }),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for ring in rings {
            // SAFETY: the RingBuf owns its map fd and returns the same open fd for as long as it
            // lives; it stays inside the AsyncFd until into_inner() in ring_task.
            let afd =
                unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                    .map_err(|e| {
                        let (_, e) = e.into_parts();
                        unavailable(
                            format!("cannot poll the ring buffer: {e}"),
                            "use a kernel >= 5.8 with BPF ring buffers",
                        )
                    })?;
            tasks.push(tokio::spawn(ring_task(
                afd,
                shared.clone(),
                sink.clone(),
                stop_rx.clone(),
            )));
        }
        if !hists.is_empty() {
            tasks.push(tokio::spawn(hist_task(
                hists,
                shared.clone(),
                sink.clone(),
                stop_rx,
            )));
        }
        let own = |ns: &str| {
            std::fs::metadata(format!("/proc/self/ns/{ns}"))
                .ok()
                .map(|m| m.ino())
        };
        Ok(Self {
            signals,
            attached,
            load_time,
            objects,
            lost,
            shared,
            stop_tx,
            tasks,
            sink,
            own_ns: (own("pid"), own("net")),
        })
    }

    /// Adds or refreshes a container (reads `/proc/<pid>/ns/pid` and `/proc/<pid>/ns/net` inodes); replaces the entries of an earlier container with the same role.
    ///
    /// A container with pid 0 (not running) keeps its role but matches nothing. A namespace
    /// this process itself is in (`--pid host`, `--network host`) is not watched: it would
    /// attribute the whole host to the container.
    pub fn watch(&self, c: &WatchedContainer) -> Result<(), ObserveError> {
        let (mut pidns, mut netns) = (None, None);
        if c.pid != 0 {
            pidns = Some(ns_inode(c.pid, "pid")?).filter(|&i| Some(i) != self.own_ns.0);
            netns = Some(ns_inode(c.pid, "net")?).filter(|&i| Some(i) != self.own_ns.1);
        }
        // Namespace inodes are 32-bit (proc_inum allocates from an IDA below 2^32).
        let (pidns, netns) = (pidns.map(|i| i as u32), netns.map(|i| i as u32));

        let mut st = self.shared.lock();
        let st = &mut *st;
        let slot = match st.slots.iter().position(|s| s.role == c.role) {
            Some(i) => i,
            None if st.slots.len() < MAX_SLOTS as usize => {
                st.slots.push(Slot {
                    role: c.role.clone(),
                    pidns: None,
                    netns: None,
                });
                st.slots.len() - 1
            }
            None => {
                return Err(unavailable(
                    format!("more than {MAX_SLOTS} containers watched by one observer"),
                    "split the run into smaller stacks",
                ));
            }
        };
        let entry = &mut st.slots[slot];
        let slot = slot as u32;
        for f in &mut st.filters {
            if let Some(map) = f.pidns.as_mut() {
                if let Some(old) = entry.pidns {
                    unfilter(map, old, slot);
                }
                if let Some(new) = pidns {
                    map.insert(new, slot, 0)
                        .map_err(|e| map_io("bpf_map_update_elem(watched_pidns)", e))?;
                }
            }
            if let Some(map) = f.netns.as_mut() {
                if let Some(old) = entry.netns {
                    unfilter(map, old, slot);
                }
                if let Some(new) = netns {
                    map.insert(new, slot, 0)
                        .map_err(|e| map_io("bpf_map_update_elem(watched_netns)", e))?;
                }
            }
        }
        entry.pidns = pidns;
        entry.netns = netns;
        Ok(())
    }

    /// Takes the network namespace of `path` (`/proc/<pid>/ns/net`) as the host's, never
    /// watched, instead of this process's own (the host agent has a network namespace of its
    /// own, and the host's is its first process's).
    pub(crate) fn own_net(&mut self, path: &str) {
        if let Ok(m) = std::fs::metadata(path) {
            self.own_ns.1 = Some(m.ino());
        }
    }

    /// Per signal ("process", "oom", "tcp", "runq", "block_io"): Ok when its programs attached, Err(why) otherwise.
    pub fn signals(&self) -> Vec<(&'static str, Result<(), String>)> {
        self.signals.clone()
    }

    /// What attached where, one line per hook (`runq: tp_btf/sched_switch`), and optional hooks
    /// that did not attach, with why.
    pub fn attached(&self) -> &[String] {
        &self.attached
    }

    /// How long loading and attaching took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Records the programs dropped since loading because a ring buffer was full (the reader
    /// fell behind), summed over every event family and CPU. 0 means every record that passed
    /// the in-kernel filters reached user space.
    pub fn lost_events(&self) -> u64 {
        self.lost
            .iter()
            .filter_map(|m| m.get(&0, 0).ok())
            .map(|per_cpu| per_cpu.iter().sum::<u64>())
            .sum()
    }

    /// Flushes histograms as final RUNQ_DELAY / BLOCK_IO_LATENCY observations, drains the ring buffer, detaches.
    pub async fn stop(self) {
        let Self {
            objects,
            shared,
            stop_tx,
            tasks,
            sink,
            ..
        } = self;
        let _ = stop_tx.send(true);
        let mut rings = Vec::new();
        let mut hists = Vec::new();
        for t in tasks {
            match t.await {
                Ok(Finished::Ring(r)) => rings.push(r),
                Ok(Finished::Hists(h)) => hists.extend(h),
                Err(_) => {}
            }
        }
        // Detaching waits for RCU grace periods (~0.1-0.3 s): keep it off the async threads.
        let _ = tokio::task::spawn_blocking(move || drop(objects)).await;
        // Nothing writes any more: take what is left, both histogram halves.
        let roles = shared.roles();
        for mut ring in rings {
            drain(&mut ring, &roles, &sink);
        }
        let now = crate::clock::mono_ns();
        for mut h in hists {
            for (slot, role) in roles.iter().enumerate() {
                let mut sum = RawHist::default();
                for half in 0..2 {
                    if let Some(part) = h.take(half, slot as u32) {
                        sum.merge(&part);
                    }
                }
                if let Some(o) = record::hist_observation(&sum, h.kind, role, now) {
                    let _ = sink.send(o);
                }
            }
        }
    }
}

/// Turns every pending record into an observation. Records of slots no role owns are dropped.
fn drain(ring: &mut RingBuf<MapData>, roles: &[String], sink: &Sink) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        let Some(raw) = RawEvent::parse(&item) else {
            continue;
        };
        let Some(role) = roles.get(raw.slot as usize) else {
            continue;
        };
        if let Some(o) = record::observation(&raw, role) {
            send(sink, o);
            n += 1;
        }
    }
    n
}

fn send(sink: &Sink, o: Observation) {
    // A closed sink means nobody listens any more; the observer is about to be stopped.
    let _ = sink.send(o);
}

async fn ring_task(
    mut afd: AsyncFd<RingBuf<MapData>>,
    shared: Arc<Shared>,
    sink: Sink,
    mut stop: watch::Receiver<bool>,
) -> Finished {
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ready = afd.readable_mut() => match ready {
                Ok(mut guard) => {
                    let roles = shared.roles();
                    drain(guard.get_inner_mut(), &roles, &sink);
                    guard.clear_ready();
                }
                Err(_) => tokio::time::sleep(DRAIN_EVERY).await,
            },
            _ = tick.tick() => {
                let roles = shared.roles();
                drain(afd.get_mut(), &roles, &sink);
            }
            _ = stop.changed() => break,
        }
    }
    Finished::Ring(afd.into_inner())
}

async fn hist_task(
    mut hists: Vec<HistSource>,
    shared: Arc<Shared>,
    sink: Sink,
    mut stop: watch::Receiver<bool>,
) -> Finished {
    let mut tick = tokio::time::interval(HIST_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let idle: Vec<u32> = hists.iter_mut().map(HistSource::flip).collect();
        tokio::time::sleep(EPOCH_GRACE).await;
        let roles = shared.roles();
        let now = crate::clock::mono_ns();
        for (h, half) in hists.iter_mut().zip(idle) {
            for (slot, role) in roles.iter().enumerate() {
                if let Some(sum) = h.take(half, slot as u32)
                    && let Some(o) = record::hist_observation(&sum, h.kind, role, now)
                {
                    send(&sink, o);
                }
            }
        }
    }
    Finished::Hists(hists)
}

/// Doctor probe: can this host load and attach a trivial program? Ok(()) or the reason + fix.
pub fn probe() -> Result<(), String> {
    if cfg!(chaos_no_bpf) {
        return Err(format!(
            "chaos-runtime was built without eBPF programs ({}). Fix: {FIX_TOOLCHAIN}",
            env!("CHAOS_BPF_BUILD_NOTE")
        ));
    }
    let btf = Btf::from_sys_fs().map_err(|e| {
        format!(
            "cannot read /sys/kernel/btf/vmlinux: {}. Fix: {FIX_BTF}",
            chain(&e)
        )
    })?;
    let (bytes, hook) = PROBE;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(bytes())
        .map_err(|e| {
            let why = chain(&e);
            format!(
                "cannot load the probe program: {why}. Fix: {}",
                fix_for(&why)
            )
        })?;
    let btf_err = match attach_one(&mut ebpf, &btf, &hook, Way::TpBtf) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    // The classic twin, without mounting anything: the doctor only looks.
    let tracefs = [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ];
    if tracefs.iter().any(|p| Path::new(p).exists()) {
        return attach_one(&mut ebpf, &btf, &hook, Way::Tracepoint).map_err(|e| {
            let why = format!("tp_btf: {btf_err}; tracepoint: {e}");
            format!(
                "cannot attach the probe program: {why}. Fix: {}",
                fix_for(&why)
            )
        });
    }
    Err(format!(
        "cannot attach the probe program (tp_btf: {btf_err}). Fix: {}",
        fix_for(&btf_err)
    ))
}
