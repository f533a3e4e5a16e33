//! Alerts: an event when a backend goes down or comes back, when a pool has no healthy
//! backend left, and when a host threshold is crossed or recovers, POSTed as a small JSON
//! object to `alerts.webhook`:
//! `{"event": "backend_down", "pool": "default", "server": "http://...", "at": "2024-05-01T12:00:00Z"}`,
//! `{"event": "host_high", "metric": "memoryPercent", "value": 93.1, "threshold": 90, "at": "..."}`,
//! `{"event": "dns_failed", "pool": "web", "name": "web.internal:8080", "problem": "...", "at": "..."}`,
//! and when ACME obtains a certificate or fails to:
//! `{"event": "certificate_renewal_failed", "names": ["example.com"], "detail": "...", "at": "..."}`.
//!
//! [`Alerts::raise`] never waits: it puts the event on a bounded queue of
//! [`ALERT_QUEUE_EVENTS`] (when the queue is full the event is dropped and counted) for one
//! background thread, `sluice-alerts`, which delivers events one at a time, each within
//! `alerts.timeout`. A slow or dead webhook therefore delays other alerts, never a request.
//!
//! `health` raises events when it reports a change, `host_alerts` when a threshold is
//! crossed, `discovery` when a DNS entry stops resolving (each logs them itself); reload replaces the webhook. The counters are for stats and metrics.

use crate::config::{AlertsConfig, Webhook};
use crate::http::head::read_response_head;
use crate::http::stream::BufferedStream;
use crate::lock;
use crate::net;
use crate::ops::time::rfc3339_seconds;
use log::warn;
use std::fmt;
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Events waiting for delivery beyond this many are dropped.
pub const ALERT_QUEUE_EVENTS: usize = 64;

/// The largest webhook response head read.
const RESPONSE_HEAD_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    BackendDown,
    BackendUp,
    /// The pool's last healthy backend went down; `server` names it.
    PoolDown,
    /// A host metric reached its threshold.
    HostHigh,
    /// A host metric that was high is below its threshold again.
    HostOk,
    /// Looking up a DNS entry of `servers` failed or found nothing; its last known
    /// backends stay.
    DnsFailed,
    /// ACME obtained a certificate (the first one or a renewal) and it is in use.
    CertificateRenewed,
    /// An ACME order failed; it is tried again later.
    CertificateRenewalFailed,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BackendDown => "backend_down",
            AlertKind::BackendUp => "backend_up",
            AlertKind::PoolDown => "pool_down",
            AlertKind::HostHigh => "host_high",
            AlertKind::HostOk => "host_ok",
            AlertKind::DnsFailed => "dns_failed",
            AlertKind::CertificateRenewed => "certificate_renewed",
            AlertKind::CertificateRenewalFailed => "certificate_renewal_failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    pub kind: AlertKind,
    pub subject: AlertSubject,
    pub at: SystemTime,
}

/// What an event is about.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertSubject {
    Backend {
        pool: String,
        /// The backend's URL.
        server: String,
    },
    Host {
        /// The threshold's key, such as `memoryPercent`.
        metric: &'static str,
        value: f64,
        threshold: f64,
    },
    Discovery {
        pool: String,
        /// The entry as written, such as `web.internal:8080`.
        name: String,
        problem: String,
    },
    Certificate {
        /// The certificate's names.
        names: Vec<String>,
        /// Its expiry, or what went wrong.
        detail: String,
    },
}

impl AlertEvent {
    /// An event about a backend happening now.
    pub fn now(kind: AlertKind, pool: &str, server: &str) -> AlertEvent {
        let subject = AlertSubject::Backend { pool: pool.to_string(), server: server.to_string() };
        AlertEvent { kind, subject, at: SystemTime::now() }
    }

    /// An event about an ACME certificate happening now.
    pub fn certificate(kind: AlertKind, names: &[String], detail: &str) -> AlertEvent {
        let subject = AlertSubject::Certificate { names: names.to_vec(), detail: detail.to_string() };
        AlertEvent { kind, subject, at: SystemTime::now() }
    }

    /// The body POSTed to the webhook.
    pub fn to_json(&self) -> String {
        let (event, at) = (self.kind.as_str(), rfc3339_seconds(self.at));
        match &self.subject {
            AlertSubject::Backend { pool, server } => {
                serde_json::json!({"event": event, "pool": pool, "server": server, "at": at})
            }
            AlertSubject::Host { metric, value, threshold } => {
                serde_json::json!({"event": event, "metric": metric, "value": rounded(*value), "threshold": threshold, "at": at})
            }
            AlertSubject::Discovery { pool, name, problem } => {
                serde_json::json!({"event": event, "pool": pool, "name": name, "problem": problem, "at": at})
            }
            AlertSubject::Certificate { names, detail } => {
                serde_json::json!({"event": event, "names": names, "detail": detail, "at": at})
            }
        }
        .to_string()
    }
}

/// `value` to one decimal place, as events and logs show it.
fn rounded(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

impl fmt::Display for AlertEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            AlertSubject::Backend { pool, server } => {
                write!(f, "{} (pool {pool:?}, server {server})", self.kind.as_str())
            }
            AlertSubject::Host { metric, value, threshold } => {
                write!(f, "{} ({metric} {:.1}, threshold {threshold})", self.kind.as_str(), rounded(*value))
            }
            AlertSubject::Discovery { pool, name, problem } => {
                write!(f, "{} (pool {pool:?}, {name}: {problem})", self.kind.as_str())
            }
            AlertSubject::Certificate { names, detail } => {
                write!(f, "{} ({}: {detail})", self.kind.as_str(), names.join(", "))
            }
        }
    }
}

/// Delivery counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertStats {
    /// Delivered with a 2xx answer.
    pub sent: u64,
    /// Not delivered: no connection, a timeout, or a non-2xx answer.
    pub failed: u64,
    /// Never tried because the queue was full.
    pub dropped: u64,
}

/// Written by `raise` (dropped) and the delivery thread (sent, failed); read by `stats`.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug, Clone)]
struct Target {
    webhook: Webhook,
    timeout: Duration,
}

pub struct Alerts {
    queue: SyncSender<AlertEvent>,
    /// Written by `configure` (start and reload); read by `raise` and the delivery thread.
    target: Arc<Mutex<Option<Target>>>,
    counters: Arc<Counters>,
}

impl Alerts {
    /// Starts the delivery thread for `config`, with a queue of [`ALERT_QUEUE_EVENTS`].
    pub fn start(config: &AlertsConfig) -> io::Result<Alerts> {
        Alerts::with_queue(config, ALERT_QUEUE_EVENTS)
    }

    /// Starts the delivery thread with a queue of `capacity` events.
    pub fn with_queue(config: &AlertsConfig, capacity: usize) -> io::Result<Alerts> {
        let (queue, events) = mpsc::sync_channel(capacity);
        let alerts = Alerts { queue, target: Arc::new(Mutex::new(None)), counters: Arc::default() };
        alerts.configure(config);
        let (target, counters) = (Arc::clone(&alerts.target), Arc::clone(&alerts.counters));
        thread::Builder::new().name("sluice-alerts".into()).spawn(move || deliver_all(&events, &target, &counters))?;
        Ok(alerts)
    }

    /// Switches to the webhook of `config` (or to none); events already queued go to the
    /// new one.
    pub fn configure(&self, config: &AlertsConfig) {
        *lock(&self.target) = config.webhook.clone().map(|webhook| Target { webhook, timeout: config.timeout });
    }

    /// Queues `event` for the webhook, if one is configured. Never waits.
    pub fn raise(&self, event: AlertEvent) {
        if lock(&self.target).is_none() {
            return;
        }
        match self.queue.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(event) | TrySendError::Disconnected(event)) => {
                let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                warn!("alert queue full: dropped {event} ({dropped} dropped so far)");
            }
        }
    }

    pub fn stats(&self) -> AlertStats {
        AlertStats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The delivery thread: one event at a time until the [`Alerts`] is dropped.
fn deliver_all(events: &Receiver<AlertEvent>, target: &Mutex<Option<Target>>, counters: &Counters) {
    for event in events {
        let Some(target) = lock(target).clone() else { continue };
        match deliver(&target, &event) {
            Ok(()) => counters.sent.fetch_add(1, Ordering::Relaxed),
            Err(why) => {
                warn!("alert webhook {}: {event} not delivered: {why}", target.webhook.url);
                counters.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// POSTs one event; everything from connecting to the response head within the timeout.
fn deliver(target: &Target, event: &AlertEvent) -> Result<(), String> {
    let deadline = Instant::now() + target.timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let stream = connect(target, target.timeout).map_err(|e| format!("connect: {e}"))?;
    stream.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
    let body = event.to_json();
    let webhook = &target.webhook;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice-alerts\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        webhook.path,
        webhook.authority,
        body.len()
    );
    (&stream).write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut src = BufferedStream::new(stream, RESPONSE_HEAD_BYTES);
    let response = read_response_head(&mut src, RESPONSE_HEAD_BYTES, left()).map_err(|e| format!("response: {e:?}"))?;
    match response.status {
        200..=299 => Ok(()),
        status => Err(format!("answered {status}")),
    }
}

fn connect(target: &Target, timeout: Duration) -> io::Result<TcpStream> {
    net::connect_any(&target.webhook.addrs, 0, timeout).map(|(stream, _)| stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn events_are_small_json_objects() {
        let subject = AlertSubject::Backend { pool: "web".into(), server: "http://10.0.0.1:80".into() };
        let event = AlertEvent { kind: AlertKind::PoolDown, subject, at: at(1_709_251_199) };
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"event": "pool_down", "pool": "web", "server": "http://10.0.0.1:80",
                "at": "2024-02-29T23:59:59Z"})
        );
    }

    #[test]
    fn host_events_name_the_metric_value_and_threshold() {
        let subject = AlertSubject::Host { metric: "diskPercent", value: 91.234, threshold: 90.0 };
        let event = AlertEvent { kind: AlertKind::HostHigh, subject, at: at(0) };
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"event": "host_high", "metric": "diskPercent", "value": 91.2, "threshold": 90.0,
                "at": "1970-01-01T00:00:00Z"})
        );
        assert_eq!(event.to_string(), "host_high (diskPercent 91.2, threshold 90)");
    }

    #[test]
    fn without_a_webhook_nothing_is_queued_or_dropped() {
        let alerts = Alerts::with_queue(&AlertsConfig::default(), 1).unwrap();
        for _ in 0..10 {
            alerts.raise(AlertEvent::now(AlertKind::BackendDown, "p", "s"));
        }
        assert_eq!(alerts.stats(), AlertStats::default());
    }
}
