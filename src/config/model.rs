//! The validated configuration's parts: listeners and their routes, pools and their backends,
//! health checks, timeouts, limits, the admin API, the access log and alerts, with their
//! defaults. Plain data: the readers in this folder fill it, the rest of sluice reads it.

use super::HostMatch;
use crate::edge::Edge;
pub use crate::proxy_protocol::ProxyVersion;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// `tls`: terminate TLS on this listener; `None` is plain TCP.
    pub tls: Option<ListenerTls>,
    /// `redirectToHttps`: answer every request `308` to `https://` on this port.
    pub redirect_to_https: Option<u16>,
    /// `acceptProxy`: every connection opens with a PROXY protocol header, whose source is
    /// the client; connections without one are closed.
    pub accept_proxy: bool,
}

/// A listener's certificates: the first is the default, the others are chosen by SNI. With
/// `acme`, sluice obtains the one certificate itself and `certificates` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub certificates: Vec<CertificateFiles>,
    /// `acme`: the names (lower-case DNS names) of the certificate obtained by ACME; empty when
    /// the certificates are files.
    pub acme: Vec<String>,
    pub min_version: TlsVersion,
}

/// The top-level `acme` object: where automatic certificates come from and where they are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// `email`: the account's contact, if given.
    pub email: Option<String>,
    /// `directory`: the authority's directory URL.
    pub directory: String,
    /// `storage`: the folder for the account key and certificates (beside the configuration
    /// file when relative).
    pub storage: PathBuf,
    /// `directoryCa`: an extra root certificate (PEM) for the authority's own HTTPS.
    pub directory_ca: Option<PathBuf>,
}

/// Let's Encrypt's production directory, the default `acme.directory`.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// The default `acme.storage`.
pub const DEFAULT_ACME_STORAGE: &str = "./acme";

/// One certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Where it stands in the file, such as `listeners[0].tls.certificates[1]`, for errors
    /// found when the files are read.
    pub key_path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl TlsVersion {
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

/// How a pool's `https://` backends are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTls {
    /// `tls.ca`: a PEM file of roots trusted besides the system's.
    pub ca: Option<PathBuf>,
    /// `tls.verify`: false accepts any certificate (it must be written out).
    pub verify: bool,
}

impl Default for BackendTls {
    fn default() -> Self {
        BackendTls { ca: None, verify: true }
    }
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
    /// Index into [`crate::config::Config::pools`].
    pub pool: usize,
    /// The route's edge controls at work (`allow`, `deny`, `basicAuth`, `rateLimit`, header
    /// rules); `None` when it has none, so such a route pays nothing for them. Shared by every
    /// snapshot built from this configuration, so counters and rate-limit buckets outlive
    /// admin changes; a reload keeps them where the rules did not change.
    pub edge: Option<Arc<Edge>>,
}

/// The name of route `route` of listener `listener` in logs and metrics: its key path in the
/// full form, such as `listeners[0].routes[1]`.
pub fn route_name(listener: usize, route: usize) -> String {
    format!("listeners[{listener}].routes[{route}]")
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
    /// Where the pool's keys stand in the file (empty for the short form's top level, or
    /// `pools.NAME`), for errors found after reading.
    pub key_path: String,
    /// The scheme every one of `servers` uses.
    pub protocol: Protocol,
    pub servers: Vec<ServerConfig>,
    /// The `dns` and `dnsSrv` entries of `servers`: backends found by DNS while running.
    pub dns: Vec<DnsServers>,
    pub algorithm: Algorithm,
    /// `sticky`: pin each client to the backend that served it first; `None` is off.
    pub sticky: Option<StickyConfig>,
    pub health_check: HealthCheckConfig,
    /// How many other backends to try when connecting fails.
    pub retries: u32,
    /// How `https://` backends are verified.
    pub tls: BackendTls,
    /// `sendProxy`: open every backend connection (health probes included) with a PROXY
    /// protocol header of this version; `None` sends none.
    pub send_proxy: Option<ProxyVersion>,
}

/// One backend as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The URL as the user wrote it; the backend's name everywhere.
    pub url: String,
    /// From the URL's scheme.
    pub protocol: Protocol,
    /// `https://`: TLS to this backend (its protocol is HTTP).
    pub tls: bool,
    /// `host:port`, sent as `Host` by health checks.
    pub authority: String,
    /// The host name or address of the URL, without brackets.
    pub host: String,
    pub port: u16,
    /// The addresses `host` resolves to, IPv4 first; empty until [`crate::config::resolve`]
    /// has looked them up.
    pub addrs: Vec<SocketAddr>,
    pub weight: u32,
    /// At most this many exchanges in flight at once; `None` is no limit.
    pub max_connections: Option<usize>,
    pub backup: bool,
    /// For a backend found by DNS, the entry it came from (see [`DnsServers::name`]).
    pub discovered_from: Option<String>,
}

/// A `servers` entry whose backends are found by DNS and looked up again while running:
/// `{"dns": "web.internal:8080"}` (one backend per A/AAAA address) or
/// `{"dnsSrv": "_http._tcp.web.service.consul"}` (host, port and weight from SRV records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsServers {
    /// The entry as written (`web.internal:8080`, `_http._tcp.web.service.consul`): its
    /// backends' `discoveredFrom`.
    pub name: String,
    pub lookup: DnsLookup,
    /// `weight`: every backend's weight; `None` is 1 for `dns` and the records' for `dnsSrv`.
    pub weight: Option<u32>,
    pub max_connections: Option<usize>,
    pub backup: bool,
    /// `https`: TLS to the backends (http pools only).
    pub https: bool,
    /// Where the entry stands in the file, such as `pools.web.servers[1]`.
    pub key_path: String,
}

/// What a [`DnsServers`] entry asks the DNS for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsLookup {
    /// A and AAAA records of `host`; every address is a backend on `port`.
    Address { host: String, port: u16 },
    /// SRV records of `name`; their targets' addresses are the backends.
    Srv { name: String },
}

/// How backends found by DNS are looked up: top-level `resolvers` and `resolveInterval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// The DNS servers asked, in order; empty asks the `nameserver`s of `/etc/resolv.conf`.
    pub resolvers: Vec<SocketAddr>,
    /// How often each entry is looked up again; a shorter record TTL wins, down to
    /// [`MIN_RESOLVE_INTERVAL`].
    pub resolve_interval: Duration,
}

/// The shortest time between two lookups of one entry, whatever the TTL says.
pub const MIN_RESOLVE_INTERVAL: Duration = Duration::from_secs(1);

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig { resolvers: Vec::new(), resolve_interval: Duration::from_secs(10) }
    }
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
    /// The host name or address of the URL, without brackets.
    pub host: String,
    pub port: u16,
    /// The addresses `host` resolves to; empty until [`crate::config::resolve`] has run.
    pub addrs: Vec<SocketAddr>,
    /// The path and query, at least `/`.
    pub path: String,
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
