//! Looking up host names: the one step of loading a configuration that does I/O. Backends
//! and the alerts webhook are resolved once, when the configuration is loaded or reloaded and
//! when the admin API adds a backend, as nginx does without a `resolver`.

use super::{Config, ConfigError, ServerConfig, Webhook};
use std::net::{SocketAddr, ToSocketAddrs};

impl Config {
    /// Fills in the addresses of every backend and of the alerts webhook. An error names the
    /// key of the entry whose host could not be looked up.
    pub fn resolve(&mut self) -> Result<(), ConfigError> {
        let error = |file: &str, key: String, problem: String| ConfigError { file: file.to_string(), key, problem };
        for pool in &mut self.pools {
            for (i, server) in pool.servers.iter_mut().enumerate() {
                let key = match pool.key_path.as_str() {
                    "" => format!("servers[{i}]"),
                    path => format!("{path}.servers[{i}]"),
                };
                resolve_server(server).map_err(|problem| error(&self.source, key, problem))?;
            }
        }
        if let Some(webhook) = &mut self.alerts.webhook {
            resolve_webhook(webhook).map_err(|problem| error(&self.source, "alerts.webhook".into(), problem))?;
        }
        Ok(())
    }
}

/// Looks up a backend's host: IPv4 addresses first, since "localhost" often resolves to ::1
/// first while servers listen on 127.0.0.1.
pub fn resolve_server(server: &mut ServerConfig) -> Result<(), String> {
    let mut addrs = lookup(&server.url, &server.host, server.port)?;
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs.dedup();
    server.addrs = addrs;
    Ok(())
}

pub fn resolve_webhook(webhook: &mut Webhook) -> Result<(), String> {
    webhook.addrs = lookup(&webhook.url, &webhook.host, webhook.port)?;
    Ok(())
}

fn lookup(url: &str, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| format!("{url:?}: cannot resolve {host:?} ({e})"))?.collect();
    if addrs.is_empty() {
        return Err(format!("{url:?}: {host:?} resolves to no address"));
    }
    Ok(addrs)
}
