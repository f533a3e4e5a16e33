//! Reloading: switching a running sluice to a new configuration without dropping a client.
//! Called for SIGHUP (`main`, through [`crate::Server::reload_file`]) and meant for the admin
//! API's `POST /reload`, which holds only the [`Runtime`].
//!
//! The new configuration is validated in full before anything changes. If it is invalid, or
//! asks for what only a restart can do (other listeners), the running one stays and the error
//! is logged and returned. Otherwise a new snapshot replaces the old one whole: exchanges in
//! flight finish with the snapshot they started with, and client connections go on with the
//! new one from their next request. Backends that stay (same URL) keep their health, counters
//! and idle connections; new ones join after their first passing probe; removed ones are let
//! go when their last exchange finishes. Writes the runtime's snapshot and alert webhook.

use crate::config::{Config, ConfigError, ServerConfig};
use crate::runtime::{Runtime, State};
use log::{error, info, warn};
use std::fmt;
use std::path::Path;

#[derive(Debug)]
pub enum ReloadError {
    /// The file could not be read or is not a valid configuration.
    Config(ConfigError),
    /// Listeners were added, removed or changed, which needs a restart.
    ListenersChanged { running: Vec<String>, requested: Vec<String> },
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Config(e) => write!(f, "{e}"),
            ReloadError::ListenersChanged { running, requested } => write!(
                f,
                "listeners cannot change without a restart (running: {}; in the new configuration: {})",
                running.join(", "),
                requested.join(", ")
            ),
        }
    }
}

impl std::error::Error for ReloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReloadError::Config(e) => Some(e),
            ReloadError::ListenersChanged { .. } => None,
        }
    }
}

/// What a reload did to the backends, counted by URL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Present before and after with the same settings.
    pub kept: usize,
    /// Present before and after with other settings (weight, limit, addresses); they keep
    /// their health and counters.
    pub changed: usize,
    /// New: they join after their first passing probe.
    pub added: usize,
    pub removed: usize,
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} backends kept, {} changed, {} added, {} removed",
            self.kept, self.changed, self.added, self.removed
        )
    }
}

/// Reads the file the running configuration came from again and switches to it.
pub fn reload_file(runtime: &Runtime) -> Result<ReloadSummary, ReloadError> {
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
    let _one_at_a_time = runtime.reload_lock();
    let current = runtime.state();
    let listeners = |c: &Config| -> Vec<String> {
        c.listeners.iter().map(|l| format!("{} {:?}", l.addr, l.mode).to_lowercase()).collect()
    };
    let (running, requested) = (listeners(&current.config), listeners(&config));
    if running != requested {
        return Err(ReloadError::ListenersChanged { running, requested });
    }
    if config.workers != current.config.workers {
        warn!("the number of workers changes only on restart; keeping {}", current.config.workers);
    }
    let next = State::new(config, Some(&current));
    let summary = compare(&servers(&current), &servers(&next));
    runtime.alerts.configure(&next.config.alerts);
    runtime.replace_state(next);
    Ok(summary)
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
        assert_eq!(summary, ReloadSummary { kept: 0, changed: 1, added: 1, removed: 1 });
        assert_eq!(compare(&[&a, &b], &[&a, &b]), ReloadSummary { kept: 2, ..Default::default() });
        assert_eq!(summary.to_string(), "0 backends kept, 1 changed, 1 added, 1 removed");
    }
}
