//! Response bodies relayed without passing through sluice's memory, as HAProxy's
//! `splice-response` does: `splice(2)` moves the pages the backend socket received into a
//! pipe and from the pipe into the client socket, so a 1 MiB answer costs no copy into user
//! space and none back.
//!
//! It applies to a body of known length (at least [`MIN_SPLICE_BYTES`] after what the head's
//! read already holds) or one that ends when the backend closes, between two plain TCP
//! sockets. TLS on either side must see the bytes, and a chunked body is decoded and written
//! out again, so those take the buffered path in [`crate::http::body`]. The client side is
//! held to the same minimum rate and stall limit as a buffered write ([`PacedWrite`]), the
//! backend side to its read timeout.
//!
//! Each relay makes its own pipe and closes it at the end (four system calls against the
//! dozens that move a large body), so no worker holds descriptors between exchanges and a
//! relay that fails leaves nothing behind in a pipe.

use crate::backend::is_open;
use crate::exchange::PacedWrite;
use crate::http::body::RelayError;
use crate::http::framing::BodyFraming;
use crate::http::stream::{write_both, BufferedStream};
use crate::ops::metrics::Metrics;
use crate::sys::SplicePipe;
use crate::transport::BackendTransport;
use std::io;

/// A spliced body's length, and whether the backend connection is clean after it.
pub struct Spliced {
    pub length: u64,
    /// Nothing followed the body on the backend socket (bytes past a declared length would
    /// be read as the next response's start, so such a connection is not reused).
    pub backend_clean: bool,
}

/// Bodies shorter than this (past the bytes already read) are copied: for them a splice saves
/// less than its extra system calls cost.
pub const MIN_SPLICE_BYTES: u64 = 64 * 1024;

/// Relays the body framed as `framing` from `up` to the client by splicing, after the head
/// waiting in `pending`, and returns its length and whether the backend connection is clean. `None` when splicing does not apply (or no
/// pipe could be made): nothing has been written, and the caller relays through buffers.
/// The bytes moved by splice are counted in `metrics`.
pub fn relay(
    up: &mut BufferedStream<BackendTransport>,
    framing: BodyFraming,
    to_client: &mut PacedWrite,
    pending: &mut Vec<u8>,
    metrics: &Metrics,
) -> Option<Result<Spliced, RelayError>> {
    if !to_client.can_splice() || up.get_ref().is_tls() {
        return None;
    }
    let length = match framing {
        BodyFraming::Length(n) if n.saturating_sub(up.buffered().len() as u64) >= MIN_SPLICE_BYTES => Some(n),
        BodyFraming::UntilClose => None,
        _ => return None,
    };
    let pipe = SplicePipe::new().ok()?;
    let relayed = relay_through(&pipe, up, length, to_client, pending, metrics)
        .map(|total| Spliced { length: total, backend_clean: length.is_some() && is_open(up.get_ref().socket()) });
    Some(relayed)
}

/// Writes the head and the body bytes already read, then moves the rest through `pipe`:
/// `length` bytes in all, or until the backend closes when it is `None`.
fn relay_through(
    pipe: &SplicePipe,
    up: &mut BufferedStream<BackendTransport>,
    length: Option<u64>,
    to_client: &mut PacedWrite,
    pending: &mut Vec<u8>,
    metrics: &Metrics,
) -> Result<u64, RelayError> {
    let mut left = length.unwrap_or(u64::MAX);
    let early = up.buffered().len().min(usize::try_from(left).unwrap_or(usize::MAX));
    write_both(&mut *to_client, pending, &up.buffered()[..early]).map_err(RelayError::Write)?;
    pending.clear();
    up.consume(early);
    left -= early as u64;
    let mut total = early as u64;
    while left > 0 {
        let wanted = pipe.capacity().min(usize::try_from(left).unwrap_or(usize::MAX));
        let held = fill_pipe(pipe, up, wanted)?;
        if held == 0 {
            return if length.is_none() { Ok(total) } else { Err(RelayError::Truncated) };
        }
        left -= held as u64;
        total += held as u64;
        drain_pipe(pipe, to_client, held, left > 0)?;
        metrics.record_spliced(held);
    }
    Ok(total)
}

/// Moves up to `wanted` bytes from the backend into the empty pipe, waiting for them under
/// the backend's read timeout.
fn fill_pipe(pipe: &SplicePipe, up: &mut BufferedStream<BackendTransport>, wanted: usize) -> Result<usize, RelayError> {
    loop {
        up.prepare_read().map_err(RelayError::Read)?;
        match pipe.fill_from(up.get_ref().socket(), wanted) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(RelayError::Read(e)),
        }
    }
}

/// Moves the `held` bytes in the pipe on to the client; `more`: the body goes on after them.
fn drain_pipe(pipe: &SplicePipe, to_client: &mut PacedWrite, mut held: usize, more: bool) -> Result<(), RelayError> {
    while held > 0 {
        match to_client.splice_from(pipe, held, more) {
            Ok(0) => return Err(RelayError::Write(io::ErrorKind::WriteZero.into())),
            Ok(n) => held -= n,
            Err(e) => return Err(RelayError::Write(e)),
        }
    }
    Ok(())
}
