//! Redirect mode: a `"mode": "redirect"` listener answers every request itself with
//! `307 Temporary Redirect` to a backend of its pool, picked by the pool's algorithm, with
//! the original path and query. Clients then talk to that backend directly, as HAProxy's
//! `redir` does. Health still applies: with no backend available the answer is `503`. With
//! `"explain": true` the answer carries the decision (`X-Sluice-Decision`).
//!
//! Also the redirect of an http listener with `redirectToHttps`: every request (but ACME's
//! HTTP-01 challenges, which must be answered over plain HTTP) gets `308 Permanent Redirect`
//! to the same host and target over `https://`.
//!
//! Called by `connection` once per request head on redirect listeners and on listeners that
//! redirect to https. Writes the picked backend's request counter.

use crate::backend_error::BackendError;
use crate::exchange::{may_keep_alive, refuse, send_own, Context, ExchangeIo, Outcome};
use crate::explain::{Decision, DECISION_FIELD};
use crate::http::error::canned_response;
use crate::http::framing::{request_framing, BodyFraming};
use crate::http::head::{HeaderList, RequestHead};
use crate::http::request::check_request;
use crate::routing::request_host;
use std::sync::Arc;

/// Answers one request with a redirect to a backend.
pub fn answer(ctx: &Context, client: &mut ExchangeIo, head: &mut RequestHead) -> Outcome {
    let keep_alive = match check(ctx, client, head) {
        Ok(keep_alive) => keep_alive,
        Err(refused) => return refused,
    };
    let Some(pool) = ctx.state.listener_pool(ctx.listener) else {
        return send_own(client, canned_response(404, "no pool for this listener", &[], true), 404, false);
    };
    let mut decision = ctx.state.config.explain.then(|| Decision::for_pool(ctx.listener, head, &pool.config));
    let picked = match decision.as_mut() {
        Some(decision) => pool.pick_noting(client.peer.ip(), decision),
        None => pool.pick(&[], client.peer.ip()),
    };
    let decided = decision.as_mut().map(|d| (DECISION_FIELD, d.render()));
    let Some(index) = picked else {
        let error = BackendError::Unavailable { retry_after_secs: pool.retry_after_secs() };
        let retry_after = pool.retry_after_secs().to_string();
        let extra: Vec<_> = [("Retry-After", retry_after.as_str())].into_iter().chain(decided).collect();
        let response = canned_response(error.status(), error.detail(), &extra, !keep_alive);
        return send_own(client, response, error.status(), keep_alive);
    };
    let backend = &pool.backends[index];
    let _counted = backend.start_exchange();
    let target = location(backend.url(), &head.target);
    let extra: Vec<_> = [("Location", target.as_str())].into_iter().chain(decided).collect();
    let response = canned_response(307, &format!("see {target}"), &extra, !keep_alive);
    let mut outcome = send_own(client, response, 307, keep_alive);
    outcome.backend = Some(Arc::clone(backend));
    outcome
}

/// Checks a request to be answered with a redirect and says whether the connection may carry
/// another after it; a refused request gets its answer as the error. A request body is not
/// read: the redirect asks the client to send it again elsewhere, so a request with one ends
/// the connection.
fn check(ctx: &Context, client: &mut ExchangeIo, head: &mut RequestHead) -> Result<bool, Outcome> {
    check_request(head).map_err(|e| refuse(client, e))?;
    let framing = request_framing(head).map_err(|e| refuse(client, e))?;
    Ok(framing == BodyFraming::Empty && may_keep_alive(ctx, head))
}

/// Where ACME's HTTP-01 challenges are fetched; never redirected to https.
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Whether a request on a `redirectToHttps` listener is redirected (ACME challenges are not).
pub fn redirects_to_https(head: &RequestHead) -> bool {
    !head.target.starts_with(ACME_CHALLENGE_PREFIX)
}

/// Answers one request with `308` to `https://` on `port`, same host and target.
pub fn to_https(ctx: &Context, client: &mut ExchangeIo, head: &mut RequestHead, port: u16) -> Outcome {
    let keep_alive = match check(ctx, client, head) {
        Ok(keep_alive) => keep_alive,
        Err(refused) => return refused,
    };
    let Some(host) = head.value("host").and_then(request_host) else {
        let response = canned_response(400, "a Host field is needed to redirect to https", &[], true);
        return send_own(client, response, 400, false);
    };
    let target = https_location(host, port, &head.target);
    let response = canned_response(308, &format!("see {target}"), &[("Location", &target)], !keep_alive);
    send_own(client, response, 308, keep_alive)
}

/// `https://host[:port]target`, the port written unless it is 443: pure.
pub fn https_location(host: &str, port: u16, target: &str) -> String {
    let target = if target.starts_with('/') { target } else { "/" };
    match port {
        443 => format!("https://{host}{target}"),
        port => format!("https://{host}:{port}{target}"),
    }
}

/// Where a request for `target` is sent on the backend at `url`: pure.
pub fn location(url: &str, target: &str) -> String {
    let base = url.trim_end_matches('/');
    if target.starts_with('/') {
        format!("{base}{target}")
    } else {
        format!("{base}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_locations_keep_host_and_target_and_name_other_ports() {
        let cases = [
            ("example.com", 443, "/a?b=c", "https://example.com/a?b=c"),
            ("example.com", 8443, "/", "https://example.com:8443/"),
            ("[::1]", 443, "/x", "https://[::1]/x"),
            ("example.com", 443, "*", "https://example.com/"),
        ];
        for (host, port, target, expected) in cases {
            assert_eq!(https_location(host, port, target), expected, "{host} {port} {target}");
        }
    }

    #[test]
    fn location_is_the_backend_url_with_the_original_path_and_query() {
        let cases = [
            ("http://127.0.0.1:5001", "/", "http://127.0.0.1:5001/"),
            ("http://127.0.0.1:5001/", "/a/b?c=d&e", "http://127.0.0.1:5001/a/b?c=d&e"),
            ("http://app.internal", "/x", "http://app.internal/x"),
            ("http://[::1]:9", "/?q", "http://[::1]:9/?q"),
            ("http://127.0.0.1:5001", "*", "http://127.0.0.1:5001/"),
        ];
        for (url, target, expected) in cases {
            assert_eq!(location(url, target), expected, "{url} + {target}");
        }
    }
}
