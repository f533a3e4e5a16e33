//! Backends found by DNS: the `{"dns": ...}` and `{"dnsSrv": ...}` entries of `servers`,
//! looked up before serving and again on one thread, `sluice-dns`, every `resolveInterval`
//! (or sooner when the records' TTL is shorter, never more often than once a second).
//!
//! What a lookup changes goes through the same steps as the admin API (`membership`): a new
//! address joins after a first probe, a vanished one drains and is taken out once its last
//! exchange ends, an unchanged one is left alone with its health and counters. A lookup that
//! fails or finds nothing (NXDOMAIN, a timeout, an empty answer) changes nothing: the last
//! known backends stay, and an alert `dns_failed` is raised once until the entry resolves
//! again. The backends found are recorded in the snapshot's `RuntimeChanges`, marked with
//! their entry, so a reload keeps them (and their health) while the file keeps the entry.
//!
//! At the first start every entry is looked up once before the listeners serve, and the
//! backends found start up, like the file's own (`State::first`). Never runs on a worker.

pub mod lookup;
pub mod records;

use crate::backend::Backend;
use crate::config::{Config, DiscoveryConfig, DnsServers, Protocol, ServerConfig, MIN_RESOLVE_INTERVAL};
use crate::ops::alerts::{AlertEvent, AlertKind, AlertSubject, Alerts};
use crate::ops::changes::{Place, RuntimeChanges};
use crate::ops::membership;
use crate::pool::Pool;
use crate::runtime::Runtime;
use log::{info, warn};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

/// Where the DNS servers are listed when `resolvers` is not configured.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// How long the thread sleeps when no entry is watched (it wakes on every reload anyway).
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// The DNS entries being watched, with what each last found.
#[derive(Default)]
pub struct Discovery {
    watches: Vec<Watch>,
}

struct Watch {
    pool: String,
    /// The pool's scheme, which the backends found take.
    protocol: Protocol,
    entry: DnsServers,
    /// When to look it up next.
    due: Instant,
    /// The backends of the last answer that had any, by URL; `None` until one has.
    known: Option<Vec<ServerConfig>>,
    /// The last lookup failed (and `dns_failed` was raised for that run of failures).
    failing: bool,
}

impl Discovery {
    /// Looks up every DNS entry of `config` once, before serving; returns the watches and the
    /// changes that add the backends found. Failures raise `dns_failed` on `alerts`.
    pub fn first_round(config: &Config, alerts: &Alerts) -> (Discovery, RuntimeChanges) {
        let mut discovery = Discovery::default();
        discovery.follow(config);
        let resolvers = resolvers(&config.discovery);
        let mut changes = RuntimeChanges::default();
        for watch in &mut discovery.watches {
            watch.look_up(&resolvers, config.discovery.resolve_interval, alerts);
            for server in watch.known.iter().flatten() {
                changes.add(&watch.pool, server.clone());
            }
        }
        (discovery, changes)
    }

    /// Starts the `sluice-dns` thread; it stops when sluice stops.
    pub fn spawn(self, runtime: Arc<Runtime>) -> io::Result<JoinHandle<()>> {
        thread::Builder::new().name("sluice-dns".into()).spawn(move || self.run(&runtime))
    }

    fn run(mut self, runtime: &Runtime) {
        loop {
            let state = runtime.state();
            self.follow(&state.file);
            let resolvers = resolvers(&state.file.discovery);
            let interval = state.file.discovery.resolve_interval;
            drop(state);
            let now = Instant::now();
            for watch in self.watches.iter_mut().filter(|w| w.due <= now) {
                watch.look_up(&resolvers, interval, &runtime.alerts);
            }
            for watch in &self.watches {
                watch.apply(runtime);
            }
            membership::finish_removals(runtime);
            let next = self.watches.iter().map(|w| w.due).min();
            let wait = next.map_or(IDLE_WAIT, |due| due.saturating_duration_since(Instant::now()));
            if runtime.sleep_until_change(wait) {
                return;
            }
        }
    }

    /// Watches the DNS entries `config` has: new ones are due at once, changed ones too,
    /// and those the file no longer has are dropped (their backends leave with the reload).
    fn follow(&mut self, config: &Config) {
        let listed =
            |w: &Watch| config.pools.iter().any(|p| p.name == w.pool && p.dns.iter().any(|d| d.name == w.entry.name));
        self.watches.retain(listed);
        for pool in &config.pools {
            for entry in &pool.dns {
                let found = self.watches.iter_mut().find(|w| w.pool == pool.name && w.entry.name == entry.name);
                match found {
                    Some(w) if w.entry == *entry && w.protocol == pool.protocol => {}
                    Some(w) => {
                        (w.entry, w.protocol, w.due) = (entry.clone(), pool.protocol, Instant::now());
                    }
                    None => self.watches.push(Watch {
                        pool: pool.name.clone(),
                        protocol: pool.protocol,
                        entry: entry.clone(),
                        due: Instant::now(),
                        known: None,
                        failing: false,
                    }),
                }
            }
        }
    }
}

impl Watch {
    /// Looks the entry up and sets when to do so next.
    fn look_up(&mut self, resolvers: &[SocketAddr], interval: Duration, alerts: &Alerts) {
        match records::find(&self.entry, self.protocol, resolvers) {
            Ok(found) => {
                if self.failing {
                    info!("discovery: pool {:?}: {} resolves again", self.pool, self.entry.name);
                }
                let mut servers = found.servers;
                servers.sort_by(|a, b| a.url.cmp(&b.url));
                self.known = Some(servers);
                self.failing = false;
                let ttl = found.ttl.map_or(interval, |s| Duration::from_secs(u64::from(s)));
                self.due = Instant::now() + interval.min(ttl).max(MIN_RESOLVE_INTERVAL);
            }
            Err(problem) => {
                let kept = self.known.as_ref().map_or(0, Vec::len);
                if !self.failing {
                    warn!(
                        "discovery: pool {:?}: {}: {problem}; keeping the {kept} backends last found",
                        self.pool, self.entry.name
                    );
                    let subject = AlertSubject::Discovery {
                        pool: self.pool.clone(),
                        name: self.entry.name.clone(),
                        problem: problem.to_string(),
                    };
                    alerts.raise(AlertEvent { kind: AlertKind::DnsFailed, subject, at: SystemTime::now() });
                }
                self.failing = true;
                self.due = Instant::now() + interval;
            }
        }
    }

    /// Brings the pool in line with what the entry last found, through `membership`: new
    /// backends are probed first (outside any lock), then one new snapshot holds every change.
    fn apply(&self, runtime: &Runtime) {
        let Some(known) = &self.known else { return };
        let state = runtime.state();
        let Some(pool) = state.pool(Some(&self.pool)) else { return };
        let plan = Plan::new(&state.changes, pool, &self.entry.name, known);
        if plan.is_empty() {
            return;
        }
        let probed: Vec<_> = plan.joining.iter().map(|s| membership::probed_backend(s.clone(), pool)).collect();
        drop(state);
        let joining: Vec<_> = probed.iter().map(|(b, _)| Arc::clone(b)).collect();
        let applied = runtime.change_state(|current| {
            let pool = current.pool(Some(&self.pool)).ok_or(())?;
            let plan = Plan::new(&current.changes, pool, &self.entry.name, known);
            if plan.is_empty() {
                return Err(());
            }
            let mut changes = current.changes.clone();
            plan.write(&self.pool, &mut changes);
            Ok((current.with_changes(changes, &joining), plan))
        });
        if let Ok(plan) = applied {
            self.log(&plan, &probed);
        }
    }

    fn log(&self, plan: &Plan, probed: &[(Arc<Backend>, Result<(), String>)]) {
        let (pool, name) = (&self.pool, &self.entry.name);
        for server in &plan.joining {
            let probe = probed.iter().find(|(b, _)| b.url() == server.url).map(|(_, p)| p);
            let how = match probe {
                Some(Ok(())) => "probe passed; in rotation now".to_string(),
                Some(Err(why)) => format!("probe failed ({why}); joins after passing health checks"),
                None => "joins after its first passing probe".to_string(),
            };
            info!("discovery: pool {pool:?}: {} found by {name}: {how}", server.url);
        }
        for server in &plan.updated {
            info!("discovery: pool {pool:?}: {} now has weight {} (from {name})", server.url, server.weight);
        }
        for place in &plan.returning {
            info!("discovery: pool {pool:?}: {} is listed by {name} again; it stays", place.url);
        }
        for place in &plan.leaving {
            info!("discovery: pool {pool:?}: {} is no longer listed by {name}; draining it", place.url);
        }
    }
}

/// What one entry's answer changes in a pool.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    /// Found and not in the pool yet.
    joining: Vec<ServerConfig>,
    /// Found with other settings (an SRV weight changed).
    updated: Vec<ServerConfig>,
    /// Found again while draining out: they stay.
    returning: Vec<Place>,
    /// No longer found: they drain and are taken out.
    leaving: Vec<Place>,
}

impl Plan {
    fn new(changes: &RuntimeChanges, pool: &Pool, name: &str, known: &[ServerConfig]) -> Plan {
        let mut plan = Plan::default();
        for server in known {
            let place = Place::new(pool.name(), &server.url);
            match pool.backends.iter().find(|b| b.url() == server.url) {
                None => plan.joining.push(server.clone()),
                // The file or another entry lists the same address: theirs it stays.
                Some(b) if b.config.discovered_from.as_deref() != Some(name) => {}
                Some(b) => {
                    if changes.is_removing(&place) {
                        plan.returning.push(place);
                    }
                    if b.config != *server {
                        plan.updated.push(server.clone());
                    }
                }
            }
        }
        for gone in changes.discovered(pool.name(), name).filter(|s| !known.iter().any(|k| k.url == s.url)) {
            let place = Place::new(pool.name(), &gone.url);
            if !changes.is_removing(&place) {
                plan.leaving.push(place);
            }
        }
        plan
    }

    fn is_empty(&self) -> bool {
        *self == Plan::default()
    }

    fn write(&self, pool: &str, changes: &mut RuntimeChanges) {
        for server in &self.joining {
            changes.add(pool, server.clone());
        }
        for server in &self.updated {
            changes.update(pool, server.clone());
        }
        for place in &self.returning {
            changes.undrain(place);
        }
        for place in &self.leaving {
            changes.begin_removal(place);
        }
    }
}

/// The DNS servers to ask: `resolvers`, else the `nameserver` lines of /etc/resolv.conf,
/// else the local one (as the C library does).
fn resolvers(config: &DiscoveryConfig) -> Vec<SocketAddr> {
    if !config.resolvers.is_empty() {
        return config.resolvers.clone();
    }
    let listed = std::fs::read_to_string(RESOLV_CONF).map(|text| nameservers(&text)).unwrap_or_default();
    if listed.is_empty() {
        return vec![SocketAddr::from(([127, 0, 0, 1], 53))];
    }
    listed
}

/// The `nameserver` addresses of a resolv.conf, on port 53.
fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|address| address.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_from_resolv_conf() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\noptions ndots:5\nnameserver bad\n";
        assert_eq!(nameservers(text), ["10.0.0.2:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]);
    }
}
