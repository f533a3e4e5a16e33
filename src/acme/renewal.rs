//! The `sluice-acme` thread: keeps a certificate for every listener with `"tls": {"acme":
//! [names]}`. Once a [`TICK`] it looks at the running snapshot; a certificate is due when the
//! listener has none (pending) or two thirds of the served one's lifetime have passed. A due
//! certificate is ordered (`order`), stored (`storage`) and swapped in: the TLS set is read
//! again for the running file and replaces the snapshot's, the path a reload takes, so new
//! handshakes use it and open connections keep theirs. A failure is logged with the
//! authority's problem document, shown by `/stats` and tried again after a jittered backoff
//! (1 minute, doubling up to 6 hours). Raises `certificate_renewed` and
//! `certificate_renewal_failed`. Started by `server`; stops when sluice stops.

use super::client::AcmeClient;
use super::order::{self, Method, Responder, Wait};
use super::problem::AcmeError;
use super::schedule::{at, renewal_time, retry_delay, Validity};
use super::storage;
use crate::config::{AcmeConfig, CertificateFiles, Config};
use crate::ops::alerts::{AlertEvent, AlertKind};
use crate::runtime::{Runtime, State};
use crate::tls::certificate::Certificate;
use crate::tls::TlsSet;
use log::{error, info};
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the thread looks whether a certificate is due.
pub const TICK: Duration = Duration::from_secs(1);

/// What the thread remembers about one certificate between ticks.
#[derive(Default)]
struct Plan {
    failures: u32,
    /// After a failure: not before this.
    retry_at: Option<SystemTime>,
}

pub fn spawn(runtime: Arc<Runtime>) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name("sluice-acme".into()).spawn(move || {
        let mut plans: HashMap<Vec<String>, Plan> = HashMap::new();
        loop {
            keep_certificates(&runtime, &mut plans);
            if runtime.sleep_unless_stopping(TICK) {
                return;
            }
        }
    })
}

/// One tick: updates every certificate's status and orders those that are due.
fn keep_certificates(runtime: &Runtime, plans: &mut HashMap<Vec<String>, Plan>) {
    let state = runtime.state();
    let wanted = managed(&state);
    runtime.certificates.retain(&wanted.iter().map(|(names, _)| names.clone()).collect::<Vec<_>>());
    plans.retain(|names, _| wanted.iter().any(|(n, _)| n == names));
    let Some(acme) = state.config.acme.clone() else { return };
    drop(state);
    for (names, served) in wanted {
        let plan = plans.entry(names.clone()).or_default();
        let renew_at = served.map(renewal_time).unwrap_or(UNIX_EPOCH);
        let due = plan.retry_at.map_or(renew_at, |retry| retry.max(renew_at));
        runtime.certificates.update(&names, |s| {
            s.valid = served.is_some();
            s.not_after = served.map(|v| at(v.not_after));
            s.next_order = Some(due.max(SystemTime::now()));
            if !s.valid && s.problem.is_none() {
                s.problem = Some(format!("no certificate yet: ordering one from {}", acme.directory));
            }
        });
        if SystemTime::now() >= due && !runtime.is_stopping() {
            renew(runtime, &acme, &names, plan);
        }
    }
}

/// Every distinct list of ACME names among the listeners, with the validity of the
/// certificate served for it, if any.
fn managed(state: &State) -> Vec<(Vec<String>, Option<Validity>)> {
    let mut out: Vec<(Vec<String>, Option<Validity>)> = Vec::new();
    for (i, listener) in state.config.listeners.iter().enumerate() {
        let Some(tls) = listener.tls.as_ref().filter(|t| !t.acme.is_empty()) else { continue };
        if out.iter().any(|(names, _)| *names == tls.acme) {
            continue;
        }
        let resolver = state.tls.certificates.get(i).cloned().flatten();
        let served = resolver.and_then(|r| {
            r.certificates.first().map(|c| Validity { not_before: c.not_before, not_after: c.not_after })
        });
        out.push((tls.acme.clone(), served));
    }
    out
}

/// Orders, stores and swaps in a certificate for `names`; on failure logs, alerts and plans
/// the next try.
fn renew(runtime: &Runtime, acme: &AcmeConfig, names: &[String], plan: &mut Plan) {
    let list = names.join(", ");
    runtime.certificates.update(names, |s| s.orders += 1);
    info!("acme: ordering a certificate for {list} from {}", acme.directory);
    let wait = |pause: Duration| runtime.sleep_unless_stopping(pause);
    match issue(runtime, acme, names, &wait) {
        Ok(certificate) => {
            *plan = Plan::default();
            let expires = at(certificate.not_after);
            let detail = format!("expires {}", crate::ops::time::rfc3339_seconds(expires));
            info!("acme: certificate for {list} obtained and in use ({detail})");
            runtime.certificates.update(names, |s| {
                s.valid = true;
                s.problem = None;
                s.not_after = Some(expires);
            });
            runtime.alerts.raise(AlertEvent::certificate(AlertKind::CertificateRenewed, names, &detail));
        }
        Err(AcmeError::Stopping) => {}
        Err(e) => {
            plan.failures += 1;
            let delay = retry_delay(plan.failures, jitter());
            plan.retry_at = Some(SystemTime::now() + delay);
            let problem = e.to_string();
            error!("acme: no certificate for {list}: {problem}; trying again in {}s", delay.as_secs());
            runtime.certificates.update(names, |s| {
                s.failures += 1;
                s.problem = Some(problem.clone());
            });
            runtime.alerts.raise(AlertEvent::certificate(AlertKind::CertificateRenewalFailed, names, &problem));
        }
    }
}

/// Gets a certificate for `names` from the authority, stores it and puts it in service.
fn issue(runtime: &Runtime, acme: &AcmeConfig, names: &[String], wait: Wait) -> Result<Certificate, AcmeError> {
    let key = storage::account_key(acme)?;
    let mut client = AcmeClient::open(acme, key)?;
    let responder = Responder { challenges: &runtime.challenges, method: challenge_method(&runtime.state().config) };
    let issued = order::obtain(&mut client, names, &responder, wait)?;
    let files = storage::store(acme, names, &issued)?;
    let certificate = check_stored(&files, names)?;
    runtime
        .change_state(|current| TlsSet::load(&current.file, &runtime.challenges).map(|tls| (current.with_tls(tls), ())))
        .map_err(AcmeError::Swap)?;
    Ok(certificate)
}

/// HTTP-01 where a plain http listener can answer it, else TLS-ALPN-01 in the TLS listeners'
/// handshakes.
fn challenge_method(config: &Config) -> Method {
    if super::answers_http01(config) {
        Method::Http01
    } else {
        Method::TlsAlpn01
    }
}

/// Reads a stored certificate back: it must load and name every name ordered.
fn check_stored(files: &CertificateFiles, names: &[String]) -> Result<Certificate, AcmeError> {
    let certificate = Certificate::load(files, "acme").map_err(|e| AcmeError::Crypto(e.problem))?;
    match names.iter().find(|n| !certificate.names.contains(n)) {
        Some(missing) => Err(AcmeError::Crypto(format!("the issued certificate does not name {missing}"))),
        None => Ok(certificate),
    }
}

/// A random number from 0 to 1.
fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}
