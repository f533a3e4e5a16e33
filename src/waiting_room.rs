//! The waiting room: client connections with nothing to do yet (between requests, or part
//! way through a slow head) wait here, in one epoll set watched by one thread, instead of each
//! holding a worker. When one becomes readable it goes back to the workers; when its time is
//! up it is closed (with `408` if a head had begun, or if it never sent one).
//!
//! Workers park connections only while most of them are busy (see `Runtime::should_park`),
//! so with few clients every exchange stays on the plain blocking path. Exchanges themselves
//! always run on workers with blocking I/O; nothing here reads or writes a request.
//!
//! While sluice drains (stopping, handing over to a new process, or a listener removed by a
//! reload), a guest whose listener drains gets at most [`DRAIN_QUIET`] more to send its next
//! request; one that arrives is served (with `Connection: close`), one that does not is closed.
//!
//! The room knows its guests only as [`Waiter`]s: `connection` says what waking and expiring
//! mean for a client connection, so this file depends on nothing above it.

use crate::lock;
use crate::ops::log_summary;
use crate::sys::Epoll;
use log::warn;
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A connection waiting in the room for its next bytes.
pub trait Waiter: Send {
    /// The socket to watch for readability.
    fn fd(&self) -> RawFd;
    /// Bytes have arrived: hand the connection back to the workers.
    fn wake(self: Box<Self>);
    /// Its time is up: answer what it is owed and close it.
    fn expire(self: Box<Self>);
    /// Whether its listener is draining: then it waits at most [`DRAIN_QUIET`] more.
    fn is_draining(&self) -> bool;
}

/// How long a connection may stay quiet once its listener drains before it is closed. A
/// client that keeps its connection busy (a load generator, a browser loading a page) sends
/// its next request well within it and gets its answer with `Connection: close`.
pub const DRAIN_QUIET: Duration = Duration::from_secs(1);

/// How often parked connections are checked for expiry, and the longest epoll wait.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

pub struct WaitingRoom {
    epoll: Epoll,
    /// Parked connections by token. Workers insert (park); the waiting-room thread removes
    /// (wake, expire, stop).
    parked: Mutex<HashMap<u64, Parked>>,
    next_token: AtomicU64,
    /// Set once when sluice stops; the room's thread then closes every guest and ends.
    stopping: AtomicBool,
}

struct Parked {
    conn: Box<dyn Waiter>,
    /// When to give up on it.
    expires: Instant,
}

impl WaitingRoom {
    pub fn new() -> io::Result<WaitingRoom> {
        Ok(WaitingRoom {
            epoll: Epoll::new()?,
            parked: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        })
    }

    /// Parks `conn` until it is readable or `expires`.
    pub fn park(&self, conn: Box<dyn Waiter>, expires: Instant) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let fd = conn.fd();
        lock(&self.parked).insert(token, Parked { conn, expires });
        if let Err(e) = self.epoll.add(fd, token) {
            log_summary::PARK_FAILED.warn(format_args!("cannot park a connection: {e}"));
            lock(&self.parked).remove(&token);
        }
    }

    pub fn parked_count(&self) -> usize {
        lock(&self.parked).len()
    }

    /// Makes the room's thread close every parked connection and end.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Closes every parked connection; called once sluice is stopping.
    fn close_all(&self) {
        let all: Vec<Parked> = lock(&self.parked).drain().map(|(_, p)| p).collect();
        drop(all);
    }

    fn take(&self, token: u64) -> Option<Box<dyn Waiter>> {
        let parked = lock(&self.parked).remove(&token)?;
        let _ = self.epoll.remove(parked.conn.fd());
        Some(parked.conn)
    }

    fn take_expired(&self, now: Instant) -> Vec<Box<dyn Waiter>> {
        let mut parked = lock(&self.parked);
        for p in parked.values_mut() {
            if p.expires > now + DRAIN_QUIET && p.conn.is_draining() {
                p.expires = now + DRAIN_QUIET;
            }
        }
        let expired: Vec<u64> = parked.iter().filter(|(_, p)| p.expires <= now).map(|(&t, _)| t).collect();
        expired.into_iter().filter_map(|t| parked.remove(&t)).map(|p| p.conn).collect()
    }
}

/// Starts the room's thread: it hands readable connections back and closes expired ones
/// until [`WaitingRoom::stop`].
pub fn spawn(room: Arc<WaitingRoom>) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name("sluice-waiting-room".into()).spawn(move || run(&room))
}

fn run(room: &WaitingRoom) {
    let mut ready = Vec::new();
    let mut last_sweep = Instant::now();
    while !room.stopping.load(Ordering::SeqCst) {
        ready.clear();
        if let Err(e) = room.epoll.wait(&mut ready, SWEEP_EVERY) {
            warn!("waiting room: epoll failed: {e}");
            thread::sleep(SWEEP_EVERY);
        }
        for &token in &ready {
            if let Some(conn) = room.take(token) {
                conn.wake();
            }
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            for conn in room.take_expired(last_sweep) {
                conn.expire();
            }
        }
    }
    room.close_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// A guest that records how it left the room.
    struct Guest {
        socket: UnixStream,
        draining: Arc<AtomicBool>,
        expired: Arc<AtomicBool>,
    }

    impl Waiter for Guest {
        fn fd(&self) -> RawFd {
            self.socket.as_raw_fd()
        }
        fn wake(self: Box<Self>) {}
        fn expire(self: Box<Self>) {
            self.expired.store(true, Ordering::SeqCst);
        }
        fn is_draining(&self) -> bool {
            self.draining.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn a_quiet_guest_leaves_soon_after_its_listener_begins_to_drain() {
        let room = Arc::new(WaitingRoom::new().unwrap());
        let running = spawn(Arc::clone(&room)).unwrap();
        let (socket, _peer) = UnixStream::pair().unwrap();
        let (draining, expired) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let guest = Guest { socket, draining: Arc::clone(&draining), expired: Arc::clone(&expired) };
        room.park(Box::new(guest), Instant::now() + Duration::from_secs(600));
        thread::sleep(SWEEP_EVERY * 3);
        assert!(!expired.load(Ordering::SeqCst), "a guest whose listener does not drain stays");
        draining.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !expired.load(Ordering::SeqCst) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(expired.load(Ordering::SeqCst), "the draining guest was never let go");
        room.stop();
        running.join().unwrap();
    }
}
