//! One snapshot of the configuration: the file as read, the changes made at run time, the
//! effective configuration derived from both, the pools built from it, the TLS material and
//! the listeners' bound addresses. Replaced whole, never changed in place.

use crate::backend::Backend;
use crate::config::{Config, ListenerConfig, RouteConfig};
use crate::http::head::{HeaderList, RequestHead};
use crate::ops::changes::{Place, RuntimeChanges};
use crate::pool::Pool;
use crate::routing;
use crate::tls::TlsSet;
use std::net::SocketAddr;
use std::sync::Arc;

/// One consistent view of the configuration and the pools built from it.
///
/// Three things, kept apart so that no change is ever built on another change's result: the
/// configuration exactly as the file says it, the changes made at run time, and the effective
/// configuration derived from both. Every new snapshot (an admin change, a reload) derives the
/// effective configuration from the file again.
pub struct State {
    /// The configuration as read from the file, with no runtime change applied.
    pub file: Config,
    /// What the admin API changed, applied again over every reload.
    pub changes: RuntimeChanges,
    /// The effective configuration: `file` with `changes` laid over it.
    pub config: Config,
    pub pools: Vec<Arc<Pool>>,
    /// The certificates and TLS settings read for `file`.
    pub tls: Arc<TlsSet>,
    /// The address each of `config.listeners` is bound to, in the same order.
    pub bound: Vec<SocketAddr>,
}

impl State {
    /// Builds the pools for `file`, as read from the file, keeping the runtime changes made
    /// on `previous`. With a `previous` state (a reload), its backends are kept by URL and new
    /// ones join after a passing probe; without (the first start), every backend starts up.
    /// `bound` holds the address each listener of `file` is bound to.
    pub fn new(mut file: Config, tls: TlsSet, previous: Option<&State>, bound: Vec<SocketAddr>) -> State {
        if let Some(previous) = previous {
            keep_running_edges(&mut file, &previous.file);
        }
        let changes = previous.map_or_else(RuntimeChanges::default, |p| p.changes.settled(&file));
        let running = previous.map(State::backends);
        State::derive(file, Arc::new(tls), changes, running.as_deref(), bound)
    }

    /// The first snapshot when backends were found by DNS before serving: `changes` adds
    /// them, and like the file's backends they all start up. `bound` holds the address each
    /// listener of `file` is bound to.
    pub fn first(file: Config, tls: TlsSet, changes: RuntimeChanges, bound: Vec<SocketAddr>) -> State {
        State::derive(file, Arc::new(tls), changes, None, bound)
    }

    /// The same file with other runtime changes: the next snapshot after an admin change or
    /// a change found by DNS. `joining` are backends built for the change (already probed),
    /// reused by URL.
    pub fn with_changes(&self, changes: RuntimeChanges, joining: &[Arc<Backend>]) -> State {
        let mut running: Vec<Arc<Backend>> = joining.to_vec();
        running.extend(self.backends());
        State::derive(self.file.clone(), Arc::clone(&self.tls), changes, Some(&running), self.bound.clone())
    }

    /// The same file and changes with other TLS material: the next snapshot after ACME
    /// stored a new certificate. Backends are kept as they are.
    pub fn with_tls(&self, tls: TlsSet) -> State {
        let running = self.backends();
        State::derive(self.file.clone(), Arc::new(tls), self.changes.clone(), Some(&running), self.bound.clone())
    }

    /// Lays `changes` over `file` and builds the pools, reusing the backends of `running`
    /// (`None` on the first start) as [`Pool::new`] says; `bound` holds the listeners' bound
    /// addresses.
    fn derive(
        file: Config,
        tls: Arc<TlsSet>,
        changes: RuntimeChanges,
        running: Option<&[Arc<Backend>]>,
        bound: Vec<SocketAddr>,
    ) -> State {
        let config = changes.apply(file.clone());
        let pools: Vec<Arc<Pool>> = config
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| Arc::new(Pool::new(p.clone(), running, tls.pools.get(i).cloned().flatten())))
            .collect();
        // The drain flags follow `changes` both ways (an undrain, an address back in DNS). A
        // backend listed by two pools is one `Backend`: drained if either pool drains it.
        let placed = || pools.iter().flat_map(|p| p.backends.iter().map(move |b| (p.name(), b)));
        let drained: Vec<&Arc<Backend>> =
            placed().filter(|(pool, b)| changes.is_drained(&Place::new(pool, b.url()))).map(|(_, b)| b).collect();
        for (_, backend) in placed() {
            let drain = drained.iter().any(|d| Arc::ptr_eq(d, backend));
            if backend.is_draining() != drain {
                backend.set_draining(drain);
            }
        }
        State { file, changes, config, pools, tls, bound }
    }

    /// The index in `config.listeners` of the listener bound to `local`.
    pub fn listener_at(&self, local: SocketAddr) -> Option<usize> {
        self.bound.iter().position(|&addr| addr == local)
    }

    /// Every backend of every pool.
    pub fn backends(&self) -> Vec<Arc<Backend>> {
        self.pools.iter().flat_map(|p| p.backends.iter().cloned()).collect()
    }

    /// The pool named `name`, or the first pool when no name is given.
    pub fn pool(&self, name: Option<&str>) -> Option<&Arc<Pool>> {
        match name {
            Some(name) => self.pools.iter().find(|p| p.name() == name),
            None => self.pools.first(),
        }
    }

    /// The route that serves `head` on `listener` and its pool: the first route matching
    /// its `Host` and path (see [`routing`]), if any.
    pub fn route<'a>(
        &'a self,
        listener: &'a ListenerConfig,
        head: &RequestHead,
    ) -> Option<(&'a Arc<Pool>, &'a RouteConfig)> {
        let host = head.value("host").and_then(routing::request_host);
        let index = routing::find_route(&listener.routes, host, &head.target)?;
        let route = &listener.routes[index];
        Some((&self.pools[route.pool], route))
    }

    /// The one pool of a tcp or redirect listener (the first route's, for an http listener).
    pub fn listener_pool(&self, listener: &ListenerConfig) -> Option<&Arc<Pool>> {
        listener.routes.first().map(|route| &self.pools[route.pool])
    }
}

/// Puts the running edge controls of `running` in the place of those just read into `config`
/// wherever a route's rules are unchanged, so a reload keeps their counters and buckets.
fn keep_running_edges(config: &mut Config, running: &Config) {
    for (listener, old) in config.listeners.iter_mut().zip(&running.listeners) {
        for (route, old) in listener.routes.iter_mut().zip(&old.routes) {
            if let (Some(new), Some(old)) = (&route.edge, &old.edge) {
                if new.is_same_as(old) {
                    route.edge = Some(Arc::clone(old));
                }
            }
        }
    }
}
