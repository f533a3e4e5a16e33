//! Holding up under load with a small worker pool: idle keep-alive clients and slow heads
//! wait in the waiting room instead of holding workers, so fresh clients are still answered;
//! the connection limit answers 503 at once.

mod common;

use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

fn get_on(c: &mut Client, path: &str) -> Response {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    c.response().unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[test]
fn more_keep_alive_clients_than_workers_are_all_answered() {
    let backend = TestBackend::named("ok");
    let sluice = Sluice::start(&[&backend.url()], r#""workers": 4,"#);
    let mut clients: Vec<Client> = (0..40).map(|_| sluice.connect()).collect();
    for round in 0..3 {
        for (i, c) in clients.iter_mut().enumerate() {
            let r = get_on(c, &format!("/{round}/{i}"));
            assert_eq!(r.status, 200, "client {i} round {round}: {}", r.raw_head);
        }
    }
    // Every client is still connected and idle; a newcomer is answered at once.
    let started = Instant::now();
    let r = sluice.get("/fresh");
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2), "fresh client waited {:?}", started.elapsed());
    assert!(sluice.server().runtime().waiting_room.parked_count() > 0, "idle clients should be parked");
}

#[test]
fn trickling_heads_do_not_hold_workers_from_other_clients() {
    let backend = TestBackend::named("ok");
    let sluice = Sluice::start(&[&backend.url()], r#""workers": 4, "timeouts": {"clientHeader": "10s"},"#);
    let mut slow: Vec<Client> = (0..30).map(|_| sluice.connect()).collect();
    for c in &mut slow {
        c.send(b"GET / HTTP/1.1\r\nHo");
    }
    for c in &mut slow {
        c.send(b"s");
    }
    let started = Instant::now();
    assert_eq!(sluice.get("/normal").status, 200);
    assert!(started.elapsed() < Duration::from_secs(2), "normal client waited {:?}", started.elapsed());
    // The slow ones finish their heads and are answered too.
    for c in &mut slow {
        c.send(b"t: t\r\n\r\n");
    }
    for c in &mut slow {
        assert_eq!(c.response().unwrap().status, 200);
    }
}

#[test]
fn a_parked_head_that_never_completes_gets_408() {
    let backend = TestBackend::named("ok");
    let sluice = Sluice::start(&[&backend.url()], r#""workers": 2, "timeouts": {"clientHeader": "300ms"},"#);
    // Hold both workers' worth of connections so the slow one is parked.
    let mut busy: Vec<Client> = (0..4).map(|_| sluice.connect()).collect();
    for c in &mut busy {
        assert_eq!(get_on(c, "/").status, 200);
    }
    let mut slow = sluice.connect();
    slow.stream.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let all = slow.read_to_close();
    assert!(all.starts_with("HTTP/1.1 408 "), "{all:?}");
    assert_eq!(backend.request_count(), 4);
}

#[test]
fn without_the_waiting_room_workers_hold_their_clients() {
    let backend = TestBackend::named("ok");
    let sluice = Sluice::start(&[&backend.url()], r#""workers": 2, "waitingRoom": false,"#);
    let mut clients: Vec<Client> = (0..2).map(|_| sluice.connect()).collect();
    for c in &mut clients {
        assert_eq!(get_on(c, "/").status, 200);
    }
    assert_eq!(sluice.server().runtime().waiting_room.parked_count(), 0);
    // Both workers now wait on idle clients: a third client is queued until one closes.
    let mut third = sluice.connect();
    third.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    drop(clients.pop());
    assert_eq!(third.response().unwrap().status, 200);
}

#[test]
fn connections_over_the_limit_get_a_fast_503() {
    let backend = TestBackend::named("ok");
    let sluice = Sluice::start(&[&backend.url()], r#""limits": {"maxConnections": 3},"#);
    let mut held: Vec<Client> = (0..3).map(|_| sluice.connect()).collect();
    for c in &mut held {
        assert_eq!(get_on(c, "/").status, 200);
    }
    let refused = exchange_raw(sluice.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused:?}");
    assert_eq!(sluice.server().runtime().rejected_connections.load(std::sync::atomic::Ordering::Relaxed), 1);
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
