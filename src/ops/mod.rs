//! What runs beside the request path: the admin API ([`admin`]), counters and histograms
//! ([`metrics`]), the access log ([`access_log`]), alerts to a webhook ([`alerts`]) and the
//! host numbers they watch ([`host`], [`host_alerts`]), runtime changes to the backend set
//! ([`changes`], made through [`membership`] by the admin API and by [`discovery`]),
//! switching to a new configuration ([`reload`]), and the process's life: signals
//! ([`lifecycle`]), binary upgrades ([`upgrade`]), the pid file ([`pid_file`]) and systemd
//! notifications ([`notify`]).
//!
//! The request path calls into this folder only to count and log an exchange; nothing here
//! is needed to follow one request.

pub mod access_log;
pub mod admin;
pub mod alerts;
pub mod changes;
pub mod discovery;
pub mod ended;
pub mod host;
pub mod host_alerts;
pub mod lifecycle;
pub mod log_summary;
pub mod membership;
pub mod metrics;
pub mod notify;
pub mod pid_file;
pub mod reload;
pub mod ticker;
pub mod time;
pub mod upgrade;
