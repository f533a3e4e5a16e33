//! Random, by the power of two random choices: draw two different eligible backends at
//! random (in proportion to weight) and pick the one with fewer exchanges in flight for its
//! weight; on a tie, the first drawn. This avoids both the herding of pure least-connections
//! (every worker rushing the same idle backend) and the blind spots of pure random.
//!
//! The generator is xorshift64*, seeded per balancer from std's per-process random keys; its
//! state is one `u64` behind a mutex held for a few instructions.

use super::{is_less_loaded, Balancer};
use crate::backend::Backend;
use crate::lock;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub struct Random {
    /// xorshift64* state; never zero.
    state: Mutex<u64>,
}

impl Random {
    pub fn new() -> Random {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Random::with_seed(RandomState::new().hash_one(nanos))
    }

    pub fn with_seed(seed: u64) -> Random {
        Random { state: Mutex::new(seed | 1) }
    }

    /// The next number of the sequence; also the health thread's jitter.
    pub fn next_u64(&self) -> u64 {
        let mut state = lock(&self.state);
        *state = xorshift64(*state);
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl Default for Random {
    fn default() -> Self {
        Random::new()
    }
}

impl Balancer for Random {
    fn pick(&self, backends: &[Arc<Backend>], eligible: &dyn Fn(usize) -> bool, _client: IpAddr) -> Option<usize> {
        let candidates: Vec<(usize, u64)> = (0..backends.len())
            .filter(|&i| backends[i].config.weight > 0 && eligible(i))
            .map(|i| (i, u64::from(backends[i].config.weight)))
            .collect();
        let first = draw(&candidates, None, self.next_u64())?;
        let Some(second) = draw(&candidates, Some(first), self.next_u64()) else { return Some(first) };
        Some(if is_less_loaded(&backends[second], &backends[first]) { second } else { first })
    }
}

/// One xorshift step: a full-period generator over the non-zero `u64`s.
fn xorshift64(mut x: u64) -> u64 {
    x ^= x >> 12;
    x ^= x << 25;
    x ^ (x >> 27)
}

/// Draws one of `(index, weight)` `candidates` other than `skip`, in proportion to weight,
/// using `random`. Pure.
fn draw(candidates: &[(usize, u64)], skip: Option<usize>, random: u64) -> Option<usize> {
    let total: u64 = candidates.iter().filter(|(i, _)| Some(*i) != skip).map(|(_, w)| w).sum();
    if total == 0 {
        return None;
    }
    let mut ticket = random % total;
    for &(i, weight) in candidates.iter().filter(|(i, _)| Some(*i) != skip) {
        if ticket < weight {
            return Some(i);
        }
        ticket -= weight;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{backends, picks, tally};

    #[test]
    fn draws_land_by_weight() {
        //  tickets:   0 1 2 | 3 | 4 5      (a weight 3, b weight 1, c weight 2)
        let candidates = [(0, 3), (1, 1), (2, 2)];
        let drawn: Vec<_> = (0..7).map(|r| draw(&candidates, None, r)).collect();
        assert_eq!(drawn, [0, 0, 0, 1, 2, 2, 0].map(Some));
        //  without a:  b | c c
        let drawn: Vec<_> = (0..3).map(|r| draw(&candidates, Some(0), r)).collect();
        assert_eq!(drawn, [1, 2, 2].map(Some));
        assert_eq!(draw(&[(4, 1)], Some(4), 0), None);
        assert_eq!(draw(&[], None, 0), None);
    }

    #[test]
    fn idle_backends_share_picks_about_evenly() {
        let list = backends(&[1, 1, 1]);
        let counts = tally(&Random::with_seed(42), &list, 3_000);
        assert!(counts.iter().all(|&n| (850..1150).contains(&n)), "{counts:?}");
    }

    #[test]
    fn idle_backends_share_picks_about_by_weight() {
        let list = backends(&[3, 1]);
        let counts = tally(&Random::with_seed(7), &list, 4_000);
        assert!((2_750..3_250).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn of_two_drawn_the_less_loaded_wins() {
        // b is busy: it is always drawn against an idle one, so it is never picked.
        let list = backends(&[1, 1, 1]);
        let _held = [list[1].start_exchange(), list[1].start_exchange()];
        let counts = tally(&Random::with_seed(1), &list, 2_000);
        assert_eq!(counts[1], 0, "{counts:?}");
        assert!(counts[0] > 800 && counts[2] > 800, "{counts:?}");
    }

    #[test]
    fn the_most_loaded_of_many_is_never_picked_and_the_least_most_often() {
        //  in flight:  a 0   b 1   c 2   d 3
        let list = backends(&[1, 1, 1, 1]);
        let _held: Vec<_> = [1, 2, 2, 3, 3, 3].iter().map(|&i| list[i].start_exchange()).collect();
        let counts = tally(&Random::with_seed(3), &list, 3_000);
        assert_eq!(counts[3], 0, "{counts:?}");
        assert!(counts[0] > counts[1] && counts[1] > counts[2], "{counts:?}");
    }

    #[test]
    fn ineligible_and_weight_zero_backends_are_never_picked() {
        let list = backends(&[1, 0, 1, 1]);
        let seq = picks(&Random::with_seed(9), &list, &|i| i != 3, 200);
        assert!(seq.chars().all(|c| c == 'a' || c == 'c'), "{seq}");
        assert_eq!(picks(&Random::with_seed(9), &list, &|i| i == 1, 1), "-");
    }

    #[test]
    fn different_seeds_give_different_sequences() {
        let list = backends(&[1, 1, 1, 1]);
        let one = picks(&Random::with_seed(1), &list, &|_| true, 40);
        let two = picks(&Random::with_seed(2), &list, &|_| true, 40);
        assert_ne!(one, two);
    }
}
