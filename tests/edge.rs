//! Edge controls over real sockets: allow/deny by client address (clients bound to other
//! loopback addresses, and curl with `--interface`), rate limits counted per address, basic
//! auth with hashes from `htpasswd -B` and `sluice hash-password`, header rules as the backend
//! and the client see them, refusals in /metrics and /stats and in a log of at most a line a
//! second, the rate limiter's table staying bounded under tens of thousands of addresses,
//! reloads, IPv6, and bad edge configuration refused by `sluice --check`.

mod common;

use common::*;
use serde_json::Value;
use socket2::{Domain, Socket, Type};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A connection to `to` from `from` (any address in 127.0.0.0/8), ready for raw requests.
fn connect_from(from: &str, to: SocketAddr) -> Client {
    let ip: IpAddr = from.parse().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(ip, 0).into()).unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket.connect(&to.into()).unwrap_or_else(|e| panic!("connect from {from}: {e}"));
    Client::from_stream(TcpStream::from(socket))
}

/// One `GET path` from `from` with `extra` header lines, on a new connection.
fn get_from(from: &str, sluice: &Sluice, path: &str, extra: &str) -> Response {
    let mut c = connect_from(from, sluice.addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n").as_bytes());
    c.response().unwrap_or_else(|e| panic!("GET {path} from {from}: {e}"))
}

/// sluice in the full form: one http listener whose `routes` (JSON) all go to pool `web`.
fn start_with_routes(backend: &TestBackend, routes: &str, extra: &str) -> Sluice {
    Sluice::from_json(&format!(
        r#"{{"listeners": [{{"listen": "127.0.0.1:0", "routes": {routes}}}],
        "pools": {{"web": {{"servers": ["{}"]}}}}, {extra} "workers": 8}}"#,
        backend.url()
    ))
}

fn basic(user_password: &str) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in user_password.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { alphabet[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    format!("Authorization: Basic {out}\r\n")
}

#[test]
fn allow_and_deny_answer_403_by_client_address_on_their_route_only() {
    let backend = TestBackend::named("web");
    let routes = r#"[{"pathPrefix": "/admin", "pool": "web", "allow": ["127.0.3.0/24"], "deny": ["127.0.3.9"]},
                     {"pool": "web"}]"#;
    let sluice = start_with_routes(&backend, routes, "");
    // (client address, path, status)
    let table = [
        ("127.0.3.5", "/admin", 200),
        ("127.0.3.9", "/admin", 403),
        ("127.0.4.1", "/admin/users", 403),
        ("127.0.0.1", "/admin", 403),
        ("127.0.4.1", "/", 200),
        ("127.0.3.9", "/public", 200),
    ];
    for (from, path, status) in table {
        let r = get_from(from, &sluice, path, "");
        assert_eq!(r.status, status, "GET {path} from {from}: {}{}", r.raw_head, r.text());
    }
    // Refusals without a body keep the connection; the answer to HEAD carries no body.
    let mut c = connect_from("127.0.4.1", sluice.addr);
    c.send(b"HEAD /admin HTTP/1.1\r\nHost: test\r\n\r\nGET /admin HTTP/1.1\r\nHost: test\r\n\r\n");
    let head = c.read_response(true).unwrap();
    assert_eq!((head.status, head.header("connection")), (403, None), "{}", head.raw_head);
    let get = c.response().unwrap();
    assert_eq!(get.status, 403, "the next answer is read where it starts: {}{}", get.raw_head, get.text());
    assert!(get.text().starts_with("403 Forbidden"), "{}", get.text());
    let seen: Vec<String> = backend.requests().iter().map(|s| s.target.clone()).collect();
    assert_eq!(seen, ["/admin", "/", "/public"], "the backend never sees refused requests");
}

#[test]
fn a_refused_request_with_a_body_is_answered_and_closed_without_reading_the_body() {
    let backend = TestBackend::named("web");
    let sluice = start_with_routes(&backend, r#"[{"pool": "web", "deny": ["127.0.6.0/24"]}]"#, "");
    let mut c = connect_from("127.0.6.1", sluice.addr);
    // A 10 MB body is announced and a little of it sent: the answer must not wait for the rest.
    c.send(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 10000000\r\n\r\nfirst bytes");
    let r = c.response().expect("an answer before the body");
    assert_eq!(r.status, 403, "{}{}", r.raw_head, r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed(), "the connection closes: the unread body cannot be skipped");
    // A client waiting for `100 Continue` gets the refusal instead, and keeps its body.
    let mut c = connect_from("127.0.6.2", sluice.addr);
    c.send(b"PUT /file HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let r = c.response().expect("an answer without the body");
    assert_eq!(r.status, 403, "{}{}", r.raw_head, r.text());
    assert!(c.is_closed());
    assert_eq!(backend.request_count(), 0);
}

#[test]
fn rate_limit_counts_200s_and_429s_per_client_address() {
    let backend = TestBackend::named("web");
    // One token every 10 s, five at once: within this test only the burst passes.
    let routes = r#"[{"pool": "web", "rateLimit": {"requestsPerSecond": 0.1, "burst": 5}}]"#;
    let sluice = start_with_routes(&backend, routes, "");
    let count = |from: &str, requests: usize| {
        let mut c = connect_from(from, sluice.addr);
        let (mut ok, mut limited) = (0, 0);
        for _ in 0..requests {
            c.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n");
            let r = c.response().unwrap_or_else(|e| panic!("from {from}: {e}"));
            match r.status {
                200 => ok += 1,
                429 => {
                    limited += 1;
                    let wait: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
                    assert!((1..=10).contains(&wait), "Retry-After {wait}");
                }
                other => panic!("from {from}: unexpected {other}: {}{}", r.raw_head, r.text()),
            }
        }
        (ok, limited)
    };
    assert_eq!(count("127.0.5.1", 12), (5, 7), "the first address: its burst, then 429s on the same connection");
    assert_eq!(count("127.0.5.2", 8), (5, 3), "a second address has its own bucket");
    assert_eq!(count("127.0.5.1", 2), (0, 2), "the first address is still limited on a new connection");
    assert_eq!(backend.request_count(), 10);
    assert_eq!(sluice.server().route_edge(0, 0).unwrap().tracked_clients(), Some(2));
}

#[test]
fn concurrent_requests_from_one_address_share_one_bucket() {
    let backend = TestBackend::named("web");
    let routes = r#"[{"pool": "web", "rateLimit": {"requestsPerSecond": 0.1, "burst": 10}}]"#;
    let sluice = start_with_routes(&backend, routes, "");
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut c = connect_from("127.0.17.1", sluice.addr);
                    (0..15)
                        .map(|_| {
                            c.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n");
                            c.response().map_or(0, |r| r.status)
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (10, 50), "{statuses:?}");
    assert_eq!(backend.request_count(), 10);
}

/// A bcrypt line from `htpasswd -nbB`, or `None` (the test skips) when htpasswd is missing,
/// unless SLUICE_REQUIRE_EXTERNAL=1 says it must be there.
fn htpasswd_hash(user: &str, password: &str) -> Option<String> {
    match Command::new("htpasswd").args(["-nbB", user, password]).output() {
        Ok(out) if out.status.success() => {
            let line = String::from_utf8(out.stdout).unwrap();
            let hash = line.trim().strip_prefix(&format!("{user}:")).expect("user:hash").to_string();
            assert!(hash.starts_with("$2y$"), "{hash}");
            Some(hash)
        }
        result => {
            assert!(
                std::env::var("SLUICE_REQUIRE_EXTERNAL").as_deref() != Ok("1"),
                "htpasswd is required (SLUICE_REQUIRE_EXTERNAL=1) but failed: {result:?}"
            );
            println!("skipped: htpasswd is not installed (apt-get install -y apache2-utils)");
            None
        }
    }
}

/// Checks a route guarded by `basicAuth` with user `alice` whose password is `password`.
fn check_basic_auth(hash: &str, password: &str) {
    let backend = TestBackend::named("staging");
    let routes = format!(r#"[{{"pool": "web", "basicAuth": {{"realm": "staff", "users": {{"alice": "{hash}"}}}}}}]"#);
    let sluice = start_with_routes(&backend, &routes, "");
    let r = get_from("127.0.0.1", &sluice, "/", "");
    assert_eq!(r.status, 401, "{}{}", r.raw_head, r.text());
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"staff\""));
    for wrong in [basic("alice:wrong"), basic(&format!("bob:{password}")), "Authorization: Bearer x\r\n".into()] {
        assert_eq!(get_from("127.0.0.1", &sluice, "/", &wrong).status, 401, "{wrong}");
    }
    // Twice: the second time the remembered password answers.
    for _ in 0..2 {
        let r = get_from("127.0.0.1", &sluice, "/private", &basic(&format!("alice:{password}")));
        assert_eq!((r.status, r.text().as_str()), (200, "staging"), "{}", r.raw_head);
    }
    let seen = backend.requests();
    assert_eq!(seen.len(), 2, "only the authorized requests reach the backend");
    for s in &seen {
        assert_eq!(s.header("authorization"), None, "Authorization is not forwarded: {:?}", s.headers);
    }
}

#[test]
fn basic_auth_accepts_a_bcrypt_hash_made_by_htpasswd() {
    if let Some(hash) = htpasswd_hash("alice", "correct horse") {
        check_basic_auth(&hash, "correct horse");
    }
}

/// Runs `sluice hash-password` with `input` on its standard input.
fn hash_password(input: &[u8]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn basic_auth_accepts_an_argon2id_hash_made_by_sluice_hash_password() {
    let out = hash_password(b"s3cret pass\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    check_basic_auth(&hash, "s3cret pass");
}

#[test]
fn hash_password_refuses_an_empty_password_with_exit_code_2() {
    let out = hash_password(b"\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the password must be 1 to"));
}

#[test]
fn address_rules_are_checked_before_credentials() {
    let backend = TestBackend::named("web");
    let hash = "$2y$05$m6pRZYYoFbUk3JX5pG/nVuqOi.YH0RO8Zcohep7cnNgN50HVfXxqS"; // alice:secret
    let sluice = Sluice::from_json(&format!(
        r#"{{"listen": "127.0.0.1:0", "servers": ["{}"], "allow": ["127.0.7.0/24"],
        "basicAuth": {{"realm": "staff", "users": {{"alice": "{hash}"}}}}}}"#,
        backend.url()
    ));
    let good = basic("alice:secret");
    assert_eq!(get_from("127.0.8.1", &sluice, "/", &good).status, 403, "outside, even with credentials");
    assert_eq!(get_from("127.0.7.1", &sluice, "/", "").status, 401, "inside, without credentials");
    assert_eq!(get_from("127.0.7.1", &sluice, "/", &good).status, 200);
    assert_eq!(backend.request_count(), 1);
}

#[test]
fn header_rules_are_seen_by_the_backend_and_by_the_client() {
    let backend = TestBackend::start(|_| Reply::Text {
        status: 200,
        headers: vec![("server".into(), "secret-version".into()), ("X-Frame-Options".into(), "SAMEORIGIN".into())],
        body: b"hi".to_vec(),
    });
    let routes = r#"[{"pool": "web",
        "requestHeaders": {"set": {"X-Env": "staging", "X-Forwarded-Proto": "https"}, "remove": ["cookie"]},
        "responseHeaders": {"set": {"Strict-Transport-Security": "max-age=63072000", "x-frame-options": "DENY"},
                            "remove": ["Server"]}}]"#;
    let sluice = start_with_routes(&backend, routes, "");
    let r = get_from("127.0.0.1", &sluice, "/", "Cookie: a=1\r\nX-Env: from-client\r\nAccept: */*\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "hi"), "{}", r.raw_head);
    assert_eq!(r.header("strict-transport-security"), Some("max-age=63072000"), "{}", r.raw_head);
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "set replaces the backend's field: {}", r.raw_head);
    assert_eq!(r.raw_head.to_ascii_lowercase().matches("x-frame-options").count(), 1, "{}", r.raw_head);
    assert_eq!(r.header("server"), None, "{}", r.raw_head);
    assert_eq!(r.header("content-length"), Some("2"));
    let seen = &backend.requests()[0];
    assert_eq!(seen.header("x-env"), Some("staging"), "{:?}", seen.headers);
    assert_eq!(seen.header_count("x-env"), 1);
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"), "rules apply after sluice's own rewriting");
    assert_eq!(seen.header("cookie"), None);
    assert_eq!(seen.header("accept"), Some("*/*"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
}

/// The body of `GET path` from the admin API.
fn admin_get(admin: SocketAddr, path: &str) -> String {
    let mut c = Client::connect(admin);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes());
    let r = c.response().unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status, 200, "GET {path}: {}{}", r.raw_head, r.text());
    r.text()
}

#[test]
fn refusals_are_counted_in_metrics_and_stats_by_route_and_reason() {
    let backend = TestBackend::named("web");
    let routes = r#"[{"pathPrefix": "/office", "pool": "web", "allow": ["127.0.9.0/24"]},
                     {"pool": "web", "rateLimit": {"requestsPerSecond": 0.1, "burst": 1}}]"#;
    let sluice = start_with_routes(&backend, routes, r#""admin": {"listen": "127.0.0.1:0"},"#);
    let admin = sluice.server().admin_addr().unwrap();
    for _ in 0..3 {
        assert_eq!(get_from("127.0.10.1", &sluice, "/office", "").status, 403);
    }
    assert_eq!(get_from("127.0.10.1", &sluice, "/", "").status, 200);
    assert_eq!(get_from("127.0.10.1", &sluice, "/", "").status, 429);
    let metrics = admin_get(admin, "/metrics");
    for line in [
        "sluice_edge_refusals_total{route=\"listeners[0].routes[0]\",reason=\"denied\"} 3",
        "sluice_edge_refusals_total{route=\"listeners[0].routes[0]\",reason=\"rate_limited\"} 0",
        "sluice_edge_refusals_total{route=\"listeners[0].routes[1]\",reason=\"rate_limited\"} 1",
        "sluice_edge_refusals_total{route=\"listeners[0].routes[1]\",reason=\"unauthorized\"} 0",
        "sluice_edge_rate_limit_clients{route=\"listeners[0].routes[1]\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    let stats: Value = serde_json::from_str(&admin_get(admin, "/stats")).unwrap();
    let edge = &stats["edge"];
    assert_eq!(edge[0]["route"], "listeners[0].routes[0]", "{stats}");
    assert_eq!(edge[0]["refused"]["denied"], 3, "{stats}");
    assert_eq!(edge[0]["rateLimitClients"], Value::Null, "{stats}");
    assert_eq!(edge[1]["refused"]["rate_limited"], 1, "{stats}");
    assert_eq!(edge[1]["rateLimitClients"], 1, "{stats}");
}

#[test]
fn the_rate_limit_table_stays_bounded_under_tens_of_thousands_of_addresses() {
    let backend = TestBackend::named("web");
    let routes = r#"[{"pool": "web", "rateLimit": {"requestsPerSecond": 1, "burst": 1, "maxClients": 1000}}]"#;
    let sluice = start_with_routes(&backend, routes, "");
    let edge = sluice.server().route_edge(0, 0).expect("the route has edge rules");
    let addresses = 20_000u32;
    // Two client threads, each with its own half of 127.100.0.0/16.
    std::thread::scope(|scope| {
        for half in 0..2u32 {
            let (sluice, edge) = (&sluice, &edge);
            scope.spawn(move || {
                for n in (half..addresses).step_by(2) {
                    let from = format!("127.100.{}.{}", n / 250, n % 250 + 1);
                    let r = get_from(&from, sluice, "/", "");
                    assert_eq!(r.status, 200, "a new address has a full bucket: {from}");
                    if n % 1000 < 2 {
                        let tracked = edge.tracked_clients().unwrap();
                        assert!(tracked <= 1000, "after about {n} addresses the table holds {tracked}");
                    }
                }
            });
        }
    });
    assert_eq!(edge.tracked_clients(), Some(1000));
    assert_eq!(backend.request_count(), addresses as usize);
}

#[test]
fn bad_edge_configuration_is_refused_by_check_with_the_key_path() {
    let dir = std::env::temp_dir().join(format!("sluice-edge-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let route = |rules: &str| {
        format!(
            r#"{{"listeners": [{{"listen": "127.0.0.1:0", "routes": [{{"pathPrefix": "/a", "pool": "web"}}, {{"pool": "web", {rules}}}]}}],
            "pools": {{"web": {{"servers": ["http://127.0.0.1:5001"]}}}}}}"#
        )
    };
    let cases = [
        (route(r#""allow": ["10.0.0.0/40"]"#), "listeners[0].routes[1].allow[0]: \"10.0.0.0/40\": the prefix length must be from 0 to 32"),
        (route(r#""deny": ["not-an-address"]"#), "listeners[0].routes[1].deny[0]: \"not-an-address\" is not an address"),
        (
            route(r#""basicAuth": {"realm": "staff", "users": {"alice": "password123"}}"#),
            "listeners[0].routes[1].basicAuth.users.alice: must be a bcrypt or argon2id password hash, not a password",
        ),
        (
            route(r#""requestHeaders": {"set": {"Transfer-Encoding": "chunked"}}"#),
            "listeners[0].routes[1].requestHeaders.set.Transfer-Encoding: \"Transfer-Encoding\" is a hop-by-hop or framing field",
        ),
        (
            route(r#""responseHeaders": {"remove": ["Connection"]}"#),
            "listeners[0].routes[1].responseHeaders.remove[0]: \"Connection\" is a hop-by-hop or framing field",
        ),
        (
            r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:5001"], "allow": ["192.0.2.0/33"]}"#.to_string(),
            "allow[0]: \"192.0.2.0/33\": the prefix length",
        ),
    ];
    for (i, (json, expected)) in cases.iter().enumerate() {
        let path = dir.join(format!("case{i}.json"));
        std::fs::write(&path, json).unwrap();
        let out =
            Command::new(env!("CARGO_BIN_EXE_sluice")).arg("--check").arg("--config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{json}\n{stderr}");
        let want = format!("sluice: {}: {expected}", path.display());
        assert!(stderr.starts_with(&want), "{json}\n got: {stderr}\nwant: {want}...");
    }
    let path = dir.join("good.json");
    std::fs::write(&path, route(r#""allow": ["127.0.0.0/8"], "rateLimit": {"requestsPerSecond": 5}"#)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).arg("--check").arg("--config").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("allow 127.0.0.0/8; rateLimit 5/s burst 5"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reload_keeps_a_routes_buckets_and_counts_while_its_rules_stay_the_same() {
    let backend = TestBackend::named("web");
    let json = |burst: u32| {
        format!(
            r#"{{"listen": "127.0.0.1:0", "servers": ["{}"],
            "rateLimit": {{"requestsPerSecond": 0.1, "burst": {burst}}}}}"#,
            backend.url()
        )
    };
    let sluice = Sluice::from_json(&json(1));
    assert_eq!(get_from("127.0.11.1", &sluice, "/", "").status, 200);
    assert_eq!(get_from("127.0.11.1", &sluice, "/", "").status, 429);
    let server = sluice.server();
    server.reload(sluice::Config::from_json(&json(1), "test.json").unwrap()).expect("reload");
    assert_eq!(get_from("127.0.11.1", &sluice, "/", "").status, 429, "the bucket outlived the reload");
    let refused = |s: &Sluice| s.server().route_edge(0, 0).unwrap().refusals().count(sluice::edge::Reason::RateLimited);
    assert_eq!(refused(&sluice), 2, "and so did the count");
    server.reload(sluice::Config::from_json(&json(3), "test.json").unwrap()).expect("reload");
    assert_eq!(get_from("127.0.11.1", &sluice, "/", "").status, 200, "new rules start with fresh buckets");
    assert_eq!(refused(&sluice), 0);
}

#[test]
fn ipv6_clients_are_matched_against_ipv6_blocks() {
    let backend = TestBackend::named("web");
    let sluice = Sluice::from_json(&format!(
        r#"{{"listeners": [{{"listen": "[::1]:0", "routes": [
            {{"pathPrefix": "/v6only", "pool": "web", "allow": ["::1/128"]}},
            {{"pool": "web", "deny": ["::/0"]}}]}}],
        "pools": {{"web": {{"servers": ["{}"]}}}}}}"#,
        backend.url()
    ));
    assert!(sluice.addr.is_ipv6());
    let get = |path: &str| {
        let mut c = Client::connect(sluice.addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes());
        c.response().unwrap().status
    };
    assert_eq!(get("/v6only"), 200);
    assert_eq!(get("/elsewhere"), 403);
    assert_eq!(backend.request_count(), 1);
}

/// `curl` when it is installed; `None` (the test skips) otherwise, unless
/// SLUICE_REQUIRE_EXTERNAL=1 says it must be there.
fn curl_available() -> bool {
    let found = Command::new("curl").arg("--version").output().is_ok_and(|out| out.status.success());
    if !found {
        assert!(std::env::var("SLUICE_REQUIRE_EXTERNAL").as_deref() != Ok("1"), "curl is required but missing");
        println!("skipped: curl is not installed (apt-get install -y curl)");
    }
    found
}

/// `curl` from source address `from` with `args`; the status code it saw, and its output.
fn curl(from: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "--interface", from, "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn curl_is_refused_by_address_and_let_in_with_its_user_option() {
    if !curl_available() {
        return;
    }
    let backend = TestBackend::named("staff area");
    let hash = "$2y$05$m6pRZYYoFbUk3JX5pG/nVuqOi.YH0RO8Zcohep7cnNgN50HVfXxqS"; // alice:secret
    let routes = format!(
        r#"[{{"pool": "web", "allow": ["127.0.13.0/24"], "basicAuth": {{"realm": "staff", "users": {{"alice": "{hash}"}}}}}}]"#
    );
    let sluice = start_with_routes(&backend, &routes, "");
    let url = format!("http://{}/", sluice.addr);
    assert_eq!(curl("127.0.14.1", &["-u", "alice:secret", &url]).0, 403);
    assert_eq!(curl("127.0.13.1", &[&url]).0, 401);
    assert_eq!(curl("127.0.13.1", &["-u", "alice:wrong", &url]).0, 401);
    assert_eq!(curl("127.0.13.1", &["-u", "alice:secret", &url]), (200, "staff area".to_string()));
    assert_eq!(backend.request_count(), 1);
}

/// A sluice process that is killed if the test ends early.
struct Running(Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn refusals_are_logged_at_most_once_a_second_per_reason_not_once_a_request() {
    let backend = TestBackend::named("web");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("sluice-edge-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    let json = format!(
        r#"{{"listen": "127.0.0.1:{port}", "servers": ["{}"], "deny": ["127.0.15.0/24"],
        "rateLimit": {{"requestsPerSecond": 0.1, "burst": 1}}}}"#,
        backend.url()
    );
    std::fs::write(&path, json).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["-c", path.to_str().unwrap()])
        .env("RUST_LOG", "sluice::edge=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(Some(child));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()), "sluice did not start");
    let begun = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..60 {
        let from = if i % 2 == 0 { "127.0.15.1" } else { "127.0.16.1" };
        let mut c = connect_from(from, addr);
        c.send(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        statuses.push(c.response().map(|r| r.status).unwrap_or(0));
    }
    let seconds = begun.elapsed().as_secs() as usize;
    let child = running.0.take().unwrap();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), 30, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 29, "{statuses:?}");
    let lines = |reason: &str| log.lines().filter(|l| l.contains("refused") && l.contains(reason)).count();
    for (reason, status) in [("outside its allow/deny rules", "(403)"), ("over its rate limit", "(429)")] {
        let n = lines(reason);
        assert!((1..=seconds + 1).contains(&n), "{n} lines for {reason} in {seconds} s:\n{log}");
        assert!(
            log.contains(&format!("refused 1 request(s) {reason} {status}")),
            "the first refusal is logged:\n{log}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_documented_example_of_edge_controls_passes_check() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/edge.md")).unwrap();
    let section = &page[page.find("# Edge controls").expect("docs/edge.md has the section")..];
    let start = section.find("```json\n").expect("the section has a JSON example") + "```json\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    let path = std::env::temp_dir().join(format!("sluice-edge-readme-{}.json", std::process::id()));
    std::fs::write(&path, example).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).arg("--check").arg("-c").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{example}\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("basicAuth realm \"staff\" (users alice)"), "{stdout}");
}
