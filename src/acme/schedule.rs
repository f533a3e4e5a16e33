//! When automatic certificates are ordered: renewal two thirds into a certificate's
//! lifetime, and the jittered backoff after a failure. Pure; used by `renewal` and by
//! `--check`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first wait after a failed order; each further failure doubles it up to [`LAST_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(60);
pub const LAST_RETRY: Duration = Duration::from_secs(6 * 3600);

/// The validity of the certificate a listener serves, in seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// When a certificate valid for `validity` is renewed: two thirds into its lifetime. Pure.
pub fn renewal_time(validity: Validity) -> SystemTime {
    let lifetime = (validity.not_after - validity.not_before).max(0);
    at(validity.not_before + lifetime * 2 / 3)
}

/// How long to wait after the `failures`-th failure in a row: [`FIRST_RETRY`] doubling up to
/// [`LAST_RETRY`], then spread by `jitter` (0 to 1) over three quarters to five quarters of
/// that, so that many sluices do not retry in step. Pure.
pub fn retry_delay(failures: u32, jitter: f64) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(LAST_RETRY).mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
}

pub fn at(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_two_thirds_into_the_lifetime() {
        let validity = Validity { not_before: 1_000, not_after: 1_000 + 90 * 86_400 };
        assert_eq!(renewal_time(validity), at(1_000 + 60 * 86_400));
        assert_eq!(renewal_time(Validity { not_before: 30, not_after: 0 }), at(30));
    }

    #[test]
    fn retries_back_off_doubling_with_jitter_up_to_a_limit() {
        assert_eq!(retry_delay(1, 0.5), FIRST_RETRY);
        assert_eq!(retry_delay(3, 0.5), FIRST_RETRY * 4);
        assert_eq!(retry_delay(40, 0.5), LAST_RETRY);
        assert_eq!(retry_delay(1, 0.0), FIRST_RETRY.mul_f64(0.75));
        assert_eq!(retry_delay(1, 1.0), FIRST_RETRY.mul_f64(1.25));
    }
}
