//! What can go wrong on the backend side of an exchange: which status the client gets, whether
//! the client connection must close, and the retry rule that says when a failed attempt may
//! be sent again.
//!
//! Retries follow the rule HAProxy and Envoy state: a request goes to another attempt only
//! while it cannot have been acted on twice ([`after_failure`] decides). A failed connect sent
//! nothing, so any request moves to the next backend. A connection that dies before any
//! response byte may have delivered the request, so only a replayable one (idempotent method,
//! no body: a streamed body is gone) is sent again: on a fresh connection to the same backend
//! when a reused idle connection died (the backend had closed it), on the next backend when a
//! fresh one did. Once a response byte has come back, or a request body has started to flow,
//! nothing is retried.
//!
//! Pure: `proxy` and `tcp` decide with it and turn it into an answer or a log status.

use std::fmt;
use std::io;
use std::time::Duration;

/// How far an attempt got before its connection failed; no response byte had arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No connection could be made: nothing was sent.
    Connect,
    /// The connection failed while sending the request or waiting for the response head;
    /// `reused` says it came from the idle set (so the backend may just have closed it).
    BeforeResponse { reused: bool },
}

/// Where an exchange goes after a failure at some [`Stage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    NewConnectionSameBackend,
    OtherBackend,
    /// Answer 502: the request may have been acted on and cannot be sent again.
    GiveUp,
}

/// The retry rule. `replayable`: the method is idempotent and there is no body.
pub fn after_failure(stage: Stage, replayable: bool) -> NextStep {
    match stage {
        Stage::Connect => NextStep::OtherBackend,
        Stage::BeforeResponse { reused: true } if replayable => NextStep::NewConnectionSameBackend,
        Stage::BeforeResponse { reused: false } if replayable => NextStep::OtherBackend,
        Stage::BeforeResponse { .. } => NextStep::GiveUp,
    }
}

/// Why the pool picked no backend (`Pool::acquire`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// No backend is in service (or every one was tried already).
    Unavailable,
    /// Every candidate stayed at its `maxConnections` for the whole `timeouts.queue`.
    QueueTimedOut,
}

/// Why an exchange got no response from a backend.
#[derive(Debug)]
pub enum BackendError {
    /// No backend is in service (none healthy, or all drained); the client may try again
    /// after about one health-check interval.
    Unavailable { retry_after_secs: u64 },
    /// Every candidate stayed at its `maxConnections` for the whole `timeouts.queue`.
    QueueTimedOut,
    /// Every backend tried (up to the pool's `retries`) failed before taking the request.
    Unreachable,
    /// As `Unreachable`, the last one because its TLS certificate was not trusted.
    Untrusted,
    /// The connection failed at `stage`, before any response byte, and the retry rule says
    /// the request must not be sent again.
    Failed { stage: Stage, error: io::Error },
    /// The backend failed while the request body was being sent to it.
    BodyNotTaken(io::Error),
    /// No response head within `timeouts.backend`.
    TimedOut(Duration),
    /// The response head or its framing broke HTTP's rules.
    InvalidResponse(String),
}

impl BackendError {
    /// No slot in the pool, on the first attempt (`tried_any` false) or after failed ones.
    pub fn from_no_slot(why: NoSlot, tried_any: bool, retry_after_secs: u64) -> BackendError {
        match why {
            NoSlot::QueueTimedOut => BackendError::QueueTimedOut,
            NoSlot::Unavailable if tried_any => BackendError::Unreachable,
            NoSlot::Unavailable => BackendError::Unavailable { retry_after_secs },
        }
    }

    /// The status the client gets.
    pub fn status(&self) -> u16 {
        match self {
            BackendError::Unavailable { .. } | BackendError::QueueTimedOut => 503,
            BackendError::TimedOut(_) => 504,
            BackendError::Unreachable
            | BackendError::Untrusted
            | BackendError::Failed { .. }
            | BackendError::BodyNotTaken(_)
            | BackendError::InvalidResponse(_) => 502,
        }
    }

    /// The short text of sluice's answer.
    pub fn detail(&self) -> &'static str {
        match self {
            BackendError::Unavailable { .. } => "no backend available",
            BackendError::QueueTimedOut => "every backend is at its connection limit",
            BackendError::Unreachable => "no backend could be reached",
            BackendError::Untrusted => "the backend's TLS certificate is not trusted",
            BackendError::Failed { .. } => "backend closed the connection before answering",
            BackendError::BodyNotTaken(_) => "backend failed while receiving the request",
            BackendError::TimedOut(_) => "backend did not answer in time",
            BackendError::InvalidResponse(_) => "backend sent an invalid response",
        }
    }

    /// The `Retry-After` seconds sluice sends with a 503.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            BackendError::Unavailable { retry_after_secs } => Some(*retry_after_secs),
            BackendError::QueueTimedOut => Some(1),
            _ => None,
        }
    }

    /// Whether the client connection must close after the answer: when the backend broke off
    /// mid-exchange, sluice no longer knows where the request's bytes ended.
    pub fn closes_connection(&self) -> bool {
        !matches!(
            self,
            BackendError::Unavailable { .. }
                | BackendError::QueueTimedOut
                | BackendError::Unreachable
                | BackendError::Untrusted
        )
    }
}

/// Whether a connection failed because the backend's TLS certificate was not trusted.
pub fn is_untrusted_certificate(error: &io::Error) -> bool {
    let inner = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    matches!(inner, Some(rustls::Error::InvalidCertificate(_)))
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Failed { stage: Stage::Connect, error } => write!(f, "cannot connect: {error}"),
            BackendError::Failed { error, .. } => write!(f, "connection failed before a response: {error}"),
            BackendError::BodyNotTaken(error) => write!(f, "failed while receiving the request body: {error}"),
            BackendError::TimedOut(wait) => write!(f, "no response within {wait:?}"),
            BackendError::InvalidResponse(why) => write!(f, "invalid response: {why}"),
            other => f.write_str(other.detail()),
        }
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BackendError::Failed { error, .. } | BackendError::BodyNotTaken(error) => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_rule() {
        use NextStep::*;
        let fresh = Stage::BeforeResponse { reused: false };
        let reused = Stage::BeforeResponse { reused: true };
        // (where it failed, idempotent without a body, what happens next)
        let table = [
            (Stage::Connect, true, OtherBackend),
            (Stage::Connect, false, OtherBackend),
            (reused, true, NewConnectionSameBackend),
            (reused, false, GiveUp),
            (fresh, true, OtherBackend),
            (fresh, false, GiveUp),
        ];
        for (stage, replayable, next) in table {
            assert_eq!(after_failure(stage, replayable), next, "{stage:?}, replayable: {replayable}");
        }
    }

    #[test]
    fn each_error_knows_its_status_and_whether_the_client_connection_survives() {
        let reset = || io::Error::from(io::ErrorKind::ConnectionReset);
        // (error, status, Retry-After, closes the client connection)
        let table = [
            (BackendError::from_no_slot(NoSlot::Unavailable, false, 2), 503, Some(2), false),
            (BackendError::from_no_slot(NoSlot::QueueTimedOut, false, 2), 503, Some(1), false),
            (BackendError::from_no_slot(NoSlot::Unavailable, true, 2), 502, None, false),
            (BackendError::Untrusted, 502, None, false),
            (BackendError::Failed { stage: Stage::BeforeResponse { reused: false }, error: reset() }, 502, None, true),
            (BackendError::BodyNotTaken(reset()), 502, None, true),
            (BackendError::TimedOut(Duration::from_secs(1)), 504, None, true),
            (BackendError::InvalidResponse("bad".into()), 502, None, true),
        ];
        for (error, status, retry_after, closes) in table {
            assert_eq!(error.status(), status, "{error}");
            assert_eq!(error.retry_after_secs(), retry_after, "{error}");
            assert_eq!(error.closes_connection(), closes, "{error}");
        }
    }
}
