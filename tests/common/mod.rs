//! Helpers for integration tests: real backends on 127.0.0.1:0 that record what they saw,
//! sluice running in-process on port 0, raw-socket clients, and `wait_until`.
//!
//! Every socket here has a read timeout, so a bug costs a few seconds, never a hung test.
//! Helpers more than one test file needs live here, once.
#![allow(dead_code)]

use sluice::backend::BackendStats;
use sluice::health::Health;
use sluice::{Config, Server};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a peer that should close a connection may take to do it.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// The `User-Agent` of sluice's health probes.
pub const PROBE_USER_AGENT: &str = "sluice-health-check";

/// Whether `seen` is one of sluice's health probes (they name themselves in `User-Agent`).
/// Test backends record probes apart, but their handlers answer them too.
pub fn is_probe(seen: &Seen) -> bool {
    seen.header("user-agent") == Some(PROBE_USER_AGENT)
}

/// What a test backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// 0 or 1, for HTTP/1.0 and HTTP/1.1.
    pub version: u8,
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// The head exactly as it arrived.
    pub raw_head: Vec<u8>,
    /// Which of this backend's connections carried it, counting from 0.
    pub connection: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count()
    }
}

/// What a test backend does with a request.
pub enum Reply {
    /// A normal response with a Content-Length body and these extra headers.
    Text { status: u16, headers: Vec<(String, String)>, body: Vec<u8> },
    /// Exactly these bytes; the connection stays open for more requests.
    Raw(Vec<u8>),
    /// Exactly these bytes, then close the connection.
    RawThenClose(Vec<u8>),
    /// Close the connection without answering.
    Close,
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply::Text { status: 200, headers: Vec::new(), body: body.as_bytes().to_vec() }
    }

    pub fn status(status: u16, body: &str) -> Reply {
        Reply::Text { status, headers: Vec::new(), body: body.as_bytes().to_vec() }
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A real HTTP/1.1 backend on 127.0.0.1:0. It records every request, answers with its
/// handler, supports keep-alive and chunked request bodies, and stops when dropped.
///
/// sluice's health probes (User-Agent `sluice-health-check`) are answered by the handler too,
/// but recorded apart in `probes`, and their connections are not counted in `connections`.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub probes: Arc<Mutex<Vec<Seen>>>,
    /// Connections that carried at least one request other than a probe.
    pub connections: Arc<AtomicUsize>,
    /// Those of `connections` that have ended (either side closed).
    pub closed: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
}

/// Where a backend connection records what it sees.
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    probes: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
}

impl TestBackend {
    /// A backend that answers every request `200` with body `name`.
    pub fn named(name: &str) -> TestBackend {
        let name = name.to_string();
        TestBackend::start(move |_| Reply::ok(&name))
    }

    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test backend");
        TestBackend::serve(listener, handler)
    }

    /// A backend answering on `listener`, already bound (to another loopback address, say).
    pub fn serve(listener: TcpListener, handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> TestBackend {
        let addr = listener.local_addr().unwrap();
        let backend = TestBackend {
            addr,
            seen: Arc::new(Mutex::new(Vec::new())),
            probes: Arc::new(Mutex::new(Vec::new())),
            connections: Arc::new(AtomicUsize::new(0)),
            closed: Arc::new(AtomicUsize::new(0)),
            stopping: Arc::new(AtomicBool::new(false)),
        };
        let handler: Arc<Handler> = Arc::new(handler);
        let recorder = Arc::new(Recorder {
            seen: backend.seen.clone(),
            probes: backend.probes.clone(),
            connections: backend.connections.clone(),
            closed: backend.closed.clone(),
            stopping: backend.stopping.clone(),
        });
        thread::spawn(move || {
            for stream in listener.incoming() {
                if recorder.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (recorder, handler) = (recorder.clone(), handler.clone());
                thread::spawn(move || serve_backend_connection(stream, &recorder, &*handler));
            }
        });
        backend
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn probe_count(&self) -> usize {
        self.probes.lock().unwrap().len()
    }

    pub fn request_count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// How many of the connections counted in `connection_count` have ended.
    pub fn closed_count(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// A backend that answers every request but a health probe with exactly `raw` (and keeps the
/// connection open); probes get an empty `200`.
pub fn raw_backend(raw: &'static [u8]) -> TestBackend {
    TestBackend::start(move |seen| if is_probe(seen) { Reply::ok("") } else { Reply::Raw(raw.to_vec()) })
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn serve_backend_connection(mut stream: TcpStream, recorder: &Recorder, handler: &Handler) {
    let mut id = None;
    serve_requests(&mut stream, recorder, handler, &mut id);
    drop(stream);
    if id.is_some() {
        recorder.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// Answers requests on `stream` until either side closes it; `id` is set to the connection's
/// number once it carries a request other than a probe.
fn serve_requests(stream: &mut TcpStream, recorder: &Recorder, handler: &Handler, id: &mut Option<usize>) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    loop {
        let Some((mut request, rest)) = read_request(stream, std::mem::take(&mut buf)) else { return };
        buf = rest;
        if recorder.stopping.load(Ordering::SeqCst) {
            return;
        }
        if is_probe(&request) {
            recorder.probes.lock().unwrap().push(request.clone());
        } else {
            let id = *id.get_or_insert_with(|| recorder.connections.fetch_add(1, Ordering::SeqCst));
            request.connection = id;
            recorder.seen.lock().unwrap().push(request.clone());
        }
        let close = request.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let written = match handler(&request) {
            Reply::Text { status, headers, body } => {
                let mut out = format!("HTTP/1.1 {status} Test\r\nContent-Length: {}\r\n", body.len());
                for (n, v) in headers {
                    out += &format!("{n}: {v}\r\n");
                }
                out += "\r\n";
                let mut bytes = out.into_bytes();
                if request.method != "HEAD" {
                    bytes.extend(body);
                }
                stream.write_all(&bytes)
            }
            Reply::Raw(bytes) => stream.write_all(&bytes),
            Reply::RawThenClose(bytes) => {
                let _ = stream.write_all(&bytes);
                return;
            }
            Reply::Close => return,
        };
        if written.is_err() || close {
            return;
        }
    }
}

/// Reads one request (head and body) with its own parser, independent of sluice's.
fn read_request(stream: &mut TcpStream, mut buf: Vec<u8>) -> Option<(Seen, Vec<u8>)> {
    let head_len = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, &mut buf)?;
    };
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&buf[..head_len]).ok()?;
    let mut seen = Seen {
        method: req.method?.to_string(),
        target: req.path?.to_string(),
        version: req.version?,
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
            .collect(),
        body: Vec::new(),
        raw_head: buf[..head_len].to_vec(),
        connection: 0,
    };
    buf.drain(..head_len);
    if seen.header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf, b"\r\n") {
                    break i;
                }
                read_more(stream, &mut buf)?;
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            if size == 0 {
                while find(&buf, b"\r\n").is_none() {
                    read_more(stream, &mut buf)?;
                }
                let end = find(&buf, b"\r\n")?;
                buf.drain(..end + 2);
                break;
            }
            while buf.len() < size + 2 {
                read_more(stream, &mut buf)?;
            }
            seen.body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    } else if let Some(len) = seen.header("content-length") {
        let len: usize = len.parse().ok()?;
        while buf.len() < len {
            read_more(stream, &mut buf)?;
        }
        seen.body = buf.drain(..len).collect();
    }
    Some((seen, buf))
}

fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 65536];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// sluice running in this process on 127.0.0.1:0; stops when dropped.
pub struct Sluice {
    pub addr: SocketAddr,
    pub server: Option<Server>,
}

impl Sluice {
    /// Starts sluice with `extra` JSON keys (a fragment like `"workers": 4,` or empty) in
    /// front of `backends`.
    pub fn start(backends: &[&str], extra: &str) -> Sluice {
        let servers: Vec<String> = backends.iter().map(|b| format!("{b:?}")).collect();
        let json = format!(r#"{{"listen": "127.0.0.1:0", {extra} "servers": [{}]}}"#, servers.join(", "));
        Sluice::from_json(&json)
    }

    pub fn from_json(json: &str) -> Sluice {
        let config = Config::from_json(json, "test.json").unwrap_or_else(|e| panic!("bad test config: {e}\n{json}"));
        Sluice::from_config(config)
    }

    /// Starts sluice from a configuration file, so that a reload can read it again.
    pub fn from_file(path: &Path) -> Sluice {
        let config = Config::load(path).unwrap_or_else(|e| panic!("bad test config: {e}"));
        Sluice::from_config(config)
    }

    fn from_config(config: Config) -> Sluice {
        let server = Server::start(config).expect("start sluice");
        Sluice { addr: server.local_addrs()[0], server: Some(server) }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    /// The counters of the first pool's backend number `index`.
    pub fn backend_stats(&self, index: usize) -> BackendStats {
        self.server().runtime().state().pools[0].backends[index].stats()
    }

    /// The health of the first pool's backend number `index`.
    pub fn health(&self, index: usize) -> Health {
        self.server().runtime().state().pools[0].backends[index].health()
    }

    /// The admin API's `GET /stats`, parsed; the admin API must be configured.
    pub fn admin_stats(&self) -> serde_json::Value {
        let admin = self.server().admin_addr().expect("the admin API is configured");
        admin_stats(admin)
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends one `GET path` with `Connection: close` on a new connection.
    pub fn get(&self, path: &str) -> Response {
        let mut c = self.connect();
        c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes());
        c.response().unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The head exactly as it arrived.
    pub raw_head: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection with a read timeout, reading responses with its own parser.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).expect("connect to sluice"))
    }

    /// A client on a stream the test connected itself (from another source address, say).
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Client { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to sluice");
    }

    /// Reads one response to a request that was not HEAD.
    pub fn response(&mut self) -> Result<Response, String> {
        self.read_response(false)
    }

    /// Reads one response; `head_request` says it answers a HEAD, so it has no body.
    pub fn read_response(&mut self, head_request: bool) -> Result<Response, String> {
        let head_len = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&self.buf[..head_len]).map_err(|e| format!("bad response head: {e}: {:?}", self.text()))?;
        let mut response = Response {
            status: resp.code.unwrap_or(0),
            headers: resp
                .headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                .collect(),
            body: Vec::new(),
            raw_head: String::from_utf8_lossy(&self.buf[..head_len]).into_owned(),
        };
        self.buf.drain(..head_len);
        let no_body = head_request || response.status < 200 || response.status == 204 || response.status == 304;
        if no_body {
            return Ok(response);
        }
        if response.header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            response.body = self.read_chunked()?;
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().map_err(|_| "bad content-length")?;
            while self.buf.len() < len {
                self.fill()?;
            }
            response.body = self.buf.drain(..len).collect();
        } else {
            while self.fill().is_ok() {}
            response.body = std::mem::take(&mut self.buf);
        }
        Ok(response)
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill()?;
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
            let size = usize::from_str_radix(line.trim(), 16).map_err(|_| format!("bad chunk size line {line:?}"))?;
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                self.fill()?;
            }
            if size == 0 {
                if &self.buf[..2] != b"\r\n" {
                    return Err("trailers in test response".into());
                }
                self.buf.drain(..2);
                return Ok(body);
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }

    fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(format!("connection closed; unread: {:?}", self.text())),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(format!("read failed: {e}; unread: {:?}", self.text())),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// True when the peer closes within `CLOSE_WITHIN` (any bytes before the end are dropped);
    /// false when the connection is still open then.
    pub fn is_closed(&mut self) -> bool {
        self.try_read_to_close().is_ok()
    }

    /// Everything until the peer closes, as text. Panics, showing what arrived, unless the peer
    /// closes within `CLOSE_WITHIN`: a read that times out is a connection left open.
    pub fn read_to_close(&mut self) -> String {
        self.try_read_to_close().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Everything until the peer closes, or an error saying what arrived if it has not closed
    /// within `CLOSE_WITHIN`.
    pub fn try_read_to_close(&mut self) -> Result<String, String> {
        let mut all = std::mem::take(&mut self.buf);
        let closed = read_until_closed(&mut self.stream, &mut all, CLOSE_WITHIN);
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let text = String::from_utf8_lossy(&all).into_owned();
        match closed {
            Ok(()) => Ok(text),
            Err(e) => Err(format!("the connection was still open after {CLOSE_WITHIN:?} ({e}); got {text:?}")),
        }
    }
}

/// Appends to `all` everything `stream` sends until the peer closes it (end of file or a
/// reset); fails if that takes longer than `within`.
pub fn read_until_closed(stream: &mut TcpStream, all: &mut Vec<u8>, within: Duration) -> io::Result<()> {
    let deadline = Instant::now() + within;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

impl Client {
    /// A client connected to `addr` from the loopback address `from` (such as 127.0.0.2), so
    /// that sluice sees another client address than 127.0.0.1.
    pub fn connect_from(from: std::net::Ipv4Addr, addr: SocketAddr) -> Client {
        Client::from_stream(connect_from(from, addr))
    }
}

/// A TCP connection to `to` bound to the local address `from` first (std cannot bind a
/// connecting socket).
fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    let local = SocketAddr::new(from.into(), 0);
    socket.bind(&local.into()).unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket.connect(&to.into()).unwrap_or_else(|e| panic!("connect {to} from {from}: {e}"));
    TcpStream::from(socket)
}

/// Sends `bytes` on a new connection and returns everything sluice sends back until it
/// closes the connection; panics if it does not close it within `CLOSE_WITHIN`.
pub fn exchange_raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut c = Client::connect(addr);
    c.send(bytes);
    c.read_to_close()
}

/// One `method target` request to an admin API on a new connection, with `Authorization:
/// Bearer token` when a token is given.
pub fn admin_call(admin: SocketAddr, method: &str, target: &str, token: Option<&str>, body: &str) -> Response {
    let mut c = Client::connect(admin);
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    c.send(request.as_bytes());
    c.response().unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// A response body parsed as JSON; panics showing the response when it is not.
pub fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", r.raw_head, r.text()))
}

/// `GET /stats` from the admin API at `admin`, checked to be `200` and parsed.
pub fn admin_stats(admin: SocketAddr) -> serde_json::Value {
    let r = admin_call(admin, "GET", "/stats", None, "");
    assert_eq!(r.status, 200, "{}{}", r.raw_head, r.text());
    json(&r)
}

/// Writes `json` to `config.json` in a fresh directory named after the test process and
/// `name`, and returns its path.
pub fn config_file(name: &str, json: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, json).unwrap();
    path
}

/// Sends signal `name` (`TERM`, `HUP`, ...) to `child` with kill(1).
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} {} failed", child.id());
}

/// Waits for `child` to exit and returns its exit code; kills it after `timeout` and returns
/// `None`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let exited = wait_until(timeout, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    child.wait().unwrap().code()
}

/// Whether tests that need a program from outside (Chromium, PostgreSQL) must run rather than
/// skip: set by `SLUICE_REQUIRE_EXTERNAL=1`, as `.ci/run` does.
pub fn external_tools_required() -> bool {
    std::env::var("SLUICE_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1")
}

/// Called by a test that cannot run here because `why`: prints that it is skipped, or fails
/// the test when `SLUICE_REQUIRE_EXTERNAL=1`. The test returns after it.
pub fn skip(why: &str) {
    if external_tools_required() {
        panic!("cannot run: {why}; SLUICE_REQUIRE_EXTERNAL=1 makes that a failure, not a skip");
    }
    eprintln!("skipped: {why} (with SLUICE_REQUIRE_EXTERNAL=1 this fails)");
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// An address nothing listens on, different from every one handed out before in this test
/// process (the kernel may give a just-closed port again).
pub fn closed_port_url() -> String {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if !handed_out.contains(&addr.port()) {
            handed_out.push(addr.port());
            return format!("http://{addr}");
        }
    }
}
