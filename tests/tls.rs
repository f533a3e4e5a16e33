//! HTTPS over real sockets: TLS listeners with certificates chosen by SNI, real clients (a
//! rustls client, curl, openssl s_client), bad input on a TLS port, slow handshakes with few
//! workers, https:// backends (verified, pooled, refused when untrusted), certificate reload,
//! `--check`, redirects to https, TLS on tcp listeners and upgrades over TLS. Certificates are
//! made by the tests with rcgen, signed by a test CA.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

/// A test CA and the certificates it signs, as files in a folder of their own.
struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate the CA signed: its files and its DER form.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("sluice-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "sluice test CA");
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        Pki { dir, issuer: Issuer::new(params, key) }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `names` (DNS names or IP addresses) valid for `days` more days.
    fn leaf(&self, file: &str, names: &[&str], days: u64) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let (y, m, d) = date_in(days);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The calendar date `days` from now, from sluice's own RFC 3339 formatter.
fn date_in(days: u64) -> (i32, u8, u8) {
    let text = sluice::ops::time::rfc3339_seconds(SystemTime::now() + Duration::from_secs(days * 86_400));
    let part = |range: std::ops::Range<usize>| text[range].parse::<u32>().unwrap();
    (part(0..4) as i32, part(5..7) as u8, part(8..10) as u8)
}

fn tls_json(leaf: &Leaf) -> String {
    format!(r#"{{"cert": {:?}, "key": {:?}}}"#, leaf.cert, leaf.key)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client that trusts the test CA only, speaking the given TLS versions.
fn trusting(ca: &Path, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A client that accepts any certificate, to look at which one sluice picked.
fn trusting_anything() -> Arc<ClientConfig> {
    let tls = sluice::config::BackendTls { ca: None, verify: false };
    sluice::tls::backend::client_config(&tls, &RootCertStore::empty(), "test", "tls").unwrap()
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to `addr` asking for `name` (an IP address sends no SNI).
fn connect(addr: SocketAddr, name: &str, config: &Arc<ClientConfig>) -> TlsStream {
    let socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    StreamOwned::new(ClientConnection::new(Arc::clone(config), server_name).unwrap(), socket)
}

/// The first bytes a TLS client sends for `a.test`: its ClientHello.
fn client_hello(config: &Arc<ClientConfig>) -> Vec<u8> {
    let mut hello = Vec::new();
    let mut client = ClientConnection::new(Arc::clone(config), ServerName::try_from("a.test").unwrap()).unwrap();
    client.write_tls(&mut hello).unwrap();
    hello
}

/// Finishes the handshake and returns the certificate the server presented.
fn presented(stream: &mut TlsStream) -> Result<Vec<u8>, String> {
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).map_err(|e| e.to_string())?;
    }
    Ok(stream.conn.peer_certificates().unwrap()[0].to_vec())
}

/// Sends `GET path` and reads one Content-Length response: status, head and body.
fn get(stream: &mut impl ReadWrite, path: &str, host: &str) -> (u16, String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    read_response(stream)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn read_response(stream: &mut impl Read) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while find(&buf, b"\r\n\r\n").is_none() {
        assert_eq!(stream.read(&mut byte).expect("a response head"), 1, "closed before a response: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head[9..12].parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// sluice with one TLS listener given by `tls` (a JSON object) in front of `backend`.
fn https_sluice(backend: &TestBackend, tls: &str, extra: &str) -> Sluice {
    Sluice::start(&[&backend.url()], &format!(r#""tls": {tls}, {extra}"#))
}

#[test]
fn an_https_listener_serves_keep_alive_requests_and_tells_the_backend_they_came_over_tls() {
    let pki = Pki::new("basic");
    let leaf = pki.leaf("site", &["a.test"], 90);
    let backend = TestBackend::named("a");
    let sluice = https_sluice(&backend, &tls_json(&leaf), "");
    let config = trusting(&pki.ca(), &[&rustls::version::TLS13, &rustls::version::TLS12]);
    let mut stream = connect(sluice.addr, "a.test", &config);
    for _ in 0..2 {
        let (status, head, body) = get(&mut stream, "/x", "a.test");
        assert_eq!((status, body.as_str()), (200, "a"), "{head}");
    }
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]), "ALPN offers http/1.1");
    let seen = backend.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.header("x-forwarded-proto") == Some("https")), "{seen:?}");
    let plain = TestBackend::named("plain");
    let plain_sluice = Sluice::start(&[&plain.url()], "");
    assert_eq!(plain_sluice.get("/").status, 200);
    assert_eq!(plain.requests()[0].header("x-forwarded-proto"), Some("http"));
}

#[test]
fn certificates_are_chosen_by_sni_exactly_then_by_wildcard_else_the_first() {
    let pki = Pki::new("sni");
    let default = pki.leaf("default", &["default.test"], 90);
    let exact = pki.leaf("exact", &["a.test"], 90);
    let wildcard = pki.leaf("wildcard", &["*.b.test"], 90);
    let exact_under_wildcard = pki.leaf("www", &["www.b.test"], 90);
    let list = [&default, &wildcard, &exact, &exact_under_wildcard].map(tls_json).join(", ");
    let backend = TestBackend::named("a");
    let sluice = https_sluice(&backend, &format!(r#"{{"certificates": [{list}]}}"#), "");
    let anything = trusting_anything();
    let cases = [
        ("a.test", &exact),
        ("A.Test", &exact),
        ("x.b.test", &wildcard),
        ("www.b.test", &exact_under_wildcard),
        ("y.x.b.test", &default),
        ("b.test", &default),
        ("other.test", &default),
        ("127.0.0.1", &default),
    ];
    for (name, expected) in cases {
        let mut stream = connect(sluice.addr, name, &anything);
        let got = presented(&mut stream).unwrap();
        assert!(got == expected.der, "{name} got the wrong certificate (expected {:?})", expected.cert);
    }
}

#[test]
fn min_version_1_3_refuses_tls_1_2_clients() {
    let pki = Pki::new("versions");
    let leaf = pki.leaf("site", &["a.test"], 90);
    let backend = TestBackend::named("a");
    let tls = format!(r#"{{"cert": {:?}, "key": {:?}, "minVersion": "1.3"}}"#, leaf.cert, leaf.key);
    let sluice = https_sluice(&backend, &tls, "");
    let only_12 = trusting(&pki.ca(), &[&rustls::version::TLS12]);
    assert!(presented(&mut connect(sluice.addr, "a.test", &only_12)).is_err(), "a TLS 1.2 client got in");
    let only_13 = trusting(&pki.ca(), &[&rustls::version::TLS13]);
    assert!(presented(&mut connect(sluice.addr, "a.test", &only_13)).is_ok());
    let default = Sluice::start(&[&backend.url()], &format!(r#""tls": {},"#, tls_json(&leaf)));
    assert!(presented(&mut connect(default.addr, "a.test", &only_12)).is_ok(), "1.2 is the default minimum");
}

#[test]
fn bad_input_on_a_tls_port_gets_a_close_and_never_blocks_anyone_else() {
    let pki = Pki::new("bad");
    let leaf = pki.leaf("site", &["a.test"], 90);
    let backend = TestBackend::named("a");
    let sluice = https_sluice(&backend, &tls_json(&leaf), r#""workers": 2, "admin": {"listen": "127.0.0.1:0"},"#);
    let config = trusting(&pki.ca(), &[&rustls::version::TLS13]);
    // Plain HTTP on the TLS port.
    let mut plain = Client::connect(sluice.addr);
    plain.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    plain.read_to_close();
    // A handshake cut short.
    let hello = client_hello(&config);
    let mut cut = Client::connect(sluice.addr);
    cut.send(&hello[..hello.len() / 2]);
    cut.stream.shutdown(std::net::Shutdown::Write).unwrap();
    cut.read_to_close();
    // Garbage after a good handshake.
    let mut garbage = connect(sluice.addr, "a.test", &config);
    presented(&mut garbage).unwrap();
    garbage.sock.write_all(b"\x17\x03\x03\x00\x10not a tls record").unwrap();
    let mut rest = Vec::new();
    read_until_closed(&mut garbage.sock, &mut rest, IO_TIMEOUT).expect("garbage after the handshake is closed");
    // Meanwhile and afterwards a good client is served.
    let mut good = connect(sluice.addr, "a.test", &config);
    assert_eq!(get(&mut good, "/", "a.test").0, 200);
    assert!(backend.request_count() == 1, "the bad clients reached the backend");
    let admin = sluice.server().admin_addr().unwrap();
    let stats = admin_stats(admin);
    assert!(stats["tls"]["handshakeFailures"].as_u64().unwrap() >= 2, "{:#}", stats["tls"]);
    assert!(stats["tls"]["handshakes"].as_u64().unwrap() >= 1, "{:#}", stats["tls"]);
    let metrics = admin_call(admin, "GET", "/metrics", None, "").text();
    let failures = metrics.lines().find_map(|l| l.strip_prefix("sluice_tls_handshake_failures_total "));
    assert!(failures.is_some_and(|n| n.parse::<u64>().unwrap() >= 2), "{metrics}");
    // The listener as configured (port 0 here), and the certificate file.
    let expiry =
        format!("sluice_tls_certificate_expiry_seconds{{listener=\"127.0.0.1:0\",cert=\"{}\"}}", leaf.cert.display());
    assert!(metrics.contains(&expiry), "no expiry gauge for the certificate: {metrics}");
}

#[test]
fn trickling_tls_handshakes_do_not_keep_a_new_client_from_being_served() {
    let pki = Pki::new("trickle");
    let leaf = pki.leaf("site", &["a.test"], 90);
    let backend = TestBackend::named("a");
    let sluice = https_sluice(&backend, &tls_json(&leaf), r#""workers": 2,"#);
    let config = trusting(&pki.ca(), &[&rustls::version::TLS13]);
    let hello = client_hello(&config);
    // Twenty clients dribble their ClientHello a byte every 50 ms.
    let tricklers: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(sluice.addr).unwrap()).collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dribbling = {
        let done = Arc::clone(&done);
        let hello = hello.clone();
        thread::spawn(move || {
            let mut tricklers = tricklers;
            for byte in hello.iter().take(60) {
                for t in &mut tricklers {
                    let _ = t.write_all(&[*byte]);
                }
                if done.load(Ordering::SeqCst) {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    thread::sleep(Duration::from_millis(300));
    let mut good = connect(sluice.addr, "a.test", &config);
    let (status, _, _) = get(&mut good, "/", "a.test");
    let dribbled_meanwhile = !dribbling.is_finished();
    done.store(true, Ordering::SeqCst);
    dribbling.join().unwrap();
    assert_eq!(status, 200);
    assert!(dribbled_meanwhile, "the new client was served only once the trickling stopped");
}

/// A backend speaking TLS with `leaf`: answers every request with `name`, and counts the
/// connections that carried requests other than health probes.
struct TlsBackend {
    addr: SocketAddr,
    exchange_connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl TlsBackend {
    fn start(leaf: &Leaf, name: &'static str) -> TlsBackend {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&leaf.cert).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend = TlsBackend {
            addr: listener.local_addr().unwrap(),
            exchange_connections: Arc::new(AtomicUsize::new(0)),
            requests: Arc::new(AtomicUsize::new(0)),
        };
        let (connections, requests) = (Arc::clone(&backend.exchange_connections), Arc::clone(&backend.requests));
        thread::spawn(move || {
            for socket in listener.incoming().flatten() {
                let (config, connections, requests) =
                    (Arc::clone(&config), Arc::clone(&connections), Arc::clone(&requests));
                thread::spawn(move || serve_tls(socket, config, name, &connections, &requests));
            }
        });
        backend
    }
}

fn serve_tls(
    socket: TcpStream,
    config: Arc<ServerConfig>,
    name: &str,
    connections: &AtomicUsize,
    requests: &AtomicUsize,
) {
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut stream = StreamOwned::new(ServerConnection::new(config).unwrap(), socket);
    let mut counted = false;
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while find(&head, b"\r\n\r\n").is_none() {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let probe = String::from_utf8_lossy(&head).contains("sluice-health-check");
        if !probe {
            requests.fetch_add(1, Ordering::SeqCst);
            if !counted {
                connections.fetch_add(1, Ordering::SeqCst);
                counted = true;
            }
        }
        let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}", name.len());
        if stream.write_all(response.as_bytes()).is_err() || probe {
            return;
        }
    }
}

#[test]
fn https_backends_are_verified_against_the_pools_ca_and_their_connections_reused() {
    let pki = Pki::new("backends");
    let leaf = pki.leaf("backend", &["localhost", "127.0.0.1"], 90);
    let by_name = TlsBackend::start(&leaf, "by-name");
    let by_ip = TlsBackend::start(&leaf, "by-ip");
    let servers = format!(r#""https://localhost:{}", "https://127.0.0.1:{}""#, by_name.addr.port(), by_ip.addr.port());
    let sluice = Sluice::from_json(&format!(
        r#"{{"listen": "127.0.0.1:0", "servers": [{servers}], "tls": {{"ca": {:?}}}}}"#,
        pki.ca()
    ));
    // One kept-alive client: its worker puts each backend connection back before it reads
    // the next request (separate clients race the worker that has yet to put it back).
    let mut client = sluice.connect();
    let bodies: Vec<String> = (0..6)
        .map(|_| {
            client.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n");
            client.response().expect("an answer on the kept-alive connection").text()
        })
        .collect();
    assert_eq!(bodies.iter().filter(|b| *b == "by-name").count(), 3, "{bodies:?}");
    assert_eq!(bodies.iter().filter(|b| *b == "by-ip").count(), 3, "{bodies:?}");
    assert_eq!(by_name.exchange_connections.load(Ordering::SeqCst), 1, "TLS connections to backends are reused");
    assert_eq!(by_ip.exchange_connections.load(Ordering::SeqCst), 1);
}

#[test]
fn an_untrusted_backend_certificate_is_a_clear_502_unless_verify_is_false() {
    let pki = Pki::new("untrusted");
    let leaf = pki.leaf("backend", &["localhost"], 90);
    let backend = TlsBackend::start(&leaf, "tls");
    let url = format!("https://localhost:{}", backend.addr.port());
    let quiet_health = r#""healthCheckInterval": "1m", "healthCheck": {"passiveFails": 0}"#;
    let strict = Sluice::from_json(&format!(r#"{{"listen": "127.0.0.1:0", "servers": [{url:?}], {quiet_health}}}"#));
    let r = strict.get("/");
    assert_eq!(r.status, 502, "{}{}", r.raw_head, r.text());
    assert!(r.text().contains("TLS certificate is not trusted"), "{}", r.text());
    assert_eq!(backend.requests.load(Ordering::SeqCst), 0, "nothing was sent to an untrusted backend");
    let lax = Sluice::from_json(&format!(
        r#"{{"listen": "127.0.0.1:0", "servers": [{url:?}], {quiet_health}, "tls": {{"verify": false}}}}"#
    ));
    assert_eq!(lax.get("/").text(), "tls");
}

#[test]
fn certificates_reload_for_new_handshakes_while_open_connections_go_on() {
    let pki = Pki::new("reload");
    let first = pki.leaf("first", &["a.test"], 90);
    let second = pki.leaf("second", &["a.test"], 90);
    let live = Leaf { cert: pki.dir.join("live.pem"), key: pki.dir.join("live.key"), der: Vec::new() };
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let backend = TestBackend::named("a");
    let token = "t0ken";
    let json = format!(
        r#"{{"listen": "127.0.0.1:0", "servers": [{:?}], "tls": {},
            "admin": {{"listen": "127.0.0.1:0", "token": "{token}"}}}}"#,
        backend.url(),
        tls_json(&live)
    );
    let path = config_file("tls-reload", &json);
    let sluice = Sluice::from_file(&path);
    let admin = sluice.server().admin_addr().unwrap();
    let config = trusting(&pki.ca(), &[&rustls::version::TLS13]);
    let mut open = connect(sluice.addr, "a.test", &config);
    assert_eq!(presented(&mut open).unwrap(), first.der);
    std::fs::copy(&second.cert, &live.cert).unwrap();
    std::fs::copy(&second.key, &live.key).unwrap();
    let r = admin_call(admin, "POST", "/reload", Some(token), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(presented(&mut connect(sluice.addr, "a.test", &config)).unwrap(), second.der);
    assert_eq!(get(&mut open, "/", "a.test").0, 200, "the connection opened before the reload goes on");
    std::fs::write(&live.cert, "not a certificate").unwrap();
    let r = admin_call(admin, "POST", "/reload", Some(token), "");
    assert_eq!(r.status, 500, "a bad certificate file must refuse the reload: {}", r.text());
    assert!(r.text().contains("tls"), "the refusal names the key: {}", r.text());
    assert_eq!(presented(&mut connect(sluice.addr, "a.test", &config)).unwrap(), second.der, "the old one stays");
}

fn check(json: &str, name: &str) -> (i32, String) {
    let path = config_file(name, json);
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["--check", "--config"]).arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_prints_each_certificates_names_and_expiry_and_warns_under_14_days() {
    let pki = Pki::new("check");
    let fresh = pki.leaf("fresh", &["a.test", "www.a.test"], 90);
    let expiring = pki.leaf("expiring", &["b.test"], 5);
    let json = format!(
        r#"{{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"],
            "tls": {{"certificates": [{}, {}]}}}}"#,
        tls_json(&fresh),
        tls_json(&expiring)
    );
    let (code, out) = check(&json, "tls-check");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("names a.test, www.a.test"), "{out}");
    assert!(out.contains("names b.test"), "{out}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains("WARNING")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(warnings[0].contains("expiring.pem"), "{out}");
    let broken = format!(
        r#"{{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"], "tls": {{"cert": {:?}, "key": {:?}}}}}"#,
        fresh.cert, expiring.key
    );
    let (code, out) = check(&broken, "tls-check-mismatch");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("tls") && out.contains("does not belong"), "{out}");
    let missing = r#"{"listen": "127.0.0.1:0", "servers": ["http://127.0.0.1:1"], "tls": {"cert": "/nowhere.pem", "key": "/nowhere.key"}}"#;
    let (code, out) = check(missing, "tls-check-missing");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cannot read /nowhere.pem"), "{out}");
}

#[test]
fn redirect_to_https_answers_308_except_for_acme_challenges() {
    let backend = TestBackend::named("challenge");
    let sluice = Sluice::start(&[&backend.url()], r#""redirectToHttps": 8443,"#);
    let mut c = sluice.connect();
    c.send(b"GET /x?y=1 HTTP/1.1\r\nHost: a.test:8080\r\n\r\n");
    let r = c.response().unwrap();
    assert_eq!((r.status, r.header("location")), (308, Some("https://a.test:8443/x?y=1")), "{}", r.raw_head);
    c.send(b"GET /.well-known/acme-challenge/token HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(c.response().unwrap().text(), "challenge", "ACME challenges go to the backend");
    let default_port = Sluice::start(&[&backend.url()], r#""redirectToHttps": true,"#);
    let mut c = default_port.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(c.response().unwrap().header("location"), Some("https://a.test/"));
    assert_eq!(backend.request_count(), 1);
}

#[test]
fn a_tcp_listener_with_tls_relays_plaintext_and_an_upgrade_over_tls_becomes_a_tunnel() {
    let pki = Pki::new("tunnels");
    let leaf = pki.leaf("site", &["a.test"], 90);
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    thread::spawn(move || {
        for mut socket in echo.incoming().flatten() {
            thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = socket.read(&mut buf) {
                    let _ = socket.write_all(&buf[..n]);
                }
            });
        }
    });
    let sluice = Sluice::from_json(&format!(
        r#"{{"listeners": [{{"listen": "127.0.0.1:0", "mode": "tcp", "pool": "echo", "tls": {}}}],
            "pools": {{"echo": {{"servers": ["tcp://{echo_addr}"]}}}}}}"#,
        tls_json(&leaf)
    ));
    let config = trusting(&pki.ca(), &[&rustls::version::TLS13]);
    let mut stream = connect(sluice.addr, "a.test", &config);
    stream.write_all(b"hello through tls").unwrap();
    let mut got = [0u8; 17];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello through tls", "the backend saw plaintext and echoed it");
}

#[test]
fn curl_and_openssl_speak_https_to_sluice() {
    let tools = ["curl", "openssl"];
    if let Some(missing) = tools.iter().find(|t| Command::new(t).arg("--version").output().is_err()) {
        return skip(&format!("{missing} is not installed"));
    }
    let pki = Pki::new("tools");
    let leaf = pki.leaf("site", &["a.test"], 90);
    let backend = TestBackend::named("from-curl");
    let sluice = https_sluice(&backend, &tls_json(&leaf), "");
    let port = sluice.addr.port();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(pki.ca())
        .args(["--resolve", &format!("a.test:{port}:127.0.0.1"), &format!("https://a.test:{port}/")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-curl", "{}", String::from_utf8_lossy(&out.stderr));
    let s_client = |extra: &[&str]| {
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "a.test", "-alpn", "http/1.1"])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        child.stdout.extend_from_slice(&child.stderr);
        String::from_utf8_lossy(&child.stdout).into_owned()
    };
    let out = s_client(&[]);
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
    assert!(out.contains("TLSv1.3"), "{out}");
    let out = s_client(&["-tls1_1"]);
    assert!(!out.contains("ALPN protocol: http/1.1"), "TLS 1.1 must be refused: {out}");
}

/// A plain backend that answers `GET /bytes/N` with N bytes, counts the body of any other
/// request and answers the count, and switches `GET /upgrade` to an echo tunnel.
fn streaming_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for socket in listener.incoming().flatten() {
            thread::spawn(move || serve_streaming(socket));
        }
    });
    addr
}

fn serve_streaming(mut socket: TcpStream) {
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while find(&head, b"\r\n\r\n").is_none() {
            if socket.read(&mut byte).unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let target = head.split(' ').nth(1).unwrap_or("/").to_string();
        let length: u64 = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0);
        if target == "/upgrade" {
            let _ =
                socket.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n");
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = socket.read(&mut buf) {
                let _ = socket.write_all(&buf[..n]);
            }
            return;
        }
        let reply = match target.strip_prefix("/bytes/") {
            Some(n) => {
                let n: u64 = n.parse().unwrap();
                let _ = write!(socket, "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
                let block = vec![b'x'; 64 * 1024];
                let mut left = n;
                while left > 0 {
                    let take = left.min(block.len() as u64) as usize;
                    if socket.write_all(&block[..take]).is_err() {
                        return;
                    }
                    left -= take as u64;
                }
                continue;
            }
            None => {
                let mut left = length;
                let mut buf = vec![0u8; 64 * 1024];
                while left > 0 {
                    let n = socket.read(&mut buf[..left.min(65536) as usize]).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    left -= n as u64;
                }
                length.to_string()
            }
        };
        let _ = write!(socket, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}", reply.len());
    }
}

#[test]
fn an_upgrade_over_tls_becomes_a_tunnel() {
    let pki = Pki::new("upgrade");
    let leaf = pki.leaf("site", &["a.test"], 90);
    let backend = format!("http://{}", streaming_backend());
    let sluice = Sluice::start(&[&backend], &format!(r#""tls": {},"#, tls_json(&leaf)));
    let config = trusting(&pki.ca(), &[&rustls::version::TLS13]);
    let mut stream = connect(sluice.addr, "a.test", &config);
    stream
        .write_all(b"GET /upgrade HTTP/1.1\r\nHost: a.test\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\nearly ")
        .unwrap();
    let (status, head, _) = read_response(&mut stream);
    assert_eq!(status, 101, "{head}");
    stream.write_all(b"and later").unwrap();
    let mut echoed = [0u8; 15];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"early and later", "bytes sent with the request and after the 101 come back");
}

fn process_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_gib_through_tls_each_way_takes_fixed_memory() {
    const GIB: u64 = 1024 * 1024 * 1024;
    let pki = Pki::new("large");
    let leaf = pki.leaf("site", &["a.test"], 90);
    let backend = format!("http://{}", streaming_backend());
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let json = format!(r#"{{"listen": "127.0.0.1:{port}", "servers": [{backend:?}], "tls": {}}}"#, tls_json(&leaf));
    let path = config_file("tls-large", &json);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--config", path.to_str().unwrap()])
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(wait_until(IO_TIMEOUT, || TcpStream::connect(addr).is_ok()), "sluice did not start");
        let config = trusting(&pki.ca(), &[&rustls::version::TLS13]);
        let mut stream = connect(addr, "a.test", &config);
        stream.sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        assert_eq!(get(&mut stream, "/bytes/1024", "a.test").0, 200, "warm up");
        let before = process_rss_kib(child.id());
        // Download a GiB.
        stream.write_all(format!("GET /bytes/{GIB} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while find(&head, b"\r\n\r\n").is_none() {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = GIB;
        while left > 0 {
            let take = left.min(buf.len() as u64) as usize;
            let n = stream.read(&mut buf[..take]).unwrap();
            assert!(n > 0, "the download ended {left} bytes early");
            left -= n as u64;
        }
        // Upload a GiB.
        stream
            .write_all(format!("POST /count HTTP/1.1\r\nHost: a.test\r\nContent-Length: {GIB}\r\n\r\n").as_bytes())
            .unwrap();
        let block = vec![b'y'; 256 * 1024];
        for _ in 0..GIB / block.len() as u64 {
            stream.write_all(&block).unwrap();
        }
        let (status, _, body) = read_response(&mut stream);
        assert_eq!((status, body), (200, GIB.to_string()), "the backend received the whole upload");
        let after = process_rss_kib(child.id());
        assert!(after < before + 48 * 1024, "resident memory grew from {before} KiB to {after} KiB");
    }));
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn idle_tls_clients_wait_in_the_waiting_room_and_wake_for_their_next_request() {
    let pki = Pki::new("parked");
    let leaf = pki.leaf("site", &["a.test"], 90);
    let backend = TestBackend::named("a");
    let sluice = https_sluice(&backend, &tls_json(&leaf), r#""workers": 2,"#);
    let config = trusting(&pki.ca(), &[&rustls::version::TLS13]);
    let mut idle: Vec<TlsStream> = (0..8).map(|_| connect(sluice.addr, "a.test", &config)).collect();
    for stream in &mut idle {
        assert_eq!(get(stream, "/", "a.test").0, 200);
    }
    let room = &sluice.server().runtime().waiting_room;
    assert!(
        wait_until(IO_TIMEOUT, || room.parked_count() >= 6),
        "idle TLS clients are not parked: {}",
        room.parked_count()
    );
    let mut newcomer = connect(sluice.addr, "a.test", &config);
    assert_eq!(get(&mut newcomer, "/", "a.test").0, 200, "a new client is served while the idle ones wait");
    for stream in &mut idle {
        // Two pipelined requests in one write: TLS may decrypt both while the head takes one.
        stream.write_all(b"GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: a.test\r\n\r\n").unwrap();
        assert_eq!(read_response(stream).0, 200);
        assert_eq!(read_response(stream).0, 200, "the second pipelined request was answered");
    }
}

#[test]
fn a_returning_client_resumes_its_session() {
    let pki = Pki::new("resume");
    let leaf = pki.leaf("site", &["a.test"], 90);
    let backend = TestBackend::named("a");
    let sluice = https_sluice(&backend, &tls_json(&leaf), "");
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let config = trusting(&pki.ca(), versions);
        let mut first = connect(sluice.addr, "a.test", &config);
        assert_eq!(get(&mut first, "/", "a.test").0, 200);
        assert_eq!(first.conn.handshake_kind(), Some(rustls::HandshakeKind::Full));
        let mut second = connect(sluice.addr, "a.test", &config);
        assert_eq!(get(&mut second, "/", "a.test").0, 200);
        let kind = second.conn.handshake_kind();
        assert_eq!(kind, Some(rustls::HandshakeKind::Resumed), "{versions:?}: the second handshake was {kind:?}");
    }
}

#[test]
fn a_handshake_that_stalls_is_closed_after_client_header() {
    let pki = Pki::new("stall");
    let leaf = pki.leaf("site", &["a.test"], 90);
    let backend = TestBackend::named("a");
    let sluice = https_sluice(&backend, &tls_json(&leaf), r#""timeouts": {"clientHeader": "1s"},"#);
    let config = trusting(&pki.ca(), &[&rustls::version::TLS13]);
    let hello = client_hello(&config);
    let mut stalled = Client::connect(sluice.addr);
    stalled.send(&hello[..10]);
    let started = std::time::Instant::now();
    // read_to_close fails unless sluice closes within 5 s, well before the default 10 s.
    stalled.read_to_close();
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the deadline: {:?}", started.elapsed());
}
