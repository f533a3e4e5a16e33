//! Backends misbehaving and the balancer coping: connect failures and `retries`, 502/503/504
//! answers, partial and invalid responses, pooled keep-alive connections to backends (and
//! ones the backend closed while idle), active health checks with rise and fall, backup
//! servers, `weight: 0`, and `exposeBackend`.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Few workers: these tests never need many, and each sluice starts its own.
const WORKERS: &str = r#""workers": 4,"#;

/// Probes every 50 ms and takes one result to flip, so health changes show up quickly.
const FAST_HEALTH: &str =
    r#""healthCheckInterval": "50ms", "healthCheck": {"rise": 1, "fall": 1, "timeout": "200ms"},"#;

/// Only the start-up probes, and no passive health checks: no health flip can happen while a
/// test runs.
const NO_HEALTH_FLIPS: &str = r#""healthCheckInterval": "1m", "healthCheck": {"passiveFails": 0},"#;

const WAIT: Duration = Duration::from_secs(5);

/// Starts sluice with `servers`, a JSON list body such as `"http://a", {"url": "http://b"}`.
fn start_with_servers(servers: &str, extra: &str) -> Sluice {
    Sluice::from_json(&format!(r#"{{"listen": "127.0.0.1:0", {WORKERS} {extra} "servers": [{servers}]}}"#))
}

fn start(urls: &[&str], extra: &str) -> Sluice {
    Sluice::start(urls, &format!("{WORKERS} {extra}"))
}

fn failures(sluice: &Sluice) -> Vec<u64> {
    sluice.server().runtime().state().pools[0].backends.iter().map(|b| b.stats().failures).collect()
}

/// Sends a keep-alive `GET path` on `client` and reads the response.
fn get_keep_alive(client: &mut Client, path: &str) -> Response {
    client.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    client.response().unwrap_or_else(|e| panic!("GET {path} on a kept-alive connection: {e}"))
}

/// A backend whose health probes fail while `failing` is set; it answers everything else
/// `200` with its name, and counts the probes it failed and passed.
struct Switchable {
    backend: TestBackend,
    failing: Arc<AtomicBool>,
    probes_failed: Arc<AtomicUsize>,
    probes_passed: Arc<AtomicUsize>,
}

impl Switchable {
    fn start(name: &str) -> Switchable {
        let failing = Arc::new(AtomicBool::new(false));
        let probes_failed = Arc::new(AtomicUsize::new(0));
        let probes_passed = Arc::new(AtomicUsize::new(0));
        let (f, failed, passed, name) =
            (failing.clone(), probes_failed.clone(), probes_passed.clone(), name.to_string());
        let backend = TestBackend::start(move |seen| {
            if !is_probe(seen) {
                Reply::ok(&name)
            } else if f.load(Ordering::SeqCst) {
                failed.fetch_add(1, Ordering::SeqCst);
                Reply::status(500, "failing")
            } else {
                passed.fetch_add(1, Ordering::SeqCst);
                Reply::ok("fine")
            }
        });
        Switchable { backend, failing, probes_failed, probes_passed }
    }

    fn url(&self) -> String {
        self.backend.url()
    }
}

// ---- connect failures and retries ----

#[test]
fn connect_failure_moves_on_to_the_next_backend() {
    let dead = closed_port_url();
    let live = TestBackend::named("live");
    let sluice = start(&[&dead, &live.url()], NO_HEALTH_FLIPS);
    for i in 0..4 {
        let r = sluice.get("/first");
        assert_eq!((r.status, r.text().as_str()), (200, "live"), "request {i}: {r:?}");
    }
    let after_first = sluice.backend_stats(0).failures;
    assert!(after_first >= 1, "the dead backend's failures should count: {:?}", sluice.backend_stats(0));
    for i in 0..4 {
        let r = sluice.get("/second");
        assert_eq!((r.status, r.text().as_str()), (200, "live"), "request {i}: {r:?}");
    }
    assert!(
        sluice.backend_stats(0).failures > after_first,
        "failures should keep growing: {:?}",
        sluice.backend_stats(0)
    );
    assert_eq!(live.requests().len(), 8);
    assert_eq!(sluice.backend_stats(1).failures, 0);
}

#[test]
fn retries_limits_how_many_backends_are_tried_after_connect_failures() {
    let dead = [closed_port_url(), closed_port_url(), closed_port_url()];
    let sluice = start(&[&dead[0], &dead[1], &dead[2]], &format!(r#"{NO_HEALTH_FLIPS} "retries": 1,"#));
    let r = sluice.get("/");
    assert_eq!(r.status, 502, "{r:?}");
    let f = failures(&sluice);
    assert_eq!(f.iter().sum::<u64>(), 2, "retries 1 means one backend and one more: failures {f:?}");
    assert_eq!(f.iter().filter(|&&n| n == 0).count(), 1, "one backend should be left untried: failures {f:?}");
}

#[test]
fn all_backends_refusing_connections_gives_502_with_a_short_plain_text_body() {
    let dead = [closed_port_url(), closed_port_url(), closed_port_url(), closed_port_url()];
    let urls: Vec<&str> = dead.iter().map(String::as_str).collect();
    let sluice = start(&urls, NO_HEALTH_FLIPS);
    let r = sluice.get("/");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("text/plain")), "{r:?}");
    assert!(r.text().starts_with("502") && r.body.len() < 200, "short plain-text body wanted: {:?}", r.text());
    let f = failures(&sluice);
    assert_eq!(f.iter().sum::<u64>(), 3, "default retries is 2, so three backends are tried: failures {f:?}");
}

// ---- sluice's own answers: 503, 504 ----

#[test]
fn no_available_backend_gives_503_with_retry_after() {
    let sick = TestBackend::start(|seen| {
        if is_probe(seen) {
            return Reply::status(500, "sick");
        }
        Reply::ok("should not be asked")
    });
    let sluice = start(&[&sick.url()], FAST_HEALTH);
    assert!(wait_until(WAIT, || !sluice.backend_stats(0).healthy), "never marked down: {:?}", sluice.backend_stats(0));
    let r = sluice.get("/");
    assert_eq!(r.status, 503, "{r:?}");
    let retry_after = r.header("retry-after").unwrap_or_else(|| panic!("no Retry-After: {r:?}"));
    assert!(retry_after.parse::<u64>().is_ok_and(|s| s >= 1), "Retry-After should be whole seconds: {r:?}");
    assert!(r.text().starts_with("503"), "{r:?}");
    assert!(sick.requests().is_empty(), "a down backend got traffic: {:?}", sick.requests());
}

#[test]
fn backend_slower_than_the_backend_timeout_gives_504_and_its_late_answer_is_never_relayed() {
    let backend = TestBackend::start(|seen| {
        if seen.target == "/slow" {
            thread::sleep(Duration::from_millis(1500));
        }
        Reply::ok(&seen.target)
    });
    let sluice = start(&[&backend.url()], r#""timeouts": {"backend": "300ms"},"#);
    let r = sluice.get("/slow");
    assert_eq!(r.status, 504, "{r:?}");
    assert!(r.text().starts_with("504"), "{r:?}");
    // Had the timed-out connection gone back to the idle set, this would get the late "/slow".
    let r = sluice.get("/fast");
    assert_eq!((r.status, r.text().as_str()), (200, "/fast"), "{r:?}");
}

// ---- broken responses ----

#[test]
fn partial_response_closes_the_client_connection_instead_of_hanging() {
    let backend = TestBackend::start(|seen| {
        if is_probe(seen) {
            return Reply::ok("");
        }
        Reply::RawThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec())
    });
    let sluice = start(&[&backend.url()], "");
    let mut client = sluice.connect();
    client.send(b"GET /partial HTTP/1.1\r\nHost: test\r\n\r\n");
    let text = client.try_read_to_close().expect("sluice should close the client connection");
    let got = text.as_bytes();
    assert!(text.starts_with("HTTP/1.1 200"), "the head should have been relayed: {text:?}");
    let body_start = find(got, b"\r\n\r\n").map(|i| i + 4).unwrap_or_else(|| panic!("no complete head: {text:?}"));
    assert_eq!(&got[body_start..], b"0123456789", "only what the backend sent: {text:?}");
}

#[test]
fn invalid_backend_responses_give_502() {
    let cases: [(&str, &[u8]); 5] = [
        ("garbage", b"this is not http\r\n\r\n"),
        (
            "Content-Length with Transfer-Encoding",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        ("two different Content-Lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("malformed Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello"),
        ("Transfer-Encoding other than chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
    ];
    for (what, raw) in cases {
        let backend =
            TestBackend::start(move |seen| if is_probe(seen) { Reply::ok("") } else { Reply::Raw(raw.to_vec()) });
        let sluice = start(&[&backend.url()], NO_HEALTH_FLIPS);
        let r = sluice.get("/");
        assert_eq!(r.status, 502, "{what}: backend sent {:?}, client got {r:?}", String::from_utf8_lossy(raw));
        assert!(r.text().starts_with("502"), "{what}: {r:?}");
        assert_eq!(sluice.backend_stats(0).failures, 1, "{what}: {:?}", sluice.backend_stats(0));
    }
}

// ---- pooled keep-alive connections to backends ----

#[test]
fn backend_connections_are_reused_across_client_connections() {
    let backend = TestBackend::named("b");
    let sluice = start(&[&backend.url()], NO_HEALTH_FLIPS);
    for i in 0..20 {
        // Reading until sluice closes means it has finished with the backend connection.
        let answer = exchange_raw(
            sluice.addr,
            format!("GET /{i} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\nb"), "request {i}: {answer:?}");
    }
    assert_eq!(backend.requests().len(), 20);
    assert!(backend.connection_count() <= 2, "backend connections used: {}", backend.connection_count());
    assert!(sluice.backend_stats(0).connections_opened <= 2, "{:?}", sluice.backend_stats(0));
}

#[test]
fn an_idle_backend_connection_older_than_backend_idle_is_closed_and_not_reused() {
    let backend = TestBackend::named("b");
    let extra = r#""healthCheckInterval": "100ms", "timeouts": {"backendIdle": "300ms"},"#;
    let sluice = start(&[&backend.url()], extra);
    assert_eq!(sluice.get("/one").text(), "b");
    // The backend never closes a connection itself: sluice lets this one go once it is stale.
    assert!(wait_until(WAIT, || backend.closed_count() == 1), "the idle backend connection was never closed");
    assert_eq!(sluice.get("/two").text(), "b");
    assert_eq!(backend.connection_count(), 2, "the stale connection was reused");
    assert_eq!(sluice.backend_stats(0).failures, 0, "{:?}", sluice.backend_stats(0));
}

/// A backend that answers every relayed request completely, in a response that promises
/// keep-alive, and then closes the connection anyway.
fn closes_after_each_answer() -> TestBackend {
    TestBackend::start(|seen| {
        if is_probe(seen) {
            return Reply::ok("");
        }
        let body = format!("{} {}", seen.method, seen.target);
        Reply::RawThenClose(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes())
    })
}

#[test]
fn get_on_an_idle_connection_the_backend_closed_is_retried_on_a_fresh_one() {
    let backend = closes_after_each_answer();
    let sluice = start(&[&backend.url()], NO_HEALTH_FLIPS);
    let mut client = sluice.connect();
    let first = get_keep_alive(&mut client, "/one");
    assert_eq!((first.status, first.text().as_str()), (200, "GET /one"), "{first:?}");
    let second = get_keep_alive(&mut client, "/two");
    assert_eq!((second.status, second.text().as_str()), (200, "GET /two"), "{second:?}");
    let targets: Vec<String> = backend.requests().iter().map(|s| s.target.clone()).collect();
    assert_eq!(targets, ["/one", "/two"]);
    assert_eq!(backend.connection_count(), 2);
    assert_eq!(sluice.backend_stats(0).failures, 0, "a closed idle connection is not a backend failure");
}

/// A backend that answers each request with its target, then, 100 ms later, writes a whole
/// second response nobody asked for.
fn speaks_unasked() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                    if !head.ends_with(b"\r\n\r\n") {
                        continue;
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let target = text.split(' ').nth(1).unwrap_or("/").to_string();
                    head.clear();
                    let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{target}", target.len());
                    thread::sleep(Duration::from_millis(100));
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!");
                }
            });
        }
    });
    addr
}

#[test]
fn an_idle_backend_connection_with_bytes_nobody_asked_for_is_not_reused() {
    let backend = speaks_unasked();
    let sluice = start(&[&format!("http://{backend}")], r#""healthCheckInterval": "1h","#);
    let mut client = sluice.connect();
    assert_eq!(get_keep_alive(&mut client, "/one").text(), "/one");
    thread::sleep(Duration::from_millis(400));
    let second = get_keep_alive(&mut client, "/two");
    assert_eq!((second.status, second.text().as_str()), (200, "/two"), "the unasked response reached a client");
}

#[test]
fn post_after_the_backend_closed_an_idle_connection_is_sent_once_on_a_fresh_one() {
    let backend = closes_after_each_answer();
    let sluice = start(&[&backend.url()], NO_HEALTH_FLIPS);
    let mut client = sluice.connect();
    let first = get_keep_alive(&mut client, "/one");
    assert_eq!(first.status, 200, "{first:?}");
    // Only a close that has happened can be seen: a POST sent on a connection closing at that
    // very moment fails before any response byte and is, rightly, not sent again (502).
    assert!(wait_until(WAIT, || backend.closed_count() == 1), "the backend never closed its connection");
    client.send(b"POST /submit HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello");
    let r = client.response().expect("POST response");
    assert_eq!((r.status, r.text().as_str()), (200, "POST /submit"), "{r:?}");
    let posts: Vec<Seen> = backend.requests().into_iter().filter(|s| s.method == "POST").collect();
    assert_eq!(posts.len(), 1, "the POST must reach the backend exactly once: {posts:?}");
    assert_eq!(posts[0].body, b"hello");
    assert_eq!(sluice.backend_stats(0).failures, 0);
}

// ---- health checks ----

#[test]
fn failing_health_checks_take_a_backend_out_after_fall_and_back_after_rise() {
    let flaky = Switchable::start("flaky");
    let steady = TestBackend::named("steady");
    let health = r#""healthCheckInterval": "50ms", "healthCheck": {"rise": 3, "fall": 3, "timeout": "200ms"},"#;
    let sluice = start(&[&flaky.url(), &steady.url()], health);

    flaky.failing.store(true, Ordering::SeqCst);
    assert!(wait_until(WAIT, || !sluice.backend_stats(0).healthy), "never marked down: {:?}", sluice.backend_stats(0));
    let failed = flaky.probes_failed.load(Ordering::SeqCst);
    assert!(failed >= 3, "down after {failed} failed probes; fall is 3");

    let before = flaky.backend.requests().len();
    for i in 0..6 {
        let r = sluice.get("/while-down");
        assert_eq!((r.status, r.text().as_str()), (200, "steady"), "request {i}: {r:?}");
    }
    assert_eq!(flaky.backend.requests().len(), before, "a down backend got traffic");

    flaky.probes_passed.store(0, Ordering::SeqCst);
    flaky.failing.store(false, Ordering::SeqCst);
    assert!(wait_until(WAIT, || sluice.backend_stats(0).healthy), "never back up: {:?}", sluice.backend_stats(0));
    let passed = flaky.probes_passed.load(Ordering::SeqCst);
    assert!(passed >= 3, "up after {passed} passed probes; rise is 3");
    let bodies: Vec<String> = (0..4).map(|_| sluice.get("/back").text()).collect();
    assert!(bodies.iter().any(|b| b == "flaky"), "a backend that is up again should get traffic: {bodies:?}");
}

#[test]
fn backend_refusing_connections_is_marked_down_and_gets_no_traffic() {
    let dead = closed_port_url();
    let live = TestBackend::named("live");
    let sluice = start(&[&dead, &live.url()], FAST_HEALTH);
    assert!(wait_until(WAIT, || !sluice.backend_stats(0).healthy), "never marked down: {:?}", sluice.backend_stats(0));
    let failures_before = sluice.backend_stats(0).failures;
    for i in 0..4 {
        let r = sluice.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "live"), "request {i}: {r:?}");
    }
    assert_eq!(sluice.backend_stats(0).failures, failures_before, "a down backend should not even be tried");
}

#[test]
fn health_checks_use_the_configured_path_and_method() {
    let backend = TestBackend::named("b");
    let health = r#""healthCheckInterval": "50ms", "healthCheck": {"path": "/healthz", "method": "GET"},"#;
    let _sluice = start(&[&backend.url()], health);
    assert!(wait_until(WAIT, || backend.probe_count() >= 2), "no probes seen");
    for probe in backend.probes.lock().unwrap().iter() {
        assert_eq!((probe.method.as_str(), probe.target.as_str()), ("GET", "/healthz"), "{probe:?}");
        assert!(probe.header("user-agent").is_some_and(|ua| ua.contains("sluice")), "{probe:?}");
        assert!(probe.header("host").is_some(), "probes are HTTP/1.1 and need Host: {probe:?}");
    }
}

#[test]
fn a_health_check_answered_after_its_timeout_counts_as_failed() {
    let stalling = TestBackend::start(|seen| {
        if is_probe(seen) {
            thread::sleep(Duration::from_secs(1));
        }
        Reply::ok("stalling")
    });
    let sluice = start(&[&stalling.url()], FAST_HEALTH);
    assert!(wait_until(WAIT, || !sluice.backend_stats(0).healthy), "a 200 after 1s passed a 200ms timeout");
}

#[test]
fn a_slow_health_check_does_not_delay_probes_of_other_backends() {
    let hanging = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hanging);
    // Its probes go unanswered for 10 s, within the probe timeout.
    let slow = TestBackend::start(move |seen| {
        if is_probe(seen) {
            counter.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_secs(10));
        }
        Reply::ok("slow")
    });
    let fast = TestBackend::named("fast");
    let health = r#""healthCheckInterval": "100ms", "healthCheck": {"timeout": "10s"},"#;
    let _sluice = start(&[&slow.url(), &fast.url()], health);
    assert!(wait_until(WAIT, || hanging.load(Ordering::SeqCst) >= 1), "no probe reached the slow backend");
    // While that probe hangs, the fast backend goes on being probed.
    let before = fast.probe_count();
    let probed = wait_until(WAIT, || fast.probe_count() >= before + 5);
    assert!(probed, "the fast backend saw {} probes while the slow one's hung", fast.probe_count() - before);
}

// ---- backups and weights ----

#[test]
fn backup_gets_traffic_only_while_every_primary_is_down() {
    let primary = Switchable::start("primary");
    let backup = TestBackend::named("backup");
    let servers = format!(r#""{}", {{"url": "{}", "backup": true}}"#, primary.url(), backup.url());
    let sluice = start_with_servers(&servers, FAST_HEALTH);
    for i in 0..5 {
        let r = sluice.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "primary"), "request {i}: {r:?}");
    }
    assert!(backup.requests().is_empty(), "the backup got traffic while the primary was up");

    primary.failing.store(true, Ordering::SeqCst);
    assert!(wait_until(WAIT, || !sluice.backend_stats(0).healthy), "primary never marked down");
    for i in 0..5 {
        let r = sluice.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "backup"), "request {i}: {r:?}");
    }

    primary.failing.store(false, Ordering::SeqCst);
    assert!(wait_until(WAIT, || sluice.backend_stats(0).healthy), "primary never back up");
    let before = backup.requests().len();
    for i in 0..3 {
        let r = sluice.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "primary"), "request {i}: {r:?}");
    }
    assert_eq!(backup.requests().len(), before, "the backup got traffic after the primary came back");
}

#[test]
fn weight_zero_backend_is_never_picked() {
    let zero = TestBackend::named("zero");
    let one = TestBackend::named("one");
    let servers = format!(r#"{{"url": "{}", "weight": 0}}, "{}""#, zero.url(), one.url());
    let sluice = start_with_servers(&servers, "");
    for i in 0..10 {
        let r = sluice.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "one"), "request {i}: {r:?}");
    }
    assert!(zero.requests().is_empty(), "weight 0 got traffic: {:?}", zero.requests());
}

// ---- exposeBackend ----

#[test]
fn x_forwarded_server_names_the_backend_only_when_expose_backend_is_on() {
    let backend = TestBackend::named("b");
    let exposing = start(&[&backend.url()], r#""exposeBackend": true,"#);
    let r = exposing.get("/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-forwarded-server"), Some(backend.url().as_str()), "{}", r.raw_head);
    let by_default = start(&[&backend.url()], "");
    let r = by_default.get("/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-forwarded-server"), None, "{}", r.raw_head);
}
