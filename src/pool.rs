//! A pool: a named group of backends, the balancer that picks among them, and the queue where
//! requests wait when every candidate is at its `maxConnections`.
//!
//! The pool decides who is a candidate for a pick: backends in service (healthy, not
//! draining, weight above 0) not already tried for this request, primaries while any is a
//! candidate and backups otherwise. A candidate with room under its limit is eligible; the
//! balancer decides among the eligible. A sticky cookie naming an eligible backend skips the
//! balancer. Called by `proxy` once per attempt; writes the backends' in-flight counts
//! (through [`Slot`]) and the queue's counters. `without_healthy` is written by whoever
//! reports a health change (the health thread, workers).

use crate::backend::{Backend, InFlight};
pub use crate::backend_error::NoSlot;
use crate::balance::hash::hash64;
use crate::balance::{self, Balancer, Kept, Why};
use crate::config::PoolConfig;
use crate::explain::{CandidateState, Decision};
use crate::ops::log_summary;
use crate::queue::{Queue, QueueStats};
use rustls::ClientConfig;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Pool {
    pub config: PoolConfig,
    /// How this pool's `https://` backends are spoken to; `None` for tcp pools.
    pub tls: Option<Arc<ClientConfig>>,
    pub backends: Vec<Arc<Backend>>,
    balancer: Box<dyn Balancer>,
    /// Requests waiting for a free slot; woken by this pool's limited backends.
    queue: Arc<Queue>,
    /// Each backend's sticky-cookie value, by index.
    sticky_ids: Vec<String>,
    /// Set when the last healthy backend went down, so that is reported once.
    without_healthy: AtomicBool,
}

/// What a pick needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct PickRequest<'a> {
    pub client: IpAddr,
    /// Indices of backends already tried for this request.
    pub tried: &'a [usize],
    /// The value of the request's sticky cookie, if the pool has one and the request sent it.
    pub sticky: Option<&'a str>,
}

/// A backend picked for one exchange, counted in flight until this is dropped.
pub struct Slot<'a> {
    pub index: usize,
    pub backend: &'a Arc<Backend>,
    _in_flight: InFlight<'a>,
}

/// Why a single attempt to pick found nothing.
enum Shortfall {
    /// Candidates exist, but every one is at its limit: worth waiting.
    Full,
    Unavailable,
}

impl Pool {
    /// Builds a pool. On the first start `running` is `None` and every backend starts up;
    /// on a reload, backends of the `running` set with the same URL are kept with their
    /// health, counters and idle connections, and new ones join after a passing probe.
    pub fn new(config: PoolConfig, running: Option<&[Arc<Backend>]>, tls: Option<Arc<ClientConfig>>) -> Pool {
        let backends: Vec<Arc<Backend>> =
            config.servers.iter().map(|server| Backend::reuse_or_join(server, running)).collect();
        let queue = Arc::new(Queue::default());
        for backend in &backends {
            backend.watch(&queue);
        }
        let sticky_ids = backends.iter().map(|b| sticky_id(b.url())).collect();
        let balancer = balance::for_algorithm(config.algorithm);
        Pool { config, tls, backends, balancer, queue, sticky_ids, without_healthy: AtomicBool::new(false) }
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

    /// Picks an eligible backend for a request from `client`, skipping the indices in `tried`,
    /// without counting it in flight. [`Pool::acquire`] is the way that keeps limits exact.
    pub fn pick(&self, tried: &[usize], client: IpAddr) -> Option<usize> {
        self.with_facts(tried, |facts| {
            let tier = serving_tier(facts);
            self.balancer.pick(&self.backends, &|i| is_eligible(facts[i], tier), client)
        })
    }

    /// [`Pool::pick`], recording in `decision` why the pick went where it went.
    pub fn pick_noting(&self, client: IpAddr, decision: &mut Decision) -> Option<usize> {
        self.with_facts(&[], |facts| self.explained_pick(facts, None, client, decision))
    }

    /// Picks a backend and counts the exchange in flight. When every candidate is at its
    /// limit, waits up to `queue_timeout` for a slot to come free.
    pub fn acquire(&self, request: &PickRequest, queue_timeout: Duration) -> Result<Slot<'_>, NoSlot> {
        self.acquire_noting(request, queue_timeout, None)
    }

    /// [`Pool::acquire`], recording in `decision` (when given one) why the pick went where
    /// it went, for `"explain": true`.
    pub fn acquire_noting(
        &self,
        request: &PickRequest,
        queue_timeout: Duration,
        mut decision: Option<&mut Decision>,
    ) -> Result<Slot<'_>, NoSlot> {
        match self.try_acquire(request, decision.as_deref_mut()) {
            Ok(slot) => return Ok(slot),
            Err(Shortfall::Unavailable) => return Err(NoSlot::Unavailable),
            Err(Shortfall::Full) => {}
        }
        if let Some(decision) = decision.as_deref_mut() {
            decision.note_queued();
        }
        let waited = self.queue.wait(queue_timeout, || match self.try_acquire(request, decision.as_deref_mut()) {
            Ok(slot) => Some(Ok(slot)),
            Err(Shortfall::Full) => None,
            Err(Shortfall::Unavailable) => Some(Err(NoSlot::Unavailable)),
        });
        waited.unwrap_or_else(|| {
            log_summary::QUEUE_TIMED_OUT.warn(format_args!(
                "pool {:?}: every backend stayed at its maxConnections for {queue_timeout:?}",
                self.name()
            ));
            Err(NoSlot::QueueTimedOut)
        })
    }

    /// One attempt: the sticky backend if it is eligible, else the balancer's pick. A pick
    /// that another worker filled to its limit in the meantime is picked again.
    fn try_acquire(&self, request: &PickRequest, mut decision: Option<&mut Decision>) -> Result<Slot<'_>, Shortfall> {
        loop {
            let index = self.with_facts(request.tried, |facts| {
                let tier = serving_tier(facts);
                let eligible = |i: usize| is_eligible(facts[i], tier);
                let sticky = request.sticky.and_then(|id| self.sticky_ids.iter().position(|s| s == id));
                let picked = match (sticky.filter(|&i| eligible(i)), decision.as_deref_mut()) {
                    (Some(i), None) => Some(i),
                    (None, None) => self.balancer.pick(&self.backends, &eligible, request.client),
                    (sticky, Some(decision)) => self.explained_pick(facts, sticky, request.client, decision),
                };
                picked.ok_or_else(|| {
                    let any_candidate = facts.iter().any(|&f| is_candidate(f, tier));
                    if any_candidate {
                        Shortfall::Full
                    } else {
                        Shortfall::Unavailable
                    }
                })
            })?;
            let backend = &self.backends[index];
            if let Some(in_flight) = backend.try_start_exchange() {
                return Ok(Slot { index, backend, _in_flight: in_flight });
            }
        }
    }

    /// The pick of [`Pool::try_acquire`] when explaining: the sticky backend if it is
    /// eligible, else the balancer's pick through the same code; records both in `decision`.
    fn explained_pick(
        &self,
        facts: &[Facts],
        sticky: Option<usize>,
        client: IpAddr,
        decision: &mut Decision,
    ) -> Option<usize> {
        let tier = serving_tier(facts);
        let mut why = Why::default();
        let picked = match sticky {
            Some(i) => {
                why.reason = "the request's sticky cookie names it".to_string();
                Some(i)
            }
            None => self.balancer.choose(&self.backends, &|i| is_eligible(facts[i], tier), client, Some(&mut why)),
        };
        decision.note_pick(&self.backends, |i| candidate_state(facts[i], tier, &self.backends[i]), picked, why);
        picked
    }

    /// What the pool's balancer keeps between picks (for the status page).
    pub fn kept(&self) -> Kept {
        self.balancer.kept(self.backends.len())
    }

    /// The sticky cookie (name and value) to set with a response from backend `index`, when
    /// the pool is sticky and the request's cookie (`sent`) does not already name that backend.
    pub fn sticky_cookie(&self, index: usize, sent: Option<&str>) -> Option<(&str, &str)> {
        let sticky = self.config.sticky.as_ref()?;
        let id = self.sticky_ids[index].as_str();
        (sent != Some(id)).then_some((sticky.cookie.as_str(), id))
    }

    /// Seconds a client should wait before trying again when nothing is available.
    pub fn retry_after_secs(&self) -> u64 {
        self.config.health_check.interval.as_secs_f64().ceil().max(1.0) as u64
    }

    pub fn queue_stats(&self) -> QueueStats {
        self.queue.stats()
    }

    /// Calls `decide` with a snapshot of what each backend offers a pick right now. Pools of
    /// up to [`FACTS_ON_STACK`] backends take the snapshot without allocating.
    fn with_facts<T>(&self, tried: &[usize], decide: impl FnOnce(&[Facts]) -> T) -> T {
        let facts = self.backends.iter().enumerate().map(|(i, b)| Facts {
            backup: b.config.backup,
            in_service: b.is_in_service(),
            tried: tried.contains(&i),
            has_room: b.has_room(),
        });
        let n = self.backends.len();
        if n > FACTS_ON_STACK {
            return decide(&facts.collect::<Vec<_>>());
        }
        let mut on_stack = [Facts::default(); FACTS_ON_STACK];
        for (slot, fact) in on_stack.iter_mut().zip(facts) {
            *slot = fact;
        }
        decide(&on_stack[..n])
    }
}

/// A backend's sticky-cookie value: a keyed hash of its URL in hex. Opaque (it does not show
/// the address) and stable across restarts, reloads and reordering of `servers`.
fn sticky_id(url: &str) -> String {
    const STICKY_KEY: u64 = 0x5173_7469_636b_7931; // any fixed value; changing it moves every client
    format!("{:016x}", hash64(STICKY_KEY, url.as_bytes()))
}

/// Pools with up to this many backends pick without allocating.
const FACTS_ON_STACK: usize = 32;

/// What a pick needs to know about one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Facts {
    backup: bool,
    /// Healthy, not draining, weight above 0.
    in_service: bool,
    /// Already tried for this request.
    tried: bool,
    /// Under its `maxConnections`.
    has_room: bool,
}

/// Which tier serves this pick: the primaries while any is a candidate, else the backups.
/// `true` means the backups.
fn serving_tier(facts: &[Facts]) -> bool {
    !facts.iter().any(|&f| is_candidate(f, false))
}

/// In service, not yet tried, and in the serving tier: it may be picked once it has room.
fn is_candidate(f: Facts, backups_serve: bool) -> bool {
    f.in_service && !f.tried && f.backup == backups_serve
}

fn is_eligible(f: Facts, backups_serve: bool) -> bool {
    is_candidate(f, backups_serve) && f.has_room
}

/// Where a backend stands for a pick, in the words of `explain`.
fn candidate_state(f: Facts, backups_serve: bool, backend: &Backend) -> CandidateState {
    match f {
        _ if f.tried => CandidateState::Tried,
        _ if backend.config.weight == 0 => CandidateState::Off,
        _ if !backend.is_healthy() => CandidateState::Down,
        _ if backend.is_draining() => CandidateState::Draining,
        _ if f.backup != backups_serve => CandidateState::Standby,
        _ if !f.has_room => CandidateState::Full,
        _ => CandidateState::Up,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{server_from_url, Algorithm, HealthCheckConfig, Protocol, StickyConfig};

    const PRIMARY: Facts = Facts { backup: false, in_service: true, tried: false, has_room: true };
    const BACKUP: Facts = Facts { backup: true, ..PRIMARY };

    fn eligible_list(facts: &[Facts]) -> Vec<bool> {
        let tier = serving_tier(facts);
        facts.iter().map(|&f| is_eligible(f, tier)).collect()
    }

    #[test]
    fn backups_serve_only_when_no_primary_is_a_candidate() {
        let down = Facts { in_service: false, ..PRIMARY };
        let tried = Facts { tried: true, ..PRIMARY };
        let full = Facts { has_room: false, ..PRIMARY };
        //  primary   primary   backup        eligible
        let table = [
            ([PRIMARY, PRIMARY, BACKUP], [true, true, false]),
            ([down, PRIMARY, BACKUP], [false, true, false]),
            ([down, down, BACKUP], [false, false, true]),
            ([down, tried, BACKUP], [false, false, true]), // every primary failed this request
            ([full, full, BACKUP], [false, false, false]), // full primaries queue; no spill to backup
            ([full, down, BACKUP], [false, false, false]),
        ];
        for (facts, want) in table {
            assert_eq!(eligible_list(&facts), want, "{facts:?}");
        }
    }

    fn pool(servers: &[(u32, Option<usize>, bool)], sticky: bool) -> Pool {
        let servers = servers
            .iter()
            .enumerate()
            .map(|(i, &(weight, max_connections, backup))| {
                let mut s = server_from_url(&format!("http://127.0.0.1:{}", 2000 + i)).unwrap();
                (s.weight, s.max_connections, s.backup) = (weight, max_connections, backup);
                s
            })
            .collect();
        let config = PoolConfig {
            name: "p".into(),
            key_path: "pools.p".into(),
            protocol: Protocol::Http,
            servers,
            dns: Vec::new(),
            algorithm: Algorithm::RoundRobin,
            sticky: sticky.then(|| StickyConfig { cookie: "S".into() }),
            health_check: HealthCheckConfig::default(),
            retries: 2,
            tls: Default::default(),
            send_proxy: None,
        };
        Pool::new(config, None, None)
    }

    fn request(sticky: Option<&str>) -> PickRequest<'_> {
        PickRequest { client: [127, 0, 0, 1].into(), tried: &[], sticky }
    }

    #[test]
    fn an_explained_pick_names_full_standby_and_off_backends_and_a_sticky_reason() {
        //  a (max 1, busy)   b (weight 0)   c (free)   d (backup)   ->  c
        let p = pool(&[(1, Some(1), false), (0, None, false), (1, None, false), (1, None, true)], true);
        let _held = p.acquire(&request(None), Duration::ZERO).unwrap();
        let mut decision = Decision::default();
        let slot = p.acquire_noting(&request(None), Duration::ZERO, Some(&mut decision)).unwrap();
        assert_eq!(slot.index, 2);
        let text = decision.render().to_string();
        for want in [
            ":2000 full in-flight=1",
            ":2001 off",
            ":2002 up in-flight=0",
            ":2003 standby",
            "picked=http://127.0.0.1:2002;",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        let id = p.sticky_ids[2].clone();
        let mut decision = Decision::default();
        p.acquire_noting(&request(Some(&id)), Duration::ZERO, Some(&mut decision)).unwrap();
        assert!(decision.render().contains("reason=the request's sticky cookie names it"), "{}", decision.text());
    }

    #[test]
    fn weight_zero_is_never_picked() {
        let p = pool(&[(0, None, false), (1, None, false)], false);
        for _ in 0..5 {
            assert_eq!(p.pick(&[], [127, 0, 0, 1].into()), Some(1));
        }
    }

    #[test]
    fn pools_larger_than_the_stack_snapshot_pick_the_same_way() {
        //  40 backends; only the backup at index 39 and primaries 35, 36 are weighted in:
        //  35 36 35 36, then with both tried the backup.
        let mut servers = vec![(0, None, false); FACTS_ON_STACK + 8];
        servers[35] = (1, None, false);
        servers[36] = (1, None, false);
        servers[39] = (1, None, true);
        let p = pool(&servers, false);
        let picks: Vec<_> = (0..4).map(|_| p.pick(&[], [127, 0, 0, 1].into())).collect();
        assert_eq!(picks, [Some(35), Some(36), Some(35), Some(36)]);
        assert_eq!(p.pick(&[35, 36], [127, 0, 0, 1].into()), Some(39));
        let tried = [35, 36];
        let wanted = PickRequest { tried: &tried, ..request(None) };
        assert_eq!(p.acquire(&wanted, Duration::ZERO).map(|slot| slot.index).ok(), Some(39));
    }

    #[test]
    fn a_backend_at_its_limit_is_skipped() {
        //  a (max 1) busy, b free:   b b b
        let p = pool(&[(1, Some(1), false), (1, None, false)], false);
        let held = p.acquire(&request(None), Duration::ZERO).unwrap();
        assert_eq!(held.index, 0);
        for _ in 0..3 {
            assert_eq!(p.acquire(&request(None), Duration::ZERO).unwrap().index, 1);
        }
    }

    #[test]
    fn when_every_candidate_is_full_the_request_waits_then_times_out() {
        let p = pool(&[(1, Some(1), false)], false);
        let _held = p.acquire(&request(None), Duration::ZERO).unwrap();
        let got = p.acquire(&request(None), Duration::from_millis(30)).map(|s| s.index);
        assert_eq!(got, Err(NoSlot::QueueTimedOut));
        assert_eq!(p.queue_stats(), QueueStats { waiting: 0, queued: 1, timed_out: 1 });
    }

    #[test]
    fn a_waiting_request_takes_the_slot_freed_by_an_ending_exchange() {
        let p = pool(&[(1, Some(1), false)], false);
        let held = p.acquire(&request(None), Duration::ZERO).unwrap();
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| p.acquire(&request(None), Duration::from_secs(10)).map(|s| s.index));
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while p.queue_stats().waiting == 0 {
                assert!(std::time::Instant::now() < deadline, "the request never queued");
                std::thread::yield_now();
            }
            drop(held);
            assert_eq!(waiter.join().unwrap(), Ok(0));
        });
        assert_eq!(p.queue_stats(), QueueStats { waiting: 0, queued: 1, timed_out: 0 });
    }

    #[test]
    fn nothing_in_service_is_unavailable_at_once() {
        let p = pool(&[(1, Some(1), false)], false);
        p.backends[0].set_healthy(false);
        assert_eq!(p.acquire(&request(None), Duration::from_secs(10)).map(|s| s.index), Err(NoSlot::Unavailable));
        assert_eq!(p.queue_stats().queued, 0);
    }

    #[test]
    fn limits_hold_under_concurrent_acquires() {
        let p = pool(&[(1, Some(3), false)], false);
        let slots: Vec<_> = (0..3).map(|_| p.acquire(&request(None), Duration::ZERO).unwrap()).collect();
        assert_eq!(p.backends[0].active(), 3);
        assert!(p.acquire(&request(None), Duration::ZERO).is_err());
        drop(slots);
        assert_eq!(p.backends[0].active(), 0);
    }

    #[test]
    fn a_sticky_cookie_picks_its_backend_while_it_is_available() {
        let p = pool(&[(1, None, false), (1, Some(1), false), (1, None, false)], true);
        let b = p.sticky_ids[1].clone();
        for _ in 0..4 {
            let slot = p.acquire(&request(Some(&b)), Duration::ZERO).unwrap();
            assert_eq!(slot.index, 1);
            assert_eq!(p.sticky_cookie(slot.index, Some(&b)), None, "a matching cookie is not sent again");
        }
        let _held = p.acquire(&request(Some(&b)), Duration::ZERO).unwrap();
        let slot = p.acquire(&request(Some(&b)), Duration::ZERO).unwrap();
        assert_ne!(slot.index, 1, "b is at its limit, so the request is balanced again");
        let replaced = p.sticky_cookie(slot.index, Some(&b)).unwrap();
        assert_eq!(replaced, ("S", p.sticky_ids[slot.index].as_str()));
    }

    #[test]
    fn an_unknown_sticky_cookie_is_balanced_and_replaced() {
        let p = pool(&[(1, None, false), (1, None, false)], true);
        let slot = p.acquire(&request(Some("nonsense")), Duration::ZERO).unwrap();
        assert!(p.sticky_cookie(slot.index, Some("nonsense")).is_some());
        assert!(p.sticky_cookie(slot.index, None).is_some());
    }

    #[test]
    fn sticky_ids_are_opaque_and_stable() {
        let id = sticky_id("http://127.0.0.1:2000");
        assert_eq!(id.len(), 16);
        assert!(!id.contains("2000") && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_eq!(id, sticky_id("http://127.0.0.1:2000"));
        assert_ne!(id, sticky_id("http://127.0.0.1:2001"));
        assert_eq!(id, PINNED_STICKY_ID, "changing ids moves every sticky client on upgrade");
    }

    const PINNED_STICKY_ID: &str = "783cdc0c65f88b32";

    #[test]
    fn without_sticky_no_cookie_is_set() {
        let p = pool(&[(1, None, false)], false);
        assert_eq!(p.sticky_cookie(0, None), None);
    }
}
