//! The one place every exchange ends, whichever mode served it: an HTTP exchange (from
//! `connection`) or a whole TCP-mode connection (from `tcp`) is counted against its backend,
//! or against sluice's own answers when no backend took it, and written to the access log.

use crate::backend::Backend;
use crate::http::head::RequestHead;
use crate::ops::access_log::Entry;
use crate::ops::metrics::Finished;
use crate::runtime::{Runtime, State};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

/// One exchange as it ended.
pub struct Ended<'a> {
    pub client: SocketAddr,
    /// The request head; `None` when none could be read, and for TCP-mode connections.
    pub head: Option<&'a RequestHead>,
    /// A TCP-mode connection rather than an HTTP exchange.
    pub tcp: bool,
    pub status: u16,
    pub backend: Option<&'a Backend>,
    /// When it began: its head had been read, or its connection taken by a worker.
    pub started: Instant,
    /// Bytes read from the client for it.
    pub received: u64,
    /// Bytes sent to the client: the response body, or every byte of a TCP connection.
    pub sent: u64,
}

/// Counts `ended` in the metrics and writes its access-log line.
pub fn record(runtime: &Runtime, state: &State, ended: &Ended) {
    let duration = ended.started.elapsed();
    let finished = Finished { status: ended.status, duration, bytes_received: ended.received, bytes_sent: ended.sent };
    match ended.backend {
        Some(backend) => backend.metrics.exchanges.record(&finished),
        None => runtime.metrics.own_answers.record(&finished),
    }
    let entry = Entry {
        time: SystemTime::now(),
        client: ended.client,
        head: ended.head,
        tcp: ended.tcp,
        status: ended.status,
        bytes: ended.sent,
        backend: ended.backend.map(Backend::url),
        duration,
    };
    runtime.access_log.write(&state.config.access_log, &entry);
}
