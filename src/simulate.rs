//! `sluice simulate`: each configured pool's real picking code (the same [`Pool`] and
//! balancers that serve traffic, not a copy) driven by simulated clients, with no sockets.
//!
//! The model is a closed loop in ticks: `clients` clients each send a request, wait for its
//! answer, and send the next at once, until `requests` have been sent. A backend takes 1 to
//! [`LONGEST_EXCHANGE_TICKS`] ticks per request (drawn at random, the same for every
//! backend), and counts it in flight meanwhile, so `least-connections` and `random` see real
//! load and `maxConnections` really fills. A request that finds every candidate full waits in
//! a first-come, first-served queue, as in sluice's own queue. Sticky cookies and health
//! checks are not simulated: every backend is up.
//!
//! With `--remove URL`, each algorithm places every client's first request on the pool with
//! and without that backend, and counts the clients that moved.
//!
//! Pure apart from reading the configuration file: [`run`] returns a [`Report`], whose
//! `Display` is what the command prints.

use crate::backend::InFlight;
use crate::balance::random::Random;
use crate::config::{Algorithm, Config, PoolConfig};
use crate::pool::Pool;
use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// A simulated request takes 1 to this many ticks.
pub const LONGEST_EXCHANGE_TICKS: u64 = 10;

/// The width of the longest bar in the text charts.
const CHART_WIDTH: f64 = 40.0;

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub requests: usize,
    pub clients: usize,
    /// A backend URL to take away, to count the clients each algorithm moves.
    pub remove: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options { requests: 10_000, clients: 100, remove: None }
    }
}

/// Why a simulation could not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimulateError {
    /// `--remove` names a URL no pool has.
    UnknownBackend { url: String, known: Vec<String> },
    /// Removing the URL would leave its pool without backends.
    LastBackend(String),
}

impl fmt::Display for SimulateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimulateError::UnknownBackend { url, known } => {
                write!(f, "--remove {url}: no pool has this backend (configured: {})", known.join(", "))
            }
            SimulateError::LastBackend(url) => write!(f, "--remove {url}: it is its pool's only backend"),
        }
    }
}

impl std::error::Error for SimulateError {}

/// Everything the simulation found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub options: Options,
    pub pools: Vec<PoolReport>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolReport {
    pub name: String,
    pub algorithm: Algorithm,
    pub backends: Vec<BackendReport>,
    /// Jain's index over each backend's requests divided by its expected share: 1 when every
    /// backend got exactly what the algorithm promises, 1/n when one took everything.
    pub fairness: f64,
    pub queue: QueueReport,
    /// With `--remove` on this pool: the clients each algorithm moved.
    pub moved: Vec<Moved>,
    /// The pool's `dns` and `dnsSrv` entries, which simulate does not look up.
    pub dns_entries: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendReport {
    pub url: String,
    pub weight: u32,
    pub max_connections: Option<usize>,
    pub backup: bool,
    pub requests: usize,
    /// The share the algorithm's documented behaviour gives it, from 0 to 1.
    pub expected_share: f64,
    pub peak_in_flight: usize,
    /// Picks made while this backend was at its `maxConnections`, so it could not be picked.
    pub full_picks: usize,
}

/// What `maxConnections` made requests do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueReport {
    /// Some backend of the pool has `maxConnections`.
    pub limited: bool,
    /// Requests that could not be picked at once and waited.
    pub waited: usize,
    /// The most requests waiting at one time.
    pub peak_waiting: usize,
    /// Ticks spent waiting, summed over every request.
    pub wait_ticks: u64,
}

/// How many clients one algorithm moved when a backend was removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    pub algorithm: Algorithm,
    pub moved: usize,
    /// Of those, clients whose backend was the removed one (they had to move).
    pub from_removed: usize,
    pub clients: usize,
}

/// Simulates every pool of `config`.
pub fn run(config: &Config, options: &Options) -> Result<Report, SimulateError> {
    if let Some(url) = &options.remove {
        check_removable(config, url)?;
    }
    let pools = config
        .pools
        .iter()
        .map(|pool| {
            let mut report = simulate_pool(pool, options);
            if let Some(url) = options.remove.as_ref().filter(|url| pool.servers.iter().any(|s| &s.url == *url)) {
                report.moved = Algorithm::ALL.iter().map(|&a| count_moved(pool, a, url, options.clients)).collect();
            }
            report
        })
        .collect();
    Ok(Report { options: options.clone(), pools })
}

fn check_removable(config: &Config, url: &str) -> Result<(), SimulateError> {
    let pool = config.pools.iter().find(|p| p.servers.iter().any(|s| s.url == url));
    match pool {
        None => {
            let known = config.pools.iter().flat_map(|p| &p.servers).map(|s| s.url.clone()).collect();
            Err(SimulateError::UnknownBackend { url: url.to_string(), known })
        }
        Some(pool) if pool.servers.len() == 1 => Err(SimulateError::LastBackend(url.to_string())),
        Some(_) => Ok(()),
    }
}

/// The address of simulated client `i`: 10.0.0.0 upwards.
fn client_addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000_u32.wrapping_add(i as u32)))
}

/// One request being served: when it ends, whose it is, and its place in flight.
struct Exchange<'a> {
    ends: u64,
    client: usize,
    _in_flight: InFlight<'a>,
}

/// Simulates one pool and compares what each backend got with what it should get.
fn simulate_pool(config: &PoolConfig, options: &Options) -> PoolReport {
    let pool = Pool::new(config.clone(), None, None);
    let tally = run_closed_loop(&pool, options);
    let expected = expected_shares(config);
    let backends = config
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| BackendReport {
            url: s.url.clone(),
            weight: s.weight,
            max_connections: s.max_connections,
            backup: s.backup,
            requests: tally.requests[i],
            expected_share: expected[i],
            peak_in_flight: tally.peaks[i],
            full_picks: tally.full[i],
        })
        .collect::<Vec<_>>();
    let fairness = jain_index(&backends);
    let queue = tally.queue;
    let dns_entries = config.dns.iter().map(|d| d.name.clone()).collect();
    PoolReport {
        name: config.name.clone(),
        algorithm: config.algorithm,
        backends,
        fairness,
        queue,
        moved: Vec::new(),
        dns_entries,
    }
}

/// What the closed loop counted, by backend index.
struct Tally {
    requests: Vec<usize>,
    peaks: Vec<usize>,
    /// Picks made while each backend was full.
    full: Vec<usize>,
    queue: QueueReport,
}

/// Runs the closed loop of the module comment over `pool`, one tick per turn: exchanges that
/// are over free their clients, ready clients send, and waiting requests are picked in order
/// until a pick finds nothing.
fn run_closed_loop(pool: &Pool, options: &Options) -> Tally {
    let n = pool.backends.len();
    let durations = Random::with_seed(0x5eed);
    let limited = pool.backends.iter().any(|b| b.config.max_connections.is_some());
    let queue = QueueReport { limited, ..QueueReport::default() };
    let mut tally = Tally { requests: vec![0; n], peaks: vec![0; n], full: vec![0; n], queue };
    let mut ready: Vec<usize> = (0..options.clients).collect();
    let mut waiting: VecDeque<(usize, u64)> = VecDeque::new();
    let mut in_flight: Vec<Exchange> = Vec::new();
    let (mut sent, mut now) = (0, 0u64);
    while sent < options.requests || !waiting.is_empty() {
        ready.extend(in_flight.extract_if(.., |e| e.ends <= now).map(|e| e.client));
        for client in ready.drain(..).take(options.requests - sent) {
            waiting.push_back((client, now));
            sent += 1;
        }
        while let Some(&(client, since)) = waiting.front() {
            let Some(i) = pool.pick(&[], client_addr(client)) else { break };
            waiting.pop_front();
            for (full, backend) in tally.full.iter_mut().zip(&pool.backends) {
                *full += usize::from(!backend.has_room());
            }
            if since < now {
                tally.queue.waited += 1;
                tally.queue.wait_ticks += now - since;
            }
            let ends = now + 1 + durations.next_u64() % LONGEST_EXCHANGE_TICKS;
            in_flight.push(Exchange { ends, client, _in_flight: pool.backends[i].start_exchange() });
            tally.requests[i] += 1;
            tally.peaks[i] = tally.peaks[i].max(pool.backends[i].active());
        }
        tally.queue.peak_waiting = tally.queue.peak_waiting.max(waiting.len());
        if in_flight.is_empty() {
            break; // no clients, or no backend of the pool takes requests: nothing will change
        }
        now += 1;
    }
    tally
}

/// The share of requests each backend should get by the algorithm's documented behaviour
/// when every backend is up: round robin splits evenly among the serving backends of weight
/// above 0, the others split by weight. The primaries serve; backups only when no primary
/// has weight above 0.
pub fn expected_shares(pool: &PoolConfig) -> Vec<f64> {
    let backups_serve = !pool.servers.iter().any(|s| !s.backup && s.weight > 0);
    let serving = |s: &crate::config::ServerConfig| s.backup == backups_serve && s.weight > 0;
    let share_of = |s: &crate::config::ServerConfig| match pool.algorithm {
        Algorithm::RoundRobin => 1.0,
        _ => f64::from(s.weight),
    };
    let total: f64 = pool.servers.iter().filter(|s| serving(s)).map(share_of).sum();
    pool.servers.iter().map(|s| if serving(s) && total > 0.0 { share_of(s) / total } else { 0.0 }).collect()
}

/// Jain's fairness index, (Σx)² / (n·Σx²), over each backend's requests divided by its
/// expected share, for the backends expected to get any.
pub fn jain_index(backends: &[BackendReport]) -> f64 {
    let x: Vec<f64> =
        backends.iter().filter(|b| b.expected_share > 0.0).map(|b| b.requests as f64 / b.expected_share).collect();
    let sum: f64 = x.iter().sum();
    let squares: f64 = x.iter().map(|v| v * v).sum();
    if squares == 0.0 {
        return 1.0;
    }
    sum * sum / (x.len() as f64 * squares)
}

/// Places each client's first request with `algorithm` on the pool with and without `url`
/// (one request at a time, nothing in flight), and counts the clients that land elsewhere.
fn count_moved(config: &PoolConfig, algorithm: Algorithm, url: &str, clients: usize) -> Moved {
    let before = PoolConfig { algorithm, ..config.clone() };
    let after =
        PoolConfig { servers: before.servers.iter().filter(|s| s.url != url).cloned().collect(), ..before.clone() };
    let place = |config: &PoolConfig| {
        let pool = Pool::new(config.clone(), None, None);
        (0..clients)
            .map(|c| pool.pick(&[], client_addr(c)).map(|i| pool.backends[i].url().to_string()))
            .collect::<Vec<_>>()
    };
    let (was, is) = (place(&before), place(&after));
    let moved: Vec<_> = was.iter().zip(&is).filter(|(a, b)| a != b).collect();
    let from_removed = moved.iter().filter(|(a, _)| a.as_deref() == Some(url)).count();
    Moved { algorithm, moved: moved.len(), from_removed, clients }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "Simulated: {} requests from {} clients; each client sends its next request when the last is answered,\n\
             and a request takes 1 to {LONGEST_EXCHANGE_TICKS} ticks on any backend. No sockets: the pools' own picking code.",
            o.requests, o.clients
        )?;
        for pool in &self.pools {
            writeln!(f)?;
            write_pool(f, pool)?;
            if !pool.moved.is_empty() {
                writeln!(f)?;
                write_moved(f, pool, o.remove.as_deref().unwrap_or(""))?;
            }
        }
        Ok(())
    }
}

fn write_pool(f: &mut fmt::Formatter<'_>, pool: &PoolReport) -> fmt::Result {
    writeln!(f, "pool {:?}: {}", pool.name, pool.algorithm.name())?;
    if !pool.dns_entries.is_empty() {
        let names = pool.dns_entries.join(", ");
        writeln!(f, "  (backends found by DNS are not looked up here, so {names} takes no part)")?;
    }
    let width = pool.backends.iter().map(|b| b.url.len()).max().unwrap_or(7).max(7);
    writeln!(f, "  {:width$}  weight  max  requests   share  expected  peak in flight", "backend")?;
    let total: usize = pool.backends.iter().map(|b| b.requests).sum();
    let most = pool.backends.iter().map(|b| b.requests).max().unwrap_or(0).max(1);
    for b in &pool.backends {
        let share = if total == 0 { 0.0 } else { b.requests as f64 / total as f64 };
        let max = b.max_connections.map_or("-".to_string(), |m| m.to_string());
        let backup = if b.backup { " (backup)" } else { "" };
        writeln!(
            f,
            "  {:width$}  {:>6}  {max:>3}  {:>8}  {:>5.1} %  {:>6.1} %  {:>14}  {}{backup}",
            b.url,
            b.weight,
            b.requests,
            share * 100.0,
            b.expected_share * 100.0,
            b.peak_in_flight,
            bar(b.requests as f64 / most as f64),
        )?;
    }
    if total == 0 {
        return writeln!(f, "  no request could be sent: no backend of this pool has a weight above 0");
    }
    writeln!(f, "  Jain's fairness index (requests against each backend's expected share): {:.3}", pool.fairness)?;
    let q = &pool.queue;
    if !q.limited {
        return writeln!(f, "  queue: no backend has maxConnections, so no request waits");
    }
    let picks: usize = pool.backends.iter().map(|b| b.requests).sum();
    for b in pool.backends.iter().filter(|b| b.full_picks > 0) {
        writeln!(
            f,
            "  {} was at its maxConnections for {} of {picks} picks, which went to others or waited",
            b.url, b.full_picks
        )?;
    }
    let mean = if q.waited == 0 { 0.0 } else { q.wait_ticks as f64 / q.waited as f64 };
    writeln!(
        f,
        "  queue: {} requests waited for a backend under its maxConnections (at most {} at once, {mean:.1} ticks on average)",
        q.waited, q.peak_waiting
    )
}

fn write_moved(f: &mut fmt::Formatter<'_>, pool: &PoolReport, url: &str) -> fmt::Result {
    let n = pool.backends.len();
    writeln!(
        f,
        "--remove {url}: where each client's first request lands in pool {:?}, with {n} backends and with {}",
        pool.name,
        n - 1
    )?;
    writeln!(f, "  {:20}  {:>15}  {:>7}  {:>21}", "algorithm", "clients moved", "", "of them had to move")?;
    for m in &pool.moved {
        let ratio = if m.clients == 0 { 0.0 } else { m.moved as f64 / m.clients as f64 };
        writeln!(
            f,
            "  {:20}  {:>15}  {:>5.1} %  {:>21}  {}",
            m.algorithm.name(),
            format!("{} of {}", m.moved, m.clients),
            ratio * 100.0,
            m.from_removed,
            bar(ratio)
        )?;
    }
    writeln!(
        f,
        "  (clients of the removed backend must move: about 1/{n} of them; an algorithm that moves others reshuffles)"
    )
}

/// A bar of `#` for a fraction from 0 to 1 of the chart width.
fn bar(fraction: f64) -> String {
    "#".repeat((fraction.clamp(0.0, 1.0) * CHART_WIDTH).round() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Config {
        Config::parse(json, "test.json").unwrap()
    }

    fn shares(report: &PoolReport) -> Vec<usize> {
        report.backends.iter().map(|b| b.requests).collect()
    }

    const THREE: &str =
        r#""servers": [{"url": "http://a:1", "weight": 5}, {"url": "http://b:1"}, {"url": "http://c:1"}]"#;

    fn simulate(algorithm: &str, servers: &str, options: &Options) -> Report {
        run(&config(&format!(r#"{{"port": 1, "algorithm": "{algorithm}", {servers}}}"#)), options).unwrap()
    }

    #[test]
    fn smooth_weighting_gives_exact_shares_and_round_robin_equal_ones() {
        let options = Options { requests: 7_000, clients: 20, remove: None };
        let wrr = &simulate("weighted-round-robin", THREE, &options).pools[0];
        assert_eq!(shares(wrr), [5_000, 1_000, 1_000]);
        assert!((wrr.fairness - 1.0).abs() < 1e-9, "{}", wrr.fairness);
        let rr = &simulate("round-robin", THREE, &Options { requests: 6_000, ..options }).pools[0];
        assert_eq!(shares(rr), [2_000, 2_000, 2_000]);
        assert_eq!(rr.backends.iter().map(|b| b.expected_share).collect::<Vec<_>>(), [1.0 / 3.0; 3]);
    }

    #[test]
    fn limits_make_requests_wait_and_are_never_passed() {
        let servers =
            r#""servers": [{"url": "http://a:1", "maxConnections": 2}, {"url": "http://b:1", "maxConnections": 1}]"#;
        let report =
            &simulate("least-connections", servers, &Options { requests: 2_000, clients: 10, remove: None }).pools[0];
        assert_eq!(report.backends.iter().map(|b| b.peak_in_flight).collect::<Vec<_>>(), [2, 1]);
        assert!(report.queue.limited && report.queue.waited > 1_000, "{:?}", report.queue);
        assert_eq!(report.queue.peak_waiting, 7, "ten clients, three slots");
        assert!(report.backends.iter().all(|b| b.full_picks > 0), "{:?}", report.backends);
        assert_eq!(shares(report).iter().sum::<usize>(), 2_000);
    }

    #[test]
    fn removing_a_backend_moves_about_one_in_n_clients_with_ip_hash_and_most_with_round_robin() {
        let servers = r#""servers": ["http://a:1", "http://b:1", "http://c:1", "http://d:1"]"#;
        let options = Options { requests: 100, clients: 2_000, remove: Some("http://b:1".into()) };
        let report = simulate("round-robin", servers, &options);
        let moved = |a: Algorithm| report.pools[0].moved.iter().find(|m| m.algorithm == a).unwrap().clone();
        let ip = moved(Algorithm::IpHash);
        assert!((400..600).contains(&ip.moved), "{ip:?}");
        assert_eq!(ip.moved, ip.from_removed, "ip-hash moved a client of a remaining backend");
        assert!(moved(Algorithm::RoundRobin).moved > 1_400, "{:?}", moved(Algorithm::RoundRobin));
    }

    #[test]
    fn removing_an_unknown_or_only_backend_is_refused() {
        let c = config(r#"{"port": 1, "servers": ["http://a:1"]}"#);
        let unknown = Options { remove: Some("http://z:1".into()), ..Options::default() };
        assert_eq!(
            run(&c, &unknown).unwrap_err().to_string(),
            "--remove http://z:1: no pool has this backend (configured: http://a:1)"
        );
        let only = Options { remove: Some("http://a:1".into()), ..Options::default() };
        assert_eq!(run(&c, &only).unwrap_err(), SimulateError::LastBackend("http://a:1".into()));
    }

    #[test]
    fn backups_are_expected_to_serve_only_without_primaries() {
        let options = Options { requests: 900, clients: 9, remove: None };
        let with_primary = r#""servers": ["http://a:1", {"url": "http://b:1", "backup": true}]"#;
        let report = &simulate("round-robin", with_primary, &options).pools[0];
        assert_eq!(shares(report), [900, 0]);
        assert_eq!(report.backends.iter().map(|b| b.expected_share).collect::<Vec<_>>(), [1.0, 0.0]);
        let only_backups = r#""servers": [{"url": "http://a:1", "weight": 0}, {"url": "http://b:1", "backup": true}]"#;
        let report = &simulate("round-robin", only_backups, &options).pools[0];
        assert_eq!(shares(report), [0, 900]);
        assert_eq!(report.backends.iter().map(|b| b.expected_share).collect::<Vec<_>>(), [0.0, 1.0]);
    }

    #[test]
    fn a_pool_nothing_can_be_picked_from_ends_at_once_and_says_why() {
        let servers = r#""servers": [{"url": "http://a:1", "weight": 0}]"#;
        let report = simulate("round-robin", servers, &Options::default());
        assert_eq!(shares(&report.pools[0]), [0]);
        assert!(report.to_string().contains("no request could be sent: no backend of this pool has a weight above 0"));
    }

    #[test]
    fn jain_index_is_one_when_fair_and_one_over_n_when_one_takes_all() {
        let b = |requests, expected_share| BackendReport {
            url: String::new(),
            weight: 1,
            max_connections: None,
            backup: false,
            requests,
            expected_share,
            peak_in_flight: 0,
            full_picks: 0,
        };
        assert!((jain_index(&[b(50, 0.5), b(50, 0.5)]) - 1.0).abs() < 1e-9);
        assert!((jain_index(&[b(100, 0.25), b(0, 0.25), b(0, 0.25), b(0, 0.25)]) - 0.25).abs() < 1e-9);
        assert!((jain_index(&[b(80, 0.8), b(20, 0.2), b(0, 0.0)]) - 1.0).abs() < 1e-9);
    }
}
