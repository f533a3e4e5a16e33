//! The configuration file: JSON in, a validated [`Config`] out.
//!
//! Everything a user can write is checked here, once, and every problem is reported as a
//! [`ConfigError`] that names the file, the key path (`servers[1].weight`) and what is wrong.
//! Strings such as `"2s"` become `Duration`s here and nowhere else. The rest of sluice reads
//! only the validated structs of [`model`].
//!
//! Two forms, never mixed: the short top-level form (`port`, `servers`, ...) is one HTTP
//! listener in front of one pool named `default` (`top_level`); the full form lists
//! `listeners` and names `pools` (`full_form`). Both are read into the same model:
//! listeners whose routes point at pools (`pool` reads a pool's keys in either form).
//!
//! Reading is pure: [`Config::parse`] does no I/O. Looking up the host names of backends and
//! of the alerts webhook is a separate step ([`resolve`]); [`Config::load`] and
//! [`Config::from_json`] do both.
//!
//! The files: [`model`] the validated types, `section` the JSON walker, [`keys`] the
//! declarations of every key each reader allows (name, type, meaning, default), [`schema`]
//! the JSON Schema built from them (`sluice --schema`), [`values`] strings such as
//! durations, addresses and URLs, [`host_match`] route host patterns, [`resolve`] name
//! lookups, `dns` the entries whose backends DNS finds while running.

mod acme;
mod dns;
mod edge_rules;
mod full_form;
pub mod host_match;
pub mod keys;
pub mod limits;
pub mod model;
mod pool;
pub mod resolve;
pub mod schema;
mod section;
mod tls;
mod top_level;
pub mod values;

pub use dns::parse_resolver;
pub use host_match::HostMatch;
pub use limits::*;
pub use model::*;
pub use pool::parse_server_object;
pub use values::{parse_duration, parse_listen, parse_path_prefix, server_from_url, webhook_from_url};

use acme::{check_acme_listeners, read_acme};
use keys::{Key, Kind};
use section::Section;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use top_level::*;

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
    /// `explain`: every proxied response says why its backend was picked
    /// (`X-Sluice-Decision`, see `explain`).
    pub explain: bool,
    /// The admin API; `None` when `admin` is not configured.
    pub admin: Option<AdminConfig>,
    pub access_log: AccessLogConfig,
    pub alerts: AlertsConfig,
    /// `pidFile`: where the running process writes its pid (at start, and by the new process
    /// after an upgrade); `None` when not configured.
    pub pid_file: Option<PathBuf>,
    /// `acme`: where listeners with `"tls": {"acme": [...]}` get their certificates.
    pub acme: Option<AcmeConfig>,
    /// How backends found by DNS are looked up (`resolvers`, `resolveInterval`).
    pub discovery: DiscoveryConfig,
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
    /// Reads a configuration file, validates it and looks up the host names it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::read(path)?;
        config.resolve()?;
        Ok(config)
    }

    /// Reads and validates a configuration file without looking up any host name.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: String::new(),
            problem: format!("cannot read the file: {e}"),
        })?;
        Config::parse(&text, &file)
    }

    /// Validates a configuration given as JSON text and looks up the host names it names;
    /// `file` names it in errors.
    pub fn from_json(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut config = Config::parse(text, file)?;
        config.resolve()?;
        Ok(config)
    }

    /// Validates a configuration given as JSON text without any I/O: host names are not
    /// looked up yet (see [`Config::resolve`]).
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

/// Top-level keys of either form.
const COMMON_KEYS: &[Key] = &[
    Key::new(
        "$schema",
        Kind::Text,
        "The JSON Schema editors check this file with (sluice --schema prints it); sluice ignores it.",
    )
    .example("config.schema.json"),
    Key::new("workers", Kind::Uint(1, 100_000), "Worker threads: exchanges in flight at once.").default("256"),
    Key::new("timeouts", Kind::Object(&TIMEOUTS), "How long sluice waits for each thing."),
    Key::new("limits", Kind::Object(&LIMITS), "Sizes and counts beyond which sluice refuses."),
    Key::new("exposeBackend", Kind::Bool, "Add X-Forwarded-Server: <backend url> to responses (debugging).")
        .default("false"),
    Key::new("admin", Kind::Object(&ADMIN), "Open the admin API: status page, /stats, /metrics, runtime changes."),
    Key::new("accessLog", Kind::Object(&ACCESS_LOG), "One line per exchange; to standard error when absent."),
    Key::new(
        "waitingRoom",
        Kind::Bool,
        "Park idle keep-alive clients and slow heads in epoll while workers are scarce.",
    )
    .default("true"),
    Key::new("alerts", Kind::Object(&ALERTS), "Events POSTed to a webhook, and host thresholds."),
    Key::new("explain", Kind::Bool, "Add X-Sluice-Decision to every proxied response: why its backend was picked.")
        .default("false"),
    Key::new(
        "pidFile",
        Kind::Pattern("."),
        "Where sluice writes its pid once it serves; after an upgrade, the new process's.",
    )
    .example("/run/sluice/sluice.pid"),
    Key::new(
        "resolvers",
        Kind::List(&Kind::Text, 1),
        "DNS servers for backends found by DNS; the system's (resolv.conf) when absent.",
    )
    .example(r#"["127.0.0.1:8600", "10.0.0.2"]"#),
    Key::new(
        "resolveInterval",
        Kind::Duration,
        "How often names of backends found by DNS are looked up again (at least 1s).",
    )
    .default("10s"),
    Key::new("acme", Kind::Object(&acme::ACME), "Where listeners with \"tls\": {\"acme\": [names]} get certificates."),
];

fn read_config(top: &mut Section) -> Result<Config, ConfigError> {
    let (listeners, pools) =
        if top.has("listeners") || top.has("pools") { full_form::read(top)? } else { read_short_form(top)? };
    top.str("$schema")?;
    let workers = top.uint("workers", 1, 100_000)?.map_or(DEFAULT_WORKERS, |n| n as usize);
    let timeouts = read_timeouts(top)?;
    let limits = read_limits(top, workers)?;
    let expose_backend = top.bool("exposeBackend")?.unwrap_or(false);
    let admin = read_admin(top)?;
    let access_log = read_access_log(top)?;
    let waiting_room = top.bool("waitingRoom")?.unwrap_or(true);
    let alerts = read_alerts(top)?;
    let explain = top.bool("explain")?.unwrap_or(false);
    let pid_file = read_pid_file(top)?;
    let acme = read_acme(top)?;
    check_acme_listeners(top, &listeners, acme.as_ref())?;
    let discovery = dns::read_discovery(top)?;
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
        explain,
        alerts,
        pid_file,
        acme,
        discovery,
    })
}

#[cfg(test)]
mod tests;
