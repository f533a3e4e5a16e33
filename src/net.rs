//! Socket chores shared by the request path and the operations threads: connecting to the
//! first of several addresses that answers, the accept loop every listener runs, and waking
//! a listener blocked in `accept()` so that it notices sluice is stopping.

use log::{debug, error};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
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

/// Accepts connections on `listener` and hands each to `accepted` until `is_stopping` says
/// so (checked after every accept, so a connection to the listener wakes it). Failures to
/// accept for lack of file descriptors pause for [`ACCEPT_BACKOFF`]; other failures (a
/// client that reset before it was accepted) are skipped.
pub fn accept_each(
    listener: &TcpListener,
    is_stopping: impl Fn() -> bool,
    mut accepted: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        let result = listener.accept();
        if is_stopping() {
            return;
        }
        match result {
            Ok((stream, peer)) => accepted(stream, peer),
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

/// Connects to our own listener at `addr` so that its blocked `accept()` returns.
pub fn wake_listener(addr: SocketAddr) {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port()),
        _ => addr,
    };
    let _ = TcpStream::connect_timeout(&target, Duration::from_secs(1));
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
}
