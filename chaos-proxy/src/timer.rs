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
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long before a deadline the timer thread stops sleeping and spins.
const SPIN: Duration = Duration::from_micros(300);

#[derive(Default)]
struct Queue {
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: HashMap<u64, Waker>,
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
}
