//! Ip-hash: the same client address always lands on the same backend, by rendezvous
//! (highest-random-weight) hashing.
//!
//! Every backend gets a score for the client, from a hash of the client address keyed by the
//! backend's URL; the highest-scoring eligible backend wins. A client's backends in order of
//! score are its "hash order": when its first choice is not eligible it goes to its second,
//! and it returns when the first is back. Adding or removing one of n backends moves only the
//! clients whose first choice changes, about 1/n of them. Scores are weighted
//! (`weight / -ln(u)`, with `u` the hash mapped into (0, 1)), so a backend of weight 2 is
//! the first choice of twice as many clients as one of weight 1.
//!
//! No state: the hash is stable across restarts and versions (see `hash`).

use super::hash::hash64;
use super::{Balancer, Why};
use crate::backend::Backend;
use std::net::IpAddr;
use std::sync::Arc;

pub struct IpHash;

impl Balancer for IpHash {
    fn choose(
        &self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        client: IpAddr,
        why: Option<&mut Why>,
    ) -> Option<usize> {
        if let Some(why) = why {
            let picked = self.choose(backends, eligible, client, None);
            explain(backends, client, picked, why);
            return picked;
        }
        let mut best: Option<(usize, f64)> = None;
        for (i, backend) in backends.iter().enumerate() {
            if backend.config.weight == 0 || !eligible(i) {
                continue;
            }
            let s = score(&backend.config.url, backend.config.weight, client);
            if best.is_none_or(|(_, top)| s > top) {
                best = Some((i, s));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// Fills `why` with every weighted backend's score for `client` and the reason for `picked`:
/// the client's first choice, or the next in its hash order when the first is not eligible.
fn explain(backends: &[Arc<Backend>], client: IpAddr, picked: Option<usize>, why: &mut Why) {
    why.score_name = "score";
    why.scores =
        backends.iter().map(|b| (b.config.weight > 0).then(|| score(&b.config.url, b.config.weight, client))).collect();
    let rank = |i: usize| why.scores.iter().filter(|s| s.is_some_and(|s| Some(s) > why.scores[i])).count();
    why.reason = match picked {
        None => "nothing eligible".to_string(),
        Some(i) if rank(i) == 0 => format!("highest score for client {client}: its first choice"),
        Some(i) => format!("choice {} in client {client}'s hash order: the higher ones are not eligible", rank(i) + 1),
    };
}

/// The backend's score for this client: higher wins. Depends only on the backend's URL and
/// weight and on the client address, never on list order.
fn score(backend_url: &str, weight: u32, client: IpAddr) -> f64 {
    let key = hash64(0, backend_url.as_bytes());
    let h = match client.to_canonical() {
        IpAddr::V4(ip) => hash64(key, &ip.octets()),
        IpAddr::V6(ip) => hash64(key, &ip.octets()),
    };
    // The top 53 bits as a float strictly inside (0, 1).
    let unit = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -unit.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::backends;
    use std::net::Ipv4Addr;

    /// 10.0.0.0 upwards: `count` distinct client addresses.
    fn clients(count: u32) -> impl Iterator<Item = IpAddr> {
        (0..count).map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
    }

    /// Where each client lands, by backend URL (indices differ between lists).
    fn placement(list: &[Arc<Backend>], eligible: &dyn Fn(usize) -> bool, count: u32) -> Vec<String> {
        clients(count)
            .map(|c| IpHash.pick(list, eligible, c).map_or("-".into(), |i| list[i].url().to_string()))
            .collect()
    }

    #[test]
    fn pinned_choices_keep_clients_in_place_across_versions() {
        //  client:      10.0.0.0  .1  .2  .3  .4  .5  .6  .7   over  a b c
        let list = backends(&[1, 1, 1]);
        let seq: String =
            clients(8).map(|c| char::from(b'a' + IpHash.pick(&list, &|_| true, c).unwrap() as u8)).collect();
        assert_eq!(seq, PINNED);
    }

    const PINNED: &str = "aacccbab";

    #[test]
    fn the_same_client_always_gets_the_same_backend() {
        let list = backends(&[1, 1, 1]);
        for client in clients(50) {
            let first = IpHash.pick(&list, &|_| true, client);
            assert!((0..10).all(|_| IpHash.pick(&list, &|_| true, client) == first), "{client}");
        }
    }

    #[test]
    fn clients_spread_evenly_and_by_weight() {
        let mut counts = [0; 4];
        for client in clients(20_000) {
            counts[IpHash.pick(&backends(&[1, 1, 1, 1]), &|_| true, client).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&n| (4_500..5_500).contains(&n)), "{counts:?}");
        let list = backends(&[2, 1]);
        let heavy = clients(20_000).filter(|&c| IpHash.pick(&list, &|_| true, c) == Some(0)).count();
        assert!((12_700..14_000).contains(&heavy), "weight 2 of 3 got {heavy} of 20000");
    }

    #[test]
    fn adding_a_backend_moves_about_one_in_n_clients_all_to_the_new_one() {
        let four = backends(&[1, 1, 1, 1]);
        let five = backends(&[1, 1, 1, 1, 1]);
        let before = placement(&four, &|_| true, 10_000);
        let after = placement(&five, &|_| true, 10_000);
        let moved: Vec<(&String, &String)> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
        assert!((1_600..2_400).contains(&moved.len()), "{} of 10000 moved; about 2000 expected", moved.len());
        assert!(moved.iter().all(|(_, to)| *to == five[4].url()), "a client moved between old backends");
    }

    #[test]
    fn removing_a_backend_moves_only_its_own_clients() {
        let five = backends(&[1, 1, 1, 1, 1]);
        let four: Vec<_> = five.iter().filter(|b| b.url() != five[2].url()).cloned().collect();
        let before = placement(&five, &|_| true, 10_000);
        let after = placement(&four, &|_| true, 10_000);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a);
        assert!(moved.clone().all(|(from, _)| *from == five[2].url()), "a client of a remaining backend moved");
        let moved = moved.count();
        assert!((1_600..2_400).contains(&moved), "{moved} of 10000 moved; about 2000 expected");
    }

    #[test]
    fn an_unavailable_backends_clients_take_their_next_choice_and_come_back() {
        let list = backends(&[1, 1, 1]);
        let healthy = placement(&list, &|_| true, 3_000);
        let b_down = placement(&list, &|i| i != 1, 3_000);
        for (before, during) in healthy.iter().zip(&b_down) {
            if *before == list[1].url() {
                assert_ne!(*during, list[1].url());
            } else {
                assert_eq!(before, during, "a client of a healthy backend moved");
            }
        }
        assert_eq!(placement(&list, &|_| true, 3_000), healthy, "clients did not return");
    }

    #[test]
    fn the_reason_names_the_clients_choice_in_its_hash_order() {
        let list = backends(&[1, 1, 1]);
        let client = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)); // first choice a (see PINNED)
        let mut why = Why::default();
        assert_eq!(IpHash.choose(&list, &|_| true, client, Some(&mut why)), Some(0));
        assert_eq!(why.reason, "highest score for client 10.0.0.0: its first choice");
        assert_eq!(why.scores.iter().filter(|s| s.is_some()).count(), 3);
        let mut why = Why::default();
        let second = IpHash.choose(&list, &|i| i != 0, client, Some(&mut why));
        assert_ne!(second, Some(0));
        assert_eq!(why.reason, "choice 2 in client 10.0.0.0's hash order: the higher ones are not eligible");
    }

    #[test]
    fn ipv4_mapped_ipv6_clients_hash_like_ipv4() {
        let list = backends(&[1, 1, 1, 1, 1]);
        for v4 in clients(50) {
            let IpAddr::V4(ip) = v4 else { unreachable!() };
            let mapped = IpAddr::V6(ip.to_ipv6_mapped());
            assert_eq!(IpHash.pick(&list, &|_| true, v4), IpHash.pick(&list, &|_| true, mapped));
        }
    }
}
