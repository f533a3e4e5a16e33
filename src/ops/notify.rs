//! Telling the service manager how sluice is doing, systemd's `sd_notify` protocol: when
//! `NOTIFY_SOCKET` names a Unix datagram socket (a path, or an abstract name written with a
//! leading `@`), each state change is one datagram of `KEY=value` lines. Without it, nothing
//! is sent. Called by the `sluice` command's signal loop ([`crate::ops::lifecycle`]).
//!
//! `READY=1` once serving; `RELOADING=1` with `MONOTONIC_USEC` before a SIGHUP reload and
//! `READY=1` after it; `STOPPING=1` when draining begins; `MAINPID=` the new process when an
//! upgrade hands over (a `Type=notify` unit with `NotifyAccess=all` then follows it).

use crate::sys;
use log::debug;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Serving: the listeners accept and the first health state is in place.
pub fn ready() {
    send("READY=1");
}

/// A reload begins; [`ready`] follows when it is done (applied or refused).
pub fn reloading() {
    send(&format!("RELOADING=1\nMONOTONIC_USEC={}", sys::monotonic_micros()));
}

/// Draining before exit.
pub fn stopping() {
    send("STOPPING=1");
}

/// An upgrade handed over to process `pid`, which serves now.
pub fn handed_over(pid: u32) {
    send(&format!("MAINPID={pid}\nREADY=1"));
}

fn send(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(e) = send_to(&target.to_string_lossy(), state) {
        debug!("cannot notify the service manager at {target:?}: {e}");
    }
}

/// Sends `state` as one datagram to the socket `target` names.
pub fn send_to(target: &str, state: &str) -> io::Result<()> {
    let addr = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(target)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_state_reaches_a_socket_named_by_path_or_abstract_name() {
        let dir = std::env::temp_dir().join(format!("sluice-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let by_path = UnixDatagram::bind(&path).unwrap();
        by_path.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        send_to(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = by_path.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("sluice-notify-test-{}", std::process::id());
        let abstract_addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let by_name = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        by_name.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        send_to(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = by_name.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
