//! Backends found by DNS, against a real DNS server: dnsmasq on a free loopback port, whose
//! records the tests change while sluice runs (its hosts file re-read on SIGHUP; SRV records
//! from its configuration file). Backends listen on 127.0.0.2, 127.0.0.3, ... on one port,
//! as the pods behind a headless Service would.

mod common;

use common::*;
use sluice::ops::discovery::lookup;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// dnsmasq answering for `*.test` on 127.0.0.1:`port`; stopped when dropped.
struct Dnsmasq {
    child: Option<Child>,
    port: u16,
    hosts: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq with `hosts` (lines of `address name`) and `srv` (`--srv-host` values),
    /// once it answers; `None` (after `skip`) when dnsmasq is not installed.
    fn start(name: &str, hosts: &str, srv: &[String]) -> Option<Dnsmasq> {
        let Some(program) = dnsmasq_program() else {
            skip("dnsmasq is not installed (apt-get install dnsmasq-base)");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("sluice-dns-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hosts_file = dir.join("hosts");
        std::fs::write(&hosts_file, hosts).unwrap();
        let conf: String = srv.iter().map(|s| format!("srv-host={s}\n")).collect();
        let conf_file = dir.join("dnsmasq.conf");
        std::fs::write(&conf_file, conf).unwrap();
        // A port free for UDP may be taken for TCP, which dnsmasq binds too: then it exits at
        // once, and another port is tried.
        for _ in 0..20 {
            let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new(&program)
                .args(["--no-daemon", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts"])
                .args(["--local=/test/", "--local-ttl=1", "--pid-file=", "--user=root"])
                .arg(format!("--port={port}"))
                .arg(format!("--conf-file={}", conf_file.display()))
                .arg(format!("--addn-hosts={}", hosts_file.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dnsmasq");
            let mut dns = Dnsmasq { child: Some(child), port, hosts: hosts_file.clone() };
            let answers = |dns: &mut Dnsmasq| {
                let asked = lookup::query(&[dns.addr()], "nothing.test", simple_dns::TYPE::A);
                matches!(asked, Err(lookup::LookupError::NoSuchName(_)))
                    || dns.child.as_mut().unwrap().try_wait().unwrap().is_some()
            };
            assert!(wait_until(WAIT, || answers(&mut dns)), "dnsmasq did not answer on port {port}");
            if dns.child.as_mut().unwrap().try_wait().unwrap().is_none() {
                return Some(dns);
            }
        }
        panic!("dnsmasq could not start on any of 20 ports");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Replaces the hosts file and has dnsmasq read it again.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        signal(self.child.as_ref().unwrap(), "HUP");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn dnsmasq_program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("dnsmasq"))
        .find(|p| p.is_file())
}

/// Backends named after their address on 127.0.0.`hosts[i]`, all on one port.
fn backends_on_one_port(hosts: &[u8]) -> (u16, Vec<TestBackend>) {
    backends_on_one_port_with(hosts, |name, _| Reply::ok(name))
}

/// Backends on 127.0.0.`hosts[i]`, all on one port, answering with `handler(their address, request)`.
fn backends_on_one_port_with(
    hosts: &[u8],
    handler: impl Fn(&str, &Seen) -> Reply + Clone + Send + Sync + 'static,
) -> (u16, Vec<TestBackend>) {
    for _ in 0..50 {
        let first = TcpListener::bind((Ipv4Addr::new(127, 0, 0, hosts[0]), 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for &h in &hosts[1..] {
            match TcpListener::bind((Ipv4Addr::new(127, 0, 0, h), port)) {
                Ok(l) => listeners.push(l),
                Err(_) => break,
            }
        }
        if listeners.len() == hosts.len() {
            let backends = listeners
                .into_iter()
                .map(|l| {
                    let name = l.local_addr().unwrap().ip().to_string();
                    let handler = handler.clone();
                    TestBackend::serve(l, move |seen| handler(&name, seen))
                })
                .collect();
            return (port, backends);
        }
    }
    panic!("no port free on every address of {hosts:?}");
}

fn hosts_file(last_octets: &[u8], name: &str) -> String {
    last_octets.iter().map(|h| format!("127.0.0.{h} {name}\n")).collect()
}

/// sluice with an admin API, in front of `servers` (JSON), asking `dns`.
fn sluice(dns: &Dnsmasq, servers: &str, extra: &str) -> Sluice {
    Sluice::from_json(&format!(
        r#"{{"listen": "127.0.0.1:0", "admin": {{"listen": "127.0.0.1:0"}}, "resolvers": ["{}"],
            "resolveInterval": "1s", "healthCheckInterval": "100ms", "healthCheck": {{"rise": 1}},
            {extra} "servers": {servers}}}"#,
        dns.addr()
    ))
}

/// The `/stats` entries of the backends found by `name`, by URL.
fn discovered(sluice: &Sluice, name: &str) -> Vec<serde_json::Value> {
    let stats = sluice.admin_stats();
    let mut found: Vec<_> =
        stats["servers"].as_array().unwrap().iter().filter(|s| s["discoveredFrom"] == name).cloned().collect();
    found.sort_by_key(|s| s["url"].as_str().unwrap().to_string());
    found
}

fn urls(servers: &[serde_json::Value]) -> Vec<String> {
    servers.iter().map(|s| s["url"].as_str().unwrap().to_string()).collect()
}

fn url(host: u8, port: u16) -> String {
    format!("http://127.0.0.{host}:{port}")
}

/// The bodies (backend addresses) of `n` requests on new connections.
fn answers(sluice: &Sluice, n: usize) -> Vec<String> {
    (0..n).map(|_| sluice.get("/").text()).collect()
}

#[test]
fn backends_join_and_leave_as_the_a_records_change() {
    let (port, backends) = backends_on_one_port(&[2, 3, 4]);
    let Some(dns) = Dnsmasq::start("a-records", &hosts_file(&[2, 3], "web.test"), &[]) else { return };
    let name = format!("web.test:{port}");
    let sluice = sluice(&dns, &format!(r#"[{{"dns": "{name}"}}]"#), "");

    // Found before serving, and in rotation at once, like the file's own backends.
    assert_eq!(urls(&discovered(&sluice, &name)), [url(2, port), url(3, port)]);
    let mut seen = answers(&sluice, 4);
    seen.sort();
    assert_eq!(seen, ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"]);
    let requests_before = discovered(&sluice, &name)[0]["requests"].as_u64().unwrap();

    // A new address joins after its probe; the unchanged ones keep their counters.
    dns.set_hosts(&hosts_file(&[2, 3, 4], "web.test"));
    let joined = || discovered(&sluice, &name).iter().any(|s| s["url"] == url(4, port) && s["healthy"] == true);
    assert!(wait_until(WAIT, joined), "{:?}", discovered(&sluice, &name));
    assert!(backends[2].probe_count() >= 1, "it joined without a probe");
    let kept = &discovered(&sluice, &name)[0];
    assert_eq!((kept["url"].as_str(), kept["requests"].as_u64()), (Some(url(2, port).as_str()), Some(requests_before)));
    assert!(wait_until(WAIT, || answers(&sluice, 3).contains(&"127.0.0.4".to_string())), "no traffic reached .4");

    // A vanished address drains, leaves /stats, and gets no more traffic.
    dns.set_hosts(&hosts_file(&[2, 4], "web.test"));
    assert!(
        wait_until(WAIT, || urls(&discovered(&sluice, &name)) == [url(2, port), url(4, port)]),
        "{:?}",
        discovered(&sluice, &name)
    );
    let to_three = backends[1].request_count();
    assert!(!answers(&sluice, 10).contains(&"127.0.0.3".to_string()));
    assert_eq!(backends[1].request_count(), to_three);
}

#[test]
fn an_address_that_vanishes_mid_request_drains_and_may_come_back() {
    let released = Arc::new(AtomicBool::new(false));
    let (port, backends) = {
        let released = Arc::clone(&released);
        backends_on_one_port_with(&[2, 3], move |name, seen| {
            // Requests for /slow wait until the test lets them go (probes never wait).
            if seen.target == "/slow" && !is_probe(seen) {
                wait_until(WAIT, || released.load(Ordering::SeqCst));
            }
            Reply::ok(name)
        })
    };
    let Some(dns) = Dnsmasq::start("returning", &hosts_file(&[2, 3], "web.test"), &[]) else { return };
    let name = format!("web.test:{port}");
    let sluice = sluice(&dns, &format!(r#"[{{"dns": "{name}"}}]"#), "");
    let state_of = |host: u8| {
        let found = discovered(&sluice, &name);
        found.iter().find(|s| s["url"] == url(host, port)).map(|s| s["state"].as_str().unwrap().to_string())
    };
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let addr = sluice.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.send(b"GET /slow HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
                c.response().map(|r| (r.status, r.text()))
            })
        })
        .collect();
    let busy = || discovered(&sluice, &name).iter().all(|s| s["activeConnections"] == 1);
    assert!(wait_until(WAIT, busy), "{:?}", discovered(&sluice, &name));

    // Gone from DNS with a request in flight: it drains and waits for that request.
    dns.set_hosts(&hosts_file(&[2], "web.test"));
    assert!(wait_until(WAIT, || state_of(3).as_deref() == Some("removing")), "{:?}", state_of(3));
    // Back before it was taken out: it stays, in rotation again.
    dns.set_hosts(&hosts_file(&[2, 3], "web.test"));
    assert!(wait_until(WAIT, || state_of(3).as_deref() == Some("up")), "{:?}", state_of(3));
    released.store(true, Ordering::SeqCst);
    let mut done: Vec<_> = slow.into_iter().map(|t| t.join().unwrap().expect("the slow request finished")).collect();
    done.sort();
    assert_eq!(done, [(200, "127.0.0.2".to_string()), (200, "127.0.0.3".to_string())]);

    // Gone with nothing in flight: taken out; back again: it joins anew and takes traffic.
    dns.set_hosts(&hosts_file(&[2], "web.test"));
    assert!(wait_until(WAIT, || state_of(3).is_none()), "{:?}", state_of(3));
    dns.set_hosts(&hosts_file(&[2, 3], "web.test"));
    assert!(wait_until(WAIT, || state_of(3).as_deref() == Some("up")), "{:?}", state_of(3));
    let before = backends[1].request_count();
    assert!(wait_until(WAIT, || answers(&sluice, 2).contains(&"127.0.0.3".to_string())));
    assert!(backends[1].request_count() > before);
}

#[test]
fn a_failed_lookup_keeps_the_last_backends_and_raises_dns_failed() {
    let (port, _backends) = backends_on_one_port(&[2, 3]);
    let webhook = TestBackend::named("thanks");
    let Some(mut dns) = Dnsmasq::start("failing", &hosts_file(&[2, 3], "web.test"), &[]) else { return };
    let name = format!("web.test:{port}");
    let alerts = format!(r#""alerts": {{"webhook": "{}/hooks"}},"#, webhook.url());
    let sluice = sluice(&dns, &format!(r#"[{{"dns": "{name}"}}]"#), &alerts);
    assert_eq!(discovered(&sluice, &name).len(), 2);

    dns.stop();
    let failed = || webhook.requests().iter().any(|r| String::from_utf8_lossy(&r.body).contains("dns_failed"));
    assert!(wait_until(WAIT, failed), "no dns_failed event");
    let event: serde_json::Value = serde_json::from_slice(&webhook.requests()[0].body).unwrap();
    assert_eq!((event["event"].as_str(), event["pool"].as_str()), (Some("dns_failed"), Some("default")));
    assert_eq!(event["name"], name.as_str());
    assert_eq!(urls(&discovered(&sluice, &name)), [url(2, port), url(3, port)]);
    let mut seen = answers(&sluice, 4);
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["127.0.0.2", "127.0.0.3"]);
}

#[test]
fn nxdomain_counts_as_failed_until_the_name_appears() {
    let (port, backends) = backends_on_one_port(&[2]);
    let webhook = TestBackend::named("thanks");
    let Some(dns) = Dnsmasq::start("nxdomain", "", &[]) else { return };
    let name = format!("late.test:{port}");
    let alerts = format!(r#""alerts": {{"webhook": "{}/hooks"}},"#, webhook.url());
    let sluice = sluice(&dns, &format!(r#"[{{"dns": "{name}"}}]"#), &alerts);

    let failed = || webhook.requests().iter().any(|r| String::from_utf8_lossy(&r.body).contains("NXDOMAIN"));
    assert!(wait_until(WAIT, failed), "no dns_failed event naming NXDOMAIN");
    assert_eq!(sluice.get("/").status, 503);
    let admin = sluice.server().admin_addr().unwrap();
    for page in ["/", "/metrics", "/stats"] {
        assert_eq!(admin_call(admin, "GET", page, None, "").status, 200, "{page} with a pool of no backends");
    }

    dns.set_hosts(&hosts_file(&[2], "late.test"));
    assert!(wait_until(WAIT, || sluice.get("/").status == 200), "{:?}", discovered(&sluice, &name));
    assert!(backends[0].request_count() >= 1);
}

#[test]
fn an_answer_too_large_for_udp_comes_again_over_tcp() {
    let many: String = (1..=120).map(|i| format!("127.0.1.{i} many.test\n")).collect();
    let Some(dns) = Dnsmasq::start("truncated", &many, &[]) else { return };
    let answer = lookup::query(&[dns.addr()], "many.test", simple_dns::TYPE::A).expect("an answer");
    assert_eq!(answer.addresses.len(), 120, "{answer:?}");
}

#[test]
fn srv_records_give_each_backend_its_port_weight_and_tier() {
    let (port_a, _a) = backends_on_one_port(&[2]);
    let (port_b, _b) = backends_on_one_port(&[3]);
    let (port_c, c) = backends_on_one_port(&[4]);
    let service = "_http._tcp.web.test";
    let srv = [
        format!("{service},node2.test,{port_a},1,30"),
        format!("{service},node3.test,{port_b},1,10"),
        format!("{service},node4.test,{port_c},2,10"),
    ];
    let hosts = "127.0.0.2 node2.test\n127.0.0.3 node3.test\n127.0.0.4 node4.test\n";
    let Some(dns) = Dnsmasq::start("srv", hosts, &srv) else { return };
    let sluice = sluice(&dns, &format!(r#"[{{"dnsSrv": "{service}"}}]"#), r#""algorithm": "weighted-round-robin","#);

    let found = discovered(&sluice, service);
    assert_eq!(urls(&found), [url(2, port_a), url(3, port_b), url(4, port_c)]);
    let facts: Vec<_> = found.iter().map(|s| (s["weight"].as_u64().unwrap(), s["backup"] == true)).collect();
    assert_eq!(facts, [(30, false), (10, false), (10, true)]);

    let seen = answers(&sluice, 40);
    let count = |who: &str| seen.iter().filter(|s| *s == who).count();
    assert_eq!((count("127.0.0.2"), count("127.0.0.3"), count("127.0.0.4")), (30, 10, 0));
    assert_eq!(c[0].request_count(), 0, "the backup tier served while the primaries were up");
}

#[test]
fn a_reload_keeps_discovered_backends_with_their_health_and_counters() {
    let (port, backends) = backends_on_one_port(&[2, 3]);
    let Some(dns) = Dnsmasq::start("reload", &hosts_file(&[2, 3], "web.test"), &[]) else { return };
    let name = format!("web.test:{port}");
    let config = |retries: u32| {
        format!(
            r#"{{"listen": "127.0.0.1:0", "admin": {{"listen": "127.0.0.1:0"}}, "resolvers": ["{}"],
                "healthCheckInterval": "100ms", "retries": {retries}, "servers": [{{"dns": "{name}"}}]}}"#,
            dns.addr()
        )
    };
    let path = config_file("discovery-reload", &config(1));
    let sluice = Sluice::from_file(&path);
    answers(&sluice, 4);
    let before = discovered(&sluice, &name);

    std::fs::write(&path, config(2)).unwrap();
    sluice.server().reload_from_file().expect("reload");
    let after = discovered(&sluice, &name);
    assert_eq!(urls(&after), urls(&before));
    for (a, b) in after.iter().zip(&before) {
        assert_eq!((&a["requests"], &a["healthy"]), (&b["requests"], &b["healthy"]), "{a}\n{b}");
        let passed = |s: &serde_json::Value| s["healthChecks"]["passed"].as_u64().unwrap();
        assert!(passed(a) >= passed(b), "the probe counts started again: {a}\n{b}");
    }
    assert!(backends.iter().all(|b| b.request_count() == 2));
}

#[test]
fn the_admin_api_drains_but_does_not_remove_a_discovered_backend() {
    let (port, _backends) = backends_on_one_port(&[2, 3]);
    let Some(dns) = Dnsmasq::start("admin", &hosts_file(&[2, 3], "web.test"), &[]) else { return };
    let name = format!("web.test:{port}");
    let sluice = Sluice::from_json(&format!(
        r#"{{"listen": "127.0.0.1:0", "admin": {{"listen": "127.0.0.1:0", "token": "t"}}, "resolvers": ["{}"],
            "resolveInterval": "1s", "servers": [{{"dns": "{name}"}}]}}"#,
        dns.addr()
    ));
    let admin = sluice.server().admin_addr().unwrap();
    let target = format!("/servers?url={}", url(3, port));
    let refused = admin_call(admin, "DELETE", &target, Some("t"), "");
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert!(refused.text().contains("found by DNS"), "{}", refused.text());
    let drained = admin_call(admin, "POST", &format!("/servers/drain?url={}", url(3, port)), Some("t"), "");
    assert_eq!(drained.status, 200, "{}", drained.text());
    assert!(answers(&sluice, 6).iter().all(|a| a == "127.0.0.2"));
}

#[test]
fn check_shows_dns_entries_without_looking_them_up() {
    let path = config_file(
        "discovery-check",
        r#"{"listen": "127.0.0.1:0", "resolvers": ["127.0.0.1:9"], "resolveInterval": "30s",
            "servers": [{"dns": "web.invalid:8080"}, {"dnsSrv": "_http._tcp.web.invalid", "backup": true}]}"#,
    );
    let out =
        Command::new(env!("CARGO_BIN_EXE_sluice")).args(["--check", "--explain", "-c"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("dns web.invalid:8080 (a backend per A/AAAA address) weight 1"), "{stdout}");
    assert!(stdout.contains("dnsSrv _http._tcp.web.invalid (a backend per SRV target address)"), "{stdout}");
    assert!(stdout.contains("every 30s") && stdout.contains("asking 127.0.0.1:9"), "{stdout}");
    assert!(stdout.contains(r#""resolveInterval": "30s""#) && stdout.contains(r#""127.0.0.1:9""#), "{stdout}");

    let bad = config_file("discovery-bad", r#"{"listen": ":1", "servers": [{"dns": "web.invalid"}]}"#);
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["--check", "-c"]).arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("config.json: servers[0].dns: \"web.invalid\" needs a port"), "{stderr}");
}
