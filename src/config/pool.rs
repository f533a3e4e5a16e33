//! Readers for a pool's keys (`servers`, `algorithm`, `sticky`, health checking, `retries`),
//! shared by the short form (at the top level) and the full form (under `pools`), and for one
//! backend, which the admin API also uses.

use super::dns::{is_dns_entry, read_dns_entry, DNS_ENTRY};
use super::keys::{Key, Kind, Shape};
use super::section::Section;
use super::tls::{read_pool_tls, POOL_TLS};
use super::*;
use serde_json::Value;

/// The keys of a pool, at the top level of the short form or under `pools.NAME`.
pub(super) const POOL_KEYS: &[Key] = &[
    Key::new("servers", Kind::List(&SERVER, 1), "The backends: http://, https:// or tcp:// URLs, or objects with url.")
        .required()
        .example(r#"["http://127.0.0.1:5001"]"#),
    Key::new("algorithm", Kind::OneOf(&ALGORITHMS), "How a backend is picked.").default("round-robin"),
    Key::new("sticky", Kind::Object(&STICKY), "Pin each client to the backend that served it first, by a cookie."),
    Key::new("healthCheckInterval", Kind::Duration, "Time between health probes of each backend.").default("2s"),
    Key::new("healthCheck", Kind::Object(&HEALTH_CHECK), "The health probe."),
    Key::new(
        "retries",
        Kind::Uint(0, 100),
        "Other backends to try when connecting fails or a fresh one does not answer.",
    )
    .default("2"),
    Key::new("tls", Kind::Object(&POOL_TLS), "TLS to https:// backends."),
    Key::new(
        "sendProxy",
        Kind::OneOf(&["v1", "v2"]),
        "Open each backend connection with a PROXY header for its client.",
    ),
];

/// The names `algorithm` takes; a test checks them against [`Algorithm::ALL`].
const ALGORITHMS: [&str; 5] = ["round-robin", "weighted-round-robin", "least-connections", "ip-hash", "random"];

/// A backend: a URL string or an object, or an entry whose backends DNS finds.
const SERVER: Kind = Kind::AnyOf(&[Kind::Text, Kind::Object(&SERVER_OBJECT), Kind::Object(&DNS_ENTRY)]);

/// The keys of a backend written as an object.
const SERVER_KEYS: &[Key] = &[
    Key::new("url", Kind::Text, "The backend's URL: http://, https:// or tcp://, host and port.")
        .required()
        .example("http://127.0.0.1:5001"),
    Key::new("weight", Kind::Uint(0, 1000), "Its share of requests under weighted algorithms (0: none).").default("1"),
    Key::new(
        "maxConnections",
        Kind::Uint(1, 1_000_000),
        "Exchanges in flight at once; further requests queue for timeouts.queue.",
    ),
    Key::new("backup", Kind::Bool, "Takes traffic only when no primary backend is available.").default("false"),
];
const SERVER_OBJECT: Shape = Shape::new(&[SERVER_KEYS]);

const STICKY: Shape = Shape::new(&[&[Key::new("cookie", Kind::Text, "The cookie's name, such as \"SERVERID\".")
    .required()
    .example("SERVERID")]]);

const HEALTH_CHECK: Shape = Shape::new(&[&[
    Key::new("path", Kind::Text, "The path probed; 2xx and 3xx pass unless expectStatus says otherwise.").default("/"),
    Key::new("method", Kind::Pattern("^[A-Z]+$"), "The probe's method.").default("HEAD"),
    Key::new("timeout", Kind::Duration, "How long one probe may take.").default("1s"),
    Key::new("rise", Kind::Uint(1, 1000), "Passing probes in a row that bring a backend back.").default("2"),
    Key::new("fall", Kind::Uint(1, 1000), "Failing probes in a row that take a backend out.").default("2"),
    Key::new(
        "passiveFails",
        Kind::Uint(0, 1000),
        "Failures in a row on real traffic that take a backend out at once (0: off); the value of fall when absent.",
    ),
    Key::new("host", Kind::Text, "The probe's Host header; the backend's host:port when absent.")
        .example("app.example.com"),
    Key::new(
        "expectStatus",
        Kind::AnyOf(&[Kind::Uint(100, 599), Kind::List(&Kind::Uint(100, 599), 1)]),
        "The statuses that pass: one code or a list; 2xx and 3xx when absent.",
    ),
]]);

/// Reads the pool keys (`tls_shared_with`: the keys that the pool's `tls` object may also
/// hold for the listener, in the short form) (`servers`, `algorithm`, `sticky`, health checking, `retries`) from
/// `section`.
pub(super) fn read_pool(section: &mut Section, name: &str, tls_shared_with: &[Key]) -> Result<PoolConfig, ConfigError> {
    let (servers, dns) = read_servers(section)?;
    let algorithm = match section.str("algorithm")? {
        None => Algorithm::RoundRobin,
        Some(text) => Algorithm::from_name(text).ok_or_else(|| {
            let known: Vec<String> = Algorithm::ALL.iter().map(|a| format!("{:?}", a.name())).collect();
            section.error("algorithm", &format!("unknown algorithm {text:?} (known: {})", known.join(", ")))
        })?,
    };
    let sticky = read_sticky(section)?;
    let health_check = read_health_check(section)?;
    let retries = section.uint("retries", 0, 100)?.map_or(2, |n| n as u32);
    let tls = read_backend_tls(section, tls_shared_with)?;
    let send_proxy = read_send_proxy(section)?;
    // A pool of DNS entries alone speaks HTTP unless a tcp listener sends to it (`full_form`).
    let protocol = servers.first().map_or(Protocol::Http, |s| s.protocol);
    let key_path = section.path.clone();
    let pool = PoolConfig {
        name: name.to_string(),
        key_path,
        protocol,
        servers,
        dns,
        algorithm,
        sticky,
        health_check,
        retries,
        tls,
        send_proxy,
    };
    check_dns_scheme(&pool, section.file)?;
    Ok(pool)
}

/// `sendProxy`: `"v1"` or `"v2"`, the PROXY protocol version every backend connection opens
/// with.
fn read_send_proxy(section: &mut Section) -> Result<Option<ProxyVersion>, ConfigError> {
    let Some(name) = section.str("sendProxy")? else { return Ok(None) };
    let version = ProxyVersion::from_name(name);
    let problem = format!("unknown PROXY protocol version {name:?} (known: \"v1\", \"v2\")");
    version.map(Some).ok_or_else(|| section.error("sendProxy", &problem))
}

/// The pool's `tls` object (`ca`, `verify`); it may also hold the `shared` keys, which the
/// listener's reader takes.
fn read_backend_tls(section: &mut Section, shared: &[Key]) -> Result<BackendTls, ConfigError> {
    let Some(mut s) = section.section("tls")? else { return Ok(BackendTls::default()) };
    let allowed: Vec<&str> = POOL_TLS.names().into_iter().chain(shared.iter().map(|k| k.name)).collect();
    s.allow_names(&allowed)?;
    let tls = read_pool_tls(&mut s)?;
    for key in shared {
        s.get(key.name);
    }
    s.finish()?;
    Ok(tls)
}

pub(super) fn read_sticky(section: &mut Section) -> Result<Option<StickyConfig>, ConfigError> {
    let Some(mut s) = section.section("sticky")? else { return Ok(None) };
    s.allow(&STICKY)?;
    let cookie =
        s.str("cookie")?.ok_or_else(|| s.error("cookie", "missing: the cookie's name, such as \"SERVERID\""))?;
    if !is_cookie_name(cookie) {
        return Err(s.error("cookie", "must be 1 to 64 letters, digits or `!#$%&'*+-.^_`|~` (a cookie name)"));
    }
    s.finish()?;
    Ok(Some(StickyConfig { cookie: cookie.to_string() }))
}

/// A cookie name is an HTTP token (RFC 6265, section 4.1.1); sluice also caps its length.
fn is_cookie_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reads `healthCheckInterval` and the `healthCheck` object of a pool.
pub(super) fn read_health_check(section: &mut Section) -> Result<HealthCheckConfig, ConfigError> {
    let mut health_check = HealthCheckConfig::default();
    if let Some(interval) = section.duration("healthCheckInterval")? {
        health_check.interval = interval;
    }
    let Some(mut hc) = section.section("healthCheck")? else {
        return Ok(health_check);
    };
    hc.allow(&HEALTH_CHECK)?;
    if let Some(path) = hc.str("path")? {
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(hc.error("path", "must start with `/` and contain no spaces or control characters"));
        }
        health_check.path = path.to_string();
    }
    if let Some(method) = hc.str("method")? {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(hc.error("method", "must be an upper-case method such as \"HEAD\" or \"GET\""));
        }
        health_check.method = method.to_string();
    }
    if let Some(timeout) = hc.duration("timeout")? {
        health_check.timeout = timeout;
    }
    health_check.rise = hc.uint("rise", 1, 1000)?.map_or(health_check.rise, |n| n as u32);
    health_check.fall = hc.uint("fall", 1, 1000)?.map_or(health_check.fall, |n| n as u32);
    health_check.passive_fails = hc.uint("passiveFails", 0, 1000)?.map_or(health_check.fall, |n| n as u32);
    if let Some(host) = hc.str("host")? {
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b'@') {
            return Err(hc.error("host", "must be a host name, optionally with a port, such as \"app.example.com\""));
        }
        health_check.host = Some(host.to_string());
    }
    health_check.expect_status = read_expect_status(&mut hc)?;
    hc.finish()?;
    Ok(health_check)
}

/// `expectStatus`: one status code or a non-empty list of them.
pub(super) fn read_expect_status(hc: &mut Section) -> Result<Option<Vec<u16>>, ConfigError> {
    let problem = "must be a status code from 100 to 599, or a list of them such as [200, 204]";
    let status = |v: &Value| v.as_u64().filter(|n| (100..=599).contains(n)).map(|n| n as u16);
    match hc.get("expectStatus") {
        None => Ok(None),
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(status)
            .collect::<Option<Vec<u16>>>()
            .map(Some)
            .ok_or_else(|| hc.error("expectStatus", problem)),
        Some(v) => status(v).map(|s| Some(vec![s])).ok_or_else(|| hc.error("expectStatus", problem)),
    }
}

/// Reads `servers`: backend URLs (strings or objects with `url`) and entries found by DNS.
pub(super) fn read_servers(section: &mut Section) -> Result<(Vec<ServerConfig>, Vec<DnsServers>), ConfigError> {
    let list = match section.get("servers") {
        None => return Err(section.error("servers", "missing: list the backends, such as [\"http://127.0.0.1:5001\"]")),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(section.error("servers", "must be a list of backend URLs")),
    };
    if list.is_empty() {
        return Err(section.error("servers", "is empty: give at least one backend"));
    }
    let mut servers: Vec<ServerConfig> = Vec::with_capacity(list.len());
    let mut dns: Vec<DnsServers> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let key = format!("servers[{i}]");
        if is_dns_entry(item) {
            let entry = read_dns_entry(section, &key, item)?;
            if dns.iter().any(|d| d.name == entry.name) {
                return Err(section.error(&key, &format!("{:?} is listed twice", entry.name)));
            }
            dns.push(entry);
            continue;
        }
        let server = read_server(section, &key, item)?;
        if servers.iter().any(|s| s.url == server.url) {
            return Err(section.error(&key, &format!("{:?} is listed twice", server.url)));
        }
        if let Some(first) = servers.first().filter(|first| first.protocol != server.protocol) {
            let problem = format!(
                "{:?} is {}:// but the first URL in servers is {}://; the servers of a pool all use one scheme",
                server.url,
                server.protocol.scheme(),
                first.protocol.scheme()
            );
            return Err(section.error(&key, &problem));
        }
        servers.push(server);
    }
    if servers.iter().all(|s| s.backup) && dns.iter().all(|d| d.backup) {
        return Err(section.error("servers", "every server is a backup: at least one must be a primary"));
    }
    Ok((servers, dns))
}

/// DNS entries with `"https": true` need a pool that speaks HTTP.
pub(super) fn check_dns_scheme(pool: &PoolConfig, file: &str) -> Result<(), ConfigError> {
    match pool.dns.iter().find(|d| d.https) {
        Some(entry) if pool.protocol == Protocol::Tcp => Err(ConfigError {
            file: file.to_string(),
            key: format!("{}.https", entry.key_path),
            problem: "TLS to backends is for http pools; a tcp pool relays bytes as they are".to_string(),
        }),
        _ => Ok(()),
    }
}

pub(super) fn read_server(parent: &Section, key: &str, item: &Value) -> Result<ServerConfig, ConfigError> {
    match item {
        Value::String(url) => server_from_url(url).map_err(|p| parent.error(key, &p)),
        Value::Object(_) => {
            let mut s = Section::new(parent.file, parent.child_path(key), item)?;
            // Not a DNS entry, so "Dns" is a misspelt "dns" as much as "URL" is one of "url".
            s.allow_names(&[SERVER_OBJECT.names(), DNS_ENTRY.names()].concat())?;
            let server = read_server_keys(&mut s)?;
            s.finish()?;
            Ok(server)
        }
        _ => Err(parent.error(key, "must be a URL string or an object with \"url\"")),
    }
}

pub(super) fn read_server_keys(s: &mut Section) -> Result<ServerConfig, ConfigError> {
    let url = s.str("url")?.ok_or_else(|| s.error("url", "missing: the backend's URL"))?;
    let mut server = server_from_url(url).map_err(|p| s.error("url", &p))?;
    server.weight = s.uint("weight", 0, 1000)?.map_or(1, |n| n as u32);
    server.max_connections = s.uint("maxConnections", 1, 1_000_000)?.map(|n| n as usize);
    server.backup = s.bool("backup")?.unwrap_or(false);
    Ok(server)
}

/// Reads one backend object written as in `servers` (`url`, `weight`, `maxConnections`,
/// `backup`), plus the keys in `also`, which are left for the caller. Used by the admin API;
/// `source` names the input in errors.
pub fn parse_server_object(value: &Value, source: &str, also: &[&'static str]) -> Result<ServerConfig, ConfigError> {
    let mut s = Section::new(source, String::new(), value)?;
    let allowed: Vec<&str> = SERVER_OBJECT.names().into_iter().chain(also.iter().copied()).collect();
    s.allow_names(&allowed)?;
    for key in also {
        s.get(key);
    }
    let server = read_server_keys(&mut s)?;
    s.finish()?;
    Ok(server)
}
