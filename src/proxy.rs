//! One exchange, top to bottom: check the request, route it to a pool, apply the route's
//! edge controls (refusing before any backend is picked or body byte read), pick a backend
//! (waiting in the pool's queue when every backend is at its limit), get a connection (reused
//! or new), send the request and its body (header rules applied to its head), read the
//! response head, relay the response (with a sticky cookie when the pool asks for one, and
//! the route's header rules; a large body between plain sockets by splice, [`zero_copy`]),
//! and put the backend connection back for reuse when it is still clean.
//!
//! Called by `connection` once per request head. Writes the backend's counters and idle
//! connections; reads the current [`crate::runtime::State`].
//!
//! An upgrade request (WebSocket and the like) goes the same way; if the backend answers
//! `101`, the exchange passes the `101` on and becomes a two-way [`tunnel`] until either side
//! closes, and that backend connection is never reused. Any other answer is an ordinary
//! response.
//!
//! Retries follow the rule in [`crate::backend_error`]; connect failures and fresh
//! connections dying before a response also count towards passive health.

use crate::backend::{Backend, Opening, Upstream};
use crate::backend_error::{after_failure, is_untrusted_certificate, BackendError, NextStep, Stage};
use crate::edge::Edge;
use crate::exchange::{
    answer, may_keep_alive, refuse, Context, ExchangeIo, Outcome, PacedWrite, BACKEND_BUFFER_BYTES, CLIENT_CLOSED,
};
use crate::explain;
use crate::health::record_traffic_failure;
use crate::http::body::{relay_body, RelayError, Sink};
use crate::http::cookie::{find_cookie, set_cookie};
use crate::http::error::HttpError;
use crate::http::framing::{content_length, request_framing, response_framing, BodyFraming};
use crate::http::head::{read_response_head_into, HeadError, RequestHead, ResponseHead, Version};
use crate::http::headers::{
    is_persistent, wants_upgrade, write_interim_head, write_request_head, write_response_head, write_switching_head,
    Forwarded, ResponseFraming,
};
use crate::http::request::check_request;
use crate::http::stream::{is_timeout, BufferedStream};
use crate::ops::log_summary;
use crate::pace::{is_too_slow, MinRate, Pace};
use crate::pool::{PickRequest, Pool};
use crate::transport::BackendTransport;
use crate::tunnel::{self, End};
use crate::zero_copy;
use log::debug;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn exchange(ctx: &Context, client: &mut ExchangeIo, head: &mut RequestHead) -> Outcome {
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
    // sluice's own answers keep the connection only when the client wants that and no unread
    // body stands between this request and the next.
    let keep = !body_pending && may_keep_alive(ctx, head);
    let Some((pool, route)) = ctx.state.route(ctx.listener, head) else {
        return answer(client, 404, "no route for this host and path", &[], keep);
    };
    let edge = route.edge.as_deref();
    if let Some(refused) = edge.and_then(|edge| refused_at_edge(edge, client, head, keep)) {
        return refused;
    }
    let replayable = !body_pending && is_idempotent(&head.method);
    let upgrade = wants_upgrade(head);
    let head: &RequestHead = head;
    let sticky = pool.config.sticky.as_ref().and_then(|s| find_cookie(head, &s.cookie));
    let mut tried = Vec::new();
    let mut decision = ctx.state.config.explain.then(|| explain::Decision::for_pool(ctx.listener, head, &pool.config));
    // Whether the last backend tried failed for want of a trusted TLS certificate.
    let mut untrusted = false;
    loop {
        let wanted = PickRequest { client: client.peer.ip(), tried: &tried, sticky };
        let slot = match pool.acquire_noting(&wanted, ctx.state.config.timeouts.queue, decision.as_mut()) {
            Ok(slot) => slot,
            Err(why) => {
                let error = match BackendError::from_no_slot(why, !tried.is_empty(), pool.retry_after_secs()) {
                    BackendError::Unreachable if untrusted => BackendError::Untrusted,
                    error => error,
                };
                return answer_backend_error(client, &error, keep, decision.as_mut());
            }
        };
        let backend = slot.backend;
        let set_cookie = pool.sticky_cookie(slot.index, sticky).map(|(name, id)| set_cookie(name, id));
        let opening =
            Opening { tls: pool.tls.as_ref(), proxy: pool.config.send_proxy.map(|v| (v, client.addresses())) };
        let decision_text = decision.as_mut().map(|d| d.render());
        let request = Request {
            head,
            framing,
            expects_continue,
            replayable,
            set_cookie,
            upgrade,
            edge,
            opening,
            decision: decision_text,
        };
        let error = match forward(ctx, client, &request, backend) {
            Ok(mut outcome) => {
                outcome.backend = Some(Arc::clone(backend));
                return outcome;
            }
            Err(error) => error,
        };
        note_failure(ctx, pool, backend, &error);
        if let Some(decision) = decision.as_mut() {
            decision.note_failure(backend.url(), &error);
        }
        tried.push(slot.index);
        let BackendError::Failed { stage, .. } = error else {
            // The backend took the request and then failed it: its exchange, its answer.
            let mut outcome = answer_backend_error(client, &error, keep, decision.as_mut());
            outcome.backend = Some(Arc::clone(backend));
            return outcome;
        };
        if after_failure(stage, replayable) != NextStep::OtherBackend {
            return answer_backend_error(client, &error, keep, decision.as_mut());
        }
        untrusted = matches!(&error, BackendError::Failed { error, .. } if is_untrusted_certificate(error));
        if tried.len() > pool.config.retries as usize {
            let error = if untrusted { BackendError::Untrusted } else { BackendError::Unreachable };
            return answer_backend_error(client, &error, keep, decision.as_mut());
        }
        ctx.runtime.metrics.record_retry();
    }
}

/// Applies the route's edge controls to a request from `client`; when they refuse it, answers
/// and returns how the exchange ended. No body byte has been read: with a body announced
/// (`keep` is then false), the connection closes after the answer.
fn refused_at_edge(edge: &Edge, client: &mut ExchangeIo, head: &RequestHead, keep: bool) -> Option<Outcome> {
    let refusal = edge.check(client.peer.ip(), head, Instant::now()).err()?;
    let sent = client.send(&edge.answer(refusal, !keep, head.method == "HEAD")).is_ok();
    Some(Outcome { status: refusal.reason.status(), body_bytes: 0, backend: None, keep_alive: keep && sent })
}

/// Logs a failed attempt and counts it against the backend: towards passive health when the
/// backend could not be reached or a fresh connection died, not when a reused idle connection
/// did (the backend may simply have closed it).
fn note_failure(ctx: &Context, pool: &Pool, backend: &Backend, error: &BackendError) {
    log_summary::BACKEND_FAILED.warn(format_args!("{}: {error}", backend.url()));
    match error {
        BackendError::Failed { stage: Stage::BeforeResponse { reused: true }, .. } => backend.record_failure(),
        BackendError::Failed { error, .. } => record_traffic_failure(ctx.runtime, pool, backend, error),
        _ => backend.record_failure(),
    }
}

/// The one place a backend failure becomes an answer to the client (with the decision that
/// led to it, when `explain` is on).
fn answer_backend_error(
    client: &mut ExchangeIo,
    error: &BackendError,
    keep: bool,
    decision: Option<&mut explain::Decision>,
) -> Outcome {
    let retry_after = error.retry_after_secs().map(|secs| secs.to_string());
    let mut extra: Vec<(&str, &str)> = retry_after.iter().map(|secs| ("Retry-After", secs.as_str())).collect();
    if let Some(decision) = decision {
        extra.push((explain::DECISION_FIELD, decision.render()));
    }
    answer(client, error.status(), error.detail(), &extra, keep && !error.closes_connection())
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
    /// How a new connection to the backend starts (TLS, a PROXY header).
    opening: Opening<'a>,
    /// The route's edge controls, whose header rules apply to both heads.
    edge: Option<&'a Edge>,
    /// Why this backend was picked, when `explain` is on.
    decision: Option<&'a str>,
}

/// Sends `request` to `backend` and relays its answer. Fails only when the connection failed
/// before any response byte and the request was not sent again on a fresh one.
fn forward(
    ctx: &Context,
    client: &mut ExchangeIo,
    request: &Request,
    backend: &Backend,
) -> Result<Outcome, BackendError> {
    let timeouts = &ctx.state.config.timeouts;
    let connect_failed = |error| BackendError::Failed { stage: Stage::Connect, error };
    let mut upstream = backend.connection(timeouts, &request.opening).map_err(connect_failed)?;
    loop {
        let buf = client.backend_buf.take().unwrap_or_else(|| vec![0; BACKEND_BUFFER_BYTES].into_boxed_slice());
        let reused = upstream.reused;
        let mut up = BufferedStream::from_parts(upstream.stream, buf, Some(timeouts.backend));
        let attempt = attempt(ctx, client, request, backend, &mut up);
        let (stream, buf) = up.into_parts();
        client.backend_buf = Some(buf);
        let error = match attempt {
            Attempt::Done { outcome, reusable } => {
                if reusable {
                    backend.put_idle(stream, ctx.state.config.limits.max_idle_per_backend, &request.opening);
                }
                return Ok(outcome);
            }
            Attempt::DeadBeforeResponse(error) => error,
            Attempt::Failed(error) => return Err(error),
        };
        let stage = Stage::BeforeResponse { reused };
        if after_failure(stage, request.replayable) != NextStep::NewConnectionSameBackend {
            return Err(BackendError::Failed { stage, error });
        }
        debug!("{}: idle connection was closed ({error}); retrying on a new one", backend.url());
        ctx.runtime.metrics.record_retry();
        let stream = backend.open(timeouts, &request.opening).map_err(connect_failed)?;
        upstream = Upstream { stream, reused: false };
    }
}

enum Attempt {
    Done {
        outcome: Outcome,
        reusable: bool,
    },
    /// The backend connection failed before any byte of a response arrived.
    DeadBeforeResponse(io::Error),
    /// The backend failed in a way that ends the exchange with an answer from sluice.
    Failed(BackendError),
}

fn attempt(
    ctx: &Context,
    client: &mut ExchangeIo,
    request: &Request,
    backend: &Backend,
    up: &mut BufferedStream<BackendTransport>,
) -> Attempt {
    let config = &ctx.state.config;
    let head = request.head;
    client.backend_out.clear();
    let forwarded = Forwarded { client_ip: client.peer.ip(), https: client.stream.get_ref().is_tls() };
    write_request_head(&mut client.backend_out, head, request.framing, forwarded, &backend.config.authority);
    if let Some(rules) = request.edge.and_then(Edge::request_headers) {
        rules.apply(&mut client.backend_out, 0);
    }
    let wants_continue = request.expects_continue && request.framing != BodyFraming::Empty;
    if wants_continue && client.send(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
        return done(Outcome::closed(CLIENT_CLOSED));
    }
    if request.framing != BodyFraming::Empty {
        client.stream.set_read_timeout(config.timeouts.client);
        client.stream.set_pace(Some(Pace::new(MinRate::of(config), Instant::now())));
    }
    let mut sink = Sink::new(up.get_mut(), &mut client.backend_out, request.framing == BodyFraming::Chunked);
    let relayed = relay_body(&mut client.stream, request.framing, &mut sink, config.limits.max_body_bytes);
    client.stream.set_pace(None);
    match relayed {
        Ok(_) => {}
        Err(RelayError::Write(e)) if request.framing == BodyFraming::Empty => return Attempt::DeadBeforeResponse(e),
        Err(RelayError::Write(e)) => return Attempt::Failed(BackendError::BodyNotTaken(e)),
        Err(RelayError::Read(e)) if is_timeout(&e) => {
            if is_too_slow(&e) {
                ctx.runtime.metrics.slow_clients.record_body_too_slow();
            }
            return done(refuse(client, HttpError::BodyTimeout));
        }
        Err(RelayError::Read(_) | RelayError::Truncated) => return done(Outcome::closed(CLIENT_CLOSED)),
        Err(RelayError::Malformed(why)) => return done(refuse(client, HttpError::BadRequest(why))),
        Err(RelayError::TooLarge) => return done(refuse(client, HttpError::BodyTooLarge)),
    }
    match read_final_response(client, request, up, config.timeouts.backend) {
        Ok(()) => backend.count_success(),
        Err(HeadError::Closed) => return Attempt::DeadBeforeResponse(io::ErrorKind::UnexpectedEof.into()),
        Err(HeadError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => return Attempt::DeadBeforeResponse(e),
        Err(HeadError::TimedOut { .. }) => return Attempt::Failed(BackendError::TimedOut(config.timeouts.backend)),
        Err(e) => return Attempt::Failed(BackendError::InvalidResponse(format!("bad response head: {e:?}"))),
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
    client: &mut ExchangeIo,
    request: &Request,
    up: &mut BufferedStream<BackendTransport>,
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
                client.send_out().map_err(HeadError::Io)?;
            }
            102..=199 => {}
            _ => return Ok(()),
        }
    }
}

/// The backend agreed to switch protocols: pass its `101` on, then carry bytes both ways,
/// starting with any each side sent early, until both sides have closed. The backend
/// connection is not reusable afterwards.
fn switch_protocols(
    ctx: &Context,
    client: &mut ExchangeIo,
    request: &Request,
    up: &mut BufferedStream<BackendTransport>,
) -> Attempt {
    client.out.clear();
    write_switching_head(&mut client.out, &client.response, request.set_cookie.as_deref(), request.decision);
    if let Some(rules) = request.edge.and_then(Edge::response_headers) {
        rules.apply(&mut client.out, 0);
    }
    if client.send_out().is_err() {
        return done(Outcome::closed(CLIENT_CLOSED));
    }
    let (client_pipe, client_early) = client.stream.split();
    let (backend_pipe, backend_early) = up.split();
    let client_end = End { pipe: client_pipe, already_read: client_early };
    let backend_end = End { pipe: backend_pipe, already_read: backend_early };
    let mut outcome = Outcome { status: 101, body_bytes: 0, backend: None, keep_alive: false };
    match tunnel::run(client_end, backend_end, ctx.state.config.timeouts.tunnel) {
        Ok(carried) => outcome.body_bytes = carried.backend_to_client,
        Err(e) => log_summary::TUNNEL_FAILED.warn(format_args!("{}: cannot start a tunnel: {e}", client.peer)),
    }
    done(outcome)
}

/// Relays the response in `client.response` and its body from `up` to the client.
fn relay_response(
    ctx: &Context,
    client: &mut ExchangeIo,
    request: &Request,
    backend: &Backend,
    up: &mut BufferedStream<BackendTransport>,
) -> Attempt {
    let head = request.head;
    let response = &client.response;
    let framing = match response_framing(response, &head.method) {
        Ok(framing) => framing,
        Err(why) => return Attempt::Failed(BackendError::InvalidResponse(why.to_string())),
    };
    let wants_keep_alive = may_keep_alive(ctx, head);
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
        decision: request.decision,
    };
    client.out.clear();
    write_response_head(&mut client.out, response, &how);
    if let Some(rules) = request.edge.and_then(Edge::response_headers) {
        rules.apply(&mut client.out, 0);
    }
    let pace = Pace::new(MinRate::of(&ctx.state.config), Instant::now());
    let mut to_client = PacedWrite::new(client.stream.get_mut(), Some(pace), client.stall_limit);
    let mut outcome = Outcome { status: response.status, body_bytes: 0, backend: None, keep_alive };
    up.set_ack_promptly(framing != BodyFraming::Empty);
    let mut backend_clean = true;
    let relayed = match zero_copy::relay(up, framing, &mut to_client, &mut client.out, &ctx.runtime.metrics) {
        Some(spliced) => spliced.map(|s| {
            backend_clean = s.backend_clean;
            s.length
        }),
        None => relay_body(up, framing, &mut Sink::new(to_client, &mut client.out, chunked_out), None),
    };
    let backend_keeps_alive = is_persistent(response.version, response);
    match relayed {
        Ok(n) => outcome.body_bytes = n,
        Err(RelayError::Write(e)) => {
            if is_too_slow(&e) {
                ctx.runtime.metrics.slow_clients.record_reader_too_slow();
            }
            debug!("{}: client went away during the response: {e}", client.peer);
            outcome.keep_alive = false;
            return done(outcome);
        }
        Err(e) => {
            backend.record_failure();
            log_summary::RESPONSE_BROKEN.warn(format_args!("{}: response broken off: {e:?}", backend.url()));
            outcome.keep_alive = false;
            return done(outcome);
        }
    }
    let reusable =
        framing != BodyFraming::UntilClose && backend_keeps_alive && up.buffered().is_empty() && backend_clean;
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

#[cfg(test)]
mod tests {
    use super::*;

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
