//! The listening sockets and their acceptor threads, in the order of the configuration's
//! listeners. Each listener is known by the address the configuration gives it (which may
//! have port 0) and by the address its socket is bound to; connections name their listener
//! by the bound one.
//!
//! A change of listeners (the first start, a reload) is two steps: [`Listeners::plan`] keeps
//! the running sockets whose configured address stays and binds the new ones, failing as a
//! whole (nothing changes) when one cannot be bound; [`Listeners::commit`] then starts
//! acceptors for the new sockets and stops and closes the removed ones. The caller holds the
//! runtime's change lock across both. Stopping rings every acceptor's bell and closes the
//! sockets; an upgrade hands their descriptors to the next process first
//! ([`Listeners::with_descriptors`]).

use crate::lock;
use crate::net::{self, StopBell};
use log::{error, info};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};

/// What an acceptor does with each connection: given the stream, the client's address and
/// the bound address of the listener that accepted it.
pub type Accept = Arc<dyn Fn(TcpStream, SocketAddr, SocketAddr) + Send + Sync>;

/// One listening socket with its acceptor.
struct Listening {
    configured: SocketAddr,
    local: SocketAddr,
    socket: Arc<TcpListener>,
    bell: StopBell,
    acceptor: JoinHandle<()>,
}

#[derive(Default)]
pub struct Listeners {
    /// The running listeners, in configuration order; changed by `commit` and `stop_all`,
    /// under the runtime's change lock.
    live: Mutex<Live>,
    /// Set once, when the runtime that serves the connections exists.
    accept: OnceLock<Accept>,
}

#[derive(Default)]
struct Live {
    listening: Vec<Listening>,
    /// Set by `stop_all`: a reload finishing afterwards starts no acceptor.
    stopped: bool,
}

/// The sockets for a new list of listeners, one per listener in its order.
pub struct ListenerPlan {
    slots: Vec<Slot>,
}

enum Slot {
    /// The running listener at this index in `live` stays.
    Kept { index: usize, local: SocketAddr },
    /// A socket bound (or inherited) for a new listener.
    New { configured: SocketAddr, local: SocketAddr, socket: TcpListener },
}

impl ListenerPlan {
    /// The bound address of each listener, in the new order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.slots
            .iter()
            .map(|slot| match slot {
                Slot::Kept { local, .. } | Slot::New { local, .. } => *local,
            })
            .collect()
    }
}

/// A listener that could not be bound: which address, and why.
#[derive(Debug)]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: io::Error,
}

impl Listeners {
    /// Sets what acceptors do with connections; before the first [`Listeners::commit`].
    pub fn set_accept(&self, accept: Accept) {
        let _ = self.accept.set(accept);
    }

    /// Matches `configured` (the new listeners' addresses, in order) to the running
    /// listeners by configured address, each running one used once, and gets a socket for
    /// every other from `bind`. Nothing changes until [`Listeners::commit`]; dropping the
    /// plan closes the sockets it bound.
    pub fn plan(
        &self,
        configured: &[SocketAddr],
        mut bind: impl FnMut(SocketAddr) -> io::Result<TcpListener>,
    ) -> Result<ListenerPlan, BindError> {
        let live = &lock(&self.live).listening;
        let mut taken = vec![false; live.len()];
        let mut slots = Vec::with_capacity(configured.len());
        for &addr in configured {
            let running = (0..live.len()).find(|&i| !taken[i] && live[i].configured == addr);
            let slot = match running {
                Some(index) => {
                    taken[index] = true;
                    Slot::Kept { index, local: live[index].local }
                }
                None => {
                    let bound = bind(addr).and_then(|socket| Ok((socket.local_addr()?, socket)));
                    let (local, socket) = bound.map_err(|source| BindError { addr, source })?;
                    Slot::New { configured: addr, local, socket }
                }
            };
            slots.push(slot);
        }
        Ok(ListenerPlan { slots })
    }

    /// Puts `plan` in place: starts acceptors for its new sockets, and stops and closes the
    /// running listeners it does not keep (new connections to them are refused). Returns the
    /// bound addresses of those removed.
    pub fn commit(&self, plan: ListenerPlan) -> Vec<SocketAddr> {
        let mut live = lock(&self.live);
        let mut old: Vec<Option<Listening>> = live.listening.drain(..).map(Some).collect();
        for slot in plan.slots {
            match slot {
                Slot::Kept { index, .. } => live.listening.extend(old[index].take()),
                Slot::New { .. } if live.stopped => {}
                Slot::New { configured, local, socket } => match self.start(configured, local, socket) {
                    Ok(listening) => live.listening.push(listening),
                    Err(e) => error!("cannot start accepting on {local}: {e}"),
                },
            }
        }
        drop(live);
        let removed: Vec<Listening> = old.into_iter().flatten().collect();
        let addrs = removed.iter().map(|l| l.local).collect();
        stop(removed);
        addrs
    }

    fn start(&self, configured: SocketAddr, local: SocketAddr, socket: TcpListener) -> io::Result<Listening> {
        let accept = self.accept.get().cloned().ok_or_else(|| io::Error::other("no runtime to serve connections"))?;
        let socket = Arc::new(socket);
        let (bell, heard) = StopBell::new()?;
        let listening = Arc::clone(&socket);
        let acceptor = thread::Builder::new()
            .name(format!("sluice-accept-{local}"))
            .spawn(move || net::accept_each(&listening, &heard, |stream, peer| accept(stream, peer, local)))?;
        info!("listening on {local}");
        Ok(Listening { configured, local, socket, bell, acceptor })
    }

    /// Stops every acceptor and closes the sockets (in this process: a process they were
    /// handed to keeps its own descriptors).
    pub fn stop_all(&self) {
        let mut live = lock(&self.live);
        live.stopped = true;
        let all: Vec<Listening> = live.listening.drain(..).collect();
        drop(live);
        stop(all);
    }

    /// The bound addresses, in configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        lock(&self.live).listening.iter().map(|l| l.local).collect()
    }

    /// Runs `with` on the descriptor and configured address of every running listener, while
    /// none can be closed (an upgrade starts the next process in there).
    pub fn with_descriptors<T>(&self, with: impl FnOnce(&[(RawFd, SocketAddr)]) -> T) -> T {
        let live = lock(&self.live);
        let descriptors: Vec<(RawFd, SocketAddr)> =
            live.listening.iter().map(|l| (l.socket.as_raw_fd(), l.configured)).collect();
        with(&descriptors)
    }
}

/// Rings each listener's bell, waits for its acceptor, and closes its socket.
fn stop(listeners: Vec<Listening>) {
    for l in &listeners {
        l.bell.ring();
    }
    for l in listeners {
        let _ = l.acceptor.join();
        info!("stopped listening on {}", l.local);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn listeners() -> (Listeners, mpsc::Receiver<SocketAddr>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let listeners = Listeners::default();
        listeners.set_accept(Arc::new(move |_, _, local| lock(&tx).send(local).unwrap()));
        (listeners, rx)
    }

    fn any(addr: &str) -> SocketAddr {
        addr.parse().unwrap()
    }

    #[test]
    fn a_plan_keeps_listeners_by_configured_address_and_binds_the_others() {
        let (listeners, accepted) = listeners();
        let first = listeners.plan(&[any("127.0.0.1:0"), any("127.0.0.1:0")], TcpListener::bind).unwrap();
        let before = first.local_addrs();
        assert!(listeners.commit(first).is_empty());
        assert_eq!(listeners.local_addrs(), before);

        let plan = listeners.plan(&[any("127.0.0.1:0"), any("[::1]:0")], TcpListener::bind);
        let plan = match plan {
            Ok(plan) => plan,
            // No IPv6 on this host: the same step with another IPv4 address.
            Err(_) => listeners.plan(&[any("127.0.0.1:0"), any("127.0.0.2:0")], TcpListener::bind).unwrap(),
        };
        let after = plan.local_addrs();
        assert_eq!(after[0], before[0], "the first listener stays");
        let removed = listeners.commit(plan);
        assert_eq!(removed, [before[1]]);
        assert!(TcpStream::connect_timeout(&before[1], Duration::from_secs(1)).is_err(), "the removed one refuses");
        TcpStream::connect(after[1]).unwrap();
        assert_eq!(accepted.recv_timeout(Duration::from_secs(10)).unwrap(), after[1]);
        listeners.stop_all();
        assert!(listeners.local_addrs().is_empty());
    }

    #[test]
    fn a_plan_that_cannot_bind_says_which_address_and_changes_nothing() {
        let (listeners, _) = listeners();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap();
        let kept = listeners.plan(&[any("127.0.0.1:0")], TcpListener::bind).unwrap();
        listeners.commit(kept);
        let before = listeners.local_addrs();
        let err = listeners.plan(&[any("127.0.0.1:0"), busy], TcpListener::bind).err().unwrap();
        assert_eq!(err.addr, busy);
        assert_eq!(listeners.local_addrs(), before);
        listeners.stop_all();
    }
}
