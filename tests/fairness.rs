//! No single client can starve the workers: short versions of the three slow attacks of
//! `scripts/slow-attacks.sh`, each from 127.0.0.1 while an innocent client on 127.0.0.2 asks,
//! plus the per-address share. Assertions are on answers and counts, never on speed.

mod common;

use common::*;
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const INNOCENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// How long the counts may take to reach what a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

/// One GET from the innocent address, with `Connection: close`.
fn innocent_get(addr: SocketAddr, path: &str) -> Response {
    let mut c = Client::connect_from(INNOCENT, addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    c.response().unwrap_or_else(|e| panic!("innocent GET {path}: {e}"))
}

/// `/stats` of the admin API as JSON.
fn stats(admin: SocketAddr) -> Value {
    let answer = exchange_raw(admin, b"GET /stats HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let body = &answer[answer.find("\r\n\r\n").expect("a response head") + 4..];
    serde_json::from_str(body).unwrap_or_else(|e| panic!("/stats is not JSON ({e}): {answer}"))
}

fn metrics(admin: SocketAddr) -> String {
    exchange_raw(admin, b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
}

fn slow_count(admin: SocketAddr, key: &str) -> u64 {
    stats(admin)["slowClients"][key].as_u64().unwrap_or_else(|| panic!("no slowClients.{key} in /stats"))
}

#[test]
fn slow_bodies_from_one_address_wait_off_the_workers_and_get_408_while_another_is_answered() {
    let backend = TestBackend::named("ok");
    let extra = r#""workers": 4, "admin": {"listen": "127.0.0.1:0"}, "timeouts": {"minRateGrace": "1s"},"#;
    let sluice = Sluice::start(&[&backend.url()], extra);
    let admin = sluice.server().admin_addr().expect("admin API configured");
    let mut slow: Vec<Client> = (0..40).map(|_| sluice.connect()).collect();
    for c in &mut slow {
        c.send(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 8192\r\n\r\nfirst bytes");
    }
    assert!(
        wait_until(PATIENCE, || slow_count(admin, "bodiesParked") >= 40),
        "the slow bodies were not parked: {:#}",
        stats(admin)["slowClients"]
    );
    for round in 0..3 {
        assert_eq!(innocent_get(sluice.addr, &format!("/innocent/{round}")).status, 200);
    }
    for (i, c) in slow.iter_mut().enumerate() {
        let answer = c.response().unwrap_or_else(|e| panic!("slow client {i}: {e}"));
        assert_eq!(answer.status, 408, "slow client {i}: {}", answer.raw_head);
        assert!(c.is_closed(), "slow client {i} was not closed after its 408");
    }
    assert_eq!(slow_count(admin, "bodiesTooSlow"), 40);
    assert_eq!(slow_count(admin, "parkedBodyBytes"), 0, "parked body bytes were not given back");
    let targets: Vec<String> = backend.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/innocent/0", "/innocent/1", "/innocent/2"], "a slow body reached the backend");
    let text = metrics(admin);
    assert!(text.contains("sluice_slow_client_events_total{event=\"body_too_slow\"} 40"), "{text}");
}

#[test]
fn a_small_body_that_arrives_in_pieces_is_sent_to_the_backend_whole() {
    let backend = TestBackend::start(|seen| Reply::ok(&format!("got {} bytes", seen.body.len())));
    let sluice = Sluice::start(&[&backend.url()], r#""workers": 2,"#);
    let mut c = sluice.connect();
    c.send(b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello");
    assert!(
        wait_until(PATIENCE, || sluice.server().runtime().metrics.slow_clients.snapshot().bodies_parked >= 1),
        "the unfinished body did not wait in the waiting room"
    );
    assert_eq!(backend.request_count(), 0, "a backend was picked before the body was all there");
    c.send(b"world");
    let answer = c.response().expect("an answer once the body is complete");
    assert_eq!((answer.status, answer.text().as_str()), (200, "got 10 bytes"));
    assert_eq!(backend.requests()[0].body, b"helloworld");
}

#[test]
fn a_reader_that_stops_reading_is_cut_off_and_counted_while_another_is_answered() {
    const BIG: usize = 64 << 20;
    let big = "x".repeat(BIG);
    let backend = TestBackend::start(move |seen| match seen.target.as_str() {
        "/big" => Reply::ok(&big),
        _ => Reply::ok("small"),
    });
    let extra = r#""workers": 4, "admin": {"listen": "127.0.0.1:0"},
        "timeouts": {"minRateGrace": "500ms"}, "limits": {"minClientBytesPerSecond": 10000000},"#;
    let sluice = Sluice::start(&[&backend.url()], extra);
    let admin = sluice.server().admin_addr().expect("admin API configured");
    let mut readers: Vec<Client> = (0..2).map(|_| sluice.connect()).collect();
    for c in &mut readers {
        c.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    assert_eq!(innocent_get(sluice.addr, "/small").status, 200);
    assert!(
        wait_until(PATIENCE, || slow_count(admin, "readersTooSlow") == 2),
        "the readers that stopped were not cut off: {:#}",
        stats(admin)["slowClients"]
    );
    for (i, c) in readers.iter_mut().enumerate() {
        let all = c.read_to_close();
        assert!(all.starts_with("HTTP/1.1 200 "), "reader {i} got {:?}", &all[..all.len().min(100)]);
        assert!(all.len() < BIG, "reader {i} got the whole answer ({} bytes) though it stopped reading", all.len());
    }
    assert_eq!(innocent_get(sluice.addr, "/small").status, 200);
}

/// A backend that answers with the target, holding `/hold...` requests until the flag is set.
fn holding_backend() -> (TestBackend, Arc<AtomicBool>) {
    let released = Arc::new(AtomicBool::new(false));
    let holding = Arc::clone(&released);
    let backend = TestBackend::start(move |seen| {
        if seen.target.starts_with("/hold") {
            wait_until(PATIENCE, || holding.load(Ordering::SeqCst));
        }
        Reply::ok(&seen.target)
    });
    (backend, released)
}

#[test]
fn an_address_over_its_share_of_the_workers_waits_while_another_is_served() {
    let (backend, released) = holding_backend();
    let extra = r#""workers": 8, "admin": {"listen": "127.0.0.1:0"}, "limits": {"maxWorkersPerClient": 2},
        "timeouts": {"queue": "60s"},"#;
    let sluice = Sluice::start(&[&backend.url()], extra);
    let admin = sluice.server().admin_addr().expect("admin API configured");
    let mut greedy: Vec<Client> = (0..5).map(|_| sluice.connect()).collect();
    for (i, c) in greedy.iter_mut().enumerate() {
        c.send(format!("GET /hold/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    assert!(
        wait_until(PATIENCE, || slow_count(admin, "waitingForShare") == 3 && backend.request_count() == 2),
        "expected 2 exchanges at the backend and 3 waiting: {} at the backend, {:#}",
        backend.request_count(),
        stats(admin)["slowClients"]
    );
    assert_eq!(innocent_get(sluice.addr, "/free").status, 200, "the other address was held up");
    assert_eq!(backend.request_count(), 3, "a connection over its share reached the backend");
    released.store(true, Ordering::SeqCst);
    for (i, c) in greedy.iter_mut().enumerate() {
        let answer = c.response().unwrap_or_else(|e| panic!("greedy client {i}: {e}"));
        assert_eq!((answer.status, answer.text()), (200, format!("/hold/{i}")));
    }
    assert_eq!(slow_count(admin, "waitingForShare"), 0);
    assert_eq!(slow_count(admin, "waitedForShare"), 3);
    let text = metrics(admin);
    assert!(text.contains("sluice_share_waits_total 3"), "{text}");
}

#[test]
fn a_wait_for_the_share_longer_than_the_queue_timeout_is_answered_503() {
    let (backend, released) = holding_backend();
    let extra = r#""workers": 8, "admin": {"listen": "127.0.0.1:0"}, "limits": {"maxWorkersPerClient": 1},
        "timeouts": {"queue": "1s"},"#;
    let sluice = Sluice::start(&[&backend.url()], extra);
    let admin = sluice.server().admin_addr().expect("admin API configured");
    let mut holder = sluice.connect();
    holder.send(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(wait_until(PATIENCE, || backend.request_count() == 1), "the first request never reached the backend");
    let mut late = sluice.connect();
    late.send(b"GET /late HTTP/1.1\r\nHost: t\r\n\r\n");
    let answer = late.response().expect("an answer to the request that waited for the share");
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.header("Retry-After"), Some("1"));
    assert!(late.is_closed(), "the connection stays open after the 503");
    assert_eq!(slow_count(admin, "shareWaitsTimedOut"), 1);
    assert!(metrics(admin).contains("sluice_share_wait_timeouts_total 1"));
    assert_eq!(backend.request_count(), 1, "the request that waited reached the backend");
    assert_eq!(innocent_get(sluice.addr, "/free").status, 200, "the other address was held up");
    released.store(true, Ordering::SeqCst);
    let held = holder.response().expect("the holder's answer");
    assert_eq!((held.status, held.text()), (200, "/hold".to_string()));
}

#[test]
fn without_the_waiting_room_a_small_body_is_waited_for_on_the_worker() {
    let backend = TestBackend::start(|seen| Reply::ok(&format!("got {} bytes", seen.body.len())));
    let sluice = Sluice::start(&[&backend.url()], r#""workers": 2, "waitingRoom": false,"#);
    let runtime = sluice.server().runtime();
    let mut c = sluice.connect();
    c.send(b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello");
    assert!(wait_until(PATIENCE, || runtime.busy_workers() == 1), "no worker took the request");
    c.send(b"world");
    let answer = c.response().expect("an answer once the body is complete");
    assert_eq!((answer.status, answer.text().as_str()), (200, "got 10 bytes"));
    assert_eq!(runtime.metrics.slow_clients.snapshot().bodies_parked, 0, "parked though parking is off");
    assert_eq!(runtime.waiting_room.parked_count(), 0);
}
