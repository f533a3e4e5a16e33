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
use crate::http::stream::{is_timeout, BufferedStream};
use crate::ops::ended::Ended;
use crate::pace::{too_slow, Pace};
use crate::runtime::{Runtime, State};
use log::debug;
use std::io::{self, IoSlice, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The client socket's write timeout as last set.
    pub write_timeout: Duration,
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
        ExchangeIo { stream, peer, out, backend_out, backend_buf, response, write_timeout: Duration::ZERO }
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

/// The client socket of an exchange as a [`Write`] held to the minimum rate of
/// [`crate::pace`]: a response the client takes slower than that fails with
/// [`crate::pace::too_slow`], and one it takes nothing of for `longest` fails as a timeout.
/// The socket's write timeout is only shortened once the client is near its deadline, so a
/// client that keeps up costs no extra system call.
pub struct PacedWrite<'a> {
    stream: &'a TcpStream,
    pace: Pace,
    sent: u64,
    /// The socket's write timeout as last set, kept by the exchange across writers.
    timeout: &'a mut Duration,
    longest: Duration,
}

impl<'a> PacedWrite<'a> {
    pub fn new(stream: &'a TcpStream, pace: Pace, timeout: &'a mut Duration, longest: Duration) -> PacedWrite<'a> {
        PacedWrite { stream, pace, sent: 0, timeout, longest }
    }
}

impl PacedWrite<'_> {
    /// Runs one write `op` on the socket, waiting no longer than the client's deadline.
    fn paced(&mut self, mut op: impl FnMut(&TcpStream) -> io::Result<usize>) -> io::Result<usize> {
        let stalled_since = Instant::now();
        loop {
            let Some(wait) = self.pace.next_wait(self.sent, Instant::now(), self.longest) else {
                return Err(too_slow());
            };
            if wait < *self.timeout {
                let wait = wait.max(Duration::from_millis(1));
                self.stream.set_write_timeout(Some(wait))?;
                *self.timeout = wait;
            }
            match op(self.stream) {
                Ok(n) => {
                    self.sent += n as u64;
                    return Ok(n);
                }
                Err(e) if is_timeout(&e) && stalled_since.elapsed() < self.longest => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for PacedWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.paced(|mut stream| stream.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.paced(|mut stream| stream.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ExchangeIo {
    /// Gives the client socket its usual write timeout back after a [`PacedWrite`] shortened
    /// it; costs nothing when it did not.
    pub fn restore_write_timeout(&mut self, usual: Duration) {
        if self.write_timeout != usual && self.stream.get_ref().set_write_timeout(Some(usual)).is_ok() {
            self.write_timeout = usual;
        }
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
