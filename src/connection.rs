//! One client connection on a worker: read a request head, hand it to `proxy` (or, on a
//! redirect listener, to `redirect`), log the exchange, and go round again while the
//! connection stays persistent. Connections on tcp listeners go to `tcp` instead.
//!
//! Client timeouts live here: the first head must start within `timeouts.clientHeader`,
//! later ones within `timeouts.keepAlive`, and every head must be complete within
//! `timeouts.clientHeader` of its first byte.

use crate::config::ListenerMode;
use crate::http::error::HttpError;
use crate::http::head::{read_request_head, HeadError, HeadWait, RequestHead};
use crate::http::stream::BufferedStream;
use crate::proxy::{self, Client, Context, Outcome};
use crate::runtime::Runtime;
use crate::{redirect, tcp};
use log::{debug, info, log_enabled};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

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
    let state = runtime.state();
    if state.config.listeners[listener].mode == ListenerMode::Tcp {
        tcp::serve(&state, &state.config.listeners[listener], &stream, peer);
        return;
    }
    drop(state);
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
        let head = read_request_head(&mut client.stream, config.limits.max_header_bytes, wait);
        ticket.leave_idle();
        let started = Instant::now();
        let mut head = match head {
            Ok(head) => head,
            Err(e) => {
                if let Some(error) = refusal_for(e, first, peer) {
                    let outcome = proxy::refuse(&mut client, error);
                    log_exchange(peer, None, &outcome, started);
                }
                break;
            }
        };
        let ctx = Context { runtime, state: &state, listener: &config.listeners[listener] };
        let outcome = match ctx.listener.mode {
            ListenerMode::Redirect => redirect::answer(&ctx, &mut client, &mut head),
            ListenerMode::Http | ListenerMode::Tcp => proxy::exchange(&ctx, &mut client, &mut head),
        };
        log_exchange(peer, Some(&head), &outcome, started);
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

/// One access-log line: client, request line, status, body bytes, backend, duration.
fn log_exchange(peer: SocketAddr, head: Option<&RequestHead>, outcome: &Outcome, started: Instant) {
    if !log_enabled!(target: "sluice::access", log::Level::Info) {
        return;
    }
    let request = match head {
        Some(h) => format!("{} {} {}", h.method, h.target, h.version.as_str()),
        None => "-".to_string(),
    };
    let backend = outcome.backend.as_ref().map_or("-", |b| b.url());
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    info!(target: "sluice::access", "{peer} \"{request}\" {} {} {backend} {millis:.1}ms", outcome.status, outcome.body_bytes);
}
