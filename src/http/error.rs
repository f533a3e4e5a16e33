//! What sluice answers itself: client errors ([`HttpError`]) and the short plain-text
//! responses that carry them and the proxy's own 5xx answers.

use std::fmt;

/// A request sluice refuses. Every one of these closes the connection afterwards: once a
/// request is refused, the bytes after it can no longer be trusted to start a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// 400: malformed or ambiguous; the text says what.
    BadRequest(&'static str),
    /// 408: the head did not arrive in time.
    HeaderTimeout,
    /// 408: the body stalled for longer than `timeouts.client`.
    BodyTimeout,
    /// 413: the body is larger than `limits.maxBodyBytes`.
    BodyTooLarge,
    /// 417: an `Expect` other than `100-continue`.
    ExpectationFailed,
    /// 414: the request line alone is longer than `limits.maxHeaderBytes` (RFC 9112 section 3).
    UriTooLong,
    /// 431: the head is larger than `limits.maxHeaderBytes` or has too many fields.
    HeadTooLarge,
    /// 501: a transfer coding or method sluice does not implement.
    NotImplemented(&'static str),
    /// 505: not HTTP/1.0 or HTTP/1.1.
    VersionNotSupported,
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::HeaderTimeout | HttpError::BodyTimeout => 408,
            HttpError::BodyTooLarge => 413,
            HttpError::ExpectationFailed => 417,
            HttpError::UriTooLong => 414,
            HttpError::HeadTooLarge => 431,
            HttpError::NotImplemented(_) => 501,
            HttpError::VersionNotSupported => 505,
        }
    }

    /// The canned response for this error, with `Connection: close`.
    pub fn response(&self) -> Vec<u8> {
        canned_response(self.status(), &self.to_string(), &[], true)
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::BadRequest(why) => write!(f, "bad request: {why}"),
            HttpError::HeaderTimeout => f.write_str("request head not received in time"),
            HttpError::BodyTimeout => f.write_str("request body not received in time"),
            HttpError::BodyTooLarge => f.write_str("request body is larger than allowed"),
            HttpError::ExpectationFailed => f.write_str("only `Expect: 100-continue` is supported"),
            HttpError::UriTooLong => f.write_str("request line is longer than allowed"),
            HttpError::HeadTooLarge => f.write_str("request head is larger than allowed"),
            HttpError::NotImplemented(what) => write!(f, "not implemented: {what}"),
            HttpError::VersionNotSupported => f.write_str("only HTTP/1.0 and HTTP/1.1 are supported"),
        }
    }
}

impl std::error::Error for HttpError {}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// A complete response with a one-line plain-text body: `"<status> <reason>: <detail>\n"`.
/// The length of the head of `response`, one of sluice's own: what is left of it for `HEAD`.
pub fn head_length(response: &[u8]) -> usize {
    response.windows(4).position(|w| w == b"\r\n\r\n").map_or(response.len(), |i| i + 4)
}

pub fn canned_response(status: u16, detail: &str, extra_headers: &[(&str, &str)], close: bool) -> Vec<u8> {
    let reason = reason_phrase(status);
    let body = format!("{status} {reason}: {detail}\n");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(if close { "Connection: close\r\n\r\n" } else { "\r\n" });
    out.push_str(&body);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_responses_are_complete_messages() {
        let r = String::from_utf8(canned_response(503, "no backend available", &[("Retry-After", "2")], true)).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 46\r\n\
             Retry-After: 2\r\nConnection: close\r\n\r\n503 Service Unavailable: no backend available\n"
        );
        let r = String::from_utf8(HttpError::HeadTooLarge.response()).unwrap();
        assert!(r.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{r}");
        let r = String::from_utf8(HttpError::UriTooLong.response()).unwrap();
        assert!(r.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{r}");
    }
}
