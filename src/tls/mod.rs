//! TLS material: each TLS listener's server configuration (its certificates, chosen by SNI)
//! and each pool's client configuration for `https://` backends, read from the files the
//! configuration names (or, for a listener with `acme`, the certificate `acme::storage`
//! keeps; none yet means the listener is pending). Loading is the I/O step after parsing, like `config::resolve`: at
//! start, on reload (a file that fails to load refuses the reload, so the running
//! certificates stay) and for `--check`. The result lives in the runtime's snapshot, so new
//! handshakes use the newest certificates while open connections keep theirs.
//!
//! rustls runs with the `aws-lc-rs` provider (faster than `ring` here, measured by
//! `scripts/tls-providers.sh`): TLS 1.2 and 1.3 only, ALPN `http/1.1` on HTTP
//! listeners, session resumption by tickets and by a session cache.

pub mod backend;
pub mod certificate;

use crate::acme::challenges::{Challenges, ACME_TLS_ALPN};
use crate::acme::schedule::{renewal_time, Validity};
use crate::acme::storage;
use crate::config::{AcmeConfig, Config, ConfigError, ListenerMode, ListenerTls, Protocol, TlsVersion};
use crate::ops::time::rfc3339_seconds;
use certificate::{Certificate, SniResolver};
use log::{info, warn};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, ServerConfig, SupportedProtocolVersion};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every listener's and pool's TLS configuration, by index.
#[derive(Default)]
pub struct TlsSet {
    /// For each listener: its server configuration when it terminates TLS.
    pub listeners: Vec<Option<Arc<ServerConfig>>>,
    /// For each listener: its certificates (what `--check` and `/metrics` report).
    pub certificates: Vec<Option<Arc<SniResolver>>>,
    /// For each pool: the client configuration its `https://` backends use (HTTP pools only).
    pub pools: Vec<Option<Arc<ClientConfig>>>,
    /// The ACME challenges the resolvers answer TLS-ALPN-01 handshakes from; the same for
    /// every TLS set of a process.
    pub challenges: Arc<Challenges>,
}

impl TlsSet {
    /// Reads every certificate, key and CA file `config` names and builds the rustls
    /// configurations; ACME listeners answer TLS-ALPN-01 from `challenges`. Errors name the
    /// key of the file at fault.
    pub fn load(config: &Config, challenges: &Arc<Challenges>) -> Result<TlsSet, ConfigError> {
        let mut set = TlsSet { challenges: Arc::clone(challenges), ..TlsSet::default() };
        for (i, listener) in config.listeners.iter().enumerate() {
            let Some(tls) = &listener.tls else {
                set.listeners.push(None);
                set.certificates.push(None);
                continue;
            };
            let certificates = match &config.acme {
                Some(acme) if !tls.acme.is_empty() => stored_acme_certificate(acme, &tls.acme, i),
                _ => tls
                    .certificates
                    .iter()
                    .map(|files| Certificate::load(files, &config.source))
                    .collect::<Result<_, _>>()?,
            };
            let alpn = listener.mode != ListenerMode::Tcp;
            let answers_alpn_challenges = alpn && !tls.acme.is_empty();
            let challenges = answers_alpn_challenges.then(|| Arc::clone(challenges));
            let resolver = Arc::new(SniResolver::new(certificates, tls.acme.clone(), challenges));
            let server = server_config(tls, Arc::clone(&resolver), alpn).map_err(|problem| ConfigError {
                file: config.source.clone(),
                key: format!("listeners[{i}].tls"),
                problem,
            })?;
            set.listeners.push(Some(server));
            set.certificates.push(Some(resolver));
        }
        let needs_roots = config.pools.iter().any(|p| p.protocol == Protocol::Http);
        let roots = if needs_roots { backend::system_roots() } else { rustls::RootCertStore::empty() };
        for pool in &config.pools {
            if pool.protocol != Protocol::Http {
                set.pools.push(None);
                continue;
            }
            let key = if pool.key_path.is_empty() { "tls".to_string() } else { format!("{}.tls", pool.key_path) };
            if !pool.tls.verify {
                warn!("pool {:?}: \"verify\": false, so https:// backends are not authenticated", pool.name);
            }
            set.pools.push(Some(backend::client_config(&pool.tls, &roots, &config.source, &key)?));
        }
        Ok(set)
    }
}

/// The certificate ACME stored for `names`, if there is one that loads and names them all;
/// otherwise none (the listener is pending until the renewal thread gets one).
fn stored_acme_certificate(acme: &AcmeConfig, names: &[String], listener: usize) -> Vec<Certificate> {
    let files = storage::certificate_files(acme, names, &format!("listeners[{listener}].tls.acme"));
    if !files.cert.exists() {
        return Vec::new();
    }
    match Certificate::load(&files, "acme") {
        Ok(cert) => match names.iter().find(|n| !cert.names.contains(n)) {
            None => vec![cert],
            Some(missing) => {
                info!("{} does not name {missing}; a new certificate is ordered", files.cert.display());
                Vec::new()
            }
        },
        Err(e) => {
            warn!("{}: {}; a new certificate is ordered", files.cert.display(), e.problem);
            Vec::new()
        }
    }
}

/// A listener's server configuration over `certificates`.
fn server_config(tls: &ListenerTls, certificates: Arc<SniResolver>, alpn: bool) -> Result<Arc<ServerConfig>, String> {
    let versions: &[&'static SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_2 => &[&TLS13, &TLS12],
        TlsVersion::V1_3 => &[&TLS13],
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    if alpn {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !tls.acme.is_empty() {
            config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        }
    }
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

/// Certificates closer than this to their expiry are warned about by `--check`.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

impl TlsSet {
    /// What `--check` says about listener `index`'s certificates: names and expiry of each,
    /// and a warning for any that expires within [`EXPIRY_WARNING_DAYS`] (or has expired).
    pub fn describe_listener(&self, index: usize, now: SystemTime) -> String {
        let Some(Some(resolver)) = self.certificates.get(index) else { return String::new() };
        let acme = !resolver.acme_names.is_empty();
        if acme && resolver.certificates.is_empty() {
            return format!(
                "  tls acme: names {}; PENDING: no certificate stored yet; sluice orders one when it starts, \
                 and TLS handshakes on this listener fail until it arrives\n",
                resolver.acme_names.join(", ")
            );
        }
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let mut out = String::new();
        for (i, cert) in resolver.certificates.iter().enumerate() {
            let days_left = (cert.not_after - now_secs).div_euclid(86_400);
            let expires = UNIX_EPOCH + Duration::from_secs(cert.not_after.max(0) as u64);
            let default = if i == 0 { " (default)" } else { "" };
            out += &format!(
                "  tls certificate {}{default}: names {}; expires {} (in {days_left} days)\n",
                cert.files.cert.display(),
                cert.names.join(", "),
                rfc3339_seconds(expires),
            );
            if acme {
                let validity = Validity { not_before: cert.not_before, not_after: cert.not_after };
                out += &format!("  tls acme: renewed automatically from {}\n", rfc3339_seconds(renewal_time(validity)));
            } else if days_left < EXPIRY_WARNING_DAYS {
                out += &format!("  WARNING: {} expires in {days_left} days; renew it\n", cert.files.cert.display());
            }
        }
        out
    }
}
