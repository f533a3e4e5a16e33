//! The live state every thread shares: the current configuration and pools (one snapshot,
//! replaced whole by a reload or an admin change), the listening sockets, the worker pool and
//! the waiting room, the stop flag, the open client connections, the process-wide metrics,
//! the access log and the alerts.
//!
//! Connections name their listener by its bound address: each snapshot lists the bound
//! address of each of its listeners, and a listener a reload removed keeps the last snapshot
//! that had it (its connections drain with it).
//!
//! Workers read the snapshot once per request (clone an `Arc`, let go of the lock). The
//! acceptor counts connections in; each connection counts itself out when it closes. Whoever
//! changes the snapshot goes through [`Runtime::change_state`], one change at a time.

use crate::acme::challenges::Challenges;
use crate::acme::status::CertificateStatuses;
use crate::config::{AccessLogConfig, Limits};
use crate::fair_share::FairShare;
use crate::listeners::Listeners;
use crate::lock;
use crate::ops::access_log::AccessLog;
use crate::ops::alerts::Alerts;
use crate::ops::metrics::Metrics;
use crate::waiting_room::WaitingRoom;
mod state;

pub use state::State;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use threadpool::ThreadPool;

/// Stack size of each worker thread. The request path needs a few KiB of stack (the largest
/// frame is httparse's 100-field array, 3.2 KiB); this leaves a wide margin, and only the
/// pages a thread touches become resident (about 8 KiB a thread).
pub const WORKER_STACK_BYTES: usize = 128 * 1024;

pub struct Runtime {
    /// The current snapshot; replaced whole on reload.
    state: Mutex<Arc<State>>,
    /// Held while a new snapshot is built from the current one, so that two changes (a reload
    /// and an admin request) never build on the same snapshot and lose one another.
    changing: Mutex<()>,
    /// The listening sockets and their acceptors.
    pub listeners: Listeners,
    /// Listeners a reload removed, by bound address, with the last snapshot that had them:
    /// their connections finish with it.
    retired: Mutex<Vec<(SocketAddr, Arc<State>)>>,
    /// Set once a reload first removes a listener, so that asking whether a listener drains
    /// costs one atomic load until then.
    any_retired: AtomicBool,
    /// The fixed worker pool every connection is served on.
    pub workers: ThreadPool,
    /// Where idle client connections wait while most workers are busy.
    pub waiting_room: Arc<WaitingRoom>,
    /// Each client address's share of the workers, and the connections waiting for it.
    pub fair_share: FairShare,
    /// Whether connections may be parked at all (`waitingRoom` in the configuration).
    parking_enabled: bool,
    /// Connections a worker is serving right now; changed through [`Serving`].
    serving: AtomicUsize,
    /// Set once when sluice begins to stop; read by the acceptors and every connection.
    stopping: AtomicBool,
    /// Woken when stopping and when the snapshot is replaced, so the health thread notices
    /// both at once.
    wake: (Mutex<Wake>, Condvar),
    /// Events about backends going down and up; the webhook changes on reload.
    pub alerts: Alerts,
    /// Client connections accepted and not yet closed, queued ones included.
    open_connections: AtomicUsize,
    /// The same, by client address; written by the acceptor (in) and `ClientTicket` (out).
    connections_per_client: Mutex<HashMap<IpAddr, usize>>,
    /// Accepted connections queued for a worker.
    waiting_connections: AtomicUsize,
    /// Connections refused by `limits.maxConnections` or `limits.maxConnectionsPerClient`.
    pub rejected_connections: AtomicU64,
    pub started: Instant,
    /// Written by workers as exchanges end; read by the admin API.
    pub metrics: Metrics,
    /// Written by workers as exchanges end; reopened on reload.
    pub access_log: AccessLog,
    /// The ACME challenges being validated: written by the renewal thread, read by workers
    /// on http listeners (HTTP-01) and by the TLS listeners' resolvers (TLS-ALPN-01).
    pub challenges: Arc<Challenges>,
    /// What each automatic certificate is doing: written by the renewal thread, read by
    /// the admin API.
    pub certificates: CertificateStatuses,
}

#[derive(Default)]
struct Wake {
    stopping: bool,
    /// Counts snapshot replacements.
    generation: u64,
}

/// A connection counted open, for its whole life; dropping it counts the connection closed.
pub struct ClientTicket {
    runtime: Arc<Runtime>,
    client: IpAddr,
}

/// Counts one connection as held by a worker for as long as it lives.
pub struct Serving<'a>(&'a Runtime);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Runtime {
    pub fn new(state: State, alerts: Alerts, listeners: Listeners) -> io::Result<Runtime> {
        let workers = threadpool::Builder::new()
            .num_threads(state.config.workers)
            .thread_name("sluice-worker".into())
            .thread_stack_size(WORKER_STACK_BYTES)
            .build();
        Ok(Runtime {
            challenges: Arc::clone(&state.tls.challenges),
            parking_enabled: state.config.waiting_room,
            state: Mutex::new(Arc::new(state)),
            changing: Mutex::new(()),
            listeners,
            retired: Mutex::new(Vec::new()),
            any_retired: AtomicBool::new(false),
            workers,
            waiting_room: Arc::new(WaitingRoom::new()?),
            fair_share: FairShare::new(),
            serving: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            wake: (Mutex::new(Wake::default()), Condvar::new()),
            alerts,
            open_connections: AtomicUsize::new(0),
            connections_per_client: Mutex::new(HashMap::new()),
            waiting_connections: AtomicUsize::new(0),
            rejected_connections: AtomicU64::new(0),
            started: Instant::now(),
            metrics: Metrics::default(),
            access_log: AccessLog::stderr(),
            certificates: CertificateStatuses::default(),
        })
    }

    pub fn start_serving(&self) -> Serving<'_> {
        self.serving.fetch_add(1, Ordering::SeqCst);
        Serving(self)
    }

    /// Whether a connection with nothing to read should wait in the waiting room rather than
    /// on its worker: while other connections wait for a worker (so every client gets its
    /// turn), or while more than three quarters of the workers hold a connection.
    pub fn should_park(&self) -> bool {
        self.parking_enabled
            && (self.waiting_connections() > 0
                || self.serving.load(Ordering::Relaxed) * 4 > self.workers.max_count() * 3)
    }

    /// How many workers one client address may hold (`limits.maxWorkersPerClient`).
    pub fn worker_share(&self) -> usize {
        self.state().config.limits.max_workers_per_client.of(self.workers.max_count())
    }

    /// Whether connections may be parked at all (`waitingRoom`).
    pub fn may_park(&self) -> bool {
        self.parking_enabled
    }

    /// Without the waiting room, the only fair answer to connections queued for a worker is
    /// to stop offering keep-alive until the queue is empty.
    pub fn should_close_idle(&self) -> bool {
        !self.parking_enabled && self.waiting_connections() > 0
    }

    pub fn state(&self) -> Arc<State> {
        Arc::clone(&lock(&self.state))
    }

    /// Installs a new snapshot and wakes the health thread, so new backends are probed at
    /// once. Changes built from the current snapshot go through [`Runtime::change_state`].
    pub fn replace_state(&self, state: State) {
        *lock(&self.state) = Arc::new(state);
        lock(&self.wake.0).generation += 1;
        self.wake.1.notify_all();
    }

    /// Builds a new snapshot from the current one with `change` and puts it in place, unless
    /// `change` fails. Changes are made one at a time; readers are never held up.
    pub fn change_state<T, E>(&self, change: impl FnOnce(&State) -> Result<(State, T), E>) -> Result<T, E> {
        self.change_state_then(change, |result| result)
    }

    /// As [`Runtime::change_state`], then runs `after` on the result once the new snapshot is
    /// in place, before the next change may begin (a reload starts and stops listeners there).
    pub fn change_state_then<T, E, R>(
        &self,
        change: impl FnOnce(&State) -> Result<(State, T), E>,
        after: impl FnOnce(T) -> R,
    ) -> Result<R, E> {
        let _one_at_a_time = lock(&self.changing);
        let (state, result) = change(&self.state())?;
        self.replace_state(state);
        Ok(after(result))
    }

    /// Connections a worker is serving right now (not those queued or parked).
    pub fn busy_workers(&self) -> usize {
        self.serving.load(Ordering::Relaxed)
    }

    /// Opens the access log file `config` names, if any, in place of the current one.
    pub fn reopen_access_log(&self, config: &AccessLogConfig) -> std::io::Result<()> {
        self.access_log.reopen(config)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Starts draining: every connection's next response says `Connection: close`, and
    /// connections that stay quiet close (see `connection`). The caller stops the acceptors.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        lock(&self.wake.0).stopping = true;
        self.wake.1.notify_all();
    }

    /// The snapshot a connection of the listener bound to `local` is served with, and the
    /// listener's index in it: the current one, or the last one that had the listener when a
    /// reload removed it. `None` for an address no listener ever had.
    pub fn listener_state(&self, local: SocketAddr) -> Option<(Arc<State>, usize)> {
        let state = self.state();
        if let Some(index) = state.listener_at(local) {
            return Some((state, index));
        }
        let retired = lock(&self.retired);
        let (_, state) = retired.iter().find(|(addr, _)| *addr == local)?;
        Some((Arc::clone(state), state.listener_at(local)?))
    }

    /// Whether connections of the listener bound to `local` are draining: sluice is
    /// stopping, or a reload removed the listener.
    pub fn is_draining(&self, local: SocketAddr) -> bool {
        self.is_stopping() || (self.any_retired.load(Ordering::Relaxed) && !self.state().bound.contains(&local))
    }

    /// Keeps `state` for the connections of the listeners bound to `removed`, which the next
    /// snapshot no longer has; forgets any kept for the addresses `added` binds again.
    pub fn retire_listeners(&self, removed: &[SocketAddr], state: &Arc<State>, added: &[SocketAddr]) {
        if !removed.is_empty() {
            self.any_retired.store(true, Ordering::Relaxed);
        }
        let mut retired = lock(&self.retired);
        retired.retain(|(addr, _)| !removed.contains(addr) && !added.contains(addr));
        retired.extend(removed.iter().map(|&addr| (addr, Arc::clone(state))));
    }

    /// Sleeps for `duration` or until stopping begins; returns true if stopping.
    pub fn sleep_unless_stopping(&self, duration: Duration) -> bool {
        let wake = lock(&self.wake.0);
        let (wake, _) = self
            .wake
            .1
            .wait_timeout_while(wake, duration, |w| !w.stopping)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        wake.stopping
    }

    /// Sleeps for `duration`, or until stopping begins or the snapshot is replaced; returns
    /// true if stopping.
    pub fn sleep_until_change(&self, duration: Duration) -> bool {
        let wake = lock(&self.wake.0);
        let generation = wake.generation;
        let (wake, _) = self
            .wake
            .1
            .wait_timeout_while(wake, duration, |w| !w.stopping && w.generation == generation)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        wake.stopping
    }

    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::SeqCst)
    }

    /// Counts an accepted connection from `client` in, unless that would pass one of the
    /// connection limits; then says which. With `per_client` false only the total is checked
    /// (a listener with `acceptProxy` checks the client's own limit once its header says who
    /// it is: see [`ClientTicket::change_client`]).
    pub fn try_count_connection(&self, client: IpAddr, limits: &Limits, per_client: bool) -> Result<(), &'static str> {
        let max = limits.max_connections;
        let counted = self
            .open_connections
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| (open < max).then_some(open + 1));
        if counted.is_err() {
            self.rejected_connections.fetch_add(1, Ordering::Relaxed);
            return Err("limits.maxConnections");
        }
        let limit = if per_client { limits.max_connections_per_client } else { None };
        if !self.try_count_client(client, limit) {
            self.open_connections.fetch_sub(1, Ordering::SeqCst);
            return Err("limits.maxConnectionsPerClient");
        }
        Ok(())
    }

    /// Counts one more connection from `client` unless it already has `limit`.
    fn try_count_client(&self, client: IpAddr, limit: Option<usize>) -> bool {
        let mut per_client = lock(&self.connections_per_client);
        let from_client = per_client.entry(client).or_insert(0);
        if limit.is_some_and(|max| *from_client >= max) {
            if *from_client == 0 {
                per_client.remove(&client);
            }
            drop(per_client);
            self.rejected_connections.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *from_client += 1;
        true
    }

    fn uncount_client(&self, client: IpAddr) {
        let mut per_client = lock(&self.connections_per_client);
        if let Some(n) = per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                per_client.remove(&client);
            }
        }
    }

    pub fn waiting_connections(&self) -> usize {
        self.waiting_connections.load(Ordering::Relaxed)
    }

    /// Called by the acceptor as it queues a connection for the workers.
    pub fn connection_queued(&self) {
        self.waiting_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Called by a worker as it takes a queued connection.
    pub fn connection_dequeued(&self) {
        self.waiting_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts out a connection from `client` that was counted in.
    pub fn uncount_connection(&self, client: IpAddr) {
        self.open_connections.fetch_sub(1, Ordering::SeqCst);
        self.uncount_client(client);
    }

    /// Gives an accepted connection from `client`, already counted in, the ticket that
    /// counts it out when dropped.
    pub fn register_client(self: &Arc<Self>, client: IpAddr) -> ClientTicket {
        ClientTicket { runtime: Arc::clone(self), client }
    }
}

impl ClientTicket {
    /// The runtime the connection is registered with.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Counts the connection under `client` instead (the source its PROXY header names),
    /// unless that address already has `limit` connections; then it stays counted as it was.
    pub fn change_client(&mut self, client: IpAddr, limit: Option<usize>) -> Result<(), &'static str> {
        if !self.runtime.try_count_client(client, limit) {
            return Err("limits.maxConnectionsPerClient");
        }
        self.runtime.uncount_client(self.client);
        self.client = client;
        Ok(())
    }
}

impl Drop for ClientTicket {
    fn drop(&mut self) {
        self.runtime.uncount_connection(self.client);
    }
}
