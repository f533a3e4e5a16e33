//! Automatic certificates by ACME (RFC 8555) with HTTP-01 or TLS-ALPN-01 challenges, on
//! sluice's own small blocking client (why not a library: docs/https.md, "Automatic
//! certificates").
//!
//! - `renewal`: the `sluice-acme` thread. It orders a certificate for each listener with
//!   `"tls": {"acme": [names]}` that has none, renews at two thirds of the lifetime, retries
//!   failures with jittered backoff, and swaps new certificates in through the runtime's
//!   snapshot (as a reload does), so open connections keep theirs.
//! - `client` (directory, nonces, signed requests, account), `jws` (the account key and its
//!   signatures), `order` (one order from new order to chain), `problem` (the authority's
//!   problem documents and [`problem::AcmeError`]).
//! - `schedule`: when a certificate is renewed and when a failed order is tried again.
//! - `storage`: the account key and certificates on disk (0700 folders, 0600 files), read by
//!   `tls` at start and reload so a restart reuses them.
//! - `challenges` and `http01`: the challenges being validated, and the HTTP-01 answer on
//!   every http listener (the TLS-ALPN-01 answer is in `tls::certificate`'s resolver).
//! - `status`: what `/stats` and `/metrics` say about each certificate.
//!
//! Nothing here runs on a worker: workers and handshakes only read the challenges.

pub mod challenges;
pub mod client;
pub mod http01;
pub mod jws;
pub mod order;
pub mod problem;
pub mod renewal;
pub mod schedule;
pub mod status;
pub mod storage;

use crate::config::{Config, ListenerMode};

/// What `--check` says about `acme`: the authority, the account and the storage, and a
/// warning when no plain http listener is there to answer HTTP-01 challenges.
pub fn describe(config: &Config) -> String {
    let Some(acme) = &config.acme else { return String::new() };
    let email = acme.email.as_deref().map_or("no contact email".to_string(), |e| format!("contact {e}"));
    let mut out = format!(
        "acme: directory {} (its terms of service are agreed to), {email}, storage {}\n",
        acme.directory,
        storage::authority_folder(acme).display()
    );
    let wants_certificates = config.listeners.iter().any(|l| l.tls.as_ref().is_some_and(|t| !t.acme.is_empty()));
    if wants_certificates {
        out += if answers_http01(config) {
            "  challenges: HTTP-01 on the plain http listeners (the authority connects to port 80)\n"
        } else {
            "  challenges: TLS-ALPN-01 on the acme listeners, as no plain http listener is there \
             (the authority connects to port 443)\n"
        };
    }
    out
}

/// Whether a plain http listener is there to answer HTTP-01 challenges.
pub fn answers_http01(config: &Config) -> bool {
    config.listeners.iter().any(|l| l.tls.is_none() && l.mode != ListenerMode::Tcp)
}
