//! Round robin: each pick takes the next eligible backend after the previous pick.
//!
//! The cursor is one `usize` behind a mutex held for a few instructions. Skipping an
//! ineligible backend does not shift the rotation onto its neighbour: with `a b c` and `b`
//! down, picks go `a c a c`, not `a c c a`.

use super::Balancer;
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
    fn pick(&self, backends: &[Arc<Backend>], eligible: &dyn Fn(usize) -> bool, _client: IpAddr) -> Option<usize> {
        let n = backends.len();
        let mut next = lock(&self.next);
        let start = *next % n.max(1);
        let picked = (start..n).chain(0..start).find(|&i| eligible(i))?;
        *next = picked + 1;
        Some(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::server_from_url;

    fn backends(n: usize) -> Vec<Arc<Backend>> {
        (0..n)
            .map(|i| Arc::new(Backend::new(server_from_url(&format!("http://127.0.0.1:{}", 1000 + i)).unwrap())))
            .collect()
    }

    fn picks(
        rr: &RoundRobin,
        list: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        count: usize,
    ) -> Vec<Option<usize>> {
        (0..count).map(|_| rr.pick(list, eligible, [127, 0, 0, 1].into())).collect()
    }

    #[test]
    fn rotates_in_order() {
        let list = backends(3);
        let rr = RoundRobin::default();
        assert_eq!(picks(&rr, &list, &|_| true, 7), [0, 1, 2, 0, 1, 2, 0].map(Some));
    }

    #[test]
    fn skipping_keeps_the_rotation_fair() {
        //   a b c   with b out:  a c a c
        let list = backends(3);
        let rr = RoundRobin::default();
        assert_eq!(picks(&rr, &list, &|i| i != 1, 4), [0, 2, 0, 2].map(Some));
    }

    #[test]
    fn nothing_eligible_is_none() {
        let list = backends(2);
        let rr = RoundRobin::default();
        assert_eq!(picks(&rr, &list, &|_| false, 1), [None]);
        assert_eq!(rr.pick(&[], &|_| true, [127, 0, 0, 1].into()), None);
    }
}
