//! One certificate order (RFC 8555 section 7.4): new order for the names, each
//! authorization's challenge (HTTP-01, or TLS-ALPN-01 of RFC 8737 where no plain http
//! listener is there) published and answered, polled until valid, a fresh
//! P-256 key and its request (CSR, made with rcgen) sent to finalize, the order polled until
//! the certificate is ready, and the chain downloaded. Runs on the renewal thread; every wait
//! is bounded and ends early when sluice stops.

use super::challenges::Challenges;
use super::client::{AcmeClient, Answer};
use super::jws::base64url;
use super::problem::{AcmeError, Problem};
use aws_lc_rs::digest::{digest, SHA256};
use rcgen::{CertificateParams, CustomExtension, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// How often an authorization or order is looked at again while the authority works, unless
/// it asks for another pace with `Retry-After` (then at most [`MAX_POLL_INTERVAL`]).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// How many times one authorization or order is looked at before giving up.
const MAX_POLLS: usize = 60;

/// A new certificate: its chain and private key, both PEM.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// Sleeps for the given time; true when sluice is stopping (then the order is given up).
pub type Wait<'a> = &'a dyn Fn(Duration) -> bool;

/// Which challenge sluice answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// On the plain http listeners (port 80).
    Http01,
    /// In the TLS listeners' handshakes (port 443), when no plain http listener is there.
    TlsAlpn01,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Http01 => "http-01",
            Method::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// Where and how challenges are answered.
pub struct Responder<'a> {
    pub challenges: &'a Challenges,
    pub method: Method,
}

/// Orders a certificate for `names` and waits for it.
pub fn obtain(
    client: &mut AcmeClient,
    names: &[String],
    responder: &Responder,
    wait: Wait,
) -> Result<Issued, AcmeError> {
    let identifiers: Vec<Value> = names.iter().map(|n| json!({"type": "dns", "value": n})).collect();
    let url = client.new_order_url();
    let created = client.post("placing the order", &url, Some(&json!({"identifiers": identifiers})))?;
    let order_url =
        created.location.clone().ok_or_else(|| protocol("placing the order", "no Location for the order"))?;
    let order = created.json("placing the order")?;
    for authorization in strings(&order, "authorizations") {
        authorize(client, &authorization, responder, wait)?;
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| AcmeError::Crypto(e.to_string()))?;
    let csr = CertificateParams::new(names.to_vec())
        .and_then(|params| params.serialize_request(&key))
        .map_err(|e| AcmeError::Crypto(format!("cannot make the certificate request: {e}")))?;
    let finalize = text(&order, "finalize", "placing the order")?;
    client.post("finalizing the order", &finalize, Some(&json!({"csr": base64url(csr.der())})))?;
    let order = poll(client, &order_url, "waiting for the certificate", wait, &["processing", "pending", "ready"])?;
    let certificate = text(&order, "certificate", "waiting for the certificate")?;
    let chain = client.post("downloading the certificate", &certificate, None)?;
    let chain_pem = String::from_utf8(chain.body)
        .map_err(|_| protocol("downloading the certificate", "the chain is not PEM text"))?;
    Ok(Issued { chain_pem, key_pem: key.serialize_pem() })
}

/// Answers one authorization's challenge the way `responder` says and waits until the
/// authority saw it.
fn authorize(client: &mut AcmeClient, url: &str, responder: &Responder, wait: Wait) -> Result<(), AcmeError> {
    let authorization = client.post("reading an authorization", url, None)?.json("reading an authorization")?;
    let name = authorization.pointer("/identifier/value").and_then(Value::as_str).unwrap_or("?").to_string();
    if authorization["status"] == "valid" {
        return Ok(());
    }
    let during = format!("validating {name}");
    let kind = responder.method.name();
    let challenge = authorization["challenges"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == kind))
        .ok_or_else(|| protocol(&during, &format!("the authority offers no {kind} challenge")))?;
    let token = text(challenge, "token", &during)?;
    let challenge_url = text(challenge, "url", &during)?;
    let key_authorization = client.key_authorization(&token);
    let _published = match responder.method {
        Method::Http01 => responder.challenges.publish(&token, key_authorization),
        Method::TlsAlpn01 => responder.challenges.publish_alpn(&name, alpn_certificate(&name, &key_authorization)?),
    };
    client.post(&during, &challenge_url, Some(&json!({})))?;
    let done = poll(client, url, &during, wait, &["pending"])?;
    match done["status"].as_str() {
        Some("valid") => Ok(()),
        _ => Err(failed_challenge(&done, &during)),
    }
}

/// The self-signed certificate a TLS-ALPN-01 handshake for `name` is answered with: the name
/// and, in the critical acmeIdentifier extension, SHA-256 of the key authorization (RFC 8737).
fn alpn_certificate(name: &str, key_authorization: &str) -> Result<Arc<CertifiedKey>, AcmeError> {
    let crypto = |e: String| AcmeError::Crypto(format!("cannot make the tls-alpn-01 certificate for {name}: {e}"));
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| crypto(e.to_string()))?;
    let mut params = CertificateParams::new(vec![name.to_string()]).map_err(|e| crypto(e.to_string()))?;
    let digest = digest(&SHA256, key_authorization.as_bytes());
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest.as_ref())];
    let cert = params.self_signed(&key).map_err(|e| crypto(e.to_string()))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = any_supported_type(&der).map_err(|e| crypto(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing_key)))
}

/// Looks at `url` until its status leaves `waiting_in`; an `invalid` status is the error.
fn poll(client: &mut AcmeClient, url: &str, during: &str, wait: Wait, waiting_in: &[&str]) -> Result<Value, AcmeError> {
    for _ in 0..MAX_POLLS {
        let answer = client.post(during, url, None)?;
        let value = answer.json(during)?;
        let status = value["status"].as_str().unwrap_or_default();
        if status == "invalid" {
            return Err(failed_challenge(&value, during));
        }
        if !waiting_in.contains(&status) {
            return Ok(value);
        }
        if wait(pause(&answer)) {
            return Err(AcmeError::Stopping);
        }
    }
    Err(AcmeError::TimedOut { during: during.to_string() })
}

fn pause(answer: &Answer) -> Duration {
    answer.retry_after.unwrap_or(POLL_INTERVAL).clamp(POLL_INTERVAL, MAX_POLL_INTERVAL)
}

/// The problem an invalid authorization or order carries: its own `error`, or that of its
/// failed challenge.
fn failed_challenge(value: &Value, during: &str) -> AcmeError {
    let from_challenge = value["challenges"].as_array().and_then(|list| list.iter().find_map(|c| c.get("error")));
    let problem = value.get("error").or(from_challenge).and_then(Problem::from_json);
    match problem {
        Some(problem) => AcmeError::Problem { during: during.to_string(), problem },
        None => protocol(during, &format!("status {} without a problem document", value["status"])),
    }
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    value[key].as_array().map(|l| l.iter().filter_map(Value::as_str).map(str::to_string).collect()).unwrap_or_default()
}

fn text(value: &Value, key: &str, during: &str) -> Result<String, AcmeError> {
    value[key].as_str().map(str::to_string).ok_or_else(|| protocol(during, &format!("no {key:?}")))
}

fn protocol(during: &str, what: &str) -> AcmeError {
    AcmeError::Protocol { during: during.to_string(), what: what.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_authorization_reports_its_challenge_problem() {
        let authorization = json!({"status": "invalid", "identifier": {"value": "a.example"}, "challenges": [
            {"type": "http-01", "status": "invalid", "error": {"type": "urn:ietf:params:acme:error:connection",
             "detail": "refused", "status": 400}}]});
        let error = failed_challenge(&authorization, "validating a.example");
        assert_eq!(
            error.to_string(),
            "validating a.example: the authority answered urn:ietf:params:acme:error:connection (400): refused"
        );
    }
}
