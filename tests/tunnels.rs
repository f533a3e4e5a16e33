//! Tunnels: WebSocket (any `Upgrade`) through an HTTP listener, and TCP mode. Bytes both
//! ways, 50 MiB each way, half-closes, early bytes, idle limits, health and failover of tcp
//! pools.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A backend that, on each connection, optionally takes an HTTP upgrade first, then says
/// `<name>\n`, echoes every byte it gets, and when the sender half-closes, says
/// `bye after <n> bytes\n` and closes. Health probes (HTTP) get a plain 200.
struct EchoBackend {
    addr: SocketAddr,
    /// Request heads of the upgrade requests it took.
    upgrades: Arc<Mutex<Vec<String>>>,
    /// Connections accepted, probes included.
    accepted: Arc<AtomicUsize>,
    listener: Option<TcpListener>,
}

impl EchoBackend {
    fn start(name: &str, speaks_http: bool) -> EchoBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let upgrades = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (name, seen, count) = (name.to_string(), upgrades.clone(), accepted.clone());
        let accepting = listener.try_clone().unwrap();
        thread::spawn(move || {
            for stream in accepting.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (name, seen) = (name.clone(), seen.clone());
                thread::spawn(move || echo_connection(stream, &name, speaks_http.then_some(&*seen)));
            }
        });
        EchoBackend { addr, upgrades, accepted, listener: Some(listener) }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting: the port is closed afterwards.
    fn stop(&mut self) {
        if let Some(listener) = self.listener.take() {
            // Closing a listener does not wake its accept(); shutting the socket down does.
            let fd_owner = socket_of(&listener);
            let _ = fd_owner.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `TcpStream` handle on a listener's socket, only to shut it down.
fn socket_of(listener: &TcpListener) -> TcpStream {
    use std::os::fd::{AsFd, OwnedFd};
    let fd: OwnedFd = listener.as_fd().try_clone_to_owned().unwrap();
    TcpStream::from(fd)
}

fn echo_connection(mut stream: TcpStream, name: &str, upgrades: Option<&Mutex<Vec<String>>>) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut early = Vec::new();
    if let Some(upgrades) = upgrades {
        let Some((head, rest)) = read_head(&mut stream) else { return };
        if !head.to_ascii_lowercase().contains("upgrade: websocket") {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
        upgrades.lock().unwrap().push(head);
        early = rest;
        let hello = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n{name}\n"
        );
        if stream.write_all(hello.as_bytes()).is_err() {
            return;
        }
    } else if stream.write_all(format!("{name}\n").as_bytes()).is_err() {
        return;
    }
    let mut total = early.len();
    if stream.write_all(&early).is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
                total += n;
            }
            Err(_) => return,
        }
    }
    let _ = stream.write_all(format!("bye after {total} bytes\n").as_bytes());
}

/// Reads up to the end of an HTTP head; returns it and whatever came after it.
fn read_head(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            return Some((String::from_utf8_lossy(&buf[..i + 4]).into_owned(), buf[i + 4..].to_vec()));
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to sluice");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Reads exactly `n` bytes.
fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

/// Reads until the peer closes.
fn read_rest(stream: &mut TcpStream) -> String {
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap_or_else(|e| panic!("reading to the end: {e}; got {rest:?}"));
    String::from_utf8_lossy(&rest).into_owned()
}

/// Deterministic, non-repeating-looking test bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8).collect()
}

/// Sends 50 MiB while reading the 50 MiB echo back at the same time, then half-closes and
/// reads the backend's last words. Returns them.
fn fifty_mib_both_ways_then_half_close(stream: TcpStream) -> String {
    const LEN: usize = 50 * 1024 * 1024;
    let data = Arc::new(pattern(LEN));
    let (mut reader, writer) = (stream.try_clone().unwrap(), stream);
    let sent = data.clone();
    let sender = thread::spawn(move || {
        let mut writer = writer;
        for chunk in sent.chunks(256 * 1024) {
            writer.write_all(chunk).expect("send through the tunnel");
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let echoed = read_n(&mut reader, LEN);
    sender.join().unwrap();
    let first_difference = echoed.iter().zip(data.iter()).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "the echo differs from what was sent");
    read_rest(&mut reader)
}

fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /chat?room=1 HTTP/1.1\r\nHost: ws.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n{extra}"
    )
}

fn http_sluice(backend_url: &str, extra: &str) -> Sluice {
    Sluice::start(&[backend_url], extra)
}

fn tcp_sluice(urls: &[String], pool_extra: &str, top_extra: &str) -> Sluice {
    let servers: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    Sluice::from_json(&format!(
        r#"{{"listeners": [{{"listen": "127.0.0.1:0", "mode": "tcp", "pool": "db"}}],
            "pools": {{"db": {{"servers": [{}] {pool_extra}}}}} {top_extra}}}"#,
        servers.join(", ")
    ))
}

#[test]
fn websocket_upgrade_is_forwarded_and_the_101_becomes_a_tunnel() {
    let backend = EchoBackend::start("ws", true);
    let sluice = http_sluice(&backend.url("http"), "");
    let mut c = connect(sluice.addr);
    // The first frame rides in the same packet as the upgrade request.
    c.write_all(upgrade_request("early").as_bytes()).unwrap();
    let mut head = Vec::new();
    while find(&head, b"\r\n\r\n").is_none() {
        head.extend(read_n(&mut c, 1));
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head}");
    assert!(head.contains("\r\nUpgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: upgrade\r\n"), "{head}");
    assert!(head.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{head}");
    assert_eq!(read_n(&mut c, 3 + 5), b"ws\nearly", "greeting, then the early bytes echoed");
    c.write_all(b"ping").unwrap();
    assert_eq!(read_n(&mut c, 4), b"ping");
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_rest(&mut c), "bye after 9 bytes\n");

    let seen = backend.upgrades.lock().unwrap()[0].clone();
    let lower = seen.to_ascii_lowercase();
    assert!(seen.starts_with("GET /chat?room=1 HTTP/1.1\r\n"), "{seen}");
    assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{seen}");
    assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{seen}");
    assert!(lower.contains("\r\nsec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n"), "{seen}");
    assert!(!lower.contains("keep-alive"), "{seen}");
}

#[test]
fn a_sticky_pool_pins_the_client_in_the_101() {
    let backend = EchoBackend::start("ws", true);
    let sluice = http_sluice(&backend.url("http"), r#""sticky": {"cookie": "SRV"},"#);
    let mut c = connect(sluice.addr);
    c.write_all(upgrade_request("").as_bytes()).unwrap();
    let (head, _) = read_head(&mut c).expect("a 101 head");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("\r\nSet-Cookie: SRV="), "{head}");
}

#[test]
fn an_explained_101_says_why_its_backend_was_picked() {
    let backend = EchoBackend::start("ws", true);
    let sluice = http_sluice(&backend.url("http"), r#""explain": true,"#);
    let mut c = connect(sluice.addr);
    c.write_all(upgrade_request("").as_bytes()).unwrap();
    let (head, _) = read_head(&mut c).expect("a 101 head");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let picked = format!("; picked={}; reason=next in turn; attempt=1\r\n", backend.url("http"));
    assert!(head.contains("\r\nX-Sluice-Decision: route=*; pool=default; algorithm=round-robin;"), "{head}");
    assert!(head.contains(&picked), "{head}");
}

#[test]
fn websocket_carries_50_mib_each_way_and_passes_a_half_close() {
    let backend = EchoBackend::start("ws", true);
    let sluice = http_sluice(&backend.url("http"), "");
    let mut c = connect(sluice.addr);
    c.write_all(upgrade_request("").as_bytes()).unwrap();
    let response = read_head(&mut c).expect("a 101 head");
    assert!(response.0.starts_with("HTTP/1.1 101 "), "{}", response.0);
    let mut greeting = response.1;
    while greeting.len() < 3 {
        greeting.extend(read_n(&mut c, 1));
    }
    assert_eq!(greeting, b"ws\n");
    let last_words = fifty_mib_both_ways_then_half_close(c);
    assert_eq!(last_words, format!("bye after {} bytes\n", 50 * 1024 * 1024));
}

#[test]
fn a_refused_upgrade_is_an_ordinary_response_and_the_connection_goes_on() {
    let backend = TestBackend::start(|s| Reply::ok(&format!("plain {}", s.target)));
    let sluice = http_sluice(&backend.url(), "");
    let mut c = sluice.connect();
    c.send(upgrade_request("").as_bytes());
    let r = c.response().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "plain /chat?room=1"), "{}", r.raw_head);
    c.send(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().unwrap().text(), "plain /next");
    let seen = &backend.requests()[0];
    assert_eq!(seen.header("upgrade"), Some("websocket"), "{}", String::from_utf8_lossy(&seen.raw_head));
    assert_eq!(seen.header("connection"), Some("upgrade"), "{}", String::from_utf8_lossy(&seen.raw_head));
    assert_eq!(backend.requests()[1].header("upgrade"), None);
}

#[test]
fn a_101_to_a_request_that_did_not_ask_for_an_upgrade_is_a_bad_gateway() {
    let backend =
        TestBackend::start(|_| Reply::Raw(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n".to_vec()));
    let sluice = http_sluice(&backend.url(), "");
    assert_eq!(sluice.get("/").status, 502);
}

#[test]
fn tcp_mode_carries_50_mib_each_way_and_passes_a_half_close() {
    let backend = EchoBackend::start("db", false);
    let sluice = tcp_sluice(&[backend.url("tcp")], "", "");
    let mut c = connect(sluice.addr);
    assert_eq!(read_n(&mut c, 3), b"db\n");
    let last_words = fifty_mib_both_ways_then_half_close(c);
    assert_eq!(last_words, format!("bye after {} bytes\n", 50 * 1024 * 1024));
}

#[test]
fn tcp_mode_client_that_half_closes_at_once_still_receives_the_rest() {
    let backend = EchoBackend::start("db", false);
    let sluice = tcp_sluice(&[backend.url("tcp")], "", "");
    let mut c = connect(sluice.addr);
    c.write_all(b"only this").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_rest(&mut c), "db\nonly thisbye after 9 bytes\n");
}

/// The one server object of the admin API's /stats.
fn only_server_stats(admin: SocketAddr) -> serde_json::Value {
    let mut c = Client::connect(admin);
    c.send(b"GET /stats HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    let r = c.response().expect("a /stats response");
    let stats: serde_json::Value = serde_json::from_slice(&r.body).expect("/stats is JSON");
    stats["servers"][0].clone()
}

#[test]
fn tcp_mode_connections_count_in_backend_stats_and_the_json_access_log() {
    let backend = EchoBackend::start("db", false);
    let path = std::env::temp_dir().join(format!("sluice-tcp-{}-access.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let top = format!(
        r#", "admin": {{"listen": "127.0.0.1:0"}}, "accessLog": {{"format": "json", "path": {:?}}}"#,
        path.display().to_string()
    );
    let mut sluice = tcp_sluice(&[backend.url("tcp")], "", &top);
    let admin = sluice.server().admin_addr().expect("admin configured");
    let mut c = connect(sluice.addr);
    c.write_all(b"only this").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let received = read_rest(&mut c);
    assert_eq!(received.len(), 30, "{received:?}");

    let counted = || only_server_stats(admin)["responses"]["2xx"] == 1;
    assert!(wait_until(Duration::from_secs(5), counted), "{:#}", only_server_stats(admin));
    let server = only_server_stats(admin);
    assert_eq!((server["bytesReceived"].as_u64(), server["bytesSent"].as_u64()), (Some(9), Some(30)), "{server:#}");
    assert!(server["latencyMs"]["mean"].is_f64(), "{server:#}");

    sluice.server.take().unwrap().stop();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = &lines[0];
    assert_eq!(
        (line["mode"].as_str(), line["status"].as_u64(), line["bytes"].as_u64()),
        (Some("tcp"), Some(200), Some(30)),
        "{line}"
    );
    assert_eq!(line["backend"], backend.url("tcp").as_str(), "{line}");
    assert!(line["method"].is_null() && line["duration_ms"].is_f64(), "{line}");
}

#[test]
fn tcp_mode_rotates_connections_over_the_pool() {
    let backends: Vec<EchoBackend> = ["a", "b", "c"].iter().map(|n| EchoBackend::start(n, false)).collect();
    let urls: Vec<String> = backends.iter().map(|b| b.url("tcp")).collect();
    let sluice = tcp_sluice(&urls, "", "");
    let names: Vec<String> = (0..6)
        .map(|_| {
            let mut c = connect(sluice.addr);
            String::from_utf8(read_n(&mut c, 2)).unwrap()
        })
        .collect();
    assert_eq!(names, ["a\n", "b\n", "c\n", "a\n", "b\n", "c\n"]);
}

#[test]
fn tcp_mode_follows_ip_hash() {
    let backends: Vec<EchoBackend> = ["a", "b", "c"].iter().map(|n| EchoBackend::start(n, false)).collect();
    let urls: Vec<String> = backends.iter().map(|b| b.url("tcp")).collect();
    let sluice = tcp_sluice(&urls, r#", "algorithm": "ip-hash""#, "");
    let names: Vec<String> = (0..6)
        .map(|_| {
            let mut c = connect(sluice.addr);
            String::from_utf8(read_n(&mut c, 2)).unwrap()
        })
        .collect();
    assert!(names.iter().all(|n| *n == names[0]), "one client address, one backend: {names:?}");
}

#[test]
fn tcp_mode_least_connections_counts_open_tunnels() {
    let backends: Vec<EchoBackend> = ["a", "b"].iter().map(|n| EchoBackend::start(n, false)).collect();
    let urls: Vec<String> = backends.iter().map(|b| b.url("tcp")).collect();
    let sluice = tcp_sluice(&urls, r#", "algorithm": "least-connections""#, "");
    let pool = sluice.server().runtime().state().pools[0].clone();
    let mut held = connect(sluice.addr);
    let first = String::from_utf8(read_n(&mut held, 2)).unwrap();
    // While the first tunnel stays open, its backend has one in flight and the other none.
    let others: Vec<String> = (0..3)
        .map(|_| {
            let mut c = connect(sluice.addr);
            let name = String::from_utf8(read_n(&mut c, 2)).unwrap();
            drop(c);
            let closed = wait_until(IO_TIMEOUT, || pool.backends.iter().map(|b| b.active()).sum::<usize>() == 1);
            assert!(closed, "the tunnel to {name:?} did not end when its client left");
            name
        })
        .collect();
    assert!(others.iter().all(|n| *n != first), "held {first:?}, then {others:?}");
}

#[test]
fn tcp_mode_tries_the_next_backend_when_connect_fails() {
    let live = EchoBackend::start("live", false);
    let dead = closed_port_url().replace("http://", "tcp://");
    // Probes are far apart, so the dead backend still counts as healthy and gets picked.
    let sluice = tcp_sluice(&[dead, live.url("tcp")], r#", "healthCheckInterval": "1m""#, "");
    for _ in 0..4 {
        let mut c = connect(sluice.addr);
        assert_eq!(read_n(&mut c, 5), b"live\n");
    }
    let failures = sluice.server().runtime().state().pools[0].backends[0].stats().failures;
    assert!(failures >= 1, "the dead backend was never tried: {failures} failures");
}

#[test]
fn tcp_mode_closes_the_client_at_once_when_no_backend_is_available() {
    let mut backend = EchoBackend::start("db", false);
    let sluice = tcp_sluice(
        &[backend.url("tcp")],
        r#", "healthCheckInterval": "100ms", "healthCheck": {"timeout": "200ms", "fall": 1, "rise": 1}"#,
        "",
    );
    backend.stop();
    let pool = sluice.server().runtime().state().pools[0].clone();
    assert!(wait_until(Duration::from_secs(5), || !pool.backends[0].is_healthy()), "the stopped backend stays up");
    let mut c = connect(sluice.addr);
    let started = std::time::Instant::now();
    assert_eq!(read_rest(&mut c), "");
    assert!(started.elapsed() < IO_TIMEOUT, "closed only after {:?}", started.elapsed());
}

#[test]
fn tcp_pools_are_health_checked_by_connecting() {
    // The echo backend speaks no HTTP: an HTTP probe would fail, a TCP connect passes.
    let backend = EchoBackend::start("db", false);
    let sluice = tcp_sluice(
        &[backend.url("tcp")],
        r#", "healthCheckInterval": "100ms", "healthCheck": {"timeout": "200ms", "fall": 1}"#,
        "",
    );
    assert!(wait_until(Duration::from_secs(5), || backend.accepted.load(Ordering::SeqCst) >= 4), "no probes seen");
    assert!(sluice.server().runtime().state().pools[0].backends[0].is_healthy(), "a listening backend was marked down");
    let mut c = connect(sluice.addr);
    assert_eq!(read_n(&mut c, 3), b"db\n");
}

#[test]
fn an_idle_tunnel_is_closed_after_timeouts_tunnel() {
    let backend = EchoBackend::start("db", false);
    let sluice = tcp_sluice(&[backend.url("tcp")], "", r#", "timeouts": {"tunnel": "300ms"}"#);
    let mut c = connect(sluice.addr);
    c.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut c, 4), b"db\nx");
    // Nothing more either way: sluice closes both sides; the backend says goodbye first.
    let rest = read_rest(&mut c);
    assert!(rest.is_empty() || rest.starts_with("bye"), "{rest:?}");
}
