//! The HTTP-01 challenges being validated right now: token to key authorization. Written by
//! the renewal thread while an order waits for the authority (each token is removed when its
//! order is done, by [`Published`]'s drop), read by every http listener's connections for
//! `/.well-known/acme-challenge/<token>` (see `acme::http01`). A leaf: imports nothing of
//! sluice's but the lock helper.

use crate::lock;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Challenges {
    tokens: Mutex<HashMap<String, String>>,
}

impl Challenges {
    /// The key authorization to answer for `token`, while its challenge is pending.
    pub fn key_authorization(&self, token: &str) -> Option<String> {
        lock(&self.tokens).get(token).cloned()
    }

    /// Answers `token` with `key_authorization` until the returned guard is dropped.
    pub fn publish(&self, token: &str, key_authorization: String) -> Published<'_> {
        lock(&self.tokens).insert(token.to_string(), key_authorization);
        Published { challenges: self, token: token.to_string() }
    }
}

/// A published token; dropping it stops answering it.
pub struct Published<'a> {
    challenges: &'a Challenges,
    token: String,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        lock(&self.challenges.tokens).remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_answered_only_while_published() {
        let challenges = Challenges::default();
        assert_eq!(challenges.key_authorization("t1"), None);
        let published = challenges.publish("t1", "t1.thumb".into());
        assert_eq!(challenges.key_authorization("t1").as_deref(), Some("t1.thumb"));
        drop(published);
        assert_eq!(challenges.key_authorization("t1"), None);
    }
}
