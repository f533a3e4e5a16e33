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
use super::head::{Header, HeaderList, RequestHead, ResponseHead, Version, MAX_HEADERS};
use std::io::Write;
use std::net::IpAddr;

/// Fields that describe one connection, not the message, plus the framing fields that sluice
/// writes itself. (Header rules may not touch them either: `edge::header_rules`.)
pub const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Request fields sluice writes itself (`X-Forwarded-*`), or answers itself (`Expect`).
const REPLACED_IN_REQUESTS: &[&str] = &["expect", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// The tokens of every `Connection` field, as the sender spelled them: compare them with
/// `eq_ignore_ascii_case`.
pub fn connection_tokens(head: &impl HeaderList) -> impl Iterator<Item = &[u8]> {
    let tokens = head.values("connection").flat_map(|value| value.split(|&b| b == b','));
    tokens.map(<[u8]>::trim_ascii).filter(|token| !token.is_empty())
}

/// Whether a `Connection` field of `head` names `token` (in any case).
pub fn has_connection_token(head: &impl HeaderList, token: &str) -> bool {
    connection_tokens(head).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether the sender of `head`, a message of `version`, keeps the connection open.
pub fn is_persistent(version: Version, head: &impl HeaderList) -> bool {
    match version {
        _ if has_connection_token(head, "close") => false,
        Version::Http11 => true,
        Version::Http10 => has_connection_token(head, "keep-alive"),
    }
}

/// Whether `head` asks to switch protocols: HTTP/1.1, `Connection` naming `upgrade`, and a
/// non-empty `Upgrade` field.
pub fn wants_upgrade(head: &RequestHead) -> bool {
    head.version == Version::Http11
        && has_connection_token(head, "upgrade")
        && head.values("upgrade").any(|v| !v.trim_ascii().is_empty())
}

/// The fields of one head that its `Connection` fields name, by index: found once per head,
/// so that deciding each field's fate does not read the `Connection` fields again. `Host` is
/// never among them, whatever `Connection` says: a client must not be able to strip it.
struct NamedByConnection(u128);

// One bit per field index: every head sluice parses fits.
const _: () = assert!(MAX_HEADERS < 128);

impl NamedByConnection {
    fn of(head: &impl HeaderList) -> NamedByConnection {
        let mut named = 0;
        for token in connection_tokens(head) {
            for (i, field) in head.all().iter().enumerate().take(128) {
                if field.name.as_bytes().eq_ignore_ascii_case(token) && !field.name.eq_ignore_ascii_case("host") {
                    named |= 1 << i;
                }
            }
        }
        NamedByConnection(named)
    }

    fn contains(&self, index: usize) -> bool {
        index < 128 && self.0 & (1 << index) != 0
    }
}

/// Whether field number `index` of a head goes on to the next hop.
fn is_forwarded(field: &Header, index: usize, named: &NamedByConnection) -> bool {
    !NOT_FORWARDED.iter().any(|h| field.name.eq_ignore_ascii_case(h)) && !named.contains(index)
}

/// Who sent a request, as the `X-Forwarded-*` fields tell the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    pub client_ip: IpAddr,
    /// The request came over TLS: `X-Forwarded-Proto: https`.
    pub https: bool,
}

impl Forwarded {
    pub fn plain(client_ip: IpAddr) -> Forwarded {
        Forwarded { client_ip, https: false }
    }
}

/// Writes the head sluice sends to a backend for `head`. A request without `Host` (HTTP/1.0
/// allows that) gets `default_host`, the backend's own `host:port`, since HTTP/1.1 needs one.
pub fn write_request_head(
    out: &mut Vec<u8>,
    head: &RequestHead,
    framing: BodyFraming,
    forwarded: Forwarded,
    default_host: &str,
) {
    let upgrade = wants_upgrade(head);
    let named = NamedByConnection::of(head);
    push_line(out, &[head.method.as_bytes(), b" ", head.target.as_bytes(), b" HTTP/1.1"]);
    if !head.has("host") {
        push_field(out, b"Host", default_host.as_bytes());
    }
    for (i, h) in head.headers.iter().enumerate() {
        let kept_for_upgrade = upgrade && h.name.eq_ignore_ascii_case("upgrade");
        let replaced = REPLACED_IN_REQUESTS.iter().any(|r| h.name.eq_ignore_ascii_case(r));
        if kept_for_upgrade || (!replaced && is_forwarded(h, i, &named)) {
            push_field(out, h.name.as_bytes(), &h.value);
        }
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    for prior in head.values("x-forwarded-for") {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    push_ip(out, forwarded.client_ip);
    let proto: &[u8] = if forwarded.https { b"https" } else { b"http" };
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    out.extend_from_slice(proto);
    out.extend_from_slice(b"\r\n");
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
pub struct ResponseFraming<'a> {
    /// The framing field to write: `Length` or `Chunked`; `Empty` and `UntilClose` write none.
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub client_version: Version,
    /// The backend's URL when `exposeBackend` is on.
    pub backend: Option<&'a str>,
    /// A sticky session's `Set-Cookie` value, when the client must be (re)pinned.
    pub set_cookie: Option<&'a str>,
}

/// Writes the head sluice sends to a client for a backend's `head`.
pub fn write_response_head(out: &mut Vec<u8>, head: &ResponseHead, how: &ResponseFraming) {
    write_status_line(out, head);
    let named = NamedByConnection::of(head);
    for (i, h) in head.headers.iter().enumerate() {
        if is_forwarded(h, i, &named) {
            push_field(out, h.name.as_bytes(), &h.value);
        }
    }
    write_framing(out, how.framing);
    if let Some(url) = how.backend {
        push_field(out, b"X-Forwarded-Server", url.as_bytes());
    }
    if let Some(cookie) = how.set_cookie {
        push_field(out, b"Set-Cookie", cookie.as_bytes());
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
    write_status_line(out, head);
    let named = NamedByConnection::of(head);
    for (i, h) in head.headers.iter().enumerate() {
        if h.name.eq_ignore_ascii_case("upgrade") || is_forwarded(h, i, &named) {
            push_field(out, h.name.as_bytes(), &h.value);
        }
    }
    if let Some(cookie) = set_cookie {
        push_field(out, b"Set-Cookie", cookie.as_bytes());
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

/// `HTTP/1.1 <status> <reason>`: sluice speaks HTTP/1.1 whatever the backend's version.
fn write_status_line(out: &mut Vec<u8>, head: &ResponseHead) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(head.status));
    push_line(out, &[b" ", head.reason.as_bytes()]);
}

fn write_framing(out: &mut Vec<u8>, framing: BodyFraming) {
    match framing {
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyFraming::Empty | BodyFraming::UntilClose => {}
    }
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    push_line(out, &[name, b": ", value]);
}

/// Writes `parts` and a CRLF.
fn push_line(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes `ip` as text; IPv4 without the formatting machinery of `write!`, since every
/// request carries one.
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Writes `n` in decimal, without the formatting machinery of `write!`.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::Headers;

    fn headers(list: &[(&str, &str)]) -> Headers {
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
        let tokens: Vec<&[u8]> = connection_tokens(&head).collect();
        assert_eq!(tokens, [&b"Keep-Alive"[..], b"X-Secret", b"close"]);
        assert!(has_connection_token(&head, "x-secret"));
        assert!(!has_connection_token(&head, "secret"));
    }

    #[test]
    fn persistence_follows_the_version_and_the_connection_tokens() {
        type Fields<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Version, Fields, bool); 7] = [
            (Version::Http11, &[], true),
            (Version::Http10, &[], false),
            (Version::Http10, &[("Connection", "Keep-Alive")], true),
            (Version::Http11, &[("Connection", "closed")], true),
            (Version::Http11, &[("Connection", "keep-alive"), ("Connection", "CLOSE")], false),
            (Version::Http10, &[("Connection", "keep-alive, close")], false),
            (Version::Http11, &[("Connection", "")], true),
        ];
        for (version, fields, expected) in cases {
            let head = RequestHead { version, headers: headers(fields), ..RequestHead::default() };
            assert_eq!(is_persistent(version, &head), expected, "{version:?} {fields:?}");
        }
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
        write_request_head(
            &mut out,
            &head,
            BodyFraming::Length(3),
            Forwarded::plain("10.0.0.1".parse().unwrap()),
            "backend:1",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /p?q HTTP/1.1\r\nHost: site\r\nAccept: */*\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.1\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: site\r\nVia: 1.1 sluice\r\nContent-Length: 3\r\n\r\n"
        );
    }

    #[test]
    fn connection_names_fields_in_any_case_but_cannot_strip_host() {
        let head = RequestHead {
            method: "GET".into(),
            target: "/".into(),
            version: Version::Http11,
            headers: headers(&[("Host", "site"), ("Connection", "HOST, x-a"), ("X-A", "1"), ("X-B", "2")]),
        };
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            &head,
            BodyFraming::Empty,
            Forwarded::plain("2001:db8::1".parse().unwrap()),
            "backend:1",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nHost: site\r\nX-B: 2\r\nX-Forwarded-For: 2001:db8::1\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: site\r\nVia: 1.1 sluice\r\n\r\n"
        );
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 404, 65536, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
        let mut out = Vec::new();
        push_ip(&mut out, "0.10.200.255".parse().unwrap());
        assert_eq!(out, b"0.10.200.255");
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
        write_request_head(
            &mut out,
            &head,
            BodyFraming::Empty,
            Forwarded::plain("10.0.0.1".parse().unwrap()),
            "backend:1",
        );
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
            backend: Some("http://b:1"),
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
            set_cookie: Some("SRV=00ff; Path=/; HttpOnly"),
        };
        let mut out = Vec::new();
        write_response_head(&mut out, &head, &how);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nSet-Cookie: app=1\r\nContent-Length: 0\r\nSet-Cookie: SRV=00ff; Path=/; HttpOnly\r\n\r\n"
        );
    }
}
