//! A two-way byte tunnel between a client and a backend, used by TCP mode ([`crate::tcp`])
//! and by HTTP upgrades such as WebSocket ([`crate::proxy`], after a `101`). Either end may
//! be plain TCP or TLS ([`crate::transport`]).
//!
//! The calling worker runs the tunnel alone: both sockets are made non-blocking, and one loop
//! moves whatever each side has ready into the other, waiting in `poll(2)` when neither can
//! move. When one side ends its sending (EOF), the other side's write half is shut down (TLS
//! sends `close_notify` first), and the other direction goes on: half-closes pass through.
//! When either direction fails, both sockets are shut down. A tunnel with no bytes either way
//! for `timeouts.tunnel` is closed. No state is shared with other threads.

use crate::sys::{self, Interest};
use crate::transport::{Pipe, ReadNow};
use log::debug;
use std::io;
use std::net::Shutdown;
use std::time::{Duration, Instant};

/// Bytes move through a buffer of this size in each direction.
const TUNNEL_BUFFER_BYTES: usize = 64 * 1024;

/// One end of a tunnel.
pub struct End<'a> {
    pub pipe: &'a mut dyn Pipe,
    /// Bytes already read from this end (after a head), which the other end gets first.
    pub already_read: &'a [u8],
}

/// What a finished tunnel carried.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    pub client_to_backend: u64,
    pub backend_to_client: u64,
}

/// Bytes on their way from one end to the other.
struct Direction {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The sending end finished.
    eof: bool,
    /// The receiving end's write half was shut down after `eof`.
    shut: bool,
    carried: u64,
}

impl Direction {
    fn new(early: &[u8]) -> Direction {
        let mut buf = vec![0u8; TUNNEL_BUFFER_BYTES.max(early.len())];
        buf[..early.len()].copy_from_slice(early);
        Direction { buf, start: 0, end: early.len(), eof: false, shut: false, carried: 0 }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn wants_input(&self) -> bool {
        !self.eof && self.end < self.buf.len()
    }

    /// Reads from `from` into the free space; true if anything changed.
    fn take_from(&mut self, from: &mut dyn Pipe) -> io::Result<bool> {
        if !self.wants_input() {
            return Ok(false);
        }
        match from.read_now(&mut self.buf[self.end..])? {
            ReadNow::Data(n) => self.end += n,
            ReadNow::Nothing => return Ok(false),
            ReadNow::Eof => self.eof = true,
        }
        Ok(true)
    }

    /// Writes pending bytes into `to`, and passes the end on once all are out; true if
    /// anything changed.
    fn give_to(&mut self, to: &mut dyn Pipe) -> io::Result<bool> {
        let mut moved = false;
        if !self.pending().is_empty() {
            let n = to.write_now(self.pending())?;
            self.start += n;
            self.carried += n as u64;
            moved = n > 0;
            if self.start == self.end {
                // All out: the whole buffer is free again.
                (self.start, self.end) = (0, 0);
            }
        } else if to.has_pending_output() {
            to.send_pending_now()?;
        }
        if self.eof && !self.shut && self.pending().is_empty() && !to.has_pending_output() {
            to.shutdown_write();
            self.shut = true;
            moved = true;
        }
        Ok(moved)
    }

    /// What to wait for: readable `from` when there is room, writable `to` while bytes wait.
    fn interests(&self, to: &dyn Pipe) -> (Interest, Interest) {
        let from = Interest { read: self.wants_input(), write: false };
        let to = Interest { read: false, write: !self.pending().is_empty() || to.has_pending_output() };
        (from, to)
    }
}

/// Carries bytes both ways until both directions have ended, the tunnel idles for `idle`, or
/// a side fails. Fails only when the tunnel cannot start (socket options); both sockets are
/// shut down then.
pub fn run(client: End, backend: End, idle: Duration) -> io::Result<Carried> {
    let (client_pipe, backend_pipe) = (client.pipe, backend.pipe);
    let started = client_pipe.socket().set_nonblocking(true).and_then(|()| backend_pipe.socket().set_nonblocking(true));
    if let Err(e) = started {
        shut_both(client_pipe, backend_pipe);
        return Err(e);
    }
    let mut up = Direction::new(client.already_read);
    let mut down = Direction::new(backend.already_read);
    let result = pump(client_pipe, backend_pipe, (&mut up, &mut down), idle);
    if let Err(e) = &result {
        debug!("tunnel ended: {e}");
        shut_both(client_pipe, backend_pipe);
    }
    let _ = client_pipe.socket().set_nonblocking(false);
    let _ = backend_pipe.socket().set_nonblocking(false);
    Ok(Carried { client_to_backend: up.carried, backend_to_client: down.carried })
}

/// The loop: move what can move, else wait for readiness, until both directions are done.
fn pump(
    client: &mut dyn Pipe,
    backend: &mut dyn Pipe,
    (up, down): (&mut Direction, &mut Direction),
    idle: Duration,
) -> io::Result<()> {
    let mut last_activity = Instant::now();
    while !(up.shut && down.shut) {
        let mut moved = up.take_from(client)?;
        moved |= up.give_to(backend)?;
        moved |= down.take_from(backend)?;
        moved |= down.give_to(client)?;
        if moved {
            last_activity = Instant::now();
            continue;
        }
        let quiet = last_activity.elapsed();
        if quiet >= idle {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no traffic for {idle:?}")));
        }
        let (client_reads, backend_writes) = up.interests(backend);
        let (backend_reads, client_writes) = down.interests(client);
        let client_interest = Interest { read: client_reads.read, write: client_writes.write };
        let backend_interest = Interest { read: backend_reads.read, write: backend_writes.write };
        sys::poll(&[(client.socket(), client_interest), (backend.socket(), backend_interest)], idle - quiet)?;
    }
    Ok(())
}

fn shut_both(a: &dyn Pipe, b: &dyn Pipe) {
    let _ = a.socket().shutdown(Shutdown::Both);
    let _ = b.socket().shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Transport;
    use rustls::ServerConnection;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    /// A connected pair of sockets on loopback.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        (a, b)
    }

    fn plain(socket: TcpStream) -> Transport<ServerConnection> {
        Transport::Plain(socket)
    }

    #[test]
    fn carries_early_bytes_first_and_passes_half_closes_on() {
        let (mut client, client_side) = pair();
        let (backend_side, mut backend) = pair();
        let worker = thread::spawn(move || {
            let (mut client_side, mut backend_side) = (plain(client_side), plain(backend_side));
            let client_end = End { pipe: &mut client_side, already_read: b"early-up " };
            let backend_end = End { pipe: &mut backend_side, already_read: b"early-down " };
            run(client_end, backend_end, Duration::from_secs(5)).unwrap()
        });
        client.write_all(b"up").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut got = String::new();
        backend.read_to_string(&mut got).unwrap();
        assert_eq!(got, "early-up up", "the backend sees the client's early bytes, then the rest, then EOF");
        backend.write_all(b"down").unwrap();
        backend.shutdown(Shutdown::Write).unwrap();
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        assert_eq!(got, "early-down down");
        let carried = worker.join().unwrap();
        assert_eq!(carried, Carried { client_to_backend: 11, backend_to_client: 15 });
    }

    #[test]
    fn carries_many_times_its_buffer_in_one_direction_while_the_other_stays_open() {
        let (mut client, client_side) = pair();
        let (backend_side, mut backend) = pair();
        let worker = thread::spawn(move || {
            let (mut client_side, mut backend_side) = (plain(client_side), plain(backend_side));
            let client_end = End { pipe: &mut client_side, already_read: b"" };
            let backend_end = End { pipe: &mut backend_side, already_read: b"" };
            run(client_end, backend_end, Duration::from_secs(5)).unwrap()
        });
        let total = 40 * TUNNEL_BUFFER_BYTES;
        let writer = thread::spawn(move || {
            // Exactly one buffer at a time, so reads fill it to the last byte.
            let block = vec![b'z'; TUNNEL_BUFFER_BYTES];
            for _ in 0..40 {
                client.write_all(&block).unwrap();
            }
            client
        });
        let mut got = vec![0u8; total];
        backend.read_exact(&mut got).unwrap();
        assert!(got.iter().all(|&b| b == b'z'));
        let client = writer.join().unwrap();
        drop(client);
        drop(backend);
        assert_eq!(worker.join().unwrap().client_to_backend, total as u64);
    }

    #[test]
    fn an_idle_tunnel_is_closed() {
        let (mut client, client_side) = pair();
        let (backend_side, mut backend) = pair();
        let worker = thread::spawn(move || {
            let (mut client_side, mut backend_side) = (plain(client_side), plain(backend_side));
            let client_end = End { pipe: &mut client_side, already_read: b"" };
            let backend_end = End { pipe: &mut backend_side, already_read: b"" };
            run(client_end, backend_end, Duration::from_millis(200)).unwrap()
        });
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).unwrap(), 0, "the idle tunnel closes the client");
        assert_eq!(backend.read(&mut buf).unwrap(), 0, "and the backend");
        worker.join().unwrap();
    }
}
