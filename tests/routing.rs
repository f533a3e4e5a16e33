//! Several sites on one listener, and redirect mode: routes by host, wildcard, path prefix and
//! default, 404 when nothing matches, pools that keep their own rotation, `307` Locations
//! that follow the pool's algorithm and its health, and `--check` / errors for the full form.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn get(sluice: &Sluice, host: &str, target: &str) -> Response {
    let mut c = sluice.connect();
    c.send(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes());
    c.response().unwrap_or_else(|e| panic!("GET {target} for {host}: {e}"))
}

/// Backends named after their pools, and sluice routing to them:
///   routes[0] host api.example.com, pathPrefix /v1  -> api
///   routes[1] host *.example.com                    -> sites
///   routes[2] pathPrefix /static                    -> files
///   routes[3] (default)                             -> web
fn routed() -> (Vec<TestBackend>, Sluice) {
    let names = ["api", "sites", "files", "web"];
    let backends: Vec<TestBackend> = names.iter().map(|n| TestBackend::named(n)).collect();
    let pools: Vec<String> =
        names.iter().zip(&backends).map(|(n, b)| format!(r#""{n}": {{"servers": ["{}"]}}"#, b.url())).collect();
    let sluice = Sluice::from_json(&format!(
        r#"{{"listeners": [{{"listen": "127.0.0.1:0", "routes": [
            {{"host": "api.example.com", "pathPrefix": "/v1", "pool": "api"}},
            {{"host": "*.example.com", "pool": "sites"}},
            {{"pathPrefix": "/static/", "pool": "files"}},
            {{"pool": "web"}}]}}],
          "pools": {{{}}}}}"#,
        pools.join(", ")
    ));
    (backends, sluice)
}

#[test]
fn requests_take_the_first_route_matching_host_and_path() {
    let (backends, sluice) = routed();
    let cases = [
        ("api.example.com", "/v1/users", "api"),
        ("API.Example.COM:8080", "/v1?page=2", "api"),
        ("api.example.com", "/v1x", "sites"),
        ("api.example.com", "/v2/users", "sites"),
        ("www.example.com", "/static/a.css", "sites"),
        ("example.com", "/static/a.css", "files"),
        ("a.b.example.com", "/static", "files"),
        ("other.org", "/staticfile", "web"),
        ("other.org", "/", "web"),
    ];
    for (host, target, pool) in cases {
        let r = get(&sluice, host, target);
        assert_eq!((r.status, r.text()), (200, pool.to_string()), "{host} {target}\n{}", r.raw_head);
    }
    // The backend sees the request as the client sent it.
    let seen = &backends[0].requests()[1];
    assert_eq!((seen.target.as_str(), seen.header("host")), ("/v1?page=2", Some("API.Example.COM:8080")));
}

#[test]
fn absolute_form_targets_route_by_their_authority() {
    let (_backends, sluice) = routed();
    let mut c = sluice.connect();
    c.send(b"GET http://api.example.com/v1/x HTTP/1.1\r\nHost: other.org\r\nConnection: close\r\n\r\n");
    assert_eq!(c.response().unwrap().text(), "api");
}

#[test]
fn http_1_0_without_host_takes_only_routes_without_a_host() {
    let (_backends, sluice) = routed();
    for (target, pool) in [("/v1", "web"), ("/static/x", "files")] {
        let mut c = sluice.connect();
        c.send(format!("GET {target} HTTP/1.0\r\n\r\n").as_bytes());
        assert_eq!(c.response().unwrap().text(), pool, "{target}");
    }
}

/// sluice with one route, for host `api.test`, and its backend (answering "api").
fn api_test_only() -> (TestBackend, Sluice) {
    let backend = TestBackend::named("api");
    let sluice = Sluice::from_json(&format!(
        r#"{{"listeners": [{{"listen": "127.0.0.1:0", "routes": [{{"host": "api.test", "pool": "api"}}]}}],
            "pools": {{"api": {{"servers": ["{}"]}}}}}}"#,
        backend.url()
    ));
    (backend, sluice)
}

#[test]
fn no_matching_route_is_a_404_with_a_short_body() {
    let (backend, sluice) = api_test_only();
    let mut c = sluice.connect();
    c.send(b"GET /x HTTP/1.1\r\nHost: other.test\r\n\r\n");
    let r = c.response().unwrap();
    assert_eq!(r.status, 404, "{}", r.raw_head);
    assert_eq!(r.text(), "404 Not Found: no route for this host and path\n");
    // The connection stays usable, and a matching request still goes through.
    c.send(b"GET /x HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n");
    assert_eq!(c.response().unwrap().text(), "api");
    assert_eq!(backend.request_count(), 1);
}

#[test]
fn sluices_own_answer_to_head_has_no_body_so_the_connection_stays_in_step() {
    let (backend, sluice) = api_test_only();
    let mut c = sluice.connect();
    c.send(b"HEAD /x HTTP/1.1\r\nHost: other.test\r\n\r\nGET /y HTTP/1.1\r\nHost: api.test\r\n\r\n");
    let r = c.read_response(true).unwrap();
    assert_eq!(r.status, 404, "{}", r.raw_head);
    let next = c.response().unwrap();
    assert_eq!(
        (next.status, next.text().as_str()),
        (200, "api"),
        "the 404's body was sent after all: {}",
        next.raw_head
    );
    assert_eq!(backend.request_count(), 1, "only the GET reached the backend");
}

#[test]
fn each_pool_keeps_its_own_rotation() {
    let web = [TestBackend::named("w1"), TestBackend::named("w2")];
    let api = [TestBackend::named("a1"), TestBackend::named("a2"), TestBackend::named("a3")];
    let list = |b: &[TestBackend]| b.iter().map(|b| format!("{:?}", b.url())).collect::<Vec<_>>().join(", ");
    let sluice = Sluice::from_json(&format!(
        r#"{{"listeners": [{{"listen": "127.0.0.1:0", "routes": [{{"pathPrefix": "/api", "pool": "api"}}, {{"pool": "web"}}]}}],
            "pools": {{"web": {{"servers": [{}]}}, "api": {{"servers": [{}]}}}}}}"#,
        list(&web),
        list(&api)
    ));
    let answers: Vec<String> =
        ["/", "/api", "/", "/api", "/api", "/", "/api"].iter().map(|t| get(&sluice, "t", t).text()).collect();
    assert_eq!(answers, ["w1", "a1", "w2", "a2", "a3", "w1", "a1"]);
}

#[test]
fn several_listeners_serve_side_by_side() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    let sluice = Sluice::from_json(&format!(
        r#"{{"listeners": [{{"listen": "127.0.0.1:0", "pool": "a"}}, {{"listen": "127.0.0.1:0", "routes": [{{"pool": "b"}}]}}],
            "pools": {{"a": {{"servers": ["{}"]}}, "b": {{"servers": ["{}"]}}}}}}"#,
        a.url(),
        b.url()
    ));
    let addrs = sluice.server().local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    for (addr, want) in addrs.iter().zip(["a", "b"]) {
        let all = exchange_raw(*addr, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert!(all.ends_with(&format!("\r\n\r\n{want}")), "{addr}: {all}");
    }
}

fn redirect_sluice(urls: &[String], pool_extra: &str) -> Sluice {
    let servers: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    Sluice::from_json(&format!(
        r#"{{"listeners": [{{"listen": "127.0.0.1:0", "mode": "redirect", "pool": "web"}}],
            "pools": {{"web": {{"servers": [{}] {pool_extra}}}}}}}"#,
        servers.join(", ")
    ))
}

#[test]
fn redirect_mode_answers_307_to_backends_in_round_robin_order() {
    let backends = [TestBackend::named("a"), TestBackend::named("b"), TestBackend::named("c")];
    let urls: Vec<String> = backends.iter().map(TestBackend::url).collect();
    let sluice = redirect_sluice(&urls, "");
    let mut c = sluice.connect();
    let mut locations = Vec::new();
    for i in 0..6 {
        c.send(format!("GET /page/{i}?q=x&r=y HTTP/1.1\r\nHost: site.test\r\n\r\n").as_bytes());
        let r = c.response().unwrap();
        assert_eq!(r.status, 307, "{}", r.raw_head);
        assert!(r.raw_head.starts_with("HTTP/1.1 307 Temporary Redirect\r\n"), "{}", r.raw_head);
        let location = r.header("location").expect("a Location").to_string();
        assert_eq!(r.text(), format!("307 Temporary Redirect: see {location}\n"));
        locations.push(location);
    }
    let expected: Vec<String> = (0..6).map(|i| format!("{}/page/{i}?q=x&r=y", urls[i % 3])).collect();
    assert_eq!(locations, expected);
    assert!(backends.iter().all(|b| b.request_count() == 0), "a redirect must not proxy the request");
}

#[test]
fn redirect_mode_skips_unhealthy_backends_and_answers_503_when_none_is_left() {
    let live = TestBackend::named("live");
    let dead = closed_port_url();
    let health = r#", "healthCheckInterval": "100ms", "healthCheck": {"timeout": "200ms", "fall": 1, "rise": 1}"#;
    let sluice = redirect_sluice(&[dead.clone(), live.url()], health);
    let pool = sluice.server().runtime().state().pools[0].clone();
    assert!(wait_until(Duration::from_secs(5), || !pool.backends[0].is_healthy()), "{dead} never went down");
    for _ in 0..4 {
        let r = get(&sluice, "t", "/x");
        assert_eq!(r.header("location"), Some(format!("{}/x", live.url()).as_str()), "{}", r.raw_head);
    }
    drop(live);
    assert!(wait_until(Duration::from_secs(5), || !pool.backends[1].is_healthy()), "the stopped backend stays up");
    let r = get(&sluice, "t", "/x");
    assert_eq!((r.status, r.header("location")), (503, None), "{}", r.raw_head);
    assert!(r.header("retry-after").is_some(), "{}", r.raw_head);
}

#[test]
fn redirect_mode_answers_head_without_a_body_and_closes_after_a_request_with_one() {
    let backend = TestBackend::named("a");
    let sluice = redirect_sluice(&[backend.url()], "");
    let mut c = sluice.connect();
    c.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(true).unwrap();
    assert_eq!((r.status, r.header("location")), (307, Some(format!("{}/h", backend.url()).as_str())));
    // Nothing stray follows the head: the next answer parses cleanly.
    c.send(b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    let r = c.response().unwrap();
    assert_eq!((r.status, r.header("connection")), (307, Some("close")), "{}", r.raw_head);
    assert!(c.is_closed());
}

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

#[test]
fn check_prints_listeners_modes_routes_and_pools() {
    let path = config_file(
        "check",
        r#"{"listeners": [
            {"listen": "127.0.0.1:8080", "routes": [{"host": "*.example.com", "pathPrefix": "/v1", "pool": "api"}, {"pool": "web"}]},
            {"listen": "127.0.0.1:6432", "mode": "tcp", "pool": "db"},
            {"listen": "127.0.0.1:8081", "mode": "redirect", "pool": "web"}],
          "pools": {"web": {"servers": ["http://127.0.0.1:5001"]}, "api": {"servers": ["http://127.0.0.1:5002"]},
                    "db": {"servers": ["tcp://127.0.0.1:5432", "tcp://127.0.0.1:5433"]}},
          "timeouts": {"tunnel": "30m"}}"#,
    );
    let out = Command::new(SLUICE).args(["--check", "-c", path.to_str().unwrap()]).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "listener 127.0.0.1:8080 (http)\n  route host *.example.com, pathPrefix /v1 -> pool \"api\"\n  route every other request -> pool \"web\"\n",
        "listener 127.0.0.1:6432 (tcp) -> pool \"db\"\n",
        "listener 127.0.0.1:8081 (redirect) -> pool \"web\"\n",
        "pool \"db\": round-robin, retries 2, health check tcp connect every 2s",
        "  tcp://127.0.0.1:5433 (127.0.0.1:5433) weight 1\n",
        "pool \"web\": round-robin, retries 2, health check HEAD / every 2s",
        "tunnel 1800s",
    ] {
        assert!(report.contains(line), "missing {line:?} in:\n{report}");
    }
}

#[test]
fn a_route_to_an_unknown_pool_exits_2_naming_the_key_path() {
    let path = config_file(
        "unknown-pool",
        r#"{"listeners": [{"listen": ":8080", "pool": "web"}, {"listen": ":8081", "routes": [{"pool": "ap"}]}],
            "pools": {"web": {"servers": ["http://127.0.0.1:5001"]}, "api": {"servers": ["http://127.0.0.1:5002"]}}}"#,
    );
    let out = Command::new(SLUICE).args(["--check", "-c", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let want =
        format!("{}: listeners[1].routes[0].pool: no pool named \"ap\" (pools: \"api\", \"web\")", path.display());
    assert!(err.contains(&want), "{err}");
}
