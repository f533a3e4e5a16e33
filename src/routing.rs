//! Which route of an HTTP listener a request takes: pure matching of the `Host` header and
//! the request path against each route's `host` and `pathPrefix`, first match wins.
//!
//! Called by `runtime::State::route` once per request. The patterns themselves are read by
//! `config` ([`crate::config::HostMatch`], `parse_path_prefix`). No I/O, no shared state.
//!
//! - `host` matches the request's host case-insensitively, without its port and without a
//!   trailing dot. `*.example.com` matches exactly one more label: `a.example.com`, but not
//!   `example.com` or `a.b.example.com`.
//! - `pathPrefix` matches whole path segments: `/api` matches `/api`, `/api/x` and `/api?q`,
//!   not `/apix`. The query is never part of the match.
//! - A route with neither condition matches every request (the default).

use crate::config::RouteConfig;
#[cfg(test)]
use crate::config::{parse_path_prefix, HostMatch};

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
            edge: None,
        }
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
