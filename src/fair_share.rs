//! Each client address's share of the workers (`limits.maxWorkersPerClient`): connections
//! from one address hold at most that many workers at once, counted from the moment one is
//! queued for a worker until its worker lets go of it. A connection over its address's share
//! waits here, in a queue of its address holding no worker, and is handed the share of the
//! next connection from its address to let go; other addresses never wait behind it.
//!
//! `connection` enters and leaves; the admin API reads the counts. Knows connections only as
//! a job to run when their turn comes, so it depends on nothing above it.

use crate::lock;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What to run when a waiting connection gets its share: queue it for a worker.
pub type Turn = Box<dyn FnOnce() + Send>;

#[derive(Default)]
pub struct FairShare {
    /// Addresses holding at least one share. Written by `enter` and `leave`.
    by_address: Mutex<HashMap<IpAddr, Held>>,
    /// Connections that had to wait for their share, since start.
    waited: AtomicU64,
}

#[derive(Default)]
struct Held {
    /// Shares in use: connections queued for or held by a worker.
    holding: usize,
    /// Connections waiting for a share, oldest first.
    waiting: VecDeque<Turn>,
}

impl FairShare {
    pub fn new() -> FairShare {
        FairShare::default()
    }

    /// Takes one of `share` for a connection from `client` and returns true, or, when the
    /// address holds all of its share, keeps the connection's `turn` for later and returns false.
    /// `turn` is only made when needed, so the usual case allocates nothing.
    pub fn enter(&self, client: IpAddr, share: usize, turn: impl FnOnce() -> Turn) -> bool {
        let mut by_address = lock(&self.by_address);
        let held = by_address.entry(client).or_default();
        if held.holding < share.max(1) {
            held.holding += 1;
            return true;
        }
        held.waiting.push_back(turn());
        self.waited.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Gives back a share of `client`. When a connection from it is waiting, the share passes
    /// to it and its turn is returned, for the caller to run.
    pub fn leave(&self, client: IpAddr) -> Option<Turn> {
        let mut by_address = lock(&self.by_address);
        let held = by_address.get_mut(&client)?;
        if let Some(next) = held.waiting.pop_front() {
            return Some(next);
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

    /// Drops every waiting connection (closing it); called when sluice stops.
    pub fn close_waiting(&self) {
        let waiting: Vec<Turn> = lock(&self.by_address).values_mut().flat_map(|h| h.waiting.drain(..)).collect();
        drop(waiting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const SHARE: usize = 2;

    fn counting_turn(runs: &Arc<AtomicUsize>) -> impl FnOnce() -> Turn {
        let runs = Arc::clone(runs);
        move || {
            Box::new(move || {
                runs.fetch_add(1, Ordering::SeqCst);
            })
        }
    }

    #[test]
    fn an_address_over_its_share_waits_while_others_enter() {
        let share = FairShare::new();
        let runs = Arc::new(AtomicUsize::new(0));
        assert!(share.enter(A, SHARE, counting_turn(&runs)));
        assert!(share.enter(A, SHARE, counting_turn(&runs)));
        assert!(!share.enter(A, SHARE, counting_turn(&runs)));
        assert!(!share.enter(A, SHARE, counting_turn(&runs)));
        assert!(share.enter(B, SHARE, counting_turn(&runs)), "another address is not held up");
        assert_eq!((share.waiting(), share.waited()), (2, 2));
        share.leave(A).expect("the first waiting connection gets the share")();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        share.leave(A).expect("then the second")();
        assert_eq!(share.waiting(), 0);
        assert!(share.leave(A).is_none());
        assert!(share.leave(A).is_none());
        assert!(share.enter(A, SHARE, counting_turn(&runs)), "the share is free again");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn stopping_drops_the_waiting_connections() {
        let share = FairShare::new();
        let runs = Arc::new(AtomicUsize::new(0));
        assert!(share.enter(A, 1, counting_turn(&runs)));
        assert!(!share.enter(A, 1, counting_turn(&runs)));
        share.close_waiting();
        assert_eq!(share.waiting(), 0);
        assert!(share.leave(A).is_none());
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }
}
