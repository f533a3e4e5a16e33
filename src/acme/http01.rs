//! Answering HTTP-01 challenges: with `acme` configured, a request for
//! `/.well-known/acme-challenge/<token>` on any http listener is answered by sluice before
//! routing and before `redirectToHttps`, with the token's key authorization while its order
//! is pending and `404` otherwise. Called by `connection` per request head; reads
//! [`Challenges`](super::challenges::Challenges) in the runtime.

use crate::exchange::{may_keep_alive, refuse, send_own, Context, ExchangeIo, Outcome};
use crate::http::error::canned_response;
use crate::http::framing::{request_framing, BodyFraming};
use crate::http::head::RequestHead;
use crate::http::request::check_request;
use crate::redirect::ACME_CHALLENGE_PREFIX;
use crate::runtime::State;

/// Whether sluice answers `head` itself as an HTTP-01 challenge.
pub fn is_challenge(state: &State, head: &RequestHead) -> bool {
    state.config.acme.is_some() && head.target.starts_with(ACME_CHALLENGE_PREFIX)
}

/// Answers one challenge request. A body is not read, so a request with one ends the
/// connection.
pub fn answer(ctx: &Context, client: &mut ExchangeIo, head: &mut RequestHead) -> Outcome {
    if let Err(e) = check_request(head) {
        return refuse(client, e);
    }
    let keep_alive = match request_framing(head) {
        Ok(framing) => framing == BodyFraming::Empty && may_keep_alive(ctx, head),
        Err(e) => return refuse(client, e),
    };
    let token = &head.target[ACME_CHALLENGE_PREFIX.len()..];
    let Some(key_authorization) = ctx.runtime.challenges.key_authorization(token) else {
        let response = canned_response(404, "no pending ACME challenge has this token", &[], !keep_alive);
        return send_own(client, response, 404, keep_alive);
    };
    let close = if keep_alive { "" } else { "Connection: close\r\n" };
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{close}\r\n{key_authorization}",
        key_authorization.len()
    );
    send_own(client, response.into_bytes(), 200, keep_alive)
}
