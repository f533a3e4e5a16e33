//! What every exchange shares, whichever mode answers it: the client connection with the
//! buffers its worker lends ([`ExchangeIo`]), what the exchange can see of sluice
//! ([`Context`]), how it ended ([`Outcome`]), sluice's own answers ([`answer`], [`refuse`])
//! and the rule for keeping a client connection open after one.
//!
//! Used by `connection` (which owns the loop), `proxy`, `redirect` and `tcp`.

use crate::backend::Backend;
use crate::config::ListenerConfig;
use crate::http::error::{canned_response, head_length, HttpError};
use crate::http::head::{RequestHead, ResponseHead};
use crate::http::headers::is_persistent;
use crate::http::stream::{is_timeout, BufferedStream};
use crate::ops::ended::Ended;
use crate::pace::{too_slow, Pace};
use crate::proxy_protocol::Addresses;
use crate::runtime::{Runtime, State};
use crate::sys;
use crate::transport::ClientTransport;
use log::debug;
use std::io::{self, IoSlice, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest response head sluice accepts from a backend; also the size of the buffer
/// response bodies stream through.
pub const BACKEND_BUFFER_BYTES: usize = 64 * 1024;

/// The client connection as an exchange sees it, with the buffers its worker lends for both
/// sides: output for the client, output for the backend, the backend read buffer and the
/// backend's response head.
pub struct ExchangeIo {
    pub stream: BufferedStream<ClientTransport>,
    pub peer: SocketAddr,
    /// Output for the client, collected so that a head and its body leave together.
    pub out: Vec<u8>,
    /// Output for the backend, likewise.
    pub backend_out: Vec<u8>,
    /// The read buffer for backend responses, allocated on first use.
    pub backend_buf: Option<Box<[u8]>>,
    /// The backend's response head of the current exchange, refilled by each.
    pub response: ResponseHead,
    /// How long the client may take no bytes of a response (`timeouts.client`).
    pub stall_limit: Duration,
    /// The current request is `HEAD`: sluice's own answers carry no body.
    pub answering_head: bool,
}

/// `client` and the local address of `socket`, the listener's address the client reached.
pub fn client_addresses(client: SocketAddr, socket: &TcpStream) -> Addresses {
    let unknown = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    Addresses { source: client, destination: socket.local_addr().unwrap_or(unknown) }
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
    pub fn new(stream: BufferedStream<ClientTransport>, peer: SocketAddr, buffers: ExchangeBuffers) -> ExchangeIo {
        let ExchangeBuffers { out, backend_out, backend_buf, response } = buffers;
        ExchangeIo {
            stream,
            peer,
            out,
            backend_out,
            backend_buf,
            response,
            stall_limit: Duration::ZERO,
            answering_head: false,
        }
    }

    /// The client (the PROXY header's source on a listener with `acceptProxy`) and the
    /// address it reached sluice at, for a PROXY header to a backend.
    pub fn addresses(&self) -> Addresses {
        client_addresses(self.peer, self.stream.get_ref().socket())
    }

    /// Gives back the stream and the lent buffers.
    pub fn into_parts(self) -> (BufferedStream<ClientTransport>, ExchangeBuffers) {
        let ExchangeIo { stream, out, backend_out, backend_buf, response, .. } = self;
        (stream, ExchangeBuffers { out, backend_out, backend_buf, response })
    }

    /// Writes one complete sluice-made response.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        PacedWrite::new(self.stream.get_mut(), None, self.stall_limit).write_all(bytes)
    }

    /// Writes what `out` holds (an interim or a switching head).
    pub fn send_out(&mut self) -> io::Result<()> {
        PacedWrite::new(self.stream.get_mut(), None, self.stall_limit).write_all(&self.out)
    }
}

/// The longest a single write to a client blocks: the client socket's write timeout. Writers
/// wait again after it until `timeouts.client` has passed without progress, and check the
/// minimum rate in between.
pub const CLIENT_WRITE_CHECK: Duration = Duration::from_secs(1);

/// The client socket of an exchange as a [`Write`] held to the minimum rate of
/// [`crate::pace`]: a response the client takes slower than that fails with
/// [`crate::pace::too_slow`], and one it takes nothing of for `stall_limit` fails as a
/// timeout. What the client has taken is what was written less what still waits in the
/// kernel's send buffer, asked only once a write blocks: a client that keeps up costs no
/// extra system call.
///
/// Over TLS a write that timed out may have left a record half sent, so it is never tried
/// again: the socket keeps the whole `timeouts.client` as its write timeout, and the rate is
/// checked after each write against the bytes handed to the kernel.
pub struct PacedWrite<'a> {
    stream: &'a mut ClientTransport,
    pace: Option<Pace>,
    sent: u64,
    stall_limit: Duration,
}

impl<'a> PacedWrite<'a> {
    pub fn new(stream: &'a mut ClientTransport, pace: Option<Pace>, stall_limit: Duration) -> PacedWrite<'a> {
        PacedWrite { stream, pace, sent: 0, stall_limit }
    }

    /// Runs one write `op` on the socket, giving up when the client fell below the rate or
    /// took nothing for `stall_limit`.
    fn paced(
        &mut self,
        wanted: usize,
        mut op: impl FnMut(&mut ClientTransport) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let tls = self.stream.is_tls();
        let mut stalled_since = None;
        loop {
            match op(self.stream) {
                Ok(n) => {
                    self.sent += n as u64;
                    let behind = if tls { self.is_behind_handed() } else { n < wanted && self.is_behind() };
                    if behind {
                        return Err(too_slow());
                    }
                    return Ok(n);
                }
                Err(e) if tls => return Err(e),
                Err(e) if is_timeout(&e) && self.is_behind() => return Err(too_slow()),
                Err(e)
                    if is_timeout(&e)
                        && stalled_since.get_or_insert_with(Instant::now).elapsed() < self.stall_limit => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether bytes can reach this client by splice: only on a plain connection.
    pub fn can_splice(&self) -> bool {
        !self.stream.is_tls()
    }

    /// Moves up to `len` bytes from `pipe` into the client socket, held to the same rate and
    /// stall limit as a write. Only where [`PacedWrite::can_splice`].
    pub fn splice_from(&mut self, pipe: &sys::SplicePipe, len: usize, more: bool) -> io::Result<usize> {
        debug_assert!(!self.stream.is_tls());
        self.paced(len, |stream| pipe.drain_into(stream.socket(), len, more))
    }

    /// Whether the bytes the client has really taken are below the rate.
    fn is_behind(&self) -> bool {
        let Some(pace) = self.pace else { return false };
        let unsent = sys::unsent_bytes(self.stream.socket()).unwrap_or(0) as u64;
        pace.is_behind(self.sent.saturating_sub(unsent), Instant::now())
    }

    /// Whether the bytes handed to the kernel are below the rate (no system call).
    fn is_behind_handed(&self) -> bool {
        self.pace.is_some_and(|pace| pace.is_behind(self.sent, Instant::now()))
    }
}

impl Write for PacedWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.paced(buf.len(), |stream| stream.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let wanted = bufs.iter().map(|b| b.len()).sum();
        self.paced(wanted, |stream| stream.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the exchange shares with the rest of sluice.
pub struct Context<'a> {
    pub runtime: &'a Runtime,
    pub state: &'a State,
    pub listener: &'a ListenerConfig,
    /// The address the listener is bound to.
    pub bound: SocketAddr,
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
    send_own(client, canned_response(status, detail, extra, !keep_alive), status, keep_alive)
}

/// Sends one of sluice's own responses, without its body when answering `HEAD` (the head
/// still says how long the body would be, as RFC 9110 allows).
pub fn send_own(client: &mut ExchangeIo, mut response: Vec<u8>, status: u16, keep_alive: bool) -> Outcome {
    let head_len = head_length(&response);
    if client.answering_head {
        response.truncate(head_len);
    }
    let body_bytes = (response.len() - head_len) as u64;
    let sent = client.send(&response).is_ok();
    Outcome { status, body_bytes, backend: None, keep_alive: keep_alive && sent }
}

/// Whether the client connection may carry another request after answering `head`: the
/// client wants it, its listener is not draining (sluice stopping, or the listener removed),
/// and no connection is queued for a worker while parking is off (then closing is the only
/// fair way to give others their turn).
pub fn may_keep_alive(ctx: &Context, head: &RequestHead) -> bool {
    is_persistent(head.version, head) && !ctx.runtime.is_draining(ctx.bound) && !ctx.runtime.should_close_idle()
}
