//! Streaming one body from a [`BufferedStream`] to a socket, by its framing, through fixed
//! buffers: a 10 GiB body costs the same memory as a 10-byte one.
//!
//! Chunked bodies are decoded strictly (hex sizes without signs, spaces or overflow, CRLF after
//! every chunk, well-formed trailer lines) and written out again as fresh chunks, so the next
//! hop only ever sees canonical framing. Chunk extensions and trailer fields are dropped,
//! which RFC 9112 section 7.1 allows.

use super::framing::BodyFraming;
use super::stream::{is_progress_only, write_both, BufferedStream, TimedRead};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Output waiting in `pending` is written once it reaches this size, or before any read that
/// could block. A head and the start of its body usually leave in one write.
const COALESCE_BYTES: usize = 64 * 1024;
/// A chunk-size line or a trailer line longer than this is refused.
const MAX_CHUNK_LINE_BYTES: usize = 4096;
/// The whole trailer section may not be longer than this.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

#[derive(Debug)]
pub enum RelayError {
    /// Reading from the sender failed (timeout, reset).
    Read(io::Error),
    /// Writing to the receiver failed.
    Write(io::Error),
    /// The sender closed before the body was complete.
    Truncated,
    /// The chunked coding was broken.
    Malformed(&'static str),
    /// The body went over the configured limit.
    TooLarge,
}

/// Where a body goes: a socket, with output collected in `pending` and written in as few
/// calls as possible, chunk-encoded when `chunked`. (Any [`Write`] will do, for tests.)
pub struct Sink<'a, W: Write = &'a TcpStream> {
    dst: W,
    pending: &'a mut Vec<u8>,
    chunked: bool,
}

impl<'a, W: Write> Sink<'a, W> {
    /// `pending` may already hold bytes (a head) to go out first.
    pub fn new(dst: W, pending: &'a mut Vec<u8>, chunked: bool) -> Sink<'a, W> {
        Sink { dst, pending, chunked }
    }

    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.chunked {
            let _ = write!(self.pending, "{:x}\r\n", bytes.len());
        }
        if self.pending.len() + bytes.len() <= COALESCE_BYTES {
            self.pending.extend_from_slice(bytes);
        } else {
            write_both(&mut self.dst, self.pending, bytes)?;
            self.pending.clear();
        }
        if self.chunked {
            self.pending.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.dst.write_all(self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    fn end(&mut self) -> io::Result<()> {
        if self.chunked {
            self.pending.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush()
    }
}

/// Copies one body framed as `framing` from `src` to `sink`, refusing to pass more than
/// `limit` bytes of chunked data. Returns the body's length.
pub fn relay_body<S: TimedRead, W: Write>(
    src: &mut BufferedStream<S>,
    framing: BodyFraming,
    sink: &mut Sink<W>,
    limit: Option<u64>,
) -> Result<u64, RelayError> {
    let length = match framing {
        BodyFraming::Empty => 0,
        BodyFraming::Length(n) => {
            copy_exact(src, n, sink)?;
            n
        }
        BodyFraming::Chunked => copy_chunked(src, sink, limit.unwrap_or(u64::MAX))?,
        BodyFraming::UntilClose => copy_until_close(src, sink)?,
    };
    sink.end().map_err(RelayError::Write)?;
    Ok(length)
}

/// Reads more into `src`, after writing what `sink` holds so the peer is never kept waiting.
fn fill<S: TimedRead, W: Write>(src: &mut BufferedStream<S>, sink: &mut Sink<W>) -> Result<(), RelayError> {
    sink.flush().map_err(RelayError::Write)?;
    loop {
        return match src.fill() {
            Ok(0) => Err(RelayError::Truncated),
            Ok(_) => Ok(()),
            Err(e) if is_progress_only(&e) => continue,
            Err(e) => Err(RelayError::Read(e)),
        };
    }
}

fn copy_exact<S: TimedRead, W: Write>(
    src: &mut BufferedStream<S>,
    mut left: u64,
    sink: &mut Sink<W>,
) -> Result<(), RelayError> {
    while left > 0 {
        if src.buffered().is_empty() {
            fill(src, sink)?;
        }
        let take = src.buffered().len().min(usize::try_from(left).unwrap_or(usize::MAX));
        sink.data(&src.buffered()[..take]).map_err(RelayError::Write)?;
        src.consume(take);
        left -= take as u64;
    }
    Ok(())
}

fn copy_until_close<S: TimedRead, W: Write>(
    src: &mut BufferedStream<S>,
    sink: &mut Sink<W>,
) -> Result<u64, RelayError> {
    let mut total = 0;
    loop {
        if src.buffered().is_empty() {
            match fill(src, sink) {
                Err(RelayError::Truncated) => return Ok(total),
                other => other?,
            }
        }
        let n = src.buffered().len();
        sink.data(src.buffered()).map_err(RelayError::Write)?;
        src.consume(n);
        total += n as u64;
    }
}

fn copy_chunked<S: TimedRead, W: Write>(
    src: &mut BufferedStream<S>,
    sink: &mut Sink<W>,
    limit: u64,
) -> Result<u64, RelayError> {
    let mut total: u64 = 0;
    loop {
        let line_len = read_line(src, sink)?;
        let size = parse_chunk_size(&src.buffered()[..line_len - 2])?;
        src.consume(line_len);
        if size == 0 {
            skip_trailers(src, sink)?;
            return Ok(total);
        }
        total = total.checked_add(size).ok_or(RelayError::TooLarge)?;
        if total > limit {
            return Err(RelayError::TooLarge);
        }
        copy_exact(src, size, sink)?;
        while src.buffered().len() < 2 {
            fill(src, sink)?;
        }
        if &src.buffered()[..2] != b"\r\n" {
            return Err(RelayError::Malformed("chunk data not followed by CRLF"));
        }
        src.consume(2);
    }
}

/// Makes sure one whole CRLF-terminated line is buffered; returns its length with the CRLF.
fn read_line<S: TimedRead, W: Write>(src: &mut BufferedStream<S>, sink: &mut Sink<W>) -> Result<usize, RelayError> {
    loop {
        if let Some(lf) = src.buffered().iter().position(|&b| b == b'\n') {
            if lf + 1 > MAX_CHUNK_LINE_BYTES {
                return Err(RelayError::Malformed("chunk line too long"));
            }
            if lf == 0 || src.buffered()[lf - 1] != b'\r' {
                return Err(RelayError::Malformed("chunk line does not end in CRLF"));
            }
            return Ok(lf + 1);
        }
        if src.buffered().len() >= MAX_CHUNK_LINE_BYTES || src.is_full() {
            return Err(RelayError::Malformed("chunk line too long"));
        }
        fill(src, sink)?;
    }
}

/// `1*HEXDIG [ BWS ";" chunk-ext ]`, with the extension only checked for stray control bytes.
fn parse_chunk_size(line: &[u8]) -> Result<u64, RelayError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(RelayError::Malformed("bad chunk size"));
    }
    let size = line[..digits]
        .iter()
        .try_fold(0u64, |n, &d| n.checked_mul(16)?.checked_add(u64::from((d as char).to_digit(16)?)))
        .ok_or(RelayError::Malformed("chunk size too large"))?;
    let extension = &line[digits..];
    if !extension.is_empty() {
        let after_space = extension.trim_ascii_start();
        let clean = extension.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80);
        if !after_space.starts_with(b";") || !clean || extension.len() - after_space.len() != count_blanks(extension) {
            return Err(RelayError::Malformed("bad chunk size"));
        }
    }
    Ok(size)
}

fn count_blanks(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|&&b| b == b' ' || b == b'\t').count()
}

/// Reads the trailer section up to its empty line, checking that each line is a field.
fn skip_trailers<S: TimedRead, W: Write>(src: &mut BufferedStream<S>, sink: &mut Sink<W>) -> Result<(), RelayError> {
    let mut seen = 0;
    loop {
        let line_len = read_line(src, sink)?;
        if line_len == 2 {
            src.consume(2);
            return Ok(());
        }
        if !is_trailer_field(&src.buffered()[..line_len - 2]) {
            return Err(RelayError::Malformed("malformed trailer field"));
        }
        seen += line_len;
        if seen > MAX_TRAILER_BYTES {
            return Err(RelayError::Malformed("trailer section too long"));
        }
        src.consume(line_len);
    }
}

/// `field-name ":" field-value`, the value without control bytes other than tab.
fn is_trailer_field(line: &[u8]) -> bool {
    let name_len = line.iter().take_while(|&&b| is_token_byte(b)).count();
    match &line[name_len..] {
        [b':', value @ ..] => {
            name_len > 0 && value.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
        }
        _ => false,
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How [`decode_body`] feeds its bytes to the relay: the read buffer's size (as
/// `limits.maxHeaderBytes` sets a client's) and the most one read returns.
#[derive(Debug, Clone, Copy)]
pub struct Feed {
    pub buffer_bytes: usize,
    pub read_bytes: usize,
}

/// A body relayed from memory by [`decode_body`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// What the receiver got: without chunked framing from [`decode_body`], chunk-encoded
    /// from [`rechunk_body`].
    pub body: Vec<u8>,
    /// The bytes of input the body took; the rest would start the next message.
    pub used: usize,
}

/// Runs [`relay_body`] over `bytes` instead of a socket, read as `feed` says, with the
/// output unchunked. The same code the proxy runs, reachable without I/O: the fuzz targets
/// and the tests below use it.
pub fn decode_body(bytes: &[u8], feed: Feed, framing: BodyFraming, limit: Option<u64>) -> Result<Decoded, RelayError> {
    relay_from_memory(bytes, feed, framing, limit, false)
}

/// Runs [`relay_body`] over `bytes` like [`decode_body`], but with the output chunk-encoded by
/// [`Sink`], as the proxy writes a body to a peer that gets chunked framing: `body` holds the
/// bytes on that peer's wire.
pub fn rechunk_body(bytes: &[u8], feed: Feed, framing: BodyFraming, limit: Option<u64>) -> Result<Decoded, RelayError> {
    relay_from_memory(bytes, feed, framing, limit, true)
}

fn relay_from_memory(
    bytes: &[u8],
    feed: Feed,
    framing: BodyFraming,
    limit: Option<u64>,
    chunked: bool,
) -> Result<Decoded, RelayError> {
    let reader = Pieces { bytes, read_bytes: feed.read_bytes.max(1) };
    let mut src = BufferedStream::new(reader, feed.buffer_bytes.max(1));
    let mut body = Vec::new();
    let mut pending = Vec::new();
    relay_body(&mut src, framing, &mut Sink::new(&mut body, &mut pending, chunked), limit)?;
    let used = bytes.len() - src.get_ref().bytes.len() - src.buffered().len();
    Ok(Decoded { body, used })
}

/// A byte slice that gives at most `read_bytes` bytes per read, as a slow peer would.
struct Pieces<'a> {
    bytes: &'a [u8],
    read_bytes: usize,
}

impl TimedRead for Pieces<'_> {
    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.read_bytes).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        let good: &[(&[u8], u64)] =
            &[(b"0", 0), (b"a", 10), (b"FF", 255), (b"0010", 16), (b"5;ext=1", 5), (b"5 ;e", 5), (b"5\t; e=\"q\"", 5)];
        for (line, size) in good {
            assert_eq!(parse_chunk_size(line).ok(), Some(*size), "{:?}", String::from_utf8_lossy(line));
        }
        let bad: &[&[u8]] =
            &[b"", b" 5", b"+5", b"-5", b"0x5", b"5 5", b"g", b"5;\x01", b"5 ", b"10000000000000000", b"5\x0b;a"];
        for line in bad {
            assert!(parse_chunk_size(line).is_err(), "accepted {:?}", String::from_utf8_lossy(line));
        }
        assert!(parse_chunk_size(b"ffffffffffffffff").is_ok());
    }

    const ROOMY: Feed = Feed { buffer_bytes: 16 * 1024, read_bytes: 1 << 20 };

    fn decode(bytes: &[u8], feed: Feed, framing: BodyFraming) -> Result<Decoded, String> {
        decode_body(bytes, feed, framing, None).map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn chunked_bodies_decode_the_same_at_every_read_size() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\nGET /next";
        let want = Decoded { body: b"hello world".to_vec(), used: wire.len() - b"GET /next".len() };
        for read_bytes in 1..=wire.len() {
            let feed = Feed { buffer_bytes: 64, read_bytes };
            assert_eq!(decode(wire, feed, BodyFraming::Chunked), Ok(want.clone()), "read_bytes {read_bytes}");
        }
    }

    #[test]
    fn length_bodies_take_exactly_their_length() {
        let got = decode(b"abcdefGET /", Feed { buffer_bytes: 4, read_bytes: 3 }, BodyFraming::Length(6));
        assert_eq!(got, Ok(Decoded { body: b"abcdef".to_vec(), used: 6 }));
        assert_eq!(decode(b"abc", ROOMY, BodyFraming::Length(6)), Err("Truncated".to_string()));
    }

    #[test]
    fn broken_chunked_framing_is_malformed_or_truncated() {
        let cases: &[(&[u8], &str)] = &[
            (b"5\r\nhelloX\r\n0\r\n\r\n", "Malformed(\"chunk data not followed by CRLF\")"),
            (b"5\nhello\r\n0\r\n\r\n", "Malformed(\"chunk line does not end in CRLF\")"),
            (b"0\r\nbad trailer\r\n\r\n", "Malformed(\"malformed trailer field\")"),
            (b"5\r\nhel", "Truncated"),
            (b"0\r\n", "Truncated"),
        ];
        for (wire, want) in cases {
            let got = decode(wire, ROOMY, BodyFraming::Chunked);
            assert_eq!(got, Err(want.to_string()), "{:?}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn trailer_lines_must_be_fields() {
        let good: &[&[u8]] = &[b"A: b", b"A:", b"x-y:\tz \x80"];
        let bad: &[&[u8]] = &[b"0", b"A", b" ", b":b", b"A b: c", b"A : b", b"A: \x01"];
        for line in good {
            assert!(is_trailer_field(line), "refused {:?}", String::from_utf8_lossy(line));
        }
        for line in bad {
            assert!(!is_trailer_field(line), "accepted {:?}", String::from_utf8_lossy(line));
        }
    }

    /// Found by the `body_framing` fuzz target: a trailer line with no colon sliced past its end.
    #[test]
    fn a_trailer_line_without_a_colon_is_malformed_not_a_panic() {
        for wire in [&b"0\r\n0\r\n\r\n"[..], b"0\r\nX\r\n\r\n", b"0\r\n \r\n\r\n"] {
            let got = decode(wire, ROOMY, BodyFraming::Chunked);
            assert_eq!(
                got,
                Err("Malformed(\"malformed trailer field\")".to_string()),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    /// Found by the `body_framing` fuzz target: with a read buffer smaller than
    /// `MAX_CHUNK_LINE_BYTES` (`limits.maxHeaderBytes` below 4096), a longer line filled the
    /// buffer and ended as a read error, so the client got no answer instead of a 400.
    #[test]
    fn a_chunk_line_longer_than_the_read_buffer_is_malformed_not_a_read_error() {
        let mut wire = b"5;".to_vec();
        wire.extend([b'x'; 2000]);
        wire.extend(b"\r\nhello\r\n0\r\n\r\n");
        for read_bytes in [1, 100, 4096] {
            let got = decode(&wire, Feed { buffer_bytes: 1024, read_bytes }, BodyFraming::Chunked);
            assert_eq!(got, Err("Malformed(\"chunk line too long\")".to_string()), "read_bytes {read_bytes}");
        }
        let mut trailer = b"0\r\nX: ".to_vec();
        trailer.extend([b'y'; 2000]);
        trailer.extend(b"\r\n\r\n");
        let got = decode(&trailer, Feed { buffer_bytes: 1024, read_bytes: 64 }, BodyFraming::Chunked);
        assert_eq!(got, Err("Malformed(\"chunk line too long\")".to_string()));
        assert!(decode(&wire, ROOMY, BodyFraming::Chunked).is_ok());
    }

    #[test]
    fn chunked_data_over_the_limit_is_too_large() {
        let got = decode_body(b"5\r\nhello\r\n0\r\n\r\n", ROOMY, BodyFraming::Chunked, Some(4));
        assert!(matches!(got, Err(RelayError::TooLarge)), "{got:?}");
    }

    #[test]
    fn bodies_written_chunked_get_canonical_framing_without_extensions_or_trailers() {
        let rechunk = |bytes: &[u8], feed: Feed, framing: BodyFraming| {
            rechunk_body(bytes, feed, framing, None).map(|d| String::from_utf8_lossy(&d.body).into_owned()).unwrap()
        };
        let wire = b"3;x=y\r\nabc\r\n004\r\ndefg\r\n0\r\nTrailer: v\r\n\r\n";
        assert_eq!(rechunk(wire, ROOMY, BodyFraming::Chunked), "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
        let one_byte_reads = Feed { buffer_bytes: 1024, read_bytes: 1 };
        // Each read's bytes go out as one chunk.
        let pieces = "1\r\nh\r\n1\r\ne\r\n1\r\nl\r\n1\r\nl\r\n1\r\no\r\n0\r\n\r\n";
        assert_eq!(rechunk(b"hello", one_byte_reads, BodyFraming::Length(5)), pieces);
        assert_eq!(rechunk(b"", ROOMY, BodyFraming::UntilClose), "0\r\n\r\n");
    }
}
