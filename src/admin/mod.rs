//! The admin API: its own listener (loopback unless configured otherwise) and thread, serving
//! one small request at a time, and a ticker thread that samples recent rates and finishes
//! removals once a second.
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the status page ([`page`]) |
//! | `GET /stats` | JSON ([`stats`]) |
//! | `GET /metrics` | Prometheus text ([`prometheus`]) |
//! | `POST /servers` | add a backend (201; 409 present; 400 invalid) |
//! | `POST /servers/drain?url=` | no new exchanges, stays listed (200; 404 unknown) |
//! | `POST /servers/undrain?url=` | takes new exchanges again |
//! | `DELETE /servers?url=` | drain, then remove when idle (200 removed, 202 pending) |
//! | `POST /reload` | re-read the configuration file |
//!
//! Changes need `Authorization: Bearer <admin.token>` (403 with no token configured, 401 for
//! a missing or wrong one). Started and stopped by `server`; shares the runtime.

mod http;
mod page;
mod prometheus;
mod rates;
mod servers;
mod snapshot;
mod stats;

use self::http::{authorize, read_request, write_response, Request, Response, IO_TIMEOUT};
use crate::runtime::Runtime;
use crate::server::reload_from_file;
use log::{debug, info, warn};
use rates::Windows;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often the ticker samples rates and looks for finished removals.
const TICK: Duration = Duration::from_secs(1);

/// Pause after `accept()` fails, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the admin threads share.
struct Admin {
    runtime: Arc<Runtime>,
    /// Written by the ticker, read by the handler.
    windows: Windows,
}

/// The running admin threads.
pub struct AdminThreads {
    pub addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl AdminThreads {
    /// Waits for both threads after the runtime began stopping, waking the listener first.
    pub fn join(self) {
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Starts the admin threads on `listener`.
pub fn start(runtime: Arc<Runtime>, listener: TcpListener) -> io::Result<AdminThreads> {
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        warn!("the admin API listens on {addr}, beyond this machine: keep admin.token secret");
    }
    info!("admin API on http://{addr}/");
    let admin = Arc::new(Admin { runtime, windows: Windows::default() });
    admin.windows.sample(&admin.runtime.state(), Instant::now());
    let serving = Arc::clone(&admin);
    let listening = thread::Builder::new().name("sluice-admin".into()).spawn(move || serve(&serving, &listener))?;
    let ticking = thread::Builder::new().name("sluice-admin-tick".into()).spawn(move || tick(&admin))?;
    Ok(AdminThreads { addr, threads: vec![listening, ticking] })
}

fn serve(admin: &Admin, listener: &TcpListener) {
    for stream in listener.incoming() {
        if admin.runtime.is_stopping() {
            return;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: pause rather than spin.
                debug!("admin: accept failed: {e}");
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        if let Err(e) = handle(admin, stream) {
            debug!("admin: connection failed: {e}");
        }
    }
}

fn tick(admin: &Admin) {
    while !admin.runtime.sleep_unless_stopping(TICK) {
        servers::finish_removals(&admin.runtime);
        admin.windows.sample(&admin.runtime.state(), Instant::now());
    }
}

/// Answers one connection: one request, one response, close.
fn handle(admin: &Admin, stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let out = stream.try_clone()?;
    let (response, head_only) = match read_request(stream) {
        Ok(request) => (route(admin, &request), request.head.method == "HEAD"),
        Err(Some(response)) => (response, false),
        Err(None) => return Ok(()),
    };
    write_response(&out, &response, head_only)
}

fn route(admin: &Admin, request: &Request) -> Response {
    let method = request.head.method.as_str();
    let read = matches!(method, "GET" | "HEAD");
    let runtime = &admin.runtime;
    match (request.path.as_str(), method) {
        ("/", _) if read => {
            let html = page::render(&snapshot::take(runtime, &admin.windows));
            Response::text(200, "text/html; charset=utf-8", html)
        }
        ("/stats", _) if read => Response::json(200, &stats::render(&snapshot::take(runtime, &admin.windows))),
        ("/metrics", _) if read => {
            let text = prometheus::render(&snapshot::take(runtime, &admin.windows));
            Response::text(200, prometheus::CONTENT_TYPE, text)
        }
        ("/servers", "POST") => changing(admin, request, servers::add),
        ("/servers", "DELETE") => changing(admin, request, servers::remove),
        ("/servers/drain", "POST") => changing(admin, request, servers::drain),
        ("/servers/undrain", "POST") => changing(admin, request, servers::undrain),
        ("/reload", "POST") => changing(admin, request, reload),
        ("/" | "/stats" | "/metrics", _) => not_allowed("GET, HEAD"),
        ("/servers", _) => not_allowed("POST, DELETE"),
        ("/servers/drain" | "/servers/undrain" | "/reload", _) => not_allowed("POST"),
        _ => Response::error(404, "no such admin endpoint (try /, /stats or /metrics)"),
    }
}

/// Runs a changing request once its token checks out.
fn changing(admin: &Admin, request: &Request, change: fn(&Runtime, &Request) -> Response) -> Response {
    let token = admin.runtime.state().config.admin.as_ref().and_then(|a| a.token.clone());
    if let Err(refused) = authorize(token.as_deref(), &request.head) {
        debug!("admin: refused {} {}: {}", request.head.method, request.path, refused.status);
        return refused;
    }
    change(&admin.runtime, request)
}

fn reload(runtime: &Runtime, _request: &Request) -> Response {
    let source = runtime.state().config.source.clone();
    match reload_from_file(runtime) {
        Ok(()) => {
            info!("admin: reloaded {source}");
            Response::json(200, &serde_json::json!({ "reloaded": source }))
        }
        Err(e) => {
            log::error!("admin: reload refused, keeping the running configuration: {e}");
            Response::error(500, &format!("reload refused, keeping the running configuration: {e}"))
        }
    }
}

fn not_allowed(allow: &str) -> Response {
    Response::error(405, "method not allowed here").with_header("Allow", allow)
}
