//! Active health checks: a thread that probes every backend of every pool on the pool's
//! interval, and the pure rise/fall rule that turns probe results into up and down.
//!
//! An HTTP pool's backends are probed with an HTTP request (2xx and 3xx pass); a tcp pool's
//! backends pass when a TCP connection opens. Each round probes all due backends at once, one short-lived thread per probe, so a slow
//! backend costs its own probe's timeout and never delays the others. The thread writes each
//! backend's `healthy` flag and health state, and closes idle connections grown stale.

use crate::backend::Backend;
use crate::config::{HealthCheckConfig, Protocol};
use crate::http::head::read_response_head;
use crate::http::stream::BufferedStream;
use crate::lock;
use crate::pool::Pool;
use crate::runtime::Runtime;
use log::{info, warn};
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Consecutive probe results for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    pub healthy: bool,
    /// How many results in a row have disagreed with `healthy`.
    streak: u32,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState::new()
    }
}

impl HealthState {
    /// Backends start healthy, so traffic flows from the first moment.
    pub fn new() -> HealthState {
        HealthState { healthy: true, streak: 0 }
    }

    /// Down, needing `rise` passing probes to come up: a backend added at run time whose
    /// first probe failed.
    pub fn down() -> HealthState {
        HealthState { healthy: false, streak: 0 }
    }

    /// Records one probe result; returns the new state when this result flips it.
    pub fn record(&mut self, passed: bool, rise: u32, fall: u32) -> Option<bool> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if passed { rise } else { fall };
        if self.streak < needed {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(passed)
    }
}

pub fn spawn(runtime: Arc<Runtime>) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name("sluice-health".into()).spawn(move || run(&runtime))
}

fn run(runtime: &Runtime) {
    let mut next_due: HashMap<String, Instant> = HashMap::new();
    loop {
        let state = runtime.state();
        let now = Instant::now();
        let due: Vec<&Arc<Pool>> =
            state.pools.iter().filter(|p| next_due.get(p.name()).is_none_or(|&t| t <= now)).collect();
        probe_pools(&due);
        for pool in &due {
            next_due.insert(pool.name().to_string(), now + pool.config.health_check.interval);
            for backend in &pool.backends {
                backend.close_stale_idle(state.config.timeouts.backend_idle);
            }
        }
        let wake = state.pools.iter().filter_map(|p| next_due.get(p.name())).min().copied();
        let sleep = wake.map_or(Duration::from_secs(1), |t| t.saturating_duration_since(Instant::now()));
        if runtime.sleep_unless_stopping(sleep) {
            return;
        }
    }
}

fn probe_pools(pools: &[&Arc<Pool>]) {
    thread::scope(|scope| {
        for pool in pools {
            let (check, protocol) = (&pool.config.health_check, pool.config.protocol);
            for backend in &pool.backends {
                let spawned = thread::Builder::new()
                    .name("sluice-probe".into())
                    .stack_size(64 * 1024)
                    .spawn_scoped(scope, move || record(backend, check, probe(backend, check, protocol)));
                if let Err(e) = spawned {
                    warn!("cannot start a health probe thread: {e}");
                }
            }
        }
    });
}

fn record(backend: &Backend, check: &HealthCheckConfig, result: Result<(), String>) {
    backend.metrics.record_health_check(result.is_ok());
    let flipped = lock(&backend.health).record(result.is_ok(), check.rise, check.fall);
    match (flipped, result) {
        (Some(false), Err(why)) => {
            backend.set_healthy(false);
            warn!("{}: down after {} failed health checks (last: {why})", backend.url(), check.fall);
        }
        (Some(true), _) => {
            backend.set_healthy(true);
            info!("{}: up after {} passed health checks", backend.url(), check.rise);
        }
        _ => {}
    }
}

/// One probe over a new connection: for HTTP, `check.method check.path` answered with 2xx or
/// 3xx; for TCP, the connection opening is the pass.
pub fn probe(backend: &Backend, check: &HealthCheckConfig, protocol: Protocol) -> Result<(), String> {
    let deadline = Instant::now() + check.timeout;
    let stream = connect(backend, check.timeout).map_err(|e| format!("connect: {e}"))?;
    if protocol == Protocol::Tcp {
        return Ok(());
    }
    stream.set_write_timeout(Some(check.timeout)).map_err(|e| e.to_string())?;
    let request = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice-health-check\r\nConnection: close\r\n\r\n",
        check.method, check.path, backend.config.authority
    );
    (&stream).write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut src = BufferedStream::new(stream, 16 * 1024);
    let left = deadline.saturating_duration_since(Instant::now());
    let response = read_response_head(&mut src, 16 * 1024, left).map_err(|e| format!("response: {e:?}"))?;
    match response.status {
        200..=399 => Ok(()),
        status => Err(format!("status {status}")),
    }
}

fn connect(backend: &Backend, timeout: Duration) -> io::Result<TcpStream> {
    let mut last_error = io::Error::other("no address");
    for addr in &backend.config.addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_passes() {
        let mut s = HealthState::new();
        //        fail  pass  fail  fail        pass  pass  pass
        // state: up    up    up    DOWN        down  down  UP      (rise 3, fall 2)
        assert_eq!(s.record(false, 3, 2), None);
        assert_eq!(s.record(true, 3, 2), None);
        assert_eq!(s.record(false, 3, 2), None);
        assert_eq!(s.record(false, 3, 2), Some(false));
        assert_eq!(s.record(false, 3, 2), None);
        assert_eq!(s.record(true, 3, 2), None);
        assert_eq!(s.record(true, 3, 2), None);
        assert_eq!(s.record(true, 3, 2), Some(true));
        assert!(s.healthy);
    }

    #[test]
    fn a_pass_in_between_resets_the_streak() {
        let mut s = HealthState::new();
        for _ in 0..10 {
            assert_eq!(s.record(false, 2, 2), None);
            assert_eq!(s.record(true, 2, 2), None);
        }
        assert!(s.healthy);
    }
}
