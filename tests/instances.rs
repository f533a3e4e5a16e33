//! Instances that agree: two sluice processes started from the same configuration file pick
//! the same backend for the same client address (ip-hash) and honour each other's sticky
//! cookies, even when backends were added to each at run time in another order. This is what
//! lets several instances run behind an L4 balancer or a floating address.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const TOKEN: &str = "instances-token";

/// A sluice process; killed when dropped.
struct Instance {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Instance {
    /// Starts `sluice -c path` and reads the addresses it listens on from its log.
    fn start(path: &Path) -> Instance {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["-c", path.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice");
        let (tx, rx) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            // Reads to the end, so the process never blocks on a full pipe.
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || admin.is_none() {
            let line = rx.recv_timeout(Duration::from_secs(10)).expect("sluice logged where it listens");
            if let Some(rest) = line.split("listening on ").nth(1) {
                addr = rest.trim().parse().ok();
            }
            if let Some(rest) = line.split("admin API on http://").nth(1) {
                admin = rest.trim().trim_end_matches('/').parse().ok();
            }
        }
        Instance { child, addr: addr.unwrap(), admin: admin.unwrap() }
    }

    fn add(&self, url: &str) {
        let r = admin_call(self.admin, "POST", "/servers", Some(TOKEN), &format!(r#"{{"url": "{url}"}}"#));
        assert_eq!(r.status, 201, "{}", r.text());
    }

    /// `GET /` from client address `from` with `extra` header lines.
    fn get_from(&self, from: Ipv4Addr, extra: &str) -> Response {
        let mut c = Client::connect_from(from, self.addr);
        c.send(format!("GET / HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n").as_bytes());
        c.response().expect("a response")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two instances of one configuration file (listening on port 0 each), in front of the first
/// two of `backends`; the others are added at run time, in opposite orders.
fn two_instances(name: &str, backends: &[TestBackend], pool_keys: &str) -> (Instance, Instance) {
    let servers: Vec<String> = backends[..2].iter().map(|b| format!("{:?}", b.url())).collect();
    let json = format!(
        r#"{{"listen": "127.0.0.1:0", "admin": {{"listen": "127.0.0.1:0", "token": "{TOKEN}"}},
            "healthCheckInterval": "1m", {pool_keys} "servers": [{}]}}"#,
        servers.join(", ")
    );
    let path = config_file(name, &json);
    let (one, two) = (Instance::start(&path), Instance::start(&path));
    for b in &backends[2..] {
        one.add(&b.url());
    }
    for b in backends[2..].iter().rev() {
        two.add(&b.url());
    }
    (one, two)
}

fn named_backends() -> Vec<TestBackend> {
    ["a", "b", "c", "d", "e"].iter().map(|n| TestBackend::named(n)).collect()
}

#[test]
fn two_instances_make_the_same_ip_hash_picks() {
    let backends = named_backends();
    let (one, two) = two_instances("instances-ip-hash", &backends, r#""algorithm": "ip-hash","#);
    let mut picks = Vec::new();
    for host in 10..60 {
        let client = Ipv4Addr::new(127, 0, 0, host);
        let (a, b) = (one.get_from(client, "").text(), two.get_from(client, "").text());
        assert_eq!(a, b, "client {client} went to {a} through one instance and to {b} through the other");
        picks.push(a);
    }
    picks.sort();
    picks.dedup();
    assert!(picks.len() >= 4, "50 clients landed on only {picks:?}");
}

#[test]
fn a_sticky_cookie_set_by_one_instance_is_honoured_by_the_other() {
    let backends = named_backends();
    let (one, two) = two_instances("instances-sticky", &backends, r#""sticky": {"cookie": "SRV"},"#);
    let mut pinned = Vec::new();
    for round in 0..5 {
        let first = one.get_from(Ipv4Addr::new(127, 0, 0, 1), "");
        let cookie = first.header("set-cookie").expect("a sticky cookie").split(';').next().unwrap().to_string();
        let backend = first.text();
        for host in [2, 3, 4] {
            let again = two.get_from(Ipv4Addr::new(127, 0, 0, host), &format!("Cookie: {cookie}\r\n"));
            assert_eq!(
                again.text(),
                backend,
                "round {round}: {cookie} set by one instance went elsewhere on the other"
            );
            assert_eq!(again.header("set-cookie"), None, "the other instance replaced {cookie}");
        }
        pinned.push(backend);
    }
    pinned.sort();
    pinned.dedup();
    assert_eq!(pinned.len(), 5, "round robin on the first instance pins each round elsewhere: {pinned:?}");
}
