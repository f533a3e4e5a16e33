//! Values written as strings: listen addresses, backend and webhook URLs, durations and path
//! prefixes. Pure: nothing here looks a name up (that is `resolve`'s job).

use super::{Protocol, ServerConfig, Webhook};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Parses a listen address: `":8080"` and `"8080"` mean every interface; otherwise an IP
/// address with a port (`"127.0.0.1:8080"`, `"[::1]:8080"`), or `localhost` with a port for
/// 127.0.0.1. Other host names are refused rather than looked up.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let any = |port: &str| {
        port.parse::<u16>()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p))
            .map_err(|_| format!("{text:?} has no valid port (0 to 65535)"))
    };
    if let Some(port) = text.strip_prefix(':') {
        return any(port);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return any(text);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match text.strip_prefix("localhost:").map(str::parse::<u16>) {
        Some(Ok(port)) => Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
        _ => Err(format!("{text:?} is not an address such as \":8080\" or \"127.0.0.1:8080\"")),
    }
}

/// Parses `http://host[:port][/]` or `tcp://host:port` into a backend whose addresses are not
/// looked up yet (see `resolve`). Callers check that the scheme suits the pool it joins.
pub fn server_from_url(url: &str) -> Result<ServerConfig, String> {
    let (protocol, tls, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Protocol::Http, false, rest),
        Some(("https", rest)) => (Protocol::Http, true, rest),
        Some(("tcp", rest)) => (Protocol::Tcp, false, rest),
        Some((scheme, _)) => {
            return Err(format!(
                "{url:?}: scheme {scheme:?} is not supported (use http:// or https://, or tcp:// in tcp pools)"
            ))
        }
        None => return Err(format!("{url:?} is not a URL such as \"http://127.0.0.1:5001\"")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!("{url:?}: give only scheme, host and port (no path, query or user)"));
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| format!("{url:?} has a bad host or port"))?;
    let port = match (port, protocol) {
        (Some(port), _) => port,
        (None, Protocol::Http) if tls => 443,
        (None, Protocol::Http) => 80,
        (None, Protocol::Tcp) => return Err(format!("{url:?}: a tcp:// backend needs a port")),
    };
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    Ok(ServerConfig {
        url: url.to_string(),
        protocol,
        tls,
        authority,
        host: host.to_string(),
        port,
        addrs: Vec::new(),
        weight: 1,
        max_connections: None,
        backup: false,
        discovered_from: None,
    })
}

/// Parses `http://host[:port][/path]` into a webhook whose addresses are not looked up yet.
pub fn webhook_from_url(url: &str) -> Result<Webhook, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "{url:?} is not a URL such as \"http://127.0.0.1:9090/alerts\" (only http:// is supported)"
        ));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
    if authority.contains('@') || path.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
        return Err(format!("{url:?}: give a host, an optional port and a path, without spaces or a user"));
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| format!("{url:?} has a bad host or port"))?;
    let port = port.unwrap_or(80);
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    Ok(Webhook { url: url.to_string(), authority, host: host.to_string(), port, addrs: Vec::new(), path })
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`; the host comes back without brackets.
pub(super) fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse::<u16>().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
}

/// Parses a duration with a unit: `"250ms"`, `"2s"`, `"1m"`, `"1h"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let help = "must be a whole number with a unit, such as \"250ms\", \"2s\", \"1m\" or \"1h\"";
    if number.is_empty() {
        return Err(format!("{text:?} {help}"));
    }
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is too large"))?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?} {help}")),
    };
    let millis = n.checked_mul(millis_per_unit).ok_or_else(|| format!("{text:?} is too large"))?;
    if millis == 0 {
        return Err(format!("{text:?} must be more than zero"));
    }
    Ok(Duration::from_millis(millis))
}

/// Reads a route's `pathPrefix`: it must start with `/`; a trailing `/` is dropped (except
/// for `/` itself), since matching is by whole segments anyway.
pub fn parse_path_prefix(prefix: &str) -> Result<String, String> {
    if !prefix.starts_with('/') {
        return Err(format!("{prefix:?} must start with `/`"));
    }
    if prefix.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#') {
        return Err(format!("{prefix:?} must be a path without spaces, control characters, `?` or `#`"));
    }
    let trimmed = prefix.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() })
}
