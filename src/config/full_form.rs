//! The full form of the configuration: a list of `listeners`, each with a mode and routes (or
//! one pool), and an object of named `pools`, each taking the pool keys of the short form.
//!
//! Called by `Config::parse` when the file has `listeners` or `pools`. Pools are numbered in
//! the order of their names; routes refer to them by that number. Every problem names its
//! key path, such as `listeners[1].routes[0].pool`.

use super::Section;
use super::{read_listen, read_pool, ConfigError, ListenerConfig, ListenerMode, PoolConfig, Protocol, RouteConfig};
use crate::routing::{parse_path_prefix, HostMatch};
use serde_json::Value;

/// Top-level keys of the short form, and where each belongs in the full form.
const SHORT_FORM_KEYS: &[(&str, &str)] = &[
    ("port", "a listener's \"listen\""),
    ("listen", "a listener"),
    ("servers", "a pool"),
    ("algorithm", "a pool"),
    ("sticky", "a pool"),
    ("healthCheckInterval", "a pool"),
    ("healthCheck", "a pool"),
    ("retries", "a pool"),
];

pub(super) fn read(top: &mut Section) -> Result<(Vec<ListenerConfig>, Vec<PoolConfig>), ConfigError> {
    for (key, home) in SHORT_FORM_KEYS {
        if top.has(key) {
            let problem = format!("belongs to the short form; with \"listeners\" and \"pools\" it goes in {home}");
            return Err(top.error(key, &problem));
        }
    }
    let pools = read_pools(top)?;
    let listeners = read_listeners(top, &pools)?;
    Ok((listeners, pools))
}

fn read_pools(top: &mut Section) -> Result<Vec<PoolConfig>, ConfigError> {
    let example = "such as {\"web\": {\"servers\": [\"http://127.0.0.1:5001\"]}}";
    let map = match top.get("pools") {
        None => return Err(top.error("pools", &format!("missing: name the pools the listeners use, {example}"))),
        Some(Value::Object(map)) if !map.is_empty() => map,
        Some(Value::Object(_)) => {
            return Err(top.error("pools", &format!("is empty: name at least one pool, {example}")))
        }
        Some(_) => return Err(top.error("pools", &format!("must be an object of named pools, {example}"))),
    };
    let mut pools = Vec::with_capacity(map.len());
    for (name, value) in map {
        let mut section = Section::new(top.file, format!("pools.{name}"), value)?;
        if !is_pool_name(name) {
            return Err(section.error_here("a pool name is 1 to 64 letters, digits, `-` or `_`"));
        }
        pools.push(read_pool(&mut section, name)?);
        section.finish()?;
    }
    Ok(pools)
}

fn is_pool_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn read_listeners(top: &mut Section, pools: &[PoolConfig]) -> Result<Vec<ListenerConfig>, ConfigError> {
    let example = "such as [{\"listen\": \":8080\", \"routes\": [{\"pool\": \"web\"}]}]";
    let list = match top.get("listeners") {
        None => return Err(top.error("listeners", &format!("missing: say where to listen, {example}"))),
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => return Err(top.error("listeners", &format!("is empty: give at least one, {example}"))),
        Some(_) => return Err(top.error("listeners", &format!("must be a list of listeners, {example}"))),
    };
    let mut listeners: Vec<ListenerConfig> = Vec::with_capacity(list.len());
    for (i, value) in list.iter().enumerate() {
        let mut section = Section::new(top.file, format!("listeners[{i}]"), value)?;
        let listener = read_listener(&mut section, pools)?;
        let same = listeners.iter().position(|l| l.addr == listener.addr && listener.addr.port() != 0);
        if let Some(j) = same {
            return Err(section.error("listen", &format!("{} is already the address of listeners[{j}]", listener.addr)));
        }
        section.finish()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn read_listener(s: &mut Section, pools: &[PoolConfig]) -> Result<ListenerConfig, ConfigError> {
    let addr = read_listen(s, "listen")?;
    let mode = match s.str("mode")? {
        None | Some("http") => ListenerMode::Http,
        Some("tcp") => ListenerMode::Tcp,
        Some("redirect") => ListenerMode::Redirect,
        Some(other) => {
            let problem = format!("unknown mode {other:?} (known: \"http\", \"tcp\", \"redirect\")");
            return Err(s.error("mode", &problem));
        }
    };
    let routes = match (mode, s.has("routes"), s.has("pool")) {
        (_, true, true) => return Err(s.error("pool", "give either \"routes\" or \"pool\", not both")),
        (ListenerMode::Http, true, false) => read_routes(s, pools)?,
        (_, false, true) => vec![RouteConfig { host: None, path_prefix: None, pool: pool_index(s, pools, mode)? }],
        (ListenerMode::Http, false, false) => {
            return Err(s.error("routes", "missing: list the routes, such as [{\"pool\": \"web\"}]"))
        }
        (_, true, false) => {
            let problem = format!("a {} listener has no routes; it takes one \"pool\"", mode.as_str());
            return Err(s.error("routes", &problem));
        }
        (_, false, false) => return Err(s.error("pool", "missing: name the pool this listener sends to")),
    };
    Ok(ListenerConfig { addr, mode, routes })
}

fn read_routes(listener: &mut Section, pools: &[PoolConfig]) -> Result<Vec<RouteConfig>, ConfigError> {
    let list = match listener.get("routes") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => return Err(listener.error("routes", "must be a list of routes, such as [{\"pool\": \"web\"}]")),
    };
    let mut routes: Vec<RouteConfig> = Vec::with_capacity(list.len());
    for (j, value) in list.iter().enumerate() {
        let mut s = Section::new(listener.file, listener.child_path(&format!("routes[{j}]")), value)?;
        if let Some(k) = routes.iter().position(|r| r.host.is_none() && r.path_prefix.is_none()) {
            return Err(s.error_here(&format!("never reached: routes[{k}] before it matches every request")));
        }
        let host = match s.str("host")? {
            Some(pattern) => Some(HostMatch::parse(pattern).map_err(|p| s.error("host", &p))?),
            None => None,
        };
        let path_prefix = match s.str("pathPrefix")? {
            Some(prefix) => Some(parse_path_prefix(prefix).map_err(|p| s.error("pathPrefix", &p))?),
            None => None,
        };
        let pool = pool_index(&mut s, pools, ListenerMode::Http)?;
        s.finish()?;
        routes.push(RouteConfig { host, path_prefix, pool });
    }
    Ok(routes)
}

/// Reads `pool` from `s` and finds it, checking that its backends suit a listener in `mode`.
fn pool_index(s: &mut Section, pools: &[PoolConfig], mode: ListenerMode) -> Result<usize, ConfigError> {
    let name = s.str("pool")?.ok_or_else(|| s.error("pool", "missing: name the pool to send to"))?;
    let Some(index) = pools.iter().position(|p| p.name == name) else {
        let known: Vec<String> = pools.iter().map(|p| format!("{:?}", p.name)).collect();
        return Err(s.error("pool", &format!("no pool named {name:?} (pools: {})", known.join(", "))));
    };
    let protocol = pools[index].protocol;
    let wanted = if mode == ListenerMode::Tcp { Protocol::Tcp } else { Protocol::Http };
    if protocol != wanted {
        let problem = format!(
            "pool {name:?} has {}:// servers, but a {} listener needs {}:// servers",
            protocol.scheme(),
            mode.as_str(),
            wanted.scheme()
        );
        return Err(s.error("pool", &problem));
    }
    Ok(index)
}
