//! Least connections: the eligible backend with the fewest exchanges in flight for its weight
//! wins (in-flight / weight, compared by cross-multiplying). A backend that answers slowly
//! keeps its requests longer, so it is picked less.
//!
//! Ties are broken by rotation: the scan starts after the previous pick, and only a strictly
//! lower load displaces the first candidate found. With no load at all this is round robin.
//! The cursor is one `usize` behind a mutex; in-flight counts are the backends' own atomics.

use super::{is_less_loaded, Balancer, Kept, Why};
use crate::backend::Backend;
use crate::lock;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct LeastConnections {
    /// The index the next scan starts at.
    next: Mutex<usize>,
}

impl Balancer for LeastConnections {
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
        let mut best: Option<usize> = None;
        for i in (start..n).chain(0..start) {
            if backends[i].config.weight == 0 || !eligible(i) {
                continue;
            }
            if best.is_none_or(|b| is_less_loaded(&backends[i], &backends[b])) {
                best = Some(i);
            }
        }
        if let Some(why) = why {
            why.reason = explain(backends, eligible, best);
        }
        let best = best?;
        *next = best + 1;
        Some(best)
    }

    fn kept(&self, count: usize) -> Kept {
        Kept::Cursor(*lock(&self.next) % count.max(1))
    }
}

/// The reason for picking `best`: fewest in flight for its weight, alone or in a tie.
fn explain(backends: &[Arc<Backend>], eligible: &dyn Fn(usize) -> bool, best: Option<usize>) -> String {
    let Some(best) = best else { return "nothing eligible".to_string() };
    let b = &backends[best];
    let tied = (0..backends.len())
        .filter(|&i| i != best && backends[i].config.weight > 0 && eligible(i))
        .filter(|&i| !is_less_loaded(b, &backends[i]))
        .count();
    let load = format!("{} in flight for weight {}", b.active(), b.config.weight);
    if tied == 0 {
        format!("fewest in flight for its weight ({load})")
    } else {
        format!("fewest in flight for its weight ({load}), tied with {tied}; the rotation broke the tie")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{backends, picks};

    #[test]
    fn without_load_it_rotates() {
        let list = backends(&[1, 1, 1]);
        assert_eq!(picks(&LeastConnections::default(), &list, &|_| true, 6), "abcabc");
    }

    #[test]
    fn the_least_loaded_backend_wins() {
        //  in flight:  a 2   b 0   c 1   ->  b every time (picks here do not add load)
        let list = backends(&[1, 1, 1]);
        let _held = [list[0].start_exchange(), list[0].start_exchange(), list[2].start_exchange()];
        assert_eq!(picks(&LeastConnections::default(), &list, &|_| true, 3), "bbb");
    }

    #[test]
    fn ties_among_the_least_loaded_rotate() {
        //  in flight:  a 0   b 1   c 0   d 0   ->  a c d a c d
        let list = backends(&[1, 1, 1, 1]);
        let _held = list[1].start_exchange();
        assert_eq!(picks(&LeastConnections::default(), &list, &|_| true, 6), "acdacd");
    }

    #[test]
    fn load_is_measured_against_weight() {
        //  a: weight 3, 2 in flight (0.67)   b: weight 1, 1 in flight (1.0)  ->  a
        //  a: weight 3, 3 in flight (1.0)    b: weight 1, 1 in flight (1.0)  ->  tie, rotate
        let list = backends(&[3, 1]);
        let lc = LeastConnections::default();
        let mut held = vec![list[0].start_exchange(), list[0].start_exchange(), list[1].start_exchange()];
        assert_eq!(picks(&lc, &list, &|_| true, 2), "aa");
        held.push(list[0].start_exchange());
        assert_eq!(picks(&lc, &list, &|_| true, 4), "baba");
    }

    #[test]
    fn picks_follow_load_as_exchanges_start_and_end() {
        //  each pick starts an exchange on its backend; a's first one ends after pick 3
        //  pick:     1  2  3  4  5
        //  a:        a        a
        //  b:           b        b        (b's stay in flight)
        //  c:              c              (c's stays in flight)
        let list = backends(&[1, 1, 1]);
        let lc = LeastConnections::default();
        let mut held = Vec::new();
        let mut seq = String::new();
        for step in 0..5 {
            if step == 3 {
                held.remove(0);
            }
            let i = lc.pick(&list, &|_| true, crate::balance::testing::CLIENT).unwrap();
            seq.push(char::from(b'a' + i as u8));
            held.push(list[i].start_exchange());
        }
        assert_eq!(seq, "abcab");
    }

    #[test]
    fn the_reason_says_whether_the_pick_was_alone_in_its_load_or_tied() {
        //  in flight:  a 1   b 0   c 0   ->  b, tied with c
        let list = backends(&[1, 1, 1]);
        let _held = list[0].start_exchange();
        let lc = LeastConnections::default();
        let mut why = Why::default();
        assert_eq!(lc.choose(&list, &|_| true, crate::balance::testing::CLIENT, Some(&mut why)), Some(1));
        assert_eq!(
            why.reason,
            "fewest in flight for its weight (0 in flight for weight 1), tied with 1; the rotation broke the tie"
        );
        let mut why = Why::default();
        assert_eq!(lc.choose(&list, &|i| i != 2, crate::balance::testing::CLIENT, Some(&mut why)), Some(1));
        assert_eq!(why.reason, "fewest in flight for its weight (0 in flight for weight 1)");
    }

    #[test]
    fn ineligible_and_weight_zero_backends_are_never_picked() {
        let list = backends(&[1, 0, 1]);
        let _held = list[0].start_exchange();
        assert_eq!(picks(&LeastConnections::default(), &list, &|i| i != 2, 3), "aaa");
    }
}
