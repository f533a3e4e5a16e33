//! One session with an ACME authority over blocking HTTPS (ureq on rustls with the aws-lc-rs
//! provider): the directory, replay nonces, signed POSTs (retried once more for each
//! `badNonce`, as RFC 8555 section 6.5 allows) and the account (created, or found again by
//! its key). Trusts the system roots plus `acme.directoryCa`. Used only by the renewal
//! thread, one request at a time.

use super::jws::AccountKey;
use super::problem::{AcmeError, Problem};
use crate::config::AcmeConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use ureq::Agent;

/// Longest one request may take, from connecting to the end of the body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest body read from the authority (a certificate chain is a few KiB).
const MAX_BODY_BYTES: u64 = 1 << 20;
/// How often a request is sent again after `badNonce`.
const NONCE_RETRIES: usize = 5;

/// The authority's answer to one request.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `Location`: the URL of what was created (account, order).
    pub location: Option<String>,
    /// `Retry-After` in seconds, when given.
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self, during: &str) -> Result<Value, AcmeError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| AcmeError::Protocol { during: during.to_string(), what: format!("not JSON: {e}") })
    }
}

/// The URLs of the directory that sluice uses.
struct Directory {
    new_nonce: String,
    new_account: String,
    new_order: String,
}

pub struct AcmeClient {
    agent: Agent,
    directory: Directory,
    key: AccountKey,
    /// The account URL, once the account is known.
    kid: Option<String>,
    nonce: Option<String>,
}

impl AcmeClient {
    /// Reads the directory at `config.directory` and registers (or finds) the account of `key`,
    /// agreeing to the terms of service.
    pub fn open(config: &AcmeConfig, key: AccountKey) -> Result<AcmeClient, AcmeError> {
        let agent = agent(config)?;
        let directory = read_directory(&agent, &config.directory)?;
        let mut client = AcmeClient { agent, directory, key, kid: None, nonce: None };
        client.register(config.email.as_deref())?;
        Ok(client)
    }

    /// The key authorization for a challenge `token`: what HTTP-01 serves.
    pub fn key_authorization(&self, token: &str) -> String {
        format!("{token}.{}", self.key.thumbprint())
    }

    pub fn new_order_url(&self) -> String {
        self.directory.new_order.clone()
    }

    fn register(&mut self, email: Option<&str>) -> Result<(), AcmeError> {
        let mut payload = json!({"termsOfServiceAgreed": true});
        if let Some(email) = email {
            payload["contact"] = json!([format!("mailto:{email}")]);
        }
        let url = self.directory.new_account.clone();
        let answer = self.post("registering the account", &url, Some(&payload))?;
        let kid = answer.location.ok_or_else(|| AcmeError::Protocol {
            during: "registering the account".into(),
            what: "no Location for the account".into(),
        })?;
        self.kid = Some(kid);
        Ok(())
    }

    /// A signed POST of `payload` (`None`: POST-as-GET) to `url`; a problem document from the
    /// authority is the error.
    pub fn post(&mut self, during: &str, url: &str, payload: Option<&Value>) -> Result<Answer, AcmeError> {
        let mut tries = 0;
        loop {
            let nonce = self.take_nonce(during)?;
            let body = self.key.sign(url, &nonce, self.kid.as_deref(), payload).map_err(AcmeError::Crypto)?;
            let answer = self.send(during, url, body)?;
            if answer.status < 400 {
                return Ok(answer);
            }
            let problem = Problem::from_body(&answer.body).unwrap_or_else(|| Problem {
                kind: format!("HTTP {}", answer.status),
                detail: String::from_utf8_lossy(&answer.body).chars().take(200).collect(),
                status: Some(answer.status),
                subproblems: Vec::new(),
            });
            tries += 1;
            if !(problem.is_bad_nonce() && tries <= NONCE_RETRIES) {
                return Err(AcmeError::Problem { during: during.to_string(), problem });
            }
        }
    }

    fn send(&mut self, during: &str, url: &str, body: String) -> Result<Answer, AcmeError> {
        let transport =
            |e: ureq::Error| AcmeError::Transport { during: during.into(), url: url.into(), error: e.to_string() };
        let mut response = self
            .agent
            .post(url)
            .header("Content-Type", "application/jose+json")
            .send(body.as_bytes())
            .map_err(transport)?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        if let Some(nonce) = header("Replay-Nonce") {
            self.nonce = Some(nonce);
        }
        let location = header("Location");
        let retry_after = header("Retry-After").and_then(|s| s.trim().parse::<u64>().ok()).map(Duration::from_secs);
        let status = response.status().as_u16();
        let body = response.body_mut().with_config().limit(MAX_BODY_BYTES).read_to_vec().map_err(transport)?;
        Ok(Answer { status, location, retry_after, body })
    }

    /// The nonce the last answer carried, or a fresh one from `newNonce`.
    fn take_nonce(&mut self, during: &str) -> Result<String, AcmeError> {
        if let Some(nonce) = self.nonce.take() {
            return Ok(nonce);
        }
        let url = &self.directory.new_nonce;
        let transport =
            |e: ureq::Error| AcmeError::Transport { during: during.into(), url: url.clone(), error: e.to_string() };
        let response = self.agent.head(url).call().map_err(transport)?;
        let nonce = response.headers().get("Replay-Nonce").and_then(|v| v.to_str().ok());
        nonce.map(str::to_string).ok_or_else(|| AcmeError::Protocol {
            during: during.to_string(),
            what: format!("{url} gave no Replay-Nonce"),
        })
    }
}

/// A blocking HTTPS client that trusts the system roots and `acme.directoryCa`.
fn agent(config: &AcmeConfig) -> Result<Agent, AcmeError> {
    let mut roots: Vec<Certificate<'static>> = Vec::new();
    for der in rustls_native_certs::load_native_certs().certs {
        roots.push(Certificate::from_der(der.as_ref()).to_owned());
    }
    if let Some(path) = &config.directory_ca {
        let pem = std::fs::read(path).map_err(|error| AcmeError::Storage { path: path.clone(), error })?;
        let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| AcmeError::Crypto(format!("{}: not PEM certificates: {e:?}", path.display())))?;
        if certs.is_empty() {
            return Err(AcmeError::Crypto(format!("{}: holds no certificate", path.display())));
        }
        roots.extend(certs.iter().map(|der| Certificate::from_der(der.as_ref()).to_owned()));
    }
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .build();
    Ok(Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent())
}

fn read_directory(agent: &Agent, url: &str) -> Result<Directory, AcmeError> {
    let during = "reading the directory";
    let transport =
        |e: ureq::Error| AcmeError::Transport { during: during.into(), url: url.into(), error: e.to_string() };
    let mut response = agent.get(url).call().map_err(transport)?;
    let status = response.status().as_u16();
    let body = response.body_mut().with_config().limit(MAX_BODY_BYTES).read_to_vec().map_err(transport)?;
    if status != 200 {
        return Err(AcmeError::Protocol { during: during.into(), what: format!("{url} answered {status}") });
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| AcmeError::Protocol { during: during.into(), what: format!("not JSON: {e}") })?;
    let field = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| AcmeError::Protocol { during: during.into(), what: format!("the directory has no {key:?}") })
    };
    Ok(Directory { new_nonce: field("newNonce")?, new_account: field("newAccount")?, new_order: field("newOrder")? })
}
