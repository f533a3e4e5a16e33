//! Header rewriting between client and backend: `Connection` parsed as a token list,
//! hop-by-hop fields dropped both ways, `X-Forwarded-*` and `Via` added to requests, a sticky
//! session's `Set-Cookie` added to responses, and the framing fields (`Content-Length`,
//! `Transfer-Encoding`) always written by sluice itself from the framing it decided, never
//! copied.
//!
//! The one exception to dropping hop-by-hop fields is an upgrade (WebSocket and the like):
//! an HTTP/1.1 request with `Connection: upgrade` keeps its `Upgrade` fields and says
//! `Connection: upgrade` to the backend, and a backend's `101` keeps them on the way back.

use super::framing::BodyFraming;
use super::head::{HeaderList, RequestHead, ResponseHead, Version};
use std::io::Write;
use std::net::IpAddr;

/// Fields that describe one connection, not the message, plus the framing fields that sluice
/// writes itself.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The lower-cased tokens of every `Connection` field.
pub fn connection_tokens(head: &impl HeaderList) -> Vec<String> {
    let mut tokens = Vec::new();
    for value in head.values("connection") {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if !token.is_empty() {
                tokens.push(String::from_utf8_lossy(token).to_ascii_lowercase());
            }
        }
    }
    tokens
}

/// Whether the sender of a message with these `Connection` tokens keeps the connection open.
pub fn is_persistent(version: Version, tokens: &[String]) -> bool {
    let has = |t: &str| tokens.iter().any(|x| x == t);
    match version {
        _ if has("close") => false,
        Version::Http11 => true,
        Version::Http10 => has("keep-alive"),
    }
}

/// Whether `head` asks to switch protocols: HTTP/1.1, `Connection` naming `upgrade`, and a
/// non-empty `Upgrade` field.
pub fn wants_upgrade(head: &RequestHead) -> bool {
    head.version == Version::Http11
        && connection_tokens(head).iter().any(|t| t == "upgrade")
        && head.values("upgrade").any(|v| !v.trim_ascii().is_empty())
}

/// Whether a field goes on to the next hop. `Host` always does, whatever `Connection` names:
/// a client must not be able to strip it.
fn is_forwarded(name: &str, tokens: &[String]) -> bool {
    let named_by_connection = tokens.iter().any(|t| name.eq_ignore_ascii_case(t)) && !name.eq_ignore_ascii_case("host");
    !NOT_FORWARDED.iter().any(|h| name.eq_ignore_ascii_case(h)) && !named_by_connection
}

/// Writes the head sluice sends to a backend for `head`. A request without `Host` (HTTP/1.0
/// allows that) gets `default_host`, the backend's own `host:port`, since HTTP/1.1 needs one.
pub fn write_request_head(
    out: &mut Vec<u8>,
    head: &RequestHead,
    framing: BodyFraming,
    client_ip: IpAddr,
    default_host: &str,
) {
    let tokens = connection_tokens(head);
    let upgrade = wants_upgrade(head);
    let _ = write!(out, "{} {} HTTP/1.1\r\n", head.method, head.target);
    if !head.has("host") {
        push_field(out, b"Host", default_host.as_bytes());
    }
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    for h in &head.headers {
        if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for.push(&h.value);
        } else if upgrade && h.name.eq_ignore_ascii_case("upgrade") {
            push_field(out, h.name.as_bytes(), &h.value);
        } else if h.name.eq_ignore_ascii_case("expect")
            || h.name.eq_ignore_ascii_case("x-forwarded-proto")
            || h.name.eq_ignore_ascii_case("x-forwarded-host")
            || !is_forwarded(&h.name, &tokens)
        {
            continue;
        } else {
            push_field(out, h.name.as_bytes(), &h.value);
        }
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    for prior in forwarded_for {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    let _ = write!(out, "{client_ip}\r\nX-Forwarded-Proto: http\r\n");
    if let Some(host) = head.value("host") {
        push_field(out, b"X-Forwarded-Host", host);
    }
    out.extend_from_slice(b"Via: 1.1 sluice\r\n");
    if upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    write_framing(out, framing);
    out.extend_from_slice(b"\r\n");
}

/// What sluice says to the client about the response it is relaying.
pub struct ResponseFraming {
    /// The framing field to write: `Length` or `Chunked`; `Empty` and `UntilClose` write none.
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub client_version: Version,
    /// The backend's URL when `exposeBackend` is on.
    pub backend: Option<String>,
    /// A sticky session's `Set-Cookie` value, when the client must be (re)pinned.
    pub set_cookie: Option<String>,
}

/// Writes the head sluice sends to a client for a backend's `head`.
pub fn write_response_head(out: &mut Vec<u8>, head: &ResponseHead, how: &ResponseFraming) {
    let tokens = connection_tokens(head);
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", head.status, head.reason);
    for h in &head.headers {
        if is_forwarded(&h.name, &tokens) {
            push_field(out, h.name.as_bytes(), &h.value);
        }
    }
    write_framing(out, how.framing);
    if let Some(url) = &how.backend {
        let _ = write!(out, "X-Forwarded-Server: {url}\r\n");
    }
    if let Some(cookie) = &how.set_cookie {
        let _ = write!(out, "Set-Cookie: {cookie}\r\n");
    }
    if !how.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if how.client_version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a backend's `101 Switching Protocols` for the client: its end-to-end fields, its
/// `Upgrade` fields, a sticky session's `Set-Cookie` if any, and `Connection: upgrade`.
pub fn write_switching_head(out: &mut Vec<u8>, head: &ResponseHead, set_cookie: Option<&str>) {
    let tokens = connection_tokens(head);
    let _ = write!(out, "HTTP/1.1 101 {}\r\n", head.reason);
    for h in &head.headers {
        if h.name.eq_ignore_ascii_case("upgrade") || is_forwarded(&h.name, &tokens) {
            push_field(out, h.name.as_bytes(), &h.value);
        }
    }
    if let Some(cookie) = set_cookie {
        let _ = write!(out, "Set-Cookie: {cookie}\r\n");
    }
    out.extend_from_slice(b"Connection: upgrade\r\n\r\n");
}

/// Writes an interim (1xx) response for an HTTP/1.1 client.
pub fn write_interim_head(out: &mut Vec<u8>, head: &ResponseHead) {
    let how = ResponseFraming {
        framing: BodyFraming::Empty,
        keep_alive: true,
        client_version: Version::Http11,
        backend: None,
        set_cookie: None,
    };
    write_response_head(out, head, &how);
}

fn write_framing(out: &mut Vec<u8>, framing: BodyFraming) {
    match framing {
        BodyFraming::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyFraming::Empty | BodyFraming::UntilClose => {}
    }
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::Header;

    fn headers(list: &[(&str, &str)]) -> Vec<Header> {
        list.iter().map(|(n, v)| Header { name: n.to_string(), value: v.as_bytes().to_vec() }).collect()
    }

    #[test]
    fn connection_is_a_token_list() {
        let head = RequestHead {
            method: "GET".into(),
            target: "/".into(),
            version: Version::Http11,
            headers: headers(&[("Connection", "Keep-Alive, X-Secret"), ("connection", " close ")]),
        };
        assert_eq!(connection_tokens(&head), vec!["keep-alive", "x-secret", "close"]);
        assert!(!is_persistent(Version::Http11, &connection_tokens(&head)));
        assert!(is_persistent(Version::Http11, &[]));
        assert!(!is_persistent(Version::Http10, &[]));
        assert!(is_persistent(Version::Http10, &["keep-alive".into()]));
        assert!(is_persistent(Version::Http11, &["closed".into()]));
    }

    #[test]
    fn request_head_drops_hop_by_hop_and_adds_forwarding_fields() {
        let head = RequestHead {
            method: "POST".into(),
            target: "/p?q".into(),
            version: Version::Http10,
            headers: headers(&[
                ("Host", "site"),
                ("Connection", "keep-alive, X-Private"),
                ("X-Private", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "x"),
                ("TE", "trailers"),
                ("Upgrade", "h2c"),
                ("Content-Length", "3"),
                ("X-Forwarded-For", "1.1.1.1"),
                ("X-Forwarded-For", "2.2.2.2"),
                ("X-Forwarded-Proto", "https"),
                ("Accept", "*/*"),
            ]),
        };
        let mut out = Vec::new();
        write_request_head(&mut out, &head, BodyFraming::Length(3), "10.0.0.1".parse().unwrap(), "backend:1");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /p?q HTTP/1.1\r\nHost: site\r\nAccept: */*\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.1\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: site\r\nVia: 1.1 sluice\r\nContent-Length: 3\r\n\r\n"
        );
    }

    #[test]
    fn upgrade_requests_keep_upgrade_and_say_connection_upgrade() {
        let head = RequestHead {
            method: "GET".into(),
            target: "/chat".into(),
            version: Version::Http11,
            headers: headers(&[
                ("Host", "site"),
                ("Connection", "keep-alive, Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Keep-Alive", "timeout=5"),
            ]),
        };
        assert!(wants_upgrade(&head));
        let mut out = Vec::new();
        write_request_head(&mut out, &head, BodyFraming::Empty, "10.0.0.1".parse().unwrap(), "backend:1");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /chat HTTP/1.1\r\nHost: site\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: site\r\nVia: 1.1 sluice\r\n\
             Connection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn only_http_1_1_with_connection_upgrade_and_an_upgrade_field_is_an_upgrade() {
        type Fields<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Version, Fields, bool); 5] = [
            (Version::Http11, &[("Connection", "Upgrade"), ("Upgrade", "websocket")], true),
            (Version::Http11, &[("Upgrade", "websocket")], false),
            (Version::Http11, &[("Connection", "upgrade")], false),
            (Version::Http11, &[("Connection", "upgrade"), ("Upgrade", " ")], false),
            (Version::Http10, &[("Connection", "upgrade"), ("Upgrade", "websocket")], false),
        ];
        for (version, fields, expected) in cases {
            let head = RequestHead { method: "GET".into(), target: "/".into(), version, headers: headers(fields) };
            assert_eq!(wants_upgrade(&head), expected, "{head:?}");
        }
    }

    #[test]
    fn switching_head_keeps_upgrade_and_drops_other_hop_by_hop_fields() {
        let head = ResponseHead {
            version: Version::Http11,
            status: 101,
            reason: "Switching Protocols".into(),
            headers: headers(&[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade, X-A"),
                ("X-A", "1"),
                ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ]),
        };
        let mut out = Vec::new();
        write_switching_head(&mut out, &head, None);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Connection: upgrade\r\n\r\n"
        );
        let mut out = Vec::new();
        write_switching_head(&mut out, &head, Some("SRV=00ff; Path=/; HttpOnly"));
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("\r\nSet-Cookie: SRV=00ff; Path=/; HttpOnly\r\nConnection: upgrade\r\n\r\n"));
    }

    #[test]
    fn response_head_says_how_the_connection_goes_on() {
        let head = ResponseHead {
            version: Version::Http11,
            status: 200,
            reason: "OK".into(),
            headers: headers(&[("Transfer-Encoding", "chunked"), ("Connection", "x-a"), ("X-A", "1"), ("Server", "b")]),
        };
        let how = ResponseFraming {
            framing: BodyFraming::Chunked,
            keep_alive: false,
            client_version: Version::Http11,
            backend: None,
            set_cookie: None,
        };
        let mut out = Vec::new();
        write_response_head(&mut out, &head, &how);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: b\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        let how = ResponseFraming {
            framing: BodyFraming::UntilClose,
            keep_alive: true,
            client_version: Version::Http10,
            backend: Some("http://b:1".into()),
            set_cookie: None,
        };
        let mut out = Vec::new();
        write_response_head(&mut out, &head, &how);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: b\r\nX-Forwarded-Server: http://b:1\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn a_sticky_cookie_is_added_beside_the_backends_own_cookies() {
        let head = ResponseHead {
            version: Version::Http11,
            status: 200,
            reason: "OK".into(),
            headers: headers(&[("Set-Cookie", "app=1")]),
        };
        let how = ResponseFraming {
            framing: BodyFraming::Length(0),
            keep_alive: true,
            client_version: Version::Http11,
            backend: None,
            set_cookie: Some("SRV=00ff; Path=/; HttpOnly".into()),
        };
        let mut out = Vec::new();
        write_response_head(&mut out, &head, &how);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nSet-Cookie: app=1\r\nContent-Length: 0\r\nSet-Cookie: SRV=00ff; Path=/; HttpOnly\r\n\r\n"
        );
    }
}
