//! Holding up under load with a small worker pool: idle keep-alive clients and slow heads
//! wait in the waiting room instead of holding workers, so fresh clients are still answered;
//! the connection limit answers 503 at once.
//!
//! No test here times the machine. "A newcomer is answered" means: answered within a bound far
//! shorter than the timeouts that would otherwise free a worker, while every
//! other client is still connected, as each proves by being answered again afterwards.

mod common;

use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

/// Longer than any queue on a busy 2-core machine, shorter than the default `keepAlive` (15 s)
/// and far shorter than `LONG_TIMEOUTS`.
const NEWCOMER_BOUND: Duration = Duration::from_secs(10);

/// Timeouts long enough that no idle or slow client is let go while a test runs.
const LONG_TIMEOUTS: &str = r#""timeouts": {"keepAlive": "2m", "clientHeader": "2m"},"#;

fn get_on(c: &mut Client, path: &str) -> Response {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    c.response().unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// A fresh client's `GET path`, waiting up to `NEWCOMER_BOUND` for the answer.
fn newcomer_get(sluice: &Sluice, path: &str) -> Response {
    let mut c = sluice.connect();
    c.stream.set_read_timeout(Some(NEWCOMER_BOUND)).unwrap();
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    c.response().unwrap_or_else(|e| panic!("the newcomer got no answer: {e}"))
}

#[test]
fn more_keep_alive_clients_than_workers_are_all_answered() {
    let backend = TestBackend::named("ok");
    let sluice = Sluice::start(&[&backend.url()], &format!(r#""workers": 4, {LONG_TIMEOUTS}"#));
    let mut clients: Vec<Client> = (0..40).map(|_| sluice.connect()).collect();
    for round in 0..3 {
        for (i, c) in clients.iter_mut().enumerate() {
            let r = get_on(c, &format!("/{round}/{i}"));
            assert_eq!(r.status, 200, "client {i} round {round}: {}", r.raw_head);
        }
    }
    let runtime = sluice.server().runtime();
    assert!(wait_until(WAIT, || runtime.waiting_room.parked_count() > 0), "idle clients should be parked");
    // Every client is still connected and idle; a newcomer is answered all the same.
    assert_eq!(newcomer_get(&sluice, "/fresh").status, 200);
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(get_on(c, "/after").status, 200, "client {i} was let go to make room");
    }
}

#[test]
fn trickling_heads_do_not_hold_workers_from_other_clients() {
    let backend = TestBackend::named("ok");
    let sluice = Sluice::start(&[&backend.url()], LONG_TIMEOUTS);
    let mut slow: Vec<Client> = (0..300).map(|_| sluice.connect()).collect();
    for c in &mut slow {
        c.send(b"GET / HTTP/1.1\r\nHo");
    }
    for c in &mut slow {
        c.send(b"s");
    }
    // 300 heads in progress, more than the 256 workers: a normal client is answered anyway.
    assert_eq!(newcomer_get(&sluice, "/normal").status, 200);
    // The slow ones were all still waiting: they finish their heads and are answered too.
    for c in &mut slow {
        c.send(b"t: t\r\n\r\n");
    }
    for c in &mut slow {
        assert_eq!(c.response().unwrap().status, 200);
    }
}

#[test]
fn a_thousand_idle_keep_alive_clients_with_the_default_configuration_leave_room_for_newcomers() {
    sluice::sys::raise_open_file_limit().expect("two thousand sockets need a higher open-file limit");
    let backend = TestBackend::named("ok");
    let sluice = Sluice::start(&[&backend.url()], "");
    let mut clients: Vec<Client> = (0..1000).map(|_| sluice.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(get_on(c, "/").status, 200, "client {i}");
    }
    assert_eq!(newcomer_get(&sluice, "/fresh").status, 200);
    // All thousand were still connected: each is answered again on its connection.
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(get_on(c, "/again").status, 200, "client {i}, second request");
    }
}

#[test]
fn a_parked_head_that_never_completes_gets_408() {
    let backend = TestBackend::named("ok");
    // With one worker, a connection with nothing more to read is always parked, never held.
    let sluice = Sluice::start(&[&backend.url()], r#""workers": 1, "timeouts": {"clientHeader": "2s"},"#);
    let mut slow = sluice.connect();
    slow.send(b"GET / HTTP/1.1\r\n");
    let runtime = sluice.server().runtime();
    let parked = || runtime.waiting_room.parked_count() == 1 && runtime.busy_workers() == 0;
    assert!(
        wait_until(WAIT, parked),
        "the half-sent head is not parked: {} parked, {} workers busy",
        runtime.waiting_room.parked_count(),
        runtime.busy_workers()
    );
    let all = slow.read_to_close();
    assert!(all.starts_with("HTTP/1.1 408 "), "{all:?}");
    assert_eq!(runtime.waiting_room.parked_count(), 0, "the expired head is still parked");
    assert_eq!(backend.request_count(), 0);
}

#[test]
fn without_the_waiting_room_workers_hold_their_clients() {
    let backend = TestBackend::named("ok");
    let sluice = Sluice::start(&[&backend.url()], &format!(r#""workers": 2, "waitingRoom": false, {LONG_TIMEOUTS}"#));
    let runtime = sluice.server().runtime();
    // Both connect before either asks, so neither is ever queued (which would end keep-alive).
    let mut clients: Vec<Client> = (0..2).map(|_| sluice.connect()).collect();
    assert!(wait_until(WAIT, || runtime.busy_workers() == 2), "{} workers busy", runtime.busy_workers());
    for c in &mut clients {
        assert_eq!(get_on(c, "/").status, 200);
    }
    // Both workers now wait on their idle clients: nothing parks.
    assert_eq!((runtime.busy_workers(), runtime.waiting_room.parked_count()), (2, 0));
    // A third client is queued, unanswered, until one of them closes.
    let mut third = sluice.connect();
    third.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(wait_until(WAIT, || runtime.waiting_connections() == 1), "the third client is not queued");
    assert_eq!((runtime.busy_workers(), backend.request_count()), (2, 2), "the third client was served");
    drop(clients.pop());
    assert_eq!(third.response().unwrap().status, 200);
}

#[test]
fn connections_over_the_limit_get_a_fast_503_and_a_close_counted_in_stats_and_metrics() {
    let backend = TestBackend::named("ok");
    let extra = r#""limits": {"maxConnections": 3}, "admin": {"listen": "127.0.0.1:0"},"#;
    let sluice = Sluice::start(&[&backend.url()], extra);
    let mut held: Vec<Client> = (0..3).map(|_| sluice.connect()).collect();
    for c in &mut held {
        assert_eq!(get_on(c, "/").status, 200);
    }
    for _ in 0..2 {
        let refused = exchange_raw(sluice.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(refused.starts_with("HTTP/1.1 503 "), "{refused:?}");
        assert!(refused.contains("\r\nRetry-After: 1\r\n"), "{refused:?}");
    }
    assert_eq!(sluice.admin_stats()["rejectedConnections"], 2);
    let admin = sluice.server().admin_addr().unwrap();
    let metrics = admin_call(admin, "GET", "/metrics", None, "").text();
    assert!(metrics.lines().any(|l| l == "sluice_rejected_connections_total 2"), "{metrics}");
    drop(held.pop());
    assert!(wait_until(Duration::from_secs(5), || sluice.get("/").status == 200));
}

#[test]
fn one_client_address_over_its_limit_gets_a_fast_503() {
    let backend = TestBackend::named("ok");
    let sluice = Sluice::start(&[&backend.url()], r#""limits": {"maxConnectionsPerClient": 2},"#);
    let mut held: Vec<Client> = (0..2).map(|_| sluice.connect()).collect();
    for c in &mut held {
        assert_eq!(get_on(c, "/").status, 200);
    }
    let refused = exchange_raw(sluice.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused:?}");
    drop(held.pop());
    assert!(wait_until(Duration::from_secs(5), || sluice.get("/").status == 200));
}
