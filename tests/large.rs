//! Large bodies stream through fixed buffers: hundreds of MiB each way, in every framing,
//! without the process's memory growing with the body.

mod common;

use common::*;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

const MIB: u64 = 1024 * 1024;
const BODY_BYTES: u64 = 1024 * MIB;

/// A backend that streams: `GET /N` answers N bytes (chunked when the path ends in `c`),
/// and any request with a Content-Length body is read and answered with the byte count.
fn streaming_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || serve_streaming(stream));
        }
    });
    addr
}

fn serve_streaming(mut stream: TcpStream) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    if head.contains(&format!("User-Agent: {PROBE_USER_AGENT}")) {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let target = head.split(' ').nth(1).unwrap_or("/").to_string();
    let declared = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: ").or_else(|| l.strip_prefix("content-length: ")))
        .map(|v| v.trim().parse::<u64>().unwrap());
    let block = vec![b'x'; 64 * 1024];
    if let Some(mut left) = declared {
        let mut buf = vec![0u8; 64 * 1024];
        let mut received = 0u64;
        while left > 0 {
            let n = stream.read(&mut buf[..(left.min(65536) as usize)]).unwrap_or(0);
            if n == 0 {
                return;
            }
            received += n as u64;
            left -= n as u64;
        }
        let body = received.to_string();
        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        return;
    }
    let chunked = target.ends_with('c');
    let n: u64 = target.trim_start_matches('/').trim_end_matches('c').parse().unwrap_or(0);
    let framing = if chunked { "Transfer-Encoding: chunked".to_string() } else { format!("Content-Length: {n}") };
    if write!(stream, "HTTP/1.1 200 OK\r\n{framing}\r\nConnection: close\r\n\r\n").is_err() {
        return;
    }
    let mut left = n;
    while left > 0 {
        let take = left.min(block.len() as u64) as usize;
        let sent = if chunked {
            write!(stream, "{take:x}\r\n")
                .and_then(|_| stream.write_all(&block[..take]))
                .and_then(|_| stream.write_all(b"\r\n"))
        } else {
            stream.write_all(&block[..take])
        };
        if sent.is_err() {
            return;
        }
        left -= take as u64;
    }
    if chunked {
        let _ = stream.write_all(b"0\r\n\r\n");
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// Reads a response head, then counts body bytes until the connection closes or `expect` arrive.
fn count_download(mut stream: TcpStream, expect: u64) -> (String, u64) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut body = 0u64;
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if !head.windows(4).any(|w| w == b"\r\n\r\n") {
            head.extend_from_slice(&buf[..n]);
            if let Some(i) = find(&head, b"\r\n\r\n") {
                body += (head.len() - i - 4) as u64;
                head.truncate(i + 4);
            }
        } else {
            body += n as u64;
        }
        if body >= expect {
            break;
        }
    }
    (String::from_utf8_lossy(&head).into_owned(), body)
}

/// Reads a chunked response: its head, then every chunk, counting the data bytes; fails
/// unless the body ends with the last chunk and an empty trailer section.
fn count_chunked_download(stream: TcpStream) -> (String, u64) {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert_ne!(reader.read_line(&mut head).unwrap(), 0, "closed inside the head: {head}");
    }
    let mut data = 0u64;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let size = line.trim_end().split(';').next().and_then(|s| u64::from_str_radix(s, 16).ok());
        let size = size.unwrap_or_else(|| panic!("bad chunk size line {line:?} after {data} data bytes"));
        if size == 0 {
            let mut end = String::new();
            reader.read_line(&mut end).unwrap();
            assert_eq!(end, "\r\n", "trailers or junk after the last chunk");
            return (head, data);
        }
        let copied = io::copy(&mut (&mut reader).take(size), &mut io::sink()).unwrap();
        assert_eq!(copied, size, "a chunk of {size} bytes was cut short after {data} data bytes");
        data += size;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).unwrap();
        assert_eq!(&crlf, b"\r\n", "no CRLF after a chunk's data");
    }
}

#[test]
fn large_downloads_and_uploads_stream_without_growing_memory() {
    let backend = streaming_backend();
    let sluice = Sluice::start(&[&format!("http://{backend}")], "");
    let before = rss_bytes();

    let mut c = TcpStream::connect(sluice.addr).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(c, "GET /{BODY_BYTES} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let (head, got) = count_download(c, BODY_BYTES);
    assert!(head.contains(&format!("Content-Length: {BODY_BYTES}")), "{head}");
    assert_eq!(got, BODY_BYTES);

    let mut c = TcpStream::connect(sluice.addr).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(c, "GET /{BODY_BYTES}c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let (head, got) = count_chunked_download(c);
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    assert_eq!(got, BODY_BYTES, "data bytes of the chunked download");

    let mut c = TcpStream::connect(sluice.addr).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(c, "POST /up HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {BODY_BYTES}\r\n\r\n").unwrap();
    let block = vec![b'y'; 64 * 1024];
    for _ in 0..BODY_BYTES / block.len() as u64 {
        c.write_all(&block).unwrap();
    }
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.ends_with(&format!("\r\n\r\n{BODY_BYTES}")), "{answer}");

    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 48 * MIB, "memory grew by {} MiB while streaming {} MiB", grown / MIB, 3 * BODY_BYTES / MIB);
}
