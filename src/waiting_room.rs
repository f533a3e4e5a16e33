//! The waiting room: client connections with nothing to do yet (between requests, or part
//! way through a slow head) wait here, in one epoll set watched by one thread, instead of each
//! holding a worker. When one becomes readable it goes back to the workers; when its time is
//! up it is closed (with `408` if a head had begun, or if it never sent one).
//!
//! Workers park connections only while most of them are busy (see `Runtime::should_park`),
//! so with few clients every exchange stays on the plain blocking path. Exchanges themselves
//! always run on workers with blocking I/O; nothing here reads or writes a request.

use crate::connection::{self, ClientConn};
use crate::http::error::HttpError;
use crate::lock;
use crate::runtime::Runtime;
use crate::sys::Epoll;
use log::{debug, warn};
use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How often parked connections are checked for expiry, and the longest epoll wait.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

pub struct WaitingRoom {
    epoll: Epoll,
    /// Parked connections by token. Workers insert (park); the waiting-room thread removes
    /// (wake, expire, stop).
    parked: Mutex<HashMap<u64, Parked>>,
    next_token: AtomicU64,
}

struct Parked {
    conn: ClientConn,
    /// When to give up on it.
    expires: Instant,
}

impl WaitingRoom {
    pub fn new() -> io::Result<WaitingRoom> {
        Ok(WaitingRoom { epoll: Epoll::new()?, parked: Mutex::new(HashMap::new()), next_token: AtomicU64::new(0) })
    }

    /// Parks `conn` until it is readable or `expires`.
    pub fn park(&self, conn: ClientConn, expires: Instant) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let fd = conn.stream.as_raw_fd();
        lock(&self.parked).insert(token, Parked { conn, expires });
        if let Err(e) = self.epoll.add(fd, token) {
            warn!("cannot park a connection: {e}");
            lock(&self.parked).remove(&token);
        }
    }

    pub fn parked_count(&self) -> usize {
        lock(&self.parked).len()
    }

    /// Closes every parked connection; called once sluice is stopping.
    fn close_all(&self) {
        let all: Vec<Parked> = lock(&self.parked).drain().map(|(_, p)| p).collect();
        drop(all);
    }

    fn take(&self, token: u64) -> Option<ClientConn> {
        let parked = lock(&self.parked).remove(&token)?;
        let _ = self.epoll.remove(parked.conn.stream.as_raw_fd());
        Some(parked.conn)
    }

    fn take_expired(&self, now: Instant) -> Vec<ClientConn> {
        let mut parked = lock(&self.parked);
        let expired: Vec<u64> = parked.iter().filter(|(_, p)| p.expires <= now).map(|(&t, _)| t).collect();
        expired.into_iter().filter_map(|t| parked.remove(&t)).map(|p| p.conn).collect()
    }
}

pub fn spawn(runtime: Arc<Runtime>) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name("sluice-waiting-room".into()).spawn(move || run(&runtime))
}

fn run(runtime: &Arc<Runtime>) {
    let room = &runtime.waiting_room;
    let mut ready = Vec::new();
    let mut last_sweep = Instant::now();
    while !runtime.is_stopping() {
        ready.clear();
        if let Err(e) = room.epoll.wait(&mut ready, SWEEP_EVERY) {
            warn!("waiting room: epoll failed: {e}");
            thread::sleep(SWEEP_EVERY);
        }
        for &token in &ready {
            if let Some(conn) = room.take(token) {
                connection::dispatch(runtime, conn, true);
            }
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            for conn in room.take_expired(last_sweep) {
                expire(conn);
            }
        }
    }
    room.close_all();
}

/// Closes a connection whose wait is over: a head that began (or a first one that never
/// came) gets `408`, an idle keep-alive connection just closes.
fn expire(conn: ClientConn) {
    if conn.is_waiting_for_head() {
        debug!("{}: request head not received in time", conn.peer);
        let _ = conn.stream.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = (&conn.stream).write_all(&HttpError::HeaderTimeout.response());
    }
}
