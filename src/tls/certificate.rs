//! A listener's certificates: read from their PEM files, their names and expiry read from the
//! leaf, and the resolver that picks one per handshake by SNI (exact name, then a `*.`
//! wildcard for exactly one more label, else the first certificate), or, for a TLS-ALPN-01
//! validation handshake on an ACME listener, the pending challenge certificate.

use crate::acme::challenges::{Challenges, ACME_TLS_ALPN};
use crate::config::{CertificateFiles, ConfigError};
use log::warn;
use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A certificate chain with its key, ready for handshakes, and what `--check` and `/metrics`
/// say about it.
pub struct Certificate {
    pub files: CertificateFiles,
    /// DNS names (lower-case, `*.` kept) and IP addresses of the leaf.
    pub names: Vec<String>,
    /// When the leaf became and stops being valid, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub key: Arc<CertifiedKey>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate").field("cert", &self.files.cert).field("names", &self.names).finish()
    }
}

impl Certificate {
    /// Reads `files`; an error names `source` (the configuration file), the key path of the
    /// certificate and the file at fault.
    pub fn load(files: &CertificateFiles, source: &str) -> Result<Certificate, ConfigError> {
        let error = |problem: String| ConfigError { file: source.to_string(), key: files.key_path.clone(), problem };
        let cert_file = files.cert.display();
        let pem = std::fs::read(&files.cert).map_err(|e| error(format!("cannot read {cert_file}: {e}")))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| error(format!("{cert_file} is not a PEM certificate chain: {e:?}")))?;
        let Some(leaf) = chain.first() else {
            return Err(error(format!("{cert_file} holds no certificate")));
        };
        let (names, not_before, not_after) = leaf_facts(leaf).map_err(|why| error(format!("{cert_file}: {why}")))?;
        let key_file = files.key.display();
        let pem = std::fs::read(&files.key).map_err(|e| error(format!("cannot read {key_file}: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| error(format!("{key_file} is not a PEM private key: {e:?}")))?;
        let signing_key = any_supported_type(&key).map_err(|e| error(format!("{key_file}: {e}")))?;
        let key = CertifiedKey::new(chain, signing_key);
        key.keys_match().map_err(|e| error(format!("{key_file} does not belong to {cert_file}: {e}")))?;
        Ok(Certificate { files: files.clone(), names, not_before, not_after, key: Arc::new(key) })
    }

    /// Whether this certificate names `host` (lower-case): exactly, or by a `*.` wildcard
    /// standing for exactly one label.
    fn names_exactly(&self, host: &str) -> bool {
        self.names.iter().any(|name| name == host)
    }

    fn names_by_wildcard(&self, host: &str) -> bool {
        let Some((_, parent)) = host.split_once('.') else { return false };
        self.names.iter().any(|name| name.strip_prefix("*.") == Some(parent))
    }
}

/// The leaf's subject alternative names (or, without any, its common name) and its validity.
fn leaf_facts(leaf: &CertificateDer) -> Result<(Vec<String>, i64, i64), String> {
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| format!("not a valid X.509 certificate ({e})"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => names.extend(ip_text(bytes)),
                _ => {}
            }
        }
    }
    if names.is_empty() {
        let common = cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok());
        names.extend(common.map(str::to_ascii_lowercase));
    }
    let validity = cert.validity();
    Ok((names, validity.not_before.timestamp(), validity.not_after.timestamp()))
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

/// Picks a listener's certificate for each handshake by the name the client asked for.
#[derive(Debug)]
pub struct SniResolver {
    /// In the configured order; the first is the default. Empty only while an ACME
    /// certificate is pending: then every handshake fails, with a logged reason.
    pub certificates: Vec<Certificate>,
    /// For an ACME listener: its names, for the log while no certificate is there yet.
    pub acme_names: Vec<String>,
    /// When a refused handshake was last logged (seconds since the Unix epoch), so that the
    /// log says it at most once a minute.
    refused_logged: AtomicI64,
    /// For an ACME listener that answers TLS-ALPN-01: the challenges being validated.
    challenges: Option<Arc<Challenges>>,
}

impl SniResolver {
    pub fn new(
        certificates: Vec<Certificate>,
        acme_names: Vec<String>,
        challenges: Option<Arc<Challenges>>,
    ) -> SniResolver {
        SniResolver { certificates, acme_names, refused_logged: AtomicI64::new(i64::MIN), challenges }
    }

    /// For a TLS-ALPN-01 validation handshake (one that offers only `acme-tls/1`): the
    /// challenge certificate for its name, if one is pending. `None` for other handshakes.
    fn challenge_answer(&self, client_hello: &ClientHello<'_>) -> Option<Option<Arc<CertifiedKey>>> {
        let challenges = self.challenges.as_ref()?;
        let mut offered = client_hello.alpn()?;
        if !offered.all(|protocol| protocol == ACME_TLS_ALPN) {
            return None;
        }
        let name = client_hello.server_name()?.trim_end_matches('.').to_ascii_lowercase();
        Some(challenges.alpn_certificate(&name))
    }

    /// The certificate for a client that asked for `server_name` (any case), or the default;
    /// `None` only while an ACME certificate is pending.
    pub fn pick(&self, server_name: Option<&str>) -> Option<&Certificate> {
        let host = server_name.map(|name| name.trim_end_matches('.').to_ascii_lowercase());
        let chosen = host.and_then(|host| {
            self.certificates
                .iter()
                .find(|c| c.names_exactly(&host))
                .or_else(|| self.certificates.iter().find(|c| c.names_by_wildcard(&host)))
        });
        chosen.or_else(|| self.certificates.first())
    }

    fn log_refused(&self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let last = self.refused_logged.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60 && self.refused_logged.swap(now, Ordering::Relaxed) == last {
            warn!(
                "TLS handshake refused: the ACME certificate for {} is still pending (see /stats and the acme log lines)",
                self.acme_names.join(", ")
            );
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(answer) = self.challenge_answer(&client_hello) {
            return answer;
        }
        let picked = self.pick(client_hello.server_name()).map(|c| Arc::clone(&c.key));
        if picked.is_none() {
            self.log_refused();
        }
        picked
    }
}
