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
//! While it waits for a head the connection is marked idle in the runtime's registry, so that
//! stopping closes it at once instead of waiting for it; a connection that finds sluice
//! stopping closes unless a request is already waiting to be read.

use crate::config::ListenerMode;
use crate::exchange::{self, Context, ExchangeBuffers, ExchangeIo};
use crate::http::error::HttpError;
use crate::http::head::{read_request_head_into, HeadError, HeadWait, RequestHead};
use crate::http::stream::BufferedStream;
use crate::ops::ended;
use crate::proxy;
use crate::runtime::{ClientTicket, Runtime};
use crate::sys;
use crate::transport::{ClientTransport, Transport};
use crate::waiting_room::Waiter;
use crate::{redirect, tcp};
use log::{debug, error, warn};
use rustls::ServerConnection;
use std::cell::RefCell;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A client connection while no worker holds it: what must survive between its requests.
pub struct ClientConn {
    pub stream: ClientTransport,
    pub peer: SocketAddr,
    /// Which configured listener accepted it.
    listener: usize,
    /// Bytes of a head that had begun to arrive when the connection was parked.
    partial_head: Vec<u8>,
    /// When the head being read must be complete; set at its first byte.
    head_deadline: Option<Instant>,
    /// Requests answered on this connection so far.
    requests: u64,
    /// Keeps the connection counted and registered until it is dropped.
    ticket: ClientTicket,
}

impl ClientConn {
    /// Whether closing it now leaves a request unanswered: a head had begun, or none ever came.
    pub fn is_waiting_for_head(&self) -> bool {
        !self.partial_head.is_empty() || self.requests == 0
    }
}

impl Waiter for ClientConn {
    fn fd(&self) -> RawFd {
        self.stream.socket().as_raw_fd()
    }

    fn wake(self: Box<Self>) {
        let runtime = Arc::clone(self.ticket.runtime());
        dispatch(&runtime, *self, true);
    }

    /// A head that began (or a first one that never came) gets `408`; an idle keep-alive
    /// connection just closes.
    fn expire(mut self: Box<Self>) {
        if self.is_waiting_for_head() {
            debug!("{}: request head not received in time", self.peer);
            let _ = self.stream.socket().set_write_timeout(Some(Duration::from_millis(100)));
            let _ = self.stream.write_all(&HttpError::HeaderTimeout.response());
            self.stream.send_close();
        }
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
                warn!("{peer}: cannot start TLS: {e}");
                return;
            }
        },
    };
    let conn =
        ClientConn { stream, peer, listener, partial_head: Vec::new(), head_deadline: None, requests: 0, ticket };
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

/// What a worker thread keeps from one connection to the next, so that serving a request
/// allocates nothing once the worker has served a few.
struct WorkerBuffers {
    read: Box<[u8]>,
    /// The request head, refilled for each request.
    head: RequestHead,
    exchange: ExchangeBuffers,
}

thread_local! {
    /// The buffers of this worker thread, lent to the connection it serves.
    static WORKER_BUFFERS: RefCell<Option<WorkerBuffers>> = const { RefCell::new(None) };
}

fn take_buffers(read_capacity: usize) -> WorkerBuffers {
    match WORKER_BUFFERS.with(|b| b.borrow_mut().take()) {
        Some(buffers) if buffers.read.len() == read_capacity => buffers,
        _ => WorkerBuffers {
            read: vec![0; read_capacity].into_boxed_slice(),
            head: RequestHead::default(),
            exchange: ExchangeBuffers::default(),
        },
    }
}

fn return_buffers(buffers: WorkerBuffers) {
    WORKER_BUFFERS.with(|b| *b.borrow_mut() = Some(buffers));
}

/// Serves `conn` on this worker until it closes or parks.
fn serve(runtime: &Arc<Runtime>, conn: ClientConn, mut readable: bool) {
    let _serving = runtime.start_serving();
    let ClientConn { stream, peer, listener, partial_head, mut head_deadline, mut requests, ticket } = conn;
    let state = runtime.state();
    if state.config.listeners[listener].mode == ListenerMode::Tcp {
        tcp::serve(runtime, &state, &state.config.listeners[listener], stream, peer);
        return;
    }
    drop(state);
    let capacity = runtime.state().config.limits.max_header_bytes.max(partial_head.len());
    let WorkerBuffers { read, mut head, exchange } = take_buffers(capacity);
    let mut stream = BufferedStream::from_parts(stream, read, None);
    stream.preload(&partial_head);
    let mut client = ExchangeIo::new(stream, peer, exchange);
    let _ = client.stream.get_ref().socket().set_write_timeout(Some(runtime.state().config.timeouts.client));
    // Bytes read from the client before the current exchange's (the preloaded ones count).
    let mut counted = 0;
    loop {
        let state = runtime.state();
        let config = &state.config;
        if !ticket.enter_idle() {
            // Stopping: serve only a request that is already here.
            if !readable && !has_input(&mut client.stream) {
                break;
            }
            ticket.leave_idle();
        }
        let mut may_block = || std::mem::take(&mut readable) || !runtime.should_park();
        let mut wait = HeadWait {
            first_byte: if requests == 0 { config.timeouts.client_header } else { config.timeouts.keep_alive },
            whole: Some(config.timeouts.client_header),
            deadline: head_deadline,
            may_block: &mut may_block,
        };
        let read = read_request_head_into(&mut client.stream, config.limits.max_header_bytes, &mut wait, &mut head);
        head_deadline = wait.deadline;
        ticket.leave_idle();
        let started = Instant::now();
        if requests == 0 {
            note_handshake(runtime, client.stream.get_ref(), &read);
        }
        match read {
            Ok(()) => {}
            Err(HeadError::WouldBlock) => {
                let expires = head_deadline.unwrap_or_else(|| started + wait.first_byte);
                let (stream, exchange) = client.into_parts();
                let partial_head = stream.buffered().to_vec();
                let (stream, read) = stream.into_parts();
                return_buffers(WorkerBuffers { read, head, exchange });
                let mut conn = ClientConn { stream, peer, listener, partial_head, head_deadline, requests, ticket };
                if conn.stream.has_buffered_plaintext() {
                    // TLS decrypted more than the head took: the socket will not say so.
                    dispatch(runtime, conn, true);
                } else {
                    runtime.waiting_room.park(Box::new(conn), expires);
                }
                return;
            }
            Err(e) => {
                if let Some(error) = refusal_for(e, requests == 0, peer) {
                    let outcome = exchange::refuse(&mut client, error);
                    let received = client.stream.received() - counted;
                    ended::record(runtime, &state, &outcome.ended(peer, None, started, received));
                }
                break;
            }
        }
        head_deadline = None;
        let ctx = Context { runtime, state: &state, listener: &config.listeners[listener] };
        let outcome = match (ctx.listener.mode, ctx.listener.redirect_to_https) {
            (ListenerMode::Redirect, _) => redirect::answer(&ctx, &mut client, &mut head),
            (_, Some(port)) if redirect::redirects_to_https(&head) => {
                redirect::to_https(&ctx, &mut client, &mut head, port)
            }
            _ => proxy::exchange(&ctx, &mut client, &mut head),
        };
        let received = client.stream.received() - counted;
        counted += received;
        ended::record(runtime, &state, &outcome.ended(peer, Some(&head), started, received));
        requests += 1;
        if !outcome.keep_alive {
            break;
        }
    }
    client.stream.get_mut().send_close();
    let (stream, exchange) = client.into_parts();
    let (_, read) = stream.into_parts();
    return_buffers(WorkerBuffers { read, head, exchange });
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
