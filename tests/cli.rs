//! The `sluice` binary as a user runs it: arguments, exit codes, messages, `--check`,
//! `--demo`, signals.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn run(args: &[&str]) -> Output {
    Command::new(SLUICE).args(args).env("RUST_LOG", "warn").output().expect("run sluice")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `n` distinct ports free at the moment of asking (all bound at once, then let go).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A running sluice that is killed if the test ends early, so a failed assertion never leaves
/// it behind holding the test's output.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn can_connect(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn help_and_version() {
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).contains("Usage: sluice"), "{}", text(&help.stdout));
    let version = run(&["--version"]);
    assert_eq!(text(&version.stdout).trim(), format!("sluice {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn unknown_arguments_exit_2_with_usage() {
    let out = run(&["--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("unknown argument \"--frobnicate\"") && err.contains("Usage:"), "{err}");
}

#[test]
fn the_seed_config_checks_clean() {
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/config.json");
    let out = run(&["--check", "--config", seed]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("listener 0.0.0.0:8080 (http)"), "{report}");
    assert!(report.contains("http://localhost:5003"), "{report}");
}

#[test]
fn a_bad_config_exits_2_naming_file_key_and_problem() {
    let path =
        config_file("bad", r#"{"port": ":8080", "servers": ["http://127.0.0.1:1"], "timeouts": {"connect": "5"}}"#);
    for args in [vec!["--check", "-c"], vec!["-c"]] {
        let mut args = args.clone();
        let p = path.to_str().unwrap();
        args.push(p);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(&format!("{p}: timeouts.connect: \"5\" must be a whole number with a unit")), "{err}");
    }
}

#[test]
fn a_missing_config_file_exits_2() {
    let out = run(&["-c", "/nonexistent/sluice.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/sluice.json: cannot read the file"), "{}", text(&out.stderr));
}

#[test]
fn an_address_in_use_exits_1_saying_which() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let path = config_file("inuse", &format!(r#"{{"listen": "{addr}", "servers": ["http://127.0.0.1:1"]}}"#));
    let out = run(&["-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")) && err.contains("in use"), "{err}");
}

#[test]
fn sigterm_stops_cleanly_and_sighup_reloads() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    let port = free_ports(1)[0];
    let json = |url: &str| format!(r#"{{"listen": "127.0.0.1:{port}", "servers": ["{url}"]}}"#);
    let path = config_file("signals", &json(&a.url()));
    let log_path = path.with_file_name("stderr.log");
    let mut running = Running(
        Command::new(SLUICE)
            .args(["-c", path.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let child = &mut running.0;
    assert!(wait_until(Duration::from_secs(10), || can_connect(port)), "sluice did not start");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let get = || exchange_raw(addr, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(get().ends_with("\r\n\r\na"));

    std::fs::write(&path, json(&b.url())).unwrap();
    signal(child, "HUP");
    assert!(wait_until(Duration::from_secs(5), || get().ends_with("\r\n\r\nb")), "reload did not switch backends");

    std::fs::write(&path, "{ not json").unwrap();
    signal(child, "HUP");
    let refused = wait_until(Duration::from_secs(5), || log().contains("reload refused"));
    assert!(refused, "the bad reload was not logged:\n{}", log());
    assert!(get().ends_with("\r\n\r\nb"), "a bad reload must keep the running configuration");

    signal(child, "TERM");
    assert_eq!(wait_exit(child, Duration::from_secs(10)), Some(0));
}

#[test]
fn demo_starts_backends_and_prints_what_to_try() {
    let ports = free_ports(4);
    let servers: Vec<String> = ports[1..].iter().map(|p| format!("\"http://localhost:{p}\"")).collect();
    let path =
        config_file("demo", &format!(r#"{{"port": "127.0.0.1:{}", "servers": [{}]}}"#, ports[0], servers.join(", ")));
    let mut running = Running(
        Command::new(SLUICE)
            .args(["--demo", "-c", path.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut running.0;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let printed: Vec<String> = (0..3).map_while(|_| lines.next().and_then(Result::ok)).collect();
    assert!(printed.iter().any(|l| l.contains(&format!("curl http://localhost:{}/", ports[0]))), "{printed:?}");
    let addr: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let answers: Vec<String> =
        (0..3).map(|_| exchange_raw(addr, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")).collect();
    for (i, answer) in answers.iter().enumerate() {
        assert!(answer.contains(&format!("Hello from demo backend {}", i + 1)), "{answers:?}");
    }
    signal(child, "INT");
    assert_eq!(wait_exit(child, Duration::from_secs(10)), Some(0));
}

#[test]
fn check_names_the_algorithm_sticky_cookie_limits_and_queue_timeout() {
    let path = config_file(
        "balancing",
        r#"{"port": "127.0.0.1:8080", "algorithm": "least-connections", "sticky": {"cookie": "SRV"},
            "timeouts": {"queue": "2s"},
            "servers": [{"url": "http://127.0.0.1:5001", "weight": 3, "maxConnections": 10},
                        {"url": "http://127.0.0.1:5002", "backup": true}]}"#,
    );
    let out = run(&["--check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("pool \"default\": least-connections, sticky cookie \"SRV\", retries 2"), "{report}");
    assert!(report.contains("http://127.0.0.1:5001 (127.0.0.1:5001) weight 3, maxConnections 10"), "{report}");
    assert!(report.contains("http://127.0.0.1:5002 (127.0.0.1:5002) weight 1, backup"), "{report}");
    assert!(report.contains("queue 2s"), "{report}");
}

#[test]
fn check_names_the_admin_api_and_the_access_log() {
    let path = config_file(
        "admin",
        r#"{"port": "127.0.0.1:8080", "servers": ["http://127.0.0.1:5001"],
            "admin": {"token": "x"}, "accessLog": {"format": "combined", "path": "/tmp/sluice-access.log"}}"#,
    );
    let out = run(&["--check", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("admin API on http://127.0.0.1:9000/ (changes with the token)"), "{report}");
    assert!(report.contains("access log: combined to /tmp/sluice-access.log"), "{report}");
    let seed = run(&["--check", "-c", "config.json"]);
    let report = text(&seed.stdout);
    assert!(report.contains("admin API off") && report.contains("access log: text to stderr"), "{report}");
}
