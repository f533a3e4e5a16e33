//! The configuration file: JSON in, a validated [`Config`] out.
//!
//! Everything a user can write is checked here, once, and every problem is reported as a
//! [`ConfigError`] that names the file, the key path (`servers[1].weight`) and what is wrong.
//! Strings such as `"2s"` become `Duration`s here and nowhere else. The rest of sluice reads
//! only the validated structs below.
//!
//! Two forms, never mixed: the short top-level form (`port`, `servers`, ...) is one HTTP
//! listener in front of one pool named `default`; the full form lists `listeners` and names
//! `pools`. Both are read into the same model: listeners whose routes point at pools.

use crate::routing::HostMatch;
use serde_json::{Map, Value};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

// Wired into the route readers once the edge controls reach the request path.
#[allow(dead_code)]
mod edge_rules;
mod full_form;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration came from, for messages and reloads.
    pub source: String,
    pub listeners: Vec<ListenerConfig>,
    /// Pools by position; routes refer to them by index.
    pub pools: Vec<PoolConfig>,
    pub workers: usize,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub expose_backend: bool,
    /// Park idle client connections in the waiting room while most workers are busy.
    pub waiting_room: bool,
    /// The admin API; `None` when `admin` is not configured.
    pub admin: Option<AdminConfig>,
    pub access_log: AccessLogConfig,
    pub alerts: AlertsConfig,
}

/// The admin listener: stats, metrics, the status page and runtime changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Loopback unless the configuration names another address.
    pub listen: SocketAddr,
    /// The bearer token that changing requests must carry; without one they are refused.
    pub token: Option<String>,
}

/// The address the admin API listens on when `admin.listen` is not given.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);

/// Where and how the one line per exchange is written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessLogConfig {
    pub format: AccessLogFormat,
    /// A file to append to; `None` writes to stderr.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// sluice's own line, through the `sluice::access` log target.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
    /// Apache's combined format, with the backend and the duration appended.
    Combined,
}

impl AccessLogFormat {
    /// The name the configuration uses.
    pub fn name(self) -> &'static str {
        match self {
            AccessLogFormat::Text => "text",
            AccessLogFormat::Json => "json",
            AccessLogFormat::Combined => "combined",
        }
    }
}

/// One address sluice listens on, and where its requests go.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    pub mode: ListenerMode,
    /// Tried in order; the first match wins.
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerMode {
    /// Proxy HTTP requests to the pool their route names.
    Http,
    /// Relay each connection byte for byte to a backend of the listener's one pool.
    Tcp,
    /// Answer each request with a `307` to a backend of the listener's one pool.
    Redirect,
}

impl ListenerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerMode::Http => "http",
            ListenerMode::Tcp => "tcp",
            ListenerMode::Redirect => "redirect",
        }
    }
}

/// A rule sending matching requests to a pool. A route with no conditions matches everything;
/// tcp and redirect listeners have exactly one such route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Matches the request's `Host`, without its port.
    pub host: Option<HostMatch>,
    /// Matches the request path by whole segments; never ends in `/` unless it is `/`.
    pub path_prefix: Option<String>,
    /// Index into [`Config::pools`].
    pub pool: usize,
}

/// What a pool's backends speak, from the scheme of their URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http://`: HTTP backends, checked with an HTTP request.
    Http,
    /// `tcp://`: any TCP service, checked by connecting.
    Tcp,
}

impl Protocol {
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
        }
    }
}

/// A named group of backends with one way of choosing among them.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
    /// The scheme every one of `servers` uses.
    pub protocol: Protocol,
    pub servers: Vec<ServerConfig>,
    pub algorithm: Algorithm,
    /// `sticky`: pin each client to the backend that served it first; `None` is off.
    pub sticky: Option<StickyConfig>,
    pub health_check: HealthCheckConfig,
    /// How many other backends to try when connecting fails.
    pub retries: u32,
}

/// One backend as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The URL as the user wrote it; the backend's name everywhere.
    pub url: String,
    /// From the URL's scheme.
    pub protocol: Protocol,
    /// `host:port`, sent as `Host` by health checks.
    pub authority: String,
    /// Resolved when the configuration is loaded.
    pub addrs: Vec<SocketAddr>,
    pub weight: u32,
    /// At most this many exchanges in flight at once; `None` is no limit.
    pub max_connections: Option<usize>,
    pub backup: bool,
}

/// How a pool picks among its available backends (see `balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    IpHash,
    Random,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::LeastConnections,
        Algorithm::IpHash,
        Algorithm::Random,
    ];

    /// The name written in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::WeightedRoundRobin => "weighted-round-robin",
            Algorithm::LeastConnections => "least-connections",
            Algorithm::IpHash => "ip-hash",
            Algorithm::Random => "random",
        }
    }

    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// Sticky sessions by cookie: the first response names its backend in cookie `cookie`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyConfig {
    pub cookie: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub interval: Duration,
    pub path: String,
    pub method: String,
    pub timeout: Duration,
    /// Consecutive passes that bring a backend back.
    pub rise: u32,
    /// Consecutive failures that take a backend out.
    pub fall: u32,
    /// Sent as `Host` by probes; `None` sends the backend's `host:port`.
    pub host: Option<String>,
    /// The statuses a probe must get back; `None` passes any 2xx or 3xx.
    pub expect_status: Option<Vec<u16>>,
    /// Consecutive failures on real traffic (refused, timed-out or reset before a response)
    /// that take a backend out at once, without waiting for a probe; 0 turns this off.
    pub passive_fails: u32,
}

/// Where events about backends going down and up are sent, and the host thresholds that
/// raise events of their own.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    /// `None` only logs the events.
    pub webhook: Option<Webhook>,
    /// Longest one delivery may take, from connecting to the response head.
    pub timeout: Duration,
    pub host: HostThresholds,
}

/// Host-monitoring thresholds in percent (above 0, at most 100); `None` is not watched.
/// Checked once a second against `host::sample()` by `host_alerts`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostThresholds {
    /// `alerts.cpuPercent`: the balancer's own CPU use over the last second, as a share of
    /// all the machine's cores.
    pub cpu_percent: Option<f64>,
    /// `alerts.memoryPercent`: the host's memory in use (total less available).
    pub memory_percent: Option<f64>,
    /// `alerts.diskPercent`: the use of the file system holding `/`.
    pub disk_percent: Option<f64>,
    /// `alerts.openFilesPercent`: the balancer's open file descriptors against its soft limit.
    pub open_files_percent: Option<f64>,
}

/// An `http://host[:port]/path` URL that events are POSTed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    /// `host:port`, sent as `Host`.
    pub authority: String,
    /// Resolved when the configuration is loaded.
    pub addrs: Vec<SocketAddr>,
    /// The path and query, at least `/`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting to a backend.
    pub connect: Duration,
    /// A whole request head must arrive within this, from its first byte.
    pub client_header: Duration,
    /// An idle keep-alive client connection is closed after this.
    pub keep_alive: Duration,
    /// Longest wait for the next bytes of a response from a backend.
    pub backend: Duration,
    /// Longest wait for a client to send the next bytes of a body, or to take the next bytes
    /// of a response.
    pub client: Duration,
    /// An idle connection to a backend older than this is not reused.
    pub backend_idle: Duration,
    /// On stop, in-flight exchanges get this long to finish.
    pub drain: Duration,
    /// When every candidate backend is at its `maxConnections`, a request waits this long
    /// for a free slot before it is answered 503.
    pub queue: Duration,
    /// A tunnel (TCP mode, WebSocket) with no bytes either way for this long is closed.
    pub tunnel: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A request head larger than this is answered 431.
    pub max_header_bytes: usize,
    /// A request body larger than this is answered 413; `None` is no limit.
    pub max_body_bytes: Option<u64>,
    /// Open client connections above this are answered 503 at once.
    pub max_connections: usize,
    /// Open connections from one client address above this are answered 503 at once;
    /// `None` is no limit.
    pub max_connections_per_client: Option<usize>,
    /// Idle connections kept per backend for reuse.
    pub max_idle_per_backend: usize,
}

pub const DEFAULT_WORKERS: usize = 256;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            client_header: Duration::from_secs(10),
            keep_alive: Duration::from_secs(15),
            backend: Duration::from_secs(60),
            client: Duration::from_secs(30),
            backend_idle: Duration::from_secs(4),
            drain: Duration::from_secs(30),
            queue: Duration::from_secs(5),
            tunnel: Duration::from_secs(3600),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_body_bytes: None,
            max_connections: 10_000,
            max_connections_per_client: Some(1024),
            max_idle_per_backend: 64,
        }
    }
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            interval: Duration::from_secs(2),
            path: "/".to_string(),
            method: "HEAD".to_string(),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 2,
            host: None,
            expect_status: None,
            passive_fails: 2,
        }
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig { webhook: None, timeout: Duration::from_secs(2), host: HostThresholds::default() }
    }
}

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// The key path, such as `servers[1].weight`; empty for whole-file problems.
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.problem)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: String::new(),
            problem: format!("cannot read the file: {e}"),
        })?;
        Config::parse(&text, &file)
    }

    /// Validates a configuration given as JSON text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            key: String::new(),
            problem: format!("not valid JSON: {e}"),
        })?;
        let mut top = Section::new(file, String::new(), &value)?;
        let config = read_config(&mut top)?;
        top.finish()?;
        Ok(config)
    }
}

fn read_config(top: &mut Section) -> Result<Config, ConfigError> {
    let (listeners, pools) =
        if top.has("listeners") || top.has("pools") { full_form::read(top)? } else { read_short_form(top)? };
    let workers = top.uint("workers", 1, 100_000)?.map_or(DEFAULT_WORKERS, |n| n as usize);
    let timeouts = read_timeouts(top)?;
    let limits = read_limits(top)?;
    let expose_backend = top.bool("exposeBackend")?.unwrap_or(false);
    let admin = read_admin(top)?;
    let access_log = read_access_log(top)?;
    let waiting_room = top.bool("waitingRoom")?.unwrap_or(true);
    let alerts = read_alerts(top)?;
    Ok(Config {
        source: top.file.to_string(),
        listeners,
        pools,
        workers,
        timeouts,
        limits,
        expose_backend,
        admin,
        access_log,
        waiting_room,
        alerts,
    })
}

/// The short form: `port` (or `listen`) and the pool keys at the top level, making one HTTP
/// listener in front of one pool named `default`.
fn read_short_form(top: &mut Section) -> Result<(Vec<ListenerConfig>, Vec<PoolConfig>), ConfigError> {
    let key = match (top.has("port"), top.has("listen")) {
        (true, true) => return Err(top.error("listen", "give either `port` or `listen`, not both")),
        (true, false) => "port",
        (false, true) => "listen",
        (false, false) => return Err(top.error("port", "missing: say where to listen, such as \":8080\"")),
    };
    let addr = read_listen(top, key)?;
    let pool = read_pool(top, "default")?;
    if pool.protocol != Protocol::Http {
        return Err(top.error(
            "servers",
            "tcp:// backends need a listener with \"mode\": \"tcp\" (the full form, with \"listeners\" and \"pools\"); \
             the short form is one HTTP listener",
        ));
    }
    let route = RouteConfig { host: None, path_prefix: None, pool: 0 };
    Ok((vec![ListenerConfig { addr, mode: ListenerMode::Http, routes: vec![route] }], vec![pool]))
}

/// Reads a listen address given as a string (`":8080"`) or a bare port number.
fn read_listen(section: &mut Section, key: &'static str) -> Result<SocketAddr, ConfigError> {
    match section.get(key) {
        None => Err(section.error(key, "missing: say where to listen, such as \":8080\"")),
        Some(Value::String(s)) => parse_listen(s).map_err(|p| section.error(key, &p)),
        Some(Value::Number(n)) => match n.as_u64().and_then(|p| u16::try_from(p).ok()) {
            Some(port) => Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)),
            None => Err(section.error(key, "must be a port number from 0 to 65535")),
        },
        Some(_) => Err(section.error(key, "must be a string such as \":8080\" or \"127.0.0.1:8080\"")),
    }
}

/// Reads the pool keys (`servers`, `algorithm`, `sticky`, health checking, `retries`) from
/// `section`.
fn read_pool(section: &mut Section, name: &str) -> Result<PoolConfig, ConfigError> {
    let servers = read_servers(section)?;
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
    let protocol = servers[0].protocol;
    Ok(PoolConfig { name: name.to_string(), protocol, servers, algorithm, sticky, health_check, retries })
}

fn read_sticky(section: &mut Section) -> Result<Option<StickyConfig>, ConfigError> {
    let Some(mut s) = section.section("sticky")? else { return Ok(None) };
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
fn read_health_check(section: &mut Section) -> Result<HealthCheckConfig, ConfigError> {
    let mut health_check = HealthCheckConfig::default();
    if let Some(interval) = section.duration("healthCheckInterval")? {
        health_check.interval = interval;
    }
    let Some(mut hc) = section.section("healthCheck")? else {
        return Ok(health_check);
    };
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
fn read_expect_status(hc: &mut Section) -> Result<Option<Vec<u16>>, ConfigError> {
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

/// Reads the `alerts` object: `{"webhook": "http://host:port/path", "timeout": "2s"}` and
/// the host thresholds, such as `"memoryPercent": 90`.
fn read_alerts(top: &mut Section) -> Result<AlertsConfig, ConfigError> {
    let mut alerts = AlertsConfig::default();
    if let Some(mut s) = top.section("alerts")? {
        if let Some(url) = s.str("webhook")? {
            alerts.webhook = Some(webhook_from_url(url).map_err(|p| s.error("webhook", &p))?);
        }
        if let Some(timeout) = s.duration("timeout")? {
            alerts.timeout = timeout;
        }
        alerts.host = HostThresholds {
            cpu_percent: s.percent("cpuPercent")?,
            memory_percent: s.percent("memoryPercent")?,
            disk_percent: s.percent("diskPercent")?,
            open_files_percent: s.percent("openFilesPercent")?,
        };
        s.finish()?;
    }
    Ok(alerts)
}

/// Parses `http://host[:port][/path]` into a webhook, resolving the host.
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
    let addrs: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| format!("{url:?}: cannot resolve {host:?} ({e})"))?.collect();
    if addrs.is_empty() {
        return Err(format!("{url:?}: {host:?} resolves to no address"));
    }
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    Ok(Webhook { url: url.to_string(), authority, addrs, path })
}

fn read_servers(section: &mut Section) -> Result<Vec<ServerConfig>, ConfigError> {
    let list = match section.get("servers") {
        None => return Err(section.error("servers", "missing: list the backends, such as [\"http://127.0.0.1:5001\"]")),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(section.error("servers", "must be a list of backend URLs")),
    };
    if list.is_empty() {
        return Err(section.error("servers", "is empty: give at least one backend"));
    }
    let mut servers: Vec<ServerConfig> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let key = format!("servers[{i}]");
        let server = read_server(section, &key, item)?;
        if servers.iter().any(|s| s.url == server.url) {
            return Err(section.error(&key, &format!("{:?} is listed twice", server.url)));
        }
        if let Some(first) = servers.first().filter(|first| first.protocol != server.protocol) {
            let problem = format!(
                "{:?} is {}:// but servers[0] is {}://; the servers of a pool all use one scheme",
                server.url,
                server.protocol.scheme(),
                first.protocol.scheme()
            );
            return Err(section.error(&key, &problem));
        }
        servers.push(server);
    }
    if servers.iter().all(|s| s.backup) {
        return Err(section.error("servers", "every server is a backup: at least one must be a primary"));
    }
    Ok(servers)
}

fn read_server(parent: &Section, key: &str, item: &Value) -> Result<ServerConfig, ConfigError> {
    match item {
        Value::String(url) => server_from_url(url).map_err(|p| parent.error(key, &p)),
        Value::Object(_) => {
            let mut s = Section::new(parent.file, parent.child_path(key), item)?;
            let server = read_server_keys(&mut s)?;
            s.finish()?;
            Ok(server)
        }
        _ => Err(parent.error(key, "must be a URL string or an object with \"url\"")),
    }
}

fn read_server_keys(s: &mut Section) -> Result<ServerConfig, ConfigError> {
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
    for key in also {
        s.get(key);
    }
    let server = read_server_keys(&mut s)?;
    s.finish()?;
    Ok(server)
}

fn read_admin(top: &mut Section) -> Result<Option<AdminConfig>, ConfigError> {
    let Some(mut s) = top.section("admin")? else { return Ok(None) };
    let listen = match s.str("listen")? {
        Some(text) => parse_listen(text).map_err(|p| s.error("listen", &p))?,
        None => DEFAULT_ADMIN_LISTEN,
    };
    let token = s.str("token")?;
    if let Some(token) = token {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(s.error("token", "must be a non-empty string of printable characters without spaces"));
        }
    }
    let admin = AdminConfig { listen, token: token.map(str::to_string) };
    s.finish()?;
    Ok(Some(admin))
}

fn read_access_log(top: &mut Section) -> Result<AccessLogConfig, ConfigError> {
    let Some(mut s) = top.section("accessLog")? else { return Ok(AccessLogConfig::default()) };
    let format = match s.str("format")? {
        None | Some("text") => AccessLogFormat::Text,
        Some("json") => AccessLogFormat::Json,
        Some("combined") => AccessLogFormat::Combined,
        Some(other) => {
            let known = "known: \"text\", \"json\", \"combined\"";
            return Err(s.error("format", &format!("unknown format {other:?} ({known})")));
        }
    };
    let path = match s.str("path")? {
        Some("") => return Err(s.error("path", "must not be empty; leave it out to log to stderr")),
        path => path.map(PathBuf::from),
    };
    s.finish()?;
    Ok(AccessLogConfig { format, path })
}

fn read_timeouts(top: &mut Section) -> Result<Timeouts, ConfigError> {
    let mut t = Timeouts::default();
    if let Some(mut s) = top.section("timeouts")? {
        let fields: [(&'static str, &mut Duration); 9] = [
            ("connect", &mut t.connect),
            ("clientHeader", &mut t.client_header),
            ("keepAlive", &mut t.keep_alive),
            ("backend", &mut t.backend),
            ("client", &mut t.client),
            ("backendIdle", &mut t.backend_idle),
            ("drain", &mut t.drain),
            ("queue", &mut t.queue),
            ("tunnel", &mut t.tunnel),
        ];
        for (key, slot) in fields {
            if let Some(d) = s.duration(key)? {
                *slot = d;
            }
        }
        s.finish()?;
    }
    Ok(t)
}

fn read_limits(top: &mut Section) -> Result<Limits, ConfigError> {
    let mut l = Limits::default();
    if let Some(mut s) = top.section("limits")? {
        if let Some(n) = s.uint("maxHeaderBytes", 1024, 1 << 20)? {
            l.max_header_bytes = n as usize;
        }
        if let Some(n) = s.uint("maxBodyBytes", 0, u64::MAX)? {
            l.max_body_bytes = Some(n);
        }
        if let Some(n) = s.uint("maxConnections", 1, 1_000_000)? {
            l.max_connections = n as usize;
        }
        if let Some(n) = s.uint("maxConnectionsPerClient", 0, 1_000_000)? {
            l.max_connections_per_client = (n > 0).then_some(n as usize);
        }
        if let Some(n) = s.uint("maxIdlePerBackend", 0, 10_000)? {
            l.max_idle_per_backend = n as usize;
        }
        s.finish()?;
    }
    Ok(l)
}

/// Parses a listen address: `":8080"` and `"8080"` mean every interface.
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
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not an address such as \":8080\" or \"127.0.0.1:8080\" ({e})"))?;
    addrs.next().ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// Parses `http://host[:port][/]` or `tcp://host:port` into a backend, resolving the host.
/// Callers check that the scheme suits the pool the backend joins.
pub fn server_from_url(url: &str) -> Result<ServerConfig, String> {
    let (protocol, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Protocol::Http, rest),
        Some(("tcp", rest)) => (Protocol::Tcp, rest),
        Some((scheme, _)) => {
            return Err(format!("{url:?}: scheme {scheme:?} is not supported (use http://, or tcp:// in tcp pools)"))
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
        (None, Protocol::Http) => 80,
        (None, Protocol::Tcp) => return Err(format!("{url:?}: a tcp:// backend needs a port")),
    };
    let mut addrs: Vec<SocketAddr> =
        (host, port).to_socket_addrs().map_err(|e| format!("{url:?}: cannot resolve {host:?} ({e})"))?.collect();
    if addrs.is_empty() {
        return Err(format!("{url:?}: {host:?} resolves to no address"));
    }
    // Try IPv4 first: "localhost" often resolves to ::1 first while servers listen on 127.0.0.1.
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs.dedup();
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    Ok(ServerConfig {
        url: url.to_string(),
        protocol,
        authority,
        addrs,
        weight: 1,
        max_connections: None,
        backup: false,
    })
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`; the host comes back without brackets.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
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

/// One JSON object being read: remembers which keys were asked for, so that any other key
/// can be reported as unknown, with its full path.
struct Section<'a> {
    file: &'a str,
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Section<'a> {
    fn new(file: &'a str, path: String, value: &'a Value) -> Result<Section<'a>, ConfigError> {
        match value {
            Value::Object(map) => Ok(Section { file, path, map, known: Vec::new() }),
            _ => Err(ConfigError { file: file.to_string(), key: path, problem: "must be a JSON object".to_string() }),
        }
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// A problem with this object as a whole.
    fn error_here(&self, problem: &str) -> ConfigError {
        ConfigError { file: self.file.to_string(), key: self.path.clone(), problem: problem.to_string() }
    }

    fn error(&self, key: &str, problem: &str) -> ConfigError {
        ConfigError { file: self.file.to_string(), key: self.child_path(key), problem: problem.to_string() }
    }

    /// Whether the object has `key`, without counting it as read.
    fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.map.get(key)
    }

    fn str(&mut self, key: &'static str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.error(key, "must be a string")),
        }
    }

    fn bool(&mut self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.error(key, "must be true or false")),
        }
    }

    fn uint(&mut self, key: &'static str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        let range = if max == u64::MAX {
            format!("must be a whole number of at least {min}")
        } else {
            format!("must be a whole number from {min} to {max}")
        };
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                _ => Err(self.error(key, &range)),
            },
            Some(_) => Err(self.error(key, &range)),
        }
    }

    /// A number above 0 and at most 100.
    fn percent(&mut self, key: &'static str) -> Result<Option<f64>, ConfigError> {
        match self.get(key).map(Value::as_f64) {
            None => Ok(None),
            Some(Some(v)) if v > 0.0 && v <= 100.0 => Ok(Some(v)),
            Some(_) => Err(self.error(key, "must be a percentage above 0 and at most 100, such as 90 or 99.5")),
        }
    }

    fn duration(&mut self, key: &'static str) -> Result<Option<Duration>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => parse_duration(s).map(Some).map_err(|p| self.error(key, &p)),
            Some(_) => Err(self.error(key, "must be a duration string with a unit, such as \"2s\"")),
        }
    }

    fn section(&mut self, key: &'static str) -> Result<Option<Section<'a>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => Section::new(self.file, self.child_path(key), value).map(Some),
        }
    }

    /// Fails on the first key that nothing asked for.
    fn finish(self) -> Result<(), ConfigError> {
        for key in self.map.keys() {
            if !self.known.contains(&key.as_str()) {
                let hint = match self.known.iter().find(|k| is_near_miss(k, key)) {
                    Some(k) => format!("unknown key (did you mean `{k}`?)"),
                    None => format!("unknown key (known here: {})", self.known.join(", ")),
                };
                return Err(self.error(key, &hint));
            }
        }
        Ok(())
    }
}

/// True when `a` and `b` differ by case or by at most two single-letter edits.
fn is_near_miss(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.to_lowercase().chars().collect(), b.to_lowercase().chars().collect());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()] <= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "config.json").map_err(|e| e.to_string())
    }

    #[test]
    fn seed_config_loads_with_defaults() {
        let c = parse(
            r#"{"port": ":8080", "healthCheckInterval": "2s",
            "servers": ["http://localhost:5001", "http://localhost:5002", "http://localhost:5003"]}"#,
        )
        .unwrap();
        assert_eq!(c.listeners[0].addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.pools[0].servers.len(), 3);
        assert_eq!(c.pools[0].servers[0].authority, "localhost:5001");
        assert!(c.pools[0].servers[0].addrs[0].is_ipv4());
        assert_eq!(c.pools[0].health_check.interval, Duration::from_secs(2));
        assert_eq!(c.pools[0].retries, 2);
        assert_eq!(c.workers, DEFAULT_WORKERS);
        assert_eq!(c.timeouts, Timeouts::default());
    }

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen(":8080").unwrap(), "0.0.0.0:8080".parse().unwrap());
        assert_eq!(parse_listen("8080").unwrap(), "0.0.0.0:8080".parse().unwrap());
        assert_eq!(parse_listen("127.0.0.1:9").unwrap(), "127.0.0.1:9".parse().unwrap());
        assert_eq!(parse_listen("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert!(parse_listen(":99999").is_err());
        assert!(parse_listen("nowhere").is_err());
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["2", "s", "", "2 s", "-1s", "1.5s", "0s", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let cases = [
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "prot": 1}"#,
                "config.json: prot: unknown key (did you mean `port`?)",
            ),
            (r#"{"port": ":8080", "servers": []}"#, "config.json: servers: is empty: give at least one backend"),
            (r#"{"servers": ["http://127.0.0.1:1"]}"#, "config.json: port: missing"),
            (
                r#"{"port": ":8080", "servers": ["ftp://x:1"]}"#,
                "config.json: servers[0]: \"ftp://x:1\": scheme \"ftp\" is not supported",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1/app"]}"#,
                "config.json: servers[0]: \"http://127.0.0.1:1/app\": give only scheme",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:x"]}"#,
                "config.json: servers[0]: \"http://127.0.0.1:x\" has a bad host or port",
            ),
            (
                r#"{"port": ":8080", "servers": [{"url": "http://127.0.0.1:1", "weight": 1001}]}"#,
                "config.json: servers[0].weight: must be a whole number from 0 to 1000",
            ),
            (
                r#"{"port": ":8080", "servers": [{"url": "http://127.0.0.1:1", "wieght": 1}]}"#,
                "config.json: servers[0].wieght: unknown key (did you mean `weight`?)",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "healthCheckInterval": "2"}"#,
                "config.json: healthCheckInterval: \"2\" must be a whole number with a unit",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "timeouts": {"conect": "1s"}}"#,
                "config.json: timeouts.conect: unknown key (did you mean `connect`?)",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "workers": "four"}"#,
                "config.json: workers: must be a whole number from 1 to 100000",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "algorithm": "fastest"}"#,
                "config.json: algorithm: unknown algorithm \"fastest\"",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1", "http://127.0.0.1:1"]}"#,
                "config.json: servers[1]: \"http://127.0.0.1:1\" is listed twice",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "healthCheck": {"rise": 0}}"#,
                "config.json: healthCheck.rise: must be a whole number from 1 to 1000",
            ),
            (
                r#"{"port": ":8080", "listen": ":8081", "servers": ["http://127.0.0.1:1"]}"#,
                "config.json: listen: give either",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "healthCheck": {"expectStatus": [200, 99]}}"#,
                "config.json: healthCheck.expectStatus: must be a status code from 100 to 599, or a list",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "healthCheck": {"expectStatus": []}}"#,
                "config.json: healthCheck.expectStatus: must be a status code",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "healthCheck": {"expectStatus": "2xx"}}"#,
                "config.json: healthCheck.expectStatus: must be a status code",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "healthCheck": {"host": "a b"}}"#,
                "config.json: healthCheck.host: must be a host name",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "healthCheck": {"passiveFail": 1}}"#,
                "config.json: healthCheck.passiveFail: unknown key (did you mean `passiveFails`?)",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "alerts": {"webhook": "https://x/"}}"#,
                "config.json: alerts.webhook: \"https://x/\" is not a URL such as",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "alerts": {"webhook": "http://127.0.0.1:x/a"}}"#,
                "config.json: alerts.webhook: \"http://127.0.0.1:x/a\" has a bad host or port",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "alerts": {"webhok": "http://127.0.0.1/"}}"#,
                "config.json: alerts.webhok: unknown key (did you mean `webhook`?)",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "alerts": {"memoryPercent": 0}}"#,
                "config.json: alerts.memoryPercent: must be a percentage above 0 and at most 100",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "alerts": {"diskPercent": "90%"}}"#,
                "config.json: alerts.diskPercent: must be a percentage above 0 and at most 100",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "alerts": {"cpuPercent": 101}}"#,
                "config.json: alerts.cpuPercent: must be a percentage above 0 and at most 100",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "alerts": {"memoryPercnt": 90}}"#,
                "config.json: alerts.memoryPercnt: unknown key (did you mean `memoryPercent`?)",
            ),
            (r#"{"port": ":8080", "servers": ["#, "config.json: not valid JSON"),
            (r#"[1]"#, "config.json: must be a JSON object"),
            (
                r#"{"port": ":8080", "servers": [{"url": "http://127.0.0.1:1", "backup": true}]}"#,
                "config.json: servers: every server is a backup",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "algorithm": "least-conn"}"#,
                "config.json: algorithm: unknown algorithm \"least-conn\" (known: \"round-robin\", \
                 \"weighted-round-robin\", \"least-connections\", \"ip-hash\", \"random\")",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "sticky": {}}"#,
                "config.json: sticky.cookie: missing",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "sticky": {"cookie": "a b"}}"#,
                "config.json: sticky.cookie: must be 1 to 64 letters",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "sticky": {"cookie": "S", "ttl": 1}}"#,
                "config.json: sticky.ttl: unknown key",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "sticky": "S"}"#,
                "config.json: sticky: must be a JSON object",
            ),
            (
                r#"{"port": ":8080", "servers": [{"url": "http://127.0.0.1:1", "weight": 1.5}]}"#,
                "config.json: servers[0].weight: must be a whole number from 0 to 1000",
            ),
            (
                r#"{"port": ":8080", "servers": [{"url": "http://127.0.0.1:1", "weight": -1}]}"#,
                "config.json: servers[0].weight: must be a whole number from 0 to 1000",
            ),
            (
                r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "timeouts": {"queue": "0s"}}"#,
                "config.json: timeouts.queue: \"0s\" must be more than zero",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.starts_with(expected), "for {text}\n got: {err}\nwant: {expected}...");
        }
    }

    #[test]
    fn server_objects_and_limits() {
        let c = parse(r#"{"listen": "127.0.0.1:0", "workers": 8,
            "servers": [{"url": "http://127.0.0.1:5001/", "weight": 0, "maxConnections": 10, "backup": true}, "http://[::1]:5002"],
            "timeouts": {"connect": "250ms", "keepAlive": "1m"},
            "limits": {"maxHeaderBytes": 4096, "maxBodyBytes": 10}, "exposeBackend": true}"#)
        .unwrap();
        let s = &c.pools[0].servers;
        assert_eq!((s[0].weight, s[0].max_connections, s[0].backup), (0, Some(10), true));
        assert_eq!(s[1].authority, "[::1]:5002");
        assert_eq!(c.timeouts.connect, Duration::from_millis(250));
        assert_eq!(c.timeouts.keep_alive, Duration::from_secs(60));
        assert_eq!(c.limits.max_header_bytes, 4096);
        assert_eq!(c.limits.max_body_bytes, Some(10));
        assert_eq!(c.workers, 8);
        assert!(c.expose_backend);
    }

    #[test]
    fn admin_listens_on_loopback_unless_told_otherwise() {
        let base = r#""listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"]"#;
        let c = parse(&format!("{{{base}}}")).unwrap();
        assert_eq!(c.admin, None);
        let c = parse(&format!(r#"{{{base}, "admin": {{}}}}"#)).unwrap();
        assert_eq!(c.admin, Some(AdminConfig { listen: DEFAULT_ADMIN_LISTEN, token: None }));
        assert_eq!(DEFAULT_ADMIN_LISTEN.to_string(), "127.0.0.1:9000");
        let c = parse(&format!(r#"{{{base}, "admin": {{"listen": ":9100", "token": "t0k"}}}}"#)).unwrap();
        let admin = c.admin.unwrap();
        assert_eq!((admin.listen, admin.token.as_deref()), ("0.0.0.0:9100".parse().unwrap(), Some("t0k")));
        let cases = [
            (r#""admin": {"token": ""}"#, "config.json: admin.token: must be a non-empty string"),
            (r#""admin": {"token": "a b"}"#, "config.json: admin.token: must be a non-empty string"),
            (r#""admin": {"listen": "nowhere"}"#, "config.json: admin.listen: \"nowhere\" is not an address"),
            (r#""admin": {"tokn": "x"}"#, "config.json: admin.tokn: unknown key (did you mean `token`?)"),
            (r#""admin": true"#, "config.json: admin: must be a JSON object"),
        ];
        for (extra, expected) in cases {
            let err = parse(&format!("{{{base}, {extra}}}")).expect_err(extra);
            assert!(err.starts_with(expected), "for {extra}\n got: {err}\nwant: {expected}...");
        }
    }

    #[test]
    fn access_log_format_and_path() {
        let base = r#""listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"]"#;
        assert_eq!(parse(&format!("{{{base}}}")).unwrap().access_log, AccessLogConfig::default());
        let c = parse(&format!(r#"{{{base}, "accessLog": {{"format": "json", "path": "/tmp/a.log"}}}}"#)).unwrap();
        assert_eq!(c.access_log.format, AccessLogFormat::Json);
        assert_eq!(c.access_log.path, Some(PathBuf::from("/tmp/a.log")));
        let c = parse(&format!(r#"{{{base}, "accessLog": {{"format": "combined"}}}}"#)).unwrap();
        assert_eq!((c.access_log.format, c.access_log.path), (AccessLogFormat::Combined, None));
        let err = parse(&format!(r#"{{{base}, "accessLog": {{"format": "xml"}}}}"#)).unwrap_err();
        assert!(err.starts_with("config.json: accessLog.format: unknown format \"xml\""), "{err}");
    }

    #[test]
    fn server_objects_from_the_admin_api_use_the_same_rules() {
        let value: Value =
            serde_json::from_str(r#"{"url": "http://127.0.0.1:7", "weight": 3, "pool": "web"}"#).unwrap();
        let s = parse_server_object(&value, "request body", &["pool"]).unwrap();
        assert_eq!((s.url.as_str(), s.weight), ("http://127.0.0.1:7", 3));
        let value: Value = serde_json::from_str(r#"{"url": "http://127.0.0.1:7", "weight": 3000}"#).unwrap();
        let err = parse_server_object(&value, "request body", &[]).unwrap_err().to_string();
        assert_eq!(err, "request body: weight: must be a whole number from 0 to 1000");
        let value: Value = serde_json::from_str(r#"{"url": "ftp://x"}"#).unwrap();
        assert!(parse_server_object(&value, "request body", &[]).is_err());
    }

    #[test]
    fn every_algorithm_reads_by_its_name() {
        for algorithm in Algorithm::ALL {
            let text = format!(
                r#"{{"port": ":8080", "servers": ["http://127.0.0.1:1"], "algorithm": "{}"}}"#,
                algorithm.name()
            );
            assert_eq!(parse(&text).unwrap().pools[0].algorithm, algorithm);
        }
        let c = parse(r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"]}"#).unwrap();
        assert_eq!(c.pools[0].algorithm, Algorithm::RoundRobin);
    }

    #[test]
    fn sticky_and_queue_timeout() {
        let c = parse(
            r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "sticky": {"cookie": "SRV_id"},
            "timeouts": {"queue": "250ms"}}"#,
        )
        .unwrap();
        assert_eq!(c.pools[0].sticky, Some(StickyConfig { cookie: "SRV_id".into() }));
        assert_eq!(c.timeouts.queue, Duration::from_millis(250));
        let c = parse(r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"]}"#).unwrap();
        assert_eq!((c.pools[0].sticky.clone(), c.timeouts.queue), (None, Duration::from_secs(5)));
    }

    #[test]
    fn health_check_keys_and_their_defaults() {
        let c = parse(r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"]}"#).unwrap();
        let hc = &c.pools[0].health_check;
        assert_eq!((hc.rise, hc.fall, hc.passive_fails), (2, 2, 2));
        assert_eq!((&hc.host, &hc.expect_status), (&None, &None));

        let c = parse(
            r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"],
            "healthCheck": {"fall": 4, "host": "app.example.com:8443", "expectStatus": 204}}"#,
        )
        .unwrap();
        let hc = &c.pools[0].health_check;
        assert_eq!(hc.passive_fails, 4, "passiveFails follows fall unless given");
        assert_eq!(hc.host.as_deref(), Some("app.example.com:8443"));
        assert_eq!(hc.expect_status, Some(vec![204]));

        let c = parse(
            r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"],
            "healthCheck": {"passiveFails": 0, "expectStatus": [200, 204]}}"#,
        )
        .unwrap();
        let hc = &c.pools[0].health_check;
        assert_eq!((hc.passive_fails, hc.expect_status.clone()), (0, Some(vec![200, 204])));
    }

    #[test]
    fn alerts_webhook_and_timeout() {
        let c = parse(r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"]}"#).unwrap();
        assert_eq!(c.alerts, AlertsConfig::default());
        assert_eq!(c.alerts.timeout, Duration::from_secs(2));

        let c = parse(
            r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"],
            "alerts": {"webhook": "http://127.0.0.1:9090/hooks/sluice?k=1", "timeout": "500ms"}}"#,
        )
        .unwrap();
        let hook = c.alerts.webhook.unwrap();
        assert_eq!(hook.authority, "127.0.0.1:9090");
        assert_eq!(hook.path, "/hooks/sluice?k=1");
        assert_eq!(hook.addrs, vec!["127.0.0.1:9090".parse().unwrap()]);
        assert_eq!(c.alerts.timeout, Duration::from_millis(500));

        assert_eq!(c.alerts.host, HostThresholds::default());
        assert_eq!(webhook_from_url("http://localhost").unwrap().path, "/");
        assert_eq!(webhook_from_url("http://127.0.0.1?x").unwrap().path, "/?x");
        assert_eq!(webhook_from_url("http://[::1]:81/a").unwrap().authority, "[::1]:81");
    }

    #[test]
    fn host_thresholds_are_optional_percentages() {
        let c = parse(
            r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"],
            "alerts": {"cpuPercent": 80, "memoryPercent": 90.5, "diskPercent": 100, "openFilesPercent": 0.1}}"#,
        )
        .unwrap();
        let want = HostThresholds {
            cpu_percent: Some(80.0),
            memory_percent: Some(90.5),
            disk_percent: Some(100.0),
            open_files_percent: Some(0.1),
        };
        assert_eq!(c.alerts.host, want);
        assert_eq!(c.alerts.webhook, None);
    }
}
