//! A TCP stream with a fixed read buffer, shared by the head parser and the body relay.
//!
//! Bytes read past the end of one head stay in the buffer for the body or the next pipelined
//! request, so nothing is ever read twice or lost between steps. The buffer never grows: its
//! size is the largest head the owner accepts, and bodies stream through it.
//!
//! The stream is a socket, plain or TLS ([`crate::transport`]); it is generic over
//! [`TimedRead`] so that the fuzz targets and unit tests can drive the same parsing and relay
//! code from memory. A TLS read that completed no record ([`is_progress_only`]) is passed up
//! rather than read again, so that the head reader decides where to wait.

use crate::pace::{too_slow, Pace};
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What a [`BufferedStream`] reads from: a socket, whose read timeout can be set.
pub trait TimedRead: Read {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;

    /// Makes the next read acknowledge what it receives at once (see
    /// [`BufferedStream::set_ack_promptly`]); nothing for streams that are not sockets.
    fn acknowledge_promptly(&self) {}
}

impl TimedRead for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

pub struct BufferedStream<S = TcpStream> {
    stream: S,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The read timeout last given to the socket (`None`: not known).
    read_timeout: Option<Duration>,
    /// The read timeout the next read must have. It is given to the socket just before that
    /// read, and only if it differs: a timeout changed and changed back between two reads,
    /// as for a request body that arrived with its head, costs no system call.
    next_read_timeout: Option<Duration>,
    /// Bytes read from the socket so far, for the metrics.
    received: u64,
    /// The minimum rate reads are held to, with `received` when it began; see [`Pace`].
    pace: Option<(Pace, u64)>,
    /// Acknowledge each read's bytes at once: set while a response body streams in.
    ack_promptly: bool,
}

impl<S: TimedRead> BufferedStream<S> {
    pub fn new(stream: S, capacity: usize) -> BufferedStream<S> {
        BufferedStream::from_parts(stream, vec![0; capacity].into_boxed_slice(), None)
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The stream, and the bytes read from it but not yet consumed.
    pub fn split(&mut self) -> (&mut S, &[u8]) {
        (&mut self.stream, &self.buf[self.start..self.end])
    }

    /// The bytes read but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Bytes read from the socket since this stream was made.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The most bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// True when the buffer holds as much as it ever can.
    pub fn is_full(&self) -> bool {
        self.end - self.start == self.buf.len()
    }

    /// Reads more bytes after the buffered ones; `Ok(0)` means the peer closed its side.
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(io::Error::other("read buffer is full"));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.prepare_read()?;
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    self.received += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted && !is_progress_only(&e) => continue,
                Err(e) if is_timeout(&e) && self.is_behind() => return Err(too_slow()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Gives the socket what the next read must have: its timeout, and a prompt
    /// acknowledgement when asked for. [`BufferedStream::fill`] does this before each read;
    /// a caller reading the socket another way (a splice) calls it first.
    pub fn prepare_read(&mut self) -> io::Result<()> {
        let timeout = self.paced_timeout()?;
        if let Some(timeout) = timeout.filter(|&t| Some(t) != self.read_timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.read_timeout = Some(timeout);
        }
        if self.ack_promptly {
            self.stream.acknowledge_promptly();
        }
        Ok(())
    }

    /// The read timeout the next read must have: the one set, shortened to the minimum
    /// rate's deadline when that comes sooner (for a sender that keeps up, it never does).
    fn paced_timeout(&self) -> io::Result<Option<Duration>> {
        let Some((pace, from)) = self.pace else { return Ok(self.next_read_timeout) };
        let longest = self.next_read_timeout.unwrap_or(Duration::MAX);
        match pace.next_wait(self.received - from, Instant::now(), longest) {
            None => Err(too_slow()),
            Some(wait) if wait < longest => Ok(Some(wait.max(Duration::from_millis(1)))),
            Some(_) => Ok(self.next_read_timeout),
        }
    }

    fn is_behind(&self) -> bool {
        self.pace.is_some_and(|(pace, from)| pace.is_behind(self.received - from, Instant::now()))
    }

    /// Holds the reads from now on to `pace` (counting from the bytes received so far), or
    /// to none.
    pub fn set_pace(&mut self, pace: Option<Pace>) {
        self.pace = pace.map(|pace| (pace, self.received));
    }

    /// Acknowledges what each read from now on receives at once instead of after the kernel's
    /// delayed-acknowledgement timer (40 ms or more). A sender that holds back its last small
    /// segment until the earlier ones are acknowledged (Nagle's rule, as nginx with
    /// `tcp_nopush` does at the end of a response) would otherwise wait that long for it:
    /// the 1 MiB p99 tail in `../shared/bench/FINDINGS.md`.
    pub fn set_ack_promptly(&mut self, on: bool) {
        self.ack_promptly = on;
    }

    /// Sets the read timeout for the reads from now on (a zero one counts as 1 ms).
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.next_read_timeout = Some(timeout.max(Duration::from_millis(1)));
    }

    /// Wraps `stream` around an existing buffer; `read_timeout` is the one the socket has.
    pub fn from_parts(stream: S, buf: Box<[u8]>, read_timeout: Option<Duration>) -> BufferedStream<S> {
        BufferedStream {
            stream,
            buf,
            start: 0,
            end: 0,
            read_timeout,
            next_read_timeout: read_timeout,
            received: 0,
            pace: None,
            ack_promptly: false,
        }
    }

    /// Puts `bytes` (read earlier, then set aside) back in front of anything read later.
    pub fn preload(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.end);
        self.buf[self.end..self.end + n].copy_from_slice(&bytes[..n]);
        self.received += n as u64;
        self.end += n;
    }

    /// Gives back the stream and the buffer; any buffered bytes are dropped.
    pub fn into_parts(self) -> (S, Box<[u8]>) {
        (self.stream, self.buf)
    }
}

/// Writes `first` then `second` with as few system calls as the kernel allows.
pub fn write_both(mut out: impl Write, mut first: &[u8], mut second: &[u8]) -> io::Result<()> {
    while !first.is_empty() {
        let n = match out.write_vectored(&[IoSlice::new(first), IoSlice::new(second)]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n < first.len() {
            first = &first[n..];
        } else {
            second = &second[n - first.len()..];
            first = &[];
        }
    }
    out.write_all(second)
}

/// Is this the error a socket timeout gives?
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// The error a TLS read ([`crate::transport`]) returns when it took bytes from the socket but has no plaintext yet.
#[derive(Debug)]
struct ProgressOnly;

impl fmt::Display for ProgressOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TLS bytes arrived, but no whole record yet")
    }
}

impl std::error::Error for ProgressOnly {}

/// Whether `e` says a read made progress on TLS records without producing plaintext: read
/// again (after deciding whether to wait elsewhere).
pub fn is_progress_only(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted && e.get_ref().is_some_and(|inner| inner.is::<ProgressOnly>())
}

pub fn progress_only() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, ProgressOnly)
}
