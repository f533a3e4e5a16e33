//! The admin API: its own listener (loopback unless configured otherwise) and thread, which
//! hands each connection to a short-lived thread of its own (`sluice-admin-conn`, at most
//! [`MAX_ADMIN_CONNECTIONS`] at once; beyond that a 503 and a close), so a slow admin client
//! never holds up another; and a chore for sluice's ticker (`ops::ticker`) that samples
//! recent rates once a second (removals finish on the ticker whatever is configured: see
//! `ops::membership`).
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the status page (`page`) |
//! | `GET /stats` | JSON (`stats`) |
//! | `GET /metrics` | Prometheus text (`prometheus`) |
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
use crate::net::{self, StopBell};
use crate::ops::reload::reload_from_file;
use crate::ops::ticker::Chore;
use crate::runtime::Runtime;
use log::{debug, info, warn};
use rates::Windows;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// Admin connections served at once; more are answered 503 at once.
pub const MAX_ADMIN_CONNECTIONS: usize = 16;

/// Stack of a connection thread: a request of at most a few KiB and its response.
const CONNECTION_STACK_BYTES: usize = 256 * 1024;

/// What the admin threads share.
struct Admin {
    runtime: Arc<Runtime>,
    /// Written by the ticker, read by the handler.
    windows: Windows,
    /// Connections being served; counted in by the listener, out by each connection thread
    /// as it ends (through [`ConnectionSlot`]).
    connections: AtomicUsize,
}

/// One admin connection counted as served until dropped.
struct ConnectionSlot(Arc<Admin>);

impl ConnectionSlot {
    /// Counts a connection in, unless [`MAX_ADMIN_CONNECTIONS`] are already served.
    fn take(admin: &Arc<Admin>) -> Option<ConnectionSlot> {
        let below_cap = |n: usize| (n < MAX_ADMIN_CONNECTIONS).then_some(n + 1);
        admin.connections.fetch_update(Ordering::SeqCst, Ordering::SeqCst, below_cap).ok()?;
        Some(ConnectionSlot(Arc::clone(admin)))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The running admin threads.
pub struct AdminThreads {
    pub addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
    /// Ends the admin accept loop.
    bell: StopBell,
    socket: Arc<TcpListener>,
}

impl AdminThreads {
    /// The listening socket's descriptor, for an upgrade to hand over.
    pub fn descriptor(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Stops accepting admin connections and waits for the admin thread.
    pub fn join(self) {
        self.bell.ring();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Starts the admin thread on `listener`; returns it and the chore the ticker runs for the
/// admin API each second (finishing removals, sampling request rates).
pub fn start(runtime: Arc<Runtime>, listener: TcpListener) -> io::Result<(AdminThreads, Chore)> {
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        warn!("the admin API listens on {addr}, beyond this machine: keep admin.token secret");
    }
    info!("admin API on http://{addr}/");
    let admin = Arc::new(Admin { runtime, windows: Windows::default(), connections: AtomicUsize::new(0) });
    admin.windows.sample(&admin.runtime.state(), Instant::now());
    let serving = Arc::clone(&admin);
    let (bell, heard) = StopBell::new()?;
    let socket = Arc::new(listener);
    let listener = Arc::clone(&socket);
    let listening =
        thread::Builder::new().name("sluice-admin".into()).spawn(move || serve(&serving, &listener, &heard))?;
    let chore: Chore = Box::new(move || tick(&admin));
    Ok((AdminThreads { addr, threads: vec![listening], bell, socket }, chore))
}

fn serve(admin: &Arc<Admin>, listener: &TcpListener, stop: &UnixStream) {
    net::accept_each(listener, stop, |stream, _| match ConnectionSlot::take(admin) {
        Some(slot) => spawn_connection(slot, stream),
        None => refuse_busy(&stream),
    });
}

/// Serves `stream` on a thread of its own, which holds `slot` until it ends.
fn spawn_connection(slot: ConnectionSlot, stream: TcpStream) {
    let refusal = stream.try_clone();
    let spawned =
        thread::Builder::new().name("sluice-admin-conn".into()).stack_size(CONNECTION_STACK_BYTES).spawn(move || {
            if let Err(e) = handle(&slot.0, stream) {
                debug!("admin: connection failed: {e}");
            }
        });
    if let Err(e) = spawned {
        warn!("admin: cannot start a connection thread: {e}");
        if let Ok(stream) = refusal {
            refuse_busy(&stream);
        }
    }
}

/// Answers 503 at once and closes: too many admin connections are being served.
fn refuse_busy(stream: &TcpStream) {
    debug!("admin: {MAX_ADMIN_CONNECTIONS} connections already served; refusing one");
    let busy = Response::error(503, "too many admin connections at once; try again").with_header("Retry-After", "1");
    if stream.set_write_timeout(Some(IO_TIMEOUT)).is_ok() {
        let _ = write_response(stream, &busy, false);
    }
}

/// Once a second: samples rates.
fn tick(admin: &Admin) {
    admin.windows.sample(&admin.runtime.state(), Instant::now());
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
    // The reload logs its own outcome.
    match reload_from_file(runtime) {
        Ok(summary) => Response::json(
            200,
            &serde_json::json!({
                "reloaded": source,
                "backends": {"kept": summary.kept, "changed": summary.changed, "added": summary.added, "removed": summary.removed},
                "listeners": {"added": addrs(&summary.listeners_added), "removed": addrs(&summary.listeners_removed)},
            }),
        ),
        Err(e) => Response::error(500, &format!("reload refused, keeping the running configuration: {e}")),
    }
}

fn addrs(list: &[SocketAddr]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

fn not_allowed(allow: &str) -> Response {
    Response::error(405, "method not allowed here").with_header("Allow", allow)
}
