//! One client connection: accepted, handed to a worker, served request by request, parked in
//! the waiting room when it has nothing to read while workers are scarce, and closed.
//!
//! On a worker the loop is: read a request head, hand it to `proxy` (or, on a redirect
//! listener, to `redirect`), record the exchange (metrics and the access-log line: this is
//! the one place every HTTP exchange ends, so it is where they are counted), and go round
//! again while the connection stays persistent. A connection on a tcp listener is handed
//! whole to `tcp` instead, and never parks. Client timeouts live here: the first
//! head must start within `timeouts.clientHeader`, later ones within `timeouts.keepAlive`,
//! and every head must be complete within `timeouts.clientHeader` of its first byte, counted
//! across any time spent parked.
//!
//! After each head, [`crate::small_body`] reads a small body whole before any backend is
//! picked, parking the connection with its parsed head while the body trickles. Then the
//! exchange takes one of its client address's shares of the workers ([`crate::fair_share`]);
//! over the share the connection waits there with its request, holding no worker, until a
//! connection from the same address lets go of one. Idle and waiting connections hold no share.
//!
//! While it waits for a head the connection is marked idle in the runtime's registry, so that
//! stopping closes it at once instead of waiting for it; a connection that finds sluice
//! stopping closes unless a request is already waiting to be read.

use crate::config::{Config, ListenerMode};
use crate::exchange::{self, Context, ExchangeIo, CLIENT_WRITE_CHECK};
use crate::fair_share::Turn;
use crate::http::error::HttpError;
use crate::http::head::{read_request_head_into, HeadError, HeadWait, RequestHead};
use crate::http::stream::BufferedStream;
use crate::ops::ended;
use crate::ops::log_summary;
use crate::proxy;
use crate::runtime::{ClientTicket, Runtime};
use crate::small_body::{read_buffer_bytes, wait_for_small_body, BodyWait, Waiting};
use crate::sys;
use crate::transport::{ClientTransport, Transport};
use crate::waiting_room::Waiter;
use crate::worker_buffers::{return_buffers, take_buffers, WorkerBuffers};
use crate::{redirect, tcp};
use log::{debug, error};
use rustls::ServerConnection;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A client connection while no worker holds it: what must survive between its requests.
pub struct ClientConn {
    pub stream: ClientTransport,
    pub peer: SocketAddr,
    /// Bytes read but not yet used: the start of a head, or of a pending request's body.
    partial: Vec<u8>,
    /// A request whose head was read: its body was still arriving when the connection was
    /// parked, or its address held all of its share of the workers.
    pending: Option<Box<Pending>>,
    /// Handed its address's share of the workers by the connection that let go of it.
    holds_share: bool,
    between: Between,
}

/// What a connection carries from one request to the next.
struct Between {
    peer: SocketAddr,
    /// Which configured listener accepted it.
    listener: usize,
    /// When the head being read must be complete; set at its first byte.
    head_deadline: Option<Instant>,
    /// Requests answered on this connection so far.
    requests: u64,
    /// Keeps the connection counted and registered until it is dropped.
    ticket: ClientTicket,
    /// Bytes read from the client before the current exchange's, on this worker.
    counted: u64,
}

/// A request read as far as its head, waiting off the workers.
struct Pending {
    head: RequestHead,
    /// When the head was complete: the body's rate is measured from here.
    since: Instant,
    /// Counts the bytes of an incomplete body in the metrics while they wait.
    _held: Option<HeldBodyBytes>,
}

/// Body bytes counted as held by a parked connection until dropped.
struct HeldBodyBytes {
    runtime: Arc<Runtime>,
    bytes: usize,
}

impl HeldBodyBytes {
    fn new(runtime: &Arc<Runtime>, bytes: usize) -> HeldBodyBytes {
        runtime.metrics.slow_clients.hold_body_bytes(bytes, true);
        HeldBodyBytes { runtime: Arc::clone(runtime), bytes }
    }
}

impl Drop for HeldBodyBytes {
    fn drop(&mut self) {
        self.runtime.metrics.slow_clients.hold_body_bytes(self.bytes, false);
    }
}

impl ClientConn {
    /// Whether closing it now leaves a request unanswered: a head had begun, or none ever came.
    pub fn is_waiting_for_head(&self) -> bool {
        !self.partial.is_empty() || self.between.requests == 0
    }
}

impl Waiter for ClientConn {
    fn fd(&self) -> RawFd {
        self.stream.socket().as_raw_fd()
    }

    fn wake(self: Box<Self>) {
        let runtime = Arc::clone(self.between.ticket.runtime());
        dispatch(&runtime, *self, true);
    }

    /// A head that began (or a first one that never came) or a body that did not arrive at
    /// the minimum rate gets `408`; an idle keep-alive connection just closes.
    fn expire(mut self: Box<Self>) {
        let answer = if self.pending.is_some() {
            debug!("{}: request body slower than the minimum rate", self.peer);
            self.between.ticket.runtime().metrics.slow_clients.record_body_too_slow();
            HttpError::BodyTimeout
        } else if self.is_waiting_for_head() {
            debug!("{}: request head not received in time", self.peer);
            HttpError::HeaderTimeout
        } else {
            return;
        };
        let _ = self.stream.socket().set_write_timeout(Some(Duration::from_millis(100)));
        let _ = self.stream.write_all(&answer.response());
        self.stream.send_close();
    }
}

/// Takes an accepted connection, already counted in, and queues it for the workers.
pub fn accept(runtime: &Arc<Runtime>, stream: TcpStream, peer: SocketAddr, listener: usize) {
    let registered = stream.set_nodelay(true).and_then(|()| stream.try_clone());
    let handle = match registered {
        Ok(handle) => handle,
        Err(e) => {
            debug!("{peer}: cannot set up the connection: {e}");
            runtime.uncount_connection(peer.ip());
            return;
        }
    };
    let ticket = runtime.register_client(handle, peer.ip());
    let stream = match runtime.state().tls.listeners.get(listener).cloned().flatten() {
        None => Transport::Plain(stream),
        Some(tls) => match ServerConnection::new(tls) {
            Ok(session) => Transport::tls(session, stream),
            Err(e) => {
                log_summary::TLS_NOT_STARTED.warn(format_args!("{peer}: cannot start TLS: {e}"));
                return;
            }
        },
    };
    let between = Between { peer, listener, head_deadline: None, requests: 0, ticket, counted: 0 };
    let conn = ClientConn { stream, peer, partial: Vec::new(), pending: None, holds_share: false, between };
    dispatch(runtime, conn, false);
}

/// Queues `conn` for a worker; `readable` says bytes are known to be waiting on it.
pub fn dispatch(runtime: &Arc<Runtime>, conn: ClientConn, readable: bool) {
    runtime.connection_queued();
    let runtime = Arc::clone(runtime);
    runtime.workers.clone().execute(move || {
        runtime.connection_dequeued();
        let peer = conn.peer;
        if catch_unwind(AssertUnwindSafe(|| serve(&runtime, conn, readable))).is_err() {
            error!("{peer}: a bug ended this connection (panic); the worker goes on");
        }
    });
}

/// One of a client address's shares of the workers, held while this worker serves an
/// exchange of it; letting go hands it to the next connection of the address waiting for it.
struct Share<'a> {
    runtime: &'a Runtime,
    client: IpAddr,
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        if let Some(next) = self.runtime.fair_share.leave(self.client) {
            next();
        }
    }
}

/// Takes a share of the workers for `client`, or, when its address holds all of its share,
/// makes `waiting` into a connection that waits for one (and returns `None`). `waiting` is
/// only called then, so the usual case costs a lock and no allocation.
fn take_share<'a, T>(
    runtime: &'a Arc<Runtime>,
    client: IpAddr,
    config: &Config,
    waiting: &mut Option<T>,
    park: impl FnOnce(T) -> ClientConn,
) -> Option<Share<'a>> {
    let share = config.limits.max_workers_per_client.of(runtime.workers.max_count());
    let later = || -> Turn {
        let conn = waiting.take().map(park);
        let runtime = Arc::clone(runtime);
        Box::new(move || {
            if let Some(conn) = conn {
                dispatch(&runtime, conn, false);
            }
        })
    };
    runtime.fair_share.enter(client, share, later).then(|| Share { runtime, client })
}

/// Serves `conn` on this worker until it closes, parks or waits for its address's share.
fn serve(runtime: &Arc<Runtime>, conn: ClientConn, mut readable: bool) {
    let _serving = runtime.start_serving();
    let ClientConn { stream, peer, partial, mut pending, mut holds_share, mut between } = conn;
    between.counted = 0;
    let state = runtime.state();
    if state.config.listeners[between.listener].mode == ListenerMode::Tcp {
        drop(state);
        serve_tcp(runtime, stream, holds_share, between);
        return;
    }
    let capacity = read_buffer_bytes(&state.config).max(partial.len());
    let stall_limit = state.config.timeouts.client;
    drop(state);
    let WorkerBuffers { read, mut head, exchange } = take_buffers(capacity);
    let mut stream = BufferedStream::from_parts(stream, read, None);
    stream.preload(&partial);
    let mut client = ExchangeIo::new(stream, peer, exchange);
    let write_timeout = if client.stream.get_ref().is_tls() {
        // A TLS write that times out may leave its record half sent: no retrying there.
        stall_limit
    } else {
        CLIENT_WRITE_CHECK.min(stall_limit)
    };
    let _ = client.stream.get_ref().socket().set_write_timeout(Some(write_timeout));
    client.stall_limit = stall_limit;
    loop {
        let state = runtime.state();
        let config = &state.config;
        let mut may_block = || std::mem::take(&mut readable) || !runtime.should_park();
        let started = match pending.take() {
            Some(parked) => {
                head = parked.head;
                parked.since
            }
            None => match next_head(runtime, &mut client, &mut head, &mut between, &mut may_block) {
                NextHead::Read(started) => started,
                NextHead::Park(expires) => {
                    park(runtime, Parking { client, head, between, body_since: None }, expires);
                    return;
                }
                NextHead::Close => break,
            },
        };
        let waiting = Waiting { since: started, may_park: runtime.may_park(), may_block: &mut may_block };
        match wait_for_small_body(config, &mut client.stream, &head, waiting) {
            BodyWait::Complete => {}
            BodyWait::Park(expires) => {
                runtime.metrics.slow_clients.record_body_parked();
                park(runtime, Parking { client, head, between, body_since: Some(started) }, expires);
                return;
            }
            BodyWait::TooSlow => {
                runtime.metrics.slow_clients.record_body_too_slow();
                let outcome = exchange::refuse(&mut client, HttpError::BodyTimeout);
                let received = client.stream.received() - between.counted;
                ended::record(runtime, &state, &outcome.ended(peer, Some(&head), started, received));
                break;
            }
            BodyWait::Gone => break,
        }
        let handed = std::mem::take(&mut holds_share).then(|| Share { runtime, client: peer.ip() });
        let mut waiting = Some(Parking { client, head, between, body_since: Some(started) });
        let park = |p| wait_for_share(runtime, p);
        let share = handed.or_else(|| take_share(runtime, peer.ip(), config, &mut waiting, park));
        let Some(Parking { client: c, head: h, between: b, .. }) = waiting else { return };
        (client, head, between) = (c, h, b);
        let ctx = Context { runtime, state: &state, listener: &config.listeners[between.listener] };
        client.answering_head = head.method == "HEAD";
        let outcome = match (ctx.listener.mode, ctx.listener.redirect_to_https) {
            (ListenerMode::Redirect, _) => redirect::answer(&ctx, &mut client, &mut head),
            (_, Some(port)) if redirect::redirects_to_https(&head) => {
                redirect::to_https(&ctx, &mut client, &mut head, port)
            }
            _ => proxy::exchange(&ctx, &mut client, &mut head),
        };
        drop(share);
        let received = client.stream.received() - between.counted;
        between.counted += received;
        ended::record(runtime, &state, &outcome.ended(peer, Some(&head), started, received));
        between.requests += 1;
        if !outcome.keep_alive {
            break;
        }
    }
    client.stream.get_mut().send_close();
    let (stream, exchange) = client.into_parts();
    let (_, read) = stream.into_parts();
    return_buffers(WorkerBuffers { read, head, exchange });
}

/// Serves a tcp listener's connection whole, within its address's share of the workers.
fn serve_tcp(runtime: &Arc<Runtime>, stream: ClientTransport, holds_share: bool, between: Between) {
    let peer = between.peer;
    let handed = holds_share.then(|| Share { runtime, client: peer.ip() });
    let mut waiting = Some((stream, between));
    let park = |(stream, between): (ClientTransport, Between)| ClientConn {
        stream,
        peer,
        partial: Vec::new(),
        pending: None,
        holds_share: true,
        between,
    };
    let state = runtime.state();
    let Some(_share) = handed.or_else(|| take_share(runtime, peer.ip(), &state.config, &mut waiting, park)) else {
        return;
    };
    let Some((stream, between)) = waiting else { return };
    tcp::serve(runtime, &state, &state.config.listeners[between.listener], stream, peer);
}

/// How long a worker waits on a quiet client before it checks again whether workers have
/// become scarce (and the connection should park): bounds how long a sudden crowd waits for
/// workers held by connections that have nothing to say.
const ASK_AGAIN_EVERY: Duration = Duration::from_millis(200);

enum NextHead {
    /// A head was read into the worker's head; it was complete at this moment.
    Read(Instant),
    /// Nothing to read while workers are scarce: park until this deadline.
    Park(Instant),
    /// The connection is done (closed, refused, timed out, or sluice is stopping).
    Close,
}

/// Reads the next request head under the client timeouts, answering a bad one.
fn next_head(
    runtime: &Arc<Runtime>,
    client: &mut ExchangeIo,
    head: &mut RequestHead,
    between: &mut Between,
    may_block: &mut dyn FnMut() -> bool,
) -> NextHead {
    let state = runtime.state();
    let config = &state.config;
    if !between.ticket.enter_idle() {
        // Stopping: serve only a request that is already here.
        if !has_input(&mut client.stream) {
            return NextHead::Close;
        }
        between.ticket.leave_idle();
    }
    let first = between.requests == 0;
    let mut wait = HeadWait {
        first_byte: if first { config.timeouts.client_header } else { config.timeouts.keep_alive },
        whole: Some(config.timeouts.client_header),
        deadline: between.head_deadline,
        may_block,
        ask_again_every: Some(ASK_AGAIN_EVERY),
    };
    let asked = Instant::now();
    let read = read_request_head_into(&mut client.stream, config.limits.max_header_bytes, &mut wait, head);
    between.head_deadline = wait.deadline;
    between.ticket.leave_idle();
    let now = Instant::now();
    if first {
        note_handshake(runtime, client.stream.get_ref(), &read);
    }
    match read {
        Ok(()) => {
            between.head_deadline = None;
            NextHead::Read(now)
        }
        Err(HeadError::WouldBlock) => NextHead::Park(between.head_deadline.unwrap_or(asked + wait.first_byte)),
        Err(e) => {
            if let Some(error) = refusal_for(e, first, between.peer) {
                let outcome = exchange::refuse(client, error);
                let received = client.stream.received() - between.counted;
                ended::record(runtime, &state, &outcome.ended(between.peer, None, now, received));
            }
            NextHead::Close
        }
    }
}

/// A connection leaving its worker part way through: to the waiting room, or to wait for its
/// address's share.
struct Parking {
    client: ExchangeIo,
    head: RequestHead,
    between: Between,
    /// With a head read: when it was complete. The head then waits with the connection.
    body_since: Option<Instant>,
}

/// Gives the worker's buffers back and makes the connection one that waits off the worker,
/// keeping the bytes read so far and, with `body_since`, the parsed head.
fn set_aside(runtime: &Arc<Runtime>, parking: Parking, hold_body: bool) -> ClientConn {
    let Parking { client, head, between, body_since } = parking;
    let (stream, exchange) = client.into_parts();
    let partial = stream.buffered().to_vec();
    let (stream, read) = stream.into_parts();
    let pending = match body_since {
        Some(since) => {
            let _held = hold_body.then(|| HeldBodyBytes::new(runtime, partial.len()));
            return_buffers(WorkerBuffers { read, head: RequestHead::default(), exchange });
            Some(Box::new(Pending { head, since, _held }))
        }
        None => {
            return_buffers(WorkerBuffers { read, head, exchange });
            None
        }
    };
    ClientConn { stream, peer: between.peer, partial, pending, holds_share: false, between }
}

/// Parks the connection in the waiting room until it is readable or `expires`.
fn park(runtime: &Arc<Runtime>, parking: Parking, expires: Instant) {
    let mut conn = set_aside(runtime, parking, true);
    if conn.stream.has_buffered_plaintext() {
        // TLS decrypted more than was read: the socket will not say so.
        dispatch(runtime, conn, true);
    } else {
        runtime.waiting_room.park(Box::new(conn), expires);
    }
}

/// The connection with its complete request, waiting for its address's share, which the
/// connection that lets go of it hands over.
fn wait_for_share(runtime: &Arc<Runtime>, parking: Parking) -> ClientConn {
    let mut conn = set_aside(runtime, parking, false);
    conn.holds_share = true;
    conn
}

/// True when request bytes are already buffered, held by TLS, or waiting in the socket.
fn has_input(stream: &mut BufferedStream<ClientTransport>) -> bool {
    if !stream.buffered().is_empty() || stream.get_mut().has_buffered_plaintext() {
        return true;
    }
    matches!(sys::peek_now(stream.get_ref().socket()), Ok(n) if n > 0)
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
