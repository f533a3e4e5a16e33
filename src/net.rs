//! Socket chores shared by the request path and the operations threads: connecting to the
//! first of several addresses that answers, and the accept loop every listener runs with the
//! bell that ends it.

use crate::sys;
use log::{debug, error};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

/// Pause after `accept()` fails for lack of file descriptors, instead of spinning.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connects to `addrs` in turn, starting at index `first`, until one accepts within
/// `timeout`; returns the stream and the index of the address that answered.
pub fn connect_any(addrs: &[SocketAddr], first: usize, timeout: Duration) -> io::Result<(TcpStream, usize)> {
    let first = if addrs.is_empty() { 0 } else { first % addrs.len() };
    let mut last_error = io::Error::other("no address to connect to");
    for i in (first..addrs.len()).chain(0..first) {
        match TcpStream::connect_timeout(&addrs[i], timeout) {
            Ok(stream) => return Ok((stream, i)),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// Tells an accept loop on another thread to end; its other end is what the loop watches.
pub struct StopBell(UnixStream);

impl StopBell {
    /// A bell and the end an accept loop watches for it.
    pub fn new() -> io::Result<(StopBell, UnixStream)> {
        let (ring, heard) = UnixStream::pair()?;
        Ok((StopBell(ring), heard))
    }

    /// Makes the watched end readable for good (it reads as closed), so the loop ends.
    pub fn ring(&self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }
}

/// Accepts connections on `listener` and hands each to `accepted` until `stop` becomes
/// readable (its [`StopBell`] rang). The listener is made non-blocking and waited on with
/// `poll`, so ringing never needs a connection, and another process sharing the socket (the
/// old or new one of an upgrade) may take a connection first. Failures to accept for lack of
/// file descriptors pause for [`ACCEPT_BACKOFF`]; other failures (a client that reset before
/// it was accepted) are skipped.
pub fn accept_each(listener: &TcpListener, stop: &UnixStream, mut accepted: impl FnMut(TcpStream, SocketAddr)) {
    if let Err(e) = listener.set_nonblocking(true) {
        error!("cannot accept on {:?}: {e}", listener.local_addr());
        return;
    }
    loop {
        match sys::wait_readable(&[listener.as_fd(), stop.as_fd()]) {
            Ok([_, true]) => return,
            Ok(_) => {}
            Err(e) => {
                error!("waiting for connections failed: {e}; pausing {ACCEPT_BACKOFF:?}");
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        }
        match listener.accept() {
            Ok((stream, peer)) => accepted(stream, peer),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if is_out_of_descriptors(&e) => {
                error!("accept failed: {e}; pausing {ACCEPT_BACKOFF:?}");
                thread::sleep(ACCEPT_BACKOFF);
            }
            Err(e) => debug!("accept failed: {e}"),
        }
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (24) and ENFILE (23) on Linux; ENOBUFS and ENOMEM also mean "not now".
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_any_skips_addresses_that_refuse_and_says_which_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (_, index) = connect_any(&[closed, open], 0, Duration::from_secs(1)).unwrap();
        assert_eq!(index, 1);
        let (_, index) = connect_any(&[closed, open], 1, Duration::from_secs(1)).unwrap();
        assert_eq!(index, 1, "starts at the preferred address");
        assert!(connect_any(&[closed], 0, Duration::from_secs(1)).is_err());
        assert!(connect_any(&[], 0, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn the_accept_loop_serves_until_its_bell_rings() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (bell, heard) = StopBell::new().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let looping = thread::spawn(move || accept_each(&listener, &heard, |_, peer| tx.send(peer).unwrap()));
        let client = TcpStream::connect(addr).unwrap();
        let peer = rx.recv_timeout(Duration::from_secs(10)).expect("accepted");
        assert_eq!(peer, client.local_addr().unwrap());
        bell.ring();
        looping.join().unwrap();
    }
}
