//! The edge-control keys of a route (and of the short form's top level): `allow`, `deny`,
//! `basicAuth`, `rateLimit`, `requestHeaders` and `responseHeaders`, read into an
//! [`EdgeConfig`].
//!
//! Called by the route readers (`full_form`, and `top_level` for the short form's one route)
//! with the route's [`Section`]. Every problem names
//! its key path, such as `listeners[0].routes[1].basicAuth.users.alice`: a malformed CIDR
//! block, a password that is not a bcrypt or argon2id hash, a header rule on a hop-by-hop or
//! framing field.

use super::keys::{Key, Kind, Shape};
use super::{ConfigError, Section};
use crate::edge::header_rules::{check_name, check_value};
use crate::edge::rate_limit::{DEFAULT_MAX_CLIENTS, MIN_REQUESTS_PER_SECOND};
use crate::edge::{AddressRules, BasicAuthConfig, Cidr, Edge, EdgeConfig, HeaderRules, PasswordHash, RateLimitConfig};
use serde_json::Value;
use std::sync::Arc;

/// The keys this file reads; the readers of routes and of the short form allow them.
pub(super) const EDGE_KEYS: &[Key] = &[
    Key::new("allow", Kind::List(&Kind::Text, 1), "Address blocks (CIDR, IPv4 or IPv6) a client must be in; else 403.")
        .example(r#"["10.0.0.0/8", "2001:db8::/32"]"#),
    Key::new(
        "deny",
        Kind::List(&Kind::Text, 1),
        "Address blocks (CIDR, IPv4 or IPv6) a client must not be in; else 403.",
    )
    .example(r#"["192.0.2.7"]"#),
    Key::new(
        "basicAuth",
        Kind::Object(&BASIC_AUTH),
        "Ask for a user name and password (HTTP basic authentication); else 401.",
    ),
    Key::new("rateLimit", Kind::Object(&RATE_LIMIT), "A token bucket per client address; over it, 429."),
    Key::new("requestHeaders", Kind::Object(&HEADER_RULES), "Fields to set or remove in the request the backend gets."),
    Key::new(
        "responseHeaders",
        Kind::Object(&HEADER_RULES),
        "Fields to set or remove in the response the client gets.",
    ),
];

/// A bcrypt hash of "alice", for examples.
const ALICE: &str = r#"{"alice": "$2y$05$m6pRZYYoFbUk3JX5pG/nVuqOi.YH0RO8Zcohep7cnNgN50HVfXxqS"}"#;

const BASIC_AUTH: Shape = Shape::new(&[&[
    Key::new("realm", Kind::Text, "The name browsers show when they ask.").required().example("staff"),
    Key::new(
        "users",
        Kind::Map(&Kind::Text, 1),
        "User names and their bcrypt or argon2id password hashes (sluice hash-password prints one).",
    )
    .required()
    .example(ALICE),
]]);

const RATE_LIMIT: Shape = Shape::new(&[&[
    Key::new(
        "requestsPerSecond",
        Kind::Number(MIN_REQUESTS_PER_SECOND, 1_000_000.0),
        "How many requests a second one address may make.",
    )
    .required()
    .example("10"),
    Key::new("burst", Kind::Uint(1, 1_000_000), "How many requests may come at once; the rate rounded up when absent."),
    Key::new(
        "maxClients",
        Kind::Uint(1, 10_000_000),
        "Addresses remembered; the least recently seen are forgotten first.",
    )
    .default("100000"),
]]);

const HEADER_RULES: Shape = Shape::new(&[&[
    Key::new(
        "set",
        Kind::Map(&Kind::Text, 0),
        "Fields to set, replacing any of the same name (names match in any case).",
    )
    .example(r#"{"X-Frame-Options": "DENY"}"#),
    Key::new("remove", Kind::List(&Kind::Text, 0), "Field names to remove.").example(r#"["Server"]"#),
]]);

/// Reads the edge keys of a route's section into the route's working rules, named `name`
/// in logs and metrics; `None` when the route has no rule.
pub(super) fn read_route_edge(s: &mut Section, name: String) -> Result<Option<Arc<Edge>>, ConfigError> {
    let rules = read_edge_rules(s)?;
    Ok(Edge::new(&rules, name).map(Arc::new))
}

/// Reads the edge keys of `s`; the result is empty when none is given.
pub(super) fn read_edge_rules(s: &mut Section) -> Result<EdgeConfig, ConfigError> {
    let addresses = AddressRules { allow: read_blocks(s, "allow")?, deny: read_blocks(s, "deny")? };
    let basic_auth = match s.section("basicAuth")? {
        Some(auth) => Some(read_basic_auth(auth)?),
        None => None,
    };
    let rate_limit = match s.section("rateLimit")? {
        Some(limit) => Some(read_rate_limit(limit)?),
        None => None,
    };
    let request_headers = read_header_rules(s, "requestHeaders")?;
    let response_headers = read_header_rules(s, "responseHeaders")?;
    Ok(EdgeConfig { addresses, basic_auth, rate_limit, request_headers, response_headers })
}

/// `allow` or `deny`: a non-empty list of CIDR blocks or single addresses.
fn read_blocks(s: &mut Section, key: &'static str) -> Result<Vec<Cidr>, ConfigError> {
    let example = "such as [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]";
    let list = match s.get(key) {
        None => return Ok(Vec::new()),
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => return Err(s.error(key, &format!("is empty: list address blocks, {example}"))),
        Some(_) => return Err(s.error(key, &format!("must be a list of address blocks, {example}"))),
    };
    let mut blocks = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let key = format!("{key}[{i}]");
        let Value::String(text) = item else {
            return Err(s.error(&key, &format!("must be a string, {example}")));
        };
        blocks.push(Cidr::parse(text).map_err(|p| s.error(&key, &p))?);
    }
    Ok(blocks)
}

/// `basicAuth`: `{"realm": "staff", "users": {"alice": "<bcrypt or argon2id hash>"}}`.
fn read_basic_auth(mut s: Section) -> Result<BasicAuthConfig, ConfigError> {
    s.allow(&BASIC_AUTH)?;
    let realm =
        s.str("realm")?.ok_or_else(|| s.error("realm", "missing: the name browsers show, such as \"staff\""))?;
    if realm.is_empty() || !realm.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') {
        return Err(s.error("realm", "must be printable ASCII without `\"` or `\\`"));
    }
    let example = "such as {\"alice\": \"$2y$05$...\"}";
    let users = match s.get("users") {
        None => return Err(s.error("users", &format!("missing: name the users and their password hashes, {example}"))),
        Some(Value::Object(map)) if !map.is_empty() => map,
        Some(_) => return Err(s.error("users", &format!("must be an object of users and password hashes, {example}"))),
    };
    let users_path = s.child_path("users");
    let mut read = Vec::with_capacity(users.len());
    for (name, hash) in users {
        let error = |problem: &str| ConfigError {
            file: s.file.to_string(),
            key: format!("{users_path}.{name}"),
            problem: problem.to_string(),
        };
        if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
            return Err(error("a user name is not empty and has no `:` or control characters"));
        }
        let Value::String(hash) = hash else { return Err(error("must be a password hash string")) };
        read.push((name.clone(), PasswordHash::parse(hash).map_err(|p| error(&p))?));
    }
    s.finish()?;
    Ok(BasicAuthConfig { realm: realm.to_string(), users: read })
}

/// `rateLimit`: `{"requestsPerSecond": 10, "burst": 20, "maxClients": 100000}`.
fn read_rate_limit(mut s: Section) -> Result<RateLimitConfig, ConfigError> {
    s.allow(&RATE_LIMIT)?;
    let range = "must be a number from 0.001 to 1000000, such as 10 or 0.5";
    let requests_per_second = match s.get("requestsPerSecond").map(Value::as_f64) {
        None => return Err(s.error("requestsPerSecond", "missing: how many requests a second one address may make")),
        Some(Some(n)) if (MIN_REQUESTS_PER_SECOND..=1_000_000.0).contains(&n) => n,
        Some(_) => return Err(s.error("requestsPerSecond", range)),
    };
    let burst = match s.uint("burst", 1, 1_000_000)? {
        Some(n) => n as u32,
        None => requests_per_second.ceil() as u32,
    };
    let max_clients = s.uint("maxClients", 1, 10_000_000)?.map_or(DEFAULT_MAX_CLIENTS, |n| n as usize);
    s.finish()?;
    Ok(RateLimitConfig { requests_per_second, burst, max_clients })
}

/// `requestHeaders` or `responseHeaders`: `{"set": {"Name": "value"}, "remove": ["Name"]}`.
fn read_header_rules(parent: &mut Section, key: &'static str) -> Result<HeaderRules, ConfigError> {
    let Some(mut s) = parent.section(key)? else { return Ok(HeaderRules::default()) };
    s.allow(&HEADER_RULES)?;
    let mut rules = HeaderRules::default();
    match s.get("set") {
        None => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let error = |problem: &str| s.error(&format!("set.{name}"), problem);
                check_name(name).map_err(|p| error(&p))?;
                if rules.set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                    return Err(error("is given twice (names match in any case)"));
                }
                let Value::String(value) = value else { return Err(error("must be a string")) };
                check_value(value).map_err(|p| error(&p))?;
                rules.set.push((name.clone(), value.clone()));
            }
        }
        Some(_) => {
            return Err(s.error("set", "must be an object of names and values, such as {\"X-Frame-Options\": \"DENY\"}"))
        }
    }
    match s.get("remove") {
        None => {}
        Some(Value::Array(list)) => {
            for (i, item) in list.iter().enumerate() {
                let error = |problem: &str| s.error(&format!("remove[{i}]"), problem);
                let Value::String(name) = item else { return Err(error("must be a header field name")) };
                check_name(name).map_err(|p| error(&p))?;
                if rules.set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                    return Err(error(&format!("{name:?} is also in \"set\", which already replaces it")));
                }
                rules.remove.push(name.clone());
            }
        }
        Some(_) => return Err(s.error("remove", "must be a list of names, such as [\"Server\"]")),
    }
    s.finish()?;
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `text` as a route object whose only keys are edge keys.
    fn read(text: &str) -> Result<EdgeConfig, String> {
        let value: Value = serde_json::from_str(text).unwrap();
        let mut s = Section::new("config.json", "routes[0]".to_string(), &value).map_err(|e| e.to_string())?;
        s.allow(&Shape::new(&[EDGE_KEYS])).map_err(|e| e.to_string())?;
        let edge = read_edge_rules(&mut s).map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())?;
        Ok(edge)
    }

    const ALICE: &str = "$2y$05$m6pRZYYoFbUk3JX5pG/nVuqOi.YH0RO8Zcohep7cnNgN50HVfXxqS";

    #[test]
    fn every_edge_key_reads_into_the_rules() {
        let edge = read(&format!(
            r#"{{"allow": ["10.0.0.0/8", "2001:db8::/32"], "deny": ["10.0.0.5"],
            "basicAuth": {{"realm": "staff", "users": {{"alice": "{ALICE}"}}}},
            "rateLimit": {{"requestsPerSecond": 10, "burst": 20}},
            "requestHeaders": {{"set": {{"X-Env": "staging"}}, "remove": ["Cookie"]}},
            "responseHeaders": {{"set": {{"Strict-Transport-Security": "max-age=63072000"}}}}}}"#
        ))
        .unwrap();
        assert_eq!(edge.addresses.allow.len(), 2);
        assert_eq!(edge.addresses.deny, [Cidr::parse("10.0.0.5").unwrap()]);
        let auth = edge.basic_auth.unwrap();
        assert_eq!((auth.realm.as_str(), auth.users[0].0.as_str()), ("staff", "alice"));
        let limit = RateLimitConfig { requests_per_second: 10.0, burst: 20, max_clients: DEFAULT_MAX_CLIENTS };
        assert_eq!(edge.rate_limit, Some(limit));
        assert_eq!(edge.request_headers.set, [("X-Env".to_string(), "staging".to_string())]);
        assert_eq!(edge.request_headers.remove, ["Cookie"]);
        assert_eq!(edge.response_headers.set[0].0, "Strict-Transport-Security");
    }

    #[test]
    fn no_edge_keys_read_as_no_rules_and_burst_follows_the_rate() {
        assert!(read("{}").unwrap().is_empty());
        let limit = read(r#"{"rateLimit": {"requestsPerSecond": 2.5, "maxClients": 50}}"#).unwrap().rate_limit.unwrap();
        assert_eq!((limit.burst, limit.max_clients), (3, 50));
        let limit = read(r#"{"rateLimit": {"requestsPerSecond": 0.1}}"#).unwrap().rate_limit.unwrap();
        assert_eq!(limit.burst, 1);
    }

    #[test]
    fn errors_name_the_key_path_and_the_problem() {
        let cases = [
            (r#"{"allow": ["10.0.0.0/33"]}"#, "config.json: routes[0].allow[0]: \"10.0.0.0/33\": the prefix length"),
            (r#"{"deny": ["10.0.0.0/8", "office"]}"#, "config.json: routes[0].deny[1]: \"office\" is not an address"),
            (r#"{"deny": ["10.1.0.0/8"]}"#, "config.json: routes[0].deny[0]: \"10.1.0.0/8\" has bits set past"),
            (r#"{"allow": "10.0.0.0/8"}"#, "config.json: routes[0].allow: must be a list of address blocks"),
            (r#"{"allow": []}"#, "config.json: routes[0].allow: is empty"),
            (r#"{"allow": [10]}"#, "config.json: routes[0].allow[0]: must be a string"),
            (
                r#"{"basicAuth": {"realm": "staff", "users": {"alice": "secret"}}}"#,
                "config.json: routes[0].basicAuth.users.alice: must be a bcrypt or argon2id password hash, not a password",
            ),
            (
                r#"{"basicAuth": {"realm": "staff", "users": {"alice": "$2y$05$short"}}}"#,
                "config.json: routes[0].basicAuth.users.alice: not a valid bcrypt hash",
            ),
            (r#"{"basicAuth": {"users": {}}}"#, "config.json: routes[0].basicAuth.realm: missing"),
            (r#"{"basicAuth": {"realm": "a\"b", "users": {}}}"#, "config.json: routes[0].basicAuth.realm: must be printable"),
            (r#"{"basicAuth": {"realm": "staff"}}"#, "config.json: routes[0].basicAuth.users: missing"),
            (r#"{"basicAuth": {"realm": "staff", "users": {}}}"#, "config.json: routes[0].basicAuth.users: must be an object"),
            (
                &format!(r#"{{"basicAuth": {{"realm": "s", "users": {{"a:b": "{ALICE}"}}}}}}"#),
                "config.json: routes[0].basicAuth.users.a:b: a user name",
            ),
            (
                &format!(r#"{{"basicAuth": {{"realm": "s", "users": {{"a": "{ALICE}"}}, "hash": "x"}}}}"#),
                "config.json: routes[0].basicAuth.hash: unknown key",
            ),
            (r#"{"rateLimit": {}}"#, "config.json: routes[0].rateLimit.requestsPerSecond: missing"),
            (
                r#"{"rateLimit": {"requestsPerSecond": 0}}"#,
                "config.json: routes[0].rateLimit.requestsPerSecond: must be a number from 0.001 to 1000000",
            ),
            (
                r#"{"rateLimit": {"requestsPerSecond": 1e-300, "burst": 5}}"#,
                "config.json: routes[0].rateLimit.requestsPerSecond: must be a number from 0.001",
            ),
            (r#"{"rateLimit": {"requestsPerSecond": "10"}}"#, "config.json: routes[0].rateLimit.requestsPerSecond: must be a number"),
            (
                r#"{"rateLimit": {"requestsPerSecond": 10, "burst": 0}}"#,
                "config.json: routes[0].rateLimit.burst: must be a whole number from 1 to 1000000",
            ),
            (
                r#"{"rateLimit": {"requestsPerSecond": 10, "brust": 5}}"#,
                "config.json: routes[0].rateLimit.brust: unknown key (did you mean `burst`?)",
            ),
            (
                r#"{"requestHeaders": {"set": {"Connection": "close"}}}"#,
                "config.json: routes[0].requestHeaders.set.Connection: \"Connection\" is a hop-by-hop or framing field",
            ),
            (
                r#"{"responseHeaders": {"set": {"content-length": "0"}}}"#,
                "config.json: routes[0].responseHeaders.set.content-length: \"content-length\" is a hop-by-hop or framing field",
            ),
            (
                r#"{"responseHeaders": {"remove": ["Server", "Transfer-Encoding"]}}"#,
                "config.json: routes[0].responseHeaders.remove[1]: \"Transfer-Encoding\" is a hop-by-hop or framing field",
            ),
            (
                r#"{"requestHeaders": {"remove": ["Host"]}}"#,
                "config.json: routes[0].requestHeaders.remove[0]: \"Host\" is a hop-by-hop or framing field",
            ),
            (
                r#"{"requestHeaders": {"set": {"X-A": "1", "x-a": "2"}}}"#,
                "config.json: routes[0].requestHeaders.set.x-a: is given twice",
            ),
            (
                r#"{"requestHeaders": {"set": {"X-A": "1"}, "remove": ["x-A"]}}"#,
                "config.json: routes[0].requestHeaders.remove[0]: \"x-A\" is also in \"set\"",
            ),
            (
                r#"{"requestHeaders": {"set": {"X-A": "1\r\nX-B: 2"}}}"#,
                "config.json: routes[0].requestHeaders.set.X-A: \"1\\r\\nX-B: 2\" must be printable ASCII",
            ),
            (r#"{"requestHeaders": {"set": {"X A": "1"}}}"#, "config.json: routes[0].requestHeaders.set.X A: \"X A\" is not a header field name"),
            (r#"{"requestHeaders": {"set": ["X-A"]}}"#, "config.json: routes[0].requestHeaders.set: must be an object"),
            (r#"{"requestHeaders": {"remove": "Server"}}"#, "config.json: routes[0].requestHeaders.remove: must be a list"),
            (r#"{"requestHeaders": {"add": {}}}"#, "config.json: routes[0].requestHeaders.add: unknown key"),
            (r#"{"responseHeaders": true}"#, "config.json: routes[0].responseHeaders: must be a JSON object"),
        ];
        for (text, expected) in cases {
            let err = read(text).expect_err(text);
            assert!(err.starts_with(expected), "for {text}\n got: {err}\nwant: {expected}...");
        }
    }

    #[test]
    fn routes_carry_their_rules_in_both_forms() {
        use crate::config::Config;
        let c = Config::parse(
            r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"], "deny": ["192.0.2.0/24"]}"#,
            "config.json",
        )
        .unwrap();
        let edge = c.listeners[0].routes[0].edge.as_ref().expect("the short form's one route has the rules");
        assert_eq!(edge.route(), "listeners[0].routes[0]");
        let c = Config::parse(
            r#"{"listeners": [{"listen": ":0", "routes": [{"pathPrefix": "/a", "pool": "p"},
                {"pool": "p", "rateLimit": {"requestsPerSecond": 1}}]}],
            "pools": {"p": {"servers": ["http://127.0.0.1:1"]}}}"#,
            "config.json",
        )
        .unwrap();
        let routes = &c.listeners[0].routes;
        assert!(routes[0].edge.is_none(), "a route without rules has no edge at all");
        assert_eq!(routes[1].edge.as_ref().unwrap().route(), "listeners[0].routes[1]");
        let cases = [
            (
                r#"{"allow": ["10.0.0.0/8"], "listeners": [{"listen": ":0", "pool": "p"}], "pools": {"p": {"servers": ["http://127.0.0.1:1"]}}}"#,
                "config.json: allow: belongs to the short form; with \"listeners\" and \"pools\" it goes in a route",
            ),
            (
                r#"{"listeners": [{"listen": ":0", "pool": "p", "deny": ["10.0.0.0/8"]}], "pools": {"p": {"servers": ["http://127.0.0.1:1"]}}}"#,
                "config.json: listeners[0].deny: unknown key",
            ),
        ];
        for (text, expected) in cases {
            let err = Config::parse(text, "config.json").expect_err(text).to_string();
            assert!(err.starts_with(expected), "for {text}\n got: {err}\nwant: {expected}...");
        }
    }
}
