//! TCP mode: each connection accepted on a `"mode": "tcp"` listener is relayed byte for byte
//! to a backend of the listener's pool, picked by the pool's algorithm.
//!
//! Called by `connection::serve` for tcp listeners, on a worker that stays with the
//! connection until it closes. A failed connect tries the next backend (up to the pool's
//! `retries`); when no backend is available the client is closed at once (when every backend
//! is at its `maxConnections`, after waiting up to `timeouts.queue` for a slot, as HTTP
//! requests do). Writes the backend's counters; logs one access line per connection.

use crate::backend::Backend;
use crate::config::ListenerConfig;
use crate::pool::{NoSlot, PickRequest};
use crate::runtime::State;
use crate::tunnel::{self, Carried, End};
use log::{info, log_enabled, warn};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

/// Relays `client` to a backend until either side closes.
pub fn serve(state: &State, listener: &ListenerConfig, client: &TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let Some(pool) = state.listener_pool(listener) else { return };
    let timeouts = &state.config.timeouts;
    let mut tried = Vec::new();
    loop {
        let wanted = PickRequest { client: peer.ip(), tried: &tried, sticky: None };
        let slot = match pool.acquire(&wanted, timeouts.queue) {
            Ok(slot) => slot,
            Err(why) => {
                let why = match why {
                    NoSlot::QueueTimedOut => "every backend is at its connection limit",
                    NoSlot::Unavailable if tried.is_empty() => "no backend available",
                    NoSlot::Unavailable => "no backend could be reached",
                };
                log_connection(peer, None, why, Carried::default(), started);
                return;
            }
        };
        let backend = slot.backend;
        match backend.connect(timeouts) {
            Ok(upstream) => {
                let client_end = End { stream: client, already_read: &[] };
                let backend_end = End { stream: &upstream, already_read: &[] };
                match tunnel::run(client_end, backend_end, timeouts.tunnel) {
                    Ok(carried) => log_connection(peer, Some(backend), "closed", carried, started),
                    Err(e) => warn!("{peer}: cannot start a tunnel: {e}"),
                }
                return;
            }
            Err(e) => {
                backend.record_failure();
                warn!("{}: cannot connect: {e}", backend.url());
                tried.push(slot.index);
                if tried.len() > pool.config.retries as usize {
                    log_connection(peer, None, "no backend could be reached", Carried::default(), started);
                    return;
                }
            }
        }
    }
}

/// One access-log line: client, backend, how it ended, bytes each way, duration.
fn log_connection(peer: SocketAddr, backend: Option<&Backend>, how: &str, carried: Carried, started: Instant) {
    if !log_enabled!(target: "sluice::access", log::Level::Info) {
        return;
    }
    let backend = backend.map_or("-", Backend::url);
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    info!(
        target: "sluice::access",
        "{peer} \"TCP\" {how} up {} down {} {backend} {millis:.1}ms",
        carried.client_to_backend, carried.backend_to_client
    );
}
