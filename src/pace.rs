//! The minimum transfer rate a client must keep once a grace period is over, after Apache's
//! mod_reqtimeout `MinRate`: a transfer that started at `started` must have moved `done`
//! bytes by `started + grace + done / bytesPerSecond`. Every byte earns the client more time,
//! so a slow but steady client is never cut off, and one that drips a few bytes every few
//! seconds is.
//!
//! Pure: `connection` uses it for small request bodies it buffers, `http::stream` for bodies
//! streamed to a backend, and `exchange` for responses written to a client.

use crate::config::Config;
use std::time::{Duration, Instant};

/// The rate rule of the configuration: `limits.minClientBytesPerSecond` after
/// `timeouts.minRateGrace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    pub grace: Duration,
    /// Zero turns the rule off.
    pub bytes_per_second: u64,
}

impl MinRate {
    pub fn of(config: &Config) -> MinRate {
        MinRate { grace: config.timeouts.min_rate_grace, bytes_per_second: config.limits.min_client_bytes_per_second }
    }
}

/// One transfer held to a [`MinRate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub started: Instant,
    pub rate: MinRate,
}

impl Pace {
    pub fn new(rate: MinRate, started: Instant) -> Pace {
        Pace { started, rate }
    }

    /// When `done` bytes must have moved by; `None` when the rule is off.
    pub fn deadline(&self, done: u64) -> Option<Instant> {
        if self.rate.bytes_per_second == 0 {
            return None;
        }
        let earned = Duration::from_micros(done.saturating_mul(1_000_000) / self.rate.bytes_per_second);
        self.started.checked_add(self.rate.grace.saturating_add(earned))
    }

    /// Whether a transfer that moved `done` bytes by `now` is below the rate.
    pub fn is_behind(&self, done: u64, now: Instant) -> bool {
        self.deadline(done).is_some_and(|deadline| now >= deadline)
    }

    /// How long the next read or write may wait, at most `longest`: the time left until the
    /// deadline for `done` bytes. `None` when the client is already behind.
    pub fn next_wait(&self, done: u64, now: Instant, longest: Duration) -> Option<Duration> {
        match self.deadline(done) {
            None => Some(longest),
            Some(deadline) if deadline > now => Some((deadline - now).min(longest)),
            Some(_) => None,
        }
    }
}

/// The error a read or write gives when the client fell below the minimum rate.
#[derive(Debug)]
pub struct TooSlow;

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client fell below limits.minClientBytesPerSecond")
    }
}

impl std::error::Error for TooSlow {}

pub fn too_slow() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, TooSlow)
}

/// Whether `e` is [`too_slow`]'s error.
pub fn is_too_slow(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TooSlow>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(grace_secs: u64, rate: u64) -> (Pace, Instant) {
        let start = Instant::now();
        (Pace::new(MinRate { grace: Duration::from_secs(grace_secs), bytes_per_second: rate }, start), start)
    }

    #[test]
    fn every_byte_earns_time_after_the_grace_period() {
        let (pace, start) = pace(10, 500);
        assert_eq!(pace.deadline(0), Some(start + Duration::from_secs(10)));
        assert_eq!(pace.deadline(500), Some(start + Duration::from_secs(11)));
        assert_eq!(pace.deadline(250), Some(start + Duration::from_millis(10_500)));
        assert!(!pace.is_behind(6, start + Duration::from_secs(10)));
        assert!(pace.is_behind(6, start + Duration::from_millis(10_013)));
        assert!(!pace.is_behind(10_000, start + Duration::from_secs(29)));
    }

    #[test]
    fn the_next_wait_is_bounded_by_the_deadline_and_the_longest() {
        let (pace, start) = pace(10, 500);
        let longest = Duration::from_secs(30);
        assert_eq!(pace.next_wait(0, start, longest), Some(Duration::from_secs(10)));
        assert_eq!(pace.next_wait(1_000_000, start, longest), Some(longest));
        assert_eq!(pace.next_wait(0, start + Duration::from_secs(10), longest), None);
    }

    #[test]
    fn a_zero_rate_is_no_rule() {
        let (pace, start) = pace(0, 0);
        assert_eq!(pace.deadline(0), None);
        assert!(!pace.is_behind(0, start + Duration::from_secs(3600)));
        assert_eq!(pace.next_wait(0, start, Duration::from_secs(30)), Some(Duration::from_secs(30)));
    }

    #[test]
    fn too_slow_is_told_apart_from_other_timeouts() {
        assert!(is_too_slow(&too_slow()));
        assert!(!is_too_slow(&std::io::Error::from(std::io::ErrorKind::TimedOut)));
    }
}
