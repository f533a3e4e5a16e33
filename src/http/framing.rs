//! Where a message body ends (RFC 9112 section 6): pure decisions from a head, no I/O.
//!
//! Anything ambiguous is refused rather than guessed, because a proxy and the server behind it
//! that disagree about where a body ends is how requests get smuggled: Content-Length with
//! Transfer-Encoding, several or malformed Content-Length values, a Transfer-Encoding whose last
//! coding is not chunked, or transfer codings on HTTP/1.0.

use super::error::HttpError;
use super::head::{HeaderList, RequestHead, ResponseHead, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the sender closes (responses only).
    UntilClose,
}

/// Transfer codings a recipient may meet; any other is unknown.
const KNOWN_CODINGS: &[&str] = &["chunked", "gzip", "x-gzip", "deflate", "compress", "x-compress"];

pub fn request_framing(head: &RequestHead) -> Result<BodyFraming, HttpError> {
    let length = content_length(head).map_err(HttpError::BadRequest)?;
    if !head.has("transfer-encoding") {
        return Ok(match length {
            None => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
        });
    }
    if head.version == Version::Http10 {
        return Err(HttpError::BadRequest("Transfer-Encoding in an HTTP/1.0 request"));
    }
    if length.is_some() {
        return Err(HttpError::BadRequest("Content-Length together with Transfer-Encoding"));
    }
    let codings = transfer_codings(head).map_err(HttpError::BadRequest)?;
    if codings.any_unknown {
        return Err(HttpError::NotImplemented("unknown transfer coding"));
    }
    if !codings.last_is_chunked {
        return Err(HttpError::BadRequest("the last transfer coding is not chunked"));
    }
    if codings.count > 1 {
        if codings.chunked_before_last {
            return Err(HttpError::BadRequest("chunked is applied more than once"));
        }
        return Err(HttpError::NotImplemented("transfer codings other than chunked"));
    }
    Ok(BodyFraming::Chunked)
}

/// How the body of `head`, the answer to a `method` request, is framed.
pub fn response_framing(head: &ResponseHead, method: &str) -> Result<BodyFraming, &'static str> {
    let no_body = method == "HEAD" || head.status < 200 || head.status == 204 || head.status == 304;
    let length = content_length(head)?;
    if no_body {
        return Ok(BodyFraming::Empty);
    }
    if head.has("transfer-encoding") {
        if length.is_some() {
            return Err("backend sent Content-Length together with Transfer-Encoding");
        }
        let codings = transfer_codings(head)?;
        if codings.count != 1 || !codings.last_is_chunked {
            return Err("backend used a transfer coding other than chunked");
        }
        return Ok(BodyFraming::Chunked);
    }
    Ok(match length {
        Some(n) => BodyFraming::Length(n),
        None => BodyFraming::UntilClose,
    })
}

/// The one Content-Length value, if any. Several fields, lists, signs, spaces or values that
/// overflow are all refused.
pub fn content_length(head: &impl HeaderList) -> Result<Option<u64>, &'static str> {
    let mut values = head.values("content-length");
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err("more than one Content-Length");
    }
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err("malformed Content-Length");
    }
    value
        .iter()
        .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
        .map(Some)
        .ok_or("Content-Length is too large")
}

/// What the transfer codings of a head's Transfer-Encoding fields, taken in order, come to.
#[derive(Debug, Default)]
struct Codings {
    count: usize,
    /// Some coding is none of [`KNOWN_CODINGS`].
    any_unknown: bool,
    /// `chunked` comes before the last coding.
    chunked_before_last: bool,
    last_is_chunked: bool,
}

/// Reads the codings of every Transfer-Encoding field, case-insensitively, with the
/// whitespace around each trimmed. Empty list elements are skipped, as RFC 9110 section
/// 5.6.1 asks.
fn transfer_codings(head: &impl HeaderList) -> Result<Codings, &'static str> {
    let mut codings = Codings::default();
    for value in head.values("transfer-encoding") {
        let value = std::str::from_utf8(value).map_err(|_| "malformed Transfer-Encoding")?;
        for element in value.split(',') {
            let coding = element.trim_matches([' ', '\t']);
            if coding.is_empty() {
                continue;
            }
            codings.count += 1;
            codings.any_unknown |= !KNOWN_CODINGS.iter().any(|known| coding.eq_ignore_ascii_case(known));
            codings.chunked_before_last |= codings.last_is_chunked;
            codings.last_is_chunked = coding.eq_ignore_ascii_case("chunked");
        }
    }
    if codings.count == 0 {
        return Err("empty Transfer-Encoding");
    }
    Ok(codings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::Header;

    fn req(version: Version, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "POST".into(),
            target: "/".into(),
            version,
            headers: headers
                .iter()
                .map(|(n, v)| Header { name: n.to_string(), value: v.as_bytes().to_vec() })
                .collect(),
        }
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHead {
        let r = req(Version::Http11, headers);
        ResponseHead { version: Version::Http11, status, reason: String::new(), headers: r.headers }
    }

    #[test]
    fn request_framing_table() {
        use BodyFraming::*;
        let ok: &[(&[(&str, &str)], BodyFraming)] = &[
            (&[], Empty),
            (&[("Content-Length", "0")], Length(0)),
            (&[("content-length", "42")], Length(42)),
            (&[("Content-Length", "007")], Length(7)),
            (&[("Transfer-Encoding", "chunked")], Chunked),
            (&[("Transfer-Encoding", "Chunked")], Chunked),
            (&[("Transfer-Encoding", " , chunked")], Chunked),
        ];
        for (headers, want) in ok {
            assert_eq!(request_framing(&req(Version::Http11, headers)), Ok(*want), "{headers:?}");
        }
    }

    #[test]
    fn ambiguous_request_framing_is_refused() {
        let bad: &[(&[(&str, &str)], u16)] = &[
            (&[("Content-Length", "1"), ("Transfer-Encoding", "chunked")], 400),
            (&[("Content-Length", "1"), ("Content-Length", "2")], 400),
            (&[("Content-Length", "1"), ("Content-Length", "1")], 400),
            (&[("Content-Length", "1, 1")], 400),
            (&[("Content-Length", "+1")], 400),
            (&[("Content-Length", "-1")], 400),
            (&[("Content-Length", "1 2")], 400),
            (&[("Content-Length", "0x10")], 400),
            (&[("Content-Length", "")], 400),
            (&[("Content-Length", "99999999999999999999999")], 400),
            (&[("Transfer-Encoding", "gzip")], 400),
            (&[("Transfer-Encoding", "chunked, gzip")], 400),
            (&[("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")], 400),
            (&[("Transfer-Encoding", "")], 400),
            (&[("Transfer-Encoding", "chunked;q=1")], 501),
            (&[("Transfer-Encoding", "xchunked")], 501),
            (&[("Transfer-Encoding", "foo, chunked")], 501),
            (&[("Transfer-Encoding", "gzip, chunked")], 501),
            (&[("Transfer-Encoding", "chunked\u{b}")], 501),
        ];
        for (headers, status) in bad {
            let got = request_framing(&req(Version::Http11, headers));
            assert_eq!(got.map_err(|e| e.status()), Err(*status), "{headers:?}");
        }
        let got = request_framing(&req(Version::Http10, &[("Transfer-Encoding", "chunked")]));
        assert_eq!(got.map_err(|e| e.status()), Err(400));
    }

    #[test]
    fn response_framing_table() {
        use BodyFraming::*;
        assert_eq!(response_framing(&resp(200, &[("Content-Length", "5")]), "GET"), Ok(Length(5)));
        assert_eq!(response_framing(&resp(200, &[("Content-Length", "5")]), "HEAD"), Ok(Empty));
        assert_eq!(response_framing(&resp(200, &[("Transfer-Encoding", "chunked")]), "GET"), Ok(Chunked));
        assert_eq!(response_framing(&resp(200, &[]), "GET"), Ok(UntilClose));
        assert_eq!(response_framing(&resp(204, &[]), "GET"), Ok(Empty));
        assert_eq!(response_framing(&resp(304, &[("Content-Length", "5")]), "GET"), Ok(Empty));
        assert_eq!(response_framing(&resp(100, &[]), "GET"), Ok(Empty));
        assert!(
            response_framing(&resp(200, &[("Content-Length", "5"), ("Transfer-Encoding", "chunked")]), "GET").is_err()
        );
        assert!(response_framing(&resp(200, &[("Content-Length", "5"), ("Content-Length", "6")]), "GET").is_err());
        assert!(response_framing(&resp(200, &[("Transfer-Encoding", "gzip")]), "GET").is_err());
        assert_eq!(response_framing(&resp(200, &[("Transfer-Encoding", " CHUNKED ")]), "GET"), Ok(Chunked));
        assert!(response_framing(&resp(200, &[("Transfer-Encoding", "chunked, chunked")]), "GET").is_err());
        assert!(response_framing(&resp(200, &[("Transfer-Encoding", "gzip, chunked")]), "GET").is_err());
    }
}
