//! One client connection on a worker: read a request head, hand it to `proxy`, record the
//! exchange (metrics and the access-log line), and go round again while the connection stays
//! persistent. This is the one place every exchange ends, so it is where they are counted.
//!
//! Client timeouts live here: the first head must start within `timeouts.clientHeader`,
//! later ones within `timeouts.keepAlive`, and every head must be complete within
//! `timeouts.clientHeader` of its first byte.

use crate::access_log::Entry;
use crate::http::error::HttpError;
use crate::http::head::{read_request_head, HeadError, HeadWait, RequestHead};
use crate::http::stream::BufferedStream;
use crate::metrics::Finished;
use crate::proxy::{self, Client, Context, Outcome};
use crate::runtime::{Runtime, State};
use log::debug;
use std::net::{SocketAddr, TcpStream};
use std::time::{Instant, SystemTime};

/// Serves `stream`, accepted on listener number `listener`, until it closes.
pub fn serve(runtime: &Runtime, listener: usize, stream: TcpStream, peer: SocketAddr) {
    let handle = match prepare(runtime, &stream) {
        Ok(handle) => handle,
        Err(e) => {
            debug!("{peer}: cannot set up the connection: {e}");
            runtime.uncount_connection();
            return;
        }
    };
    let ticket = runtime.register_client(handle);
    let capacity = runtime.state().config.limits.max_header_bytes;
    let mut client = Client::new(BufferedStream::new(stream, capacity), peer);
    let mut first = true;
    loop {
        let state = runtime.state();
        let config = &state.config;
        if !first && !ticket.enter_idle() {
            break;
        }
        let wait = HeadWait {
            first_byte: if first { config.timeouts.client_header } else { config.timeouts.keep_alive },
            whole: Some(config.timeouts.client_header),
        };
        let received_before = client.stream.received();
        let head = read_request_head(&mut client.stream, config.limits.max_header_bytes, wait);
        ticket.leave_idle();
        let started = Instant::now();
        let mut head = match head {
            Ok(head) => head,
            Err(e) => {
                if let Some(error) = refusal_for(e, first, peer) {
                    let outcome = proxy::refuse(&mut client, error);
                    let received = client.stream.received() - received_before;
                    record_exchange(
                        runtime,
                        &state,
                        client.peer,
                        Ended { head: None, outcome: &outcome, started, received },
                    );
                }
                break;
            }
        };
        let ctx = Context { runtime, state: &state, listener: &config.listeners[listener] };
        let outcome = proxy::exchange(&ctx, &mut client, &mut head);
        let received = client.stream.received() - received_before;
        record_exchange(
            runtime,
            &state,
            client.peer,
            Ended { head: Some(&head), outcome: &outcome, started, received },
        );
        if !outcome.keep_alive {
            break;
        }
        first = false;
    }
}

/// Sets the socket options every client connection gets, and returns a second handle for
/// the registry.
fn prepare(runtime: &Runtime, stream: &TcpStream) -> std::io::Result<TcpStream> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(runtime.state().config.timeouts.client))?;
    stream.try_clone()
}

/// The answer to a head that could not be read, if it deserves one.
fn refusal_for(error: HeadError, first: bool, peer: SocketAddr) -> Option<HttpError> {
    match error {
        HeadError::Closed => None,
        HeadError::TimedOut { partial } if partial || first => Some(HttpError::HeaderTimeout),
        HeadError::TimedOut { .. } => None,
        HeadError::TooLarge => Some(HttpError::HeadTooLarge),
        HeadError::Malformed(why) => Some(HttpError::BadRequest(why)),
        HeadError::UnsupportedVersion => Some(HttpError::VersionNotSupported),
        HeadError::Truncated | HeadError::Io(_) => {
            debug!("{peer}: connection closed inside a request head: {error:?}");
            None
        }
    }
}

/// One exchange as it ended.
struct Ended<'a> {
    /// `None` when no head could be read.
    head: Option<&'a RequestHead>,
    outcome: &'a Outcome,
    /// When its head had been read.
    started: Instant,
    /// Bytes read from the client for it: the head and any body.
    received: u64,
}

/// Counts a finished exchange against its backend (or against sluice's own answers) and
/// writes its access-log line.
fn record_exchange(runtime: &Runtime, state: &State, peer: SocketAddr, ended: Ended) {
    let Ended { head, outcome, started, received } = ended;
    let duration = started.elapsed();
    let finished =
        Finished { status: outcome.status, duration, bytes_received: received, bytes_sent: outcome.body_bytes };
    match &outcome.backend {
        Some(backend) => backend.metrics.exchanges.record(&finished),
        None => runtime.metrics.own_answers.record(&finished),
    }
    let entry = Entry {
        time: SystemTime::now(),
        client: peer,
        head,
        status: outcome.status,
        bytes: outcome.body_bytes,
        backend: outcome.backend.as_ref().map(|b| b.url()),
        duration,
    };
    runtime.access_log.write(&state.config.access_log, &entry);
}
