//! Balancing through the running proxy: every algorithm, sticky cookies, weights,
//! per-backend connection limits with their queue, and backups, counted by what real test
//! backends saw.

mod common;

use common::*;
use sluice::config::Algorithm;
use sluice::queue::QueueStats;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Health checks fast enough for tests: a backend flips after one probe.
const FAST_HEALTH: &str = r#""healthCheckInterval": "50ms", "healthCheck": {"rise": 1, "fall": 1, "timeout": "1s"},"#;

/// A backend answering its name, whose health probes fail while `failing` is set.
struct Switchable {
    backend: TestBackend,
    failing: Arc<AtomicBool>,
}

impl Switchable {
    fn new(name: &str) -> Switchable {
        let failing = Arc::new(AtomicBool::new(false));
        let (name, fail) = (name.to_string(), Arc::clone(&failing));
        let backend = TestBackend::start(move |s| {
            if is_probe(s) && fail.load(Ordering::SeqCst) {
                Reply::status(503, "down")
            } else {
                Reply::ok(&name)
            }
        });
        Switchable { backend, failing }
    }

    fn url(&self) -> String {
        self.backend.url()
    }
}

/// Starts sluice over `servers` (JSON values: URL strings or server objects) with `extra`
/// top-level keys.
fn start(servers: &[String], extra: &str) -> Sluice {
    Sluice::from_json(&format!(r#"{{"listen": "127.0.0.1:0", {extra} "servers": [{}]}}"#, servers.join(", ")))
}

fn quoted(url: String) -> String {
    format!("{url:?}")
}

/// Marks backend `index` of the first pool failing or passing, and waits for sluice to see it.
fn set_health(sluice: &Sluice, backend: &Switchable, index: usize, healthy: bool) {
    backend.failing.store(!healthy, Ordering::SeqCst);
    let flipped = wait_until(Duration::from_secs(5), || {
        sluice.server().runtime().state().pools[0].backends[index].is_healthy() == healthy
    });
    assert!(flipped, "backend {index} ({}) did not become healthy={healthy}", backend.url());
}

/// The bodies of `count` GETs on new connections, joined: `"abcabc"` for single-letter names.
fn answers(sluice: &Sluice, count: usize) -> String {
    (0..count).map(|_| sluice.get("/").text()).collect()
}

/// A GET on a new connection with extra header lines (each ending in CRLF).
fn get_with(sluice: &Sluice, headers: &str) -> Response {
    let mut c = sluice.connect();
    c.send(format!("GET / HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").as_bytes());
    c.response().unwrap_or_else(|e| panic!("GET with {headers:?}: {e}"))
}

#[test]
fn round_robin_gives_three_backends_exactly_100_of_300_requests_on_new_connections() {
    let backends = [TestBackend::named("a"), TestBackend::named("b"), TestBackend::named("c")];
    let sluice = start(&backends.iter().map(|b| quoted(b.url())).collect::<Vec<_>>(), "");
    for i in 0..300 {
        assert_eq!(sluice.get("/").status, 200, "request {i}");
    }
    let counts: Vec<usize> = backends.iter().map(TestBackend::request_count).collect();
    assert_eq!(counts, [100, 100, 100]);
}

#[test]
fn round_robin_gives_three_backends_exactly_100_of_300_requests_on_one_keep_alive_connection() {
    let backends = [TestBackend::named("a"), TestBackend::named("b"), TestBackend::named("c")];
    let sluice = start(&backends.iter().map(|b| quoted(b.url())).collect::<Vec<_>>(), "");
    let mut c = sluice.connect();
    let mut bodies = String::new();
    for _ in 0..300 {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        bodies += &c.response().unwrap().text();
    }
    assert_eq!(&bodies[..9], "abcabcabc");
    let counts: Vec<usize> = backends.iter().map(TestBackend::request_count).collect();
    assert_eq!(counts, [100, 100, 100]);
}

#[test]
fn weighted_round_robin_answers_5_1_1_as_a_a_b_a_c_a_a() {
    let backends = [TestBackend::named("a"), TestBackend::named("b"), TestBackend::named("c")];
    let servers: Vec<String> =
        backends.iter().zip([5, 1, 1]).map(|(b, w)| format!(r#"{{"url": "{}", "weight": {w}}}"#, b.url())).collect();
    let sluice = start(&servers, r#""algorithm": "weighted-round-robin","#);
    assert_eq!(answers(&sluice, 14), "aabacaaaabacaa");
    answers(&sluice, 56);
    let counts: Vec<usize> = backends.iter().map(TestBackend::request_count).collect();
    assert_eq!(counts, [50, 10, 10], "70 requests at 5:1:1");
}

#[test]
fn least_connections_sends_a_slow_backend_visibly_fewer_requests_under_concurrent_load() {
    let fast = [TestBackend::named("a"), TestBackend::named("b")];
    let slow = TestBackend::start(|_| {
        thread::sleep(Duration::from_millis(150));
        Reply::ok("slow")
    });
    let urls = [fast[0].url(), fast[1].url(), slow.url()];
    let sluice = start(&urls.map(quoted), r#""algorithm": "least-connections","#);
    thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..15 {
                    assert_eq!(sluice.get("/").status, 200);
                }
            });
        }
    });
    let (a, b, s) = (fast[0].request_count(), fast[1].request_count(), slow.request_count());
    assert_eq!(a + b + s, 120);

    assert!(s * 3 < a.min(b), "slow backend got {s}, fast ones {a} and {b}; round robin would give 40 each");
}

#[test]
fn random_spreads_requests_over_every_backend() {
    let backends = [TestBackend::named("a"), TestBackend::named("b"), TestBackend::named("c")];
    let sluice = start(&backends.iter().map(|b| quoted(b.url())).collect::<Vec<_>>(), r#""algorithm": "random","#);
    answers(&sluice, 300);
    let counts: Vec<usize> = backends.iter().map(TestBackend::request_count).collect();
    assert!(counts.iter().all(|&n| (60..=140).contains(&n)), "300 random picks over 3: {counts:?}");
}

#[test]
fn ip_hash_keeps_a_client_on_one_backend_and_moves_it_only_while_that_backend_is_down() {
    let backends = [Switchable::new("a"), Switchable::new("b"), Switchable::new("c")];
    let servers: Vec<String> = backends.iter().map(|b| quoted(b.url())).collect();
    let sluice = start(&servers, &format!(r#""algorithm": "ip-hash", {FAST_HEALTH}"#));
    let first = answers(&sluice, 20);
    let home = first.chars().next().unwrap();
    assert!(first.chars().all(|c| c == home), "127.0.0.1 moved between backends: {first}");
    let home_index = (home as u8 - b'a') as usize;

    set_health(&sluice, &backends[home_index], home_index, false);
    let during = answers(&sluice, 10);
    let second = during.chars().next().unwrap();
    assert!(second != home && during.chars().all(|c| c == second), "while {home} was down: {during}");

    set_health(&sluice, &backends[home_index], home_index, true);
    assert_eq!(answers(&sluice, 10), home.to_string().repeat(10), "the client did not return to {home}");
}

#[test]
fn a_sticky_cookie_pins_the_client_and_is_replaced_when_its_backend_goes_down() {
    let backends = [Switchable::new("a"), Switchable::new("b"), Switchable::new("c")];
    let servers: Vec<String> = backends.iter().map(|b| quoted(b.url())).collect();
    let sluice = start(&servers, &format!(r#""sticky": {{"cookie": "SRV"}}, {FAST_HEALTH}"#));

    let first = sluice.get("/");
    let set = first.header("set-cookie").unwrap_or_else(|| panic!("no Set-Cookie: {}", first.raw_head)).to_string();
    let value = set.strip_prefix("SRV=").and_then(|v| v.strip_suffix("; Path=/; HttpOnly"));
    let value = value.unwrap_or_else(|| panic!("unexpected Set-Cookie {set:?}")).to_string();
    let home = first.text();
    for b in &backends {
        let port = b.backend.addr.port().to_string();
        assert!(!value.contains(&port) && !value.contains("127.0.0.1"), "cookie {value:?} shows an address");
    }

    // Several cookies in one field, and the cookie in a second Cookie field: same backend,
    // no new cookie.
    for headers in
        [format!("Cookie: theme=dark; SRV={value}; lang=en\r\n"), format!("Cookie: a=1\r\nCookie: SRV={value}\r\n")]
    {
        for _ in 0..5 {
            let r = get_with(&sluice, &headers);
            assert_eq!(r.text(), home, "{headers:?}");
            assert_eq!(r.header("set-cookie"), None, "{}", r.raw_head);
        }
    }

    let home_index = usize::from(home.as_bytes()[0] - b'a');
    set_health(&sluice, &backends[home_index], home_index, false);
    let moved = get_with(&sluice, &format!("Cookie: SRV={value}\r\n"));
    assert_ne!(moved.text(), home, "the cookie's backend is down");
    let replaced = moved.header("set-cookie").unwrap_or_else(|| panic!("no new cookie: {}", moved.raw_head));
    let new_value = replaced.strip_prefix("SRV=").unwrap().split(';').next().unwrap().to_string();
    assert_ne!(new_value, value);

    // The new cookie holds, also after the old backend comes back.
    set_health(&sluice, &backends[home_index], home_index, true);
    for _ in 0..5 {
        let r = get_with(&sluice, &format!("Cookie: SRV={new_value}\r\n"));
        assert_eq!((r.text(), r.header("set-cookie")), (moved.text(), None), "{}", r.raw_head);
    }
}

/// The value of the `SRV` cookie a response sets, if it sets one.
fn set_srv_cookie(r: &Response) -> Option<String> {
    let value = r.header("set-cookie")?.strip_prefix("SRV=")?.split(';').next()?;
    Some(value.to_string())
}

/// Sends a request carrying `SRV=value` and checks that a backend other than `home` answers
/// it with a new cookie; returns that answer's body and cookie.
fn moved_from(sluice: &Sluice, home: &str, value: &str, why: &str) -> (String, String) {
    let r = get_with(sluice, &format!("Cookie: SRV={value}\r\n"));
    assert_eq!(r.status, 200, "{why}: {}", r.raw_head);
    assert_ne!(r.text(), home, "{why}: the cookie still led to its backend");
    let replaced = set_srv_cookie(&r).unwrap_or_else(|| panic!("{why}: no new cookie: {}", r.raw_head));
    assert_ne!(replaced, value, "{why}");
    (r.text(), replaced)
}

#[test]
fn a_sticky_cookie_is_replaced_when_its_backend_is_draining_or_no_longer_configured() {
    let names = ["a", "b", "c"];
    let backends = names.map(TestBackend::named);
    let url = |name: &str| backends[names.iter().position(|n| *n == name).unwrap()].url();
    let config = |keep: &[&str]| {
        let servers: Vec<String> = keep.iter().map(|name| quoted(url(name))).collect();
        format!(
            r#"{{"listen": "127.0.0.1:0", "sticky": {{"cookie": "SRV"}}, "healthCheckInterval": "1h",
                "admin": {{"listen": "127.0.0.1:0", "token": "t"}}, "servers": [{}]}}"#,
            servers.join(", ")
        )
    };
    let sluice = Sluice::from_json(&config(&names));
    let admin = sluice.server().admin_addr().unwrap();
    let first = sluice.get("/");
    let (home, value) = (first.text(), set_srv_cookie(&first).expect("a first answer sets the cookie"));

    let drained = admin_call(admin, "POST", &format!("/servers/drain?url={}", url(&home)), Some("t"), "");
    assert_eq!(drained.status, 200, "{}", drained.text());
    let (second_home, second_value) = moved_from(&sluice, &home, &value, "draining");

    let left: Vec<&str> = names.into_iter().filter(|n| *n != second_home).collect();
    let summary = sluice.server().reload(sluice::Config::from_json(&config(&left), "test.json").unwrap()).unwrap();
    assert_eq!(summary.removed, 1, "{summary}");
    let (third_home, _) = moved_from(&sluice, &second_home, &second_value, "no longer configured");
    assert_ne!(third_home, home, "the drained backend got the request");
}

#[test]
fn a_request_without_a_valid_sticky_cookie_is_balanced_and_gets_one() {
    let backends = [TestBackend::named("a"), TestBackend::named("b")];
    let servers: Vec<String> = backends.iter().map(|b| quoted(b.url())).collect();
    let sluice = start(&servers, r#""sticky": {"cookie": "SRV"},"#);
    let bodies: Vec<String> = (0..4)
        .map(|_| {
            let r = get_with(&sluice, "Cookie: SRV=0000000000000000; other=1\r\n");
            assert!(r.header("set-cookie").is_some_and(|c| c.starts_with("SRV=")), "{}", r.raw_head);
            r.text()
        })
        .collect();
    assert_eq!(bodies, ["a", "b", "a", "b"], "without a valid cookie the algorithm decides");
}

/// A backend whose answers wait until the gate opens (at most 10 s), recording how many
/// exchanges it held at once.
struct Gated {
    backend: TestBackend,
    open: Arc<(Mutex<bool>, Condvar)>,
    most_at_once: Arc<AtomicUsize>,
}

impl Gated {
    fn new(name: &str) -> Gated {
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let (now, most_at_once) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (name, gate, most) = (name.to_string(), Arc::clone(&open), Arc::clone(&most_at_once));
        let backend = TestBackend::start(move |s| {
            if is_probe(s) {
                return Reply::ok("probe");
            }
            most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            let opened = gate.0.lock().unwrap();
            drop(gate.1.wait_timeout_while(opened, Duration::from_secs(10), |open| !*open).unwrap());
            now.fetch_sub(1, Ordering::SeqCst);
            Reply::ok(&name)
        });
        Gated { backend, open, most_at_once }
    }

    fn open(&self) {
        *self.open.0.lock().unwrap() = true;
        self.open.1.notify_all();
    }
}

fn limited(url: &str, max: usize) -> String {
    format!(r#"{{"url": "{url}", "maxConnections": {max}}}"#)
}

#[test]
fn a_backend_at_its_max_connections_is_skipped() {
    let (busy, free) = (Gated::new("busy"), TestBackend::named("free"));
    let sluice = start(&[limited(&busy.backend.url(), 1), quoted(free.url())], "");
    thread::scope(|scope| {
        let held = scope.spawn(|| sluice.get("/").text());
        assert!(wait_until(Duration::from_secs(5), || busy.backend.request_count() == 1));
        assert_eq!(answers(&sluice, 6), "free".repeat(6));
        busy.open();
        assert_eq!(held.join().unwrap(), "busy");
    });
}

#[test]
fn when_every_backend_is_at_its_limit_a_request_waits_in_the_queue_for_a_free_slot() {
    let gated = Gated::new("g");
    let sluice = start(&[limited(&gated.backend.url(), 1)], r#""timeouts": {"queue": "10s"},"#);
    let pool = || Arc::clone(&sluice.server().runtime().state().pools[0]);
    thread::scope(|scope| {
        let first = scope.spawn(|| sluice.get("/1").status);
        assert!(wait_until(Duration::from_secs(5), || gated.backend.request_count() == 1));
        let second = scope.spawn(|| sluice.get("/2").status);
        assert!(wait_until(Duration::from_secs(5), || pool().queue_stats().waiting == 1), "{:?}", pool().queue_stats());
        assert_eq!(gated.backend.request_count(), 1, "the queued request must not reach the backend yet");
        gated.open();
        assert_eq!((first.join().unwrap(), second.join().unwrap()), (200, 200));
    });
    assert_eq!(gated.most_at_once.load(Ordering::SeqCst), 1, "maxConnections 1 was exceeded");
    assert_eq!(pool().queue_stats(), QueueStats { waiting: 0, queued: 1, timed_out: 0 });
}

#[test]
fn a_queued_request_is_woken_when_a_backend_comes_back() {
    let (gated, spare) = (Gated::new("g"), Switchable::new("spare"));
    let servers = [limited(&gated.backend.url(), 1), quoted(spare.url())];
    let sluice = start(&servers, &format!(r#""timeouts": {{"queue": "1m"}}, {FAST_HEALTH}"#));
    set_health(&sluice, &spare, 1, false);
    let pool = || Arc::clone(&sluice.server().runtime().state().pools[0]);
    thread::scope(|scope| {
        let first = scope.spawn(|| sluice.get("/1").text());
        assert!(wait_until(Duration::from_secs(5), || gated.backend.request_count() == 1));
        let second = scope.spawn(|| sluice.get("/2").text());
        assert!(wait_until(Duration::from_secs(5), || pool().queue_stats().waiting == 1), "{:?}", pool().queue_stats());
        // The queue waits a minute, the client five seconds: only a wake-up can answer it.
        spare.failing.store(false, Ordering::SeqCst);
        assert_eq!(second.join().unwrap(), "spare", "the queued request was not woken");
        assert_eq!(gated.backend.request_count(), 1, "g's slot never came free");
        gated.open();
        assert_eq!(first.join().unwrap(), "g");
    });
    assert_eq!(pool().queue_stats(), QueueStats { waiting: 0, queued: 1, timed_out: 0 });
}

#[test]
fn a_queued_request_gets_503_with_retry_after_when_no_slot_frees_in_time() {
    let gated = Gated::new("g");
    let sluice = start(&[limited(&gated.backend.url(), 1)], r#""timeouts": {"queue": "300ms"},"#);
    thread::scope(|scope| {
        let first = scope.spawn(|| sluice.get("/1").status);
        assert!(wait_until(Duration::from_secs(5), || gated.backend.request_count() == 1));
        let started = Instant::now();
        let refused = sluice.get("/2");
        let waited = started.elapsed();
        assert_eq!((refused.status, refused.header("retry-after")), (503, Some("1")), "{}", refused.raw_head);
        assert!(waited >= Duration::from_millis(250), "answered after {waited:?}, before the queue timeout");
        gated.open();
        assert_eq!(first.join().unwrap(), 200);
    });
    let stats = sluice.server().runtime().state().pools[0].queue_stats();
    assert_eq!(stats, QueueStats { waiting: 0, queued: 1, timed_out: 1 });
    assert_eq!(gated.backend.request_count(), 1);
}

#[test]
fn backups_serve_only_while_no_primary_is_healthy_for_every_algorithm() {
    let backends = [Switchable::new("a"), Switchable::new("b"), Switchable::new("c")];
    let servers = [
        quoted(backends[0].url()),
        quoted(backends[1].url()),
        format!(r#"{{"url": "{}", "backup": true}}"#, backends[2].url()),
    ];
    for algorithm in Algorithm::ALL {
        let sluice = start(&servers, &format!(r#""algorithm": "{}", {FAST_HEALTH}"#, algorithm.name()));
        let name = algorithm.name();
        let normal = answers(&sluice, 12);
        assert!(!normal.contains('c'), "{name}: the backup served while primaries were up: {normal}");

        set_health(&sluice, &backends[0], 0, false);
        let one_down = answers(&sluice, 6);
        assert!(!one_down.contains('c') && !one_down.contains('a'), "{name}: with a down: {one_down}");

        set_health(&sluice, &backends[1], 1, false);
        assert_eq!(answers(&sluice, 6), "cccccc", "{name}: every primary down");

        set_health(&sluice, &backends[0], 0, true);
        assert_eq!(answers(&sluice, 6), "aaaaaa", "{name}: a primary came back");
        set_health(&sluice, &backends[1], 1, true);
    }
}

#[test]
fn weight_zero_is_never_chosen_by_any_algorithm() {
    let backends = [TestBackend::named("a"), TestBackend::named("b"), TestBackend::named("c")];
    let servers = [
        quoted(backends[0].url()),
        format!(r#"{{"url": "{}", "weight": 0}}"#, backends[1].url()),
        quoted(backends[2].url()),
    ];
    for algorithm in Algorithm::ALL {
        let sluice = start(&servers, &format!(r#""algorithm": "{}","#, algorithm.name()));
        let seen = answers(&sluice, 30);
        assert!(!seen.contains('b'), "{}: weight 0 was chosen: {seen}", algorithm.name());
    }
    assert_eq!(backends[1].request_count(), 0);
}

#[test]
fn a_pool_of_only_weight_zero_primaries_falls_to_its_backup() {
    let backends = [TestBackend::named("a"), TestBackend::named("b")];
    let servers = [
        format!(r#"{{"url": "{}", "weight": 0}}"#, backends[0].url()),
        format!(r#"{{"url": "{}", "backup": true}}"#, backends[1].url()),
    ];
    let sluice = start(&servers, "");
    assert_eq!(answers(&sluice, 3), "bbb");
}
