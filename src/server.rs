//! The running balancer: listeners, one acceptor thread each, the fixed worker pool, the
//! health thread, the DNS discovery thread, the alerts thread, the ACME renewal thread, the admin
//! threads, the ticker (see [`ticker`]), reload
//! (see [`reload`]), and graceful stop.
//!
//! An acceptor blocks in `accept()`, counts the connection against `limits.maxConnections`
//! (over it: a fast 503 and a close, never a silent queue) and queues it for the workers.
//! Stopping sets the runtime's flag, closes idle client connections, and wakes each acceptor
//! with a connection to itself; the listeners close as their acceptors return.

use crate::acme::renewal;
use crate::config::{Config, ConfigError};
use crate::connection;
use crate::edge::Edge;
use crate::health;
use crate::http::error::canned_response;
use crate::net;
use crate::ops::admin::{self, AdminThreads};
use crate::ops::alerts::Alerts;
use crate::ops::discovery::Discovery;
use crate::ops::host_alerts::{self, HostWatch};
use crate::ops::log_summary;
use crate::ops::membership;
use crate::ops::reload::{self, ReloadError, ReloadSummary};
use crate::ops::ticker::{self, Chore};
use crate::runtime::{Runtime, State};
use crate::tls::TlsSet;
use crate::waiting_room;
use log::{info, warn};
use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub struct Server {
    runtime: Arc<Runtime>,
    addrs: Vec<SocketAddr>,
    /// The acceptors, the health thread, the waiting room and the ticker.
    threads: Vec<JoinHandle<()>>,
    admin: Option<AdminThreads>,
}

#[derive(Debug)]
pub enum StartError {
    /// A file the configuration names (a certificate, a key) cannot be used.
    Config(ConfigError),
    Bind {
        addr: SocketAddr,
        source: io::Error,
    },
    Thread(io::Error),
    AccessLog {
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            StartError::Thread(e) => write!(f, "cannot start a thread: {e}"),
            StartError::AccessLog { path, source } => {
                write!(f, "cannot open the access log {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Config(e) => Some(e),
            StartError::Bind { source, .. } | StartError::Thread(source) | StartError::AccessLog { source, .. } => {
                Some(source)
            }
        }
    }
}

impl Server {
    /// Binds every listener and starts the threads.
    pub fn start(config: Config) -> Result<Server, StartError> {
        let tls = TlsSet::load(&config, &Arc::default()).map_err(StartError::Config)?;
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let listener = TcpListener::bind(l.addr).map_err(|source| StartError::Bind { addr: l.addr, source })?;
            listeners.push(listener);
        }
        let admin_listener = match &config.admin {
            Some(a) => Some(TcpListener::bind(a.listen).map_err(|source| StartError::Bind { addr: a.listen, source })?),
            None => None,
        };
        let access_log = config.access_log.clone();
        let alerts = Alerts::start(&config.alerts).map_err(StartError::Thread)?;
        let (discovery, found) = Discovery::first_round(&config, &alerts);
        let runtime = Arc::new(Runtime::new(State::first(config, tls, found), alerts).map_err(StartError::Thread)?);
        runtime
            .reopen_access_log(&access_log)
            .map_err(|source| StartError::AccessLog { path: access_log.path.clone().unwrap_or_default(), source })?;
        let mut addrs = Vec::new();
        let mut threads = Vec::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            let addr = listener.local_addr().map_err(StartError::Thread)?;
            info!("listening on {addr}");
            addrs.push(addr);
            let runtime = Arc::clone(&runtime);
            let acceptor = thread::Builder::new()
                .name(format!("sluice-accept-{addr}"))
                .spawn(move || accept_loop(&runtime, index, &listener))
                .map_err(StartError::Thread)?;
            threads.push(acceptor);
        }
        threads.push(health::spawn(Arc::clone(&runtime)).map_err(StartError::Thread)?);
        // Not joined on stop: an order may wait on the authority for a while; the thread
        // notices the stop at its next pause and ends by itself.
        renewal::spawn(Arc::clone(&runtime)).map_err(StartError::Thread)?;
        threads.push(waiting_room::spawn(Arc::clone(&runtime.waiting_room)).map_err(StartError::Thread)?);
        threads.push(discovery.spawn(Arc::clone(&runtime)).map_err(StartError::Thread)?);
        let mut chores = operations_chores(&runtime);
        let admin = match admin_listener {
            Some(listener) => {
                let (admin, chore) = admin::start(Arc::clone(&runtime), listener).map_err(StartError::Thread)?;
                chores.push(chore);
                Some(admin)
            }
            None => None,
        };
        threads.push(ticker::spawn(Arc::clone(&runtime), chores).map_err(StartError::Thread)?);
        Ok(Server { runtime, addrs, threads, admin })
    }

    /// Where the admin API listens, when it is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// The bound addresses, in the order of the configuration's listeners.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The edge controls at work on route `route` of listener `listener` (counting from 0),
    /// when it has any: its refusal counts and the size of its rate-limit table.
    pub fn route_edge(&self, listener: usize, route: usize) -> Option<Arc<Edge>> {
        let state = self.runtime.state();
        state.config.listeners.get(listener)?.routes.get(route)?.edge.clone()
    }

    /// Switches to `config` (see [`reload::reload`]): listeners cannot change without a
    /// restart; backends that stay keep their health, counters and idle connections; new ones
    /// join after their first passing probe; changes made through the admin API are kept. On
    /// error the running configuration stays.
    pub fn reload(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        reload::reload(&self.runtime, config)
    }

    /// Reads the configuration file again and switches to it, as SIGHUP does.
    pub fn reload_from_file(&self) -> Result<ReloadSummary, ReloadError> {
        reload::reload_from_file(&self.runtime)
    }

    /// Stops accepting, closes idle connections, and waits up to `timeouts.drain` for
    /// in-flight exchanges. Returns true when every connection finished in time.
    pub fn stop(self) -> bool {
        let drain = self.runtime.state().config.timeouts.drain;
        self.runtime.begin_stop();
        for addr in &self.addrs {
            net::wake_listener(*addr);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        if let Some(admin) = self.admin {
            admin.join();
        }
        let deadline = Instant::now() + drain;
        while self.runtime.open_connections() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let drained = self.runtime.open_connections() == 0;
        if !drained {
            warn!("{} connections still open after {drain:?}; closing anyway", self.runtime.open_connections());
        }
        if drained {
            self.runtime.workers.join();
        }
        self.runtime.access_log.flush();
        drained
    }
}

/// What the ticker does every second whatever is configured: empty the access log's buffer
/// into its file, check the host thresholds ([`host_alerts`]), write the counts of
/// summarised warnings ([`log_summary`]) and take out removed backends whose last exchange
/// ended ([`membership`]).
fn operations_chores(runtime: &Arc<Runtime>) -> Vec<Chore> {
    let flushing = Arc::clone(runtime);
    let watching = Arc::clone(runtime);
    let removing = Arc::clone(runtime);
    let mut watch = HostWatch::default();
    vec![
        Box::new(move || flushing.access_log.flush()),
        Box::new(move || host_alerts::check(&watching, &mut watch)),
        Box::new(log_summary::flush_all),
        Box::new(move || membership::finish_removals(&removing)),
    ]
}

fn accept_loop(runtime: &Arc<Runtime>, listener_index: usize, listener: &TcpListener) {
    net::accept_each(
        listener,
        || runtime.is_stopping(),
        |stream, peer| {
            let state = runtime.state();
            let per_client = !state.config.listeners[listener_index].accept_proxy;
            let counted = runtime.try_count_connection(peer.ip(), &state.config.limits, per_client);
            drop(state);
            if let Err(limit) = counted {
                log_summary::CONNECTION_REFUSED
                    .warn(format_args!("{peer}: {limit} reached; refusing new connections with 503"));
                reject(stream);
                return;
            }
            connection::accept(runtime, stream, peer, listener_index);
        },
    );
}

/// Answers a connection over the limit with 503 and closes it, without waiting on it.
fn reject(stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let response = canned_response(503, "too many connections", &[("Retry-After", "1")], true);
    let _ = (&stream).write_all(&response);
}
