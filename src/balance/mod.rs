//! Choosing a backend. Each algorithm is one file behind the small [`Balancer`] trait; the
//! pool's `algorithm` key chooses one through [`for_algorithm`].
//!
//! A balancer sees the pool's whole backend list (so indices stay stable) and an `eligible`
//! predicate that folds in health, drain, connection limits, backups and backends already
//! tried for this request. It returns the index of its pick, or `None` when nothing is
//! eligible. Balancers keep their own small state (a cursor, weights, a random generator)
//! behind a mutex held for a few instructions; they read backends' weights and in-flight
//! counts and write nothing outside themselves.

pub mod hash;
mod ip_hash;
mod least_connections;
pub mod random;
mod round_robin;
mod weighted_round_robin;

pub use ip_hash::IpHash;
pub use least_connections::LeastConnections;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted_round_robin::WeightedRoundRobin;

use crate::backend::Backend;
use crate::config::Algorithm;
use std::net::IpAddr;
use std::sync::Arc;

pub trait Balancer: Send + Sync {
    /// Picks one of `backends` for which `eligible(index)` holds, for a request from `client`.
    fn pick(&self, backends: &[Arc<Backend>], eligible: &dyn Fn(usize) -> bool, client: IpAddr) -> Option<usize>;
}

pub fn for_algorithm(algorithm: Algorithm) -> Box<dyn Balancer> {
    match algorithm {
        Algorithm::RoundRobin => Box::new(RoundRobin::default()),
        Algorithm::WeightedRoundRobin => Box::new(WeightedRoundRobin::default()),
        Algorithm::LeastConnections => Box::new(LeastConnections::default()),
        Algorithm::IpHash => Box::new(IpHash),
        Algorithm::Random => Box::new(Random::new()),
    }
}

/// Whether `a` carries less load for its weight than `b`: in-flight / weight, compared by
/// cross-multiplying (`a.active * b.weight < b.active * a.weight`), so there is no division
/// and no rounding.
fn is_less_loaded(a: &Backend, b: &Backend) -> bool {
    load_is_below((a.active(), a.config.weight), (b.active(), b.config.weight))
}

/// The pure rule behind [`is_less_loaded`], over `(in_flight, weight)` pairs.
fn load_is_below(a: (usize, u32), b: (usize, u32)) -> bool {
    (a.0 as u128) * u128::from(b.1) < (b.0 as u128) * u128::from(a.1)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the balancers' unit tests.

    use super::Balancer;
    use crate::backend::Backend;
    use crate::config::server_from_url;
    use std::net::IpAddr;
    use std::sync::Arc;

    /// Backends on 127.0.0.1:1000, :1001, ... with these weights.
    pub fn backends(weights: &[u32]) -> Vec<Arc<Backend>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                let mut server = server_from_url(&format!("http://127.0.0.1:{}", 1000 + i)).unwrap();
                server.weight = weight;
                Arc::new(Backend::new(server))
            })
            .collect()
    }

    pub const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));

    /// `count` picks as letters (`a` for index 0), `-` for none.
    pub fn picks(
        balancer: &dyn Balancer,
        list: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        count: usize,
    ) -> String {
        let letter = |pick: Option<usize>| pick.map_or('-', |i| char::from(b'a' + i as u8));
        (0..count).map(|_| letter(balancer.pick(list, eligible, CLIENT))).collect::<Vec<_>>().iter().collect()
    }

    /// How many of `count` picks went to each backend.
    pub fn tally(balancer: &dyn Balancer, list: &[Arc<Backend>], count: usize) -> Vec<usize> {
        let mut counts = vec![0; list.len()];
        for _ in 0..count {
            counts[balancer.pick(list, &|_| true, CLIENT).expect("a pick")] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_in_flight_per_weight() {
        // (in flight, weight) pairs: a is below b when a.0 / a.1 < b.0 / b.1.
        let table = [
            ((0, 1), (1, 1), true),
            ((1, 1), (1, 1), false),
            ((2, 2), (1, 1), false), // 1.0 vs 1.0: a tie is not below
            ((3, 4), (1, 1), true),  // 0.75 < 1
            ((5, 4), (1, 1), false), // 1.25 > 1
            ((9, 10), (0, 1), false),
            ((usize::MAX, 1000), (usize::MAX, 999), true),
        ];
        for (a, b, below) in table {
            assert_eq!(load_is_below(a, b), below, "{a:?} below {b:?}");
        }
    }

    #[test]
    fn every_algorithm_has_a_balancer_that_picks_among_the_eligible() {
        let list = testing::backends(&[1, 1, 1]);
        for algorithm in Algorithm::ALL {
            let balancer = for_algorithm(algorithm);
            for _ in 0..20 {
                assert_eq!(balancer.pick(&list, &|i| i == 2, testing::CLIENT), Some(2), "{algorithm:?}");
            }
            assert_eq!(balancer.pick(&list, &|_| false, testing::CLIENT), None, "{algorithm:?}");
            assert_eq!(balancer.pick(&[], &|_| true, testing::CLIENT), None, "{algorithm:?}");
        }
    }
}
