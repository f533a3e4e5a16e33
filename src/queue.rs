//! A pool's queue: requests waiting for a free slot while every candidate backend is at its
//! `maxConnections`, as HAProxy queues them. The wait is bounded by `timeouts.queue`.
//!
//! A waiting worker sleeps on a condvar. It is woken when a slot may have come free: an
//! exchange on a limited backend of this pool ends ([`crate::backend::InFlight`]'s drop), or a
//! backend of this pool comes back into service. It then tries again; nothing polls.
//!
//! Owned by a `Pool`; its backends hold weak references to it so that they can wake it.
//! Waiters write the counters; stats read them.

use crate::lock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Queue {
    /// Bumped by every wake-up, so a waiter can tell a wake-up from a spurious return.
    wakeups: Mutex<u64>,
    slot_freed: Condvar,
    /// Requests waiting now. Written by waiters; read by `wake` (to skip the lock when
    /// nobody waits) and by stats.
    waiting: AtomicUsize,
    /// Requests that had to wait, lifetime.
    queued: AtomicU64,
    /// Requests that waited the whole `timeouts.queue` in vain, lifetime.
    timed_out: AtomicU64,
}

/// A copy of a queue's counters, for stats and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub waiting: usize,
    pub queued: u64,
    pub timed_out: u64,
}

impl Queue {
    /// Calls `attempt` until it returns `Some`, sleeping between tries until a slot may have
    /// come free; gives up with `None` after `timeout`. `attempt` runs under the queue's lock,
    /// so it must not block.
    pub fn wait<T>(&self, timeout: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let _waiting = Waiting::enter(self);
        self.queued.fetch_add(1, Ordering::Relaxed);
        let mut wakeups = lock(&self.wakeups);
        loop {
            if let Some(found) = attempt() {
                return Some(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.timed_out.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let seen = *wakeups;
            wakeups = self
                .slot_freed
                .wait_timeout_while(wakeups, left, |now| *now == seen)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Wakes every waiter so that each tries again. Cheap when nobody waits.
    pub fn wake(&self) {
        // Pairs with the fence in `Waiting::enter`: either this sees the waiter counted, or
        // the waiter's next attempt sees the slot this caller just freed.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return;
        }
        *lock(&self.wakeups) += 1;
        self.slot_freed.notify_all();
    }

    pub fn stats(&self) -> QueueStats {
        QueueStats {
            waiting: self.waiting.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
        }
    }
}

/// Counts one waiter in `Queue::waiting` for as long as it lives.
struct Waiting<'a>(&'a Queue);

impl<'a> Waiting<'a> {
    fn enter(queue: &'a Queue) -> Waiting<'a> {
        queue.waiting.fetch_add(1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::SeqCst);
        Waiting(queue)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn a_free_slot_is_taken_at_once() {
        let queue = Queue::default();
        assert_eq!(queue.wait(Duration::from_secs(5), || Some(7)), Some(7));
        assert_eq!(queue.stats(), QueueStats { waiting: 0, queued: 1, timed_out: 0 });
    }

    #[test]
    fn gives_up_after_the_timeout() {
        let queue = Queue::default();
        let started = Instant::now();
        assert_eq!(queue.wait(Duration::from_millis(50), || None::<()>), None);
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(queue.stats(), QueueStats { waiting: 0, queued: 1, timed_out: 1 });
    }

    #[test]
    fn a_wake_up_lets_the_waiter_try_again() {
        let queue = Arc::new(Queue::default());
        let free = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (queue, free) = (Arc::clone(&queue), Arc::clone(&free));
            thread::spawn(move || queue.wait(Duration::from_secs(10), || free.load(Ordering::SeqCst).then_some(())))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while queue.stats().waiting == 0 {
            assert!(Instant::now() < deadline, "the waiter never started waiting");
            thread::yield_now();
        }
        let started = Instant::now();
        free.store(true, Ordering::SeqCst);
        queue.wake();
        assert_eq!(waiter.join().unwrap(), Some(()));
        assert!(started.elapsed() < Duration::from_secs(5), "the waiter slept through the wake-up");
    }
}
