//! Reading a connection's next request head on its worker, under the client timeouts and the
//! drain rule: the first head must start within `timeouts.clientHeader`, later ones within
//! `timeouts.keepAlive`; while the connection's listener drains, a quiet connection gets at
//! most [`DRAIN_QUIET`] more and then closes without a word. A head that cannot be read is
//! answered (`400`, `408`, `414`, `431`, `505`) when it deserves an answer. Called by the
//! connection loop in `connection`.

use super::Between;
use crate::acme::challenges::ACME_TLS_ALPN;
use crate::exchange::{self, ExchangeIo};
use crate::http::error::HttpError;
use crate::http::head::{read_request_head_into, HeadError, HeadWait, RequestHead};
use crate::ops::ended;
use crate::runtime::Runtime;
use crate::transport::{ClientTransport, Transport};
use crate::waiting_room::DRAIN_QUIET;
use log::debug;
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a worker waits on a quiet client before it checks again whether workers have
/// become scarce (and the connection should park): bounds how long a sudden crowd waits for
/// workers held by connections that have nothing to say.
pub(super) const ASK_AGAIN_EVERY: Duration = Duration::from_millis(200);

pub(super) enum NextHead {
    /// A head was read into the worker's head; it was complete at this moment.
    Read(Instant),
    /// Nothing to read while workers are scarce: park until this deadline.
    Park(Instant),
    /// The connection is done (closed, refused, timed out, or sluice is stopping).
    Close,
}

/// Reads the next request head under the client timeouts, answering a bad one; while the
/// listener drains, waits at most [`DRAIN_QUIET`] for a first byte (see the module comment).
pub(super) fn next_head(
    runtime: &Arc<Runtime>,
    client: &mut ExchangeIo,
    head: &mut RequestHead,
    between: &mut Between,
    may_block: &mut dyn FnMut() -> bool,
) -> NextHead {
    let state = runtime.state();
    let config = &state.config;
    let first = between.requests == 0;
    let mut draining = runtime.is_draining(between.listener);
    loop {
        let usual = if first { config.timeouts.client_header } else { config.timeouts.keep_alive };
        let first_byte = if draining { usual.min(DRAIN_QUIET) } else { usual };
        let drain_began = Cell::new(false);
        let mut ask = || {
            if !draining && runtime.is_draining(between.listener) {
                drain_began.set(true);
                return false;
            }
            may_block()
        };
        let mut wait = HeadWait {
            first_byte,
            whole: Some(config.timeouts.client_header),
            deadline: between.head_deadline,
            may_block: &mut ask,
            ask_again_every: Some(ASK_AGAIN_EVERY),
        };
        let asked = Instant::now();
        let read = read_request_head_into(&mut client.stream, config.limits.max_header_bytes, &mut wait, head);
        between.head_deadline = wait.deadline;
        if drain_began.get() {
            // Wait again, now only as long as a draining connection may stay quiet.
            draining = true;
            if matches!(read, Err(HeadError::WouldBlock)) {
                continue;
            }
        }
        let now = Instant::now();
        if first {
            note_handshake(runtime, client.stream.get_ref(), &read);
        }
        return match read {
            // A TLS-ALPN-01 validation ends with its handshake: no request is served over it.
            Ok(()) if is_acme_validation(client.stream.get_ref()) => NextHead::Close,
            Ok(()) => {
                between.head_deadline = None;
                NextHead::Read(now)
            }
            Err(HeadError::WouldBlock) => NextHead::Park(between.head_deadline.unwrap_or(asked + first_byte)),
            Err(HeadError::TimedOut { partial: false }) if draining => NextHead::Close,
            Err(e) => {
                if let Some(error) = refusal_for(e, first, between.peer) {
                    let outcome = exchange::refuse(client, error);
                    let received = client.stream.received() - between.counted;
                    ended::record(runtime, &state, &outcome.ended(between.peer, None, now, received));
                }
                NextHead::Close
            }
        };
    }
}

/// Whether the connection is an ACME authority's TLS-ALPN-01 validation (it negotiated ALPN
/// `acme-tls/1`).
fn is_acme_validation(transport: &ClientTransport) -> bool {
    matches!(transport, Transport::Tls(tls) if tls.tls.alpn_protocol() == Some(ACME_TLS_ALPN))
}

/// Counts a TLS handshake when the connection's first head read ends: done when TLS is
/// through its handshake, failed when the client broke the protocol or did not finish in
/// time or left half way (a client that connected and left without a byte is neither).
fn note_handshake(runtime: &Runtime, transport: &ClientTransport, read: &Result<(), HeadError>) {
    let Transport::Tls(tls) = transport else { return };
    if !tls.tls.is_handshaking() {
        runtime.metrics.tls.handshake_done();
        return;
    }
    match read {
        Err(HeadError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            debug!("TLS handshake failed: {e}");
            runtime.metrics.tls.handshake_failed();
        }
        Err(HeadError::TimedOut { .. } | HeadError::Truncated | HeadError::Closed) if tls.received > 0 => {
            runtime.metrics.tls.handshake_failed()
        }
        _ => {}
    }
}

/// The answer to a head that could not be read, if it deserves one.
fn refusal_for(error: HeadError, first: bool, peer: SocketAddr) -> Option<HttpError> {
    match error {
        HeadError::Closed | HeadError::WouldBlock => None,
        HeadError::TimedOut { partial } if partial || first => Some(HttpError::HeaderTimeout),
        HeadError::TimedOut { .. } => None,
        HeadError::TooLarge => Some(HttpError::HeadTooLarge),
        HeadError::LineTooLong => Some(HttpError::UriTooLong),
        HeadError::Malformed(why) => Some(HttpError::BadRequest(why)),
        HeadError::UnsupportedVersion => Some(HttpError::VersionNotSupported),
        HeadError::Truncated | HeadError::Io(_) => {
            debug!("{peer}: connection closed inside a request head: {error:?}");
            None
        }
    }
}
