//! The admin listener's HTTP: read one small request (head with the crate's own reader, and a
//! Content-Length body up to [`MAX_BODY_BYTES`]), check its bearer token, and write one
//! response that closes the connection.
//!
//! Called by `admin` for each accepted connection, on that connection's thread. No shared
//! state.

use crate::http::error::reason_phrase;
use crate::http::framing::{request_framing, BodyFraming};
use crate::http::head::{read_request_head, HeadError, HeadWait, HeaderList, RequestHead};
use crate::http::stream::BufferedStream;
use serde_json::json;
use std::io::{self, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The largest request head the admin API reads.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// The largest request body the admin API reads.
pub const MAX_BODY_BYTES: u64 = 64 * 1024;
/// How long one admin client may take to send its request, and to take its response.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// One admin request.
pub struct Request {
    pub head: RequestHead,
    /// The target's path, without the query.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first query parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One admin response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Response { status, content_type: "application/json", body, headers: Vec::new() }
    }

    /// A JSON error: `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &json!({ "error": message }))
    }

    pub fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response { status, content_type, body: body.into_bytes(), headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Response {
        self.headers.push((name, value.to_string()));
        self
    }
}

/// Reads one request from `stream`; the error is the response to send instead, if any.
pub fn read_request(stream: TcpStream) -> Result<Request, Option<Response>> {
    let mut src = BufferedStream::new(stream, MAX_HEAD_BYTES);
    let mut always = || true;
    let mut wait = HeadWait {
        first_byte: IO_TIMEOUT,
        whole: Some(IO_TIMEOUT),
        deadline: None,
        may_block: &mut always,
        ask_again_every: None,
    };
    let head = match read_request_head(&mut src, MAX_HEAD_BYTES, &mut wait) {
        Ok(head) => head,
        Err(HeadError::Closed | HeadError::Truncated | HeadError::Io(_)) => return Err(None),
        Err(HeadError::TimedOut { .. }) => return Err(Some(Response::error(408, "request not received in time"))),
        Err(HeadError::TooLarge) => return Err(Some(Response::error(431, "request head too large"))),
        Err(HeadError::LineTooLong) => return Err(Some(Response::error(414, "request line too long"))),
        Err(e) => return Err(Some(Response::error(400, &format!("malformed request: {e:?}")))),
    };
    let length = match request_framing(&head) {
        Ok(BodyFraming::Empty) => 0,
        Ok(BodyFraming::Length(n)) if n <= MAX_BODY_BYTES => n as usize,
        Ok(BodyFraming::Length(_)) => return Err(Some(Response::error(413, "request body too large"))),
        Ok(_) => return Err(Some(Response::error(411, "send the body with a Content-Length"))),
        Err(e) => return Err(Some(Response::error(400, &e.to_string()))),
    };
    let body = read_body(&mut src, length).map_err(|_| Some(Response::error(400, "request body cut short")))?;
    let (path, query) = split_target(&head.target);
    Ok(Request { path, query, body, head })
}

fn read_body(src: &mut BufferedStream, length: usize) -> io::Result<Vec<u8>> {
    while src.buffered().len() < length {
        if src.fill()? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    let body = src.buffered()[..length].to_vec();
    src.consume(length);
    Ok(body)
}

/// Writes `response` with `Connection: close`; `head_only` leaves the body out (for HEAD).
pub fn write_response(mut stream: &TcpStream, response: &Response, head_only: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        response.status,
        status_reason(response.status),
        response.content_type,
        response.body.len()
    );
    for (name, value) in &response.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&response.body);
    }
    stream.write_all(&bytes)
}

fn status_reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        401 => "Unauthorized",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        500 => "Internal Server Error",
        other => reason_phrase(other),
    }
}

/// Splits a request target into its path and its decoded query parameters.
pub fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect();
    (path.to_string(), params)
}

/// Decodes `%XX` escapes; a malformed escape stays as it was.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks the request's bearer token against the configured one: 403 when none is
/// configured (changes are off), 401 when it is missing or wrong.
pub fn authorize(configured: Option<&str>, head: &RequestHead) -> Result<(), Response> {
    let Some(token) = configured else {
        return Err(Response::error(403, "runtime changes are off: set admin.token in the configuration"));
    };
    let given = head.value("authorization").and_then(|v| v.strip_prefix(b"Bearer "));
    match given {
        Some(given) if constant_time_eq(given, token.as_bytes()) => Ok(()),
        _ => Err(Response::error(401, "missing or wrong token: send Authorization: Bearer <admin.token>")
            .with_header("WWW-Authenticate", "Bearer realm=\"sluice\"")),
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |differ, (x, y)| differ | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{Header, Version};

    fn head_with(authorization: Option<&str>) -> RequestHead {
        RequestHead {
            method: "POST".into(),
            target: "/reload".into(),
            version: Version::Http11,
            headers: authorization
                .map(|a| Header { name: "Authorization".into(), value: a.as_bytes().to_vec() })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn tokens_decide_403_401_or_ok() {
        assert_eq!(authorize(None, &head_with(Some("Bearer s3cret"))).unwrap_err().status, 403);
        assert_eq!(authorize(Some("s3cret"), &head_with(None)).unwrap_err().status, 401);
        assert_eq!(authorize(Some("s3cret"), &head_with(Some("Bearer s3cre"))).unwrap_err().status, 401);
        assert_eq!(authorize(Some("s3cret"), &head_with(Some("Bearer s3creT"))).unwrap_err().status, 401);
        assert_eq!(authorize(Some("s3cret"), &head_with(Some("Basic s3cret"))).unwrap_err().status, 401);
        assert!(authorize(Some("s3cret"), &head_with(Some("Bearer s3cret"))).is_ok());
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn targets_split_into_path_and_decoded_query() {
        let (path, query) = split_target("/servers/drain?url=http%3A%2F%2F127.0.0.1%3A5001&pool=web&flag");
        assert_eq!(path, "/servers/drain");
        assert_eq!(
            query,
            [
                ("url".into(), "http://127.0.0.1:5001".into()),
                ("pool".into(), "web".into()),
                ("flag".into(), String::new())
            ]
        );
        assert_eq!(split_target("/stats"), ("/stats".into(), vec![]));
        assert_eq!(percent_decode("a%zzb%4"), "a%zzb%4");
        assert_eq!(percent_decode("http://x:1"), "http://x:1");
    }
}
