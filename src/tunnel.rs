//! A two-way byte tunnel between a client and a backend, used by TCP mode ([`crate::tcp`])
//! and by HTTP upgrades such as WebSocket ([`crate::proxy`], after a `101`).
//!
//! The calling worker carries client → backend; a second thread, named `sluice-tunnel`,
//! carries backend → client. When one side ends its sending (EOF), the other side's write
//! half is shut down, and the other direction goes on: half-closes pass through. When either
//! direction fails, both sockets are shut down so the other direction ends at once. A tunnel
//! with no bytes either way for `timeouts.tunnel` is closed. Shared state: only the tunnel's
//! own last-activity clock.

use crate::http::stream::is_timeout;
use log::debug;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes move through a buffer of this size in each direction.
const TUNNEL_BUFFER_BYTES: usize = 64 * 1024;
/// Stack of the second thread; its buffer is on the heap.
const TUNNEL_STACK_BYTES: usize = 64 * 1024;

/// One end of a tunnel.
pub struct End<'a> {
    pub stream: &'a TcpStream,
    /// Bytes already read from this end (after a head), which the other end gets first.
    pub already_read: &'a [u8],
}

/// What a finished tunnel carried.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    pub client_to_backend: u64,
    pub backend_to_client: u64,
}

/// Carries bytes both ways until both directions have ended. Fails only when the tunnel
/// cannot start (socket options, the second thread); both sockets are shut down then.
pub fn run(client: End, backend: End, idle: Duration) -> io::Result<Carried> {
    let started = set_timeouts(&[client.stream, backend.stream], idle);
    if let Err(e) = started {
        shut_both(client.stream, backend.stream);
        return Err(e);
    }
    let activity = Activity::new();
    thread::scope(|scope| {
        let (to_client, to_backend) = (client.stream, backend.stream);
        let activity = &activity;
        let down = thread::Builder::new()
            .name("sluice-tunnel".into())
            .stack_size(TUNNEL_STACK_BYTES)
            .spawn_scoped(scope, move || relay(backend, to_client, idle, activity));
        let down = match down {
            Ok(handle) => handle,
            Err(e) => {
                shut_both(to_client, to_backend);
                return Err(e);
            }
        };
        let client_to_backend = relay(client, to_backend, idle, activity);
        let backend_to_client = down.join().unwrap_or_else(|_| {
            shut_both(to_client, to_backend);
            0
        });
        Ok(Carried { client_to_backend, backend_to_client })
    })
}

fn set_timeouts(streams: &[&TcpStream], idle: Duration) -> io::Result<()> {
    for stream in streams {
        stream.set_read_timeout(Some(idle))?;
        stream.set_write_timeout(Some(idle))?;
    }
    Ok(())
}

fn shut_both(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// How one direction ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// The sender finished sending: pass the half-close on.
    Eof,
    /// No bytes either way for the idle limit.
    Idle,
    /// A read or write failed (reset, shut down by the other direction).
    Broken,
}

/// Copies `from` to `to` until `from` ends; returns the bytes copied.
fn relay(from: End, to: &TcpStream, idle: Duration, activity: &Activity) -> u64 {
    let mut carried = 0;
    let ending = if write_all(to, from.already_read, activity) {
        carried += from.already_read.len() as u64;
        copy(from.stream, to, idle, activity, &mut carried)
    } else {
        Ending::Broken
    };
    match ending {
        Ending::Eof => {
            let _ = to.shutdown(Shutdown::Write);
        }
        Ending::Idle | Ending::Broken => {
            if ending == Ending::Idle {
                debug!("tunnel closed after {idle:?} without traffic");
            }
            shut_both(from.stream, to);
        }
    }
    carried
}

fn copy(mut from: &TcpStream, to: &TcpStream, idle: Duration, activity: &Activity, carried: &mut u64) -> Ending {
    let mut buf = vec![0u8; TUNNEL_BUFFER_BYTES];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ending::Eof,
            Ok(n) => {
                if !write_all(to, &buf[..n], activity) {
                    return Ending::Broken;
                }
                *carried += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                // Quiet this way; the tunnel is idle only if the other way is quiet too.
                let quiet = activity.quiet_for();
                if quiet >= idle || from.set_read_timeout(Some(idle - quiet)).is_err() {
                    return Ending::Idle;
                }
            }
            Err(_) => return Ending::Broken,
        }
    }
}

fn write_all(mut to: &TcpStream, bytes: &[u8], activity: &Activity) -> bool {
    if bytes.is_empty() {
        return true;
    }
    activity.touch();
    let written = to.write_all(bytes).is_ok();
    activity.touch();
    written
}

/// When bytes last moved either way. Written by both directions; read on their timeouts.
struct Activity {
    started: Instant,
    /// Milliseconds after `started`.
    last_millis: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { started: Instant::now(), last_millis: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_millis.fetch_max(now, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

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

    #[test]
    fn carries_early_bytes_first_and_passes_half_closes_on() {
        let (mut client, client_side) = pair();
        let (backend_side, mut backend) = pair();
        let worker = thread::spawn(move || {
            let client_end = End { stream: &client_side, already_read: b"early-up " };
            let backend_end = End { stream: &backend_side, already_read: b"early-down " };
            run(client_end, backend_end, Duration::from_secs(5)).unwrap()
        });
        client.write_all(b"up").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        backend.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"early-up up");
        backend.write_all(b"down after half-close").unwrap();
        backend.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"early-down down after half-close");
        let carried = worker.join().unwrap();
        assert_eq!(carried, Carried { client_to_backend: 11, backend_to_client: 32 });
    }

    #[test]
    fn an_idle_tunnel_is_closed() {
        let (mut client, client_side) = pair();
        let (backend_side, mut backend) = pair();
        let worker = thread::spawn(move || {
            let client_end = End { stream: &client_side, already_read: b"" };
            let backend_end = End { stream: &backend_side, already_read: b"" };
            run(client_end, backend_end, Duration::from_millis(200)).unwrap()
        });
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0), 0);
        assert_eq!(backend.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0), 0);
        assert_eq!(worker.join().unwrap(), Carried::default());
    }

    #[test]
    fn activity_one_way_keeps_the_other_way_open() {
        //  idle limit 1 s; the backend talks every 100 ms for 1.5 s while the client is
        //  silent, then the client still gets through.
        let (mut client, client_side) = pair();
        let (backend_side, mut backend) = pair();
        let worker = thread::spawn(move || {
            let client_end = End { stream: &client_side, already_read: b"" };
            let backend_end = End { stream: &backend_side, already_read: b"" };
            run(client_end, backend_end, Duration::from_secs(1)).unwrap()
        });
        let mut byte = [0u8; 1];
        for _ in 0..15 {
            backend.write_all(b"x").unwrap();
            client.read_exact(&mut byte).unwrap();
            thread::sleep(Duration::from_millis(100));
        }
        client.write_all(b"y").unwrap();
        backend.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"y");
        drop((client, backend));
        worker.join().unwrap();
    }
}
