//! Reloading: switching a running sluice to a new configuration without dropping a client.
//! Called for SIGHUP (`main`, through [`crate::Server::reload_from_file`]) and for the admin
//! API's `POST /reload`, which holds only the [`Runtime`].
//!
//! The new configuration is validated in full before anything changes. If it is invalid, or
//! one of its new listeners cannot be bound, or its access log cannot be opened, the running
//! one stays and the error is logged and returned. Otherwise a new snapshot replaces the old
//! one whole (through `Runtime::change_state`, one change at a time): exchanges in flight
//! finish with the snapshot they started with, and client connections go on with the new one
//! from their next request.
//!
//! Listeners are matched by their configured address. One that stays keeps its socket and
//! serves the new routes, TLS, timeouts and mode from its next connection or request, without
//! a moment of refusal; a new one is bound before anything changes; a removed one closes its
//! socket (new connections are refused) and its connections drain with the last snapshot that
//! had it. Backends that stay (same URL) keep their health, counters and idle connections;
//! new ones join after their first passing probe; removed ones are let go when their last
//! exchange finishes; changes made through the admin API are laid over the file again.
//! Writes the runtime's snapshot, listeners, access log and webhook.

use crate::config::{Config, ConfigError, ServerConfig};
use crate::listeners::ListenerPlan;
use crate::runtime::{Runtime, State};
use crate::tls::TlsSet;
use log::{error, info, warn};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

/// Why a reload was refused; the running configuration stays.
#[derive(Debug)]
pub enum ReloadError {
    /// The file could not be read or is not a valid configuration.
    Config(ConfigError),
    /// A new listener's address cannot be bound.
    Bind {
        addr: SocketAddr,
        source: io::Error,
    },
    AccessLog {
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Config(e) => write!(f, "{e}"),
            ReloadError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ReloadError::AccessLog { path, source } => {
                write!(f, "cannot open the access log {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for ReloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReloadError::Config(e) => Some(e),
            ReloadError::Bind { source, .. } | ReloadError::AccessLog { source, .. } => Some(source),
        }
    }
}

/// What a reload did to the backends, counted by URL, and to the listeners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Present before and after with the same settings.
    pub kept: usize,
    /// Present before and after with other settings (weight, limit, addresses); they keep
    /// their health and counters.
    pub changed: usize,
    /// New: they join after their first passing probe.
    pub added: usize,
    pub removed: usize,
    /// The bound addresses of listeners the reload added, and of those it removed.
    pub listeners_added: Vec<SocketAddr>,
    pub listeners_removed: Vec<SocketAddr>,
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} backends kept, {} changed, {} added, {} removed",
            self.kept, self.changed, self.added, self.removed
        )?;
        let list = |addrs: &[SocketAddr]| addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
        if !self.listeners_added.is_empty() {
            write!(f, "; listening on {}", list(&self.listeners_added))?;
        }
        if !self.listeners_removed.is_empty() {
            write!(f, "; stopped listening on {}", list(&self.listeners_removed))?;
        }
        Ok(())
    }
}

/// Reads the file the running configuration came from again and switches to it.
pub fn reload_from_file(runtime: &Runtime) -> Result<ReloadSummary, ReloadError> {
    let source = runtime.state().config.source.clone();
    let result = Config::load(Path::new(&source)).map_err(ReloadError::Config).and_then(|c| apply(runtime, c));
    log_result(&source, &result);
    result
}

/// Switches to `config`, which has been validated already.
pub fn reload(runtime: &Runtime, config: Config) -> Result<ReloadSummary, ReloadError> {
    let source = config.source.clone();
    let result = apply(runtime, config);
    log_result(&source, &result);
    result
}

fn log_result(source: &str, result: &Result<ReloadSummary, ReloadError>) {
    match result {
        Ok(summary) => info!("reloaded {source}: {summary}"),
        Err(e) => error!("reload refused, keeping the running configuration: {e}"),
    }
}

fn apply(runtime: &Runtime, config: Config) -> Result<ReloadSummary, ReloadError> {
    let tls = TlsSet::load(&config, &runtime.challenges).map_err(ReloadError::Config)?;
    let summary = runtime.change_state_then(
        |current| {
            warn_about_restart_only_keys(&current.config, &config);
            let addrs: Vec<SocketAddr> = config.listeners.iter().map(|l| l.addr).collect();
            let plan = runtime
                .listeners
                .plan(&addrs, TcpListener::bind)
                .map_err(|e| ReloadError::Bind { addr: e.addr, source: e.source })?;
            runtime.reopen_access_log(&config.access_log).map_err(|source| ReloadError::AccessLog {
                path: config.access_log.path.clone().unwrap_or_default(),
                source,
            })?;
            let bound = plan.local_addrs();
            let next = State::new(config, tls, Some(current), bound.clone());
            let mut summary = compare(&servers(current), &servers(&next));
            summary.listeners_added = bound.iter().filter(|a| !current.bound.contains(a)).copied().collect();
            summary.listeners_removed = current.bound.iter().filter(|a| !bound.contains(a)).copied().collect();
            runtime.retire_listeners(&summary.listeners_removed, &runtime.state(), &summary.listeners_added);
            runtime.alerts.configure(&next.config.alerts);
            Ok::<_, ReloadError>((next, (summary, plan)))
        },
        |(mut summary, plan): (ReloadSummary, ListenerPlan)| {
            // The snapshot with the new listeners is in place: start them, close the removed ones.
            summary.listeners_removed = runtime.listeners.commit(plan);
            summary
        },
    )?;
    Ok(summary)
}

/// Settings that a reload leaves as they are, with a warning when the file changed them.
fn warn_about_restart_only_keys(running: &Config, next: &Config) {
    if next.workers != running.workers {
        warn!("the number of workers changes only on restart; keeping {}", running.workers);
    }
    let admin_listen = |c: &Config| c.admin.as_ref().map(|a| a.listen);
    if admin_listen(next) != admin_listen(running) {
        warn!("admin.listen changes only on restart; the admin API stays as it is");
    }
}

fn servers(state: &State) -> Vec<&ServerConfig> {
    state.config.pools.iter().flat_map(|p| p.servers.iter()).collect()
}

/// Counts the backends of `after` against those of `before`, by URL.
fn compare(before: &[&ServerConfig], after: &[&ServerConfig]) -> ReloadSummary {
    let mut summary = ReloadSummary::default();
    for server in after {
        match before.iter().find(|b| b.url == server.url) {
            Some(old) if *old == *server => summary.kept += 1,
            Some(_) => summary.changed += 1,
            None => summary.added += 1,
        }
    }
    summary.removed = before.iter().filter(|b| !after.iter().any(|a| a.url == b.url)).count();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::server_from_url;

    #[test]
    fn compare_counts_backends_by_url() {
        let a = server_from_url("http://127.0.0.1:1").unwrap();
        let b = server_from_url("http://127.0.0.1:2").unwrap();
        let c = server_from_url("http://127.0.0.1:3").unwrap();
        let heavy_a = ServerConfig { weight: 5, ..a.clone() };
        let summary = compare(&[&a, &b], &[&heavy_a, &c]);
        assert_eq!(summary, ReloadSummary { kept: 0, changed: 1, added: 1, removed: 1, ..Default::default() });
        assert_eq!(compare(&[&a, &b], &[&a, &b]), ReloadSummary { kept: 2, ..Default::default() });
        assert_eq!(summary.to_string(), "0 backends kept, 1 changed, 1 added, 1 removed");
    }
}
