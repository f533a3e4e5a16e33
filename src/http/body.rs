//! Streaming one body from a [`BufferedStream`] to a socket, by its framing, through fixed
//! buffers: a 10 GiB body costs the same memory as a 10-byte one.
//!
//! Chunked bodies are decoded strictly (hex sizes without signs, spaces or overflow, CRLF after
//! every chunk, well-formed trailer lines) and written out again as fresh chunks, so the next
//! hop only ever sees canonical framing. Chunk extensions and trailer fields are dropped,
//! which RFC 9112 section 7.1 allows.

use super::framing::BodyFraming;
use super::stream::{write_both, BufferedStream};
use std::io::{self, Write};
use std::net::TcpStream;

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
/// calls as possible, chunk-encoded when `chunked`.
pub struct Sink<'a> {
    dst: &'a TcpStream,
    pending: &'a mut Vec<u8>,
    chunked: bool,
}

impl<'a> Sink<'a> {
    /// `pending` may already hold bytes (a head) to go out first.
    pub fn new(dst: &'a TcpStream, pending: &'a mut Vec<u8>, chunked: bool) -> Sink<'a> {
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
            write_both(self.dst, self.pending, bytes)?;
            self.pending.clear();
        }
        if self.chunked {
            self.pending.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let mut dst = self.dst;
            dst.write_all(self.pending)?;
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
pub fn relay_body(
    src: &mut BufferedStream,
    framing: BodyFraming,
    sink: &mut Sink,
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
fn fill(src: &mut BufferedStream, sink: &mut Sink) -> Result<(), RelayError> {
    sink.flush().map_err(RelayError::Write)?;
    match src.fill() {
        Ok(0) => Err(RelayError::Truncated),
        Ok(_) => Ok(()),
        Err(e) => Err(RelayError::Read(e)),
    }
}

fn copy_exact(src: &mut BufferedStream, mut left: u64, sink: &mut Sink) -> Result<(), RelayError> {
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

fn copy_until_close(src: &mut BufferedStream, sink: &mut Sink) -> Result<u64, RelayError> {
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

fn copy_chunked(src: &mut BufferedStream, sink: &mut Sink, limit: u64) -> Result<u64, RelayError> {
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
fn read_line(src: &mut BufferedStream, sink: &mut Sink) -> Result<usize, RelayError> {
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
        if src.buffered().len() >= MAX_CHUNK_LINE_BYTES {
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
fn skip_trailers(src: &mut BufferedStream, sink: &mut Sink) -> Result<(), RelayError> {
    let mut seen = 0;
    loop {
        let line_len = read_line(src, sink)?;
        if line_len == 2 {
            src.consume(2);
            return Ok(());
        }
        let line = &src.buffered()[..line_len - 2];
        let name_len = line.iter().take_while(|&&b| is_token_byte(b)).count();
        let value_ok = line[name_len + 1..].iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80);
        if name_len == 0 || line.get(name_len) != Some(&b':') || !value_ok {
            return Err(RelayError::Malformed("malformed trailer field"));
        }
        seen += line_len;
        if seen > MAX_TRAILER_BYTES {
            return Err(RelayError::Malformed("trailer section too long"));
        }
        src.consume(line_len);
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
}
