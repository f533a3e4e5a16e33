//! A backend's live state: its address, health and drain flags, in-flight and lifetime
//! counters, and the idle keep-alive connections kept for reuse.
//!
//! A new connection opens as its pool says ([`Opening`]): with a PROXY protocol header
//! (`sendProxy`) and then TLS (`https://`). A connection that opened with a client's header
//! is reused only for that client address (and listener address), since the backend took
//! the header as the truth about every request on it.
//!
//! Shared by every worker through `Arc<Backend>`. Workers write the counters (through
//! [`InFlight`]), the idle connections and the run of traffic failures; health changes (from
//! the health thread's probes, or from workers when traffic fails) go through
//! [`Backend::change_health`]; reload and the admin API write `draining`. No lock here is held
//! while connecting, reading or writing.
//!
//! A backend with `maxConnections` wakes the queues of its pools whenever one of its slots
//! comes free, so requests waiting there try again (see `queue`).

use crate::config::{ServerConfig, Timeouts};
use crate::health::state::{Health, HealthChange, HealthState};
use crate::lock;
use crate::net;
use crate::ops::metrics::BackendMetrics;
use crate::proxy_protocol::{self, Addresses, ProxyVersion};
use crate::queue::Queue;
use crate::sys;
use crate::transport::{BackendTransport, Transport};
use rustls::ClientConfig;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub struct Backend {
    pub config: ServerConfig,
    /// True while `health` says up; written only under the `health` lock, read by every pick.
    healthy: AtomicBool,
    /// Set when the backend should get no new exchanges; read by every pick.
    draining: AtomicBool,
    /// Exchanges in flight; changed only through [`InFlight`]. Shared with the backend this
    /// one was carried over from (and to), so that limits and removals count the exchanges
    /// still finishing on the older one.
    active: Arc<AtomicUsize>,
    /// Exchanges started, lifetime.
    requests: AtomicU64,
    /// Failed connects and broken responses, lifetime.
    failures: AtomicU64,
    /// Traffic failures in a row (refused, timed out, reset before a response); written by
    /// workers, set back to 0 by any response and when the backend comes back up.
    traffic_failures: AtomicU32,
    /// New TCP connections opened to this backend, lifetime.
    connections_opened: AtomicU64,
    /// Index into `config.addrs` of the address that last accepted a connection.
    preferred_addr: AtomicUsize,
    /// Kept-alive connections waiting for reuse, newest last.
    idle: Mutex<Vec<IdleConnection>>,
    /// Up, down or unknown, with the run of probe results; changed only through
    /// [`Backend::change_health`], by the health thread's probes and by workers.
    health: Mutex<HealthState>,
    /// Exchanges answered and probes run, by outcome; written by workers and the health thread.
    pub metrics: BackendMetrics,
    /// The queues of the pools this backend belongs to, woken when a slot may have come
    /// free. Written when a pool is built; read when an exchange ends or the backend returns.
    queues: Mutex<Vec<Weak<Queue>>>,
}

struct IdleConnection {
    stream: BackendTransport,
    since: Instant,
    /// Whom its PROXY header named, when it opened with one.
    client: Option<ClientKey>,
}

/// The client address and listener address a PROXY header named.
type ClientKey = (IpAddr, SocketAddr);

/// How a new connection to a backend starts.
#[derive(Clone, Copy, Default)]
pub struct Opening<'a> {
    /// The pool's TLS client configuration, for an `https://` backend.
    pub tls: Option<&'a Arc<ClientConfig>>,
    /// The PROXY header to open with (`sendProxy`), naming the exchange's client.
    pub proxy: Option<(ProxyVersion, Addresses)>,
}

impl Opening<'_> {
    fn client(&self) -> Option<ClientKey> {
        self.proxy.map(|(_, a)| (a.source.ip(), a.destination))
    }
}

/// A connection to a backend for one exchange.
pub struct Upstream {
    pub stream: BackendTransport,
    /// True when it came from the idle set, so it may have been closed by the backend.
    pub reused: bool,
}

/// Counts one exchange as in flight for as long as it lives.
pub struct InFlight<'a>(&'a Backend);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        if self.0.config.max_connections.is_some() {
            self.0.wake_queues();
        }
    }
}

/// A copy of a backend's counters, for stats and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStats {
    pub url: String,
    pub healthy: bool,
    pub draining: bool,
    pub weight: u32,
    pub active: usize,
    pub requests: u64,
    pub failures: u64,
    pub connections_opened: u64,
}

impl Backend {
    /// A backend present when sluice starts: up, so traffic flows from the first moment.
    pub fn new(config: ServerConfig) -> Backend {
        Backend::with_health(config, HealthState::up())
    }

    /// A backend added while running (by reload or the admin API): unknown, so it gets no
    /// traffic until its first probe passes.
    pub fn joining(config: ServerConfig) -> Backend {
        Backend::with_health(config, HealthState::unknown())
    }

    fn with_health(config: ServerConfig, health: HealthState) -> Backend {
        Backend {
            config,
            healthy: AtomicBool::new(health.health == Health::Up),
            draining: AtomicBool::new(false),
            active: Arc::new(AtomicUsize::new(0)),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            traffic_failures: AtomicU32::new(0),
            connections_opened: AtomicU64::new(0),
            preferred_addr: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            health: Mutex::new(health),
            metrics: BackendMetrics::default(),
            queues: Mutex::new(Vec::new()),
        }
    }

    /// The same server under new settings (a reload changed its weight, limit or
    /// addresses): it keeps the health, drain flag and counters of `previous`, and its idle
    /// connections if the addresses stayed. Exchanges in flight on `previous` finish there,
    /// and the two share their count of exchanges in flight, so `maxConnections` and a
    /// pending removal see them; the metrics (latency histograms, probe counts) start afresh.
    pub fn carried_over(config: ServerConfig, previous: &Backend) -> Backend {
        let mut backend = Backend::with_health(config, *lock(&previous.health));
        backend.active = Arc::clone(&previous.active);
        backend.draining.store(previous.is_draining(), Ordering::Relaxed);
        let counters = [
            (&backend.requests, &previous.requests),
            (&backend.failures, &previous.failures),
            (&backend.connections_opened, &previous.connections_opened),
        ];
        for (new, old) in counters {
            new.store(old.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        backend.traffic_failures.store(previous.traffic_failures.load(Ordering::Relaxed), Ordering::Relaxed);
        if backend.config.addrs == previous.config.addrs {
            *lock(&backend.idle) = std::mem::take(&mut *lock(&previous.idle));
        }
        backend
    }

    /// The backend for `server` in a new set: on the first start a fresh one that is up;
    /// when replacing the `running` set, the running one with the same URL (carried over if
    /// its settings changed), or else a new one that joins after a passing probe.
    pub fn reuse_or_join(server: &ServerConfig, running: Option<&[Arc<Backend>]>) -> Arc<Backend> {
        let Some(running) = running else {
            return Arc::new(Backend::new(server.clone()));
        };
        match running.iter().find(|b| b.config.url == server.url) {
            Some(same) if same.config == *server => Arc::clone(same),
            Some(changed) => Arc::new(Backend::carried_over(server.clone(), changed)),
            None => Arc::new(Backend::joining(server.clone())),
        }
    }

    pub fn url(&self) -> &str {
        &self.config.url
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Up, down, or unknown (added while running and not yet probed).
    pub fn health(&self) -> Health {
        lock(&self.health).health
    }

    /// Forces the backend up or down, outside the health checks (tests, operators).
    pub fn set_healthy(&self, healthy: bool) {
        self.change_health(|state| state.force(healthy));
    }

    /// Applies `update` to the health state and, when it reports a change, makes the
    /// `healthy` flag follow it: going down empties the idle connections; coming up clears
    /// the run of traffic failures and wakes requests queued for a slot. The flag changes
    /// under the same lock as the state, so the two never disagree.
    pub fn change_health(&self, update: impl FnOnce(&mut HealthState) -> Option<HealthChange>) -> Option<HealthChange> {
        let mut state = lock(&self.health);
        let change = update(&mut state)?;
        self.healthy.store(change.to == Health::Up, Ordering::Relaxed);
        drop(state);
        if change.to == Health::Up {
            self.traffic_failures.store(0, Ordering::Relaxed);
            self.wake_queues();
        } else {
            let idle = std::mem::take(&mut *lock(&self.idle));
            drop(idle);
        }
        Some(change)
    }

    /// Counts one failure on real traffic; returns how many have come in a row.
    pub fn count_traffic_failure(&self) -> u32 {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.traffic_failures.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }

    /// An answer came back (a response head, or a TCP connection opened in tcp mode): the
    /// run of traffic failures is over.
    pub fn count_success(&self) {
        if self.traffic_failures.load(Ordering::Relaxed) != 0 {
            self.traffic_failures.store(0, Ordering::Relaxed);
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
        if !draining {
            self.wake_queues();
        }
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Healthy, not draining, weighted in, and under its connection limit.
    pub fn is_available(&self) -> bool {
        self.is_in_service() && self.has_room()
    }

    /// Healthy, not draining and weighted in: it may be picked once it has room.
    pub fn is_in_service(&self) -> bool {
        self.is_healthy() && !self.is_draining() && self.config.weight > 0
    }

    /// Under its `maxConnections`, if it has one.
    pub fn has_room(&self) -> bool {
        self.config.max_connections.is_none_or(|max| self.active() < max)
    }

    /// Counts an exchange in flight without looking at the limit; [`Backend::try_start_exchange`]
    /// is the way that keeps `maxConnections`.
    pub fn start_exchange(&self) -> InFlight<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Counts an exchange in flight if the backend is under its `maxConnections`; checking
    /// and counting are one atomic step, so concurrent picks never pass the limit.
    pub fn try_start_exchange(&self) -> Option<InFlight<'_>> {
        let max = self.config.max_connections.unwrap_or(usize::MAX);
        self.active.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).ok()?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(self))
    }

    /// Registers a pool's queue to be woken when this backend may have a free slot.
    pub fn watch(&self, queue: &Arc<Queue>) {
        let mut queues = lock(&self.queues);
        queues.retain(|q| q.strong_count() > 0);
        queues.push(Arc::downgrade(queue));
    }

    fn wake_queues(&self) {
        for queue in lock(&self.queues).iter().filter_map(Weak::upgrade) {
            queue.wake();
        }
    }

    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> BackendStats {
        BackendStats {
            url: self.config.url.clone(),
            healthy: self.is_healthy(),
            draining: self.is_draining(),
            weight: self.config.weight,
            active: self.active(),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            connections_opened: self.connections_opened.load(Ordering::Relaxed),
        }
    }

    /// A connection for one exchange: the newest idle one still young enough that opened
    /// the same way and checked to be open with nothing waiting on it (bytes a backend sent
    /// unasked would be read as the next response), or a new one (see [`Backend::open`]).
    pub fn connection(&self, timeouts: &Timeouts, opening: &Opening) -> io::Result<Upstream> {
        while let Some(idle) = self.take_idle(timeouts.backend_idle, opening.client()) {
            if is_open(idle.socket()) {
                return Ok(Upstream { stream: idle, reused: true });
            }
        }
        self.open(timeouts, opening).map(|stream| Upstream { stream, reused: false })
    }

    /// Opens a new connection for exchanges: plain, or for an `https://` backend with its
    /// TLS handshake done (with the pool's client configuration), so that a backend whose
    /// certificate is not trusted fails here, before anything is sent. The PROXY header,
    /// when the pool sends one, goes first.
    pub fn open(&self, timeouts: &Timeouts, opening: &Opening) -> io::Result<BackendTransport> {
        let socket = self.connect(timeouts)?;
        if let Some((version, addresses)) = opening.proxy {
            send_proxy_header(&socket, version, Some(addresses))?;
        }
        if !self.config.tls {
            return Ok(Transport::Plain(socket));
        }
        let config = opening.tls.ok_or_else(|| io::Error::other("https:// backends need an http pool"))?;
        let mut transport = Transport::tls(crate::tls::backend::connection(config, &self.config)?, socket);
        transport.complete_handshake()?;
        Ok(transport)
    }

    /// Opens a new connection, trying the address that worked last first.
    pub fn connect(&self, timeouts: &Timeouts) -> io::Result<TcpStream> {
        let first = self.preferred_addr.load(Ordering::Relaxed);
        let (stream, index) = net::connect_any(&self.config.addrs, first, timeouts.connect)?;
        self.preferred_addr.store(index, Ordering::Relaxed);
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeouts.backend))?;
        stream.set_write_timeout(Some(timeouts.backend))?;
        Ok(stream)
    }

    /// How many idle connections wait for reuse.
    pub fn idle_count(&self) -> usize {
        lock(&self.idle).len()
    }

    /// Keeps `stream`, opened as `opening` says, for reuse unless the idle set is full.
    pub fn put_idle(&self, stream: BackendTransport, max_idle: usize, opening: &Opening) {
        let mut idle = lock(&self.idle);
        if idle.len() < max_idle && self.is_healthy() {
            idle.push(IdleConnection { stream, since: Instant::now(), client: opening.client() });
        }
    }

    /// The newest idle connection that opened for `client`, unless it is older than `max_age`.
    fn take_idle(&self, max_age: Duration, client: Option<ClientKey>) -> Option<BackendTransport> {
        let mut idle = lock(&self.idle);
        let newest = idle.iter().rposition(|c| c.client == client)?;
        if idle[newest].since.elapsed() < max_age {
            return Some(idle.remove(newest).stream);
        }
        // The newest that fits is too old, so all before it are: close them (outside the lock).
        let stale: Vec<IdleConnection> = idle.drain(..=newest).collect();
        drop(idle);
        drop(stale);
        None
    }

    /// Closes idle connections older than `max_age`; called by the health thread.
    pub fn close_stale_idle(&self, max_age: Duration) {
        let mut idle = lock(&self.idle);
        let keep_from = idle.iter().position(|c| c.since.elapsed() < max_age).unwrap_or(idle.len());
        let stale: Vec<IdleConnection> = idle.drain(..keep_from).collect();
        drop(idle);
        drop(stale);
    }
}

/// Writes a PROXY protocol header in `version` for `addresses` (`None`: one that names no
/// client, as health probes send) on a new connection, before any other byte.
pub fn send_proxy_header(
    mut socket: &TcpStream,
    version: ProxyVersion,
    addresses: Option<Addresses>,
) -> io::Result<()> {
    let mut header = Vec::with_capacity(64);
    proxy_protocol::encode(version, addresses, &mut header);
    socket.write_all(&header)
}

/// A one-byte non-blocking peek: an idle connection the backend closed reads as EOF, and one
/// with unexpected bytes waiting is no use either.
pub fn is_open(stream: &TcpStream) -> bool {
    matches!(sys::peek_now(stream), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::server_from_url;

    #[test]
    fn a_carried_over_backend_counts_the_exchanges_still_finishing_on_the_old_one() {
        let mut config = server_from_url("http://127.0.0.1:1").unwrap();
        config.max_connections = Some(1);
        let old = Backend::new(config.clone());
        let in_flight = old.try_start_exchange().expect("a slot");
        config.weight = 5;
        let new = Backend::carried_over(config, &old);
        assert_eq!(new.active(), 1);
        assert!(new.try_start_exchange().is_none(), "maxConnections passed across a reload");
        drop(in_flight);
        assert_eq!(new.active(), 0);
    }
}
