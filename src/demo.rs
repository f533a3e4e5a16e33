//! The built-in demo backends behind `--demo`: one small HTTP server per configured backend
//! address on this machine, each answering with its own name so the rotation is visible.
//!
//! Used only by `sluice --demo`; nothing else depends on it.

use crate::config::Config;
use crate::http::framing::{request_framing, BodyFraming};
use crate::http::head::{read_request_head, HeadWait, RequestHead};
use crate::http::headers::is_persistent;
use crate::http::stream::BufferedStream;
use log::debug;
use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

#[derive(Debug)]
pub enum DemoError {
    /// A configured backend is not on this machine, so the demo cannot stand in for it.
    NotLocal(String),
    Bind {
        addr: SocketAddr,
        source: io::Error,
    },
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoError::NotLocal(url) => {
                write!(f, "--demo starts backends on this machine, but {url} is not a loopback address")
            }
            DemoError::Bind { addr, source } => write!(f, "demo backend cannot listen on {addr}: {source}"),
        }
    }
}

impl std::error::Error for DemoError {}

/// Starts one demo backend per server of every pool; returns their addresses.
pub fn start(config: &Config) -> Result<Vec<SocketAddr>, DemoError> {
    let servers: Vec<_> = config.pools.iter().flat_map(|p| p.servers.iter()).collect();
    let mut listeners = Vec::new();
    for server in &servers {
        let addr = server.addrs[0];
        if !addr.ip().is_loopback() {
            return Err(DemoError::NotLocal(server.url.clone()));
        }
        listeners.push(TcpListener::bind(addr).map_err(|source| DemoError::Bind { addr, source })?);
    }
    let mut addrs = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let addr = listener.local_addr().map_err(|source| DemoError::Bind { addr: servers[i].addrs[0], source })?;
        let name = format!("demo backend {} ({addr})", i + 1);
        thread::Builder::new()
            .name(format!("sluice-demo-{}", i + 1))
            .spawn(move || accept_loop(&listener, &name))
            .map_err(|source| DemoError::Bind { addr, source })?;
        addrs.push(addr);
    }
    Ok(addrs)
}

fn accept_loop(listener: &TcpListener, name: &str) {
    for stream in listener.incoming().flatten() {
        let name = name.to_string();
        let _ = thread::Builder::new().name("sluice-demo-conn".into()).spawn(move || {
            if let Err(e) = serve(stream, &name) {
                debug!("{name}: {e}");
            }
        });
    }
}

fn serve(stream: TcpStream, name: &str) -> io::Result<()> {
    let mut src = BufferedStream::new(stream, 16 * 1024);
    loop {
        let mut always = || true;
        let mut wait = HeadWait {
            first_byte: Duration::from_secs(60),
            whole: Some(Duration::from_secs(10)),
            deadline: None,
            may_block: &mut always,
            ask_again_every: None,
        };
        let Ok(head) = read_request_head(&mut src, 16 * 1024, &mut wait) else { return Ok(()) };
        let keep_alive = is_persistent(head.version, &head) && skip_body(&mut src, &head)?;
        let body = format!("Hello from {name}: {} {}\n", head.method, head.target);
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if keep_alive { "" } else { "Connection: close\r\n" }
        );
        if head.method != "HEAD" {
            response.push_str(&body);
        }
        src.get_ref().write_all(response.as_bytes())?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Reads and drops a Content-Length body; returns false when the body cannot be skipped
/// and the connection must close after the answer.
fn skip_body(src: &mut BufferedStream, head: &RequestHead) -> io::Result<bool> {
    let mut left = match request_framing(head) {
        Ok(BodyFraming::Empty) => return Ok(true),
        Ok(BodyFraming::Length(n)) => n,
        _ => return Ok(false),
    };
    while left > 0 {
        if src.buffered().is_empty() && src.fill()? == 0 {
            return Ok(false);
        }
        let take = src.buffered().len().min(usize::try_from(left).unwrap_or(usize::MAX));
        src.consume(take);
        left -= take as u64;
    }
    Ok(true)
}
