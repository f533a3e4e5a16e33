//! Strictness at the front door, over real sockets: every malformed or ambiguous request
//! (RFC 9112 framing, the usual request-smuggling shapes, broken heads, limits, slow
//! clients) is refused with the right status, the connection is closed, and the backend
//! sees nothing of it, nor of any bytes the client sent after it. After each refusal a
//! valid request must still go through alone, so a half-sent request can never poison an
//! idle backend connection. Positive controls show that valid but unusual requests pass.
//!
//! Where a refusal happens inside a chunked body, sluice may already have opened a backend
//! connection and sent it the head and the good chunks; what the backend must never get is
//! a complete request. `TestBackend` records a request only once its body is complete, so
//! "the backend saw nothing" means exactly that here too.

mod common;

use common::*;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Config every test shares: a few workers are plenty, and quick to start.
const BASE: &str = r#""workers": 8,"#;

/// A body limit small enough to go over cheaply.
const LIMIT_1K: &str = r#""limits": {"maxBodyBytes": 1024},"#;

/// A sluice in front of one recording backend.
struct Front {
    sluice: Sluice,
    backend: TestBackend,
}

impl Front {
    /// Starts with `extra` config keys (a fragment ending in a comma, or empty).
    fn start(extra: &str) -> Front {
        let backend = TestBackend::named("from-backend");
        let sluice = Sluice::start(&[&backend.url()], &format!("{BASE} {extra}"));
        Front { sluice, backend }
    }

    /// The requests the backend received complete (health probes are kept apart).
    fn forwarded(&self) -> Vec<Seen> {
        self.backend.requests()
    }
}

/// Everything sluice sent back on one connection, and whether it then closed it.
struct Transcript {
    bytes: Vec<u8>,
    closed: bool,
    elapsed: Duration,
}

/// One response at the front of a transcript.
struct Answer {
    status: u16,
    closes: bool,
    /// How many bytes of the transcript it took, head and body.
    len: usize,
}

/// Sends `request` on a new connection and reads until sluice closes it (or `CLOSE_WITHIN`).
fn send_raw(addr: SocketAddr, request: &[u8]) -> Transcript {
    let mut stream = connect(addr);
    let started = Instant::now();
    // sluice may close before it has read everything; what it answered is still readable.
    let _ = stream.write_all(request);
    read_until_close(&mut stream, started)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to sluice");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Everything `stream` carries until its peer closes it, and whether that happened within
/// `CLOSE_WITHIN`.
fn read_until_close(stream: &mut TcpStream, started: Instant) -> Transcript {
    let mut bytes = Vec::new();
    let closed = read_until_closed(stream, &mut bytes, CLOSE_WITHIN).is_ok();
    Transcript { bytes, closed, elapsed: started.elapsed() }
}

/// Parses the response at the start of `bytes`; sluice's own answers carry Content-Length.
fn first_answer(bytes: &[u8]) -> Result<Answer, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("no complete response head".into()),
        Err(e) => return Err(format!("unparsable response: {e}")),
    };
    let field = |name: &str| {
        let h = response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name))?;
        Some(String::from_utf8_lossy(h.value).into_owned())
    };
    let body_len: usize = match field("content-length") {
        Some(n) => n.parse().map_err(|_| format!("bad Content-Length {n:?}"))?,
        None => return Err("response without Content-Length".into()),
    };
    if bytes.len() < head_len + body_len {
        return Err("response body cut short".into());
    }
    let closes = field("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
    Ok(Answer { status: response.code.unwrap_or(0), closes, len: head_len + body_len })
}

/// What is wrong with `transcript` as a refusal with `status`, if anything: it must hold
/// exactly one response with that status and `Connection: close`, and then the close.
fn refusal_problem(transcript: &Transcript, status: u16) -> Option<String> {
    let answer = match first_answer(&transcript.bytes) {
        Ok(answer) => answer,
        Err(why) => return Some(why),
    };
    if answer.status != status {
        return Some(format!("status {} instead of {status}", answer.status));
    }
    if !answer.closes {
        return Some("no `Connection: close` in the refusal".into());
    }
    if answer.len != transcript.bytes.len() {
        return Some("more bytes after the refusal".into());
    }
    if !transcript.closed {
        return Some(format!("connection still open after {:?}", transcript.elapsed));
    }
    None
}

fn describe(seen: &[Seen]) -> Vec<String> {
    seen.iter().map(|s| format!("{} {} body={:?}", s.method, s.target, s.body.escape_ascii().to_string())).collect()
}

/// Sends `request` on a new connection and checks that it is refused with `status` and the
/// connection closed, that the backend received nothing, and that a valid request sent next
/// is answered 200 and is the only request the backend received.
fn check_refused(front: &Front, request: &[u8], status: u16) -> Result<(), String> {
    let before = front.forwarded().len();
    let transcript = send_raw(front.sluice.addr, request);
    let mut problem = refusal_problem(&transcript, status);
    let control = send_raw(front.sluice.addr, b"GET /control HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let seen = front.forwarded().split_off(before);
    let control_ok = first_answer(&control.bytes).is_ok_and(|a| a.status == 200);
    let only_control = seen.len() == 1 && seen[0].target == "/control" && seen[0].body.is_empty();
    if problem.is_none() && !(control_ok && only_control) {
        problem = Some("the backend received something of it, or the next request went wrong".into());
    }
    match problem {
        None => Ok(()),
        Some(problem) => Err(format!(
            "request:      b\"{}\"\nexpected:     {status}, Connection: close, then close; nothing forwarded\n\
             problem:      {problem}\nsluice sent:  b\"{}\" (closed: {}, after {:?})\n\
             control sent: b\"{}\"\nbackend saw:  {:?} (only GET /control expected)",
            request.escape_ascii(),
            transcript.bytes.escape_ascii(),
            transcript.closed,
            transcript.elapsed,
            control.bytes.escape_ascii(),
            describe(&seen),
        )),
    }
}

/// Runs `check_refused` on every row and reports all the rows that failed at once.
fn check_table(front: &Front, table: &[(Vec<u8>, u16)]) {
    let failures: Vec<String> =
        table.iter().filter_map(|(request, status)| check_refused(front, request, *status).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests were not refused as they should be:\n\n{}",
        failures.len(),
        table.len(),
        failures.join("\n\n")
    );
}

/// `POST / HTTP/1.1` with `Host: x`, then `fields` (each ending in CRLF), then `body`.
fn post(fields: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!("POST / HTTP/1.1\r\nHost: x\r\n{fields}\r\n").into_bytes();
    request.extend_from_slice(body);
    request
}

/// A chunked `POST` with this (possibly broken) chunked body.
fn chunked(body: &[u8]) -> Vec<u8> {
    post("Transfer-Encoding: chunked\r\n", body)
}

fn rows(table: &[(&[u8], u16)]) -> Vec<(Vec<u8>, u16)> {
    table.iter().map(|(request, status)| (request.to_vec(), *status)).collect()
}

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    let front = Front::start("");
    check_table(
        &front,
        &[
            (post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400),
            (post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"), 400),
            (post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400),
            (post("Transfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"), 400),
        ],
    );
}

#[test]
fn duplicate_or_malformed_content_length_is_refused() {
    let front = Front::start("");
    let table: Vec<(Vec<u8>, u16)> = [
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 1, 1\r\n",
        "Content-Length: 5,\r\n",
        "Content-Length: +5\r\n",
        "Content-Length: -1\r\n",
        "Content-Length:  5 5\r\n",
        "Content-Length: 0x5\r\n",
        "Content-Length: 5a\r\n",
        "Content-Length: 5.0\r\n",
        "Content-Length: \r\n",
        "Content-Length: 99999999999999999999999\r\n",
        "Content-Length: 18446744073709551616\r\n",
    ]
    .iter()
    .map(|fields| (post(fields, b"hello"), 400))
    .collect();
    check_table(&front, &table);
}

#[test]
fn transfer_encoding_that_is_not_finally_chunked_or_is_unknown_is_refused() {
    let front = Front::start("");
    let body = b"5\r\nhello\r\n0\r\n\r\n";
    let table: Vec<(Vec<u8>, u16)> = [
        ("Transfer-Encoding: gzip\r\n", 400),
        ("Transfer-Encoding: chunked, gzip\r\n", 400),
        ("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", 400),
        ("Transfer-Encoding: chunked, chunked\r\n", 400),
        ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400),
        ("Transfer-Encoding: \r\n", 400),
        ("Transfer-Encoding: foo\r\n", 501),
        ("Transfer-Encoding: foo, chunked\r\n", 501),
        ("Transfer-Encoding: chunked;x=1\r\n", 501),
        ("Transfer-Encoding: xchunked\r\n", 501),
        ("Transfer-Encoding: \"chunked\"\r\n", 501),
    ]
    .iter()
    .map(|(fields, status)| (post(fields, body), *status))
    .collect();
    check_table(&front, &table);
}

#[test]
fn transfer_encoding_on_http_1_0_is_refused() {
    let front = Front::start("");
    check_table(
        &front,
        &rows(&[
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello", 400),
        ]),
    );
}

#[test]
fn bad_chunk_framing_in_the_body_is_refused() {
    let front = Front::start("");
    let bodies: &[&[u8]] = &[
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"+5\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5 5\r\nhello\r\n0\r\n\r\n",
        b"g\r\nhello\r\n0\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",
        b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        b"10000000000000000\r\nhello\r\n0\r\n\r\n",
        // Good first chunk, then a bad size: the head and "hello" may already be upstream.
        b"5\r\nhello\r\n0x0\r\n\r\n",
        // Chunk data not followed by CRLF, or longer than its size.
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"5\r\nhello0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"2\r\nhello\r\n0\r\n\r\n",
        b"3\r\nhello\r\n0\r\n\r\n",
        // Bare LF or bare CR in chunk lines.
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r\n0\n\r\n",
        b"5\r\nhello\r\n0\r\n\n",
        b"5\rhello\r\n0\r\n\r\n",
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",
        b"5;a\nb\r\nhello\r\n0\r\n\r\n",
        // Control bytes in an extension; a malformed trailer field.
        b"5;\x01\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\nnot a field\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n",
    ];
    let mut table: Vec<(Vec<u8>, u16)> = bodies.iter().map(|body| (chunked(body), 400)).collect();
    // A trailer section longer than sluice is willing to read (16 KiB).
    let long_trailers =
        format!("0\r\n{}\r\n", "X-T: 01234567890123456789012345678901234567890123456789\r\n".repeat(400));
    table.push((chunked(long_trailers.as_bytes()), 400));
    check_table(&front, &table);
}

#[test]
fn malformed_header_lines_are_refused() {
    let front = Front::start("");
    check_table(
        &front,
        &rows(&[
            // obs-fold: a line starting with a space or a tab continues the one before.
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n 5\r\n\r\nhello", 400),
            // Whitespace before the colon, an empty or non-token name.
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX@Y: z\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-\xffA: b\r\n\r\n", 400),
            // Control characters in a value.
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\x00\r\n\r\n", 400),
            // Bare LF and bare CR line endings.
            (b"GET / HTTP/1.1\nHost: x\n\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\r\n\r\n", 400),
            (b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400),
        ]),
    );
}

#[test]
fn missing_duplicate_or_malformed_host_is_refused() {
    let front = Front::start("");
    check_table(
        &front,
        &rows(&[
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
            (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ]),
    );
}

#[test]
fn malformed_request_targets_are_refused() {
    let front = Front::start("");
    check_table(
        &front,
        &rows(&[
            (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET http://user@x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET http:///x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ]),
    );
}

#[test]
fn unsupported_http_versions_get_505() {
    let front = Front::start("");
    check_table(
        &front,
        &rows(&[
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            (b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505),
            (b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505),
        ]),
    );
}

#[test]
fn garbage_request_lines_are_refused() {
    let front = Front::start("");
    check_table(
        &front,
        &rows(&[
            (b"hello\r\n\r\n", 400),
            (b"hello world\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET\t/\tHTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b" GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
        ]),
    );
}

#[test]

fn request_lines_with_a_broken_version_field_are_malformed_not_unsupported() {
    let front = Front::start("");
    check_table(
        &front,
        &rows(&[
            (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400),
            (b"GET / FOO/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET / http/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /\r\n\r\n", 400),
        ]),
    );
}

#[test]
fn unsupported_expectation_gets_417() {
    let front = Front::start("");
    check_table(
        &front,
        &[
            (post("Expect: something-else\r\nContent-Length: 5\r\n", b"hello"), 417),
            (post("Expect: 100-continue, something-else\r\nContent-Length: 5\r\n", b"hello"), 417),
            (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n".to_vec(), 417),
        ],
    );
}

#[test]
fn connect_is_not_implemented() {
    let front = Front::start("");
    check_table(
        &front,
        &rows(&[
            (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
            (b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\nSSH-2.0-x\r\n", 501),
        ]),
    );
}

#[test]
fn head_larger_than_max_header_bytes_gets_431() {
    let front = Front::start(r#""limits": {"maxHeaderBytes": 2048},"#);
    let long = |n: usize| format!("GET / HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(n)).into_bytes();
    check_table(
        &front,
        &[
            (long(2100), 431),
            // Much larger than the read buffer: sluice closes with bytes it never read.
            (long(50_000), 431),
            // Many small fields adding up.
            (
                (0..90).fold(b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec(), |mut r, i| {
                    r.extend(format!("X-Field-{i}: {}\r\n", "v".repeat(20)).as_bytes());
                    r
                }),
                431,
            ),
        ],
    );
}

#[test]
fn request_line_longer_than_max_header_bytes_gets_414_while_long_fields_stay_431() {
    let target = |n: usize| format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(n)).into_bytes();
    let field = |n: usize| format!("GET / HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(n)).into_bytes();
    // The default limit, with a 70 kB target.
    check_table(&Front::start(""), &rows(&[(&target(70_000), 414), (&field(70_000), 431)]));
    let front = Front::start(r#""limits": {"maxHeaderBytes": 2048},"#);
    check_table(
        &front,
        &[
            (target(2100), 414),
            // Empty lines before the request line are skipped; the line is still too long.
            ([&b"\r\n"[..], &target(2100)].concat(), 414),
            // The line fits; the line and a field together do not.
            (
                format!("GET /{} HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n", "a".repeat(1500), "b".repeat(1000))
                    .into_bytes(),
                431,
            ),
        ],
    );
}

#[test]
fn more_than_100_header_fields_gets_431() {
    let front = Front::start("");
    let mut request = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..100 {
        request.extend(format!("X-F{i}: v\r\n").as_bytes());
    }
    request.extend(b"\r\n");
    check_table(&front, &[(request, 431)]);
}

#[test]
fn exactly_100_header_fields_are_forwarded() {
    let front = Front::start("");
    let mut request = b"GET /hundred HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    for i in 0..98 {
        request.extend(format!("X-F{i}: v\r\n").as_bytes());
    }
    request.extend(b"\r\n");
    let transcript = send_raw(front.sluice.addr, &request);
    let status = first_answer(&transcript.bytes).map(|a| a.status);
    assert_eq!(status, Ok(200), "sluice sent b\"{}\"", transcript.bytes.escape_ascii());
    let seen = front.forwarded();
    assert_eq!(seen.len(), 1, "{:?}", describe(&seen));
    assert_eq!(seen[0].header("x-f97"), Some("v"));
}

#[test]
fn content_length_over_max_body_bytes_gets_413_before_the_body_is_read() {
    let front = Front::start(LIMIT_1K);
    check_table(
        &front,
        &[
            // The head alone: sluice must not wait for the body to answer.
            (post("Content-Length: 1025\r\n", b""), 413),
            (post("Content-Length: 2000\r\n", &[b'a'; 2000]), 413),
            (post("Content-Length: 18446744073709551615\r\n", b"hello"), 413),
            // No `100 Continue` first: the answer is final.
            (post("Expect: 100-continue\r\nContent-Length: 2000\r\n", b""), 413),
            // A body far larger than the read buffer, already on its way.
            (post("Content-Length: 200000\r\n", &[b'a'; 200_000]), 413),
        ],
    );
    // At the limit is fine.
    let transcript = send_raw(front.sluice.addr, &post("Content-Length: 1024\r\nConnection: close\r\n", &[b'b'; 1024]));
    assert_eq!(first_answer(&transcript.bytes).map(|a| a.status), Ok(200), "b\"{}\"", transcript.bytes.escape_ascii());
    assert_eq!(front.forwarded().last().map(|s| s.body.len()), Some(1024));
}

#[test]
fn chunked_body_over_max_body_bytes_gets_413_and_close() {
    let front = Front::start(LIMIT_1K);
    let data = [b'c'; 1024];
    let one_big = [b"401\r\n".as_slice(), &data, b"c\r\n0\r\n\r\n"].concat();
    let two = [b"400\r\n".as_slice(), &data, b"\r\n1\r\nc\r\n0\r\n\r\n"].concat();
    check_table(&front, &[(chunked(&one_big), 413), (chunked(&two), 413)]);
}

/// Sends `first` (a head and the start of a good body, its data bytes all `d`) to a sluice
/// started with `extra`, waits until sluice has relayed all of it to a raw backend, then sends
/// `rest` (nothing means stalling). Checks that the client is refused with `status` and
/// returns what the backend connection carried until sluice closed it.
fn refused_mid_stream(extra: &str, first: &[u8], rest: &[u8], status: u16) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sluice = Sluice::start(&[&url], &format!(r#"{BASE} "healthCheckInterval": "1h", {extra}"#));
    let report = |what: &str, upstream: &[u8]| {
        format!(
            "{what}\nclient sent: b\"{}\" then b\"{}\"\nbackend got: b\"{}\"",
            first.escape_ascii(),
            rest.escape_ascii(),
            upstream.escape_ascii()
        )
    };
    let mut client = connect(sluice.addr);
    let started = Instant::now();
    client.write_all(first).unwrap();
    // The first connection that is not a health probe is the one carrying the request.
    let mut upstream = None;
    let accepted = wait_until(IO_TIMEOUT, || {
        let Ok((stream, _)) = listener.accept() else { return false };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut got = Vec::new();
        while find(&got, b"\r\n\r\n").is_none() {
            if read_some(&stream, &mut got) == 0 {
                return false;
            }
        }
        if find(&got, PROBE_USER_AGENT.as_bytes()).is_some() {
            return false;
        }
        upstream = Some((stream, got));
        true
    });
    assert!(accepted, "{}", report("sluice never connected to the backend", b""));
    let (mut stream, mut got) = upstream.unwrap();
    let count_d = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'd').count();
    let first_body = &first[find(first, b"\r\n\r\n").unwrap() + 4..];
    while count_d(&got) < count_d(first_body) {
        if read_some(&stream, &mut got) == 0 {
            panic!("{}", report("the backend connection ended before the start of the body arrived", &got));
        }
    }
    let _ = client.write_all(rest);
    let transcript = read_until_close(&mut client, started);
    if let Some(problem) = refusal_problem(&transcript, status) {
        panic!("{}", report(&format!("{problem}; sluice sent b\"{}\"", transcript.bytes.escape_ascii()), &got));
    }
    let upstream_rest = read_until_close(&mut stream, Instant::now());
    got.extend_from_slice(&upstream_rest.bytes);
    assert!(upstream_rest.closed, "{}", report("the backend connection was left open", &got));
    got
}

/// Reads once from `stream` onto `got`; returns how many bytes came (0 at close or error).
fn read_some(mut stream: &TcpStream, got: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).unwrap_or(0);
    got.extend_from_slice(&chunk[..n]);
    n
}

#[test]
fn chunked_body_going_over_the_limit_mid_stream_gets_413_and_the_backend_no_complete_request() {
    let first = chunked(&[b"200\r\n".as_slice(), &[b'd'; 512], b"\r\n"].concat());
    let rest = [b"201\r\n".as_slice(), &[b'e'; 513], b"\r\n0\r\n\r\n"].concat();
    let upstream = refused_mid_stream(LIMIT_1K, &first, &rest, 413);
    assert!(!upstream.ends_with(b"0\r\n\r\n"), "complete request upstream: b\"{}\"", upstream.escape_ascii());
    assert!(find(&upstream, b"eee").is_none(), "data over the limit went upstream: b\"{}\"", upstream.escape_ascii());
}

#[test]
fn chunk_framing_broken_mid_stream_gets_400_and_the_backend_no_complete_request() {
    let first = chunked(&[b"10\r\n".as_slice(), &[b'd'; 16], b"\r\n"].concat());
    for rest in [&b"0x0\r\n\r\n"[..], b"5\r\neeeeeX\r\n0\r\n\r\n", b"5\r\neeeee\r\n0\n\r\n"] {
        let upstream = refused_mid_stream("", &first, rest, 400);
        let complete = upstream.ends_with(b"0\r\n\r\n");
        assert!(
            !complete,
            "complete request upstream after b\"{}\": b\"{}\"",
            rest.escape_ascii(),
            upstream.escape_ascii()
        );
    }
}

#[test]

fn chunk_line_longer_than_4_kib_is_refused_even_when_it_arrives_whole() {
    let front = Front::start("");
    let long_extension = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(5000));
    check_table(&front, &[(chunked(long_extension.as_bytes()), 400)]);
}

#[test]
fn chunk_line_longer_than_4_kib_is_refused_while_it_streams_in() {
    let first = chunked(&[b"10\r\n".as_slice(), &[b'd'; 16], b"\r\n"].concat());
    let unfinished_line = format!("5;{}", "e".repeat(5000));
    let upstream = refused_mid_stream("", &first, unfinished_line.as_bytes(), 400);
    assert!(find(&upstream, b"eee").is_none(), "backend got b\"{}\"", upstream.escape_ascii());
}

#[test]
fn body_that_stalls_gets_408_and_the_backend_connection_is_closed() {
    // A body this small is read whole before a backend is picked unless buffering is off;
    // this is the streaming path (tests/fairness.rs has the buffered one).
    let extra = r#""timeouts": {"client": "300ms"}, "limits": {"bufferBodyBytes": 0},"#;
    let first = post("Content-Length: 10\r\n", b"ddddd");
    let upstream = refused_mid_stream(extra, &first, b"", 408);
    let body_upstream = upstream.len() - find(&upstream, b"\r\n\r\n").unwrap() - 4;
    assert_eq!(body_upstream, 5, "backend got b\"{}\"", upstream.escape_ascii());
}

#[test]
fn head_trickling_in_slower_than_client_header_timeout_gets_408_and_close() {
    let front = Front::start(r#""timeouts": {"clientHeader": "300ms", "keepAlive": "5s"},"#);
    let head = b"GET /slow HTTP/1.1\r\nHost: x\r\nUser-Agent: one byte every 50 ms, three seconds in all\r\n\r\n";
    let mut stream = connect(front.sluice.addr);
    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    for byte in head {
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        // Waiting for an answer is what spaces the bytes out.
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk) {
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                break;
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(_) => break,
        }
    }
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut transcript = read_until_close(&mut stream, started);
    answer.append(&mut transcript.bytes);
    transcript.bytes = answer;
    let problem = refusal_problem(&transcript, 408);
    assert!(problem.is_none(), "{problem:?}: sluice sent b\"{}\"", transcript.bytes.escape_ascii());
    // The deadline counts from the head's first byte; bytes trickling in do not extend it (the
    // whole head would take three seconds).
    assert!(
        (Duration::from_millis(250)..Duration::from_millis(2500)).contains(&transcript.elapsed),
        "408 came after {:?}",
        transcript.elapsed
    );
    assert!(front.forwarded().is_empty(), "{:?}", describe(&front.forwarded()));
}

#[test]
fn connection_that_sends_nothing_gets_408_after_client_header_timeout() {
    let front = Front::start(r#""timeouts": {"clientHeader": "300ms", "keepAlive": "5s"},"#);
    let transcript = send_raw(front.sluice.addr, b"");
    let problem = refusal_problem(&transcript, 408);
    assert!(problem.is_none(), "{problem:?}: sluice sent b\"{}\"", transcript.bytes.escape_ascii());
    assert!(
        (Duration::from_millis(250)..Duration::from_millis(4000)).contains(&transcript.elapsed),
        "408 came after {:?}; the first head waits clientHeader (300 ms), not keepAlive (5 s)",
        transcript.elapsed
    );
}

#[test]
fn idle_keep_alive_connection_is_closed_silently_after_keep_alive_timeout() {
    let front = Front::start(r#""timeouts": {"clientHeader": "5s", "keepAlive": "300ms"},"#);
    let transcript = send_raw(front.sluice.addr, b"GET /once HTTP/1.1\r\nHost: x\r\n\r\n");
    let answer = first_answer(&transcript.bytes);
    let report = format!(
        "sluice sent b\"{}\" (closed: {}, after {:?})",
        transcript.bytes.escape_ascii(),
        transcript.closed,
        transcript.elapsed
    );
    let answer = answer.unwrap_or_else(|e| panic!("{e}: {report}"));
    assert_eq!((answer.status, answer.closes), (200, false), "{report}");
    assert_eq!(answer.len, transcript.bytes.len(), "no 408 or anything else after the response: {report}");
    assert!(transcript.closed, "{report}");
    assert!(
        (Duration::from_millis(250)..Duration::from_millis(4000)).contains(&transcript.elapsed),
        "closed after {:?}; expected keepAlive (300 ms), not clientHeader (5 s)",
        transcript.elapsed
    );
}

#[test]
fn second_head_stalling_on_a_kept_alive_connection_gets_408() {
    let front = Front::start(r#""timeouts": {"clientHeader": "300ms", "keepAlive": "5s"},"#);
    let transcript = send_raw(front.sluice.addr, b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHo");
    let report = format!("sluice sent b\"{}\" (closed: {})", transcript.bytes.escape_ascii(), transcript.closed);
    let first = first_answer(&transcript.bytes).unwrap_or_else(|e| panic!("{e}: {report}"));
    assert_eq!(first.status, 200, "{report}");
    let rest = Transcript { bytes: transcript.bytes[first.len..].to_vec(), ..transcript };
    assert_eq!(refusal_problem(&rest, 408), None, "{report}");
    assert_eq!(describe(&front.forwarded()), ["GET /first body=\"\""]);
}

#[test]
fn bytes_after_a_refused_request_are_never_forwarded() {
    let front = Front::start(LIMIT_1K);
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let table: Vec<(Vec<u8>, u16)> = [
        // CL.TE and TE.CL: one reading ends the body where the other starts a request.
        ("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", format!("0\r\n\r\n{smuggled}"), 400),
        ("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", format!("8\r\nSMUGGLED\r\n0\r\n\r\n{smuggled}"), 400),
        ("Content-Length: 0\r\nContent-Length: 36\r\n", smuggled.to_string(), 400),
        ("Transfer-Encoding: chunked, identity\r\n", format!("0\r\n\r\n{smuggled}"), 501),
        ("X-A: a\r\n Transfer-Encoding: chunked\r\n", format!("0\r\n\r\n{smuggled}"), 400),
        ("Transfer-Encoding: chunked\r\n", format!("0x0\r\n\r\n{smuggled}"), 400),
        ("Expect: nothing\r\nContent-Length: 0\r\n", smuggled.to_string(), 417),
        ("Content-Length: 2000\r\n", smuggled.to_string(), 413),
    ]
    .iter()
    .map(|(fields, body, status)| (post(fields, body.as_bytes()), *status))
    .collect();
    check_table(&front, &table);
    let connect_then = format!("CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n{smuggled}");
    check_table(&front, &[(connect_then.into_bytes(), 501)]);
    assert!(front.forwarded().iter().all(|s| s.target != "/smuggled"));
}

#[test]
fn refusal_after_a_good_request_on_a_kept_alive_connection_still_closes_it() {
    let front = Front::start("");
    let request = b"GET /good HTTP/1.1\r\nHost: x\r\n\r\n\
                    POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
                    GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let transcript = send_raw(front.sluice.addr, request);
    let report = format!("sluice sent b\"{}\" (closed: {})", transcript.bytes.escape_ascii(), transcript.closed);
    let first = first_answer(&transcript.bytes).unwrap_or_else(|e| panic!("{e}: {report}"));
    assert_eq!((first.status, first.closes), (200, false), "{report}");
    let rest = Transcript { bytes: transcript.bytes[first.len..].to_vec(), ..transcript };
    assert_eq!(refusal_problem(&rest, 400), None, "{report}");
    assert_eq!(describe(&front.forwarded()), ["GET /good body=\"\""]);
}

#[test]
fn chunked_body_with_extensions_and_trailers_reaches_the_backend_decoded() {
    let front = Front::start("");
    let body = b"5;name=value\r\nhello\r\n6 ; q=\"a b\"\r\n world\r\n0;last\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n";
    let mut client = front.sluice.connect();
    client.send(&chunked(body));
    // A second request on the same connection shows that the chunked body ended where it should.
    client.send(b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    for path in ["/", "/next"] {
        let response = client.response().unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(response.status, 200, "{path}: {}", response.raw_head);
    }
    let seen = front.forwarded();
    assert_eq!(describe(&seen), ["POST / body=\"hello world\"", "GET /next body=\"\""]);
    assert_eq!(seen[0].header("x-trailer"), None, "trailer fields are dropped, not moved into the head");
}

#[test]
fn transfer_encoding_is_matched_case_insensitively() {
    let front = Front::start("");
    let request = post("Transfer-Encoding: Chunked\r\nConnection: close\r\n", b"5\r\nhello\r\n0\r\n\r\n");
    let transcript = send_raw(front.sluice.addr, &request);
    let status = first_answer(&transcript.bytes).map(|a| a.status);
    assert_eq!(status, Ok(200), "sluice sent b\"{}\"", transcript.bytes.escape_ascii());
    assert_eq!(describe(&front.forwarded()), ["POST / body=\"hello\""]);
}

#[test]
fn absolute_form_target_reaches_the_backend_in_origin_form_with_its_host() {
    let front = Front::start("");
    let request = b"GET http://example.com/x?y=1 HTTP/1.1\r\nHost: ignored.example\r\nConnection: close\r\n\r\n";
    let transcript = send_raw(front.sluice.addr, request);
    let status = first_answer(&transcript.bytes).map(|a| a.status);
    assert_eq!(status, Ok(200), "sluice sent b\"{}\"", transcript.bytes.escape_ascii());
    let seen = front.forwarded();
    assert_eq!(seen.len(), 1, "{:?}", describe(&seen));
    let head = String::from_utf8_lossy(&seen[0].raw_head);
    assert!(head.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{head}");
    assert_eq!(seen[0].header("host"), Some("example.com"), "{head}");
    assert_eq!(seen[0].header_count("host"), 1, "{head}");
}

#[test]
fn http_1_0_request_without_host_is_forwarded() {
    let front = Front::start("");
    let transcript = send_raw(front.sluice.addr, b"GET /old HTTP/1.0\r\n\r\n");
    let report = format!("sluice sent b\"{}\" (closed: {})", transcript.bytes.escape_ascii(), transcript.closed);
    let answer = first_answer(&transcript.bytes).unwrap_or_else(|e| panic!("{e}: {report}"));
    assert_eq!(answer.status, 200, "{report}");
    assert!(transcript.closed, "HTTP/1.0 without keep-alive closes: {report}");
    assert_eq!(describe(&front.forwarded()), ["GET /old body=\"\""]);
}

#[test]

fn http_1_0_request_without_host_reaches_the_backend_with_a_host_field() {
    let front = Front::start("");
    let transcript = send_raw(front.sluice.addr, b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(first_answer(&transcript.bytes).map(|a| a.status), Ok(200));
    let seen = front.forwarded();
    assert_eq!(seen.len(), 1, "{:?}", describe(&seen));
    let head = String::from_utf8_lossy(&seen[0].raw_head);
    // sluice speaks HTTP/1.1 to backends, and RFC 9112 section 3.2 requires Host in every
    // HTTP/1.1 request (empty when there is no authority).
    assert!(head.starts_with("GET /old HTTP/1.1\r\n"), "{head}");
    assert_eq!(seen[0].header_count("host"), 1, "{head}");
}

#[test]

fn connection_option_naming_host_does_not_strip_host_from_the_forwarded_request() {
    let front = Front::start("");
    let request = b"GET /hop HTTP/1.1\r\nHost: x\r\nConnection: close, Host\r\n\r\n";
    let transcript = send_raw(front.sluice.addr, request);
    assert_eq!(first_answer(&transcript.bytes).map(|a| a.status), Ok(200), "b\"{}\"", transcript.bytes.escape_ascii());
    let seen = front.forwarded();
    assert_eq!(seen.len(), 1, "{:?}", describe(&seen));
    let head = String::from_utf8_lossy(&seen[0].raw_head);
    assert_eq!(seen[0].header("host"), Some("x"), "{head}");
}
