//! The PROXY protocol header that opens every connection on a listener with `acceptProxy`:
//! read on a worker before anything else (before TLS, which comes after it), its source made
//! the connection's client, and the connection closed without an answer when the header is
//! missing, malformed or not complete within `timeouts.clientHeader` of the accept.
//!
//! A header that trickles in parks the connection in the waiting room between its bytes, as a
//! slow request head does, so it holds no worker. Only the header's own bytes are taken from
//! the socket: each read first peeks (without waiting when bytes are there), and [`proxy_protocol::parse`] says where the header ends,
//! so whatever follows (a request, a TLS hello, a tcp client's bytes) stays for its reader.

use super::{ClientConn, ASK_AGAIN_EVERY};
use crate::config::Config;
use crate::ops::log_summary;
use crate::proxy_protocol::{self, HeaderError, MAX_HEADER_BYTES};
use crate::runtime::Runtime;
use crate::sys;
use log::debug;
use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

/// A connection's header while it is being read.
pub(super) struct HeaderWait {
    /// When the header must be complete: `timeouts.clientHeader` after the accept.
    pub deadline: Instant,
    /// The header's bytes taken from the socket so far.
    got: Vec<u8>,
}

/// The header a connection just accepted by listener `listener` must open with, if any.
pub(super) fn due(config: &Config, listener: usize) -> Option<HeaderWait> {
    let accept_proxy = config.listeners.get(listener).is_some_and(|l| l.accept_proxy);
    let deadline = Instant::now() + config.timeouts.client_header;
    accept_proxy.then(|| HeaderWait { deadline, got: Vec::new() })
}

/// Why a connection is closed before its header was read.
enum Refusal {
    Header(HeaderError),
    TimedOut,
    Closed,
    Io(io::Error),
}

/// Reads the header `conn` must open with, if it is still due: returns the connection (with
/// the header's source as its client), or `None` when it was parked to wait for more bytes or
/// closed. `readable` says bytes are known to be waiting; reading the header uses that up.
pub(super) fn receive(runtime: &Arc<Runtime>, mut conn: ClientConn, readable: &mut bool) -> Option<ClientConn> {
    let Some(mut wait) = conn.between.proxy.take() else { return Some(conn) };
    let mut readable = std::mem::take(readable);
    let mut may_block = || std::mem::take(&mut readable) || !runtime.should_park();
    let read = read_header(conn.stream.socket(), &mut wait, &mut may_block);
    let peer = conn.peer;
    let header = match read {
        Ok(Some(header)) => header,
        Ok(None) => {
            let deadline = wait.deadline;
            conn.between.proxy = Some(wait);
            runtime.waiting_room.park(Box::new(conn), deadline);
            return None;
        }
        Err(Refusal::Header(e)) => {
            runtime.metrics.proxy_headers.record_malformed();
            log_summary::PROXY_HEADER_REFUSED.warn(format_args!("{peer}: closed: {e}"));
            return None;
        }
        Err(Refusal::TimedOut) => {
            runtime.metrics.proxy_headers.record_timed_out();
            debug!("{peer}: PROXY header not received in time; closed");
            return None;
        }
        Err(Refusal::Closed) => return None,
        Err(Refusal::Io(e)) => {
            debug!("{peer}: reading the PROXY header failed: {e}");
            return None;
        }
    };
    let Some(addresses) = header.addresses else {
        debug!("{peer}: PROXY {} header without a client address; the peer stays the client", header.version.name());
        return Some(conn);
    };
    let client = addresses.source;
    let limit = runtime.state().config.limits.max_connections_per_client;
    if let Err(limit) = conn.between.ticket.change_client(client.ip(), limit) {
        log_summary::CONNECTION_REFUSED.warn(format_args!("{client} (through {peer}): {limit} reached; closed"));
        return None;
    }
    debug!("{peer}: PROXY {} header: client {client}", header.version.name());
    conn.peer = client;
    conn.between.peer = client;
    Some(conn)
}

/// Whether `conn`, expired in the waiting room, was still waiting for its header (it then
/// closes without an answer).
pub(super) fn expired_waiting_for_header(conn: &ClientConn) -> bool {
    if conn.between.proxy.is_some() {
        conn.between.ticket.runtime().metrics.proxy_headers.record_timed_out();
        debug!("{}: PROXY header not received in time; closed", conn.peer);
    }
    conn.between.proxy.is_some()
}

/// Takes the header's bytes from `socket` as they arrive: `Ok(None)` when it should wait off
/// the worker for more (`may_block` said no).
fn read_header(
    socket: &TcpStream,
    wait: &mut HeaderWait,
    may_block: &mut dyn FnMut() -> bool,
) -> Result<Option<proxy_protocol::Header>, Refusal> {
    let mut buf = [0u8; MAX_HEADER_BYTES];
    loop {
        if Instant::now() >= wait.deadline {
            return Err(Refusal::TimedOut);
        }
        let have = wait.got.len();
        buf[..have].copy_from_slice(&wait.got);
        let n = match peek(socket, &mut buf[have..], wait.deadline, may_block)? {
            Some(0) => return Err(Refusal::Closed),
            Some(n) => n,
            None => return Ok(None),
        };
        match proxy_protocol::parse(&buf[..have + n]) {
            Ok(Some(header)) => {
                take(socket, &mut buf[have..header.length])?;
                return Ok(Some(header));
            }
            Ok(None) => {
                take(socket, &mut buf[have..have + n])?;
                wait.got.extend_from_slice(&buf[have..have + n]);
            }
            Err(e) => return Err(Refusal::Header(e)),
        }
    }
}

/// Copies the bytes waiting on `socket` into `into` without taking them: at once when some
/// are there (one system call, the usual case), else waiting for them until `deadline`, in
/// steps after which `may_block` may say to park instead (`None`).
fn peek(
    socket: &TcpStream,
    into: &mut [u8],
    deadline: Instant,
    may_block: &mut dyn FnMut() -> bool,
) -> Result<Option<usize>, Refusal> {
    loop {
        let peeked = match sys::peek_into_now(socket, into) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Refusal::TimedOut);
                }
                let _ = socket.set_read_timeout(Some((deadline - now).min(ASK_AGAIN_EVERY)));
                socket.peek(into)
            }
            other => other,
        };
        match peeked {
            Ok(n) => return Ok(Some(n)),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if !may_block() {
                    return Ok(None);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Refusal::Io(e)),
        }
    }
}

/// Reads exactly `into.len()` bytes that a peek has shown are waiting.
fn take(mut socket: &TcpStream, into: &mut [u8]) -> Result<(), Refusal> {
    socket.read_exact(into).map_err(Refusal::Io)
}
