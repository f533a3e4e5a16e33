//! Riding through failures, stops and reloads: passive health, the retry rule, graceful stop
//! on SIGTERM and SIGINT, reload on SIGHUP, alerts to a webhook, and the details of probes.

mod common;

use common::*;
use sluice::config::resolve::resolve_webhook;
use sluice::config::{webhook_from_url, AlertsConfig};
use sluice::health::Health;
use sluice::ops::alerts::{AlertEvent, AlertKind, Alerts};
use sluice::{Config, ReloadError};
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const WAIT: Duration = Duration::from_secs(10);

/// A backend whose probes pass but which closes every real request's connection unanswered.
fn resetting_backend() -> TestBackend {
    TestBackend::start(|s| if is_probe(s) { Reply::ok("") } else { Reply::Close })
}

fn send(sluice: &Sluice, request: &str) -> Response {
    let mut c = sluice.connect();
    c.send(request.as_bytes());
    c.response().unwrap_or_else(|e| panic!("{request:?}: {e}"))
}

// ---- passive health ----

#[test]
fn a_backend_resetting_real_traffic_leaves_rotation_after_passive_fails_before_any_probe() {
    let broken = resetting_backend();
    let good = TestBackend::named("good");
    let extra = r#""healthCheckInterval": "1h", "healthCheck": {"fall": 5, "passiveFails": 2},"#;
    let sluice = Sluice::start(&[&broken.url(), &good.url()], extra);
    for i in 0..10 {
        let r = sluice.get(&format!("/{i}"));
        assert_eq!((r.status, r.text()), (200, "good".to_string()), "request {i}: {}", r.raw_head);
    }
    assert_eq!(broken.request_count(), 2, "the broken backend should get exactly passiveFails requests");
    assert_eq!(sluice.health(0), Health::Down);
    assert_eq!(sluice.health(1), Health::Up);
}

#[test]
fn a_refusing_backend_leaves_rotation_after_passive_fails() {
    let dead = closed_port_url();
    let good = TestBackend::named("good");
    let extra = r#""healthCheckInterval": "1h", "healthCheck": {"fall": 100, "passiveFails": 3},"#;
    let sluice = Sluice::start(&[&dead, &good.url()], extra);
    let bodies: Vec<String> = (0..10).map(|_| sluice.get("/").text()).collect();
    assert!(bodies.iter().all(|b| b == "good"), "{bodies:?}");
    let dead_stats = sluice.backend_stats(0);
    assert_eq!((dead_stats.healthy, dead_stats.failures), (false, 3), "{dead_stats:?}");
    assert_eq!(good.request_count(), 10);
}

#[test]
fn tcp_mode_connect_failures_count_towards_passive_health_too() {
    // A TCP backend that greets each connection and closes it.
    let live = TcpListener::bind("127.0.0.1:0").unwrap();
    let live_url = format!("tcp://{}", live.local_addr().unwrap());
    thread::spawn(move || {
        for mut stream in live.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut stream, b"live\n");
        }
    });
    let dead = closed_port_url().replace("http://", "tcp://");
    let sluice = Sluice::from_json(&format!(
        r#"{{"listeners": [{{"listen": "127.0.0.1:0", "mode": "tcp", "pool": "db"}}],
            "pools": {{"db": {{"servers": ["{dead}", "{live_url}"], "healthCheckInterval": "1h",
                "healthCheck": {{"fall": 100, "passiveFails": 2}}}}}}}}"#
    ));
    for i in 0..6 {
        let greeting = Client::connect(sluice.addr).read_to_close();
        assert_eq!(greeting, "live\n", "connection {i}");
    }
    let dead_stats = sluice.backend_stats(0);
    assert_eq!((dead_stats.healthy, dead_stats.failures), (false, 2), "{dead_stats:?}");
}

#[test]
fn active_checks_bring_a_passively_failed_backend_back_after_rise_passes() {
    let broken = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&broken);
    let flaky =
        TestBackend::start(
            move |s| {
                if !is_probe(s) && flag.load(Ordering::SeqCst) {
                    Reply::Close
                } else {
                    Reply::ok("flaky")
                }
            },
        );
    let good = TestBackend::named("good");
    let extra = r#""healthCheckInterval": "100ms", "healthCheck": {"rise": 3, "passiveFails": 1},"#;
    let sluice = Sluice::start(&[&flaky.url(), &good.url()], extra);
    assert_eq!(sluice.get("/").text(), "good");
    assert_eq!(sluice.get("/").text(), "good");
    assert_eq!(sluice.health(0), Health::Down, "one reset should take the backend out (passiveFails 1)");
    let probes_when_down = flaky.probe_count();
    broken.store(false, Ordering::SeqCst);

    assert!(wait_until(WAIT, || sluice.health(0) == Health::Up), "probes never brought the backend back");
    // One probe may already have been on its way as the backend went down.
    let probes = flaky.probe_count() - probes_when_down;
    assert!(probes >= 2, "up again after only {probes} probes; rise is 3");
    let bodies: Vec<String> = (0..4).map(|_| sluice.get("/").text()).collect();
    assert!(bodies.contains(&"flaky".to_string()), "{bodies:?}");
}

#[test]
fn a_504_from_a_slow_backend_does_not_count_towards_passive_health() {
    let backend = TestBackend::start(|s| {
        if s.target == "/slow" {
            thread::sleep(Duration::from_millis(1000));
        }
        Reply::ok("fast")
    });
    let extra = r#""healthCheckInterval": "1h", "timeouts": {"backend": "200ms"},
                   "healthCheck": {"fall": 100, "passiveFails": 1},"#;
    let sluice = Sluice::start(&[&backend.url()], extra);
    for i in 0..3 {
        let r = sluice.get("/slow");
        assert_eq!(r.status, 504, "request {i}: {}", r.raw_head);
    }
    assert_eq!(sluice.backend_stats(0).failures, 3, "each 504 is a failure in the counters");
    assert_eq!(sluice.health(0), Health::Up, "passiveFails 1, yet three 504s took the backend out");
    assert_eq!(sluice.get("/fast").text(), "fast");
}

/// A listener whose accept queue is full, so that a connect to it is neither accepted nor
/// refused: it times out. The connections filling the queue live as long as it does.
struct Unanswering {
    listener: TcpListener,
    _filling: Vec<TcpStream>,
}

impl Unanswering {
    fn start() -> Unanswering {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut filling = Vec::new();
        while filling.len() < 10_000 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(stream) => filling.push(stream),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Unanswering { listener, _filling: filling }
                }
                Err(e) => panic!("filling the accept queue of {addr}: {e}"),
            }
        }
        panic!("the accept queue of {addr} never filled");
    }

    fn url(&self) -> String {
        format!("http://{}", self.listener.local_addr().unwrap())
    }
}

#[test]
fn a_connect_that_outlasts_timeouts_connect_moves_on_and_counts_towards_passive_health() {
    let hole = Unanswering::start();
    let good = TestBackend::named("good");
    let extra = r#""healthCheckInterval": "1h", "timeouts": {"connect": "200ms"},
                   "healthCheck": {"fall": 100, "passiveFails": 1},"#;
    let sluice = Sluice::start(&[&hole.url(), &good.url()], extra);
    // Round robin asks the unanswering backend first. The default connect timeout is 5 s, as
    // long as the client's read timeout: an answer at all means the configured one applied.
    let asked = Instant::now();
    let r = sluice.get("/");
    assert_eq!((r.status, r.text()), (200, "good".to_string()), "{}", r.raw_head);
    assert!(asked.elapsed() < Duration::from_secs(3), "answered after {:?}", asked.elapsed());
    let stats = sluice.backend_stats(0);
    assert_eq!((stats.failures, stats.healthy), (1, false), "{stats:?}");
    assert_eq!(good.request_count(), 1);
}

#[test]
fn sluices_own_answers_close_the_connection_when_the_client_asks() {
    let dead = closed_port_url();
    let sluice = Sluice::start(&[&dead], r#""healthCheckInterval": "1h", "healthCheck": {"passiveFails": 1},"#);
    for (request, want) in [
        ("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 502),
        ("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 503),
        ("GET / HTTP/1.0\r\n\r\n", 503),
    ] {
        let mut c = sluice.connect();
        c.send(request.as_bytes());
        let r = c.response().unwrap();
        assert_eq!((r.status, r.header("connection")), (want, Some("close")), "{request:?}: {}", r.raw_head);
        assert!(c.is_closed(), "{request:?}: the connection stayed open");
    }
    let mut c = sluice.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let statuses = [c.response().unwrap().status, c.response().unwrap().status];
    assert_eq!(statuses, [503, 503], "a keep-alive client keeps its connection across a 503");
}

// ---- the retry rule ----

const NO_HEALTH_CHANGES: &str = r#""healthCheckInterval": "1h", "healthCheck": {"passiveFails": 0},"#;

#[test]
fn a_get_reset_before_any_response_byte_is_sent_again_to_the_next_backend() {
    let broken = resetting_backend();
    let good = TestBackend::named("good");
    let sluice = Sluice::start(&[&broken.url(), &good.url()], NO_HEALTH_CHANGES);
    for i in 0..4 {
        let r = sluice.get(&format!("/{i}"));
        assert_eq!((r.status, r.text()), (200, "good".to_string()), "request {i}: {}", r.raw_head);
    }
    assert!(broken.request_count() >= 1, "the broken backend was never tried");
    assert_eq!(good.request_count(), 4, "each request should reach the good backend once");
}

#[test]
fn only_idempotent_requests_without_a_body_are_sent_again_after_a_reset() {
    let (one, two) = (resetting_backend(), resetting_backend());
    let sluice = Sluice::start(&[&one.url(), &two.url()], NO_HEALTH_CHANGES);
    let seen = || one.requests().into_iter().chain(two.requests()).collect::<Vec<_>>();
    let cases = [
        ("POST with a body", "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 1),
        ("POST without a body", "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 1),
        ("PUT with a body", "PUT /p HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi", 1),
        ("PATCH", "PATCH /p HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 1),
        ("GET", "GET /g HTTP/1.1\r\nHost: t\r\n\r\n", 2),
        ("DELETE", "DELETE /d HTTP/1.1\r\nHost: t\r\n\r\n", 2),
    ];
    for (what, request, times) in cases {
        let before = seen().len();
        let r = send(&sluice, request);
        assert_eq!(r.status, 502, "{what}: {}", r.raw_head);
        let sent = seen().len() - before;
        assert_eq!(sent, times, "{what} reached the backends {sent} times, want {times}: {:?}", &seen()[before..]);
    }
    let post = seen().into_iter().find(|s| s.method == "POST").unwrap();
    assert_eq!(post.body, b"hello");
}

#[test]
fn a_post_goes_to_the_next_backend_when_connecting_is_refused() {
    let good = TestBackend::start(|s| Reply::ok(&String::from_utf8_lossy(&s.body)));
    let sluice = Sluice::start(&[&closed_port_url(), &good.url()], NO_HEALTH_CHANGES);
    for i in 0..3 {
        let body = format!("order {i}");
        let r = send(&sluice, &format!("POST /o HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
        assert_eq!((r.status, r.text()), (200, body), "{}", r.raw_head);
    }
    assert!(sluice.backend_stats(0).failures >= 1, "the refusing backend was never tried");
    assert_eq!(good.request_count(), 3, "each POST exactly once: {:?}", good.requests());
}

#[test]
fn nothing_is_sent_again_once_response_bytes_have_come_back() {
    let partial = || {
        TestBackend::start(|s| {
            if is_probe(s) {
                Reply::ok("")
            } else {
                Reply::RawThenClose(b"HTTP/1.1 200 OK\r\nContent-Le".to_vec())
            }
        })
    };
    let (one, two) = (partial(), partial());
    let sluice = Sluice::start(&[&one.url(), &two.url()], NO_HEALTH_CHANGES);
    let r = sluice.get("/");
    assert_eq!(r.status, 502, "{}", r.raw_head);
    assert_eq!(one.request_count() + two.request_count(), 1, "a GET with a partial answer must not be retried");
}

#[test]
fn a_request_on_an_idle_connection_the_backend_closed_goes_out_on_a_new_one() {
    // Answers as if keeping the connection alive, then closes it: the next request finds it dead.
    let backend = TestBackend::start(|s| {
        if is_probe(s) {
            Reply::ok("")
        } else {
            Reply::RawThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
        }
    });
    let extra = r#""healthCheckInterval": "1h", "healthCheck": {"passiveFails": 1},"#;
    let sluice = Sluice::start(&[&backend.url()], extra);
    let requests = [
        "GET /1 HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /2 HTTP/1.1\r\nHost: t\r\n\r\n",
        "HEAD /3 HTTP/1.1\r\nHost: t\r\n\r\n",
        "DELETE /4 HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    for request in requests {
        let mut c = sluice.connect();
        c.send(request.as_bytes());
        let r = c.read_response(request.starts_with("HEAD")).unwrap_or_else(|e| panic!("{request:?}: {e}"));
        assert_eq!(r.status, 200, "{request:?}: {}", r.raw_head);
    }
    let targets: Vec<String> = backend.requests().iter().map(|s| s.target.clone()).collect();
    assert_eq!(targets, ["/1", "/2", "/3", "/4"], "each request should reach the backend once");
    assert_eq!(sluice.health(0), Health::Up, "a closed idle connection is no backend failure");
}

// ---- graceful stop and reload, with the real binary ----

/// The sluice binary running with a configuration file of its own, logging to a file.
struct Process {
    child: Child,
    addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl Process {
    /// Writes the configuration file, keeping the listen address.
    fn write_config(&self, keys: &str) {
        let json = format!(r#"{{"listen": "{}", {keys}}}"#, self.addr);
        std::fs::write(&self.config, json).unwrap();
    }

    fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    /// Waits for the process to exit, killing it after `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        wait_exit(&mut self.child, timeout)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts sluice on a free port with `keys` (JSON object members besides `listen`) and waits
/// until it accepts connections.
fn run_sluice(name: &str, keys: &str) -> Process {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("sluice-lifecycle-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), format!(r#"{{"listen": "127.0.0.1:{port}", {keys}}}"#)).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (config, log) = (dir.join("config.json"), dir.join("stderr.log"));
    let child = Command::new(SLUICE)
        .args(["-c", config.to_str().unwrap()])
        .env("RUST_LOG", "info,sluice::access=off")
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("start sluice");
    let process = Process { child, addr, config, log };
    let started = wait_until(WAIT, || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok());
    assert!(started, "sluice did not start:\n{}", process.log());
    process
}

#[test]
fn sigterm_finishes_a_slow_request_closes_idle_connections_and_exits_0() {
    let release = Arc::new(AtomicBool::new(false));
    let backend = holding_backend(&release);
    let mut sluice = run_sluice("sigterm", &format!(r#""servers": ["{}"]"#, backend.url()));
    let mut idle = Client::connect(sluice.addr);
    idle.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.response().unwrap().status, 200);
    let mut busy = slow_request_in_flight(&sluice, &backend);

    sluice.signal("TERM");
    // The slow request is held until released, so the process is still running: the close
    // comes from sluice, not from its exit.
    assert_eq!(idle.try_read_to_close(), Ok(String::new()), "the idle keep-alive connection should be closed at once");
    let refused = wait_until(WAIT, || TcpStream::connect_timeout(&sluice.addr, Duration::from_secs(1)).is_err());
    assert!(refused, "sluice still accepts connections while stopping");
    assert_eq!(sluice.child.try_wait().unwrap(), None, "sluice exited with a request in flight");
    release.store(true, Ordering::SeqCst);
    let r = busy.response().unwrap_or_else(|e| panic!("the slow request did not complete: {e}\n{}", sluice.log()));
    assert_eq!((r.status, r.text()), (200, "done".to_string()), "{}", r.raw_head);
    assert_eq!(r.header("connection"), Some("close"), "{}", r.raw_head);
    assert_eq!(sluice.wait_exit(WAIT), Some(0), "{}", sluice.log());
}

#[test]
fn sigint_with_only_idle_connections_stops_without_waiting_for_them() {
    let backend = TestBackend::named("a");
    let keys = format!(
        r#""servers": ["{}"], "timeouts": {{"keepAlive": "1m", "clientHeader": "1m", "drain": "1m"}}"#,
        backend.url()
    );
    let mut sluice = run_sluice("sigint", &keys);
    let mut kept_alive = Client::connect(sluice.addr);
    kept_alive.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(kept_alive.response().unwrap().status, 200);
    let mut silent = Client::connect(sluice.addr);

    sluice.signal("INT");
    // Closed without a word: no 408 for the silent one, nothing more for the kept-alive one.
    assert_eq!(kept_alive.try_read_to_close(), Ok(String::new()), "{}", sluice.log());
    assert_eq!(silent.try_read_to_close(), Ok(String::new()), "{}", sluice.log());
    // Every timeout is a minute: exiting within WAIT means nothing waited for them.
    assert_eq!(sluice.wait_exit(WAIT), Some(0), "{}", sluice.log());
}

/// A backend that holds `GET /slow` until `release` is set (at most a minute) and answers
/// everything else at once.
fn holding_backend(release: &Arc<AtomicBool>) -> TestBackend {
    let release = Arc::clone(release);
    TestBackend::start(move |s| {
        if s.target == "/slow" {
            wait_until(Duration::from_secs(60), || release.load(Ordering::SeqCst));
        }
        Reply::ok("done")
    })
}

/// Sends `GET /slow` on a new connection and waits until the backend has it.
fn slow_request_in_flight(sluice: &Process, backend: &TestBackend) -> Client {
    let mut busy = Client::connect(sluice.addr);
    busy.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    let arrived = wait_until(WAIT, || backend.requests().iter().any(|s| s.target == "/slow"));
    assert!(arrived, "the slow request never reached the backend:\n{}", sluice.log());
    busy
}

#[test]
fn a_second_sigterm_while_draining_exits_1_without_waiting() {
    let release = Arc::new(AtomicBool::new(false));
    let backend = holding_backend(&release);
    let keys = format!(r#""servers": ["{}"], "timeouts": {{"drain": "1m"}}"#, backend.url());
    let mut sluice = run_sluice("second-term", &keys);
    let mut busy = slow_request_in_flight(&sluice, &backend);

    sluice.signal("TERM");
    assert!(wait_until(WAIT, || sluice.log().contains("stopping: finishing in-flight")), "{}", sluice.log());
    sluice.signal("TERM");
    // The drain allows a minute and the backend holds the request as long: only the second
    // signal can end the process within WAIT.
    assert_eq!(sluice.wait_exit(WAIT), Some(1), "{}", sluice.log());
    assert!(sluice.log().contains("second stop signal"), "{}", sluice.log());
    assert_eq!(busy.try_read_to_close(), Ok(String::new()), "the cut exchange got an answer");
    release.store(true, Ordering::SeqCst);
}

#[test]
fn a_drain_that_runs_out_of_time_cuts_the_exchange_logs_it_and_exits_0() {
    let release = Arc::new(AtomicBool::new(false));
    let backend = holding_backend(&release);
    let keys = format!(r#""servers": ["{}"], "timeouts": {{"drain": "300ms"}}"#, backend.url());
    let mut sluice = run_sluice("drain-timeout", &keys);
    let mut busy = slow_request_in_flight(&sluice, &backend);

    sluice.signal("TERM");
    // The backend holds the request for a minute: exiting within WAIT is the drain running out.
    assert_eq!(sluice.wait_exit(WAIT), Some(0), "{}", sluice.log());
    let log = sluice.log();
    assert!(log.contains("1 connections still open after 300ms; closing anyway"), "{log}");
    assert!(log.contains("stopped (some connections were cut off)"), "{log}");
    assert_eq!(busy.try_read_to_close(), Ok(String::new()), "the cut exchange got an answer");
    release.store(true, Ordering::SeqCst);
}

#[test]
fn sighup_reopens_the_access_log_file_so_it_can_be_rotated() {
    let backend = TestBackend::named("a");
    let dir = std::env::temp_dir().join(format!("sluice-lifecycle-{}-rotate", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (log, rotated) = (dir.join("access.log"), dir.join("access.log.1"));
    let _ = (std::fs::remove_file(&log), std::fs::remove_file(&rotated));
    let keys =
        format!(r#""servers": ["{}"], "accessLog": {{"format": "json", "path": {:?}}}"#, backend.url(), log.display());
    let mut sluice = run_sluice("rotate", &keys);
    let get = |target: &str| {
        exchange_raw(sluice.addr, format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
    };
    let holds = |path: &Path, target: &str| std::fs::read_to_string(path).unwrap_or_default().contains(target);

    assert!(get("/before").starts_with("HTTP/1.1 200"));
    assert!(wait_until(WAIT, || holds(&log, "\"/before\"")), "{}", sluice.log());
    std::fs::rename(&log, &rotated).unwrap();
    sluice.signal("HUP");
    assert!(wait_until(WAIT, || sluice.log().contains("reloaded")), "{}", sluice.log());
    assert!(get("/after").starts_with("HTTP/1.1 200"));
    assert!(wait_until(WAIT, || holds(&log, "\"/after\"")), "no new file after SIGHUP:\n{}", sluice.log());
    assert!(!holds(&rotated, "\"/after\""), "the rotated file still gets lines");
    assert!(holds(&rotated, "\"/before\""));
    sluice.signal("TERM");
    assert_eq!(sluice.wait_exit(WAIT), Some(0), "{}", sluice.log());
}

#[test]
fn refused_connections_are_logged_at_most_once_a_second() {
    let backend = TestBackend::named("a");
    let keys = format!(r#""servers": ["{}"], "limits": {{"maxConnections": 1}}"#, backend.url());
    let mut sluice = run_sluice("limit-log", &keys);
    let started = Instant::now();
    // The one connection allowed; the start-up check's connection may still be counted at first.
    let mut held = None;
    let admitted = wait_until(WAIT, || {
        let mut c = Client::connect(sluice.addr);
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        let ok = c.response().is_ok_and(|r| r.status == 200);
        held = ok.then_some(c);
        ok
    });
    assert!(admitted, "no connection was let in:\n{}", sluice.log());
    for i in 0..20 {
        let refused = exchange_raw(sluice.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(refused.starts_with("HTTP/1.1 503 "), "connection {i}: {refused:?}");
    }
    let seconds = started.elapsed().as_secs();
    let warning = "maxConnections reached; refusing new connections with 503";
    assert!(wait_until(WAIT, || sluice.log().contains(warning)), "{}", sluice.log());
    let lines = sluice.log().matches(warning).count() as u64;
    assert!(lines <= seconds + 1, "{lines} warnings for the refusals of {seconds} s:\n{}", sluice.log());
    drop(held);
    sluice.signal("TERM");
    assert_eq!(sluice.wait_exit(WAIT), Some(0), "{}", sluice.log());
}

/// Sends requests in a loop until `stop`, on keep-alive connections or new ones; counts
/// answers in `done` and returns every failure, described.
fn keep_requesting(
    addr: SocketAddr,
    keep_alive: bool,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> thread::JoinHandle<Vec<String>> {
    thread::spawn(move || {
        let mut failures = Vec::new();
        let mut client: Option<Client> = None;
        while !stop.load(Ordering::SeqCst) {
            let c = client.get_or_insert_with(|| Client::connect(addr));
            let close = if keep_alive { "" } else { "Connection: close\r\n" };
            c.send(format!("GET /loop HTTP/1.1\r\nHost: t\r\n{close}\r\n").as_bytes());
            match c.response() {
                Ok(r) if r.status == 200 => {
                    done.fetch_add(1, Ordering::SeqCst);
                    if !keep_alive || r.header("connection") == Some("close") {
                        client = None;
                    }
                }
                Ok(r) => {
                    failures.push(format!("{}{}", r.raw_head, r.text()));
                    client = None;
                }
                Err(e) => {
                    failures.push(e);
                    client = None;
                }
            }
        }
        failures
    })
}

#[test]
fn sighup_while_requests_flow_fails_no_request_and_new_backends_join_after_a_probe() {
    let (a, b, c) = (TestBackend::named("a"), TestBackend::named("b"), TestBackend::named("c"));
    let keys = |servers: &str| format!(r#""healthCheckInterval": "200ms", "servers": [{servers}]"#);
    let mut sluice = run_sluice("sighup", &keys(&format!(r#""{}", "{}""#, a.url(), b.url())));
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = [true, true, false, false]
        .into_iter()
        .map(|keep_alive| keep_requesting(sluice.addr, keep_alive, Arc::clone(&stop), Arc::clone(&done)))
        .collect();
    assert!(wait_until(WAIT, || done.load(Ordering::SeqCst) >= 50));

    // a stays with another weight, b goes, c comes.
    sluice.write_config(&keys(&format!(r#"{{"url": "{}", "weight": 3}}, "{}""#, a.url(), c.url())));
    sluice.signal("HUP");
    assert!(wait_until(WAIT, || c.request_count() > 0), "c never joined:\n{}", sluice.log());
    assert!(c.probe_count() >= 1);
    let b_after = b.request_count();
    let done_after = done.load(Ordering::SeqCst);
    assert!(wait_until(WAIT, || done.load(Ordering::SeqCst) >= done_after + 100));
    stop.store(true, Ordering::SeqCst);
    let failures: Vec<String> = clients.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(
        failures.is_empty(),
        "{} requests failed across the reload: {failures:#?}\n{}",
        failures.len(),
        sluice.log()
    );
    assert!(b.request_count() <= b_after + 4, "b still gets requests after it was removed");
    assert!(sluice.log().contains("0 backends kept, 1 changed, 1 added, 1 removed"), "{}", sluice.log());

    sluice.signal("TERM");
    assert_eq!(sluice.wait_exit(WAIT), Some(0), "{}", sluice.log());
}

#[test]
fn a_bad_file_on_sighup_is_logged_and_the_running_configuration_stays() {
    let a = TestBackend::named("a");
    let mut sluice = run_sluice("badhup", &format!(r#""servers": ["{}"]"#, a.url()));
    sluice.write_config(r#""servers": ["http://127.0.0.1:1"], "timeouts": {"connect": "5"}"#);
    sluice.signal("HUP");
    let logged = wait_until(WAIT, || sluice.log().contains("reload refused"));
    assert!(logged, "{}", sluice.log());
    assert!(sluice.log().contains("timeouts.connect"), "{}", sluice.log());
    let answer = exchange_raw(sluice.addr, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(answer.ends_with("\r\n\r\na"), "{answer}");
    sluice.signal("TERM");
    assert_eq!(sluice.wait_exit(WAIT), Some(0));
}

// ---- reload as a library call ----

/// A sluice in this process started from a configuration file, so `reload_from_file` can read it.
fn sluice_from_file(name: &str, json: &str) -> (Sluice, PathBuf) {
    let dir = std::env::temp_dir().join(format!("sluice-lifecycle-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, json).unwrap();
    (Sluice::from_file(&path), path)
}

fn parse(json: &str) -> Config {
    Config::from_json(json, "test.json").unwrap()
}

#[test]
fn a_backend_added_by_reload_gets_no_traffic_until_its_first_probe_passes() {
    let a = TestBackend::named("a");
    let ready = Arc::new(AtomicBool::new(false));
    let gate = Arc::clone(&ready);
    // Holds each probe until `ready`, so the first one is still pending while requests flow.
    let c = TestBackend::start(move |s| {
        if is_probe(s) {
            wait_until(WAIT, || gate.load(Ordering::SeqCst));
        }
        Reply::ok("c")
    });
    let json = |servers: &str| {
        format!(
            r#"{{"listen": "127.0.0.1:0", "healthCheckInterval": "100ms", "healthCheck": {{"timeout": "10s"}}, "servers": [{servers}]}}"#
        )
    };
    let sluice = Sluice::from_json(&json(&format!("{:?}", a.url())));
    let summary = sluice.server().reload(parse(&json(&format!("{:?}, {:?}", a.url(), c.url())))).unwrap();
    assert_eq!((summary.kept, summary.added), (1, 1), "{summary}");
    assert!(wait_until(WAIT, || c.probe_count() >= 1), "the new backend was not probed");
    let bodies: Vec<String> = (0..6).map(|_| sluice.get("/").text()).collect();
    assert_eq!(bodies, ["a"; 6], "the new backend got traffic before a probe passed");
    assert_eq!(sluice.health(1), Health::Unknown);

    ready.store(true, Ordering::SeqCst);
    assert!(wait_until(WAIT, || sluice.health(1) == Health::Up));
    let bodies: Vec<String> = (0..4).map(|_| sluice.get("/").text()).collect();
    assert!(bodies.contains(&"c".to_string()), "{bodies:?}");
}

#[test]
fn backends_that_stay_through_a_reload_keep_their_health_and_counters() {
    let a = TestBackend::named("a");
    let sick = TestBackend::start(|s| if is_probe(s) { Reply::status(503, "") } else { Reply::ok("sick") });
    let c = TestBackend::named("c");
    let json = |servers: &str| {
        format!(
            r#"{{"listen": "127.0.0.1:0", "healthCheckInterval": "50ms", "healthCheck": {{"fall": 1}}, "servers": [{servers}]}}"#
        )
    };
    let sluice = Sluice::from_json(&json(&format!("{:?}, {:?}", a.url(), sick.url())));
    assert!(wait_until(WAIT, || sluice.health(1) == Health::Down));
    for _ in 0..5 {
        assert_eq!(sluice.get("/").text(), "a");
    }
    let before = sluice.backend_stats(0);

    let servers = format!(r#"{{"url": {:?}, "weight": 3}}, {:?}, {:?}"#, a.url(), sick.url(), c.url());
    let summary = sluice.server().reload(parse(&json(&servers))).unwrap();
    assert_eq!((summary.kept, summary.changed, summary.added, summary.removed), (1, 1, 1, 0), "{summary}");
    let after = sluice.backend_stats(0);
    assert_eq!((after.requests, after.healthy, after.weight), (before.requests, true, 3), "{after:?}");
    assert_eq!(sluice.health(1), Health::Down, "the sick backend must stay down, not become unknown");
    // The next request goes to a, which counts on from where it was, or to c once it is up.
    let r = sluice.get("/");
    assert_eq!(r.status, 200, "{}", r.raw_head);
    if r.text() == "a" {
        let counted = wait_until(WAIT, || sluice.backend_stats(0).requests == before.requests + 1);
        assert!(counted, "a counts {} requests, want {}", sluice.backend_stats(0).requests, before.requests + 1);
    } else {
        assert_eq!((r.text(), c.request_count()), ("c".to_string(), 1));
    }
}

#[test]
fn an_invalid_reload_keeps_the_running_configuration_and_says_why() {
    let a = TestBackend::named("a");
    let (sluice, path) =
        sluice_from_file("invalid", &format!(r#"{{"listen": "127.0.0.1:0", "servers": ["{}"]}}"#, a.url()));
    std::fs::write(&path, r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"], "retries": -1}"#).unwrap();
    let err = sluice.server().reload_from_file().expect_err("a bad file must be refused");
    assert!(matches!(err, ReloadError::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("{}: retries: must be a whole number", path.display())), "{text}");
    assert_eq!(sluice.get("/").text(), "a");

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let listeners = format!(r#"[{{"listen": "127.0.0.1:0", "pool": "p"}}, {{"listen": "{busy}", "pool": "p"}}]"#);
    let pools = format!(r#"{{"p": {{"servers": ["{}"]}}}}"#, a.url());
    std::fs::write(&path, format!(r#"{{"listeners": {listeners}, "pools": {pools}}}"#)).unwrap();
    let err = sluice.server().reload_from_file().expect_err("a listener that cannot bind fails the reload");
    assert!(matches!(err, ReloadError::Bind { addr, .. } if addr == busy), "{err:?}");
    assert!(err.to_string().starts_with(&format!("cannot listen on {busy}: ")), "{err}");
    assert_eq!(sluice.server().local_addrs(), [sluice.addr], "the running listener stays, alone");
    assert_eq!(sluice.get("/").text(), "a");
}

// ---- alerts ----

fn events(webhook: &TestBackend) -> Vec<serde_json::Value> {
    webhook.requests().iter().map(|s| serde_json::from_slice(&s.body).expect("an event is JSON")).collect()
}

fn kinds(webhook: &TestBackend) -> Vec<String> {
    events(webhook)
        .iter()
        .map(|e| format!("{} {}", e["event"].as_str().unwrap(), e["server"].as_str().unwrap()))
        .collect()
}

#[test]
fn alerts_are_posted_when_a_backend_goes_down_its_pool_empties_and_it_comes_back() {
    let webhook = TestBackend::named("thanks");
    let up = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&up);
    let backend =
        TestBackend::start(move |_| if flag.load(Ordering::SeqCst) { Reply::ok("") } else { Reply::status(503, "") });
    let json = format!(
        r#"{{"listen": "127.0.0.1:0", "healthCheckInterval": "50ms", "healthCheck": {{"rise": 1, "fall": 1}},
            "servers": ["{}"], "alerts": {{"webhook": "{}/hooks/sluice"}}}}"#,
        backend.url(),
        webhook.url()
    );
    let _sluice = Sluice::from_json(&json);
    up.store(false, Ordering::SeqCst);
    assert!(wait_until(WAIT, || webhook.request_count() >= 2), "{:?}", kinds(&webhook));
    up.store(true, Ordering::SeqCst);
    assert!(wait_until(WAIT, || webhook.request_count() >= 3), "{:?}", kinds(&webhook));

    let url = backend.url();
    assert_eq!(
        kinds(&webhook)[..3],
        [format!("backend_down {url}"), format!("pool_down {url}"), format!("backend_up {url}")]
    );
    let first = &webhook.requests()[0];
    assert_eq!((first.method.as_str(), first.target.as_str()), ("POST", "/hooks/sluice"));
    assert_eq!(first.header("content-type"), Some("application/json"));
    let event = &events(&webhook)[0];
    assert_eq!(event["pool"], "default");
    let at = event["at"].as_str().unwrap();
    assert!(at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T', "not an RFC 3339 UTC time: {at}");
}

/// Waits for `turns` more turns of the once-a-second `sluice-tick` thread, which writes out
/// the access log file and then checks the host thresholds: each turn shows as the line of a
/// fresh request reaching `log`. Returns whether they all came.
fn wait_for_ticks(sluice: &Sluice, log: &Path, turns: usize) -> bool {
    (0..turns).all(|turn| {
        let target = format!("/tick-{turn}");
        sluice.get(&target).status == 200
            && wait_until(WAIT, || std::fs::read_to_string(log).unwrap_or_default().contains(&target))
    })
}

#[test]
fn a_host_threshold_that_is_always_crossed_posts_one_host_high_event() {
    let webhook = TestBackend::named("thanks");
    let backend = TestBackend::named("a");
    let dir = std::env::temp_dir().join(format!("sluice-lifecycle-{}-host-high", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let _ = std::fs::remove_file(&log);
    let json = format!(
        r#"{{"listen": "127.0.0.1:0", "servers": ["{}"], "accessLog": {{"format": "json", "path": {:?}}},
            "alerts": {{"webhook": "{}/hooks", "memoryPercent": 0.1, "diskPercent": 100}}}}"#,
        backend.url(),
        log.display().to_string(),
        webhook.url()
    );
    let sluice = Sluice::from_json(&json);
    assert!(wait_until(WAIT, || webhook.request_count() >= 1), "no host event arrived");
    let event = &events(&webhook)[0];
    assert_eq!(
        (event["event"].as_str(), event["metric"].as_str()),
        (Some("host_high"), Some("memoryPercent")),
        "{event}"
    );
    assert_eq!(event["threshold"], 0.1, "{event}");
    let value = event["value"].as_f64().unwrap_or_else(|| panic!("value is a number: {event}"));
    assert!(value > 0.1 && value <= 100.0, "{event}");
    assert!(event["at"].as_str().unwrap_or_default().ends_with('Z'), "{event}");
    // The checks go on once a second; the crossing is not reported again. The third turn gives
    // an event raised by the second a second to be delivered.
    assert!(wait_for_ticks(&sluice, &log, 3), "the ticker stopped turning");
    let memory_events = events(&webhook).iter().filter(|e| e["metric"] == "memoryPercent").count();
    assert_eq!(memory_events, 1, "{:?}", events(&webhook));
}

#[test]
fn many_failing_requests_at_once_raise_one_backend_down() {
    let webhook = TestBackend::named("thanks");
    let broken = resetting_backend();
    let good_up = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&good_up);
    let good = TestBackend::start(move |s| {
        if is_probe(s) && !flag.load(Ordering::SeqCst) {
            Reply::status(503, "")
        } else {
            Reply::ok("good")
        }
    });
    let json = format!(
        r#"{{"listen": "127.0.0.1:0", "healthCheckInterval": "50ms", "healthCheck": {{"rise": 1000, "fall": 1, "passiveFails": 1}},
            "servers": ["{}", "{}"], "alerts": {{"webhook": "{}"}}}}"#,
        broken.url(),
        good.url(),
        webhook.url()
    );
    let sluice = Arc::new(Sluice::from_json(&json));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let sluice = Arc::clone(&sluice);
            thread::spawn(move || (0..5).map(|_| sluice.get("/").status).collect::<Vec<u16>>())
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Then the good one goes down too: its events come after any from the burst.
    good_up.store(false, Ordering::SeqCst);
    let pool_down = format!("pool_down {}", good.url());
    assert!(wait_until(WAIT, || kinds(&webhook).contains(&pool_down)), "{:?}", kinds(&webhook));
    let broken_down = format!("backend_down {}", broken.url());
    let reported = kinds(&webhook).iter().filter(|k| **k == broken_down).count();
    assert_eq!(reported, 1, "{:?}", kinds(&webhook));
}

#[test]
fn a_webhook_that_never_answers_slows_no_request() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = format!("http://{}/", silent.local_addr().unwrap());
    let flaky = resetting_backend();
    let good = TestBackend::named("good");
    let json = format!(
        r#"{{"listen": "127.0.0.1:0", "healthCheckInterval": "20ms", "healthCheck": {{"rise": 1, "passiveFails": 1}},
            "servers": ["{}", "{}"], "alerts": {{"webhook": "{hook}", "timeout": "2m"}}}}"#,
        flaky.url(),
        good.url()
    );
    let sluice = Sluice::from_json(&json);
    // A request that waited for the webhook would wait its two minutes.
    for i in 0..40 {
        let asked = Instant::now();
        let r = sluice.get("/");
        assert_eq!(r.status, 200, "{}", r.raw_head);
        assert!(asked.elapsed() < Duration::from_secs(20), "request {i} took {:?}", asked.elapsed());
        thread::sleep(Duration::from_millis(5));
    }
    assert!(flaky.request_count() >= 2, "the flaky backend should have gone down and up again");
}

#[test]
fn a_full_alert_queue_drops_and_counts_instead_of_waiting() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut webhook = webhook_from_url(&format!("http://{}/", silent.local_addr().unwrap())).unwrap();
    resolve_webhook(&mut webhook).unwrap();
    let config = AlertsConfig { webhook: Some(webhook), timeout: Duration::from_secs(120), ..AlertsConfig::default() };
    let alerts = Alerts::with_queue(&config, 2).unwrap();
    // A raise that waited for the silent webhook would wait its two minutes.
    let started = Instant::now();
    for i in 0..10 {
        alerts.raise(AlertEvent::now(AlertKind::BackendDown, "default", &format!("http://10.0.0.{i}")));
    }
    assert!(started.elapsed() < Duration::from_secs(20), "raising took {:?}", started.elapsed());
    // Two wait in the queue and at most one is being delivered; the rest are dropped.
    let dropped = alerts.stats().dropped;
    assert!((7..=8).contains(&dropped), "{:?}", alerts.stats());
}

// ---- probes ----

#[test]
fn probes_send_the_configured_host_or_the_backends_own() {
    let (plain, named) = (TestBackend::named("p"), TestBackend::named("n"));
    let _default = Sluice::start(&[&plain.url()], r#""healthCheckInterval": "50ms","#);
    let _overridden =
        Sluice::start(&[&named.url()], r#""healthCheckInterval": "50ms", "healthCheck": {"host": "health.example"},"#);
    assert!(wait_until(WAIT, || plain.probe_count() >= 1 && named.probe_count() >= 1));
    let host = |b: &TestBackend| b.probes.lock().unwrap()[0].header("host").map(str::to_string);
    assert_eq!(host(&plain), Some(plain.addr.to_string()));
    assert_eq!(host(&named), Some("health.example".to_string()));
}

#[test]
fn expect_status_narrows_what_a_probe_accepts() {
    let redirecting = TestBackend::start(|_| Reply::status(301, ""));
    let check = |expect: &str| {
        let extra = format!(r#""healthCheckInterval": "30ms", "healthCheck": {{"fall": 1 {expect}}},"#);
        let sluice = Sluice::start(&[&redirecting.url()], &extra);
        let probes = redirecting.probe_count();
        assert!(wait_until(WAIT, || redirecting.probe_count() >= probes + 3));
        // `fall` is 1: a failing probe would have taken it down by now.
        sluice.health(0)
    };
    assert_eq!(check(""), Health::Up, "3xx passes by default");
    assert_eq!(check(r#", "expectStatus": 200"#), Health::Down);
    assert_eq!(check(r#", "expectStatus": [200, 301]"#), Health::Up);
}

#[test]
fn first_probes_of_many_backends_are_spread_over_the_interval() {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let backends: Vec<TestBackend> = (0..6)
        .map(|_| {
            let arrivals = Arc::clone(&arrivals);
            TestBackend::start(move |s| {
                if is_probe(s) {
                    arrivals.lock().unwrap().push(Instant::now());
                }
                Reply::ok("")
            })
        })
        .collect();
    let urls: Vec<String> = backends.iter().map(TestBackend::url).collect();
    let _sluice =
        Sluice::start(&urls.iter().map(String::as_str).collect::<Vec<_>>(), r#""healthCheckInterval": "2s","#);
    assert!(wait_until(WAIT, || arrivals.lock().unwrap().len() >= 6));
    let arrivals = arrivals.lock().unwrap();
    let spread = *arrivals.iter().max().unwrap() - *arrivals.iter().min().unwrap();
    // Spread evenly over the first half (0 to 833 ms); all at once would be a few ms.
    assert!(spread >= Duration::from_millis(300), "first probes within {spread:?} of each other");
}
