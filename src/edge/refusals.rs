//! Counting and logging the requests a route's edge controls refuse: one counter per reason
//! for `/metrics` and `/stats`, and at most one log line a second per reason, saying how many
//! were refused since the previous line.
//!
//! Written by workers through [`super::Edge::check`], read by the admin API. Atomics only.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a request was refused before it reached a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Outside `allow` or inside `deny`: `403`.
    Denied,
    /// Over `rateLimit`: `429`.
    RateLimited,
    /// Without valid `basicAuth` credentials: `401`.
    Unauthorized,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::Denied, Reason::RateLimited, Reason::Unauthorized];

    /// The name in metrics, stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Denied => "denied",
            Reason::RateLimited => "rate_limited",
            Reason::Unauthorized => "unauthorized",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Reason::Denied => 403,
            Reason::RateLimited => 429,
            Reason::Unauthorized => 401,
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// The shortest time between two log lines for one reason.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// A route's refusal counters and log throttle.
#[derive(Debug)]
pub struct Refusals {
    /// Refusals by reason since start.
    counts: [AtomicU64; 3],
    /// Refusals by reason not yet mentioned in a log line.
    unlogged: [AtomicU64; 3],
    /// By reason: milliseconds after `epoch` of the last log line, plus one (0: never).
    last_logged: [AtomicU64; 3],
    epoch: Instant,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            counts: Default::default(),
            unlogged: Default::default(),
            last_logged: Default::default(),
            epoch: Instant::now(),
        }
    }
}

impl Refusals {
    /// Counts one refusal at `now`. Returns how many refusals for this reason a log line
    /// should report now (this one and those since the last line), or `None` when a line
    /// for this reason was written less than [`LOG_INTERVAL`] ago.
    pub fn record(&self, reason: Reason, now: Instant) -> Option<u64> {
        let i = reason.slot();
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.unlogged[i].fetch_add(1, Ordering::Relaxed);
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64 + 1;
        let last = self.last_logged[i].load(Ordering::Relaxed);
        let due = last == 0 || now_ms >= last + LOG_INTERVAL.as_millis() as u64;
        if !due || self.last_logged[i].compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return None;
        }
        Some(self.unlogged[i].swap(0, Ordering::Relaxed))
    }

    /// Refusals for `reason` since start.
    pub fn count(&self, reason: Reason) -> u64 {
        self.counts[reason.slot()].load(Ordering::Relaxed)
    }
}

/// Writes the line for `count` refusals, the latest from `client`, on the route `route`.
pub fn log_refusals(route: &str, reason: Reason, count: u64, client: IpAddr) {
    let what = match reason {
        Reason::Denied => "outside its allow/deny rules",
        Reason::RateLimited => "over its rate limit",
        Reason::Unauthorized => "without valid credentials",
    };
    let line = format!(
        "route {route}: refused {count} request(s) {what} ({}) since the last such line; latest from {client}",
        reason.status()
    );
    if reason == Reason::RateLimited {
        log::warn!("{line}");
    } else {
        log::info!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_one_line_a_second_per_reason_reports_everything_counted() {
        let refusals = Refusals::default();
        let t0 = refusals.epoch;
        let ms = |n| t0 + Duration::from_millis(n);
        // (reason, milliseconds after start, count the line reports, or no line)
        let table = [
            (Reason::Denied, 0, Some(1)),
            (Reason::Denied, 10, None),
            (Reason::Denied, 999, None),
            (Reason::RateLimited, 999, Some(1)),
            (Reason::Denied, 1000, Some(3)),
            (Reason::Denied, 1500, None),
            (Reason::RateLimited, 1500, None),
            (Reason::Unauthorized, 1500, Some(1)),
            (Reason::RateLimited, 2000, Some(2)),
            (Reason::Denied, 5000, Some(2)),
        ];
        for (reason, at, line) in table {
            assert_eq!(refusals.record(reason, ms(at)), line, "{reason:?} at {at} ms");
        }
        assert_eq!(refusals.count(Reason::Denied), 6);
        assert_eq!(refusals.count(Reason::RateLimited), 3);
        assert_eq!(refusals.count(Reason::Unauthorized), 1);
    }

    #[test]
    fn reasons_have_a_name_and_a_status() {
        let named: Vec<_> = Reason::ALL.iter().map(|r| (r.name(), r.status())).collect();
        assert_eq!(named, [("denied", 403), ("rate_limited", 429), ("unauthorized", 401)]);
    }
}
