//! Readers for the top-level keys that are not pools or listeners of the full form: the short
//! form's one listener, and `timeouts`, `limits`, `admin`, `accessLog` and `alerts`.

use super::edge_rules::{read_route_edge, EDGE_KEYS};
use super::keys::{Key, Kind, Shape, LISTEN};
use super::pool::{read_pool, POOL_KEYS};
use super::section::Section;
use super::tls::{check_redirect, read_listener_tls, read_redirect_to_https, LISTENER_TLS_KEYS, POOL_TLS_KEYS};
use super::*;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The short form's own keys: its one listener's.
pub(super) const SHORT_LISTENER_KEYS: &[Key] = &[
    Key::new("acceptProxy", Kind::Bool, "Every connection opens with a PROXY v1 or v2 header naming the client.")
        .default("false"),
    Key::new(
        "port",
        LISTEN,
        "Where to listen: \":8080\" (every interface), \"127.0.0.1:8080\", \"[::1]:8080\" or a port number.",
    )
    .example(":8080"),
    Key::new("listen", LISTEN, "The same as port: where to listen.").example("127.0.0.1:8080"),
    Key::new(
        "tls",
        Kind::Object(&SHORT_FORM_TLS),
        "Serve HTTPS (cert and key, or certificates), and trust roots for https:// backends (ca, verify).",
    )
    .example(r#"{"cert": "site.pem", "key": "site.key"}"#),
    Key::new(
        "redirectToHttps",
        REDIRECT_TO_HTTPS,
        "Answer every request 308 to https:// (true for port 443, or the port); plain listeners only.",
    ),
];

/// `redirectToHttps`: `true`, `false` or the https port.
pub(super) const REDIRECT_TO_HTTPS: Kind = Kind::AnyOf(&[Kind::Bool, Kind::Uint(1, 65535)]);

/// The short form's `tls` holds the listener's keys and the pool's.
const SHORT_FORM_TLS: Shape =
    Shape::new(&[LISTENER_TLS_KEYS, POOL_TLS_KEYS]).either_or_none(&[&["cert", "key"], &["certificates"], &["acme"]]);

/// The whole file in the short form. Its `tls` is declared first, so it wins over the pool's.
pub(super) const SHORT_FORM: Shape =
    Shape::new(&[SHORT_LISTENER_KEYS, POOL_KEYS, EDGE_KEYS, COMMON_KEYS]).either(&[&["port"], &["listen"]]);

/// The short form: `port` (or `listen`) and the pool keys at the top level, making one HTTP
/// listener in front of one pool named `default`.
pub(super) fn read_short_form(top: &mut Section) -> Result<(Vec<ListenerConfig>, Vec<PoolConfig>), ConfigError> {
    top.allow(&SHORT_FORM)?;
    let key = match (top.has("port"), top.has("listen")) {
        (true, true) => return Err(top.error("listen", "give either `port` or `listen`, not both")),
        (true, false) => "port",
        (false, true) => "listen",
        (false, false) => return Err(top.error("port", "missing: say where to listen, such as \":8080\"")),
    };
    let addr = read_listen(top, key)?;
    let pool = read_pool(top, "default", LISTENER_TLS_KEYS)?;
    let tls = read_listener_tls(top, POOL_TLS_KEYS)?;
    let redirect_to_https = read_redirect_to_https(top)?;
    check_redirect(top, tls.as_ref(), redirect_to_https, ListenerMode::Http)?;
    let accept_proxy = top.bool("acceptProxy")?.unwrap_or(false);
    let edge = read_route_edge(top, route_name(0, 0))?;
    if pool.protocol != Protocol::Http {
        return Err(top.error(
            "servers",
            "tcp:// backends need a listener with \"mode\": \"tcp\" (the full form, with \"listeners\" and \"pools\"); \
             the short form is one HTTP listener",
        ));
    }
    let route = RouteConfig { host: None, path_prefix: None, pool: 0, edge };
    let mode = ListenerMode::Http;
    let listener = ListenerConfig { addr, mode, routes: vec![route], tls, redirect_to_https, accept_proxy };
    Ok((vec![listener], vec![pool]))
}

/// Reads a listen address given as a string (`":8080"`) or a bare port number.
pub(super) fn read_listen(section: &mut Section, key: &'static str) -> Result<SocketAddr, ConfigError> {
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

pub(super) const TIMEOUTS: Shape = Shape::new(&[&[
    Key::new("connect", Kind::Duration, "Connecting to a backend.").default("5s"),
    Key::new(
        "clientHeader",
        Kind::Duration,
        "A request head must be complete this long after its first byte; else 408.",
    )
    .default("10s"),
    Key::new("keepAlive", Kind::Duration, "An idle client connection is closed after this.").default("15s"),
    Key::new("backend", Kind::Duration, "Longest wait for the next bytes of a backend's response; else 504.")
        .default("60s"),
    Key::new(
        "client",
        Kind::Duration,
        "Longest wait for a client to send the next bytes of a body or take the next bytes of a response.",
    )
    .default("30s"),
    Key::new("backendIdle", Kind::Duration, "An idle backend connection older than this is closed, not reused.")
        .default("4s"),
    Key::new("drain", Kind::Duration, "On stop, how long in-flight exchanges may take.").default("30s"),
    Key::new(
        "queue",
        Kind::Duration,
        "How long a request waits for a free backend slot, or for its address's share of workers; else 503.",
    )
    .default("5s"),
    Key::new(
        "tunnel",
        Kind::Duration,
        "A tunnel (tcp mode, WebSocket) with no bytes either way for this long is closed.",
    )
    .default("1h"),
    Key::new(
        "minRateGrace",
        Kind::Duration,
        "How long a body or response may move slower than limits.minClientBytesPerSecond at its start.",
    )
    .default("10s"),
]]);

pub(super) fn read_timeouts(top: &mut Section) -> Result<Timeouts, ConfigError> {
    let mut t = Timeouts::default();
    if let Some(mut s) = top.section("timeouts")? {
        s.allow(&TIMEOUTS)?;
        let fields: [(&'static str, &mut Duration); 10] = [
            ("connect", &mut t.connect),
            ("clientHeader", &mut t.client_header),
            ("keepAlive", &mut t.keep_alive),
            ("backend", &mut t.backend),
            ("client", &mut t.client),
            ("backendIdle", &mut t.backend_idle),
            ("drain", &mut t.drain),
            ("queue", &mut t.queue),
            ("tunnel", &mut t.tunnel),
            ("minRateGrace", &mut t.min_rate_grace),
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

pub(super) const LIMITS: Shape = Shape::new(&[&[
    Key::new("maxHeaderBytes", Kind::Uint(1024, 1 << 20), "Largest request head; else 431.").default("16384"),
    Key::new("maxBodyBytes", Kind::Uint(0, u64::MAX), "Largest request body; else 413. No limit when absent."),
    Key::new("maxConnections", Kind::Uint(1, 1_000_000), "Open client connections; above it new ones get a fast 503.")
        .default("10000"),
    Key::new(
        "maxConnectionsPerClient",
        Kind::Uint(0, 1_000_000),
        "Open connections from one client address (0: no limit).",
    )
    .default("1024"),
    Key::new(
        "maxIdlePerBackend",
        Kind::Uint(0, 10_000),
        "Idle keep-alive connections kept per backend; as many as workers when absent.",
    ),
    Key::new(
        "bufferBodyBytes",
        Kind::Uint(0, 1 << 20),
        "A request body up to this size is read whole before a backend is picked (0: off).",
    )
    .default("16384"),
    Key::new(
        "minClientBytesPerSecond",
        Kind::Uint(0, 1 << 30),
        "After timeouts.minRateGrace, bodies and responses must move at least this fast (0: off).",
    )
    .default("500"),
    Key::new(
        "maxWorkersPerClient",
        WORKER_SHARE,
        "Workers one client address may hold at once: a count (64) or a share (\"25%\").",
    )
    .default("25%"),
]]);

/// A count of workers or a percentage of them.
const WORKER_SHARE: Kind = Kind::AnyOf(&[Kind::Uint(1, 1_000_000), Kind::Pattern("^([1-9][0-9]?|100)%$")]);

/// Reads `limits`; an idle set per backend as large as the worker pool is the default, so
/// that every exchange in flight can put its backend connection back.
pub(super) fn read_limits(top: &mut Section, workers: usize) -> Result<Limits, ConfigError> {
    let mut l = Limits { max_idle_per_backend: workers, ..Limits::default() };
    if let Some(mut s) = top.section("limits")? {
        s.allow(&LIMITS)?;
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
        if let Some(n) = s.uint("bufferBodyBytes", 0, 1 << 20)? {
            l.buffer_body_bytes = n as usize;
        }
        if let Some(n) = s.uint("minClientBytesPerSecond", 0, 1 << 30)? {
            l.min_client_bytes_per_second = n;
        }
        if let Some(share) = read_worker_share(&mut s, "maxWorkersPerClient")? {
            l.max_workers_per_client = share;
        }
        s.finish()?;
    }
    Ok(l)
}

/// A count of workers (`64`) or a percentage of them (`"25%"`).
fn read_worker_share(s: &mut Section, key: &'static str) -> Result<Option<WorkerShare>, ConfigError> {
    let problem = "must be a count of workers from 1, such as 64, or a percentage of them, such as \"25%\"";
    match s.get(key) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(count @ 1..=1_000_000) => Ok(Some(WorkerShare::Count(count as usize))),
            _ => Err(s.error(key, problem)),
        },
        Some(Value::String(text)) => match text.strip_suffix('%').map(str::parse::<u8>) {
            Some(Ok(percent @ 1..=100)) => Ok(Some(WorkerShare::Percent(percent))),
            _ => Err(s.error(key, problem)),
        },
        Some(_) => Err(s.error(key, problem)),
    }
}

pub(super) const ADMIN: Shape = Shape::new(&[&[
    Key::new("listen", Kind::Text, "The admin API's address; beyond loopback, write it out.").default("127.0.0.1:9000"),
    Key::new(
        "token",
        Kind::Pattern("^[!-~]+$"),
        "The bearer token runtime changes need; without one, changes are refused.",
    )
    .example("a-long-random-string"),
]]);

pub(super) fn read_admin(top: &mut Section) -> Result<Option<AdminConfig>, ConfigError> {
    let Some(mut s) = top.section("admin")? else { return Ok(None) };
    s.allow(&ADMIN)?;
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

pub(super) const ACCESS_LOG: Shape = Shape::new(&[&[
    Key::new("format", Kind::OneOf(&["text", "json", "combined"]), "The line format.").default("text"),
    Key::new("path", Kind::Pattern("."), "A file to append to; standard error when absent.")
        .example("/var/log/sluice/access.log"),
]]);

pub(super) fn read_access_log(top: &mut Section) -> Result<AccessLogConfig, ConfigError> {
    let Some(mut s) = top.section("accessLog")? else { return Ok(AccessLogConfig::default()) };
    s.allow(&ACCESS_LOG)?;
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

/// Reads `pidFile`: a path, not empty.
pub(super) fn read_pid_file(top: &mut Section) -> Result<Option<PathBuf>, ConfigError> {
    match top.str("pidFile")? {
        Some("") => Err(top.error("pidFile", "must not be empty; leave it out to write no pid file")),
        path => Ok(path.map(PathBuf::from)),
    }
}

/// Reads the `alerts` object: `{"webhook": "http://host:port/path", "timeout": "2s"}` and
/// the host thresholds, such as `"memoryPercent": 90`.
pub(super) const ALERTS: Shape = Shape::new(&[&[
    Key::new(
        "webhook",
        Kind::Text,
        "POST a JSON event to this http:// URL when a backend goes down or up, or a pool has none left.",
    )
    .example("http://127.0.0.1:9090/alerts"),
    Key::new("timeout", Kind::Duration, "The longest one delivery may take.").default("2s"),
    Key::new("cpuPercent", Kind::Percent, "Host CPU use above which host_high is raised."),
    Key::new("memoryPercent", Kind::Percent, "Host memory use above which host_high is raised."),
    Key::new("diskPercent", Kind::Percent, "Disk use above which host_high is raised."),
    Key::new("openFilesPercent", Kind::Percent, "Open files, of the limit, above which host_high is raised."),
]]);

pub(super) fn read_alerts(top: &mut Section) -> Result<AlertsConfig, ConfigError> {
    let mut alerts = AlertsConfig::default();
    if let Some(mut s) = top.section("alerts")? {
        s.allow(&ALERTS)?;
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
