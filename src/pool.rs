//! A pool: a named group of backends and the balancer that picks among them.
//!
//! The pool decides who is eligible for a pick (available, not already tried for this
//! request, and backups only while no primary is up); the balancer decides among those.
//! `without_healthy` is written by whoever reports a health change (health thread, workers).

use crate::backend::Backend;
use crate::balance::{self, Balancer};
use crate::config::PoolConfig;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct Pool {
    pub config: PoolConfig,
    pub backends: Vec<Arc<Backend>>,
    balancer: Box<dyn Balancer>,
    /// Set when the last healthy backend went down, so that is reported once.
    without_healthy: AtomicBool,
}

impl Pool {
    /// Builds a pool. On the first start `running` is `None` and every backend starts up;
    /// on a reload, backends of the `running` set with the same URL are kept with their
    /// health, counters and idle connections, and new ones join after a passing probe.
    pub fn new(config: PoolConfig, running: Option<&[Arc<Backend>]>) -> Pool {
        let backends = config.servers.iter().map(|server| Backend::reuse_or_join(server, running)).collect();
        let balancer = balance::for_algorithm(config.algorithm);
        Pool { config, backends, balancer, without_healthy: AtomicBool::new(false) }
    }

    /// True exactly once each time the pool goes from some healthy backend to none.
    pub fn lost_last_healthy(&self) -> bool {
        let none = !self.backends.iter().any(|b| b.is_healthy());
        none && !self.without_healthy.swap(true, Ordering::SeqCst)
    }

    /// Called when a backend comes up, so the next loss of the last one is reported again.
    pub fn regained_healthy(&self) {
        self.without_healthy.store(false, Ordering::SeqCst);
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Picks a backend for a request from `client`, skipping the indices in `tried`.
    pub fn pick(&self, tried: &[usize], client: IpAddr) -> Option<usize> {
        let primary_up = self.backends.iter().any(|b| !b.config.backup && b.is_healthy() && !b.is_draining());
        let eligible = |i: usize| {
            let b = &self.backends[i];
            b.config.backup != primary_up && b.is_available() && !tried.contains(&i)
        };
        self.balancer.pick(&self.backends, &eligible, client)
    }

    /// Seconds a client should wait before trying again when nothing is available.
    pub fn retry_after_secs(&self) -> u64 {
        self.config.health_check.interval.as_secs_f64().ceil().max(1.0) as u64
    }
}
