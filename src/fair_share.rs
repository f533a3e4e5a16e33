//! Each client address's share of the workers (`limits.maxWorkersPerClient`): connections
//! from one address hold at most that many workers at once, counted from the moment one is
//! queued for a worker until its worker lets go of it. A connection over its address's share
//! waits here, in a queue of its address holding no worker, and is handed the share of the
//! next connection from its address to let go; other addresses never wait behind it. One that
//! waits longer than its deadline (`timeouts.queue`, as for a backend's queue) is let go with
//! an answer instead: the ticker calls [`FairShare::take_expired`] every second.
//!
//! `connection` enters and leaves; the admin API reads the counts. Knows connections only as
//! [`ShareWaiter`]s, so it depends on nothing above it.

use crate::lock;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A connection waiting for its address's share of the workers.
pub trait ShareWaiter: Send {
    /// Its share has come: queue it for a worker.
    fn take_turn(self: Box<Self>);
    /// Its deadline passed first: answer it and close.
    fn give_up(self: Box<Self>);
}

struct Waiting {
    waiter: Box<dyn ShareWaiter>,
    deadline: Instant,
}

#[derive(Default)]
pub struct FairShare {
    /// Addresses holding at least one share. Written by `enter` and `leave`.
    by_address: Mutex<HashMap<IpAddr, Held>>,
    /// Connections that had to wait for their share, since start.
    waited: AtomicU64,
    /// Connections let go because their wait passed its deadline, since start.
    gave_up: AtomicU64,
}

#[derive(Default)]
struct Held {
    /// Shares in use: connections queued for or held by a worker.
    holding: usize,
    /// Connections waiting for a share, oldest first.
    waiting: VecDeque<Waiting>,
}

impl FairShare {
    pub fn new() -> FairShare {
        FairShare::default()
    }

    /// Takes one of `share` for a connection from `client` and returns true, or, when the
    /// address holds all of its share, keeps the connection (made by `waiter`, only when
    /// needed, so the usual case allocates nothing) until a share comes or `deadline` passes,
    /// and returns false.
    pub fn enter(
        &self,
        client: IpAddr,
        share: usize,
        deadline: Instant,
        waiter: impl FnOnce() -> Box<dyn ShareWaiter>,
    ) -> bool {
        let mut by_address = lock(&self.by_address);
        let held = by_address.entry(client).or_default();
        if held.holding < share.max(1) {
            held.holding += 1;
            return true;
        }
        held.waiting.push_back(Waiting { waiter: waiter(), deadline });
        self.waited.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Gives back a share of `client`. When a connection from it is waiting, the share passes
    /// to it and it is returned, for the caller to start with [`ShareWaiter::take_turn`].
    pub fn leave(&self, client: IpAddr) -> Option<Box<dyn ShareWaiter>> {
        let mut by_address = lock(&self.by_address);
        let held = by_address.get_mut(&client)?;
        if let Some(next) = held.waiting.pop_front() {
            return Some(next.waiter);
        }
        held.holding -= 1;
        if held.holding == 0 {
            by_address.remove(&client);
        }
        None
    }

    /// Connections waiting for their address's share right now.
    pub fn waiting(&self) -> usize {
        lock(&self.by_address).values().map(|h| h.waiting.len()).sum()
    }

    /// Connections that had to wait for their address's share, since start.
    pub fn waited(&self) -> u64 {
        self.waited.load(Ordering::Relaxed)
    }

    /// Connections let go because their wait passed its deadline, since start.
    pub fn gave_up(&self) -> u64 {
        self.gave_up.load(Ordering::Relaxed)
    }

    /// Takes out the waiting connections whose deadline is before `now`, for the caller to
    /// answer with [`ShareWaiter::give_up`] (outside the lock).
    pub fn take_expired(&self, now: Instant) -> Vec<Box<dyn ShareWaiter>> {
        let mut expired = Vec::new();
        for held in lock(&self.by_address).values_mut() {
            let (late, kept): (VecDeque<Waiting>, VecDeque<Waiting>) =
                held.waiting.drain(..).partition(|w| w.deadline <= now);
            held.waiting = kept;
            expired.extend(late.into_iter().map(|w| w.waiter));
        }
        self.gave_up.fetch_add(expired.len() as u64, Ordering::Relaxed);
        expired
    }

    /// Drops every waiting connection (closing it); called when sluice stops.
    pub fn close_waiting(&self) {
        let waiting: Vec<Waiting> = lock(&self.by_address).values_mut().flat_map(|h| h.waiting.drain(..)).collect();
        drop(waiting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const SHARE: usize = 2;

    /// Counts the turns taken and the waits given up.
    #[derive(Default)]
    struct Counts {
        turns: AtomicUsize,
        given_up: AtomicUsize,
    }

    struct Guest(Arc<Counts>);

    impl ShareWaiter for Guest {
        fn take_turn(self: Box<Self>) {
            self.0.turns.fetch_add(1, Ordering::SeqCst);
        }
        fn give_up(self: Box<Self>) {
            self.0.given_up.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn guest(counts: &Arc<Counts>) -> impl FnOnce() -> Box<dyn ShareWaiter> {
        let counts = Arc::clone(counts);
        move || Box::new(Guest(counts))
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(600)
    }

    #[test]
    fn an_address_over_its_share_waits_while_others_enter() {
        let share = FairShare::new();
        let counts = Arc::new(Counts::default());
        assert!(share.enter(A, SHARE, later(), guest(&counts)));
        assert!(share.enter(A, SHARE, later(), guest(&counts)));
        assert!(!share.enter(A, SHARE, later(), guest(&counts)));
        assert!(!share.enter(A, SHARE, later(), guest(&counts)));
        assert!(share.enter(B, SHARE, later(), guest(&counts)), "another address is not held up");
        assert_eq!((share.waiting(), share.waited()), (2, 2));
        share.leave(A).expect("the first waiting connection gets the share").take_turn();
        assert_eq!(counts.turns.load(Ordering::SeqCst), 1);
        share.leave(A).expect("then the second").take_turn();
        assert_eq!(share.waiting(), 0);
        assert!(share.leave(A).is_none());
        assert!(share.leave(A).is_none());
        assert!(share.enter(A, SHARE, later(), guest(&counts)), "the share is free again");
        assert_eq!(counts.turns.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_wait_past_its_deadline_is_given_up_and_the_others_keep_their_places() {
        let share = FairShare::new();
        let counts = Arc::new(Counts::default());
        let now = Instant::now();
        assert!(share.enter(A, 1, later(), guest(&counts)));
        assert!(!share.enter(A, 1, now + Duration::from_secs(1), guest(&counts)));
        assert!(!share.enter(A, 1, now + Duration::from_secs(60), guest(&counts)));
        assert!(share.take_expired(now).is_empty(), "nothing is late yet");
        let late = share.take_expired(now + Duration::from_secs(2));
        assert_eq!((late.len(), share.waiting(), share.gave_up()), (1, 1, 1));
        late.into_iter().for_each(|w| w.give_up());
        assert_eq!(counts.given_up.load(Ordering::SeqCst), 1);
        share.leave(A).expect("the one still waiting gets the share").take_turn();
        assert_eq!(counts.turns.load(Ordering::SeqCst), 1);
        assert!(share.leave(A).is_none());
        assert!(share.enter(A, 1, later(), guest(&counts)), "the share is free again");
    }

    #[test]
    fn stopping_drops_the_waiting_connections() {
        let share = FairShare::new();
        let counts = Arc::new(Counts::default());
        assert!(share.enter(A, 1, later(), guest(&counts)));
        assert!(!share.enter(A, 1, later(), guest(&counts)));
        share.close_waiting();
        assert_eq!(share.waiting(), 0);
        assert!(share.leave(A).is_none());
        assert_eq!(counts.turns.load(Ordering::SeqCst), 0);
    }
}
