//! Weighted round robin, smooth as nginx does it: weights 5:1:1 give `a a b a c a a`, each
//! backend's share exact over every cycle of (sum of weights) picks, and the heavy backend's
//! turns spread out instead of coming in a burst of five.
//!
//! Each backend carries a running score. On every pick each eligible backend's score grows by
//! its weight, the highest score wins (the first on a tie), and the winner's score drops by
//! the total weight of the eligible backends. Scores live in one `Vec` behind a mutex held
//! for a few instructions. An ineligible backend's score stands still until it returns.

use super::{Balancer, Kept, Why};
use crate::backend::Backend;
use crate::lock;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct WeightedRoundRobin {
    /// Each backend's running score, by index.
    scores: Mutex<Vec<i64>>,
}

impl Balancer for WeightedRoundRobin {
    fn choose(
        &self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        _client: IpAddr,
        why: Option<&mut Why>,
    ) -> Option<usize> {
        let weight = |i: usize| {
            let w = backends[i].config.weight;
            (w > 0 && eligible(i)).then_some(i64::from(w))
        };
        let mut scores = lock(&self.scores);
        scores.resize(backends.len(), 0);
        let picked = smooth_pick(&mut scores, weight);
        if let Some(why) = why {
            let total: i64 = (0..backends.len()).filter_map(weight).sum();
            why.reason = match picked {
                Some(i) => format!(
                    "highest current weight ({}) once each eligible backend added its weight; it then gave back the total ({total})",
                    scores[i] + total
                ),
                None => "nothing eligible".to_string(),
            };
            why.score_name = "current";
            why.scores = scores.iter().map(|&s| Some(s as f64)).collect();
        }
        picked
    }

    fn kept(&self, count: usize) -> Kept {
        let mut scores = lock(&self.scores).clone();
        scores.resize(count, 0);
        Kept::CurrentWeights(scores)
    }
}

/// One step of smooth weighting over `scores`; `weight(i)` is `None` for a backend that may
/// not be picked.
fn smooth_pick(scores: &mut [i64], weight: impl Fn(usize) -> Option<i64>) -> Option<usize> {
    let mut total = 0;
    let mut best: Option<usize> = None;
    for i in 0..scores.len() {
        let Some(w) = weight(i) else { continue };
        scores[i] += w;
        total += w;
        if best.is_none_or(|b| scores[i] > scores[b]) {
            best = Some(i);
        }
    }
    let best = best?;
    scores[best] -= total;
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{backends, picks, tally};

    #[test]
    fn weights_5_1_1_spread_the_heavy_backend_out() {
        //  pick:   1  2  3  4  5  6  7
        //  a (5):  a  a     a     a  a
        //  b (1):        b
        //  c (1):              c
        let list = backends(&[5, 1, 1]);
        let wrr = WeightedRoundRobin::default();
        assert_eq!(picks(&wrr, &list, &|_| true, 14), "aabacaaaabacaa");
    }

    #[test]
    fn shares_are_exact_over_every_cycle() {
        let list = backends(&[5, 1, 1]);
        assert_eq!(tally(&WeightedRoundRobin::default(), &list, 70), [50, 10, 10]);
        let list = backends(&[3, 2, 0, 1]);
        assert_eq!(tally(&WeightedRoundRobin::default(), &list, 600), [300, 200, 0, 100]);
    }

    #[test]
    fn weights_2_1_and_equal_weights() {
        //  a (2), b (1):  a b a | a b a
        let wrr = WeightedRoundRobin::default();
        assert_eq!(picks(&wrr, &backends(&[2, 1]), &|_| true, 6), "abaaba");
        let wrr = WeightedRoundRobin::default();
        assert_eq!(picks(&wrr, &backends(&[1, 1, 1]), &|_| true, 6), "abcabc");
    }

    #[test]
    fn an_ineligible_backend_is_skipped_and_the_rest_keep_their_proportions() {
        //  a (5), b (1) out, c (1):   a a a c a a | a a a c a a  (5:1 between a and c)
        let list = backends(&[5, 1, 1]);
        let wrr = WeightedRoundRobin::default();
        let seq = picks(&wrr, &list, &|i| i != 1, 12);
        assert_eq!(seq, "aaacaaaaacaa");
    }

    #[test]
    fn the_reason_and_scores_are_the_current_weights_after_the_pick() {
        //  weights 5 1 1, first pick: 5 1 1 after adding; a wins and gives back 7: -2 1 1
        let list = backends(&[5, 1, 1]);
        let wrr = WeightedRoundRobin::default();
        let mut why = Why::default();
        assert_eq!(wrr.choose(&list, &|_| true, crate::balance::testing::CLIENT, Some(&mut why)), Some(0));
        assert_eq!(why.scores, [Some(-2.0), Some(1.0), Some(1.0)]);
        assert_eq!(why.score_name, "current");
        assert!(why.reason.starts_with("highest current weight (5)"), "{}", why.reason);
        assert!(why.reason.ends_with("gave back the total (7)"), "{}", why.reason);
        assert_eq!(wrr.kept(3), Kept::CurrentWeights(vec![-2, 1, 1]));
    }

    #[test]
    fn weight_zero_is_never_picked_even_when_eligible() {
        let list = backends(&[0, 1]);
        assert_eq!(picks(&WeightedRoundRobin::default(), &list, &|_| true, 3), "bbb");
        let list = backends(&[0]);
        assert_eq!(picks(&WeightedRoundRobin::default(), &list, &|_| true, 1), "-");
    }
}
