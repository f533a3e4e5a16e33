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
//! With `acceptProxy`, a PROXY header comes first (`connection/proxy_header.rs`); its source is the client.
//!
//! Draining (sluice stopping or handing over to a new process, or a reload removing the
//! connection's listener) never cuts a connection under a client that may be sending: a
//! request that arrives is answered with `Connection: close`, and only a connection quiet for
//! [`crate::waiting_room::DRAIN_QUIET`] is closed, without a word (`connection/next_head.rs`).

use crate::acme::http01;
use crate::config::{Config, ListenerMode};
use crate::exchange::{self, Context, ExchangeIo, CLIENT_WRITE_CHECK};
use crate::fair_share::ShareWaiter;
use crate::http::error::{canned_response, head_length, HttpError};
use crate::http::head::RequestHead;
use crate::http::stream::BufferedStream;
use crate::ops::ended;
use crate::ops::log_summary;
use crate::proxy;
use crate::runtime::{ClientTicket, Runtime};
use crate::small_body::{read_buffer_bytes, wait_for_small_body, BodyWait, Waiting};
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
mod next_head;
mod proxy_header;

use next_head::{next_head, NextHead, ASK_AGAIN_EVERY};

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
    /// The bound address of the listener that accepted it.
    listener: SocketAddr,
    /// When the head being read must be complete; set at its first byte.
    head_deadline: Option<Instant>,
    /// Requests answered on this connection so far.
    requests: u64,
    /// Keeps the connection counted and registered until it is dropped.
    ticket: ClientTicket,
    /// Bytes read from the client before the current exchange's, on this worker.
    counted: u64,
    /// The PROXY header the connection must still open with (`acceptProxy`).
    proxy: Option<proxy_header::HeaderWait>,
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

    /// Sends one of sluice's own answers off a worker (waiting at most 100 ms for the client
    /// to take it) and closes.
    fn answer_and_close(&mut self, response: &[u8]) {
        let _ = self.stream.socket().set_write_timeout(Some(Duration::from_millis(100)));
        let _ = self.stream.write_all(response);
        self.stream.send_close();
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
    /// the minimum rate gets `408`; an idle keep-alive connection or a PROXY header just close.
    fn expire(mut self: Box<Self>) {
        let answer = if proxy_header::expired_waiting_for_header(&self) {
            return;
        } else if self.pending.is_some() {
            debug!("{}: request body slower than the minimum rate", self.peer);
            self.between.ticket.runtime().metrics.slow_clients.record_body_too_slow();
            HttpError::BodyTimeout
        } else if self.is_waiting_for_head() {
            debug!("{}: request head not received in time", self.peer);
            HttpError::HeaderTimeout
        } else {
            return;
        };
        self.answer_and_close(&answer.response());
    }

    fn is_draining(&self) -> bool {
        self.between.ticket.runtime().is_draining(self.between.listener)
    }
}

/// Takes a connection accepted by the listener bound to `listener`, already counted in, and
/// queues it for the workers.
pub fn accept(runtime: &Arc<Runtime>, stream: TcpStream, peer: SocketAddr, listener: SocketAddr) {
    let ticket = runtime.register_client(peer.ip());
    if let Err(e) = stream.set_nodelay(true) {
        debug!("{peer}: cannot set up the connection: {e}");
        return;
    }
    let Some((state, index)) = runtime.listener_state(listener) else { return };
    let proxy = proxy_header::due(&state.config, index);
    let stream = match state.tls.listeners.get(index).cloned().flatten() {
        None => Transport::Plain(stream),
        Some(tls) => match ServerConnection::new(tls) {
            Ok(session) => Transport::tls(session, stream),
            Err(e) => {
                log_summary::TLS_NOT_STARTED.warn(format_args!("{peer}: cannot start TLS: {e}"));
                return;
            }
        },
    };
    let between = Between { peer, listener, head_deadline: None, requests: 0, ticket, counted: 0, proxy };
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
            next.take_turn();
        }
    }
}

/// A connection waiting for its address's share of the workers, holding none.
struct ShareWait {
    runtime: Arc<Runtime>,
    conn: Option<ClientConn>,
}

impl ShareWaiter for ShareWait {
    fn take_turn(self: Box<Self>) {
        if let Some(conn) = self.conn {
            dispatch(&self.runtime, conn, false);
        }
    }

    /// A request gets `503` with `Retry-After`, as from a full backend queue; a tcp
    /// listener's connection (no request) is closed.
    fn give_up(self: Box<Self>) {
        let Some(mut conn) = self.conn else { return };
        let Some(pending) = conn.pending.as_ref() else { return };
        debug!("{}: waited longer than timeouts.queue for its address's share of the workers", conn.peer);
        let detail = "this client address holds all of its share of the workers";
        let mut answer = canned_response(503, detail, &[("Retry-After", "1")], true);
        if pending.head.method == "HEAD" {
            answer.truncate(head_length(&answer));
        }
        conn.answer_and_close(&answer);
    }
}

/// Takes a share of the workers for `client`, or, when its address holds all of its share,
/// makes `waiting` into a connection that waits for one, at most `timeouts.queue` (and
/// returns `None`). `park` is only called then, so the usual case costs a lock and no
/// allocation.
fn take_share<'a, T>(
    runtime: &'a Arc<Runtime>,
    client: IpAddr,
    config: &Config,
    waiting: &mut Option<T>,
    park: impl FnOnce(T) -> ClientConn,
) -> Option<Share<'a>> {
    let share = config.limits.max_workers_per_client.of(runtime.workers.max_count());
    let later = || -> Box<dyn ShareWaiter> {
        Box::new(ShareWait { runtime: Arc::clone(runtime), conn: waiting.take().map(park) })
    };
    let deadline = Instant::now() + config.timeouts.queue;
    runtime.fair_share.enter(client, share, deadline, later).then(|| Share { runtime, client })
}

/// Serves `conn` on this worker until it closes, parks or waits for its address's share.
fn serve(runtime: &Arc<Runtime>, conn: ClientConn, mut readable: bool) {
    let _serving = runtime.start_serving();
    let Some(conn) = proxy_header::receive(runtime, conn, &mut readable) else { return };
    let ClientConn { stream, peer, partial, mut pending, mut holds_share, mut between } = conn;
    between.counted = 0;
    let Some((state, index)) = runtime.listener_state(between.listener) else { return };
    if state.config.listeners[index].mode == ListenerMode::Tcp {
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
        // Taken once the head is here: a reload while the connection waited applies to it.
        let Some((state, index)) = runtime.listener_state(between.listener) else { break };
        let config = &state.config;
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
        let ctx = Context { runtime, state: &state, listener: &config.listeners[index], bound: between.listener };
        client.answering_head = head.method == "HEAD";
        let outcome = match (ctx.listener.mode, ctx.listener.redirect_to_https) {
            _ if http01::is_challenge(&state, &head) => http01::answer(&ctx, &mut client, &mut head),
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
    let listener = between.listener;
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
    let Some((state, index)) = runtime.listener_state(listener) else { return };
    let Some(_share) = handed.or_else(|| take_share(runtime, peer.ip(), &state.config, &mut waiting, park)) else {
        return;
    };
    let Some((stream, _)) = waiting else { return };
    tcp::serve(runtime, &state, &state.config.listeners[index], stream, peer);
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
