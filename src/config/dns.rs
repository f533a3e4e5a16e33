//! Readers for backends found by DNS: a `servers` entry written as `{"dns": "host:port"}` or
//! `{"dnsSrv": "_service._proto.name"}`, and the top-level `resolvers` and
//! `resolveInterval`. Pure: nothing is looked up here (see `ops::discovery`).

use super::keys::{Key, Kind, Shape};
use super::section::Section;
use super::values::split_host_port;
use super::{ConfigError, DiscoveryConfig, DnsLookup, DnsServers, MIN_RESOLVE_INTERVAL};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};

/// The keys of a `servers` entry found by DNS.
const DNS_KEYS: &[Key] = &[
    Key::new("dns", Kind::Text, "A host name and port whose A and AAAA records are the backends.")
        .example("web.internal:8080"),
    Key::new("dnsSrv", Kind::Text, "An SRV name whose records (targets, ports, weights) are the backends.")
        .example("_http._tcp.web.internal"),
    Key::new("weight", Kind::Uint(0, 1000), "The weight of each backend found; SRV weights scaled when absent."),
    Key::new("maxConnections", Kind::Uint(1, 1_000_000), "Exchanges in flight at once to each backend found."),
    Key::new("backup", Kind::Bool, "The backends found take traffic only when no primary is available.")
        .default("false"),
    Key::new("https", Kind::Bool, "Speak TLS to the backends found (http pools only).").default("false"),
];
/// A `servers` entry found by DNS: by address records or by SRV records.
pub(super) const DNS_ENTRY: Shape = Shape::new(&[DNS_KEYS]).either(&[&["dns"], &["dnsSrv"]]);

/// Whether a `servers` item is an entry found by DNS rather than a backend URL.
pub(super) fn is_dns_entry(item: &Value) -> bool {
    item.get("dns").is_some() || item.get("dnsSrv").is_some()
}

/// Reads the entry `item`, found at `key` of `parent`.
pub(super) fn read_dns_entry(parent: &Section, key: &str, item: &Value) -> Result<DnsServers, ConfigError> {
    let mut s = Section::new(parent.file, parent.child_path(key), item)?;
    s.allow(&DNS_ENTRY)?;
    if s.has("dns") && s.has("dnsSrv") {
        return Err(s.error("dnsSrv", "give either \"dns\" or \"dnsSrv\", not both"));
    }
    let (name, lookup) = match (s.str("dns")?, s.str("dnsSrv")?) {
        (Some(text), _) => (text.to_string(), read_address_lookup(&s, text)?),
        (None, Some(text)) => {
            let name = check_dns_name(text).map_err(|p| s.error("dnsSrv", &p))?;
            (text.to_string(), DnsLookup::Srv { name })
        }
        (None, None) => unreachable!("is_dns_entry checked that one is there"),
    };
    let entry = DnsServers {
        name,
        lookup,
        weight: s.uint("weight", 0, 1000)?.map(|n| n as u32),
        max_connections: s.uint("maxConnections", 1, 1_000_000)?.map(|n| n as usize),
        backup: s.bool("backup")?.unwrap_or(false),
        https: s.bool("https")?.unwrap_or(false),
        key_path: s.path.clone(),
    };
    s.finish()?;
    Ok(entry)
}

/// `"web.internal:8080"`: a host name and a port.
fn read_address_lookup(s: &Section, text: &str) -> Result<DnsLookup, ConfigError> {
    let problem = || format!("{text:?} is not a host name and port such as \"web.internal:8080\"");
    let (host, port) = split_host_port(text).ok_or_else(|| s.error("dns", &problem()))?;
    let port = port.filter(|&p| p != 0).ok_or_else(|| s.error("dns", &format!("{text:?} needs a port")))?;
    if host.parse::<IpAddr>().is_ok() {
        return Err(s.error("dns", &format!("{text:?} is an address; list it as a URL in \"servers\" instead")));
    }
    let host = check_dns_name(host).map_err(|p| s.error("dns", &p))?;
    Ok(DnsLookup::Address { host, port })
}

/// A host name as DNS asks for it: labels of 1 to 63 letters, digits, `-` or `_`, at most
/// 253 characters, a trailing dot allowed. Returns it in lower case without the dot.
fn check_dns_name(text: &str) -> Result<String, String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    let good_label =
        |l: &str| (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if name.is_empty() || name.len() > 253 || !name.split('.').all(good_label) {
        return Err(format!("{text:?} is not a DNS name such as \"web.internal\""));
    }
    Ok(name.to_ascii_lowercase())
}

/// The top-level `resolvers` (addresses, port 53 unless given) and `resolveInterval`.
pub(super) fn read_discovery(top: &mut Section) -> Result<DiscoveryConfig, ConfigError> {
    let mut discovery = DiscoveryConfig::default();
    let problem = "must be a list of DNS server addresses such as [\"127.0.0.1:8600\", \"10.0.0.2\"]";
    match top.get("resolvers") {
        None => {}
        Some(Value::Array(list)) if !list.is_empty() => {
            for (i, item) in list.iter().enumerate() {
                let addr = item.as_str().and_then(parse_resolver).ok_or_else(|| {
                    top.error(
                        &format!("resolvers[{i}]"),
                        "must be an address such as \"127.0.0.1:8600\" or \"10.0.0.2\"",
                    )
                })?;
                discovery.resolvers.push(addr);
            }
        }
        Some(_) => return Err(top.error("resolvers", problem)),
    }
    if let Some(interval) = top.duration("resolveInterval")? {
        if interval < MIN_RESOLVE_INTERVAL {
            return Err(top.error("resolveInterval", "must be at least \"1s\""));
        }
        discovery.resolve_interval = interval;
    }
    Ok(discovery)
}

/// `"10.0.0.2"`, `"10.0.0.2:5353"`, `"::1"` or `"[::1]:5353"`.
pub fn parse_resolver(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>().ok().or_else(|| text.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, DnsLookup};
    use std::time::Duration;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "config.json").map_err(|e| e.to_string())
    }

    #[test]
    fn dns_entries_are_read_beside_urls() {
        let c = parse(
            r#"{"port": 1, "servers": ["http://127.0.0.1:1", {"dns": "Web.Internal.:8080", "weight": 3, "backup": true},
                {"dnsSrv": "_http._tcp.web.service.consul", "maxConnections": 5, "https": true}],
                "resolvers": ["127.0.0.1:8600", "::1"], "resolveInterval": "2s"}"#,
        )
        .unwrap();
        let pool = &c.pools[0];
        assert_eq!(pool.servers.len(), 1);
        assert_eq!(pool.dns[0].lookup, DnsLookup::Address { host: "web.internal".into(), port: 8080 });
        assert_eq!(
            (pool.dns[0].weight, pool.dns[0].backup, pool.dns[0].key_path.as_str()),
            (Some(3), true, "servers[1]")
        );
        assert_eq!(pool.dns[1].lookup, DnsLookup::Srv { name: "_http._tcp.web.service.consul".into() });
        assert_eq!((pool.dns[1].max_connections, pool.dns[1].https), (Some(5), true));
        assert_eq!(c.discovery.resolvers, ["127.0.0.1:8600".parse().unwrap(), "[::1]:53".parse().unwrap()]);
        assert_eq!(c.discovery.resolve_interval, Duration::from_secs(2));
    }

    #[test]
    fn a_pool_of_dns_entries_alone_takes_its_scheme_from_its_listener() {
        let c = parse(
            r#"{"listeners": [{"listen": ":1", "mode": "tcp", "pool": "db"}],
                "pools": {"db": {"servers": [{"dns": "db.internal:5432"}]}}}"#,
        )
        .unwrap();
        assert_eq!(c.pools[0].protocol, crate::config::Protocol::Tcp);
        assert_eq!(parse(r#"{"port": 1, "servers": [{"dns": "a.b:1"}]}"#).unwrap().pools[0].protocol.scheme(), "http");
    }

    #[test]
    fn bad_dns_entries_name_their_key() {
        for (text, error) in [
            (r#"{"port": 1, "servers": [{"dns": "web.internal"}]}"#, "servers[0].dns: \"web.internal\" needs a port"),
            (r#"{"port": 1, "servers": [{"dns": "10.0.0.1:80"}]}"#, "servers[0].dns: \"10.0.0.1:80\" is an address"),
            (r#"{"port": 1, "servers": [{"dns": "we b:80"}]}"#, "servers[0].dns: \"we b\" is not a DNS name"),
            (r#"{"port": 1, "servers": [{"dns": "a:1", "dnsSrv": "b"}]}"#, "servers[0].dnsSrv: give either"),
            (r#"{"port": 1, "servers": [{"dns": "a:1", "url": "http://x:1"}]}"#, "servers[0].url: unknown key"),
            (r#"{"port": 1, "servers": [{"dns": "a:1", "wieght": 2}]}"#, "did you mean `weight`?"),
            (r#"{"port": 1, "servers": [{"dns": "a:1"}, {"dns": "a:1"}]}"#, "servers[1]: \"a:1\" is listed twice"),
            (r#"{"port": 1, "servers": [{"dns": "a:1", "backup": true}]}"#, "servers: every server is a backup"),
            (r#"{"port": 1, "servers": [{"dns": "a:1"}], "resolvers": []}"#, "resolvers: must be a list"),
            (r#"{"port": 1, "servers": [{"dns": "a:1"}], "resolvers": ["x"]}"#, "resolvers[0]: must be an address"),
            (
                r#"{"port": 1, "servers": [{"dns": "a:1"}], "resolveInterval": "500ms"}"#,
                "resolveInterval: must be at least",
            ),
            (
                r#"{"listeners": [{"listen": ":1", "mode": "tcp", "pool": "p"}], "pools": {"p": {"servers": [{"dns": "a:1", "https": true}]}}}"#,
                "pools.p.servers[0].https: TLS to backends is for http pools",
            ),
            (
                r#"{"listeners": [{"listen": ":1", "mode": "tcp", "pool": "p"}, {"listen": ":2", "pool": "p"}],
                    "pools": {"p": {"servers": [{"dns": "a:1"}]}}}"#,
                "listeners[1].pool: pool \"p\" has tcp:// servers, but an http listener",
            ),
        ] {
            let got = parse(text).unwrap_err();
            assert!(got.starts_with("config.json: ") && got.contains(error), "{text}\n  got: {got}\n  want: {error}");
        }
    }
}
