//! TCP mode: each connection accepted on a `"mode": "tcp"` listener is relayed byte for byte
//! to a backend of the listener's pool, picked by the pool's algorithm.
//!
//! Called by `connection::serve` for tcp listeners, on a worker that stays with the
//! connection until it closes. A failed connect tries the next backend (up to the pool's
//! `retries`); when no backend is available the client is closed at once (when every backend
//! is at its `maxConnections`, after waiting up to `timeouts.queue` for a slot, as HTTP
//! requests do). Connect failures count towards the backend's passive health, as in HTTP
//! mode.
//!
//! Each connection counts as one exchange, as HTTP exchanges do: against its backend's
//! metrics (or sluice's own answers when none took it), with bytes each way and its duration,
//! and as one line in the configured access-log format, whose request line reads `TCP`. Its
//! status is 200 once relayed, 503 when no backend was available, 502 when none could be
//! reached.

use crate::access_log::Entry;
use crate::backend::Backend;
use crate::config::ListenerConfig;
use crate::health::record_traffic_failure;
use crate::metrics::Finished;
use crate::pool::{NoSlot, PickRequest};
use crate::runtime::{Runtime, State};
use crate::tunnel::{self, Carried, End};
use log::{debug, warn};
use std::net::{SocketAddr, TcpStream};
use std::time::{Instant, SystemTime};

/// The status a connection is counted and logged with when it was relayed.
const RELAYED: u16 = 200;
/// ... when no backend could be reached.
const UNREACHABLE: u16 = 502;
/// ... when no backend was available.
const UNAVAILABLE: u16 = 503;

/// One finished TCP-mode connection, as metrics and the access log count it.
struct Ended<'a> {
    peer: SocketAddr,
    backend: Option<&'a Backend>,
    status: u16,
    carried: Carried,
    started: Instant,
}

/// Relays `client` to a backend until either side closes.
pub fn serve(runtime: &Runtime, state: &State, listener: &ListenerConfig, client: &TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let Some(pool) = state.listener_pool(listener) else { return };
    let timeouts = &state.config.timeouts;
    let mut tried = Vec::new();
    loop {
        let wanted = PickRequest { client: peer.ip(), tried: &tried, sticky: None };
        let slot = match pool.acquire(&wanted, timeouts.queue) {
            Ok(slot) => slot,
            Err(why) => {
                let (status, why) = match why {
                    NoSlot::QueueTimedOut => (UNAVAILABLE, "every backend is at its connection limit"),
                    NoSlot::Unavailable if tried.is_empty() => (UNAVAILABLE, "no backend available"),
                    NoSlot::Unavailable => (UNREACHABLE, "no backend could be reached"),
                };
                debug!("{peer}: tcp connection closed: {why}");
                record_connection(
                    runtime,
                    state,
                    Ended { peer, backend: None, status, carried: Carried::default(), started },
                );
                return;
            }
        };
        let backend = slot.backend;
        match backend.connect(timeouts) {
            Ok(upstream) => {
                backend.count_success();
                let client_end = End { stream: client, already_read: &[] };
                let backend_end = End { stream: &upstream, already_read: &[] };
                match tunnel::run(client_end, backend_end, timeouts.tunnel) {
                    Ok(carried) => {
                        let ended = Ended { peer, backend: Some(backend), status: RELAYED, carried, started };
                        record_connection(runtime, state, ended);
                    }
                    Err(e) => warn!("{peer}: cannot start a tunnel: {e}"),
                }
                return;
            }
            Err(e) => {
                warn!("{}: cannot connect: {e}", backend.url());
                record_traffic_failure(runtime, pool, backend, &e);
                tried.push(slot.index);
                if tried.len() > pool.config.retries as usize {
                    let carried = Carried::default();
                    let ended = Ended { peer, backend: None, status: UNREACHABLE, carried, started };
                    record_connection(runtime, state, ended);
                    return;
                }
            }
        }
    }
}

/// Counts a finished connection against its backend (or sluice's own answers) and writes its
/// access-log line, as `connection` does for HTTP exchanges.
fn record_connection(runtime: &Runtime, state: &State, ended: Ended) {
    let duration = ended.started.elapsed();
    let finished = Finished {
        status: ended.status,
        duration,
        bytes_received: ended.carried.client_to_backend,
        bytes_sent: ended.carried.backend_to_client,
    };
    match ended.backend {
        Some(backend) => backend.metrics.exchanges.record(&finished),
        None => runtime.metrics.own_answers.record(&finished),
    }
    let entry = Entry {
        time: SystemTime::now(),
        client: ended.peer,
        head: None,
        tcp: true,
        status: ended.status,
        bytes: ended.carried.backend_to_client,
        backend: ended.backend.map(Backend::url),
        duration,
    };
    runtime.access_log.write(&state.config.access_log, &entry);
}
