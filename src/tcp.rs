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
//! With the pool's `sendProxy`, the backend connection opens with a PROXY header naming the
//! client (the peer, or the source of the client's own PROXY header).
//!
//! Each connection counts as one exchange, as HTTP exchanges do: against its backend's
//! metrics (or sluice's own answers when none took it), with bytes each way and its duration,
//! and as one line in the configured access-log format, whose request line reads `TCP`. Its
//! status is 200 once relayed, 503 when no backend was available, 502 when none could be
//! reached.

use crate::backend::send_proxy_header;
use crate::backend_error::BackendError;
use crate::config::ListenerConfig;
use crate::exchange::client_addresses;
use crate::health::record_traffic_failure;
use crate::ops::ended::{self, Ended};
use crate::ops::log_summary;
use crate::pool::PickRequest;
use crate::runtime::{Runtime, State};
use crate::transport::{BackendTransport, ClientTransport, Transport};
use crate::tunnel::{self, End};
use log::debug;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The status a connection is counted and logged with when it was relayed.
const RELAYED: u16 = 200;

/// Relays `client` to a backend until either side closes.
pub fn serve(
    runtime: &Runtime,
    state: &State,
    listener: &ListenerConfig,
    mut client: ClientTransport,
    peer: SocketAddr,
) {
    let started = Instant::now();
    let Some(pool) = state.listener_pool(listener) else { return };
    let timeouts = &state.config.timeouts;
    if client.is_tls() && !handshake(runtime, &mut client, timeouts.client_header, peer) {
        return;
    }
    let unserved =
        |status| Ended { client: peer, head: None, tcp: true, status, backend: None, started, received: 0, sent: 0 };
    let mut tried = Vec::new();
    loop {
        let wanted = PickRequest { client: peer.ip(), tried: &tried, sticky: None };
        let slot = match pool.acquire(&wanted, timeouts.queue) {
            Ok(slot) => slot,
            Err(why) => {
                let error = BackendError::from_no_slot(why, !tried.is_empty(), pool.retry_after_secs());
                debug!("{peer}: tcp connection closed: {error}");
                ended::record(runtime, state, &unserved(error.status()));
                return;
            }
        };
        let backend = slot.backend;
        let opened = backend.connect(timeouts).and_then(|socket| {
            let Some(version) = pool.config.send_proxy else { return Ok(socket) };
            send_proxy_header(&socket, version, Some(client_addresses(peer, client.socket())))?;
            Ok(socket)
        });
        match opened {
            Ok(upstream) => {
                backend.count_success();
                let mut upstream: BackendTransport = Transport::Plain(upstream);
                let client_end = End { pipe: &mut client, already_read: &[] };
                let backend_end = End { pipe: &mut upstream, already_read: &[] };
                match tunnel::run(client_end, backend_end, timeouts.tunnel) {
                    Ok(carried) => {
                        let relayed = Ended {
                            backend: Some(backend),
                            received: carried.client_to_backend,
                            sent: carried.backend_to_client,
                            ..unserved(RELAYED)
                        };
                        ended::record(runtime, state, &relayed);
                    }
                    Err(e) => log_summary::TUNNEL_FAILED.warn(format_args!("{peer}: cannot start a tunnel: {e}")),
                }
                return;
            }
            Err(e) => {
                log_summary::BACKEND_FAILED.warn(format_args!("{}: cannot connect: {e}", backend.url()));
                record_traffic_failure(runtime, pool, backend, &e);
                tried.push(slot.index);
                if tried.len() > pool.config.retries as usize {
                    ended::record(runtime, state, &unserved(BackendError::Unreachable.status()));
                    return;
                }
            }
        }
    }
}

/// Runs a TLS client's handshake before a backend is picked, within `timeouts.clientHeader`
/// as for an HTTP head; false when it failed (the connection then just closes).
fn handshake(runtime: &Runtime, client: &mut ClientTransport, within: Duration, peer: SocketAddr) -> bool {
    let _ = client.socket().set_read_timeout(Some(within));
    match client.complete_handshake() {
        Ok(()) => {
            runtime.metrics.tls.handshake_done();
            true
        }
        Err(e) => {
            debug!("{peer}: TLS handshake failed: {e}");
            runtime.metrics.tls.handshake_failed();
            false
        }
    }
}
