//! Rate limiting: a token bucket per client address, in a table of bounded size that forgets
//! the least recently seen address first.
//!
//! Read by `config::edge_rules`; asked by [`super::Edge::check`] once per request on a route
//! with `rateLimit`. The table sits behind one mutex per route, held for a lookup and a few
//! arithmetic steps; time comes in as an argument, so tests drive it with explicit instants.
//!
//! Each address's bucket holds up to `burst` tokens and gains `requestsPerSecond` tokens a
//! second; a request takes one, and a request that finds none is limited, told how many
//! whole seconds until a token is there. A new address starts with a full bucket. Once
//! the table holds `maxClients` addresses, a new one takes the slot of the address seen
//! longest ago, which starts afresh if it comes back: memory stays at `maxClients` entries
//! (about 100 bytes each) whatever the number of addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many addresses a limiter remembers unless `maxClients` says otherwise (about 10 MB).
pub const DEFAULT_MAX_CLIENTS: usize = 100_000;

/// The slowest rate a configuration may give: one request every 1000 seconds.
pub const MIN_REQUESTS_PER_SECOND: f64 = 0.001;

/// A route's `rateLimit` as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Tokens gained per second; at least [`MIN_REQUESTS_PER_SECOND`].
    pub requests_per_second: f64,
    /// The bucket's size: how many requests may come at once after a quiet spell; at least 1.
    pub burst: u32,
    /// How many addresses the table remembers; at least 1.
    pub max_clients: usize,
}

/// The limiter's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the limit: a token will be there in this many seconds (at least 1).
    Limited {
        retry_after_secs: u64,
    },
}

/// A route's limiter: its settings and its table of buckets.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    /// Written and read by workers, one lookup at a time.
    table: Mutex<BucketTable>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> RateLimiter {
        let table = Mutex::new(BucketTable::new(config.max_clients));
        RateLimiter { config, table }
    }

    /// Takes a token for a request from `client` at `now`, if there is one.
    pub fn check(&self, client: IpAddr, now: Instant) -> Verdict {
        let client = client.to_canonical();
        let mut table = crate::lock(&self.table);
        let bucket = table.touch(client, now);
        take_token(bucket, now, &self.config)
    }

    /// How many addresses the table remembers now; never more than `maxClients`.
    pub fn tracked_clients(&self) -> usize {
        crate::lock(&self.table).index.len()
    }
}

/// One address's bucket, linked into the table's recency list.
#[derive(Debug)]
struct Bucket {
    client: IpAddr,
    /// When the bucket is full again; an instant in the past means it is full.
    full_at: Instant,
    /// Neighbours in the recency list: slot numbers, or `NO_SLOT`.
    newer: u32,
    older: u32,
}

const NO_SLOT: u32 = u32::MAX;

/// Takes a token from `bucket` at `now` if there is one. The bucket is kept as the instant it
/// will be full again, so it needs no refilling: each request moves that instant one
/// emission interval (1 / rate) later, and a request is allowed while the bucket would be
/// full again within `burst` intervals (the generic cell rate algorithm, exact in integer
/// nanoseconds).
fn take_token(bucket: &mut Bucket, now: Instant, config: &RateLimitConfig) -> Verdict {
    let interval = emission_interval(config);
    let tolerance = interval.saturating_mul(config.burst.saturating_sub(1));
    let from = bucket.full_at.max(now);
    let debt = from - now;
    if debt <= tolerance {
        bucket.full_at = from.checked_add(interval).unwrap_or(from);
        return Verdict::Allowed;
    }
    let wait = debt - tolerance;
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Verdict::Limited { retry_after_secs: whole.max(1) }
}

/// The time one token takes to come back (the configuration keeps the rate at least
/// [`MIN_REQUESTS_PER_SECOND`], so at most 1000 s).
fn emission_interval(config: &RateLimitConfig) -> Duration {
    let rate = config.requests_per_second.max(MIN_REQUESTS_PER_SECOND);
    Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::from_secs(1000))
}

/// Buckets in slots, an index from address to slot, and a doubly linked list of slots from
/// the most to the least recently seen, so that finding, refreshing and evicting are O(1).
#[derive(Debug)]
struct BucketTable {
    slots: Vec<Bucket>,
    index: HashMap<IpAddr, u32>,
    newest: u32,
    oldest: u32,
    capacity: usize,
}

impl BucketTable {
    fn new(capacity: usize) -> BucketTable {
        let capacity = capacity.clamp(1, NO_SLOT as usize - 1);
        BucketTable { slots: Vec::new(), index: HashMap::new(), newest: NO_SLOT, oldest: NO_SLOT, capacity }
    }

    /// The bucket of `client`, now the most recently seen: found, or made full (in a new slot
    /// while there is room, else in the least recently seen address's slot).
    fn touch(&mut self, client: IpAddr, now: Instant) -> &mut Bucket {
        let slot = match self.index.get(&client) {
            Some(&slot) => {
                self.unlink(slot);
                slot
            }
            None => self.claim_slot(client, now),
        };
        self.link_newest(slot);
        &mut self.slots[slot as usize]
    }

    /// A slot for a new address, unlinked and filled in.
    fn claim_slot(&mut self, client: IpAddr, now: Instant) -> u32 {
        let fresh = Bucket { client, full_at: now, newer: NO_SLOT, older: NO_SLOT };
        let slot = if self.slots.len() < self.capacity {
            self.slots.push(fresh);
            (self.slots.len() - 1) as u32
        } else {
            let slot = self.oldest;
            self.unlink(slot);
            self.index.remove(&self.slots[slot as usize].client);
            self.slots[slot as usize] = fresh;
            slot
        };
        self.index.insert(client, slot);
        slot
    }

    fn unlink(&mut self, slot: u32) {
        let (newer, older) = {
            let b = &self.slots[slot as usize];
            (b.newer, b.older)
        };
        match newer {
            NO_SLOT => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
        match older {
            NO_SLOT => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
    }

    fn link_newest(&mut self, slot: u32) {
        let previous = self.newest;
        {
            let b = &mut self.slots[slot as usize];
            b.newer = NO_SLOT;
            b.older = previous;
        }
        match previous {
            NO_SLOT => self.oldest = slot,
            p => self.slots[p as usize].newer = slot,
        }
        self.newest = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn limiter(requests_per_second: f64, burst: u32, max_clients: usize) -> RateLimiter {
        RateLimiter::new(RateLimitConfig { requests_per_second, burst, max_clients })
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | n))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_passes_then_requests_pass_at_the_rate() {
        use Verdict::*;
        let limit = limiter(2.0, 3, 10);
        let t0 = Instant::now();
        // (milliseconds after t0, verdict): 2 a second, 3 at once.
        let table = [
            (0, Allowed),
            (0, Allowed),
            (0, Allowed),
            (0, Limited { retry_after_secs: 1 }),
            (400, Limited { retry_after_secs: 1 }),
            (500, Allowed),
            (600, Limited { retry_after_secs: 1 }),
            (1000, Allowed),
            (5000, Allowed),
            (5000, Allowed),
            (5000, Allowed),
            (5000, Limited { retry_after_secs: 1 }),
        ];
        for (i, (at, verdict)) in table.into_iter().enumerate() {
            assert_eq!(limit.check(ip(1), t0 + ms(at)), verdict, "request {i} at {at} ms");
        }
    }

    #[test]
    fn retry_after_counts_whole_seconds_until_the_next_token() {
        let limit = limiter(0.2, 1, 10);
        let t0 = Instant::now();
        assert_eq!(limit.check(ip(1), t0), Verdict::Allowed);
        assert_eq!(limit.check(ip(1), t0), Verdict::Limited { retry_after_secs: 5 });
        assert_eq!(limit.check(ip(1), t0 + ms(2500)), Verdict::Limited { retry_after_secs: 3 });
        assert_eq!(limit.check(ip(1), t0 + ms(5000)), Verdict::Allowed);
    }

    #[test]
    fn extreme_settings_neither_panic_nor_overflow() {
        let t0 = Instant::now();
        for (rate, burst) in [(MIN_REQUESTS_PER_SECOND, 1_000_000), (1e-300, 1_000_000), (1_000_000.0, 1), (1e300, 3)] {
            let limit = limiter(rate, burst, 2);
            for i in 0..3 {
                let _ = limit.check(ip(1), t0 + ms(i));
            }
        }
        let slowest = limiter(MIN_REQUESTS_PER_SECOND, 1, 2);
        assert_eq!(slowest.check(ip(1), t0), Verdict::Allowed);
        assert_eq!(slowest.check(ip(1), t0), Verdict::Limited { retry_after_secs: 1000 });
    }

    #[test]
    fn each_address_has_its_own_bucket() {
        let limit = limiter(1.0, 2, 10);
        let t0 = Instant::now();
        for client in [ip(1), ip(2), "::1".parse().unwrap()] {
            assert_eq!(limit.check(client, t0), Verdict::Allowed);
            assert_eq!(limit.check(client, t0), Verdict::Allowed);
            assert!(matches!(limit.check(client, t0), Verdict::Limited { .. }), "{client}");
        }
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(matches!(limit.check(mapped, t0), Verdict::Limited { .. }), "same client as 127.0.0.1");
        assert_eq!(limit.tracked_clients(), 3);
    }

    #[test]
    fn time_going_backwards_neither_adds_nor_removes_tokens() {
        let limit = limiter(1.0, 1, 10);
        let t0 = Instant::now() + Duration::from_secs(10);
        assert_eq!(limit.check(ip(1), t0), Verdict::Allowed);
        assert!(matches!(limit.check(ip(1), t0 - ms(5000)), Verdict::Limited { .. }));
        assert_eq!(limit.check(ip(1), t0 + ms(1000)), Verdict::Allowed);
    }

    #[test]
    fn the_table_forgets_the_least_recently_seen_address_first() {
        let limit = limiter(1.0, 1, 3);
        let t0 = Instant::now();
        for n in 1..=3 {
            assert_eq!(limit.check(ip(n), t0), Verdict::Allowed);
        }
        // Seeing 1 again makes 2 the least recently seen; 4 then takes 2's slot.
        assert!(matches!(limit.check(ip(1), t0), Verdict::Limited { .. }));
        assert_eq!(limit.check(ip(4), t0), Verdict::Allowed);
        assert_eq!(limit.tracked_clients(), 3);
        assert_eq!(limit.check(ip(2), t0), Verdict::Allowed, "2 was forgotten, so it starts afresh");
        // 2 took 3's slot; 1 and 4 are still remembered with empty buckets.
        assert!(matches!(limit.check(ip(1), t0), Verdict::Limited { .. }));
        assert!(matches!(limit.check(ip(4), t0), Verdict::Limited { .. }));
        assert_eq!(limit.check(ip(3), t0), Verdict::Allowed, "3 was forgotten");
    }

    #[test]
    fn tens_of_thousands_of_addresses_stay_within_the_table_size() {
        let limit = limiter(1.0, 1, 1000);
        let t0 = Instant::now();
        for n in 0..50_000 {
            assert_eq!(limit.check(ip(n), t0), Verdict::Allowed, "address {n} is new");
            assert!(limit.tracked_clients() <= 1000);
        }
        assert_eq!(limit.tracked_clients(), 1000);
        let table = crate::lock(&limit.table);
        assert_eq!(table.slots.len(), 1000);
        // The last thousand are remembered, newest first, and the list covers every slot.
        let mut slot = table.newest;
        for n in (49_000..50_000).rev() {
            assert_eq!(table.slots[slot as usize].client, ip(n));
            slot = table.slots[slot as usize].older;
        }
        assert_eq!(slot, NO_SLOT);
        drop(table);
        assert!(matches!(limit.check(ip(49_999), t0), Verdict::Limited { .. }));
        assert_eq!(limit.check(ip(0), t0), Verdict::Allowed, "the first address was forgotten");
    }
}
