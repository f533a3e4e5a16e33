//! Upgrades and listener changes while traffic flows, with the real binary: SIGUSR2 hands the
//! listening sockets to a new process (a copy of the binary in a temporary directory, so the
//! test can replace it), SIGHUP adds and removes listeners, systemd's socket activation hands
//! sockets in at start, and systemd hears how it goes (`NOTIFY_SOCKET`). Keep-alive clients
//! on test threads count every failure: none is allowed.

mod common;

use common::*;
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const WAIT: Duration = Duration::from_secs(30);
/// Keep-alive clients running at once.
const CLIENTS: usize = 24;
/// Requests the clients make in each phase (before, during and after a change).
const PER_PHASE: usize = 300;

/// A free port on 127.0.0.1 (bound once and let go).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A sluice process running from its own copy of the binary, with its configuration file,
/// pid file, log and notification socket in a directory of its own.
struct Process {
    child: Child,
    dir: PathBuf,
    notify: UnixDatagram,
    /// Processes started by upgrades, stopped by pid when the test ends.
    successors: Mutex<Vec<u32>>,
}

impl Process {
    fn start(name: &str, config: &str) -> Process {
        let dir = std::env::temp_dir().join(format!("sluice-upgrade-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(SLUICE, dir.join("sluice")).unwrap();
        let notify = UnixDatagram::bind(dir.join("notify.sock")).unwrap();
        notify.set_read_timeout(Some(WAIT)).unwrap();
        std::fs::write(dir.join("config.json"), config).unwrap();
        // The copy was just written: a process another test thread forks meanwhile may hold
        // it open for writing a moment longer (ETXTBSY), so starting it is tried again.
        let spawn = || {
            Command::new(dir.join("sluice"))
                .args(["-c", "config.json"])
                .current_dir(&dir)
                .env("RUST_LOG", "info,sluice::access=off")
                .env("NOTIFY_SOCKET", dir.join("notify.sock"))
                .stderr(File::create(dir.join("stderr.log")).unwrap())
                .spawn()
        };
        let mut tries = 0;
        let child = loop {
            match spawn() {
                Err(e) if e.raw_os_error() == Some(26) && tries < 50 => tries += 1,
                other => break other.expect("start sluice"),
            }
            std::thread::yield_now();
        };
        let process = Process { child, dir, notify, successors: Mutex::new(Vec::new()) };
        assert_eq!(process.next_notice(), "READY=1", "{}", process.log());
        process
    }

    fn pid_file(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("sluice.pid")).ok()?.trim().parse().ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    fn write_config(&self, config: &str) {
        std::fs::write(self.dir.join("config.json"), config).unwrap();
    }

    /// The next datagram sluice sent to its notification socket.
    fn next_notice(&self) -> String {
        let mut buf = [0u8; 256];
        let n = self.notify.recv(&mut buf).unwrap_or_else(|e| panic!("no notice: {e}\n{}", self.log()));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn executable(&self) -> PathBuf {
        self.dir.join("sluice")
    }

    /// Puts a shell `script` where the executable is, as an upgrade would find it.
    fn replace_executable(&self, script: &str) {
        let replacement = self.dir.join("replacement");
        std::fs::write(&replacement, script).unwrap();
        Command::new("chmod").args(["+x", replacement.to_str().unwrap()]).status().unwrap();
        std::fs::rename(&replacement, self.executable()).unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.successors.lock().unwrap().iter() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

/// Whether process `pid` runs (an exited one whose parent has not reaped it does not).
fn is_running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
}

fn kill(pid: u32, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Keep-alive clients sending `GET /` in a loop, each on one connection until sluice answers
/// with `Connection: close` (then on a new one), until stopped or `limit` requests in all.
struct Load {
    done: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize, limit: usize) -> Load {
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let (done, failures, stop) = (Arc::clone(&done), Arc::clone(&failures), Arc::clone(&stop));
                thread::spawn(move || keep_requesting(addr, limit, &done, &failures, &stop))
            })
            .collect();
        Load { done, failures, stop, threads }
    }

    fn done(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits until `more` requests beyond now were answered.
    fn wait_for(&self, more: usize, log: impl Fn() -> String) {
        let target = self.done() + more;
        assert!(
            wait_until(WAIT, || self.done() >= target || !self.failures.lock().unwrap().is_empty()),
            "only {} of {target} requests answered\n{}",
            self.done(),
            log()
        );
    }

    /// Stops the clients; returns the requests answered and the failures.
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        (self.done(), self.failures.lock().unwrap().clone())
    }
}

fn keep_requesting(
    addr: SocketAddr,
    limit: usize,
    done: &AtomicUsize,
    failures: &Mutex<Vec<String>>,
    stop: &AtomicBool,
) {
    let mut client: Option<Client> = None;
    while !stop.load(Ordering::SeqCst) && done.load(Ordering::SeqCst) < limit {
        let connected = match client.take() {
            Some(c) => c,
            None => match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
                Ok(stream) => Client::from_stream(stream),
                Err(e) => {
                    failures.lock().unwrap().push(format!("connect: {e}"));
                    return;
                }
            },
        };
        let mut c = connected;
        if let Err(e) = c.stream.write_all(b"GET / HTTP/1.1\r\nHost: load\r\n\r\n") {
            failures.lock().unwrap().push(format!("write: {e}"));
            return;
        }
        match c.response() {
            Ok(r) if (200..300).contains(&r.status) => {
                done.fetch_add(1, Ordering::SeqCst);
                if r.header("connection") != Some("close") {
                    client = Some(c);
                }
            }
            Ok(r) => {
                failures.lock().unwrap().push(format!("status {}: {}", r.status, r.raw_head));
                return;
            }
            Err(e) => {
                failures.lock().unwrap().push(format!("read: {e}"));
                return;
            }
        }
    }
}

/// `GET path` on a connection of its own.
fn get(addr: SocketAddr, path: &str) -> Response {
    let mut c = Client::connect(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes());
    c.response().unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn config(listeners: &[SocketAddr], backend: &TestBackend) -> String {
    let listeners: Vec<String> = listeners.iter().map(|a| format!(r#"{{"listen": "{a}", "pool": "web"}}"#)).collect();
    format!(
        r#"{{"listeners": [{}], "pools": {{"web": {{"servers": ["{}"]}}}}, "pidFile": "sluice.pid"}}"#,
        listeners.join(", "),
        backend.url()
    )
}

#[test]
fn sigusr2_hands_the_listening_socket_to_a_new_process_without_failing_a_request() {
    let backend = TestBackend::named("a");
    let (addr, admin) = (free_addr(), free_addr());
    let with_admin = config(&[addr], &backend).replacen('{', &format!(r#"{{"admin": {{"listen": "{admin}"}}, "#), 1);
    let mut sluice = Process::start("usr2", &with_admin);
    let old = sluice.child.id();
    assert_eq!(sluice.pid_file(), Some(old));
    let load = Load::start(addr, CLIENTS, 100 * PER_PHASE);
    load.wait_for(PER_PHASE, || sluice.log());

    kill(old, "USR2");
    let handed = wait_until(WAIT, || sluice.pid_file().is_some_and(|pid| pid != old));
    assert!(handed, "the pid file still names the old process\n{}", sluice.log());
    let new = sluice.pid_file().unwrap();
    sluice.successors.lock().unwrap().push(new);
    assert_eq!(sluice.next_notice(), format!("MAINPID={new}\nREADY=1"), "{}", sluice.log());
    let exit = wait_exit(&mut sluice.child, WAIT);
    assert_eq!(exit, Some(0), "the old process did not drain and exit\n{}", sluice.log());
    load.wait_for(PER_PHASE, || sluice.log());
    let (done, failures) = load.finish();
    assert!(failures.is_empty(), "{} failures in {done} requests: {failures:?}\n{}", failures.len(), sluice.log());
    assert!(is_running(new), "the new process is gone\n{}", sluice.log());
    assert_eq!(sluice.pid_file(), Some(new));
    // The admin API's socket was handed over too, not bound again.
    assert!(sluice.log().contains(&format!("using the inherited socket on {admin}")), "{}", sluice.log());
    assert_eq!(admin_call(admin, "GET", "/stats", None, "").status, 200);

    kill(new, "TERM");
    assert!(wait_until(WAIT, || sluice.pid_file().is_none()), "the new process left its pid file\n{}", sluice.log());
    assert!(wait_until(WAIT, || !is_running(new)), "the new process did not stop\n{}", sluice.log());
}

#[test]
fn a_new_executable_that_fails_leaves_the_old_process_serving_and_saying_why() {
    let backend = TestBackend::named("a");
    let addr = free_addr();
    let sluice = Process::start("usr2-fails", &config(&[addr], &backend));
    let old = sluice.child.id();
    let load = Load::start(addr, CLIENTS, 100 * PER_PHASE);
    load.wait_for(PER_PHASE, || sluice.log());
    sluice.replace_executable("#!/bin/sh\necho 'this build is broken' >&2\nexit 1\n");

    kill(old, "USR2");
    let said = wait_until(WAIT, || sluice.log().contains("upgrade failed, this process keeps serving"));
    assert!(said, "{}", sluice.log());
    let log = sluice.log();
    assert!(log.contains("this build is broken"), "the new program's own message is in the log\n{log}");
    assert!(log.contains("the new process exited (exit status: 1) before it served"), "{log}");
    load.wait_for(PER_PHASE, || sluice.log());
    let (done, failures) = load.finish();
    assert!(failures.is_empty(), "{} failures in {done} requests: {failures:?}\n{}", failures.len(), sluice.log());
    assert!(is_running(old), "{}", sluice.log());
    assert_eq!(sluice.pid_file(), Some(old));
}

#[test]
fn a_new_executable_that_never_serves_is_stopped_after_30_s_and_the_old_process_keeps_serving() {
    let backend = TestBackend::named("a");
    let addr = free_addr();
    let sluice = Process::start("usr2-hangs", &config(&[addr], &backend));
    let old = sluice.child.id();
    sluice.replace_executable("#!/bin/sh\nexec sleep 300\n");

    kill(old, "USR2");
    let started = |log: &str| {
        let rest = log.split("upgrade: process ").nth(1)?;
        rest.split(' ').next()?.parse::<u32>().ok()
    };
    assert!(wait_until(WAIT, || started(&sluice.log()).is_some()), "{}", sluice.log());
    let new = started(&sluice.log()).unwrap();
    sluice.successors.lock().unwrap().push(new);
    assert!(is_running(new), "the new process should still be waited for\n{}", sluice.log());
    assert_eq!(get(addr, "/").status, 200, "the old process serves while it waits");
    let gave_up = "upgrade failed, this process keeps serving: the new process did not serve within 30s";
    assert!(wait_until(WAIT * 2, || sluice.log().contains(gave_up)), "{}", sluice.log());
    assert!(wait_until(WAIT, || !is_running(new)), "the new process was not stopped\n{}", sluice.log());
    assert_eq!(get(addr, "/").status, 200);
    assert!(is_running(old), "{}", sluice.log());
    assert_eq!(sluice.pid_file(), Some(old));
}

#[test]
fn sighup_adds_and_removes_listeners_while_requests_flow_and_drains_the_removed_one() {
    let backend = TestBackend::named("a");
    let (kept, removed, added) = (free_addr(), free_addr(), free_addr());
    let sluice = Process::start("hup", &config(&[kept, removed], &backend));
    let load = Load::start(kept, CLIENTS, 100 * PER_PHASE);
    load.wait_for(PER_PHASE, || sluice.log());
    let mut on_removed = Client::connect(removed);
    on_removed.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let first = on_removed.response().unwrap();
    assert_eq!((first.status, first.header("connection")), (200, None), "{}", first.raw_head);

    sluice.write_config(&config(&[kept, added], &backend));
    kill(sluice.child.id(), "HUP");
    let reloading = sluice.next_notice();
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading}");
    assert_eq!(sluice.next_notice(), "READY=1");
    let log = sluice.log();
    assert!(log.contains(&format!("listening on {added}; stopped listening on {removed}")), "{log}");

    // The removed listener refuses new connections; its kept-alive connection gets its next
    // answer with `Connection: close`.
    assert!(TcpStream::connect_timeout(&removed, IO_TIMEOUT).is_err(), "{removed} still accepts");
    on_removed.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let last = on_removed.response().unwrap();
    assert_eq!((last.status, last.header("connection")), (200, Some("close")), "{}", last.raw_head);
    assert_eq!(on_removed.read_to_close(), "");
    assert_eq!(get(added, "/").status, 200);
    load.wait_for(PER_PHASE, || sluice.log());
    let (done, failures) = load.finish();
    assert!(failures.is_empty(), "{} failures in {done} requests: {failures:?}\n{}", failures.len(), sluice.log());
}

#[test]
fn a_reload_whose_new_listener_cannot_bind_keeps_every_listener_and_names_the_address() {
    let backend = TestBackend::named("a");
    let kept = free_addr();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let sluice = Process::start("hup-busy", &config(&[kept], &backend));
    sluice.write_config(&config(&[busy], &backend));
    kill(sluice.child.id(), "HUP");
    assert!(sluice.next_notice().starts_with("RELOADING=1"));
    assert_eq!(sluice.next_notice(), "READY=1");
    let log = sluice.log();
    assert!(
        log.contains(&format!("reload refused, keeping the running configuration: cannot listen on {busy}")),
        "{log}"
    );
    assert_eq!(get(kept, "/").status, 200);
}

#[test]
fn a_request_on_a_kept_alive_connection_after_sigterm_is_answered_with_connection_close() {
    let release = Arc::new(AtomicBool::new(false));
    let holding = Arc::clone(&release);
    let backend = TestBackend::start(move |seen| {
        if seen.target == "/slow" {
            wait_until(Duration::from_secs(60), || holding.load(Ordering::SeqCst));
        }
        Reply::ok("done")
    });
    let addr = free_addr();
    let mut sluice = Process::start("term", &config(&[addr], &backend));
    let mut kept = Client::connect(addr);
    kept.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(kept.response().unwrap().status, 200);
    let mut slow = Client::connect(addr);
    slow.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(wait_until(WAIT, || backend.request_count() >= 2), "{}", sluice.log());

    kill(sluice.child.id(), "TERM");
    assert_eq!(sluice.next_notice(), "STOPPING=1");
    // A client that thinks a moment (well within the second a draining connection may stay
    // quiet) before its next request: answered, then closed, rather than cut.
    thread::sleep(Duration::from_millis(300));
    kept.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = kept.response().unwrap_or_else(|e| panic!("{e}\n{}", sluice.log()));
    assert_eq!((r.status, r.header("connection")), (200, Some("close")), "{}", r.raw_head);
    assert_eq!(kept.read_to_close(), "");
    release.store(true, Ordering::SeqCst);
    assert_eq!(slow.response().unwrap().header("connection"), Some("close"));
    assert_eq!(wait_exit(&mut sluice.child, WAIT), Some(0), "{}", sluice.log());
    assert_eq!(sluice.pid_file(), None, "the pid file is removed at a clean exit");
}

/// Starts `program` the way systemd's socket activation does: `socket` as descriptor 3,
/// `LISTEN_FDS=1` and `LISTEN_PID` set to the program's own pid (a shell moves the socket
/// from its standard input and `exec`s, which keeps the pid).
fn socket_activated(program: &std::path::Path, dir: &std::path::Path, socket: TcpListener) -> Child {
    Command::new("sh")
        .args(["-c", r#"exec 3<&0 0</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -c config.json"#])
        .arg(program)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::from(OwnedFd::from(socket)))
        .stderr(File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .expect("start sluice under sh")
}

#[test]
fn a_socket_from_systemd_socket_activation_serves_the_listener_with_its_address() {
    let backend = TestBackend::named("a");
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let path = config_file("activated", &config(&[addr], &backend));
    let dir = path.parent().unwrap();
    let mut child = socket_activated(std::path::Path::new(SLUICE), dir, socket);
    let log = || std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    // The socket listens before sluice starts: the first request waits in its queue.
    let r = get(addr, "/");
    assert_eq!((r.status, r.text()), (200, "a".to_string()), "{}", log());
    assert!(log().contains(&format!("using the inherited socket on {addr}")), "{}", log());
    signal(&child, "TERM");
    assert_eq!(common::wait_exit(&mut child, WAIT), Some(0), "{}", log());
}

#[test]
fn a_socket_from_systemd_that_matches_no_listener_is_refused_by_name() {
    let backend = TestBackend::named("a");
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let stray = socket.local_addr().unwrap();
    let path = config_file("activated-stray", &config(&[free_addr()], &backend));
    let dir = path.parent().unwrap();
    let mut child = socket_activated(std::path::Path::new(SLUICE), dir, socket);
    let code = common::wait_exit(&mut child, WAIT);
    let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains(&format!("the socket passed by systemd on {stray} (descriptor 3) matches no listener")),
        "{log}"
    );
}

#[test]
fn post_reload_adds_and_removes_listeners_and_names_them() {
    let backend = TestBackend::named("a");
    let admin = free_addr();
    let with = |listeners: &str| {
        format!(
            r#"{{"listeners": [{listeners}], "pools": {{"web": {{"servers": ["{}"]}}}},
                "admin": {{"listen": "{admin}", "token": "t0ken"}}}}"#,
            backend.url()
        )
    };
    let path = config_file("post-reload", &with(r#"{"listen": "127.0.0.1:0", "pool": "web"}"#));
    let sluice = Sluice::from_file(&path);
    let before = sluice.server().local_addrs();
    let added = free_addr();
    std::fs::write(&path, with(&format!(r#"{{"listen": "{added}", "pool": "web"}}"#))).unwrap();
    let r = admin_call(admin, "POST", "/reload", Some("t0ken"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = json(&r);
    assert_eq!(body["listeners"]["added"], serde_json::json!([added.to_string()]), "{body}");
    assert_eq!(body["listeners"]["removed"], serde_json::json!([before[0].to_string()]), "{body}");
    assert_eq!(sluice.server().local_addrs(), [added]);
    assert_eq!(get(added, "/").text(), "a");
    assert!(TcpStream::connect_timeout(&before[0], IO_TIMEOUT).is_err(), "the removed listener still accepts");
}

#[test]
fn a_listener_that_stays_keeps_its_socket_and_serves_its_new_routes() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    let with = |pool: &str| {
        format!(
            r#"{{"listeners": [{{"listen": "127.0.0.1:0", "pool": "{pool}"}}],
                "pools": {{"a": {{"servers": ["{}"]}}, "b": {{"servers": ["{}"]}}}}}}"#,
            a.url(),
            b.url()
        )
    };
    let path = config_file("switch-routes", &with("a"));
    let sluice = Sluice::from_file(&path);
    let mut kept = sluice.connect();
    kept.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(kept.response().unwrap().text(), "a");
    std::fs::write(&path, with("b")).unwrap();
    let summary = sluice.server().reload_from_file().unwrap();
    assert!(summary.listeners_added.is_empty() && summary.listeners_removed.is_empty(), "{summary:?}");
    assert_eq!(sluice.server().local_addrs(), [sluice.addr], "the same socket");
    // The established connection goes on with the new routes from its next request.
    kept.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = kept.response().unwrap();
    assert_eq!((r.text(), r.header("connection")), ("b".to_string(), None), "{}", r.raw_head);
    assert_eq!(sluice.get("/").text(), "b");
}

#[test]
fn check_names_the_pid_file() {
    let backend = TestBackend::named("a");
    let path = config_file("check-pid-file", &config(&[free_addr()], &backend));
    let out = Command::new(SLUICE).args(["--check", "-c", path.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\npid file: sluice.pid\n"), "{stdout}");
}
