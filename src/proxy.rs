//! One exchange, top to bottom: check the request, route it to a pool, pick a backend (waiting
//! in the pool's queue when every backend is at its limit), get a connection (reused or new),
//! send the request and its body, read the response head, relay the response (with a sticky
//! cookie when the pool asks for one), and put the backend connection back for reuse when it
//! is still clean.
//!
//! Called by `connection` once per request head. Writes the backend's counters and idle
//! connections; reads the current [`State`].
//!
//! An upgrade request (WebSocket and the like) goes the same way; if the backend answers
//! `101`, the exchange passes the `101` on and becomes a two-way [`tunnel`] until either side
//! closes, and that backend connection is never reused. Any other answer is an ordinary
//! response.
//!
//! Retries follow one rule: a request may go to another attempt only while no byte of it can
//! have been acted on. A failed connect moves to the next backend (up to the pool's
//! `retries`). A reused idle connection that turns out dead before any response byte is
//! replaced once by a fresh connection to the same backend, but only for a bodiless,
//! idempotent request, which the backend may safely see twice.

use crate::backend::{Backend, Upstream};
use crate::config::ListenerConfig;
use crate::http::body::{relay_body, RelayError, Sink};
use crate::http::cookie::find_cookie;
use crate::http::error::{canned_response, HttpError};
use crate::http::framing::{content_length, request_framing, response_framing, BodyFraming};
use crate::http::head::{read_response_head, HeadError, RequestHead, ResponseHead, Version};
use crate::http::headers::{
    connection_tokens, is_persistent, wants_upgrade, write_interim_head, write_request_head, write_response_head,
    write_switching_head, ResponseFraming,
};
use crate::http::request::check_request;
use crate::http::stream::{is_timeout, BufferedStream};
use crate::pool::{NoSlot, PickRequest, Pool};
use crate::runtime::{Runtime, State};
use crate::tunnel::{self, End};
use log::{debug, warn};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The largest response head sluice accepts from a backend; also the size of the buffer
/// response bodies stream through.
pub const BACKEND_BUFFER_BYTES: usize = 64 * 1024;

/// A client connection as the exchange sees it, with the buffers it borrows from its worker.
pub struct Client {
    pub stream: BufferedStream,
    pub peer: SocketAddr,
    /// Output for the client, collected so that a head and its body leave together.
    pub out: Vec<u8>,
    /// Output for the backend, likewise.
    upstream_out: Vec<u8>,
    /// The read buffer for backend responses, allocated on first use.
    upstream_buf: Option<Box<[u8]>>,
}

/// The buffers an exchange needs besides the client's read buffer; a worker keeps one set
/// and lends it to each connection it serves.
#[derive(Default)]
pub struct ExchangeBuffers {
    out: Vec<u8>,
    upstream_out: Vec<u8>,
    upstream_buf: Option<Box<[u8]>>,
}

impl Client {
    pub fn new(stream: BufferedStream, peer: SocketAddr, buffers: ExchangeBuffers) -> Client {
        let ExchangeBuffers { out, upstream_out, upstream_buf } = buffers;
        Client { stream, peer, out, upstream_out, upstream_buf }
    }

    /// Gives back the stream and the lent buffers.
    pub fn into_parts(self) -> (BufferedStream, ExchangeBuffers) {
        let buffers =
            ExchangeBuffers { out: self.out, upstream_out: self.upstream_out, upstream_buf: self.upstream_buf };
        (self.stream, buffers)
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
    fn closed(status: u16) -> Outcome {
        Outcome { status, body_bytes: 0, backend: None, keep_alive: false }
    }
}

/// A status that says the client went away before the response, as nginx logs it.
const CLIENT_CLOSED: u16 = 499;

pub fn exchange(ctx: &Context, client: &mut Client, head: &mut RequestHead) -> Outcome {
    let expects_continue = match check_request(head) {
        Ok(expects) => expects,
        Err(e) => return refuse(client, e),
    };
    let framing = match request_framing(head) {
        Ok(framing) => framing,
        Err(e) => return refuse(client, e),
    };
    if let (BodyFraming::Length(n), Some(max)) = (framing, ctx.state.config.limits.max_body_bytes) {
        if n > max {
            return refuse(client, HttpError::BodyTooLarge);
        }
    }
    let body_pending = framing != BodyFraming::Empty;
    let Some(pool) = ctx.state.route(ctx.listener, head) else {
        return answer(client, 404, "no route for this host and path", &[], !body_pending);
    };
    let replayable = !body_pending && is_idempotent(&head.method);
    let upgrade = wants_upgrade(head);
    let head: &RequestHead = head;
    let sticky = pool.config.sticky.as_ref().and_then(|s| find_cookie(head, &s.cookie));
    let mut tried = Vec::new();
    loop {
        let wanted = PickRequest { client: client.peer.ip(), tried: &tried, sticky };
        let slot = match pool.acquire(&wanted, ctx.state.config.timeouts.queue) {
            Ok(slot) => slot,
            Err(why) => return answer_no_slot(client, pool, why, tried.is_empty(), !body_pending),
        };
        let backend = slot.backend;
        let set_cookie = pool.sticky_cookie(slot.index, sticky);
        let request = Request { head, framing, expects_continue, replayable, set_cookie, upgrade };
        match forward(ctx, client, &request, backend) {
            Ok(mut outcome) => {
                outcome.backend = Some(Arc::clone(backend));
                return outcome;
            }
            Err(e) => {
                backend.record_failure();
                warn!("{}: cannot connect: {e}", backend.url());
                tried.push(slot.index);
                if tried.len() > pool.config.retries as usize {
                    return answer(client, 502, "no backend could be reached", &[], !body_pending);
                }
                ctx.runtime.metrics.record_retry();
            }
        }
    }
}

/// Answers a request for which the pool had no backend: 503 when nothing is available or
/// the queue timed out, 502 when every backend tried failed.
fn answer_no_slot(client: &mut Client, pool: &Pool, why: NoSlot, first: bool, keep: bool) -> Outcome {
    match why {
        NoSlot::QueueTimedOut => {
            answer(client, 503, "every backend is at its connection limit", &[("Retry-After", "1")], keep)
        }
        NoSlot::Unavailable if first => {
            let retry_after = pool.retry_after_secs().to_string();
            answer(client, 503, "no backend available", &[("Retry-After", &retry_after)], keep)
        }
        NoSlot::Unavailable => answer(client, 502, "no backend could be reached", &[], keep),
    }
}

struct Request<'a> {
    head: &'a RequestHead,
    framing: BodyFraming,
    expects_continue: bool,
    replayable: bool,
    /// A sticky session's `Set-Cookie` value for the response, when the client needs one.
    set_cookie: Option<String>,
    /// The request asks to switch protocols, so a `101` is a valid answer.
    upgrade: bool,
}

/// Sends `request` to `backend` and relays its answer. Fails only when no connection to the
/// backend could be made, so the caller may try another.
fn forward(ctx: &Context, client: &mut Client, request: &Request, backend: &Backend) -> io::Result<Outcome> {
    let timeouts = &ctx.state.config.timeouts;
    let mut upstream = backend.connection(timeouts, !request.replayable)?;
    loop {
        let buf = client.upstream_buf.take().unwrap_or_else(|| vec![0; BACKEND_BUFFER_BYTES].into_boxed_slice());
        let reused = upstream.reused;
        let mut up = BufferedStream::from_parts(upstream.stream, buf, Some(timeouts.backend));
        let attempt = attempt(ctx, client, request, backend, &mut up);
        let (stream, buf) = up.into_parts();
        client.upstream_buf = Some(buf);
        match attempt {
            Attempt::Done { outcome, reusable } => {
                if reusable {
                    backend.put_idle(stream, ctx.state.config.limits.max_idle_per_backend);
                }
                return Ok(outcome);
            }
            Attempt::DeadBeforeResponse(e) if reused && request.replayable => {
                debug!("{}: idle connection was closed ({e}); retrying on a new one", backend.url());
                ctx.runtime.metrics.record_retry();
                upstream = Upstream { stream: backend.connect(timeouts)?, reused: false };
            }
            Attempt::DeadBeforeResponse(e) => {
                backend.record_failure();
                warn!("{}: connection failed before a response: {e}", backend.url());
                return Ok(answer(client, 502, "backend closed the connection", &[], false));
            }
        }
    }
}

enum Attempt {
    Done {
        outcome: Outcome,
        reusable: bool,
    },
    /// The backend connection failed before any byte of a response arrived.
    DeadBeforeResponse(io::Error),
}

fn attempt(
    ctx: &Context,
    client: &mut Client,
    request: &Request,
    backend: &Backend,
    up: &mut BufferedStream,
) -> Attempt {
    let config = &ctx.state.config;
    let head = request.head;
    client.upstream_out.clear();
    write_request_head(&mut client.upstream_out, head, request.framing, client.peer.ip(), &backend.config.authority);
    let wants_continue = request.expects_continue && request.framing != BodyFraming::Empty;
    if wants_continue && client.send(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
        return done(Outcome::closed(CLIENT_CLOSED));
    }
    if request.framing != BodyFraming::Empty && client.stream.set_read_timeout(config.timeouts.client).is_err() {
        return done(Outcome::closed(CLIENT_CLOSED));
    }
    let mut sink = Sink::new(up.get_ref(), &mut client.upstream_out, request.framing == BodyFraming::Chunked);
    match relay_body(&mut client.stream, request.framing, &mut sink, config.limits.max_body_bytes) {
        Ok(_) => {}
        Err(RelayError::Write(e)) if request.framing == BodyFraming::Empty => return Attempt::DeadBeforeResponse(e),
        Err(RelayError::Write(e)) => {
            backend.record_failure();
            warn!("{}: failed while receiving the request body: {e}", backend.url());
            return done(answer(client, 502, "backend failed while receiving the request", &[], false));
        }
        Err(RelayError::Read(e)) if is_timeout(&e) => return done(refuse(client, HttpError::BodyTimeout)),
        Err(RelayError::Read(_) | RelayError::Truncated) => return done(Outcome::closed(CLIENT_CLOSED)),
        Err(RelayError::Malformed(why)) => return done(refuse(client, HttpError::BadRequest(why))),
        Err(RelayError::TooLarge) => return done(refuse(client, HttpError::BodyTooLarge)),
    }
    let response = match read_final_response(client, request, up, config.timeouts.backend) {
        Ok(response) => response,
        Err(HeadError::Closed) => return Attempt::DeadBeforeResponse(io::ErrorKind::UnexpectedEof.into()),
        Err(HeadError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => return Attempt::DeadBeforeResponse(e),
        Err(HeadError::TimedOut { .. }) => {
            backend.record_failure();
            warn!("{}: no response within {:?}", backend.url(), config.timeouts.backend);
            return done(answer(client, 504, "backend did not answer in time", &[], false));
        }
        Err(e) => {
            backend.record_failure();
            warn!("{}: bad response head: {e:?}", backend.url());
            return done(answer(client, 502, "backend sent an invalid response", &[], false));
        }
    };
    if response.status == 101 {
        return switch_protocols(ctx, client, request, up, &response);
    }
    relay_response(ctx, client, request, backend, up, &response)
}

fn done(outcome: Outcome) -> Attempt {
    Attempt::Done { outcome, reusable: false }
}

/// Reads response heads until a final one, passing interim (1xx) ones to HTTP/1.1 clients.
/// `100 Continue` is not passed on: sluice answers `Expect` itself. A `101` is final when the
/// request asked to upgrade, and invalid otherwise.
fn read_final_response(
    client: &mut Client,
    request: &Request,
    up: &mut BufferedStream,
    wait: Duration,
) -> Result<ResponseHead, HeadError> {
    loop {
        let response = read_response_head(up, BACKEND_BUFFER_BYTES, wait)?;
        match response.status {
            101 if request.upgrade => return Ok(response),
            101 => return Err(HeadError::Malformed("101 Switching Protocols without an upgrade request")),
            100 => {}
            102..=199 if request.head.version == Version::Http11 => {
                client.out.clear();
                write_interim_head(&mut client.out, &response);
                let out = std::mem::take(&mut client.out);
                let sent = client.send(&out);
                client.out = out;
                sent.map_err(HeadError::Io)?;
            }
            102..=199 => {}
            _ => return Ok(response),
        }
    }
}

/// The backend agreed to switch protocols: pass its `101` on, then carry bytes both ways,
/// starting with any each side sent early, until both sides have closed. The backend
/// connection is not reusable afterwards.
fn switch_protocols(
    ctx: &Context,
    client: &mut Client,
    request: &Request,
    up: &mut BufferedStream,
    response: &ResponseHead,
) -> Attempt {
    client.out.clear();
    write_switching_head(&mut client.out, response, request.set_cookie.as_deref());
    let out = std::mem::take(&mut client.out);
    let sent = client.send(&out);
    client.out = out;
    if sent.is_err() {
        return done(Outcome::closed(CLIENT_CLOSED));
    }
    let client_end = End { stream: client.stream.get_ref(), already_read: client.stream.buffered() };
    let backend_end = End { stream: up.get_ref(), already_read: up.buffered() };
    let mut outcome = Outcome { status: 101, body_bytes: 0, backend: None, keep_alive: false };
    match tunnel::run(client_end, backend_end, ctx.state.config.timeouts.tunnel) {
        Ok(carried) => outcome.body_bytes = carried.backend_to_client,
        Err(e) => warn!("{}: cannot start a tunnel: {e}", client.peer),
    }
    done(outcome)
}

fn relay_response(
    ctx: &Context,
    client: &mut Client,
    request: &Request,
    backend: &Backend,
    up: &mut BufferedStream,
    response: &ResponseHead,
) -> Attempt {
    let head = request.head;
    let framing = match response_framing(response, &head.method) {
        Ok(framing) => framing,
        Err(why) => {
            backend.record_failure();
            warn!("{}: {why}", backend.url());
            return done(answer(client, 502, "backend sent an invalid response", &[], false));
        }
    };
    let wants_keep_alive = is_persistent(head.version, &connection_tokens(head))
        && !ctx.runtime.is_stopping()
        && !ctx.runtime.should_close_idle();
    let chunked_out = framing == BodyFraming::Chunked && head.version == Version::Http11;
    let (header_framing, keep_alive) = match framing {
        BodyFraming::Empty => (passed_on_length(response, &head.method), wants_keep_alive),
        BodyFraming::Length(n) => (BodyFraming::Length(n), wants_keep_alive),
        BodyFraming::Chunked if chunked_out => (BodyFraming::Chunked, wants_keep_alive),
        BodyFraming::Chunked | BodyFraming::UntilClose => (BodyFraming::UntilClose, false),
    };
    let how = ResponseFraming {
        framing: header_framing,
        keep_alive,
        client_version: head.version,
        backend: ctx.state.config.expose_backend.then(|| backend.url().to_string()),
        set_cookie: request.set_cookie.clone(),
    };
    client.out.clear();
    write_response_head(&mut client.out, response, &how);
    let mut sink = Sink::new(client.stream.get_ref(), &mut client.out, chunked_out);
    let mut outcome = Outcome { status: response.status, body_bytes: 0, backend: None, keep_alive };
    match relay_body(up, framing, &mut sink, None) {
        Ok(n) => outcome.body_bytes = n,
        Err(RelayError::Write(e)) => {
            debug!("{}: client went away during the response: {e}", client.peer);
            outcome.keep_alive = false;
            return done(outcome);
        }
        Err(e) => {
            backend.record_failure();
            warn!("{}: response broken off: {e:?}", backend.url());
            outcome.keep_alive = false;
            return done(outcome);
        }
    }
    let reusable = framing != BodyFraming::UntilClose
        && is_persistent(response.version, &connection_tokens(response))
        && up.buffered().is_empty();
    Attempt::Done { outcome, reusable }
}

/// The `Content-Length` a HEAD or 304 response carries for the body it does not send.
fn passed_on_length(response: &ResponseHead, method: &str) -> BodyFraming {
    let describes_a_body = method == "HEAD" || response.status == 304;
    match content_length(response) {
        Ok(Some(n)) if describes_a_body => BodyFraming::Length(n),
        _ => BodyFraming::Empty,
    }
}

fn is_idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

/// Answers a refused request and closes.
pub fn refuse(client: &mut Client, error: HttpError) -> Outcome {
    debug!("{}: {error}", client.peer);
    let _ = client.send(&error.response());
    Outcome::closed(error.status())
}

/// Answers with one of sluice's own responses.
fn answer(client: &mut Client, status: u16, detail: &str, extra: &[(&str, &str)], keep_alive: bool) -> Outcome {
    let sent = client.send(&canned_response(status, detail, extra, !keep_alive)).is_ok();
    Outcome { status, body_bytes: 0, backend: None, keep_alive: keep_alive && sent }
}
