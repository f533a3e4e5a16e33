//! Helpers for integration tests: real backends on 127.0.0.1:0 that record what they saw,
//! sluice running in-process on port 0, raw-socket clients, and `wait_until`.
//!
//! Every socket here has a read timeout, so a bug costs a few seconds, never a hung test.
#![allow(dead_code)]

use sluice::{Config, Server};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

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
    stopping: Arc<AtomicBool>,
}

/// Where a backend connection records what it sees.
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    probes: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
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
        let addr = listener.local_addr().unwrap();
        let backend = TestBackend {
            addr,
            seen: Arc::new(Mutex::new(Vec::new())),
            probes: Arc::new(Mutex::new(Vec::new())),
            connections: Arc::new(AtomicUsize::new(0)),
            stopping: Arc::new(AtomicBool::new(false)),
        };
        let handler: Arc<Handler> = Arc::new(handler);
        let recorder = Arc::new(Recorder {
            seen: backend.seen.clone(),
            probes: backend.probes.clone(),
            connections: backend.connections.clone(),
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
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn serve_backend_connection(mut stream: TcpStream, recorder: &Recorder, handler: &Handler) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    let mut id = None;
    loop {
        let Some((mut request, rest)) = read_request(&mut stream, std::mem::take(&mut buf)) else { return };
        buf = rest;
        if recorder.stopping.load(Ordering::SeqCst) {
            return;
        }
        if request.header("user-agent") == Some("sluice-health-check") {
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
        let server = Server::start(config).expect("start sluice");
        Sluice { addr: server.local_addrs()[0], server: Some(server) }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
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
        let stream = TcpStream::connect(addr).expect("connect to sluice");
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

    /// True when the peer has closed: a read returns end of file (after any buffered bytes).
    pub fn is_closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    /// Everything until the peer closes (or the read timeout), as text.
    pub fn read_to_close(&mut self) -> String {
        let mut all = std::mem::take(&mut self.buf);
        let _ = self.stream.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    }
}

impl Client {
    /// A client connected to `addr` from the loopback address `from` (such as 127.0.0.2), so
    /// that sluice sees another client address than 127.0.0.1.
    pub fn connect_from(from: std::net::Ipv4Addr, addr: SocketAddr) -> Client {
        let stream = connect_from(from, addr);
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Client { stream, buf: Vec::new() }
    }
}

/// A TCP connection to `to` bound to the local IPv4 address `from` first; std cannot bind
/// a connecting socket, so this goes through libc.
fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else { panic!("connect_from speaks IPv4 only, not {to}") };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let (local, remote) = (sockaddr(from, 0), sockaddr(*to.ip(), to.port()));
    // SAFETY: `socket` returns a new descriptor that the TcpStream takes ownership of at
    // once; `bind` and `connect` are given valid sockaddr_in values that outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let bound = libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len);
        assert_eq!(bound, 0, "bind {from}: {}", io::Error::last_os_error());
        let connected = libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len);
        assert_eq!(connected, 0, "connect {to} from {from}: {}", io::Error::last_os_error());
        stream
    }
}

/// Sends `bytes` on a new connection and returns everything sluice sends back until it
/// closes the connection.
pub fn exchange_raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut c = Client::connect(addr);
    c.send(bytes);
    c.read_to_close()
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
