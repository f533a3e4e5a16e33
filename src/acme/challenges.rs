//! The challenges being validated right now: for HTTP-01, token to key authorization; for
//! TLS-ALPN-01, name to the self-signed challenge certificate (RFC 8737). Written by the
//! renewal thread while an order waits for the authority (each entry is removed when its order
//! is done, by [`Published`]'s drop); read by every http listener's connections for
//! `/.well-known/acme-challenge/<token>` (see `acme::http01`) and by the TLS listeners'
//! certificate resolvers for handshakes that offer only ALPN `acme-tls/1`. One set per
//! process, shared by every snapshot's TLS set. A leaf: imports nothing of sluice's but the
//! lock helper.

use crate::lock;
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The ALPN protocol of TLS-ALPN-01 validation handshakes.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Default)]
pub struct Challenges {
    tokens: Mutex<HashMap<String, String>>,
    /// By lower-case name.
    certificates: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The key authorization to answer for `token`, while its challenge is pending.
    pub fn key_authorization(&self, token: &str) -> Option<String> {
        lock(&self.tokens).get(token).cloned()
    }

    /// The TLS-ALPN-01 certificate for `name`, while its challenge is pending.
    pub fn alpn_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        lock(&self.certificates).get(name).cloned()
    }

    /// Answers HTTP-01 for `token` with `key_authorization` until the guard is dropped.
    pub fn publish(&self, token: &str, key_authorization: String) -> Published<'_> {
        lock(&self.tokens).insert(token.to_string(), key_authorization);
        Published { challenges: self, entry: Entry::Token(token.to_string()) }
    }

    /// Answers TLS-ALPN-01 handshakes for `name` with `certificate` until the guard is
    /// dropped.
    pub fn publish_alpn(&self, name: &str, certificate: Arc<CertifiedKey>) -> Published<'_> {
        lock(&self.certificates).insert(name.to_string(), certificate);
        Published { challenges: self, entry: Entry::Name(name.to_string()) }
    }
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tokens = lock(&self.tokens).len();
        let certificates = lock(&self.certificates).len();
        f.debug_struct("Challenges").field("tokens", &tokens).field("certificates", &certificates).finish()
    }
}

enum Entry {
    Token(String),
    Name(String),
}

/// A published challenge; dropping it stops answering it.
pub struct Published<'a> {
    challenges: &'a Challenges,
    entry: Entry,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        match &self.entry {
            Entry::Token(token) => {
                lock(&self.challenges.tokens).remove(token);
            }
            Entry::Name(name) => {
                lock(&self.challenges.certificates).remove(name);
            }
        }
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
