//! What can go wrong while talking to an ACME authority: its problem documents (RFC 8555
//! section 6.7, RFC 7807: `type`, `detail`, `status` and the `subproblems` per name), and
//! [`AcmeError`], which says during which step it happened. Logged whole, shown by `/stats`.

use crate::config::ConfigError;
use serde_json::Value;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// A problem document from the authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `type`, such as `urn:ietf:params:acme:error:rateLimited`.
    pub kind: String,
    pub detail: String,
    pub status: Option<u16>,
    pub subproblems: Vec<Subproblem>,
}

/// One name's part of a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subproblem {
    pub kind: String,
    pub detail: String,
    /// The identifier's value, such as `www.example.com`.
    pub identifier: Option<String>,
}

const BAD_NONCE: &str = "urn:ietf:params:acme:error:badNonce";

impl Problem {
    /// Reads a problem document out of `value`; `None` when it has no `type`.
    pub fn from_json(value: &Value) -> Option<Problem> {
        let kind = value.get("type")?.as_str()?.to_string();
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let subproblems = value
            .get("subproblems")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|s| Subproblem {
                        kind: text(s, "type"),
                        detail: text(s, "detail"),
                        identifier: s.pointer("/identifier/value").and_then(Value::as_str).map(str::to_string),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let status = value.get("status").and_then(Value::as_u64).and_then(|s| u16::try_from(s).ok());
        Some(Problem { kind, detail: text(value, "detail"), status, subproblems })
    }

    /// Reads a problem document out of a response body.
    pub fn from_body(body: &[u8]) -> Option<Problem> {
        Problem::from_json(&serde_json::from_slice(body).ok()?)
    }

    /// The nonce was refused: the request may be sent again with a fresh one.
    pub fn is_bad_nonce(&self) -> bool {
        self.kind == BAD_NONCE
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(status) = self.status {
            write!(f, " ({status})")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        for sub in &self.subproblems {
            let name = sub.identifier.as_deref().unwrap_or("?");
            write!(f, "; {name}: {}: {}", sub.kind, sub.detail)?;
        }
        Ok(())
    }
}

/// Why obtaining a certificate failed.
#[derive(Debug)]
pub enum AcmeError {
    /// The authority refused with a problem document (rate limit, failed challenge, ...).
    Problem { during: String, problem: Problem },
    /// The authority could not be reached or the exchange broke off.
    Transport { during: String, url: String, error: String },
    /// The authority's answer is not what RFC 8555 says it should be.
    Protocol { during: String, what: String },
    /// Waited too long for the authority to finish a step.
    TimedOut { during: String },
    /// The account key or certificate could not be read or written.
    Storage { path: PathBuf, error: io::Error },
    /// A key, signature, certificate request or certificate could not be made or read.
    Crypto(String),
    /// The certificate was stored but the TLS settings could not be read again to use it
    /// (another listener's certificate file is broken, say); it is used after the next reload.
    Swap(ConfigError),
    /// sluice is stopping.
    Stopping,
}

impl fmt::Display for AcmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcmeError::Problem { during, problem } => write!(f, "{during}: the authority answered {problem}"),
            AcmeError::Transport { during, url, error } => write!(f, "{during}: cannot reach {url}: {error}"),
            AcmeError::Protocol { during, what } => write!(f, "{during}: unexpected answer: {what}"),
            AcmeError::TimedOut { during } => write!(f, "{during}: the authority did not finish in time"),
            AcmeError::Storage { path, error } => write!(f, "cannot use {}: {error}", path.display()),
            AcmeError::Crypto(what) => write!(f, "{what}"),
            AcmeError::Swap(e) => write!(f, "stored, but the TLS settings cannot be read again to use it: {e}"),
            AcmeError::Stopping => write!(f, "stopped"),
        }
    }
}

impl std::error::Error for AcmeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AcmeError::Storage { error, .. } => Some(error),
            AcmeError::Swap(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_show_type_status_detail_and_each_subproblem() {
        let body = br#"{"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": "some names refused",
            "status": 400, "subproblems": [{"type": "urn:ietf:params:acme:error:caa", "detail": "CAA forbids",
            "identifier": {"type": "dns", "value": "b.example"}}]}"#;
        let problem = Problem::from_body(body).unwrap();
        assert_eq!(
            problem.to_string(),
            "urn:ietf:params:acme:error:rejectedIdentifier (400): some names refused; \
             b.example: urn:ietf:params:acme:error:caa: CAA forbids"
        );
        assert!(!problem.is_bad_nonce());
        assert!(Problem::from_body(b"{\"detail\": \"no type\"}").is_none());
    }
}
