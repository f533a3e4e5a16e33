//! A route's `host` condition: read from the configuration and matched against the host a
//! request names (case-insensitively; `*.example.com` is exactly one more label).

use std::fmt;

/// A route's `host` condition, lower-cased when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`: this host only.
    Exact(String),
    /// `*.example.com`, kept as `.example.com`: one label, then this suffix.
    OneLevelUnder(String),
}

impl HostMatch {
    /// Reads a `host` pattern as written in the configuration.
    pub fn parse(pattern: &str) -> Result<HostMatch, String> {
        let lower = pattern.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if name.contains('*') {
            return Err(format!("{pattern:?}: `*` may only be the whole first label, as in \"*.example.com\""));
        }
        if name.contains(':') && !name.starts_with('[') {
            return Err(format!("{pattern:?}: give the host without a port"));
        }
        if !is_host_name(name) {
            return Err(format!("{pattern:?} is not a host name such as \"example.com\" or \"*.example.com\""));
        }
        let name = name.strip_suffix('.').unwrap_or(name);
        Ok(if wildcard { HostMatch::OneLevelUnder(format!(".{name}")) } else { HostMatch::Exact(name.to_string()) })
    }

    /// Whether `host` (as `routing::request_host` gives it, in any case) meets this condition.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(name) => host.eq_ignore_ascii_case(name),
            HostMatch::OneLevelUnder(suffix) => {
                let Some(label_len) = host.len().checked_sub(suffix.len()) else { return false };
                let (label, rest) = host.as_bytes().split_at(label_len);
                rest.eq_ignore_ascii_case(suffix.as_bytes()) && !label.is_empty() && !label.contains(&b'.')
            }
        }
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(name) => f.write_str(name),
            HostMatch::OneLevelUnder(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// Letters, digits, `-`, `_` and dots between non-empty labels, or a bracketed IPv6 literal.
fn is_host_name(name: &str) -> bool {
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return !literal.is_empty() && literal.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_match_exact_names_and_one_level_of_subdomain() {
        let cases = [
            ("api.example.com", "api.example.com", true),
            ("API.Example.com", "api.example.com", true),
            ("api.example.com", "Api.EXAMPLE.com", true),
            ("*.example.com", "A.Example.COM", true),
            ("*.example.com", "a.example.co", false),
            ("api.example.com", "www.example.com", false),
            ("api.example.com", "example.com", false),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", "aexample.com", false),
            ("*.example.com", ".example.com", false),
            ("example.com.", "example.com", true),
            ("[::1]", "[::1]", true),
        ];
        for (pattern, host, expected) in cases {
            let m = HostMatch::parse(pattern).unwrap();
            assert_eq!(m.matches(host), expected, "{pattern} against {host}");
        }
    }

    #[test]
    fn host_patterns_are_checked() {
        for bad in ["", "*", "*.", "a.*.com", "*example.com", "example.com:80", "a b", "a..b", "ex/ample"] {
            assert!(HostMatch::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(HostMatch::parse("*.Example.COM").unwrap().to_string(), "*.example.com");
    }
}
