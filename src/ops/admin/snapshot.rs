//! Everything the admin API reports, copied out of the runtime at one moment into plain
//! values, so that /stats, /metrics and the status page render the same numbers and can be
//! tested without a running balancer.
//!
//! Called by the admin handler for each read request. Reads atomics and the rate windows;
//! writes nothing.

use super::rates::{Recent, Windows};
use crate::acme::status::CertificateStatus;
use crate::backend::Backend;
use crate::balance::Kept;
use crate::config::Config;
use crate::edge::Reason;
use crate::ops::changes::{Place, RuntimeChanges};
use crate::ops::host;
use crate::ops::metrics::{ExchangeSnapshot, SlowClientsSnapshot};
use crate::runtime::{Runtime, State};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Snapshot {
    pub version: &'static str,
    pub uptime: Duration,
    /// Client connections open, queued and parked ones included.
    pub open_connections: usize,
    /// Idle client connections waiting in the waiting room, holding no worker.
    pub parked_connections: usize,
    pub workers: Workers,
    pub rejected_connections: u64,
    /// What was done about slow clients and clients over their share of the workers.
    pub slow_clients: SlowClients,
    pub retries: u64,
    /// Response body bytes relayed by splice.
    pub spliced_bytes: u64,
    /// PROXY headers refused: malformed, and not received in time.
    pub proxy_headers_refused: (u64, u64),
    /// Exchanges sluice answered itself.
    pub own_answers: ExchangeSnapshot,
    pub pools: Vec<PoolSnapshot>,
    /// Routes with edge controls, in the order of the listeners and their routes.
    pub edges: Vec<EdgeSnapshot>,
    pub tls: TlsSnapshot,
    pub host: host::Sample,
}

/// TLS handshakes with clients, and the certificates TLS listeners serve.
pub struct TlsSnapshot {
    pub handshakes: u64,
    pub handshake_failures: u64,
    pub certificates: Vec<CertificateSnapshot>,
    /// Each automatic (ACME) certificate with the listeners that serve it.
    pub acme: Vec<(CertificateStatus, Vec<String>)>,
}

pub struct CertificateSnapshot {
    /// The listener's address.
    pub listener: String,
    /// The certificate file.
    pub cert: String,
    pub names: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

fn tls_snapshot(runtime: &Runtime, state: &State) -> TlsSnapshot {
    let (handshakes, handshake_failures) = runtime.metrics.tls.counts();
    let listeners = state.config.listeners.iter().zip(&state.tls.certificates);
    let certificates = listeners
        .filter_map(|(listener, resolver)| Some((listener, resolver.as_ref()?)))
        .flat_map(|(listener, resolver)| {
            resolver.certificates.iter().map(move |c| CertificateSnapshot {
                listener: listener.addr.to_string(),
                cert: c.files.cert.display().to_string(),
                names: c.names.clone(),
                not_after: c.not_after,
            })
        })
        .collect();
    let acme = runtime
        .certificates
        .snapshot()
        .into_iter()
        .map(|status| {
            let serving =
                state.config.listeners.iter().filter(|l| l.tls.as_ref().is_some_and(|t| t.acme == status.names));
            let listeners = serving.map(|l| l.addr.to_string()).collect();
            (status, listeners)
        })
        .collect();
    TlsSnapshot { handshakes, handshake_failures, certificates, acme }
}

/// One route's edge controls: refusals by reason, and the rate limiter's table size.
pub struct EdgeSnapshot {
    /// Such as `listeners[0].routes[1]`.
    pub route: String,
    /// In the order of [`Reason::ALL`].
    pub refused: [(Reason, u64); 3],
    /// Addresses the rate limiter remembers; `None` without `rateLimit`.
    pub rate_limit_clients: Option<usize>,
}

fn edge_snapshots(config: &Config) -> Vec<EdgeSnapshot> {
    let routes = config.listeners.iter().flat_map(|l| l.routes.iter());
    routes
        .filter_map(|route| route.edge.as_deref())
        .map(|edge| EdgeSnapshot {
            route: edge.route().to_string(),
            refused: Reason::ALL.map(|reason| (reason, edge.refusals().count(reason))),
            rate_limit_clients: edge.tracked_clients(),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers {
    pub total: usize,
    /// Serving a client connection.
    pub busy: usize,
    pub idle: usize,
    /// Accepted connections waiting for a worker.
    pub queued: usize,
}

/// The counts an operator watches to see a slow-client attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlowClients {
    pub counts: SlowClientsSnapshot,
    /// Connections waiting for their address's share of the workers right now.
    pub waiting_for_share: usize,
    /// Connections that had to wait for their address's share, since start.
    pub waited_for_share: u64,
    /// Waits for a share that passed `timeouts.queue` and were answered `503`, since start.
    pub share_waits_timed_out: u64,
}

pub struct PoolSnapshot {
    pub name: String,
    pub algorithm: String,
    /// What the pool's balancer keeps between picks.
    pub kept: Kept,
    pub servers: Vec<ServerSnapshot>,
}

pub struct ServerSnapshot {
    pub url: String,
    pub healthy: bool,
    pub draining: bool,
    /// Drained, and to be removed once its in-flight exchanges end.
    pub removing: bool,
    pub added_at_runtime: bool,
    /// The DNS entry it was found by, for a backend found by DNS.
    pub discovered_from: Option<String>,
    pub backup: bool,
    pub weight: u32,
    pub max_connections: Option<usize>,
    pub active: usize,
    pub requests: u64,
    pub failures: u64,
    pub connections_opened: u64,
    pub exchanges: ExchangeSnapshot,
    /// Probes passed and failed.
    pub health_checks: (u64, u64),
    /// Rates over the last few seconds; `None` until two samples exist.
    pub recent: Option<Recent>,
    /// Requests per second, one entry a second, over the last few minutes, oldest first.
    pub history: Vec<f64>,
}

impl ServerSnapshot {
    /// One word for the status page and scripts: up, down, draining or removing.
    pub fn state(&self) -> &'static str {
        match (self.removing, self.draining, self.healthy) {
            (true, _, _) => "removing",
            (_, true, _) => "draining",
            (_, _, true) => "up",
            _ => "down",
        }
    }
}

impl PoolSnapshot {
    /// Servers that may get new exchanges now.
    pub fn available(&self) -> usize {
        self.servers.iter().filter(|s| s.healthy && !s.draining && s.weight > 0).count()
    }

    /// The pool's recent requests per second, summed over its servers.
    pub fn requests_per_second(&self) -> f64 {
        self.servers.iter().filter_map(|s| s.recent).map(|r| r.requests_per_second).sum()
    }
}

fn server_snapshot(
    backend: &Arc<Backend>,
    changes: &RuntimeChanges,
    windows: &Windows,
    place: &Place,
) -> ServerSnapshot {
    let stats = backend.stats();
    ServerSnapshot {
        recent: windows.recent(place, backend, Instant::now()),
        history: windows.history(place, backend),
        removing: changes.is_removing(place),
        added_at_runtime: changes.was_added(place) && backend.config.discovered_from.is_none(),
        discovered_from: backend.config.discovered_from.clone(),
        backup: backend.config.backup,
        max_connections: backend.config.max_connections,
        exchanges: backend.metrics.exchanges.snapshot(),
        health_checks: backend.metrics.health_checks(),
        url: stats.url,
        healthy: stats.healthy,
        draining: stats.draining,
        weight: stats.weight,
        active: stats.active,
        requests: stats.requests,
        failures: stats.failures,
        connections_opened: stats.connections_opened,
    }
}

/// Copies the runtime's state now.
pub fn take(runtime: &Runtime, windows: &Windows) -> Snapshot {
    let workers = runtime.workers.max_count();
    let state = runtime.state();
    let pools = state
        .pools
        .iter()
        .map(|pool| PoolSnapshot {
            name: pool.name().to_string(),
            algorithm: pool.config.algorithm.name().to_string(),
            kept: pool.kept(),
            servers: pool
                .backends
                .iter()
                .map(|backend| {
                    server_snapshot(backend, &state.changes, windows, &Place::new(pool.name(), backend.url()))
                })
                .collect(),
        })
        .collect();
    let busy = runtime.busy_workers().min(workers);
    Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        uptime: runtime.started.elapsed(),
        open_connections: runtime.open_connections(),
        parked_connections: runtime.waiting_room.parked_count(),
        workers: Workers { total: workers, busy, idle: workers - busy, queued: runtime.waiting_connections() },
        rejected_connections: runtime.rejected_connections.load(std::sync::atomic::Ordering::Relaxed),
        slow_clients: SlowClients {
            counts: runtime.metrics.slow_clients.snapshot(),
            waiting_for_share: runtime.fair_share.waiting(),
            waited_for_share: runtime.fair_share.waited(),
            share_waits_timed_out: runtime.fair_share.gave_up(),
        },
        retries: runtime.metrics.retries(),
        spliced_bytes: runtime.metrics.spliced_bytes(),
        proxy_headers_refused: runtime.metrics.proxy_headers.counts(),
        own_answers: runtime.metrics.own_answers.snapshot(),
        pools,
        edges: edge_snapshots(&state.config),
        tls: tls_snapshot(runtime, &state),
        host: host::sample(),
    }
}
