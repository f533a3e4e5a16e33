//! Small request bodies read whole before a backend is picked, as nginx buffers them: a body
//! given by `Content-Length` of at most `limits.bufferBodyBytes` that has not all arrived with
//! its head is waited for here, briefly on the worker and otherwise in the waiting room, so
//! that a client trickling it holds neither a worker nor a backend connection. It must keep
//! the minimum rate of [`crate::pace`] from the end of its head, or it is answered `408`.
//!
//! Called by `connection` after each head; pure but for the reads it makes.

use crate::config::Config;
use crate::http::framing::{request_framing, BodyFraming};
use crate::http::head::{HeaderList, RequestHead};
use crate::http::stream::{is_progress_only, is_timeout, BufferedStream, TimedRead};
use crate::pace::{MinRate, Pace};
use std::time::{Duration, Instant};

/// How long a small body may keep a worker waiting before the connection parks instead.
const WAIT_ON_WORKER: Duration = Duration::from_millis(50);

#[derive(Debug, PartialEq, Eq)]
pub enum BodyWait {
    /// No body to buffer, or all of it is buffered.
    Complete,
    /// The rest has not come yet: park until this deadline.
    Park(Instant),
    /// It came slower than the minimum rate.
    TooSlow,
    /// The client closed or failed.
    Gone,
}

/// How a small body may be waited for.
pub struct Waiting<'a> {
    /// When the head was complete: the body's rate is measured from here.
    pub since: Instant,
    /// Whether the connection may park at all (`waitingRoom`); without, the body is waited
    /// for on the worker.
    pub may_park: bool,
    /// Asked before each read: false means the connection should park now.
    pub may_block: &'a mut dyn FnMut() -> bool,
}

/// Reads the rest of a small request body into the read buffer. Waits on the worker for at
/// most `WAIT_ON_WORKER` (50 ms) and only while `may_block` allows; then the connection is to park.
/// A complete request (the usual case) costs no system call here.
pub fn wait_for_small_body<S: TimedRead>(
    config: &Config,
    stream: &mut BufferedStream<S>,
    head: &RequestHead,
    waiting: Waiting,
) -> BodyWait {
    let Some(need) = body_to_buffer(config, stream, head) else { return BodyWait::Complete };
    let Waiting { since, may_park, may_block } = waiting;
    let pace = Pace::new(MinRate::of(config), since);
    let mut on_worker_until = None;
    loop {
        let done = stream.buffered().len();
        if done >= need {
            return BodyWait::Complete;
        }
        let now = Instant::now();
        let Some(wait) = pace.next_wait(done as u64, now, config.timeouts.client) else { return BodyWait::TooSlow };
        let read_for = if may_park {
            let until = *on_worker_until.get_or_insert(now + WAIT_ON_WORKER);
            if now >= until || !may_block() {
                return BodyWait::Park(now + wait);
            }
            wait.min(until - now)
        } else {
            wait
        };
        stream.set_read_timeout(read_for);
        match stream.fill() {
            Ok(0) => return BodyWait::Gone,
            Ok(_) => {}
            // TLS took bytes without completing a record: more is on its way.
            Err(e) if is_timeout(&e) || is_progress_only(&e) => {}
            Err(_) => return BodyWait::Gone,
        }
    }
}

/// The length of a request body to read whole before a backend is picked: one given by
/// `Content-Length`, not yet all buffered, within `limits.bufferBodyBytes` and the read
/// buffer, and not waiting for a `100 Continue` (which is only sent once a backend
/// connection is in hand). A body over `limits.maxBodyBytes` is refused at once instead.
fn body_to_buffer<S: TimedRead>(config: &Config, stream: &BufferedStream<S>, head: &RequestHead) -> Option<usize> {
    let limit = config.limits.buffer_body_bytes;
    if limit == 0 {
        return None;
    }
    let Ok(BodyFraming::Length(n)) = request_framing(head) else { return None };
    if config.limits.max_body_bytes.is_some_and(|max| n > max) {
        return None;
    }
    let need = usize::try_from(n).ok().filter(|&n| n > stream.buffered().len() && n <= limit)?;
    (need <= stream.capacity() && !head.has("expect")).then_some(need)
}

/// The size of a client read buffer: a whole head, or a whole buffered body.
pub fn read_buffer_bytes(config: &Config) -> usize {
    config.limits.max_header_bytes.max(config.limits.buffer_body_bytes)
}
