//! How long sluice waits and how much it holds: the timeouts, the limits, the worker share
//! per client address and the worker pool's default size. Plain data, with the defaults.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting to a backend.
    pub connect: Duration,
    /// A whole request head must arrive within this, from its first byte.
    pub client_header: Duration,
    /// An idle keep-alive client connection is closed after this.
    pub keep_alive: Duration,
    /// Longest wait for the next bytes of a response from a backend.
    pub backend: Duration,
    /// Longest wait for a client to send the next bytes of a body, or to take the next bytes
    /// of a response.
    pub client: Duration,
    /// An idle connection to a backend older than this is not reused.
    pub backend_idle: Duration,
    /// On stop, in-flight exchanges get this long to finish.
    pub drain: Duration,
    /// When every candidate backend is at its `maxConnections`, a request waits this long
    /// for a free slot before it is answered 503.
    pub queue: Duration,
    /// A tunnel (TCP mode, WebSocket) with no bytes either way for this long is closed.
    pub tunnel: Duration,
    /// How long a body or a response may move slower than `limits.minClientBytesPerSecond`
    /// at its start.
    pub min_rate_grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A request head larger than this is answered 431.
    pub max_header_bytes: usize,
    /// A request body larger than this is answered 413; `None` is no limit.
    pub max_body_bytes: Option<u64>,
    /// Open client connections above this are answered 503 at once.
    pub max_connections: usize,
    /// Open connections from one client address above this are answered 503 at once;
    /// `None` is no limit.
    pub max_connections_per_client: Option<usize>,
    /// Idle connections kept per backend for reuse; by default as many as there are workers.
    pub max_idle_per_backend: usize,
    /// A request body of at most this many bytes (by `Content-Length`) is read whole before a
    /// backend is picked, the connection waiting in the waiting room while it trickles; 0
    /// turns buffering off. The client read buffer is the larger of this and
    /// `max_header_bytes`.
    pub buffer_body_bytes: usize,
    /// After `timeouts.minRateGrace`, request bodies and responses must move at least this
    /// fast or the connection is closed (a body with `408`); 0 turns the rule off.
    pub min_client_bytes_per_second: u64,
    /// How many workers connections from one client address may hold at once.
    pub max_workers_per_client: WorkerShare,
}

/// A part of the workers: a count, or a percentage of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerShare {
    Count(usize),
    Percent(u8),
}

impl WorkerShare {
    /// How many of `workers` this share is: at least one, at most all.
    pub fn of(self, workers: usize) -> usize {
        let share = match self {
            WorkerShare::Count(n) => n,
            WorkerShare::Percent(p) => (workers * usize::from(p)).div_ceil(100),
        };
        share.clamp(1, workers.max(1))
    }
}

pub const DEFAULT_WORKERS: usize = 256;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            client_header: Duration::from_secs(10),
            keep_alive: Duration::from_secs(15),
            backend: Duration::from_secs(60),
            client: Duration::from_secs(30),
            backend_idle: Duration::from_secs(4),
            drain: Duration::from_secs(30),
            queue: Duration::from_secs(5),
            tunnel: Duration::from_secs(3600),
            min_rate_grace: Duration::from_secs(10),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_body_bytes: None,
            max_connections: 10_000,
            max_connections_per_client: Some(1024),
            max_idle_per_backend: DEFAULT_WORKERS,
            buffer_body_bytes: 16 * 1024,
            min_client_bytes_per_second: 500,
            max_workers_per_client: WorkerShare::Percent(25),
        }
    }
}
