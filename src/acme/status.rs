//! What each automatic certificate is doing, for `/stats` and the log: pending (no
//! certificate yet, and why), valid (served, with its expiry and when it is renewed), and the
//! last failure with when it is tried again. Written by the renewal thread, read by the admin
//! API. A leaf.

use crate::lock;
use std::sync::Mutex;
use std::time::SystemTime;

/// One certificate's state, by its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateStatus {
    pub names: Vec<String>,
    /// A certificate is served (it may be renewing).
    pub valid: bool,
    /// Why it is pending, or the last failure of a renewal; `None` when all is well.
    pub problem: Option<String>,
    /// When the served certificate expires.
    pub not_after: Option<SystemTime>,
    /// When the next order is due (renewal, or the next try after a failure).
    pub next_order: Option<SystemTime>,
    /// Orders placed since start, and how many of them failed.
    pub orders: u64,
    pub failures: u64,
}

impl CertificateStatus {
    pub fn new(names: &[String]) -> CertificateStatus {
        CertificateStatus {
            names: names.to_vec(),
            valid: false,
            problem: None,
            not_after: None,
            next_order: None,
            orders: 0,
            failures: 0,
        }
    }

    /// `"valid"` or `"pending"`.
    pub fn state(&self) -> &'static str {
        if self.valid {
            "valid"
        } else {
            "pending"
        }
    }
}

#[derive(Default)]
pub struct CertificateStatuses {
    list: Mutex<Vec<CertificateStatus>>,
}

impl CertificateStatuses {
    pub fn snapshot(&self) -> Vec<CertificateStatus> {
        lock(&self.list).clone()
    }

    /// Changes the status of `names` (made when new) with `change`.
    pub fn update(&self, names: &[String], change: impl FnOnce(&mut CertificateStatus)) {
        let mut list = lock(&self.list);
        let index = match list.iter().position(|s| s.names == names) {
            Some(i) => i,
            None => {
                list.push(CertificateStatus::new(names));
                list.len() - 1
            }
        };
        change(&mut list[index]);
    }

    /// Keeps only the certificates in `wanted` (after a reload took some away).
    pub fn retain(&self, wanted: &[Vec<String>]) {
        lock(&self.list).retain(|s| wanted.contains(&s.names));
    }
}
