//! Edge controls: who may reach a route, how fast, and which header fields leave it.
//!
//! A route's [`EdgeConfig`] comes from the configuration (`allow`, `deny`, `basicAuth`,
//! `rateLimit`, `requestHeaders`, `responseHeaders`; read by `config::edge_rules`). The
//! runtime builds an [`Edge`] from it only when it has a rule, so a route without rules pays
//! nothing. `proxy` calls [`Edge::check`] right after routing, before a backend is picked or
//! a body byte read, and applies the header rules to the heads it writes.
//!
//! The checks run in this order, the first failing one answering: the address rules (`403`),
//! the rate limit (`429` with `Retry-After`; every request counts, so guessing passwords is
//! limited too), then the credentials (`401` with `WWW-Authenticate`).
//!
//! One file per idea: [`address`] (CIDR blocks), [`basic_auth`] (hashes and credentials),
//! [`rate_limit`] (buckets in a bounded table), [`header_rules`] (rewriting a written head),
//! [`refusals`] (counting and throttled logging).

pub mod address;
pub mod basic_auth;
pub mod header_rules;
pub mod rate_limit;
pub mod refusals;

pub use address::{AddressRules, Cidr};
pub use basic_auth::{BasicAuth, BasicAuthConfig, PasswordHash};
pub use header_rules::HeaderRules;
pub use rate_limit::{RateLimitConfig, RateLimiter, Verdict};
pub use refusals::{Reason, Refusals};

use crate::http::error::canned_response;
use crate::http::head::HeaderList;
use std::net::IpAddr;
use std::time::Instant;

/// A route's edge rules as configured; all empty by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeConfig {
    pub addresses: AddressRules,
    pub basic_auth: Option<BasicAuthConfig>,
    pub rate_limit: Option<RateLimitConfig>,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
}

impl EdgeConfig {
    /// Whether the route has no rule at all.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
            && self.basic_auth.is_none()
            && self.rate_limit.is_none()
            && self.request_headers.is_empty()
            && self.response_headers.is_empty()
    }

    /// The rules in one line, for `--check`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let blocks = |list: &[Cidr]| list.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
        if !self.addresses.allow.is_empty() {
            parts.push(format!("allow {}", blocks(&self.addresses.allow)));
        }
        if !self.addresses.deny.is_empty() {
            parts.push(format!("deny {}", blocks(&self.addresses.deny)));
        }
        if let Some(limit) = &self.rate_limit {
            parts.push(format!(
                "rateLimit {}/s burst {} (remembers {} clients)",
                limit.requests_per_second, limit.burst, limit.max_clients
            ));
        }
        if let Some(auth) = &self.basic_auth {
            let users: Vec<&str> = auth.users.iter().map(|(name, _)| name.as_str()).collect();
            parts.push(format!("basicAuth realm {:?} (users {})", auth.realm, users.join(", ")));
        }
        for (what, rules) in [("requestHeaders", &self.request_headers), ("responseHeaders", &self.response_headers)] {
            let set: Vec<&str> = rules.set.iter().map(|(name, _)| name.as_str()).collect();
            match (set.is_empty(), rules.remove.is_empty()) {
                (true, true) => {}
                (false, true) => parts.push(format!("{what} set {}", set.join(", "))),
                (true, false) => parts.push(format!("{what} remove {}", rules.remove.join(", "))),
                (false, false) => {
                    parts.push(format!("{what} set {}, remove {}", set.join(", "), rules.remove.join(", ")))
                }
            }
        }
        parts.join("; ")
    }
}

/// Why a request was refused, and for how long a rate-limited client should wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// For [`Reason::RateLimited`]: the `Retry-After` seconds; 0 otherwise.
    pub retry_after_secs: u64,
}

/// A route's edge rules at work: the rules, the rate limiter's table, the credentials memo
/// and the refusal counters.
#[derive(Debug)]
pub struct Edge {
    /// Names the route in log lines, such as `listeners[0].routes[1]`.
    route: String,
    /// The rules as configured, to compare on reload and to describe.
    config: EdgeConfig,
    addresses: AddressRules,
    rate_limiter: Option<RateLimiter>,
    basic_auth: Option<BasicAuth>,
    /// The configured request rules, plus removing `Authorization` under `basicAuth`.
    request_headers: HeaderRules,
    response_headers: HeaderRules,
    refusals: Refusals,
}

impl Edge {
    /// The working form of `config` for the route named `route`; `None` when it has no rule.
    pub fn new(config: &EdgeConfig, route: String) -> Option<Edge> {
        if config.is_empty() {
            return None;
        }
        let mut request_headers = config.request_headers.clone();
        let names_authorization = |rules: &HeaderRules| {
            rules.remove.iter().chain(rules.set.iter().map(|(n, _)| n)).any(|n| n.eq_ignore_ascii_case("authorization"))
        };
        if config.basic_auth.is_some() && !names_authorization(&request_headers) {
            request_headers.remove.push("Authorization".to_string());
        }
        Some(Edge {
            route,
            config: config.clone(),
            addresses: config.addresses.clone(),
            rate_limiter: config.rate_limit.clone().map(RateLimiter::new),
            basic_auth: config.basic_auth.clone().map(BasicAuth::new),
            request_headers,
            response_headers: config.response_headers.clone(),
            refusals: Refusals::default(),
        })
    }

    /// Decides whether a request from `client` with `head` may go on, counting (and now and
    /// then logging) a refusal.
    pub fn check(&self, client: IpAddr, head: &impl HeaderList, now: Instant) -> Result<(), Refusal> {
        let refusal = self.first_refusal(client, head, now);
        if let Some(refusal) = refusal {
            if let Some(count) = self.refusals.record(refusal.reason, now) {
                refusals::log_refusals(&self.route, refusal.reason, count, client);
            }
            return Err(refusal);
        }
        Ok(())
    }

    fn first_refusal(&self, client: IpAddr, head: &impl HeaderList, now: Instant) -> Option<Refusal> {
        let refuse = |reason, retry_after_secs| Some(Refusal { reason, retry_after_secs });
        if !self.addresses.admits(client) {
            return refuse(Reason::Denied, 0);
        }
        if let Some(limiter) = &self.rate_limiter {
            if let Verdict::Limited { retry_after_secs } = limiter.check(client, now) {
                return refuse(Reason::RateLimited, retry_after_secs);
            }
        }
        match &self.basic_auth {
            Some(auth) if !auth.admits(head.values("authorization")) => refuse(Reason::Unauthorized, 0),
            _ => None,
        }
    }

    /// sluice's answer to a refused request; `to_head` leaves the body out (the answer to a
    /// `HEAD` request describes a body it does not carry).
    pub fn answer(&self, refusal: Refusal, close: bool, to_head: bool) -> Vec<u8> {
        let mut answer = self.full_answer(refusal, close);
        if to_head {
            if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                answer.truncate(end + 4);
            }
        }
        answer
    }

    fn full_answer(&self, refusal: Refusal, close: bool) -> Vec<u8> {
        let status = refusal.reason.status();
        match refusal.reason {
            Reason::Denied => canned_response(status, "your address may not use this site", &[], close),
            Reason::RateLimited => {
                let seconds = refusal.retry_after_secs.to_string();
                canned_response(status, "slow down", &[("Retry-After", &seconds)], close)
            }
            Reason::Unauthorized => {
                let challenge = self.basic_auth.as_ref().map_or("Basic", |a| a.challenge());
                canned_response(status, "credentials needed", &[("WWW-Authenticate", challenge)], close)
            }
        }
    }

    /// The rules for the head sent to the backend; `None` when there are none.
    pub fn request_headers(&self) -> Option<&HeaderRules> {
        (!self.request_headers.is_empty()).then_some(&self.request_headers)
    }

    /// The rules for the head sent to the client; `None` when there are none.
    pub fn response_headers(&self) -> Option<&HeaderRules> {
        (!self.response_headers.is_empty()).then_some(&self.response_headers)
    }

    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// How many client addresses the rate limiter remembers; `None` without `rateLimit`.
    pub fn tracked_clients(&self) -> Option<usize> {
        self.rate_limiter.as_ref().map(RateLimiter::tracked_clients)
    }

    /// The route's name in log lines and metrics.
    pub fn route(&self) -> &str {
        &self.route
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// Whether `self`, just read from a new configuration, has the same rules and name as
    /// `running`, so that `running` (with its counters and buckets) can stay in its place.
    pub fn is_same_as(&self, running: &Edge) -> bool {
        self.route == running.route && self.config == running.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{Header, RequestHead};

    /// Made by `htpasswd -nbB alice secret`.
    const ALICE: &str = "$2y$05$m6pRZYYoFbUk3JX5pG/nVuqOi.YH0RO8Zcohep7cnNgN50HVfXxqS";

    fn config() -> EdgeConfig {
        EdgeConfig {
            addresses: AddressRules { allow: vec![Cidr::parse("127.0.0.0/8").unwrap()], deny: vec![] },
            basic_auth: Some(BasicAuthConfig {
                realm: "staff".into(),
                users: vec![("alice".into(), PasswordHash::parse(ALICE).unwrap())],
            }),
            rate_limit: Some(RateLimitConfig { requests_per_second: 1.0, burst: 2, max_clients: 10 }),
            ..EdgeConfig::default()
        }
    }

    fn head(authorization: Option<&str>) -> RequestHead {
        let mut head = RequestHead::default();
        if let Some(value) = authorization {
            head.headers = vec![Header { name: "Authorization".into(), value: value.as_bytes().to_vec() }].into();
        }
        head
    }

    #[test]
    fn rules_describe_themselves_in_one_line() {
        let mut rules = config();
        rules.response_headers.set.push(("X-Frame-Options".into(), "DENY".into()));
        rules.response_headers.remove.push("Server".into());
        rules.request_headers.remove.push("Cookie".into());
        assert_eq!(
            rules.describe(),
            "allow 127.0.0.0/8; rateLimit 1/s burst 2 (remembers 10 clients); basicAuth realm \"staff\" (users alice); \
             requestHeaders remove Cookie; responseHeaders set X-Frame-Options, remove Server"
        );
        assert_eq!(EdgeConfig::default().describe(), "");
    }

    #[test]
    fn a_route_without_rules_has_no_edge() {
        assert!(Edge::new(&EdgeConfig::default(), "r".into()).is_none());
        assert!(Edge::new(&config(), "r".into()).is_some());
    }

    #[test]
    fn address_rules_come_before_the_rate_limit_which_comes_before_credentials() {
        let edge = Edge::new(&config(), "listeners[0].routes[0]".into()).unwrap();
        let now = Instant::now();
        let inside: IpAddr = "127.0.3.5".parse().unwrap();
        let outside: IpAddr = "192.0.2.1".parse().unwrap();
        let good = head(Some("Basic YWxpY2U6c2VjcmV0"));
        let reason = |r: Result<(), Refusal>| r.err().map(|r| r.reason);
        // (client, head, outcome): the outside client is refused whatever it sends and
        // takes no token; the inside one has two tokens, spent with or without credentials.
        assert_eq!(reason(edge.check(outside, &good, now)), Some(Reason::Denied));
        assert_eq!(reason(edge.check(outside, &good, now)), Some(Reason::Denied));
        assert_eq!(reason(edge.check(inside, &head(None), now)), Some(Reason::Unauthorized));
        assert_eq!(reason(edge.check(inside, &good, now)), None);
        let limited = edge.check(inside, &good, now).unwrap_err();
        assert_eq!(limited, Refusal { reason: Reason::RateLimited, retry_after_secs: 1 });
        let counts: Vec<u64> = Reason::ALL.iter().map(|r| edge.refusals().count(*r)).collect();
        assert_eq!(counts, [2, 1, 1]);
        assert_eq!(edge.tracked_clients(), Some(1));
    }

    #[test]
    fn refusals_answer_with_their_status_and_fields() {
        let edge = Edge::new(&config(), "r".into()).unwrap();
        let text = |reason, retry_after_secs| {
            String::from_utf8(edge.answer(Refusal { reason, retry_after_secs }, true, false)).unwrap()
        };
        let denied = text(Reason::Denied, 0);
        assert!(denied.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{denied}");
        let limited = text(Reason::RateLimited, 7);
        assert!(limited.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{limited}");
        assert!(limited.contains("\r\nRetry-After: 7\r\n"), "{limited}");
        let unauthorized = text(Reason::Unauthorized, 0);
        assert!(unauthorized.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{unauthorized}");
        assert!(unauthorized.contains("\r\nWWW-Authenticate: Basic realm=\"staff\"\r\n"));
        assert!(unauthorized.contains("\r\nConnection: close\r\n"));
        let to_head =
            String::from_utf8(edge.answer(Refusal { reason: Reason::Denied, retry_after_secs: 0 }, false, true));
        let to_head = to_head.unwrap();
        assert!(to_head.starts_with("HTTP/1.1 403 Forbidden\r\n") && to_head.ends_with("\r\n\r\n"), "{to_head}");
        assert!(to_head.contains("\r\nContent-Length: "), "the length of the body a GET would get: {to_head}");
    }

    #[test]
    fn basic_auth_removes_authorization_from_forwarded_requests() {
        let edge = Edge::new(&config(), "r".into()).unwrap();
        assert_eq!(edge.request_headers().unwrap().remove, ["Authorization"]);
        assert!(edge.response_headers().is_none());
        let mut own = config();
        own.request_headers.set.push(("authorization".into(), "Bearer backend-token".into()));
        let edge = Edge::new(&own, "r".into()).unwrap();
        assert!(edge.request_headers().unwrap().remove.is_empty(), "set already replaces it");
        let mut none = config();
        none.basic_auth = None;
        assert!(Edge::new(&none, "r".into()).unwrap().request_headers().is_none());
    }
}
