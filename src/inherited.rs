//! Listening sockets handed to this process when it started: by systemd's socket activation
//! (`LISTEN_FDS` descriptors from 3, for the process `LISTEN_PID` names), or by the sluice
//! this one replaces in an upgrade (`SLUICE_INHERITED_FDS`, which names each descriptor's
//! configured address, and `SLUICE_READY_FD`, where this process says it serves).
//!
//! `main` takes them first thing, before any other descriptor is opened; the server then
//! matches them to the configured listeners (and the admin API) by address. A socket from
//! systemd that matches nothing is an error naming it; one from an upgrade that matches
//! nothing (the file lost that listener meanwhile) is closed.

use crate::sys;
use log::info;
use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;

/// The upgrade's sockets: `FD=ADDR` entries separated by commas, `FD=admin=ADDR` for the
/// admin API's, ADDR as the configuration says it.
pub const INHERITED_FDS_VAR: &str = "SLUICE_INHERITED_FDS";
/// The descriptor of the upgrade's readiness channel.
pub const READY_FD_VAR: &str = "SLUICE_READY_FD";
/// systemd's first passed descriptor.
const SD_LISTEN_FDS_START: RawFd = 3;

/// Who handed the sockets over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Systemd,
    Upgrade,
}

/// What a socket is for: a listener, or the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Listener,
    Admin,
}

struct Socket {
    fd: RawFd,
    /// The configured address the upgrading process gave it; `None` from systemd.
    configured: Option<(Role, SocketAddr)>,
    local: SocketAddr,
    socket: Option<TcpListener>,
}

/// The sockets handed over, until each is taken by the listener it belongs to.
#[derive(Default)]
pub struct Inherited {
    origin: Option<Origin>,
    sockets: Vec<Socket>,
    ready: Option<UnixStream>,
}

#[derive(Debug)]
pub enum InheritError {
    /// An environment variable says something this process cannot use.
    Environment {
        var: &'static str,
        problem: String,
    },
    Descriptor {
        var: &'static str,
        fd: RawFd,
        source: io::Error,
    },
    /// A socket from systemd that no configured listener has the address of.
    Unmatched {
        fd: RawFd,
        addr: SocketAddr,
    },
}

impl fmt::Display for InheritError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InheritError::Environment { var, problem } => write!(f, "{var}: {problem}"),
            InheritError::Descriptor { var, fd, source } => write!(f, "{var}: descriptor {fd}: {source}"),
            InheritError::Unmatched { fd, addr } => write!(
                f,
                "the socket passed by systemd on {addr} (descriptor {fd}) matches no listener in the \
                 configuration; add a listener with that address or remove it from the socket unit"
            ),
        }
    }
}

impl std::error::Error for InheritError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InheritError::Descriptor { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Inherited {
    /// Takes the sockets the environment says this process inherited, if any: an upgrade's
    /// first, else systemd's when `LISTEN_PID` is this process.
    pub fn from_env() -> Result<Inherited, InheritError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(list) = var(INHERITED_FDS_VAR) {
            let entries = parse_upgrade_list(&list)
                .map_err(|problem| InheritError::Environment { var: INHERITED_FDS_VAR, problem })?;
            let mut inherited = Inherited { origin: Some(Origin::Upgrade), ..Inherited::default() };
            for (fd, role, addr) in entries {
                inherited.push(INHERITED_FDS_VAR, fd, Some((role, addr)))?;
            }
            if let Some(fd) = var(READY_FD_VAR) {
                let problem = || InheritError::Environment { var: READY_FD_VAR, problem: format!("{fd:?}") };
                let fd: RawFd = fd.parse().map_err(|_| problem())?;
                let stream = sys::inherited_unix_stream(fd).map_err(|source| InheritError::Descriptor {
                    var: READY_FD_VAR,
                    fd,
                    source,
                })?;
                inherited.ready = Some(stream);
            }
            return Ok(inherited);
        }
        let Some(count) = var("LISTEN_FDS") else { return Ok(Inherited::default()) };
        if var("LISTEN_PID").and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
            return Ok(Inherited::default());
        }
        let count: RawFd =
            count.parse().ok().filter(|&n| (0..=1024).contains(&n)).ok_or_else(|| InheritError::Environment {
                var: "LISTEN_FDS",
                problem: format!("{count:?} is not a number of descriptors"),
            })?;
        let mut inherited = Inherited { origin: Some(Origin::Systemd), ..Inherited::default() };
        for fd in SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + count {
            inherited.push("LISTEN_FDS", fd, None)?;
        }
        Ok(inherited)
    }

    fn push(
        &mut self,
        var: &'static str,
        fd: RawFd,
        configured: Option<(Role, SocketAddr)>,
    ) -> Result<(), InheritError> {
        let error = |source| InheritError::Descriptor { var, fd, source };
        let socket = sys::inherited_listener(fd).map_err(error)?;
        let local = socket.local_addr().map_err(error)?;
        self.sockets.push(Socket { fd, configured, local, socket: Some(socket) });
        Ok(())
    }

    pub fn origin(&self) -> Option<Origin> {
        self.origin
    }

    /// The socket for the listener (or admin API) configured at `addr`, if one was handed
    /// over: the one the upgrading process gave that address, or one bound to it.
    pub fn take(&mut self, role: Role, addr: SocketAddr) -> Option<TcpListener> {
        let named = |s: &Socket| s.configured == Some((role, addr));
        let bound = |s: &Socket| s.configured.is_none_or(|(r, _)| r == role) && s.local == addr;
        let free = |s: &&mut Socket| s.socket.is_some();
        let found = match self.sockets.iter_mut().filter(free).find(|s| named(s)) {
            Some(s) => Some(s),
            None => self.sockets.iter_mut().filter(free).find(|s| bound(s)),
        };
        let socket = found?.socket.take()?;
        info!("using the inherited socket on {addr}");
        Some(socket)
    }

    /// Checks that every socket found its listener, and gives back the upgrade's readiness
    /// channel, if any.
    pub fn finish(self) -> Result<Option<UnixStream>, InheritError> {
        for left in self.sockets.into_iter().filter(|s| s.socket.is_some()) {
            if self.origin == Some(Origin::Systemd) {
                return Err(InheritError::Unmatched { fd: left.fd, addr: left.local });
            }
            info!("closing the inherited socket on {}: no listener has that address any more", left.local);
        }
        Ok(self.ready)
    }
}

/// Tells the process that started this one in an upgrade that this one serves.
pub fn tell_ready(mut channel: UnixStream) -> io::Result<()> {
    channel.write_all(format!("ready {}\n", std::process::id()).as_bytes())
}

/// The environment value handing `sockets` (descriptor, role, configured address) over.
pub fn upgrade_list(sockets: &[(RawFd, Role, SocketAddr)]) -> String {
    let entry = |&(fd, role, addr): &(RawFd, Role, SocketAddr)| match role {
        Role::Listener => format!("{fd}={addr}"),
        Role::Admin => format!("{fd}=admin={addr}"),
    };
    sockets.iter().map(entry).collect::<Vec<_>>().join(",")
}

/// Reads an [`upgrade_list`] back.
fn parse_upgrade_list(list: &str) -> Result<Vec<(RawFd, Role, SocketAddr)>, String> {
    list.split(',')
        .map(|entry| {
            let bad = || format!("{entry:?} is not FD=ADDRESS");
            let (fd, rest) = entry.split_once('=').ok_or_else(bad)?;
            let fd = fd.parse::<RawFd>().map_err(|_| bad())?;
            let (role, addr) = match rest.strip_prefix("admin=") {
                Some(addr) => (Role::Admin, addr),
                None => (Role::Listener, rest),
            };
            Ok((fd, role, addr.parse().map_err(|_| bad())?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upgrade_list_reads_back_what_was_written() {
        let sockets =
            [(3, Role::Listener, "127.0.0.1:0".parse().unwrap()), (7, Role::Admin, "[::1]:9090".parse().unwrap())];
        let text = upgrade_list(&sockets);
        assert_eq!(text, "3=127.0.0.1:0,7=admin=[::1]:9090");
        assert_eq!(parse_upgrade_list(&text).unwrap(), sockets);
        assert_eq!(parse_upgrade_list("3:80").unwrap_err(), "\"3:80\" is not FD=ADDRESS");
        assert!(parse_upgrade_list("x=127.0.0.1:80").is_err());
    }

    #[test]
    fn sockets_are_matched_by_the_address_they_were_given_then_by_the_bound_one() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let zero: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut inherited = Inherited { origin: Some(Origin::Systemd), ..Inherited::default() };
        inherited.sockets.push(Socket {
            fd: 3,
            configured: Some((Role::Listener, zero)),
            local: a_addr,
            socket: Some(a),
        });
        inherited.sockets.push(Socket { fd: 4, configured: None, local: b_addr, socket: Some(b) });
        assert_eq!(inherited.take(Role::Listener, zero).unwrap().local_addr().unwrap(), a_addr);
        assert!(inherited.take(Role::Listener, zero).is_none(), "each socket is taken once");
        assert!(inherited.take(Role::Admin, a_addr).is_none());
        assert!(inherited.take(Role::Admin, b_addr).is_some(), "systemd's sockets fit any role");
    }

    #[test]
    fn a_socket_from_systemd_that_matches_no_listener_is_an_error_naming_it() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = a.local_addr().unwrap();
        let mut inherited = Inherited { origin: Some(Origin::Systemd), ..Inherited::default() };
        inherited.sockets.push(Socket { fd: 3, configured: None, local: addr, socket: Some(a) });
        let err = inherited.finish().err().unwrap();
        assert!(
            err.to_string().starts_with(&format!("the socket passed by systemd on {addr} (descriptor 3)")),
            "{err}"
        );
    }
}
