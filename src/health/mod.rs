//! Backend health: the health thread that probes every backend, and the one place
//! that reports a change (a log line, an alert, a pool left with no healthy backend).
//!
//! Active checks: each backend is probed on its pool's interval, with an HTTP request for an
//! HTTP pool (2xx and 3xx pass, or `expectStatus`) and a TCP connect for a tcp pool. The first
//! probes are spread
//! over the first half of the interval and every later one comes after the interval moved by
//! up to ±[`PROBE_JITTER_PERCENT`], so many backends are not probed in the same instant.
//! Backends added while running start unknown and are probed at once: they join on their
//! first passing probe. Each probe runs on its own short-lived thread, so a slow backend
//! never delays the others' probes.
//!
//! Passive checks: workers call [`record_traffic_failure`] when a backend refuses, times out
//! or resets a connection before answering; `healthCheck.passiveFails` of those in a row take
//! the backend out at once, and probes bring it back after `rise` passes.
//!
//! Writes each backend's health through `Backend::change_health`; the health thread also
//! closes idle connections grown stale.

use crate::backend::{send_proxy_header, Backend};
use crate::balance::random::Random;
use crate::config::Protocol;
use crate::http::head::read_response_head;
use crate::http::stream::BufferedStream;
use crate::net;
use crate::ops::alerts::{AlertEvent, AlertKind};
use crate::pool::Pool;
use crate::runtime::Runtime;
use crate::transport::{BackendTransport, Transport};
pub mod state;

pub use state::{Health, HealthChange, HealthState};

use log::{debug, error, info, warn};
use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Each probe interval is moved by a random amount up to this share of it, either way.
pub const PROBE_JITTER_PERCENT: u128 = 10;

/// Stack of a probe thread: it holds a few small buffers and formats a log line.
const PROBE_STACK_BYTES: usize = 128 * 1024;

/// The largest probe response head read.
const PROBE_HEAD_BYTES: usize = 16 * 1024;

/// Whether a probe's answer passes: one of `expect`, or any 2xx or 3xx when `None`.
pub fn is_expected_status(status: u16, expect: Option<&[u16]>) -> bool {
    match expect {
        Some(statuses) => statuses.contains(&status),
        None => (200..=399).contains(&status),
    }
}

/// When backend `index` of a pool of `count` is first probed: spread evenly over the first
/// half of the interval.
pub fn first_probe_offset(index: usize, count: usize, interval: Duration) -> Duration {
    let nanos = interval.as_nanos() / 2 * index as u128 / count.max(1) as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The wait before a backend's next probe: `interval`, moved by up to
/// ±[`PROBE_JITTER_PERCENT`] by `random` (any value).
pub fn next_probe_delay(interval: Duration, random: u64) -> Duration {
    let span = interval.as_nanos() * PROBE_JITTER_PERCENT / 100;
    let shift = u128::from(random) % (2 * span + 1);
    Duration::from_nanos(u64::try_from(interval.as_nanos() - span + shift).unwrap_or(u64::MAX))
}

/// Counts a failure seen on real traffic to `backend` of `pool` (refused, timed out, or
/// reset before a response); `passiveFails` in a row take it out at once. Called by workers.
pub fn record_traffic_failure(runtime: &Runtime, pool: &Pool, backend: &Backend, error: &io::Error) {
    let in_a_row = backend.count_traffic_failure();
    let limit = pool.config.health_check.passive_fails;
    if let Some(change) = backend.change_health(|s| s.record_traffic_failures(in_a_row, limit)) {
        report(runtime, pool, backend, change, &format!("{in_a_row} failures in a row on live traffic, last: {error}"));
    }
}

fn record_probe(runtime: &Runtime, pool: &Pool, backend: &Backend, result: Result<(), String>) {
    let check = &pool.config.health_check;
    backend.metrics.record_health_check(result.is_ok());
    if let Err(why) = &result {
        debug!("{}: health check failed: {why}", backend.url());
    }
    let Some(change) = backend.change_health(|s| s.record_probe(result.is_ok(), check.rise, check.fall)) else {
        return;
    };
    let cause = match (result, change.from) {
        (Ok(()), Health::Unknown) => "first health check passed".to_string(),
        (Ok(_), _) => format!("{} health checks passed in a row", check.rise),
        (Err(why), _) => format!("{} health checks failed in a row, last: {why}", check.fall),
    };
    report(runtime, pool, backend, change, &cause);
}

/// Logs a change once, raises its alert, and notices the pool losing its last healthy
/// backend.
fn report(runtime: &Runtime, pool: &Pool, backend: &Backend, change: HealthChange, cause: &str) {
    let url = backend.url();
    if change.to == Health::Up {
        pool.regained_healthy();
        info!("{url}: up ({cause})");
        runtime.alerts.raise(AlertEvent::now(AlertKind::BackendUp, pool.name(), url));
        return;
    }
    warn!("{url}: down ({cause})");
    runtime.alerts.raise(AlertEvent::now(AlertKind::BackendDown, pool.name(), url));
    if change.from == Health::Up && pool.lost_last_healthy() {
        error!("pool {:?}: no healthy backend left; answering 503 until one comes back", pool.name());
        runtime.alerts.raise(AlertEvent::now(AlertKind::PoolDown, pool.name(), url));
    }
}

pub fn spawn(runtime: Arc<Runtime>) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name("sluice-health".into()).spawn(move || run(&runtime))
}

/// A backend's place in the probe schedule, by pool name and URL.
struct Planned {
    due: Instant,
    /// True while a probe of it runs; a probe still running when the next is due skips it.
    probing: Arc<AtomicBool>,
}

fn run(runtime: &Arc<Runtime>) {
    let mut plan: HashMap<(String, String), Planned> = HashMap::new();
    let random = Random::new();
    loop {
        let state = runtime.state();
        let now = Instant::now();
        let present: HashSet<(String, String)> = state
            .pools
            .iter()
            .flat_map(|p| p.backends.iter().map(|b| (p.name().to_string(), b.url().to_string())))
            .collect();
        plan.retain(|key, _| present.contains(key));
        for pool in &state.pools {
            let interval = pool.config.health_check.interval;
            for (index, backend) in pool.backends.iter().enumerate() {
                let key = (pool.name().to_string(), backend.url().to_string());
                let planned = plan.entry(key).or_insert_with(|| Planned {
                    due: now + first_probe_wait(backend, index, pool.backends.len(), interval),
                    probing: Arc::default(),
                });
                if planned.due > now {
                    continue;
                }
                planned.due = now + next_probe_delay(interval, random.next_u64());
                backend.close_stale_idle(state.config.timeouts.backend_idle);
                if !planned.probing.swap(true, Ordering::SeqCst) {
                    start_probe(runtime, pool, backend, Probing(Arc::clone(&planned.probing)));
                }
            }
        }
        let wake = plan.values().map(|p| p.due).min();
        let sleep = wake.map_or(Duration::from_secs(1), |t| t.saturating_duration_since(Instant::now()));
        if runtime.sleep_until_change(sleep) {
            return;
        }
    }
}

fn first_probe_wait(backend: &Backend, index: usize, count: usize, interval: Duration) -> Duration {
    match backend.health() {
        Health::Unknown => Duration::ZERO,
        _ => first_probe_offset(index, count, interval),
    }
}

/// Marks a backend's probe as finished when dropped, even if the probe thread panicked.
struct Probing(Arc<AtomicBool>);

impl Drop for Probing {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn start_probe(runtime: &Arc<Runtime>, pool: &Arc<Pool>, backend: &Arc<Backend>, probing: Probing) {
    let (runtime, pool, backend) = (Arc::clone(runtime), Arc::clone(pool), Arc::clone(backend));
    let spawned = thread::Builder::new().name("sluice-probe".into()).stack_size(PROBE_STACK_BYTES).spawn(move || {
        let _probing = probing;
        let result = probe(&backend, &pool);
        record_probe(&runtime, &pool, &backend, result);
    });
    if let Err(e) = spawned {
        warn!("cannot start a health probe thread: {e}");
    }
}

/// One probe over a new connection: for HTTP, `check.method check.path` with `check.host` or
/// the backend's `host:port` as `Host` (over TLS for an `https://` backend, verified as
/// exchanges are), answered with an expected status; for TCP, the connection opening is the
/// pass. A pool with `sendProxy` opens its probes with a PROXY header that names no client
/// (v1 `UNKNOWN`, v2 `LOCAL`), as HAProxy does for checks, so that backends requiring the
/// header accept them and know them for the balancer's own connections.
pub fn probe(backend: &Backend, pool: &Pool) -> Result<(), String> {
    let check = &pool.config.health_check;
    let deadline = Instant::now() + check.timeout;
    let socket = connect(backend, check.timeout).map_err(|e| format!("connect: {e}"))?;
    socket.set_write_timeout(Some(check.timeout)).map_err(|e| e.to_string())?;
    if let Some(version) = pool.config.send_proxy {
        send_proxy_header(&socket, version, None).map_err(|e| format!("send the PROXY header: {e}"))?;
    }
    if pool.config.protocol == Protocol::Tcp {
        return Ok(());
    }
    socket.set_read_timeout(Some(check.timeout)).map_err(|e| e.to_string())?;
    let mut stream: BackendTransport = match (&pool.tls, backend.config.tls) {
        (Some(tls), true) => {
            let session = crate::tls::backend::connection(tls, &backend.config).map_err(|e| e.to_string())?;
            Transport::tls(session, socket)
        }
        _ => Transport::Plain(socket),
    };
    let host = check.host.as_deref().unwrap_or(&backend.config.authority);
    let request = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluice-health-check\r\nConnection: close\r\n\r\n",
        check.method, check.path
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut src = BufferedStream::new(stream, PROBE_HEAD_BYTES);
    let left = deadline.saturating_duration_since(Instant::now());
    let response = read_response_head(&mut src, PROBE_HEAD_BYTES, left).map_err(|e| format!("response: {e:?}"))?;
    if is_expected_status(response.status, check.expect_status.as_deref()) {
        Ok(())
    } else {
        Err(format!("status {}", response.status))
    }
}

fn connect(backend: &Backend, timeout: Duration) -> io::Result<TcpStream> {
    net::connect_any(&backend.config.addrs, 0, timeout).map(|(stream, _)| stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_statuses() {
        let cases: [(u16, Option<&[u16]>, bool); 9] = [
            (200, None, true),
            (204, None, true),
            (301, None, true),
            (399, None, true),
            (404, None, false),
            (503, None, false),
            (200, Some(&[200]), true),
            (301, Some(&[200]), false),
            (204, Some(&[200, 204]), true),
        ];
        for (status, expect, passes) in cases {
            assert_eq!(is_expected_status(status, expect), passes, "{status} against {expect:?}");
        }
    }

    #[test]
    fn first_probes_are_spread_over_the_first_half_of_the_interval() {
        let interval = Duration::from_secs(2);
        let offsets: Vec<u128> = (0..4).map(|i| first_probe_offset(i, 4, interval).as_millis()).collect();
        assert_eq!(offsets, [0, 250, 500, 750]);
        assert_eq!(first_probe_offset(0, 1, interval), Duration::ZERO);
        assert_eq!(first_probe_offset(0, 0, interval), Duration::ZERO);
    }

    #[test]
    fn probe_delays_stay_within_the_jitter_of_the_interval() {
        let interval = Duration::from_secs(2);
        let span = Duration::from_millis(200).as_nanos() as u64;
        assert_eq!(next_probe_delay(interval, 0), Duration::from_millis(1800));
        assert_eq!(next_probe_delay(interval, span), interval);
        assert_eq!(next_probe_delay(interval, 2 * span), Duration::from_millis(2200));
        assert_eq!(next_probe_delay(interval, 2 * span + 1), Duration::from_millis(1800));
        let random = Random::with_seed(12345);
        let delays: Vec<Duration> = (0..1000).map(|_| next_probe_delay(interval, random.next_u64())).collect();
        assert!(delays.iter().all(|d| (Duration::from_millis(1800)..=Duration::from_millis(2200)).contains(d)));
        let below = delays.iter().filter(|d| **d < interval).count();
        assert!((300..700).contains(&below), "{below} of 1000 delays below the interval: not spread");
    }
}
