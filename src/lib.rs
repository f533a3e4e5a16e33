//! sluice: an HTTP and TCP load balancer on std networking, a fixed worker pool and httparse.
//!
//! # The tour of one request
//!
//! The root of `src/` is the request path, read top to bottom here; [`config`] reads the
//! file and [`ops`] holds what runs beside the request path. No two modules import each
//! other: lower layers know nothing of higher ones.
//!
//! 1. [`server`]: an acceptor thread per listening socket ([`listeners`], bound at start or
//!    [`inherited`] from systemd or an upgrade) waits in `accept()` ([`net`]), counts the
//!    connection against `limits.maxConnections`, and queues it for the worker pool. On a TLS listener
//!    the socket is wrapped in a [`transport::Transport`], whose handshake runs on the first
//!    reads like the bytes of a head ([`tls`] holds the certificates).
//! 2. [`connection`]: a worker loops over the connection's requests, reading each head with
//!    [`http::head`] under the client timeouts; idle connections wait in the
//!    [`waiting_room`] while workers are scarce. Heads and buffers are refilled in storage
//!    each worker keeps ([`worker_buffers`]), so once warm the request path does not allocate
//!    (`tests/allocations.rs`; `scripts/profile.sh` measures it). [`exchange`] holds what
//!    every exchange shares: the client connection and its lent buffers, the outcome,
//!    sluice's own answers and the keep-alive rule. A small body is read whole before a
//!    backend is picked ([`small_body`]), and each exchange holds one of its client
//!    address's shares of the workers ([`fair_share`]); bodies and responses keep a minimum
//!    rate ([`pace`]).
//! 3. [`proxy`]: one exchange. It checks the head ([`http::request`]), decides the body's
//!    framing ([`http::framing`]), routes to a [`pool`] by host and path ([`routing`]), where
//!    the route's [`edge`] controls may refuse it (`403`, `429`, `401`) before anything else
//!    happens; otherwise the pool's [`balance`] algorithm picks a [`backend`] (or a sticky
//!    cookie names one, [`http::cookie`]); when every backend is at its connection limit the
//!    request waits in the pool's [`queue`]. The backend hands over an idle keep-alive
//!    connection or opens one. With `"explain": true`, [`explain`] records why the pick went
//!    where it went, and the response carries it as `X-Sluice-Decision`.
//! 4. Still in [`proxy`]: the request head is rewritten ([`http::headers`], then the route's
//!    header rules) and sent with its body streamed through fixed buffers ([`http::body`]);
//!    the response head comes back, and the response is relayed the same way. A clean backend
//!    connection goes back to the idle set. A backend's `101` to an upgrade request turns the
//!    exchange into a two-way byte [`tunnel`]. A failure becomes a
//!    [`backend_error::BackendError`], which knows the client's status and whether a retry is
//!    safe.
//! 5. Back in [`connection`]: the exchange ends in [`ops::ended`] (metrics and the
//!    access-log line), and the loop reads the next request or closes.
//!
//! Other listener modes branch off early: on a tcp listener, [`connection`] hands the whole
//! connection to [`tcp`], which picks a backend and runs a [`tunnel`]; on a redirect
//! listener, each request goes to [`redirect`], which answers `307` to a picked backend.
//!
//! Beside the request path: [`health`] probes backends on a timer and takes them out when
//! real traffic fails; [`runtime`] holds the state every thread shares; [`config`] turns the
//! JSON file into validated settings; [`demo`] runs the demo backends for `--demo`; [`ops`]
//! has the admin API, metrics, the access log, alerts, runtime changes and reload;
//! [`simulate`] drives the pools' picking code without sockets for `sluice simulate`;
//! [`check`] and [`capacity`] print the effective configuration and the capacity estimate
//! for `--check --explain`.

#![deny(unsafe_code)]

pub mod acme;
pub mod backend;
pub mod backend_error;
pub mod balance;
pub mod capacity;
pub mod check;
pub mod config;
pub mod connection;
pub mod demo;
pub mod edge;
pub mod exchange;
pub mod explain;
pub mod fair_share;
pub mod health;
pub mod http;
pub mod inherited;
pub mod listeners;
pub mod net;
pub mod ops;
pub mod pace;
pub mod pool;
pub mod proxy;
pub mod proxy_protocol;
pub mod queue;
pub mod redirect;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod simulate;
pub mod small_body;
pub mod sys;
pub mod tcp;
pub mod tls;
pub mod transport;
pub mod tunnel;
pub mod waiting_room;
pub mod worker_buffers;
pub mod zero_copy;

pub use config::{Config, ConfigError};
pub use ops::reload::{ReloadError, ReloadSummary};
pub use server::{Server, StartError};

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering the data if another thread panicked while holding it: every
/// value sluice keeps under a mutex stays valid between statements.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
