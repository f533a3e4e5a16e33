//! What every exchange shares, whichever mode answers it: the client connection with the
//! buffers its worker lends ([`ExchangeIo`]), what the exchange can see of sluice
//! ([`Context`]), how it ended ([`Outcome`]), sluice's own answers ([`answer`], [`refuse`])
//! and the rule for keeping a client connection open after one.
//!
//! Used by `connection` (which owns the loop), `proxy`, `redirect` and `tcp`.

use crate::backend::Backend;
use crate::config::ListenerConfig;
use crate::http::error::{canned_response, HttpError};
use crate::http::head::{RequestHead, ResponseHead};
use crate::http::headers::is_persistent;
use crate::http::stream::BufferedStream;
use crate::ops::ended::Ended;
use crate::runtime::{Runtime, State};
use log::debug;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The largest response head sluice accepts from a backend; also the size of the buffer
/// response bodies stream through.
pub const BACKEND_BUFFER_BYTES: usize = 64 * 1024;

/// The client connection as an exchange sees it, with the buffers its worker lends for both
/// sides: output for the client, output for the backend, the backend read buffer and the
/// backend's response head.
pub struct ExchangeIo {
    pub stream: BufferedStream,
    pub peer: SocketAddr,
    /// Output for the client, collected so that a head and its body leave together.
    pub out: Vec<u8>,
    /// Output for the backend, likewise.
    pub backend_out: Vec<u8>,
    /// The read buffer for backend responses, allocated on first use.
    pub backend_buf: Option<Box<[u8]>>,
    /// The backend's response head of the current exchange, refilled by each.
    pub response: ResponseHead,
}

/// The buffers an exchange needs besides the client's read buffer; a worker keeps one set
/// and lends it to each connection it serves.
#[derive(Default)]
pub struct ExchangeBuffers {
    out: Vec<u8>,
    backend_out: Vec<u8>,
    backend_buf: Option<Box<[u8]>>,
    response: ResponseHead,
}

impl ExchangeIo {
    pub fn new(stream: BufferedStream, peer: SocketAddr, buffers: ExchangeBuffers) -> ExchangeIo {
        let ExchangeBuffers { out, backend_out, backend_buf, response } = buffers;
        ExchangeIo { stream, peer, out, backend_out, backend_buf, response }
    }

    /// Gives back the stream and the lent buffers.
    pub fn into_parts(self) -> (BufferedStream, ExchangeBuffers) {
        let ExchangeIo { stream, out, backend_out, backend_buf, response, .. } = self;
        (stream, ExchangeBuffers { out, backend_out, backend_buf, response })
    }

    /// Writes one complete sluice-made response.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.get_ref().write_all(bytes)
    }
}

/// What the exchange shares with the rest of sluice.
pub struct Context<'a> {
    pub runtime: &'a Runtime,
    pub state: &'a State,
    pub listener: &'a ListenerConfig,
}

/// How an exchange ended, for the access log and the connection loop.
pub struct Outcome {
    pub status: u16,
    /// Response body bytes sent to the client.
    pub body_bytes: u64,
    pub backend: Option<Arc<Backend>>,
    /// Whether the client connection may carry another request.
    pub keep_alive: bool,
}

impl Outcome {
    pub fn closed(status: u16) -> Outcome {
        Outcome { status, body_bytes: 0, backend: None, keep_alive: false }
    }

    /// This outcome as the exchange's end, for metrics and the access log: `head` is `None`
    /// when none could be read; `received` counts the bytes read from the client for it.
    pub fn ended<'a>(
        &'a self,
        client: SocketAddr,
        head: Option<&'a RequestHead>,
        started: Instant,
        received: u64,
    ) -> Ended<'a> {
        let backend = self.backend.as_deref();
        Ended { client, head, tcp: false, status: self.status, backend, started, received, sent: self.body_bytes }
    }
}

/// A status that says the client went away before the response, as nginx logs it.
pub const CLIENT_CLOSED: u16 = 499;

/// Answers a refused request and closes.
pub fn refuse(client: &mut ExchangeIo, error: HttpError) -> Outcome {
    debug!("{}: {error}", client.peer);
    let _ = client.send(&error.response());
    Outcome::closed(error.status())
}

/// Answers with one of sluice's own responses.
pub fn answer(client: &mut ExchangeIo, status: u16, detail: &str, extra: &[(&str, &str)], keep_alive: bool) -> Outcome {
    let sent = client.send(&canned_response(status, detail, extra, !keep_alive)).is_ok();
    Outcome { status, body_bytes: 0, backend: None, keep_alive: keep_alive && sent }
}

/// Whether the client connection may carry another request after answering `head`: the
/// client wants it, sluice is not stopping, and no connection is queued for a worker while
/// parking is off (then closing is the only fair way to give others their turn).
pub fn may_keep_alive(runtime: &Runtime, head: &RequestHead) -> bool {
    is_persistent(head.version, head) && !runtime.is_stopping() && !runtime.should_close_idle()
}
