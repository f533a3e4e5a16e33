//! Bodies from arbitrary bytes through the relay sluice runs on sockets (`decode_body`), read
//! in pieces of every size: chunked decoding, Content-Length bodies, bodies until close.
//!
//! The first three bytes choose the framing, the read buffer's size and the size of each read;
//! the rest is the body on the wire. Nothing may panic, a relay from memory never fails with a
//! read error, the result does not depend on how the bytes were split into reads, and the same
//! body written out chunked by sluice's own writer (`Sink`, through `rechunk_body`) is
//! accepted whole by sluice's strict decoder and decodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::http::body::{decode_body, rechunk_body, Decoded, Feed, RelayError};
use sluice::http::framing::BodyFraming;

/// The smallest read buffer a client can have (`limits.maxHeaderBytes` at its minimum).
const MIN_BUFFER_BYTES: usize = 1024;
const ROOMY: Feed = Feed { buffer_bytes: 64 * 1024, read_bytes: 64 * 1024 };

fuzz_target!(|data: &[u8]| {
    let [kind, buffer, read, wire @ ..] = data else { return };
    let feed = Feed { buffer_bytes: MIN_BUFFER_BYTES + usize::from(*buffer) * 64, read_bytes: usize::from(*read) + 1 };
    let (framing, limit) = match kind % 4 {
        0 => (BodyFraming::Chunked, None),
        1 => (BodyFraming::Chunked, Some(u64::from(*kind) * 4)),
        2 => (BodyFraming::Length(u64::from(*kind) * 3), None),
        _ => (BodyFraming::UntilClose, None),
    };
    let got = decode_body(wire, feed, framing, limit);
    if let Err(RelayError::Read(e)) = &got {
        panic!("a read error from memory: {e}");
    }
    let whole = decode_body(wire, Feed { read_bytes: wire.len().max(1), ..feed }, framing, limit);
    assert_eq!(format!("{got:?}"), format!("{whole:?}"), "the split changed the result");
    let Ok(decoded) = got else { return };
    match framing {
        BodyFraming::Length(n) => assert_eq!(decoded.body, wire[..n as usize]),
        BodyFraming::UntilClose => assert_eq!(decoded.body, wire),
        _ => {}
    }
    check_rechunked(wire, feed, framing, limit, &decoded);
});

/// The body relayed with chunked output, as the proxy sends it on, must be canonical chunked
/// framing that the decoder takes whole and that carries exactly the decoded bytes.
fn check_rechunked(wire: &[u8], feed: Feed, framing: BodyFraming, limit: Option<u64>, decoded: &Decoded) {
    let rechunked = rechunk_body(wire, feed, framing, limit).expect("a body that decodes relays chunked too");
    assert_eq!(rechunked.used, decoded.used, "the chunked relay read a different amount of input");
    let out = &rechunked.body;
    let again = decode_body(out, ROOMY, BodyFraming::Chunked, None).expect("sluice's chunked output is refused");
    assert_eq!(again.body, decoded.body, "the chunked output carries other bytes");
    assert_eq!(again.used, out.len(), "bytes after the last chunk of the output");
    assert_canonical(out);
}

/// Walks `out`, already accepted by the decoder, as the framing sluice writes: lower-case hex
/// sizes without leading zeros or extensions, no empty chunk before the last, no trailers.
fn assert_canonical(mut out: &[u8]) {
    loop {
        let end = out.windows(2).position(|w| w == b"\r\n").expect("a size line without CRLF");
        let line = &out[..end];
        let hex = !line.is_empty() && line.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
        assert!(hex && (line == b"0" || line[0] != b'0'), "size line {:?}", String::from_utf8_lossy(line));
        let size = usize::from_str_radix(std::str::from_utf8(line).unwrap(), 16).unwrap();
        out = &out[end + 2..];
        if size == 0 {
            assert_eq!(out, b"\r\n", "trailers or bytes after the last chunk");
            return;
        }
        out = &out[size + 2..];
    }
}
