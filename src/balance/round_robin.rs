//! Round robin: each pick takes the next eligible backend after the previous pick. Weights
//! are not read (a weight of 0 still keeps a backend out, through the pool's eligibility);
//! choose `weighted-round-robin` when backends differ in capacity.
//!
//! The cursor is one `usize` behind a mutex held for a few instructions. Skipping an
//! ineligible backend does not shift the rotation onto its neighbour: with `a b c` and `b`
//! down, picks go `a c a c`, not `a c c a`.

use super::{Balancer, Kept, Why};
use crate::backend::Backend;
use crate::lock;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct RoundRobin {
    /// The index to try first on the next pick.
    next: Mutex<usize>,
}

impl Balancer for RoundRobin {
    fn choose(
        &self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        _client: IpAddr,
        why: Option<&mut Why>,
    ) -> Option<usize> {
        let n = backends.len();
        let mut next = lock(&self.next);
        let start = *next % n.max(1);
        let picked = (start..n).chain(0..start).find(|&i| eligible(i));
        if let Some(why) = why {
            why.reason = match picked {
                Some(i) if i == start => "next in turn".to_string(),
                Some(i) => format!("next in turn after skipping {} not eligible", (i + n - start) % n),
                None => "nothing eligible".to_string(),
            };
        }
        let picked = picked?;
        *next = picked + 1;
        Some(picked)
    }

    fn kept(&self, count: usize) -> Kept {
        Kept::Cursor(*lock(&self.next) % count.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{backends, picks, CLIENT};

    #[test]
    fn rotates_in_order() {
        let list = backends(&[1, 1, 1]);
        assert_eq!(picks(&RoundRobin::default(), &list, &|_| true, 7), "abcabca");
    }

    #[test]
    fn weights_do_not_change_the_rotation() {
        // weighted-round-robin is the algorithm that reads weights; this one takes turns.
        let list = backends(&[5, 1, 1]);
        assert_eq!(picks(&RoundRobin::default(), &list, &|_| true, 6), "abcabc");
    }

    #[test]
    fn skipping_keeps_the_rotation_fair() {
        //   a b c   with b out:  a c a c
        let list = backends(&[1, 1, 1]);
        assert_eq!(picks(&RoundRobin::default(), &list, &|i| i != 1, 4), "acac");
    }

    #[test]
    fn a_backend_coming_back_rejoins_in_its_place() {
        //   a b c   b out for two picks, then back:   a c | a b c
        let list = backends(&[1, 1, 1]);
        let rr = RoundRobin::default();
        assert_eq!(picks(&rr, &list, &|i| i != 1, 2), "ac");
        assert_eq!(picks(&rr, &list, &|_| true, 3), "abc");
    }

    #[test]
    fn the_reason_counts_skipped_backends_and_the_cursor_is_kept() {
        let list = backends(&[1, 1, 1]);
        let rr = RoundRobin::default();
        let mut why = Why::default();
        assert_eq!(rr.choose(&list, &|i| i == 2, CLIENT, Some(&mut why)), Some(2));
        assert_eq!(why.reason, "next in turn after skipping 2 not eligible");
        assert_eq!(rr.kept(3), Kept::Cursor(0), "after c the turn wraps to a");
        let mut why = Why::default();
        rr.choose(&list, &|_| true, CLIENT, Some(&mut why));
        assert_eq!(why.reason, "next in turn");
    }

    #[test]
    fn nothing_eligible_is_none() {
        let list = backends(&[1, 1]);
        let rr = RoundRobin::default();
        assert_eq!(picks(&rr, &list, &|_| false, 1), "-");
        assert_eq!(rr.pick(&[], &|_| true, CLIENT), None);
    }
}
