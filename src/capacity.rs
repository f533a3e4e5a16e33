//! The capacity estimate of `sluice --check --explain`: how many idle keep-alive clients and
//! concurrent exchanges a configuration can hold on this host, and the memory it takes.
//!
//! The limits come from the configuration (workers, `limits.maxConnections`, the waiting
//! room) and the open-file limit (sluice raises its soft limit to the hard one at start):
//! every client connection holds two descriptors (its socket, and the copy the runtime keeps
//! to close it on stop), every exchange one more for its backend connection, and idle
//! backend connections one each.
//!
//! Memory is resident memory (RSS), from costs measured on a release build on Linux x86-64
//! (see the constants); `tests/capacity.rs` checks the estimate against the real binary.
//! Kernel memory for sockets is not in it.

use crate::config::Config;
use crate::runtime::WORKER_STACK_BYTES;
use crate::sys;
use std::fmt;

/// The process before any traffic: code, static data (the TLS library's included), the
/// acceptor, health and waiting-room threads. Measured: 6.1 to 6.4 MiB with 16 workers,
/// less their stacks.
pub const BASE_BYTES: u64 = 6 * 1024 * 1024;

/// A worker thread that has served nothing: the stack pages it touched and its bookkeeping.
/// Measured: (7.4 MiB - 5.2 MiB) / 240 workers, about 9 KiB.
pub const IDLE_WORKER_BYTES: u64 = 9 * 1024;

/// What a worker adds once it has served a connection: the pages of its read and exchange
/// buffers it touched and its share of the allocator's arenas. Measured: 28 to 33 KiB with
/// 256 workers sharing arenas, 55 to 60 KiB with 16 workers that each have one; this is
/// between the two.
pub const WARM_WORKER_BYTES: u64 = 40 * 1024;

/// An idle keep-alive connection parked in the waiting room: its state, its entries in the
/// waiting room and the connection registry. Measured: (9.3 MiB - 6.5 MiB) / 8000, about
/// 360 bytes between 1,000 and 9,000 clients; more while the tables grow.
pub const PARKED_CONNECTION_BYTES: u64 = 400;

/// Descriptors sluice needs besides client and backend connections: standard streams,
/// listeners, the admin listener, epoll, log files, health probes and alerts in flight.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// What one configuration can hold on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    pub workers: usize,
    /// The soft and hard open-file limits now; sluice raises the soft one to the hard one.
    pub open_files: Option<(u64, u64)>,
    /// Descriptors left for client and backend connections.
    pub descriptors: u64,
    pub idle_clients: u64,
    pub concurrent_exchanges: u64,
    /// Backend connections kept idle for reuse, at most.
    pub idle_backend_connections: u64,
    pub max_per_client: Option<usize>,
    /// Exchanges one client address may have on workers at once (`limits.maxWorkersPerClient`).
    pub exchanges_per_client: u64,
    pub waiting_room: bool,
}

impl Capacity {
    /// The estimate for `config` under this process's open-file limit.
    pub fn of(config: &Config) -> Capacity {
        Capacity::with_open_files(config, sys::open_file_limits().ok())
    }

    /// The estimate for `config` with soft and hard open-file limits `open_files` (`None`
    /// when unknown: then only the configuration's own limits count).
    pub fn with_open_files(config: &Config, open_files: Option<(u64, u64)>) -> Capacity {
        let backends: u64 = config.pools.iter().map(|p| p.servers.len() as u64).sum();
        // Each idle backend connection was put back by an exchange, so in steady traffic
        // there are about as many as workers in all, however many backends share them.
        let idle_backend_connections =
            (backends * config.limits.max_idle_per_backend as u64).min(config.workers as u64);
        let descriptors = open_files.map_or(u64::MAX, |(_, hard)| {
            hard.saturating_sub(RESERVED_DESCRIPTORS).saturating_sub(idle_backend_connections)
        });
        let max_connections = config.limits.max_connections as u64;
        let workers = config.workers as u64;
        let mut idle_clients = max_connections.min(descriptors / 2);
        if !config.waiting_room {
            idle_clients = idle_clients.min(workers);
        }
        let concurrent_exchanges = workers.min(max_connections).min(descriptors / 3);
        Capacity {
            workers: config.workers,
            open_files,
            descriptors,
            idle_clients,
            concurrent_exchanges,
            idle_backend_connections,
            max_per_client: config.limits.max_connections_per_client,
            exchanges_per_client: (config.limits.max_workers_per_client.of(config.workers) as u64)
                .min(concurrent_exchanges),
            waiting_room: config.waiting_room,
        }
    }

    /// Resident memory with `clients` idle keep-alive clients, each having made a request.
    pub fn memory_with_idle_clients(&self, clients: u64) -> u64 {
        let workers = self.workers as u64;
        let clients = clients.min(self.idle_clients);
        BASE_BYTES
            + workers * IDLE_WORKER_BYTES
            + clients.min(workers) * WARM_WORKER_BYTES
            + clients * PARKED_CONNECTION_BYTES
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Capacity estimate (Linux; resident memory, not counting the kernel's socket buffers):")?;
        let stacks = self.workers as u64 * WORKER_STACK_BYTES as u64;
        writeln!(
            f,
            "  workers: {} threads, each with a {} KiB stack ({} of address space; only touched pages become memory)",
            self.workers,
            WORKER_STACK_BYTES / 1024,
            mib(stacks)
        )?;
        match self.open_files {
            Some((soft, hard)) => writeln!(
                f,
                "  open files: soft limit {soft}, hard limit {hard} (sluice raises the soft limit to {hard} at start); \
                 {} left for connections after {RESERVED_DESCRIPTORS} reserved and {} idle backend connections",
                self.descriptors, self.idle_backend_connections
            )?,
            None => writeln!(f, "  open files: the limit could not be read; counting the configuration's limits only")?,
        }
        let room = if self.waiting_room {
            "idle ones wait in the waiting room, holding no worker"
        } else {
            "waitingRoom is off, so each idle one holds a worker"
        };
        writeln!(f, "  idle keep-alive clients it can hold: {} (two descriptors each; {room})", self.idle_clients)?;
        if let Some(max) = self.max_per_client {
            writeln!(f, "    of which at most {max} from one client address (limits.maxConnectionsPerClient)")?;
        }
        writeln!(
            f,
            "  concurrent exchanges: {} (one per worker; three descriptors each, with the backend connection), \
             at most {} from one client address (limits.maxWorkersPerClient)",
            self.concurrent_exchanges, self.exchanges_per_client
        )?;
        for clients in [0, 1_000, 10_000] {
            let held = if clients > self.idle_clients {
                format!(" (holds only {})", self.idle_clients)
            } else {
                String::new()
            };
            writeln!(
                f,
                "  memory with {clients:>6} idle clients: about {}{held}",
                mib(self.memory_with_idle_clients(clients))
            )?;
        }
        Ok(())
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::parse(&format!(r#"{{"port": 1, {extra} "servers": ["http://a:1", "http://b:1"]}}"#), "c.json").unwrap()
    }

    #[test]
    fn descriptors_bound_clients_and_exchanges() {
        //  hard limit 1128: 1128 - 64 reserved - 256 idle backend connections (one a worker,
        //  fewer than 2 backends x 256) = 808 for connections
        let c = Capacity::with_open_files(&config(""), Some((1024, 1128)));
        assert_eq!(c.descriptors, 808);
        assert_eq!(c.idle_clients, 404, "two descriptors a client");
        assert_eq!(c.concurrent_exchanges, 256, "one a worker, under 808 / 3");
        assert_eq!(c.exchanges_per_client, 64, "a quarter of the workers");
        //  1128 - 64 - 2 backends x 64 idle = 936
        let more_workers = r#""workers": 1000, "limits": {"maxIdlePerBackend": 64},"#;
        let c = Capacity::with_open_files(&config(more_workers), Some((1024, 1128)));
        assert_eq!(c.concurrent_exchanges, 312, "936 / 3 descriptors");
    }

    #[test]
    fn configured_limits_bound_clients_and_exchanges() {
        let c = Capacity::with_open_files(&config(r#""limits": {"maxConnections": 100},"#), Some((1 << 20, 1 << 20)));
        assert_eq!((c.idle_clients, c.concurrent_exchanges), (100, 100));
        let c = Capacity::with_open_files(&config(r#""waitingRoom": false, "workers": 8,"#), None);
        assert_eq!((c.idle_clients, c.concurrent_exchanges), (8, 8));
    }

    #[test]
    fn memory_grows_with_warm_workers_then_with_parked_connections() {
        let c = Capacity::with_open_files(&config(r#""workers": 16,"#), Some((1 << 20, 1 << 20)));
        let idle = c.memory_with_idle_clients(0);
        assert_eq!(idle, BASE_BYTES + 16 * IDLE_WORKER_BYTES);
        assert_eq!(c.memory_with_idle_clients(10), idle + 10 * (WARM_WORKER_BYTES + PARKED_CONNECTION_BYTES));
        assert_eq!(c.memory_with_idle_clients(1000), idle + 16 * WARM_WORKER_BYTES + 1000 * PARKED_CONNECTION_BYTES);
    }

    #[test]
    fn the_report_names_every_number() {
        let text = Capacity::with_open_files(&config(""), Some((1024, 4096))).to_string();
        for want in [
            "256 threads, each with a 128 KiB stack",
            "soft limit 1024, hard limit 4096",
            "idle keep-alive clients it can hold: 1888",
            "memory with   1000 idle clients",
            "memory with  10000 idle clients: about",
            "(holds only 1888)",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
    }
}
