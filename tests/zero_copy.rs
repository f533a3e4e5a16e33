//! Response bodies between plain sockets are spliced (`src/zero_copy.rs`): every byte arrives
//! in order whatever the body's size and framing, the connection stays usable afterwards,
//! a body the backend cuts short cuts the client off, and `/stats` counts the spliced bytes.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

const MIB: usize = 1024 * 1024;
/// A response a backend writes after a body, unasked: it must never reach a client.
const SMUGGLED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!";

/// The body byte at `offset`: a period of 251 (a prime), so a block sent twice, skipped or
/// out of order shows.
fn pattern(offset: usize) -> u8 {
    (offset % 251) as u8
}

fn body_of(len: usize) -> Vec<u8> {
    (0..len).map(pattern).collect()
}

/// A keep-alive backend: `GET /len/N` answers N pattern bytes with a `Content-Length`,
/// `GET /extra/N` does the same with a whole second response written right after them,
/// `GET /close/N` answers them without one and closes, and `GET /short/N` declares N but
/// closes after a quarter. Counts the connections that carried a request other than a probe.
fn pattern_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counted = Arc::clone(&counted);
            thread::spawn(move || serve(stream, &counted));
        }
    });
    (addr, connections)
}

fn serve(mut stream: TcpStream, connections: &AtomicUsize) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut counted = false;
    while let Some(head) = read_head(&mut stream) {
        if head.contains(PROBE_USER_AGENT) {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
        if !counted {
            connections.fetch_add(1, Ordering::SeqCst);
            counted = true;
        }
        let target = head.split(' ').nth(1).unwrap_or("/").to_string();
        let (kind, n) = target.trim_start_matches('/').split_once('/').unwrap_or(("", "0"));
        let n: usize = n.parse().unwrap_or(0);
        let body = body_of(n);
        let sent = match kind {
            "len" => {
                write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").and_then(|_| stream.write_all(&body))
            }
            "extra" => {
                let mut all = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").into_bytes();
                all.extend_from_slice(&body);
                all.extend_from_slice(SMUGGLED);
                stream.write_all(&all)
            }
            "close" => {
                let _ = write!(stream, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                    .and_then(|_| stream.write_all(&body));
                return;
            }
            _ => {
                let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n")
                    .and_then(|_| stream.write_all(&body[..n / 4]));
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Reads one head, byte by byte so nothing after it is taken; `None` when the peer closed.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Reads one response's head and its body of `Content-Length` bytes (or, without one, up to
/// the close), and fails unless the body is `expected` pattern bytes.
fn expect_pattern_response(stream: &mut TcpStream, expected: usize) {
    let head = read_head(stream).expect("the connection closed before a response head");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let declared = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).map(|v| v.parse::<usize>().unwrap());
    let mut body = Vec::new();
    match declared {
        Some(n) => {
            assert_eq!(n, expected, "{head}");
            body.resize(n, 0);
            stream.read_exact(&mut body).unwrap_or_else(|e| panic!("body of {n} bytes cut off: {e}"));
        }
        None => {
            stream.read_to_end(&mut body).unwrap();
        }
    }
    assert_eq!(body.len(), expected, "body length");
    if let Some(at) = body.iter().enumerate().position(|(i, &b)| b != pattern(i)) {
        panic!("body of {expected} bytes differs first at byte {at}");
    }
}

fn spliced_bytes(sluice: &Sluice) -> u64 {
    sluice.admin_stats()["splicedBytes"].as_u64().expect("/stats has splicedBytes")
}

fn connect(sluice: &Sluice) -> TcpStream {
    let stream = TcpStream::connect(sluice.addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

#[test]
fn large_bodies_are_spliced_whole_and_in_order_on_a_kept_alive_connection() {
    let (backend, connections) = pattern_backend();
    let sluice = Sluice::start(&[&format!("http://{backend}")], r#""admin": {"listen": "127.0.0.1:0"},"#);
    let mut client = connect(&sluice);
    let mut spliced = spliced_bytes(&sluice);
    for size in [MIB + 3, 200 * 1024 + 1, 5 * MIB, 70_000] {
        write!(client, "GET /len/{size} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        expect_pattern_response(&mut client, size);
        let now = spliced_bytes(&sluice);
        assert!(now > spliced || size < 128 * 1024, "a body of {size} bytes was not spliced");
        assert!(now - spliced <= size as u64, "more bytes spliced ({}) than the body has ({size})", now - spliced);
        spliced = now;
    }
    write!(client, "GET /len/1000 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    expect_pattern_response(&mut client, 1000);
    assert_eq!(spliced_bytes(&sluice), spliced, "a 1000-byte body was spliced");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "the backend connection was not reused after spliced bodies");

    let mut client = connect(&sluice);
    write!(client, "GET /close/{} HTTP/1.1\r\nHost: t\r\n\r\n", 3 * MIB + 7).unwrap();
    expect_pattern_response(&mut client, 3 * MIB + 7);
    assert!(spliced_bytes(&sluice) > spliced, "a body ending at the backend's close was not spliced");
}

#[test]
fn a_spliced_body_the_backend_cuts_short_cuts_the_client_off_and_the_next_is_whole() {
    let (backend, _) = pattern_backend();
    let sluice = Sluice::start(&[&format!("http://{backend}")], r#""workers": 1, "admin": {"listen": "127.0.0.1:0"},"#);
    let mut client = connect(&sluice);
    write!(client, "GET /short/{} HTTP/1.1\r\nHost: t\r\n\r\n", 4 * MIB).unwrap();
    let mut all = Vec::new();
    read_until_closed(&mut client, &mut all, CLOSE_WITHIN).expect("the client was not cut off");
    assert!(all.starts_with(b"HTTP/1.1 200 "), "{:?}", String::from_utf8_lossy(&all[..all.len().min(100)]));
    let body = all.len() - find(&all, b"\r\n\r\n").unwrap() - 4;
    assert_eq!(body, MIB, "the client should get the quarter the backend sent, then the close");

    // The one worker relays the next body whole, with nothing of the broken one in it.
    let mut client = connect(&sluice);
    write!(client, "GET /len/{} HTTP/1.1\r\nHost: t\r\n\r\n", 2 * MIB).unwrap();
    expect_pattern_response(&mut client, 2 * MIB);
}

#[test]
fn bytes_after_a_spliced_body_keep_its_backend_connection_from_being_reused() {
    let (backend, connections) = pattern_backend();
    let sluice = Sluice::start(&[&format!("http://{backend}")], r#""admin": {"listen": "127.0.0.1:0"},"#);
    let mut client = connect(&sluice);
    write!(client, "GET /extra/{MIB} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    expect_pattern_response(&mut client, MIB);
    assert!(spliced_bytes(&sluice) > 0, "the body was not spliced");
    write!(client, "GET /len/1000 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    expect_pattern_response(&mut client, 1000);
    assert_eq!(connections.load(Ordering::SeqCst), 2, "the connection with stray bytes was used again");
}
