//! Recent rates: requests per second, error ratio and latency over the last few seconds, per
//! backend, from counters sampled once a second by the admin ticker.
//!
//! The ticker writes the windows ([`Windows::sample`]); the admin handler reads them while
//! building a snapshot. Both lock the one mutex for the time of a copy, never across I/O, and
//! the request path never touches it.

use crate::backend::Backend;
use crate::lock;
use crate::ops::changes::Place;
use crate::ops::metrics::HistogramSnapshot;
use crate::runtime::State;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How far back recent rates look.
pub const WINDOW: Duration = Duration::from_secs(10);

/// A backend's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: Instant,
    /// Exchanges started, including attempts that failed to connect.
    pub requests: u64,
    /// Failed connects and broken responses, plus 5xx answers.
    pub errors: u64,
    pub duration: HistogramSnapshot,
}

impl Sample {
    pub fn of(backend: &Backend, at: Instant) -> Sample {
        let stats = backend.stats();
        let exchanges = backend.metrics.exchanges.snapshot();
        Sample {
            at,
            requests: stats.requests,
            errors: stats.failures + exchanges.server_errors(),
            duration: exchanges.duration,
        }
    }
}

/// What happened between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recent {
    pub seconds: f64,
    pub requests_per_second: f64,
    /// Errors over requests, from 0 to 1.
    pub error_ratio: f64,
    pub latency_mean: Option<Duration>,
    pub latency_p95: Option<Duration>,
}

/// The rates between `earlier` and `later`; `None` when they are too close to say anything.
pub fn recent(earlier: &Sample, later: &Sample) -> Option<Recent> {
    let seconds = later.at.saturating_duration_since(earlier.at).as_secs_f64();
    if seconds < 0.5 {
        return None;
    }
    let requests = later.requests.saturating_sub(earlier.requests);
    let errors = later.errors.saturating_sub(earlier.errors);
    let duration = later.duration.since(&earlier.duration);
    Some(Recent {
        seconds,
        requests_per_second: requests as f64 / seconds,
        error_ratio: if requests == 0 { 0.0 } else { (errors as f64 / requests as f64).min(1.0) },
        latency_mean: duration.mean(),
        latency_p95: duration.quantile(0.95),
    })
}

/// Samples of one backend, oldest first, none older than [`WINDOW`] but the oldest.
#[derive(Default)]
struct Window {
    /// Which backend the samples are of: a reload that replaces it resets its counters.
    backend: usize,
    samples: VecDeque<Sample>,
}

/// The windows of every backend, by pool and URL.
#[derive(Default)]
pub struct Windows {
    windows: Mutex<HashMap<(String, String), Window>>,
}

impl Windows {
    /// Takes a sample of every backend in `state` and forgets backends no longer there.
    pub fn sample(&self, state: &State, now: Instant) {
        let mut windows = lock(&self.windows);
        let mut seen = Vec::new();
        for pool in &state.pools {
            for backend in &pool.backends {
                let key = (pool.name().to_string(), backend.url().to_string());
                let window = windows.entry(key.clone()).or_default();
                let identity = Arc::as_ptr(backend) as usize;
                if window.backend != identity {
                    *window = Window { backend: identity, samples: VecDeque::new() };
                }
                window.samples.push_back(Sample::of(backend, now));
                while window.samples.len() > 2 && now.saturating_duration_since(window.samples[1].at) >= WINDOW {
                    window.samples.pop_front();
                }
                seen.push(key);
            }
        }
        windows.retain(|key, _| seen.contains(key));
    }

    /// Rates for `backend` at `place` from its oldest sample to now.
    pub fn recent(&self, place: &Place, backend: &Arc<Backend>, now: Instant) -> Option<Recent> {
        let oldest = {
            let windows = lock(&self.windows);
            let window = windows.get(&(place.pool.clone(), place.url.clone()))?;
            if window.backend != Arc::as_ptr(backend) as usize {
                return None;
            }
            *window.samples.front()?
        };
        recent(&oldest, &Sample::of(backend, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, requests: u64, errors: u64) -> Sample {
        Sample { at, requests, errors, duration: HistogramSnapshot::default() }
    }

    #[test]
    fn rates_are_differences_over_elapsed_time() {
        let t = Instant::now();
        let r = recent(&sample(t, 100, 1), &sample(t + Duration::from_secs(4), 300, 11)).unwrap();
        assert_eq!((r.seconds, r.requests_per_second, r.error_ratio), (4.0, 50.0, 0.05));
        assert_eq!(r.latency_mean, None);
    }

    #[test]
    fn samples_too_close_together_say_nothing() {
        let t = Instant::now();
        assert_eq!(recent(&sample(t, 0, 0), &sample(t + Duration::from_millis(100), 9, 0)), None);
    }

    #[test]
    fn error_ratio_is_capped_and_zero_without_requests() {
        let t = Instant::now();
        let later = t + Duration::from_secs(1);
        assert_eq!(recent(&sample(t, 0, 0), &sample(later, 2, 5)).unwrap().error_ratio, 1.0);
        assert_eq!(recent(&sample(t, 5, 0), &sample(later, 5, 3)).unwrap().error_ratio, 0.0);
    }
}
