//! Sub-millisecond sleeps for the toxics.
//!
//! Tokio's timer has a 1 ms tick and rounds deadlines up, which made a 100 ms
//! latency toxic measure 101.5 ms on average. One dedicated thread waits on a
//! condition variable with the earliest deadline (futex + hrtimer) and wakes the
//! tasks whose deadline passed.
//!
//! A timed wait ends late by the time the kernel takes to deliver the timer
//! interrupt and run the thread again, with a long tail on a virtual machine
//! whose idle vCPU halts (this module's test, 2-core VM: 50-185 µs late and 2.4
//! and 9.8 ms in one run of 20 sleeps). So the thread sleeps until [`SPIN`]
//! before the deadline and spins the rest (16-70 µs late over 40 sleeps): at most
//! that much CPU per deadline, and none while no toxic delays anything.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
#[cfg(unix)]
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
#[cfg(unix)]
use std::sync::Arc;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long before a deadline the timer thread stops sleeping and spins.
const SPIN: Duration = Duration::from_micros(300);

#[derive(Default)]
struct Queue {
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: HashMap<u64, Waker>,
    /// Sends this thread makes itself at their deadline (see [`send_at`]).
    #[cfg(unix)]
    sends: HashMap<u64, Arc<Mutex<SendJob>>>,
    next_id: u64,
}

struct Timer {
    queue: Mutex<Queue>,
    cv: Condvar,
}

impl Timer {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self) {
        let mut q = self.lock();
        #[cfg(unix)]
        let mut due = Vec::new();
        loop {
            let now = Instant::now();
            while let Some(&Reverse((at, id))) = q.deadlines.peek() {
                if at > now {
                    break;
                }
                q.deadlines.pop();
                if let Some(w) = q.wakers.remove(&id) {
                    w.wake();
                }
                #[cfg(unix)]
                if let Some(job) = q.sends.remove(&id) {
                    due.push(job);
                }
            }
            #[cfg(unix)]
            if !due.is_empty() {
                drop(q);
                for job in due.drain(..) {
                    send_now(&job);
                }
                q = self.lock();
                continue;
            }
            q = match q.deadlines.peek() {
                Some(&Reverse((at, _))) if at - now <= SPIN => {
                    // Close enough: spin without the lock (a task may register a
                    // deadline meanwhile; the next round sees it).
                    drop(q);
                    while Instant::now() < at {
                        std::hint::spin_loop();
                    }
                    self.lock()
                }
                Some(&Reverse((at, _))) => {
                    self.cv
                        .wait_timeout(q, at - now - SPIN)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.cv.wait(q).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let t: &'static Timer = Box::leak(Box::new(Timer {
            queue: Mutex::new(Queue::default()),
            cv: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("chaos-proxy-timer".into())
            .spawn(move || {
                // Linux lets a thread's timed waits end up to its "timer slack"
                // late (50 µs by default) to batch wake-ups; this thread exists
                // to be punctual, so ask for the minimum.
                #[cfg(target_os = "linux")]
                // SAFETY: PR_SET_TIMERSLACK takes an integer and only affects this thread.
                unsafe {
                    libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
                }
                t.run()
            })
            .expect("cannot start the timer thread");
        t
    })
}

/// Completes at `deadline` (never before it), typically within ~0.1 ms after.
pub(crate) fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, id: None }
}

pub(crate) struct Sleep {
    deadline: Instant,
    id: Option<u64>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            if let Some(id) = self.id.take() {
                timer().lock().wakers.remove(&id);
            }
            return Poll::Ready(());
        }
        let t = timer();
        let mut q = t.lock();
        match self.id {
            Some(id) => {
                // Re-polled: keep the newest waker (the timer may already have
                // taken the old one, in which case register again).
                match q.wakers.get_mut(&id) {
                    Some(w) => w.clone_from(cx.waker()),
                    None => {
                        q.wakers.insert(id, cx.waker().clone());
                        q.deadlines.push(Reverse((self.deadline, id)));
                        t.cv.notify_one();
                    }
                }
            }
            None => {
                let id = q.next_id;
                q.next_id += 1;
                let earliest = q
                    .deadlines
                    .peek()
                    .is_none_or(|Reverse((at, _))| self.deadline < *at);
                q.deadlines.push(Reverse((self.deadline, id)));
                q.wakers.insert(id, cx.waker().clone());
                self.id = Some(id);
                if earliest {
                    t.cv.notify_one();
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            // The heap entry stays until its deadline; without a waker it is skipped.
            timer().lock().wakers.remove(&id);
        }
    }
}

/// A send of `data[range]` on a socket that the timer thread makes itself at a
/// deadline, without waking a tokio worker first: on a virtual machine whose idle
/// vCPUs halt, that wake-up was most of a latency toxic's tail (the thread is
/// already running at the deadline, spinning). `before` runs on the timer
/// thread just before the send (the writer counts the bytes there, so that a
/// peer that saw them also sees them in the stats).
///
/// Await it, then [`TimedSend::finish`] gives the buffer back with what the send
/// did; dropped or finished before its deadline, nothing is sent. The borrow of
/// the socket keeps it open until then, and a send in progress completes before
/// `finish` or the drop returns.
#[cfg(unix)]
pub(crate) fn send_at<'a, S: AsRawFd>(
    deadline: Instant,
    socket: &'a S,
    data: Vec<u8>,
    range: std::ops::Range<usize>,
    before: Box<dyn FnOnce() + Send>,
) -> TimedSend<'a> {
    let job = Arc::new(Mutex::new(SendJob {
        fd: socket.as_raw_fd(),
        data,
        range,
        before: Some(before),
        outcome: None,
        cancelled: false,
        waker: None,
    }));
    let t = timer();
    let mut q = t.lock();
    let id = q.next_id;
    q.next_id += 1;
    let earliest = q
        .deadlines
        .peek()
        .is_none_or(|Reverse((at, _))| deadline < *at);
    q.deadlines.push(Reverse((deadline, id)));
    q.sends.insert(id, job.clone());
    if earliest {
        t.cv.notify_one();
    }
    TimedSend {
        job,
        id,
        _socket: std::marker::PhantomData,
    }
}

#[cfg(unix)]
struct SendJob {
    fd: RawFd,
    data: Vec<u8>,
    range: std::ops::Range<usize>,
    before: Option<Box<dyn FnOnce() + Send>>,
    /// Bytes sent (possibly fewer than asked: the socket's buffer was full), or
    /// the send's error.
    outcome: Option<std::io::Result<usize>>,
    cancelled: bool,
    waker: Option<Waker>,
}

#[cfg(unix)]
fn lock_job(job: &Mutex<SendJob>) -> MutexGuard<'_, SendJob> {
    job.lock().unwrap_or_else(|p| p.into_inner())
}

/// On the timer thread, at the deadline. The job's lock is held across the send,
/// so a cancelling drop waits for it (the socket stays open meanwhile).
#[cfg(unix)]
fn send_now(job: &Mutex<SendJob>) {
    let mut j = lock_job(job);
    if j.cancelled || j.outcome.is_some() {
        return;
    }
    if let Some(before) = j.before.take() {
        before();
    }
    let piece = &j.data[j.range.clone()];
    // SAFETY: `fd` is the socket borrowed by the `TimedSend` that owns this job,
    // which stays alive (so the socket open) until the job is cancelled or done,
    // both under this lock; the pointer and length are those of a live slice.
    let r = unsafe {
        libc::send(
            j.fd,
            piece.as_ptr().cast(),
            piece.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    j.outcome = Some(if r >= 0 {
        Ok(r as usize)
    } else {
        let e = std::io::Error::last_os_error();
        match e.kind() {
            // Full socket buffer: the writer sends it the usual way.
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        }
    });
    if let Some(w) = j.waker.take() {
        drop(j);
        w.wake();
    }
}

/// See [`send_at`].
#[cfg(unix)]
pub(crate) struct TimedSend<'a> {
    job: Arc<Mutex<SendJob>>,
    id: u64,
    _socket: std::marker::PhantomData<&'a ()>,
}

#[cfg(unix)]
impl TimedSend<'_> {
    /// The buffer back, and what the send did: `None` if it had not happened (it
    /// never will now, and `before` did not run).
    pub(crate) fn finish(self) -> (Vec<u8>, Option<std::io::Result<usize>>) {
        let mut j = lock_job(&self.job);
        j.cancelled = true;
        let out = (std::mem::take(&mut j.data), j.outcome.take());
        drop(j);
        out
    }
}

#[cfg(unix)]
impl Future for TimedSend<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut j = lock_job(&self.job);
        if j.outcome.is_some() {
            return Poll::Ready(());
        }
        match &mut j.waker {
            Some(w) => w.clone_from(cx.waker()),
            None => j.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(unix)]
impl Drop for TimedSend<'_> {
    fn drop(&mut self) {
        lock_job(&self.job).cancelled = true;
        timer().lock().sends.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleeps_precisely_and_never_early() {
        let mut late = Vec::new();
        for i in 0..20u64 {
            let at = Instant::now() + Duration::from_micros(2_000 + 137 * i);
            sleep_until(at).await;
            let now = Instant::now();
            assert!(now >= at);
            late.push(now - at);
        }
        late.sort();
        assert!(late[late.len() / 2] < Duration::from_millis(1), "{late:?}");
    }

    #[tokio::test]
    async fn dropped_sleeps_do_not_wake() {
        let far = sleep_until(Instant::now() + Duration::from_secs(3600));
        let near = sleep_until(Instant::now() + Duration::from_millis(2));
        tokio::select! {
            _ = far => panic!("far deadline fired"),
            _ = near => {}
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sends_at_the_deadline_and_gives_the_buffer_back() {
        use std::io::Read;
        use std::sync::atomic::{AtomicBool, Ordering};
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let counted = Arc::new(AtomicBool::new(false));
        let c = counted.clone();
        let at = Instant::now() + Duration::from_millis(20);
        let mut send = send_at(
            at,
            &a,
            b"xxhello".to_vec(),
            2..7,
            Box::new(move || c.store(true, Ordering::SeqCst)),
        );
        let mut buf = [0u8; 16];
        assert!(b.read(&mut buf).is_err(), "nothing before the deadline");
        assert!(!counted.load(Ordering::SeqCst));
        (&mut send).await;
        assert!(Instant::now() >= at);
        let (data, outcome) = send.finish();
        assert_eq!(data, b"xxhello");
        assert_eq!(outcome.unwrap().unwrap(), 5);
        assert!(counted.load(Ordering::SeqCst));
        assert_eq!(b.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_send_finished_before_its_deadline_never_happens() {
        use std::io::Read;
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let at = Instant::now() + Duration::from_millis(5);
        let send = send_at(
            at,
            &a,
            b"late".to_vec(),
            0..4,
            Box::new(|| panic!("counted")),
        );
        let (data, outcome) = send.finish();
        assert_eq!(data, b"late");
        assert!(outcome.is_none());
        // Past the deadline, the timer thread skipped it.
        sleep_until(at + Duration::from_millis(5)).await;
        let mut buf = [0u8; 8];
        assert!(b.read(&mut buf).is_err(), "a cancelled send was sent");
    }
}
