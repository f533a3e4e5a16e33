//! The running balancer: listeners ([`Listeners`], one acceptor thread each), the fixed
//! worker pool, the health thread, the DNS discovery thread, the alerts thread, the ACME
//! renewal thread, the admin threads, the ticker (see [`ticker`]), reload (see [`reload`]),
//! and graceful stop.
//!
//! Listening sockets are bound at start, or taken from the process that started this one
//! ([`Inherited`]: systemd's socket activation, or the sluice this one replaces). An acceptor
//! counts each connection against `limits.maxConnections` (over it: a fast 503 and a close,
//! never a silent queue) and queues it for the workers. Stopping (and handing over to a new
//! process) sets the runtime's flag, stops the acceptors and closes the listening sockets,
//! then waits up to `timeouts.drain` while connections finish: each one's next response says
//! `Connection: close`, and one that stays quiet is closed.

use crate::acme::renewal;
use crate::config::{Config, ConfigError};
use crate::connection;
use crate::edge::Edge;
use crate::health;
use crate::http::error::canned_response;
use crate::inherited::{InheritError, Inherited, Role};
use crate::listeners::{Accept, Listeners};
use crate::ops::admin::{self, AdminThreads};
use crate::ops::alerts::Alerts;
use crate::ops::discovery::Discovery;
use crate::ops::host_alerts::{self, HostWatch};
use crate::ops::log_summary;
use crate::ops::membership;
use crate::ops::reload::{self, ReloadError, ReloadSummary};
use crate::ops::ticker::{self, Chore};
use crate::ops::upgrade::{self, Executable, Successor, UpgradeError};
use crate::runtime::{Runtime, State};
use crate::tls::TlsSet;
use crate::waiting_room;
use log::warn;
use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub struct Server {
    runtime: Arc<Runtime>,
    /// The health thread and the ticker.
    threads: Vec<JoinHandle<()>>,
    waiting_room: Option<JoinHandle<()>>,
    admin: Option<AdminThreads>,
    /// `admin.listen` as configured at start (a reload does not move the admin API).
    admin_listen: Option<SocketAddr>,
    /// With a server started by an upgrade: where to tell the old process it serves.
    ready: Option<UnixStream>,
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
    /// The sockets handed to this process cannot be used; a configuration problem (exit 2).
    Inherited(InheritError),
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
            StartError::Inherited(e) => write!(f, "{e}"),
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
            StartError::Inherited(e) => Some(e),
            StartError::Bind { source, .. } | StartError::Thread(source) | StartError::AccessLog { source, .. } => {
                Some(source)
            }
        }
    }
}

impl Server {
    /// Binds every listener and starts the threads.
    pub fn start(config: Config) -> Result<Server, StartError> {
        Server::start_with(config, Inherited::default())
    }

    /// Starts with the sockets in `inherited` for the listeners (and admin API) they match
    /// by address, binding the others.
    pub fn start_with(config: Config, mut inherited: Inherited) -> Result<Server, StartError> {
        let tls = TlsSet::load(&config, &Arc::default()).map_err(StartError::Config)?;
        let listeners = Listeners::default();
        let addrs: Vec<SocketAddr> = config.listeners.iter().map(|l| l.addr).collect();
        let plan = listeners
            .plan(&addrs, |addr| take_or_bind(&mut inherited, Role::Listener, addr))
            .map_err(|e| StartError::Bind { addr: e.addr, source: e.source })?;
        let admin_listener = match &config.admin {
            Some(a) => Some(
                take_or_bind(&mut inherited, Role::Admin, a.listen)
                    .map_err(|source| StartError::Bind { addr: a.listen, source })?,
            ),
            None => None,
        };
        let ready = inherited.finish().map_err(StartError::Inherited)?;
        let access_log = config.access_log.clone();
        let admin_listen = config.admin.as_ref().map(|a| a.listen);
        let alerts = Alerts::start(&config.alerts).map_err(StartError::Thread)?;
        let (discovery, found) = Discovery::first_round(&config, &alerts);
        let state = State::first(config, tls, found, plan.local_addrs());
        let runtime = Arc::new(Runtime::new(state, alerts, listeners).map_err(StartError::Thread)?);
        runtime
            .reopen_access_log(&access_log)
            .map_err(|source| StartError::AccessLog { path: access_log.path.clone().unwrap_or_default(), source })?;
        runtime.listeners.set_accept(acceptor(&runtime));
        runtime.listeners.commit(plan);
        let mut threads = vec![health::spawn(Arc::clone(&runtime)).map_err(StartError::Thread)?];
        // Not joined on stop: an order may wait on the authority for a while; the thread
        // notices the stop at its next pause and ends by itself.
        renewal::spawn(Arc::clone(&runtime)).map_err(StartError::Thread)?;
        let waiting_room = waiting_room::spawn(Arc::clone(&runtime.waiting_room)).map_err(StartError::Thread)?;
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
        Ok(Server { runtime, threads, waiting_room: Some(waiting_room), admin, admin_listen, ready })
    }

    /// For a server an upgrade started: the channel on which to tell the old process that
    /// this one serves (see [`crate::ops::upgrade`]); `None` otherwise, or once taken.
    pub fn take_ready_channel(&mut self) -> Option<UnixStream> {
        self.ready.take()
    }

    /// Starts `exe` as the process that takes over, with the listening sockets (and the
    /// admin API's) handed over; see [`upgrade`].
    pub fn start_successor(&self, exe: &Executable) -> Result<Successor, UpgradeError> {
        let admin = self.admin.as_ref().zip(self.admin_listen).map(|(a, listen)| (a.descriptor(), Role::Admin, listen));
        self.runtime.listeners.with_descriptors(|listeners| {
            let mut sockets: Vec<_> = listeners.iter().map(|&(fd, addr)| (fd, Role::Listener, addr)).collect();
            sockets.extend(admin);
            upgrade::start(exe, &sockets)
        })
    }

    /// Where the admin API listens, when it is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// The bound addresses, in the order of the configuration's listeners.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.runtime.state().bound.clone()
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

    /// Switches to `config` (see [`reload::reload`]): new listeners bind, removed ones stop
    /// accepting and drain, the others keep their sockets and serve the new settings;
    /// backends that stay keep their health, counters and idle connections; new ones join
    /// after their first passing probe; changes made through the admin API are kept. On error
    /// the running configuration stays.
    pub fn reload(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        reload::reload(&self.runtime, config)
    }

    /// Reads the configuration file again and switches to it, as SIGHUP does.
    pub fn reload_from_file(&self) -> Result<ReloadSummary, ReloadError> {
        reload::reload_from_file(&self.runtime)
    }

    /// Stops accepting, closes idle connections, and waits up to `timeouts.drain` for
    /// in-flight exchanges. Returns true when every connection finished in time.
    pub fn stop(mut self) -> bool {
        let drain = self.runtime.state().config.timeouts.drain;
        self.runtime.begin_stop();
        self.runtime.listeners.stop_all();
        if let Some(admin) = self.admin.take() {
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
        self.runtime.waiting_room.stop();
        self.runtime.fair_share.close_waiting();
        for thread in self.threads.drain(..).chain(self.waiting_room.take()) {
            let _ = thread.join();
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
/// summarised warnings ([`log_summary`]), take out removed backends whose last exchange
/// ended ([`membership`]) and answer requests that waited too long for their address's share
/// of the workers ([`crate::fair_share`]).
fn operations_chores(runtime: &Arc<Runtime>) -> Vec<Chore> {
    let flushing = Arc::clone(runtime);
    let watching = Arc::clone(runtime);
    let removing = Arc::clone(runtime);
    let sharing = Arc::clone(runtime);
    let mut watch = HostWatch::default();
    vec![
        Box::new(move || flushing.access_log.flush()),
        Box::new(move || host_alerts::check(&watching, &mut watch)),
        Box::new(log_summary::flush_all),
        Box::new(move || membership::finish_removals(&removing)),
        Box::new(move || {
            for waiter in sharing.fair_share.take_expired(Instant::now()) {
                waiter.give_up();
            }
        }),
    ]
}

/// The socket `inherited` holds for `addr`, or a new one bound to it.
fn take_or_bind(inherited: &mut Inherited, role: Role, addr: SocketAddr) -> io::Result<TcpListener> {
    match inherited.take(role, addr) {
        Some(socket) => Ok(socket),
        None => TcpListener::bind(addr),
    }
}

/// What every acceptor does with a connection: count it against the connection limits and
/// queue it for the workers. Holds the runtime weakly (the runtime holds the acceptors).
fn acceptor(runtime: &Arc<Runtime>) -> Accept {
    let runtime: Weak<Runtime> = Arc::downgrade(runtime);
    Arc::new(move |stream, peer, local| {
        let Some(runtime) = runtime.upgrade() else { return };
        let state = runtime.state();
        // Behind acceptProxy the per-client limit applies to the header's source instead.
        let per_client = state.listener_at(local).is_none_or(|i| !state.config.listeners[i].accept_proxy);
        let counted = runtime.try_count_connection(peer.ip(), &state.config.limits, per_client);
        drop(state);
        if let Err(limit) = counted {
            log_summary::CONNECTION_REFUSED
                .warn(format_args!("{peer}: {limit} reached; refusing new connections with 503"));
            reject(stream);
            return;
        }
        connection::accept(&runtime, stream, peer, local);
    })
}

/// Answers a connection over the limit with 503 and closes it, without waiting on it.
fn reject(stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let response = canned_response(503, "too many connections", &[("Retry-After", "1")], true);
    let _ = (&stream).write_all(&response);
}
