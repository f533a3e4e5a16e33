//! Choosing a backend. Each algorithm is one file behind the small [`Balancer`] trait.
//!
//! A balancer sees the pool's whole backend list (so indices stay stable) and an `eligible`
//! predicate that folds in health, drain, connection limits, backups and backends already
//! tried for this request. It returns the index of its pick, or `None` when nothing is
//! eligible.

mod round_robin;

pub use round_robin::RoundRobin;

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
    }
}
