//! Counters and a fixed-bucket histogram for exchanges, kept in atomics so that recording
//! costs a handful of relaxed additions and never a lock.
//!
//! Each backend owns a [`BackendMetrics`]; the runtime owns one [`Metrics`] for what no
//! backend answered (sluice's own 4xx and 5xx) and for process-wide counts. `connection`
//! records every finished exchange, `health` records probe results, `proxy` counts retries;
//! the admin API reads snapshots and renders them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the request-duration buckets, in microseconds; one more bucket, `+Inf`,
/// follows the last.
pub const DURATION_BUCKETS_MICROS: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

const BUCKETS: usize = DURATION_BUCKETS_MICROS.len() + 1;

/// Status classes as counted: 1xx to 5xx.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A request-duration histogram. Written by workers, read by the admin API.
#[derive(Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    counts: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

/// A copy of a histogram at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    pub counts: [u64; BUCKETS],
    pub sum_micros: u64,
}

impl Histogram {
    pub fn observe(&self, duration: Duration) {
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// The bucket an observation of `micros` falls in: the first whose bound is not below it.
fn bucket_of(micros: u64) -> usize {
    DURATION_BUCKETS_MICROS.iter().position(|&bound| micros <= bound).unwrap_or(BUCKETS - 1)
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Observations at or below each bound, `+Inf` last, as Prometheus wants them.
    pub fn cumulative(&self) -> [u64; BUCKETS] {
        let mut total = 0;
        std::array::from_fn(|i| {
            total += self.counts[i];
            total
        })
    }

    /// What was observed between `earlier` and this snapshot.
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
            sum_micros: self.sum_micros.saturating_sub(earlier.sum_micros),
        }
    }

    pub fn mean(&self) -> Option<Duration> {
        let count = self.count();
        (count > 0).then(|| Duration::from_micros(self.sum_micros / count))
    }

    /// An estimate of quantile `q` (0 to 1), interpolating linearly inside the bucket it falls
    /// in; the `+Inf` bucket reports the largest finite bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * count as f64).max(1.0);
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = DURATION_BUCKETS_MICROS.get(i) else {
                    return Some(Duration::from_micros(DURATION_BUCKETS_MICROS[BUCKETS - 2]));
                };
                let lower = if i == 0 { 0 } else { DURATION_BUCKETS_MICROS[i - 1] };
                let fraction = (rank - below as f64) / n as f64;
                return Some(Duration::from_micros(lower + ((upper - lower) as f64 * fraction) as u64));
            }
            below += n;
        }
        None
    }
}

/// Finished exchanges, by status class, with their bytes and durations.
#[derive(Default)]
pub struct ExchangeMetrics {
    by_class: [AtomicU64; 5],
    /// Bytes read from clients for these exchanges: request heads and bodies.
    bytes_received: AtomicU64,
    /// Response body bytes sent to clients.
    bytes_sent: AtomicU64,
    duration: Histogram,
}

/// One finished exchange as the metrics count it.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    pub status: u16,
    pub duration: Duration,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExchangeSnapshot {
    pub by_class: [u64; 5],
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: HistogramSnapshot,
}

impl ExchangeMetrics {
    pub fn record(&self, exchange: &Finished) {
        self.by_class[class_index(exchange.status)].fetch_add(1, Ordering::Relaxed);
        self.bytes_received.fetch_add(exchange.bytes_received, Ordering::Relaxed);
        self.bytes_sent.fetch_add(exchange.bytes_sent, Ordering::Relaxed);
        self.duration.observe(exchange.duration);
    }

    pub fn snapshot(&self) -> ExchangeSnapshot {
        ExchangeSnapshot {
            by_class: std::array::from_fn(|i| self.by_class[i].load(Ordering::Relaxed)),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            duration: self.duration.snapshot(),
        }
    }
}

impl ExchangeSnapshot {
    pub fn total(&self) -> u64 {
        self.by_class.iter().sum()
    }

    pub fn server_errors(&self) -> u64 {
        self.by_class[4]
    }
}

/// Index into [`STATUS_CLASSES`]; anything outside 100..=599 counts as 5xx.
fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 4,
    }
}

/// What one backend's exchanges and probes came to.
#[derive(Default)]
pub struct BackendMetrics {
    /// Written by workers as each exchange this backend answered ends.
    pub exchanges: ExchangeMetrics,
    /// Written by the health thread.
    health_checks_passed: AtomicU64,
    health_checks_failed: AtomicU64,
}

impl BackendMetrics {
    pub fn record_health_check(&self, passed: bool) {
        let counter = if passed { &self.health_checks_passed } else { &self.health_checks_failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Probes passed and failed, lifetime.
    pub fn health_checks(&self) -> (u64, u64) {
        (self.health_checks_passed.load(Ordering::Relaxed), self.health_checks_failed.load(Ordering::Relaxed))
    }
}

/// Process-wide counts, owned by the runtime.
#[derive(Default)]
pub struct Metrics {
    /// Exchanges sluice answered itself (refusals, no backend available, no route).
    pub own_answers: ExchangeMetrics,
    /// Attempts sent again after a failed one: to the next backend, or on a fresh connection.
    retries: AtomicU64,
    /// Response body bytes moved from backend to client by splice, never copied into sluice.
    spliced_bytes: AtomicU64,
    /// What was done about slow clients.
    pub slow_clients: SlowClients,
    /// TLS handshakes with clients, counted by `connection`.
    pub tls: TlsMetrics,
    /// PROXY protocol headers refused on listeners with `acceptProxy`.
    pub proxy_headers: ProxyHeaderMetrics,
}

/// Connections closed on a listener with `acceptProxy` because their PROXY header was not a
/// valid one, or did not arrive within `timeouts.clientHeader`.
#[derive(Default)]
pub struct ProxyHeaderMetrics {
    malformed: AtomicU64,
    timed_out: AtomicU64,
}

impl ProxyHeaderMetrics {
    pub fn record_malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Malformed and timed-out headers so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.malformed.load(Ordering::Relaxed), self.timed_out.load(Ordering::Relaxed))
    }
}

/// Counts of what sluice did about slow clients, so that an operator can see an attack.
/// Written by workers and the waiting room; read by the admin API.
#[derive(Default)]
pub struct SlowClients {
    /// Times a connection waited in the waiting room for the rest of a small request body.
    bodies_parked: AtomicU64,
    /// Request bodies refused with `408` for moving slower than the minimum rate.
    bodies_too_slow: AtomicU64,
    /// Responses cut off because the client read them slower than the minimum rate.
    readers_too_slow: AtomicU64,
    /// Bytes of incomplete request bodies held by parked connections right now.
    parked_body_bytes: AtomicU64,
}

/// A copy of [`SlowClients`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlowClientsSnapshot {
    pub bodies_parked: u64,
    pub bodies_too_slow: u64,
    pub readers_too_slow: u64,
    pub parked_body_bytes: u64,
}

impl SlowClients {
    pub fn record_body_parked(&self) {
        self.bodies_parked.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_body_too_slow(&self) {
        self.bodies_too_slow.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_reader_too_slow(&self) {
        self.readers_too_slow.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `bytes` of a parked body in (`held` true) or out.
    pub fn hold_body_bytes(&self, bytes: usize, held: bool) {
        if held {
            self.parked_body_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        } else {
            self.parked_body_bytes.fetch_sub(bytes as u64, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> SlowClientsSnapshot {
        SlowClientsSnapshot {
            bodies_parked: self.bodies_parked.load(Ordering::Relaxed),
            bodies_too_slow: self.bodies_too_slow.load(Ordering::Relaxed),
            readers_too_slow: self.readers_too_slow.load(Ordering::Relaxed),
            parked_body_bytes: self.parked_body_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Handshakes on TLS listeners: finished, and failed (protocol errors, not in time).
#[derive(Default)]
pub struct TlsMetrics {
    handshakes: AtomicU64,
    failures: AtomicU64,
}

impl TlsMetrics {
    pub fn handshake_done(&self) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn handshake_failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Finished and failed handshakes so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.handshakes.load(Ordering::Relaxed), self.failures.load(Ordering::Relaxed))
    }
}

impl Metrics {
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    pub fn record_spliced(&self, bytes: usize) {
        self.spliced_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn spliced_bytes(&self) -> u64 {
        self.spliced_bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1_000), 0);
        assert_eq!(bucket_of(1_001), 1);
        assert_eq!(bucket_of(10_000_000), 12);
        assert_eq!(bucket_of(10_000_001), 13);
        assert_eq!(bucket_of(u64::MAX), 13);
    }

    #[test]
    fn cumulative_counts_end_with_the_total() {
        let h = Histogram::default();
        for d in [ms(0), ms(3), ms(3), ms(70), ms(20_000)] {
            h.observe(d);
        }
        let s = h.snapshot();
        let c = s.cumulative();
        assert_eq!((c[0], c[1], c[2], c[6], c[12], c[13]), (1, 1, 3, 4, 4, 5));
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum_micros, 20_076_000);
    }

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        let h = Histogram::default();
        for _ in 0..100 {
            h.observe(ms(30)); // bucket 25..50 ms
        }
        let s = h.snapshot();
        assert_eq!(s.quantile(0.5), Some(ms(37) + Duration::from_micros(500)));
        assert_eq!(s.quantile(1.0), Some(ms(50)));
        assert_eq!(s.mean(), Some(ms(30)));
        assert_eq!(HistogramSnapshot::default().quantile(0.5), None);
        h.observe(Duration::from_secs(60));
        assert_eq!(h.snapshot().quantile(1.0), Some(Duration::from_secs(10)));
    }

    #[test]
    fn since_subtracts_an_earlier_snapshot() {
        let h = Histogram::default();
        h.observe(ms(1));
        let before = h.snapshot();
        h.observe(ms(200));
        let delta = h.snapshot().since(&before);
        assert_eq!(delta.count(), 1);
        assert_eq!(delta.mean(), Some(ms(200)));
    }

    #[test]
    fn statuses_count_by_class() {
        let m = ExchangeMetrics::default();
        for status in [200, 204, 301, 404, 499, 502, 503, 0] {
            m.record(&Finished { status, duration: ms(1), bytes_received: 10, bytes_sent: 5 });
        }
        let s = m.snapshot();
        assert_eq!(s.by_class, [0, 2, 1, 2, 3]);
        assert_eq!((s.total(), s.server_errors(), s.bytes_received, s.bytes_sent), (8, 3, 80, 40));
    }
}
