//! What a request head must look like before sluice forwards it: the request target's form,
//! exactly one valid `Host`, a supported `Expect`, a method sluice can proxy.
//!
//! An absolute-form target (`GET http://example.com/x HTTP/1.1`) is rewritten to origin-form
//! with its authority as the `Host`, as RFC 9112 section 3.2.2 asks, so the backend always
//! sees one unambiguous host.

use super::error::HttpError;
use super::head::{HeaderList, RequestHead, Version};

/// Checks `head` and normalises its target; says whether the client expects `100 Continue`.
pub fn check_request(head: &mut RequestHead) -> Result<bool, HttpError> {
    if head.method == "CONNECT" {
        return Err(HttpError::NotImplemented("CONNECT"));
    }
    check_target(head)?;
    check_host(head)?;
    expects_continue(head)
}

fn check_target(head: &mut RequestHead) -> Result<(), HttpError> {
    if head.target.starts_with('/') {
        return Ok(());
    }
    if head.target == "*" {
        return match head.method.as_str() {
            "OPTIONS" => Ok(()),
            _ => Err(HttpError::BadRequest("`*` is a target only for OPTIONS")),
        };
    }
    let scheme_end = head.target.find("://").ok_or(HttpError::BadRequest("malformed request target"))?;
    if !head.target[..scheme_end].eq_ignore_ascii_case("http")
        && !head.target[..scheme_end].eq_ignore_ascii_case("https")
    {
        return Err(HttpError::BadRequest("malformed request target"));
    }
    let rest = &head.target[scheme_end + 3..];
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..path_start];
    if authority.is_empty() || authority.contains('@') || !is_valid_host(authority.as_bytes()) {
        return Err(HttpError::BadRequest("malformed authority in the request target"));
    }
    let path = match &rest[path_start..] {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    let host = authority.to_string();
    head.headers.remove("host");
    head.headers.push("Host", host.as_bytes());
    head.target = path;
    Ok(())
}

fn check_host(head: &RequestHead) -> Result<(), HttpError> {
    let mut hosts = head.values("host");
    match (hosts.next(), hosts.next()) {
        (None, _) if head.version == Version::Http11 => Err(HttpError::BadRequest("missing Host")),
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(HttpError::BadRequest("more than one Host")),
        (Some(host), None) if is_valid_host(host) => Ok(()),
        (Some(_), None) => Err(HttpError::BadRequest("malformed Host")),
    }
}

/// `uri-host [ ":" port ]`: registered-name characters, or an IP literal in brackets.
fn is_valid_host(host: &[u8]) -> bool {
    let (name, port) = match host.iter().rposition(|&b| b == b':') {
        Some(i) if !host.starts_with(b"[") || host[..i].ends_with(b"]") => (&host[..i], Some(&host[i + 1..])),
        _ => (host, None),
    };
    let port_ok = port.is_none_or(|p| p.iter().all(u8::is_ascii_digit));
    let name_ok = if let Some(literal) = name.strip_prefix(b"[").and_then(|n| n.strip_suffix(b"]")) {
        !literal.is_empty() && literal.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        name.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b))
    };
    port_ok && name_ok
}

fn expects_continue(head: &RequestHead) -> Result<bool, HttpError> {
    let mut expects = false;
    for value in head.values("expect") {
        if value.eq_ignore_ascii_case(b"100-continue") {
            expects = true;
        } else {
            return Err(HttpError::ExpectationFailed);
        }
    }
    Ok(expects && head.version == Version::Http11)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::Header;

    fn head(method: &str, target: &str, version: Version, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: target.into(),
            version,
            headers: headers
                .iter()
                .map(|(n, v)| Header { name: n.to_string(), value: v.as_bytes().to_vec() })
                .collect(),
        }
    }

    #[test]
    fn accepts_ordinary_requests() {
        let cases = [
            head("GET", "/", Version::Http11, &[("Host", "example.com")]),
            head("GET", "/x?y", Version::Http11, &[("Host", "example.com:8080")]),
            head("GET", "/", Version::Http11, &[("Host", "[::1]:80")]),
            head("GET", "/", Version::Http11, &[("Host", "")]),
            head("GET", "/", Version::Http10, &[]),
            head("OPTIONS", "*", Version::Http11, &[("Host", "a")]),
        ];
        for mut h in cases {
            assert_eq!(check_request(&mut h), Ok(false), "{h:?}");
        }
    }

    #[test]
    fn refuses_bad_targets_and_hosts() {
        let cases = [
            (head("GET", "/", Version::Http11, &[]), 400),
            (head("GET", "/", Version::Http11, &[("Host", "a"), ("Host", "b")]), 400),
            (head("GET", "/", Version::Http11, &[("Host", "a b")]), 400),
            (head("GET", "/", Version::Http11, &[("Host", "a/b")]), 400),
            (head("GET", "/", Version::Http11, &[("Host", "a:b")]), 400),
            (head("GET", "*", Version::Http11, &[("Host", "a")]), 400),
            (head("GET", "x", Version::Http11, &[("Host", "a")]), 400),
            (head("GET", "ftp://a/", Version::Http11, &[("Host", "a")]), 400),
            (head("GET", "http://u@a/", Version::Http11, &[("Host", "a")]), 400),
            (head("CONNECT", "a:443", Version::Http11, &[("Host", "a")]), 501),
            (head("POST", "/", Version::Http11, &[("Host", "a"), ("Expect", "magic")]), 417),
        ];
        for (mut h, status) in cases {
            assert_eq!(check_request(&mut h).map_err(|e| e.status()), Err(status), "{h:?}");
        }
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_its_host() {
        let mut h = head("GET", "http://Example.com:81?q=1", Version::Http11, &[("Host", "other")]);
        check_request(&mut h).unwrap();
        assert_eq!(h.target, "/?q=1");
        assert_eq!(h.values("host").collect::<Vec<_>>(), vec![&b"Example.com:81"[..]]);
    }

    #[test]
    fn expect_continue_is_seen_on_http_1_1_only() {
        let mut h = head("POST", "/", Version::Http11, &[("Host", "a"), ("Expect", "100-Continue")]);
        assert_eq!(check_request(&mut h), Ok(true));
        let mut h = head("POST", "/", Version::Http10, &[("Expect", "100-continue")]);
        assert_eq!(check_request(&mut h), Ok(false));
    }
}
