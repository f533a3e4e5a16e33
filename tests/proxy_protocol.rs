//! The PROXY protocol over real sockets: raw clients sending v1 and v2 headers to listeners
//! with `acceptProxy` (whole, byte by byte, malformed, missing, UNKNOWN and LOCAL, before TLS,
//! trickling while workers are scarce), the header's source as the client in
//! `X-Forwarded-For`, the access log, ip-hash, allow/deny and rate limits; pools with
//! `sendProxy` seen by a raw backend (headers for exchanges and probes, reuse only for the
//! same client, tcp mode); `--check` and bad values; a reload turning `acceptProxy` on; and
//! real HAProxy in front of sluice and behind it.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// A v1 header naming `source` as the client and `destination` as what it reached.
fn v1(source: &str, destination: &str) -> Vec<u8> {
    let (s, d): (SocketAddr, SocketAddr) = (source.parse().unwrap(), destination.parse().unwrap());
    let protocol = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {protocol} {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port()).into_bytes()
}

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 `PROXY` header over TCP naming `source`, with a NOOP TLV after the addresses.
fn v2(source: &str, destination: &str) -> Vec<u8> {
    let (s, d): (SocketAddr, SocketAddr) = (source.parse().unwrap(), destination.parse().unwrap());
    let mut block = Vec::new();
    let family = match (s, d) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            block.extend_from_slice(&s.ip().octets());
            block.extend_from_slice(&d.ip().octets());
            0x11
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            block.extend_from_slice(&s.ip().octets());
            block.extend_from_slice(&d.ip().octets());
            0x21
        }
        _ => panic!("one family in a test header"),
    };
    block.extend_from_slice(&s.port().to_be_bytes());
    block.extend_from_slice(&d.port().to_be_bytes());
    block.extend_from_slice(&[0x04, 0x00, 0x02, b'h', b'i']);
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[0x21, family]);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(&block);
    out
}

/// A v2 `LOCAL` header.
fn v2_local() -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[0x20, 0x00, 0, 0]);
    out
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Sends `header` then `request` on a new connection and reads the response.
fn through(addr: SocketAddr, header: &[u8], request: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(request);
    c.send(&bytes);
    c.response().unwrap_or_else(|e| panic!("{e}; sent {:?}", String::from_utf8_lossy(&bytes)))
}

/// A backend that echoes the client address sluice forwarded.
fn forwarded_for_backend() -> TestBackend {
    TestBackend::start(|seen| Reply::ok(seen.header("x-forwarded-for").unwrap_or("none")))
}

fn accepting(backend: &TestBackend, extra: &str) -> Sluice {
    Sluice::start(&[&backend.url()], &format!(r#""acceptProxy": true, {extra}"#))
}

#[test]
fn a_v1_header_makes_its_source_the_client_in_x_forwarded_for() {
    let backend = forwarded_for_backend();
    let sluice = accepting(&backend, "");
    let r = through(sluice.addr, &v1("203.0.113.7:5555", "198.51.100.1:80"), &get("/"));
    assert_eq!((r.status, r.text().as_str()), (200, "203.0.113.7"));
    let r = through(sluice.addr, &v1("[2001:db8::7]:5555", "[2001:db8::1]:80"), &get("/"));
    assert_eq!(r.text(), "2001:db8::7");
}

#[test]
fn a_v2_header_over_ipv4_or_ipv6_with_tlvs_makes_its_source_the_client() {
    let backend = forwarded_for_backend();
    let sluice = accepting(&backend, "");
    let r = through(sluice.addr, &v2("203.0.113.8:4000", "198.51.100.1:443"), &get("/"));
    assert_eq!((r.status, r.text().as_str()), (200, "203.0.113.8"));
    let r = through(sluice.addr, &v2("[2001:db8::8]:4000", "[2001:db8::1]:443"), &get("/"));
    assert_eq!(r.text(), "2001:db8::8");
}

#[test]
fn headers_sent_byte_by_byte_are_read_whole() {
    let backend = forwarded_for_backend();
    let sluice = accepting(&backend, "");
    for header in [v1("203.0.113.9:1", "198.51.100.1:80"), v2("[2001:db8::9]:1", "[2001:db8::1]:80")] {
        let mut c = sluice.connect();
        c.stream.set_nodelay(true).unwrap();
        for byte in &header {
            c.send(&[*byte]);
            thread::sleep(Duration::from_millis(2));
        }
        c.send(&get("/"));
        let r = c.response().unwrap();
        assert!(r.text().starts_with("203.0.113.9") || r.text() == "2001:db8::9", "{}", r.text());
    }
}

#[test]
fn unknown_and_local_headers_leave_the_peer_as_the_client() {
    let backend = forwarded_for_backend();
    let sluice = accepting(&backend, "");
    for header in [b"PROXY UNKNOWN\r\n".to_vec(), b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), v2_local()] {
        let r = through(sluice.addr, &header, &get("/"));
        assert_eq!((r.status, r.text().as_str()), (200, "127.0.0.1"), "{:?}", String::from_utf8_lossy(&header));
    }
}

#[test]
fn a_connection_without_a_valid_header_is_closed_without_an_answer_and_counted() {
    let backend = forwarded_for_backend();
    let sluice = accepting(&backend, r#""admin": {"listen": "127.0.0.1:0"},"#);
    let mut too_long_v2 = V2_SIGNATURE.to_vec();
    too_long_v2.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    let refused: Vec<Vec<u8>> = vec![
        get("/"),
        b"PROXY TCP4 203.0.113.7 198.51.100.1 5555\r\n".to_vec(),
        b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 80\n".to_vec(),
        b"PROXY TCP6 203.0.113.7 198.51.100.1 5555 80\r\n".to_vec(),
        format!("PROXY UNKNOWN {}\r\n", "x".repeat(100)).into_bytes(),
        too_long_v2,
        {
            let mut udp = v2("203.0.113.7:1", "198.51.100.1:80");
            udp[13] = 0x12;
            udp
        },
    ];
    let count = refused.len();
    for header in refused {
        let mut bytes = header.clone();
        bytes.extend_from_slice(&get("/"));
        let all = exchange_raw(sluice.addr, &bytes);
        assert_eq!(all, "", "answered {:?}", String::from_utf8_lossy(&header));
    }
    assert_eq!(backend.request_count(), 0);
    assert_eq!(sluice.admin_stats()["proxyHeadersRefused"]["malformed"], count);
    let admin = sluice.server().admin_addr().expect("the admin API is configured");
    let metrics = admin_call(admin, "GET", "/metrics", None, "").text();
    let line = format!("sluice_proxy_header_refusals_total{{reason=\"malformed\"}} {count}");
    assert!(metrics.contains(&line), "no {line:?} in /metrics");
    assert_eq!(through(sluice.addr, &v1("203.0.113.7:1", "198.51.100.1:80"), &get("/")).status, 200);
}

#[test]
fn a_trickling_header_parks_off_the_workers_and_is_closed_when_client_header_runs_out() {
    let backend = forwarded_for_backend();
    let sluice = accepting(&backend, r#""workers": 1, "timeouts": {"clientHeader": "2s"},"#);
    let mut slow = sluice.connect();
    slow.send(b"PROXY TCP4 203.0.");
    let runtime = sluice.server().runtime();
    let parked = || runtime.waiting_room.parked_count() == 1 && runtime.busy_workers() == 0;
    assert!(
        wait_until(WAIT, parked),
        "{} parked, {} busy",
        runtime.waiting_room.parked_count(),
        runtime.busy_workers()
    );
    // The one worker is free for others meanwhile.
    let r = through(sluice.addr, &v1("203.0.113.10:1", "198.51.100.1:80"), &get("/"));
    assert_eq!(r.text(), "203.0.113.10");
    // More bytes wake it; it parks again, and is closed silently when its time is up.
    slow.send(b"113.11 198.51");
    assert_eq!(slow.read_to_close(), "", "a header that never completes gets no answer");
    assert!(wait_until(WAIT, || runtime.waiting_room.parked_count() == 0));
    assert_eq!(backend.request_count(), 1);
    assert_eq!(runtime.metrics.proxy_headers.counts(), (0, 1), "(malformed, timed out) headers");
}

#[test]
fn a_header_completed_after_parking_serves_its_request() {
    let backend = forwarded_for_backend();
    let sluice = accepting(&backend, r#""workers": 1, "timeouts": {"clientHeader": "5s"},"#);
    let mut slow = sluice.connect();
    let header = v2("203.0.113.12:1", "198.51.100.1:80");
    slow.send(&header[..14]);
    let runtime = sluice.server().runtime();
    assert!(wait_until(WAIT, || runtime.waiting_room.parked_count() == 1));
    slow.send(&header[14..]);
    slow.send(&get("/"));
    assert_eq!(slow.response().unwrap().text(), "203.0.113.12");
}

#[test]
fn the_access_log_names_the_header_source() {
    let backend = TestBackend::named("ok");
    let path = std::env::temp_dir().join(format!("sluice-proxy-{}-access.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let extra = format!(r#""accessLog": {{"format": "json", "path": {:?}}},"#, path.display().to_string());
    let mut sluice = accepting(&backend, &extra);
    assert_eq!(through(sluice.addr, &v1("203.0.113.13:6000", "198.51.100.1:80"), &get("/x")).status, 200);
    sluice.server.take().unwrap().stop();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["client"], "203.0.113.13:6000", "{text}");
}

#[test]
fn allow_deny_and_rate_limits_judge_the_header_source() {
    let backend = TestBackend::named("ok");
    let sluice =
        accepting(&backend, r#""deny": ["203.0.113.0/24"], "rateLimit": {"requestsPerSecond": 0.001, "burst": 1},"#);
    let r = through(sluice.addr, &v1("203.0.113.14:1", "198.51.100.1:80"), &get("/"));
    assert_eq!(r.status, 403, "denied by the header's source, not the peer 127.0.0.1");
    let ok = through(sluice.addr, &v1("198.51.100.20:1", "198.51.100.1:80"), &get("/"));
    assert_eq!(ok.status, 200);
    let limited = through(sluice.addr, &v1("198.51.100.20:2", "198.51.100.1:80"), &get("/"));
    assert_eq!(limited.status, 429, "the same source's second request is over its burst");
    let other = through(sluice.addr, &v1("198.51.100.21:1", "198.51.100.1:80"), &get("/"));
    assert_eq!(other.status, 200, "another source has its own bucket");
}

#[test]
fn ip_hash_picks_by_the_header_source() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    let sluice = Sluice::start(
        &[&a.url(), &b.url()],
        r#""acceptProxy": true, "algorithm": "ip-hash", "healthCheckInterval": "1h","#,
    );
    let mut picks = std::collections::BTreeSet::new();
    for i in 1..=40 {
        let source = format!("198.51.100.{i}:1");
        let first = through(sluice.addr, &v1(&source, "198.51.100.1:80"), &get("/")).text();
        let again = through(sluice.addr, &v2(&source, "198.51.100.1:80"), &get("/")).text();
        assert_eq!(first, again, "{source} moved between backends");
        picks.insert(first);
    }
    assert_eq!(picks.len(), 2, "every source went to one backend: the peer was hashed, not the source");
}

#[test]
fn the_per_address_connection_limit_counts_the_header_source() {
    let backend = TestBackend::named("ok");
    let sluice = accepting(&backend, r#""limits": {"maxConnectionsPerClient": 1},"#);
    // Two connections from the same peer but different sources are both served.
    let mut one = sluice.connect();
    one.send(&v1("198.51.100.30:1", "198.51.100.1:80"));
    one.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(one.response().unwrap().status, 200);
    let r = through(sluice.addr, &v1("198.51.100.31:1", "198.51.100.1:80"), &get("/"));
    assert_eq!(r.status, 200);
    // A second connection from the first source while it is open is closed.
    assert_eq!(exchange_raw(sluice.addr, &[v1("198.51.100.30:2", "198.51.100.1:80"), get("/")].concat()), "");
}

#[test]
fn a_reload_can_turn_accept_proxy_on_for_new_connections() {
    let backend = forwarded_for_backend();
    let json = |accept: bool| {
        format!(r#"{{"listen": "127.0.0.1:0", "acceptProxy": {accept}, "servers": ["{}"]}}"#, backend.url())
    };
    let path = config_file("proxy-reload", &json(false));
    let sluice = Sluice::from_file(&path);
    assert_eq!(sluice.get("/").text(), "127.0.0.1");
    std::fs::write(&path, json(true)).unwrap();
    sluice.server().reload_from_file().unwrap();
    let r = through(sluice.addr, &v1("203.0.113.90:1", "198.51.100.1:80"), &get("/"));
    assert_eq!(r.text(), "203.0.113.90");
    assert_eq!(exchange_raw(sluice.addr, &get("/")), "", "a client without a header is now refused");
}

// ---- TLS after the header ----

fn self_signed(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

#[test]
fn the_header_comes_before_the_tls_handshake() {
    let dir = std::env::temp_dir().join(format!("sluice-proxy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed(&dir);
    let backend = forwarded_for_backend();
    let sluice = accepting(&backend, &format!(r#""tls": {{"cert": {cert:?}, "key": {key:?}}},"#));
    let tls = sluice::config::BackendTls { ca: None, verify: false };
    let config = sluice::tls::backend::client_config(&tls, &rustls::RootCertStore::empty(), "test", "tls").unwrap();
    for header in [v1("203.0.113.40:1", "198.51.100.1:443"), v2("203.0.113.40:1", "198.51.100.1:443")] {
        let mut socket = TcpStream::connect(sluice.addr).unwrap();
        socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        socket.write_all(&header).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::clone(&config), name).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, socket);
        stream.write_all(&get("/")).unwrap();
        let mut all = Vec::new();
        let _ = stream.read_to_end(&mut all);
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("203.0.113.40"), "{text}");
    }
    // A TLS hello without the header first is refused like any other.
    let mut socket = TcpStream::connect(sluice.addr).unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]).unwrap();
    let mut all = Vec::new();
    let _ = socket.read_to_end(&mut all);
    assert!(all.is_empty(), "{all:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- sendProxy: a raw backend that records the header each connection opens with ----

/// What one connection to a [`HeaderBackend`] opened with and carried.
#[derive(Debug, Clone, Default)]
struct SeenConnection {
    header: Vec<u8>,
    /// The request heads, or the bytes carried in tcp mode.
    requests: Vec<String>,
}

/// A backend that reads a PROXY header (v1 up to its LF, v2 by its length, with its own
/// reader, not sluice's) at the start of each connection, then answers HTTP requests with
/// `conn<n>` (or, with `echo`, echoes bytes back).
struct HeaderBackend {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<SeenConnection>>>,
}

impl HeaderBackend {
    fn start(echo: bool) -> HeaderBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<SeenConnection>>> = Arc::default();
        let seen = Arc::clone(&connections);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen = Arc::clone(&seen);
                thread::spawn(move || serve_with_header(stream, &seen, echo));
            }
        });
        HeaderBackend { addr, connections }
    }

    fn seen(&self) -> Vec<SeenConnection> {
        self.connections.lock().unwrap().clone()
    }

    /// The connections that carried something other than a health probe.
    fn traffic(&self) -> Vec<SeenConnection> {
        self.seen().into_iter().filter(|c| c.requests.iter().any(|r| !r.contains(PROBE_USER_AGENT))).collect()
    }
}

fn read_header(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = Vec::new();
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).ok()?;
    header.push(byte[0]);
    if byte[0] == b'P' {
        while header.last() != Some(&b'\n') && header.len() < 108 {
            stream.read_exact(&mut byte).ok()?;
            header.push(byte[0]);
        }
    } else {
        let mut fixed = [0u8; 15];
        stream.read_exact(&mut fixed).ok()?;
        header.extend_from_slice(&fixed);
        let mut block = vec![0u8; usize::from(u16::from_be_bytes([fixed[13], fixed[14]]))];
        stream.read_exact(&mut block).ok()?;
        header.extend_from_slice(&block);
    }
    Some(header)
}

fn serve_with_header(mut stream: TcpStream, seen: &Mutex<Vec<SeenConnection>>, echo: bool) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let Some(header) = read_header(&mut stream) else { return };
    let index = {
        let mut seen = seen.lock().unwrap();
        seen.push(SeenConnection { header, requests: Vec::new() });
        seen.len() - 1
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if echo {
            seen.lock().unwrap()[index].requests.push(String::from_utf8_lossy(&chunk[..n]).into_owned());
            let _ = stream.write_all(&chunk[..n]);
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            let head = String::from_utf8_lossy(&head).into_owned();
            let close = head.to_ascii_lowercase().contains("connection: close");
            seen.lock().unwrap()[index].requests.push(head);
            let body = format!("conn{index}");
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            if stream.write_all(answer.as_bytes()).is_err() || close {
                return;
            }
        }
    }
}

fn sending(backend: &HeaderBackend, version: &str, extra: &str) -> Sluice {
    let json = format!(
        r#"{{"listen": "127.0.0.1:0", {extra} "sendProxy": "{version}", "servers": ["http://{}"]}}"#,
        backend.addr
    );
    Sluice::from_json(&json)
}

/// A keep-alive request on `client`, answered.
fn get_on(client: &mut Client, path: &str) -> Response {
    client.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    client.response().unwrap()
}

#[test]
fn send_proxy_v1_opens_each_backend_connection_with_the_client_and_listener_addresses() {
    let backend = HeaderBackend::start(false);
    let sluice = sending(&backend, "v1", r#""healthCheckInterval": "1h","#);
    let mut client = Client::connect_from(Ipv4Addr::new(127, 0, 0, 2), sluice.addr);
    let local_port = client.stream.local_addr().unwrap().port();
    assert_eq!(get_on(&mut client, "/").status, 200);
    let traffic = backend.traffic();
    let expected = format!("PROXY TCP4 127.0.0.2 127.0.0.1 {local_port} {}\r\n", sluice.addr.port());
    assert_eq!(String::from_utf8_lossy(&traffic[0].header), expected);
}

#[test]
fn send_proxy_v2_names_the_source_of_the_clients_own_header() {
    let backend = HeaderBackend::start(false);
    let sluice = sending(&backend, "v2", r#""acceptProxy": true, "healthCheckInterval": "1h","#);
    let r = through(sluice.addr, &v2("203.0.113.50:7000", "198.51.100.1:80"), &get("/"));
    assert_eq!(r.status, 200);
    let header = backend.traffic()[0].header.clone();
    let mut expected = V2_SIGNATURE.to_vec();
    expected.extend_from_slice(&[0x21, 0x11, 0, 12, 203, 0, 113, 50, 127, 0, 0, 1]);
    expected.extend_from_slice(&7000u16.to_be_bytes());
    expected.extend_from_slice(&sluice.addr.port().to_be_bytes());
    assert_eq!(header, expected, "the destination is the listener's address, not the one in the client's header");
}

#[test]
fn a_backend_connection_opened_for_one_client_is_reused_only_for_that_client() {
    let backend = HeaderBackend::start(false);
    let sluice = sending(&backend, "v1", r#""acceptProxy": true, "healthCheckInterval": "1h","#);
    let idle = || sluice.server().runtime().state().pools[0].backends[0].idle_count();
    // Each answer is followed by its connection going back to the idle set: wait for that.
    let ask = |source: &str, idle_after: usize| {
        let text = through(sluice.addr, &v1(source, "198.51.100.1:80"), b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").text();
        assert!(wait_until(WAIT, || idle() == idle_after), "{} idle, expected {idle_after}", idle());
        text
    };
    let first = ask("198.51.100.60:1", 1);
    assert_eq!(ask("198.51.100.60:2", 1), first, "the same client address reuses its connection");
    let other = ask("198.51.100.61:1", 2);
    assert_ne!(other, first, "another client gets a connection of its own");
    assert_eq!(ask("198.51.100.60:3", 2), first);
    assert_eq!(ask("198.51.100.61:2", 2), other);
    let traffic = backend.traffic();
    assert_eq!(traffic.len(), 2, "{traffic:?}");
    assert!(String::from_utf8_lossy(&traffic[0].header).starts_with("PROXY TCP4 198.51.100.60 "));
    assert!(String::from_utf8_lossy(&traffic[1].header).starts_with("PROXY TCP4 198.51.100.61 "));
    assert_eq!(traffic[0].requests.len(), 3);
}

#[test]
fn health_probes_open_with_a_header_that_names_no_client() {
    for (version, expected) in [("v1", b"PROXY UNKNOWN\r\n".to_vec()), ("v2", v2_local())] {
        let backend = HeaderBackend::start(false);
        let sluice = sending(&backend, version, r#""healthCheckInterval": "100ms","#);
        let probed = || backend.seen().iter().any(|c| c.requests.iter().any(|r| r.contains(PROBE_USER_AGENT)));
        assert!(wait_until(WAIT, probed), "no probe arrived");
        let probe =
            backend.seen().into_iter().find(|c| c.requests.iter().any(|r| r.contains(PROBE_USER_AGENT))).unwrap();
        assert_eq!(probe.header, expected, "{version}");
        assert!(sluice.health(0) == sluice::health::Health::Up);
    }
}

#[test]
fn tcp_listeners_accept_and_send_the_header() {
    let backend = HeaderBackend::start(true);
    let json = format!(
        r#"{{"listeners": [{{"listen": "127.0.0.1:0", "mode": "tcp", "pool": "db", "acceptProxy": true}}],
            "pools": {{"db": {{"servers": ["tcp://{}"], "sendProxy": "v1", "healthCheckInterval": "100ms"}}}}}}"#,
        backend.addr
    );
    let sluice = Sluice::from_json(&json);
    let mut c = sluice.connect();
    c.send(&v2("[2001:db8::70]:7070", "[2001:db8::1]:5432"));
    c.send(b"ping");
    let mut echoed = [0u8; 4];
    c.stream.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping");
    // Health probes connect too (with `PROXY UNKNOWN`, carrying nothing): take the relayed one.
    let relayed = backend.seen().into_iter().find(|c| !c.requests.is_empty()).unwrap();
    let header = String::from_utf8_lossy(&relayed.header).into_owned();
    // The listener is IPv4, the client IPv6: both go as IPv6.
    assert_eq!(header, format!("PROXY TCP6 2001:db8::70 ::ffff:127.0.0.1 7070 {}\r\n", sluice.addr.port()));
    assert_eq!(exchange_raw(sluice.addr, b"ping"), "", "a tcp connection without a header is closed");
    // Connect probes open with a header naming no client, and carry nothing after it.
    let probed = || backend.seen().iter().any(|c| c.requests.is_empty() && c.header == b"PROXY UNKNOWN\r\n");
    assert!(wait_until(WAIT, probed), "{:?}", backend.seen());
}

#[test]
fn bad_send_proxy_values_exit_2_naming_the_file_and_key() {
    let path = config_file(
        "proxy-bad",
        r#"{"listeners": [{"listen": ":0", "pool": "web", "routes": [{"pool": "web"}]}], "pools": {"web": {"servers": ["http://127.0.0.1:1"], "sendProxy": "v3"}}}"#,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--config", path.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("config.json: pools.web.sendProxy: unknown PROXY protocol version \"v3\""), "{stderr}");
    let path =
        config_file("proxy-bad-accept", r#"{"listen": ":0", "acceptProxy": "yes", "servers": ["http://127.0.0.1:1"]}"#);
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--config", path.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("config.json: acceptProxy:"), "{stderr}");
}

#[test]
fn check_prints_the_keys_and_explain_lists_their_defaults() {
    let path = config_file(
        "proxy-check",
        r#"{"listen": "127.0.0.1:0", "acceptProxy": true, "sendProxy": "v2", "servers": ["http://127.0.0.1:1"]}"#,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--config", path.to_str().unwrap(), "--check", "--explain"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("acceptProxy: PROXY header required"), "{stdout}");
    assert!(stdout.contains("sendProxy v2"), "{stdout}");
    assert!(stdout.contains(r#""acceptProxy": true"#) && stdout.contains(r#""sendProxy": "v2""#), "{stdout}");
    let plain = config_file("proxy-check-plain", r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"]}"#);
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--config", plain.to_str().unwrap(), "--check", "--explain"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""acceptProxy": false"#), "the default is listed");
}

// ---- real HAProxy ----

/// HAProxy running a configuration in the foreground; killed when dropped.
struct Haproxy {
    child: Child,
    dir: PathBuf,
}

impl Haproxy {
    /// Starts HAProxy with `config` and waits until `port` accepts; `None` when it is missing.
    fn start(name: &str, config: &str, port: u16) -> Option<Haproxy> {
        if Command::new("haproxy").arg("-v").output().is_err() {
            skip("haproxy is not installed (Debian package haproxy)");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("sluice-haproxy-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let haproxy = Haproxy { child, dir };
        let listening = wait_until(WAIT, || TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(listening, "haproxy did not start listening on {port}\n{config}");
        Some(haproxy)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

const HAPROXY_DEFAULTS: &str =
    "global\n  maxconn 100\ndefaults\n  timeout connect 5s\n  timeout client 10s\n  timeout server 10s\n";

#[test]
fn haproxy_in_front_sending_v2_passes_the_client_address_through() {
    let backend = forwarded_for_backend();
    let sluice = accepting(&backend, "");
    let port = free_port();
    let config = format!(
        "{HAPROXY_DEFAULTS}frontend f\n  mode tcp\n  bind 127.0.0.1:{port}\n  default_backend b\n\
         backend b\n  mode tcp\n  option httpchk GET /haproxy-check\n\
         server s 127.0.0.1:{} send-proxy-v2 check inter 200ms\n",
        sluice.addr.port()
    );
    let Some(_haproxy) = Haproxy::start("front", &config, port) else { return };
    // HAProxy's own checks open with a v2 LOCAL header: sluice takes them, as its own client.
    let checked = || backend.requests().iter().any(|r| r.target == "/haproxy-check");
    assert!(wait_until(WAIT, checked), "no HAProxy check came through sluice");
    let check = backend.requests().into_iter().find(|r| r.target == "/haproxy-check").unwrap();
    assert_eq!(check.header("x-forwarded-for"), Some("127.0.0.1"), "a LOCAL header leaves the peer as the client");
    let front: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = Client::connect_from(Ipv4Addr::new(127, 0, 0, 5), front);
    client.send(&get("/"));
    let r = client.response().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "127.0.0.5"), "sluice's peer is HAProxy at 127.0.0.1");
}

#[test]
fn haproxy_behind_with_accept_proxy_answers_through_sluice() {
    let backend = TestBackend::start(|seen| Reply::ok(seen.header("x-seen-by-haproxy").unwrap_or("none")));
    let port = free_port();
    let config = format!(
        "{HAPROXY_DEFAULTS}frontend f\n  mode http\n  bind 127.0.0.1:{port} accept-proxy\n\
         http-request set-header X-Seen-By-Haproxy %[src]\n  default_backend b\n\
         backend b\n  mode http\n  server s {}\n",
        backend.addr
    );
    let Some(_haproxy) = Haproxy::start("behind", &config, port) else { return };
    let json = format!(
        r#"{{"listen": "127.0.0.1:0", "sendProxy": "v2", "healthCheckInterval": "200ms", "servers": ["http://127.0.0.1:{port}"]}}"#
    );
    let sluice = Sluice::from_json(&json);
    let mut client = Client::connect_from(Ipv4Addr::new(127, 0, 0, 6), sluice.addr);
    client.send(&get("/"));
    let r = client.response().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "127.0.0.6"), "HAProxy read the client from sluice's header");
    // Probes (v2 LOCAL) are accepted too: the backend stays up across several of them.
    assert!(wait_until(WAIT, || backend.probe_count() >= 2), "HAProxy did not pass sluice's probes on");
    assert_eq!(sluice.health(0), sluice::health::Health::Up);
}
