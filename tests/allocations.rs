//! Once warmed up, sluice serves keep-alive requests without touching the heap: heads are
//! refilled in place and every buffer is reused. Counted by a global allocator that counts
//! each allocation in this test process, with a backend and a client that allocate nothing
//! while they run, so what is counted is sluice (and its few background threads).

mod common;

use common::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

/// Allocations (and reallocations) made by this process so far.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

struct CountingAllocator;

// SAFETY: every call is passed unchanged to the system allocator; counting touches only an
// atomic, never the heap.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static COUNTING: CountingAllocator = CountingAllocator;

const REQUESTS: u64 = 1000;
/// Sluice's background threads (waiting room, the once-a-second ticker) may allocate now and
/// then; the request path used to make 26 allocations per request.
const ALLOWED: u64 = REQUESTS / 10;
/// Windows of `REQUESTS` measured; the fewest allocations count. A window takes well under a
/// second, so at least one misses the ticker's turn, while an allocation on the request path
/// shows in every window.
const WINDOWS: usize = 3;

const GET: &[u8] = b"GET /a?b=c HTTP/1.1\r\nHost: test\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n";
const POST: &[u8] = b"POST /form HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello";

/// A backend that answers every request with `ok` from fixed buffers, reading a request's
/// Content-Length body if it has one.
fn quiet_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || answer_all(stream));
        }
    });
    addr
}

fn answer_all(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let mut buf = [0u8; 16 * 1024];
    let mut filled = 0;
    loop {
        let Some(head_end) = find(&buf[..filled], b"\r\n\r\n").map(|i| i + 4) else {
            match stream.read(&mut buf[filled..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => filled += n,
            }
            continue;
        };
        let message_end = head_end + content_length(&buf[..head_end]);
        if filled < message_end {
            match stream.read(&mut buf[filled..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => filled += n,
            }
            continue;
        }
        let response: &[u8] = if buf.starts_with(b"HEAD ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
        };
        if stream.write_all(response).is_err() {
            return;
        }
        buf.copy_within(message_end..filled, 0);
        filled -= message_end;
    }
}

/// The value of `Content-Length` in `head` as sluice writes it, or 0.
fn content_length(head: &[u8]) -> usize {
    let Some(start) = find(head, b"\r\nContent-Length: ").map(|i| i + 18) else { return 0 };
    head[start..].iter().take_while(|b| b.is_ascii_digit()).fold(0, |n, d| n * 10 + usize::from(d - b'0'))
}

/// Sends `request` and reads the whole `ok` answer, into a fixed buffer.
fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<(), String> {
    stream.write_all(request).map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 4096];
    let mut filled = 0;
    while !buf[..filled].ends_with(b"\r\n\r\nok") {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&buf[..filled]))),
            Ok(n) => filled += n,
            Err(e) => return Err(format!("read: {e} after {:?}", String::from_utf8_lossy(&buf[..filled]))),
        }
    }
    if !buf.starts_with(b"HTTP/1.1 200 ") {
        return Err(format!("answer: {:?}", String::from_utf8_lossy(&buf[..filled])));
    }
    Ok(())
}

/// The fewest allocations made while `REQUESTS` copies of `request` went through sluice on one
/// keep-alive connection, over `WINDOWS` windows after a warm-up on the same connection.
fn allocations_for(request: &[u8]) -> u64 {
    let backend = quiet_backend();
    let sluice = Sluice::start(&[&format!("http://{backend}")], r#""healthCheckInterval": "1m","#);
    let mut stream = TcpStream::connect(sluice.addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    for _ in 0..50 {
        exchange(&mut stream, request).unwrap();
    }
    let window = |stream: &mut TcpStream| {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for i in 0..REQUESTS {
            if let Err(e) = exchange(stream, request) {
                panic!("request {i}: {e}");
            }
        }
        ALLOCATIONS.load(Ordering::Relaxed) - before
    };
    (0..WINDOWS).map(|_| window(&mut stream)).min().unwrap()
}

/// One test for both kinds: the count is the whole process's, so nothing else in this test
/// binary may run while it counts.
#[test]
fn keep_alive_requests_allocate_nothing_once_warmed_up() {
    let gets = allocations_for(GET);
    let posts = allocations_for(POST);
    assert!(
        gets <= ALLOWED && posts <= ALLOWED,
        "allocations for {REQUESTS} GETs: {gets}, for {REQUESTS} POSTs: {posts}"
    );
}
