//! Bodies from arbitrary bytes through the relay sluice runs on sockets (`decode_body`), read
//! in pieces of every size: chunked decoding, Content-Length bodies, bodies until close.
//!
//! The first three bytes choose the framing, the read buffer's size and the size of each read;
//! the rest is the body on the wire. Nothing may panic, a relay from memory never fails with a
//! read error, the result does not depend on how the bytes were split into reads, and a decoded chunked
//! body encoded again canonically decodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::http::body::{decode_body, Decoded, Feed, RelayError};
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
    match (framing, got) {
        (BodyFraming::Chunked, Ok(decoded)) => check_reencoded(&decoded),
        (BodyFraming::Length(n), Ok(decoded)) => assert_eq!(decoded.body, wire[..n as usize]),
        (BodyFraming::UntilClose, Ok(decoded)) => assert_eq!(decoded.body, wire),
        _ => {}
    }
});

fn check_reencoded(decoded: &Decoded) {
    let mut canonical = format!("{:x}\r\n", decoded.body.len()).into_bytes();
    canonical.extend_from_slice(&decoded.body);
    canonical.extend_from_slice(b"\r\n0\r\n\r\n");
    if decoded.body.is_empty() {
        canonical = b"0\r\n\r\n".to_vec();
    }
    let again = decode_body(&canonical, ROOMY, BodyFraming::Chunked, None).map(|d| d.body);
    assert_eq!(again.ok().as_ref(), Some(&decoded.body));
}
