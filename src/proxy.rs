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
//! Retries follow the rule HAProxy and Envoy state: a request goes to another attempt only
//! while it cannot have been acted on twice ([`after_failure`] decides). A failed connect sent
//! nothing, so any request moves to the next backend (up to the pool's `retries`). A
//! connection that dies before any response byte may have delivered the request, so only a
//! replayable one (idempotent method, no body: a streamed body is gone) is sent again: on a
//! fresh connection to the same backend when a reused idle connection died (the backend had
//! closed it), on the next backend when a fresh one did. Once a response byte has come back,
//! or a request body has started to flow, nothing is retried. Connect failures and fresh
//! connections dying before a response also count towards passive health.

use crate::backend::{Backend, Upstream};
use crate::config::ListenerConfig;
use crate::health::record_traffic_failure;
use crate::http::body::{relay_body, RelayError, Sink};
use crate::http::cookie::find_cookie;
use crate::http::error::{canned_response, HttpError};
use crate::http::framing::{content_length, request_framing, response_framing, BodyFraming};
use crate::http::head::{read_response_head_into, HeadError, RequestHead, ResponseHead, Version};
use crate::http::headers::{
    is_persistent, wants_upgrade, write_interim_head, write_request_head, write_response_head, write_switching_head,
    ResponseFraming,
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
    /// The backend's response head of the current exchange, refilled by each.
    response: ResponseHead,
}

/// The buffers an exchange needs besides the client's read buffer; a worker keeps one set
/// and lends it to each connection it serves.
#[derive(Default)]
pub struct ExchangeBuffers {
    out: Vec<u8>,
    upstream_out: Vec<u8>,
    upstream_buf: Option<Box<[u8]>>,
    response: ResponseHead,
}

impl Client {
    pub fn new(stream: BufferedStream, peer: SocketAddr, buffers: ExchangeBuffers) -> Client {
        let ExchangeBuffers { out, upstream_out, upstream_buf, response } = buffers;
        Client { stream, peer, out, upstream_out, upstream_buf, response }
    }

    /// Gives back the stream and the lent buffers.
    pub fn into_parts(self) -> (BufferedStream, ExchangeBuffers) {
        let Client { stream, out, upstream_out, upstream_buf, response, .. } = self;
        (stream, ExchangeBuffers { out, upstream_out, upstream_buf, response })
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
    // sluice's own answers keep the connection only when the client wants that, no unread
    // body stands between this request and the next, and sluice is not stopping.
    let keep = !body_pending && is_persistent(head.version, head) && !ctx.runtime.is_stopping();
    let Some(pool) = ctx.state.route(ctx.listener, head) else {
        return answer(client, 404, "no route for this host and path", &[], keep);
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
            Err(why) => return answer_no_slot(client, pool, why, tried.is_empty(), keep),
        };
        let backend = slot.backend;
        let set_cookie = pool.sticky_cookie(slot.index, sticky);
        let request = Request { head, framing, expects_continue, replayable, set_cookie, upgrade };
        let failure = match forward(ctx, client, &request, backend) {
            Ok(mut outcome) => {
                outcome.backend = Some(Arc::clone(backend));
                return outcome;
            }
            Err(failure) => failure,
        };
        note_failure(ctx, pool, backend, &failure);
        tried.push(slot.index);
        if after_failure(failure.stage, replayable) != NextStep::OtherBackend {
            return answer(client, 502, "backend closed the connection before answering", &[], false);
        }
        if tried.len() > pool.config.retries as usize {
            return answer(client, 502, "no backend could be reached", &[], keep);
        }
        ctx.runtime.metrics.record_retry();
    }
}

/// How far an attempt got before its connection failed; no response byte had arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No connection could be made: nothing was sent.
    Connect,
    /// The connection failed while sending the request or waiting for the response head;
    /// `reused` says it came from the idle set (so the backend may just have closed it).
    BeforeResponse { reused: bool },
}

/// Where an exchange goes after a failure at `stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    NewConnectionSameBackend,
    OtherBackend,
    /// Answer 502: the request may have been acted on and cannot be sent again.
    GiveUp,
}

/// The retry rule. `replayable`: the method is idempotent and there is no body.
pub fn after_failure(stage: Stage, replayable: bool) -> NextStep {
    match stage {
        Stage::Connect => NextStep::OtherBackend,
        Stage::BeforeResponse { reused: true } if replayable => NextStep::NewConnectionSameBackend,
        Stage::BeforeResponse { reused: false } if replayable => NextStep::OtherBackend,
        Stage::BeforeResponse { .. } => NextStep::GiveUp,
    }
}

/// A failed attempt, with no response byte received.
struct Failure {
    stage: Stage,
    error: io::Error,
}

/// Logs a failed attempt and counts it against the backend: towards passive health unless it
/// was a reused idle connection, which the backend may simply have closed.
fn note_failure(ctx: &Context, pool: &Pool, backend: &Backend, failure: &Failure) {
    let error = &failure.error;
    match failure.stage {
        Stage::Connect => warn!("{}: cannot connect: {error}", backend.url()),
        Stage::BeforeResponse { .. } => warn!("{}: connection failed before a response: {error}", backend.url()),
    }
    if failure.stage == (Stage::BeforeResponse { reused: true }) {
        backend.record_failure();
    } else {
        record_traffic_failure(ctx.runtime, pool, backend, error);
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

/// Sends `request` to `backend` and relays its answer. Fails only when the connection failed
/// before any response byte and the request was not sent again on a fresh one.
fn forward(ctx: &Context, client: &mut Client, request: &Request, backend: &Backend) -> Result<Outcome, Failure> {
    let timeouts = &ctx.state.config.timeouts;
    let connect_failed = |error| Failure { stage: Stage::Connect, error };
    let mut upstream = backend.connection(timeouts, !request.replayable).map_err(connect_failed)?;
    loop {
        let buf = client.upstream_buf.take().unwrap_or_else(|| vec![0; BACKEND_BUFFER_BYTES].into_boxed_slice());
        let reused = upstream.reused;
        let mut up = BufferedStream::from_parts(upstream.stream, buf, Some(timeouts.backend));
        let attempt = attempt(ctx, client, request, backend, &mut up);
        let (stream, buf) = up.into_parts();
        client.upstream_buf = Some(buf);
        let error = match attempt {
            Attempt::Done { outcome, reusable } => {
                if reusable {
                    backend.put_idle(stream, ctx.state.config.limits.max_idle_per_backend);
                }
                return Ok(outcome);
            }
            Attempt::DeadBeforeResponse(error) => error,
        };
        let stage = Stage::BeforeResponse { reused };
        if after_failure(stage, request.replayable) != NextStep::NewConnectionSameBackend {
            return Err(Failure { stage, error });
        }
        debug!("{}: idle connection was closed ({error}); retrying on a new one", backend.url());
        ctx.runtime.metrics.record_retry();
        upstream = Upstream { stream: backend.connect(timeouts).map_err(connect_failed)?, reused: false };
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
    if request.framing != BodyFraming::Empty {
        client.stream.set_read_timeout(config.timeouts.client);
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
    match read_final_response(client, request, up, config.timeouts.backend) {
        Ok(()) => backend.count_success(),
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
    }
    if client.response.status == 101 {
        return switch_protocols(ctx, client, request, up);
    }
    relay_response(ctx, client, request, backend, up)
}

fn done(outcome: Outcome) -> Attempt {
    Attempt::Done { outcome, reusable: false }
}

/// Reads response heads into `client.response` until a final one, passing interim (1xx) ones
/// to HTTP/1.1 clients. `100 Continue` is not passed on: sluice answers `Expect` itself. A
/// `101` is final when the request asked to upgrade, and invalid otherwise.
fn read_final_response(
    client: &mut Client,
    request: &Request,
    up: &mut BufferedStream,
    wait: Duration,
) -> Result<(), HeadError> {
    loop {
        read_response_head_into(up, BACKEND_BUFFER_BYTES, wait, &mut client.response)?;
        match client.response.status {
            101 if request.upgrade => return Ok(()),
            101 => return Err(HeadError::Malformed("101 Switching Protocols without an upgrade request")),
            100 => {}
            102..=199 if request.head.version == Version::Http11 => {
                client.out.clear();
                write_interim_head(&mut client.out, &client.response);
                client.stream.get_ref().write_all(&client.out).map_err(HeadError::Io)?;
            }
            102..=199 => {}
            _ => return Ok(()),
        }
    }
}

/// The backend agreed to switch protocols: pass its `101` on, then carry bytes both ways,
/// starting with any each side sent early, until both sides have closed. The backend
/// connection is not reusable afterwards.
fn switch_protocols(ctx: &Context, client: &mut Client, request: &Request, up: &mut BufferedStream) -> Attempt {
    client.out.clear();
    write_switching_head(&mut client.out, &client.response, request.set_cookie.as_deref());
    if client.stream.get_ref().write_all(&client.out).is_err() {
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

/// Relays the response in `client.response` and its body from `up` to the client.
fn relay_response(
    ctx: &Context,
    client: &mut Client,
    request: &Request,
    backend: &Backend,
    up: &mut BufferedStream,
) -> Attempt {
    let head = request.head;
    let response = &client.response;
    let framing = match response_framing(response, &head.method) {
        Ok(framing) => framing,
        Err(why) => {
            backend.record_failure();
            warn!("{}: {why}", backend.url());
            return done(answer(client, 502, "backend sent an invalid response", &[], false));
        }
    };
    let wants_keep_alive =
        is_persistent(head.version, head) && !ctx.runtime.is_stopping() && !ctx.runtime.should_close_idle();
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
        backend: ctx.state.config.expose_backend.then(|| backend.url()),
        set_cookie: request.set_cookie.as_deref(),
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
    let reusable =
        framing != BodyFraming::UntilClose && is_persistent(response.version, response) && up.buffered().is_empty();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_rule() {
        use NextStep::*;
        let fresh = Stage::BeforeResponse { reused: false };
        let reused = Stage::BeforeResponse { reused: true };
        // (where it failed, idempotent without a body, what happens next)
        let table = [
            (Stage::Connect, true, OtherBackend),
            (Stage::Connect, false, OtherBackend),
            (reused, true, NewConnectionSameBackend),
            (reused, false, GiveUp),
            (fresh, true, OtherBackend),
            (fresh, false, GiveUp),
        ];
        for (stage, replayable, next) in table {
            assert_eq!(after_failure(stage, replayable), next, "{stage:?}, replayable: {replayable}");
        }
    }

    #[test]
    fn idempotent_methods() {
        for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent(method), "{method}");
        }
        for method in ["POST", "PATCH", "CONNECT", "LOCK", "get"] {
            assert!(!is_idempotent(method), "{method}");
        }
    }
}
