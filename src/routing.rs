//! Which route of an HTTP listener a request takes: pure matching of the `Host` header and
//! the request path against each route's `host` and `pathPrefix`, first match wins.
//!
//! Called by `runtime::State::route` once per request, and by `config` to read a route's
//! `host` pattern. No I/O, no shared state.
//!
//! - `host` matches the request's host case-insensitively, without its port and without a
//!   trailing dot. `*.example.com` matches exactly one more label: `a.example.com`, but not
//!   `example.com` or `a.b.example.com`.
//! - `pathPrefix` matches whole path segments: `/api` matches `/api`, `/api/x` and `/api?q`,
//!   not `/apix`. The query is never part of the match.
//! - A route with neither condition matches every request (the default).

use crate::config::RouteConfig;
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

    /// Whether `host` (as [`request_host`] gives it, in any case) meets this condition.
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

/// The host a request names, from its `Host` value: without port or trailing dot, in the
/// case the client sent (patterns match it case-insensitively).
pub fn request_host(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let host = if text.starts_with('[') {
        match text.find(']') {
            Some(end) => &text[..=end],
            None => return None,
        }
    } else {
        text.split(':').next().unwrap_or_default()
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// Reads a route's `pathPrefix`: it must start with `/`; a trailing `/` is dropped (except
/// for `/` itself), since matching is by whole segments anyway.
pub fn parse_path_prefix(prefix: &str) -> Result<String, String> {
    if !prefix.starts_with('/') {
        return Err(format!("{prefix:?} must start with `/`"));
    }
    if prefix.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#') {
        return Err(format!("{prefix:?} must be a path without spaces, control characters, `?` or `#`"));
    }
    let trimmed = prefix.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() })
}

/// Whether the request `target` lies under `prefix`, by whole segments.
pub fn path_matches(prefix: &str, target: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let path = target.split('?').next().unwrap_or_default();
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The index of the first route that matches a request for `host` (None when the request
/// named no host) and `target`.
pub fn find_route(routes: &[RouteConfig], host: Option<&str>, target: &str) -> Option<usize> {
    routes.iter().position(|route| {
        let host_ok = match (&route.host, host) {
            (None, _) => true,
            (Some(want), Some(host)) => want.matches(host),
            (Some(_), None) => false,
        };
        host_ok && route.path_prefix.as_deref().is_none_or(|prefix| path_matches(prefix, target))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: Option<&str>) -> RouteConfig {
        RouteConfig {
            host: host.map(|h| HostMatch::parse(h).unwrap()),
            path_prefix: prefix.map(|p| parse_path_prefix(p).unwrap()),
            pool: 0,
        }
    }

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

    #[test]
    fn request_host_drops_port_and_trailing_dot() {
        let cases: [(&[u8], Option<&str>); 7] = [
            (b"Example.COM", Some("Example.COM")),
            (b"example.com:8080", Some("example.com")),
            (b"example.com.", Some("example.com")),
            (b"[::1]:8080", Some("[::1]")),
            (b"[::1", None),
            (b"", None),
            (b":80", None),
        ];
        for (value, expected) in cases {
            assert_eq!(request_host(value), expected, "{:?}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        let cases = [
            ("/api", "/api", true),
            ("/api", "/api/", true),
            ("/api", "/api/x/y", true),
            ("/api", "/api?q=1", true),
            ("/api", "/apix", false),
            ("/api", "/ap", false),
            ("/api", "/", false),
            ("/api", "/x/api", false),
            ("/api", "/x?/api", false),
            ("/", "/anything", true),
            ("/", "*", true),
            ("/a/b", "/a/b/c", true),
            ("/a/b", "/a/bc", false),
        ];
        for (prefix, target, expected) in cases {
            assert_eq!(path_matches(prefix, target), expected, "{prefix} against {target}");
        }
    }

    #[test]
    fn path_prefixes_are_normalised_and_checked() {
        assert_eq!(parse_path_prefix("/api/").unwrap(), "/api");
        assert_eq!(parse_path_prefix("///").unwrap(), "/");
        for bad in ["api", "", "/a b", "/a?b", "/a#b"] {
            assert!(parse_path_prefix(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn first_matching_route_wins() {
        //   0: api.example.com /v1   1: *.example.com   2: /static   3: default
        let routes = [
            route(Some("api.example.com"), Some("/v1")),
            route(Some("*.example.com"), None),
            route(None, Some("/static")),
            route(None, None),
        ];
        let cases = [
            (Some("api.example.com"), "/v1/users", Some(0)),
            (Some("api.example.com"), "/v2/users", Some(1)),
            (Some("www.example.com"), "/static/a.css", Some(1)),
            (Some("other.org"), "/static/a.css", Some(2)),
            (Some("other.org"), "/staticx", Some(3)),
            (None, "/v1", Some(3)),
            (None, "/static", Some(2)),
        ];
        for (host, target, expected) in cases {
            assert_eq!(find_route(&routes, host, target), expected, "{host:?} {target}");
        }
    }

    #[test]
    fn no_default_route_means_no_match() {
        let routes = [route(Some("a.test"), None), route(None, Some("/api"))];
        assert_eq!(find_route(&routes, Some("b.test"), "/"), None);
        assert_eq!(find_route(&routes, None, "/apix"), None);
        assert_eq!(find_route(&[], Some("a.test"), "/"), None);
    }
}
