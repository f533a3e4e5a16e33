//! The capacity estimate of `sluice --check --explain` against a measurement: the real
//! binary, a real backend, and many idle keep-alive clients, with the resident memory read
//! from /proc.

mod common;

use common::*;
use sluice::capacity::Capacity;
use sluice::config::Config;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// Idle keep-alive clients to open: enough that their memory stands out from the noise.
const CLIENTS: usize = 2_000;
const WORKERS: usize = 16;

/// The sluice process, killed when the test ends however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Connects, sends one request, reads the whole answer and keeps the connection open.
fn idle_client(addr: std::net::SocketAddr) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"\r\n\r\nok") {
        match stream.read(&mut buf) {
            Ok(0) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&answer))),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Ok(stream)
}

#[test]
fn the_memory_estimate_for_idle_clients_matches_a_measurement() {
    let limit = sluice::sys::raise_open_file_limit().expect("the open-file limit");
    if limit.after < 3 * CLIENTS as u64 {
        return skip(&format!("the open-file limit ({}) is too low for {CLIENTS} clients", limit.after));
    }
    let backend = TestBackend::named("ok");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let json = format!(
        r#"{{"listen": "127.0.0.1:{port}", "workers": {WORKERS}, "healthCheckInterval": "1m",
            "timeouts": {{"keepAlive": "5m"}}, "limits": {{"maxConnectionsPerClient": 0}},
            "servers": [{:?}]}}"#,
        backend.url()
    );
    let dir = std::env::temp_dir().join(format!("sluice-capacity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, &json).unwrap();
    let child = Command::new(SLUICE)
        .args(["--config", path.to_str().unwrap()])
        .env("RUST_LOG", "error")
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice");
    let sluice = Running(child);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()), "sluice did not start");

    let mut clients: Vec<TcpStream> = (0..4).map(|_| idle_client(addr).unwrap()).collect();
    let before = resident_bytes(sluice.0.id());
    for i in 0..CLIENTS {
        clients.push(idle_client(addr).unwrap_or_else(|e| panic!("client {i}: {e}")));
    }
    let after = resident_bytes(sluice.0.id());

    let capacity = Capacity::of(&Config::parse(&json, "capacity.json").unwrap());
    let estimated = capacity.memory_with_idle_clients(clients.len() as u64) - capacity.memory_with_idle_clients(4);
    let measured = after.saturating_sub(before);
    let report =
        format!("{CLIENTS} idle clients: measured {measured} bytes more (from {before}), estimated {estimated}");
    eprintln!("{report}");
    // Generous: the estimate is for a release build, the allocator's arenas vary, and the
    // point is the order of magnitude a reader plans with.
    let (low, high) = (estimated / 2, estimated * 2 + 1024 * 1024);
    assert!((low..=high).contains(&measured), "{report}; expected {low} to {high}");
    assert!(capacity.idle_clients >= CLIENTS as u64, "the estimate says it cannot hold {CLIENTS}: {capacity:?}");
}
