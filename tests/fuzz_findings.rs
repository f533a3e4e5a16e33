//! What the fuzz targets (fuzz/, run by scripts/fuzz.sh) found, proven end to end over real
//! sockets: each test sends the bytes that once broke sluice and checks the answer a client
//! or backend should get. The unit tests beside the fixes pin the pure functions.

mod common;

use common::*;

/// `body_framing` found it: a trailer line without a colon panicked the relay, so the client
/// lost its connection without an answer.
#[test]
fn a_chunked_request_whose_trailer_line_has_no_colon_gets_400_and_sluice_keeps_serving() {
    let backend = TestBackend::named("b");
    let sluice = Sluice::start(&[&backend.url()], r#""workers": 2,"#);
    for trailer in ["0", "X", " "] {
        let request = format!("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n{trailer}\r\n\r\n");
        let answer = exchange_raw(sluice.addr, request.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400 "), "trailer {trailer:?}: got {answer:?}");
        assert!(answer.contains("malformed trailer field"), "trailer {trailer:?}: got {answer:?}");
    }
    assert_eq!(sluice.get("/").text(), "b");
}

/// `request_head` found it: a backend's status `004` went to the client as `HTTP/1.1 4`.
#[test]
fn a_backend_status_below_100_gets_502() {
    for raw in [&b"HTTP/1.1 004 Odd\r\nContent-Length: 0\r\n\r\n"[..], b"HTTP/1.0 000 X\r\n\r\n"] {
        let raw: &'static [u8] = raw;
        let backend = raw_backend(raw);
        let sluice = Sluice::start(&[&backend.url()], r#""workers": 2, "healthCheckInterval": "1m","#);
        let r = sluice.get("/");
        assert_eq!(r.status, 502, "backend sent {:?}, client got {r:?}", String::from_utf8_lossy(raw));
    }
}

/// `body_framing` found it: with `maxHeaderBytes` below 4096, a chunk line longer than the
/// read buffer ended as a read error, and the client lost its connection without an answer.
#[test]
fn a_chunk_line_longer_than_a_small_read_buffer_gets_400() {
    let backend = TestBackend::named("b");
    // Without body buffering the read buffer is `maxHeaderBytes` long.
    let limits = r#""limits": {"maxHeaderBytes": 1024, "bufferBodyBytes": 0}"#;
    let sluice = Sluice::start(&[&backend.url()], &format!(r#""workers": 2, {limits},"#));
    let extension = "x".repeat(2000);
    let request =
        format!("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;{extension}\r\nhello\r\n0\r\n\r\n");
    let answer = exchange_raw(sluice.addr, request.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400 "), "got {answer:?}");
    assert!(answer.contains("chunk line too long"), "got {answer:?}");
    assert_eq!(backend.request_count(), 0, "the backend must not get the refused request whole");
}
