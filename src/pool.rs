//! A pool: a named group of backends and the balancer that picks among them.
//!
//! The pool decides who is eligible for a pick (available, not already tried for this
//! request, and backups only while no primary is up); the balancer decides among those.

use crate::backend::Backend;
use crate::balance::{self, Balancer};
use crate::config::PoolConfig;
use std::net::IpAddr;
use std::sync::Arc;

pub struct Pool {
    pub config: PoolConfig,
    pub backends: Vec<Arc<Backend>>,
    balancer: Box<dyn Balancer>,
}

impl Pool {
    /// Builds a pool, reusing any of `existing` whose configuration is unchanged, so that
    /// health, counters and idle connections survive a reload.
    pub fn new(config: PoolConfig, existing: &[Arc<Backend>]) -> Pool {
        let backends = config
            .servers
            .iter()
            .map(|server| match existing.iter().find(|b| b.config == *server) {
                Some(backend) => Arc::clone(backend),
                None => Arc::new(Backend::new(server.clone())),
            })
            .collect();
        let balancer = balance::for_algorithm(config.algorithm);
        Pool { config, backends, balancer }
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
