//! Automatic certificates against a real ACME server: Debian's `pebble` (Let's Encrypt's test
//! authority) with `pebble-challtestsrv` as its DNS, answering 127.0.0.1 for every name, and
//! sluice as a real process whose http listener is the port Pebble validates HTTP-01 on.
//! Pebble's own HTTPS certificate is made here by a test CA, given to sluice as
//! `acme.directoryCa`. Checked: a certificate for two names that chains to Pebble's root is
//! obtained and served by SNI, kept across a reload and a restart without a new order
//! (sluice's own order count in `/stats`, and its log), renewed while a kept-alive TLS
//! connection stays open, a failed renewal reported while the certificate in use stays, a
//! failed first challenge leaves the listener pending with the problem in `/stats`,
//! `/metrics`, the log and the webhook, and TLS-ALPN-01 answered where no plain http
//! listener is. Skipped (failed under `SLUICE_REQUIRE_EXTERNAL=1`) without pebble.

mod common;

use common::{admin_stats, exchange_raw, skip, wait_until, TestBackend, IO_TIMEOUT};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";
/// Long enough for an order on a busy machine; a bug costs this, not a hang.
const ORDER_WITHIN: Duration = Duration::from_secs(90);

/// A child process killed and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port free for both UDP and TCP (the DNS server takes both).
fn free_dns_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS client that trusts only the certificates in `pem`.
fn trusting(pem: &[u8]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to `addr` for `name`, handshake done (or the handshake's error).
fn handshake(addr: SocketAddr, name: &str, config: &Arc<ClientConfig>) -> Result<TlsStream, String> {
    let socket = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let mut tls = StreamOwned::new(ClientConnection::new(Arc::clone(config), server_name).unwrap(), socket);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).map_err(|e| e.to_string())?;
    }
    Ok(tls)
}

/// The leaf's serial number and DNS names.
fn leaf(tls: &TlsStream) -> (String, Vec<String>) {
    let der = &tls.conn.peer_certificates().expect("a certificate")[0];
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let names = cert
        .subject_alternative_name()
        .unwrap()
        .map(|san| {
            let dns = san.value.general_names.iter().filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_string()),
                _ => None,
            });
            dns.collect()
        })
        .unwrap_or_default();
    (cert.raw_serial_as_string(), names)
}

/// One keep-alive GET over `stream`: the status and body.
fn get(stream: &mut impl ReadWrite, host: &str) -> (u16, String) {
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let length = text[..end]
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0usize);
        if data.len() >= end + 4 + length {
            let status = text[9..12].parse().unwrap();
            return (status, text[end + 4..end + 4 + length].to_string());
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Pebble and its DNS server, on ports of their own.
struct Authority {
    dir: PathBuf,
    directory: String,
    management: SocketAddr,
    dns_management: SocketAddr,
    /// The test CA that signed Pebble's HTTPS certificate (sluice's `directoryCa`).
    ca: PathBuf,
    /// Where Pebble validates HTTP-01: sluice's http listener must be here.
    http_port: u16,
    /// Where Pebble validates TLS-ALPN-01.
    tls_port: u16,
    _processes: Vec<Running>,
}

impl Authority {
    /// Starts both, Pebble issuing certificates valid for `validity_secs` when given.
    fn start(name: &str, validity_secs: Option<u64>) -> Option<Authority> {
        if !Path::new(PEBBLE).exists() || !Path::new(CHALLTESTSRV).exists() {
            skip("pebble is not installed (Debian package pebble: /usr/bin/pebble, /usr/bin/pebble-challtestsrv)");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("sluice-acme-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = write_pebble_certificate(&dir);
        let (dns, dns_management) = (free_dns_port(), SocketAddr::from(([127, 0, 0, 1], free_port())));
        let challtestsrv = Command::new(CHALLTESTSRV)
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}"), "-management", &dns_management.to_string()])
            .stdout(log_file(&dir, "challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (listen, management, http_port, tls_port) = (free_port(), free_port(), free_port(), free_port());
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("pebble.pem"), "privateKey": dir.join("pebble.key"),
            "httpPort": http_port, "tlsPort": tls_port, "ocspResponderURL": "",
            "externalAccountBindingRequired": false}});
        if let Some(validity) = validity_secs {
            config["pebble"]["certificateValidityPeriod"] = validity.into();
        }
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let pebble = Command::new(PEBBLE)
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Every order validates again, so that a renewal can fail its challenge.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log_file(&dir, "pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let authority = Authority {
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: SocketAddr::from(([127, 0, 0, 1], management)),
            dns_management,
            ca,
            http_port,
            tls_port,
            dir,
            _processes: vec![Running(challtestsrv), Running(pebble)],
        };
        let up = |addr: SocketAddr| TcpStream::connect(addr).is_ok();
        let listening = SocketAddr::from(([127, 0, 0, 1], listen));
        assert!(
            wait_until(Duration::from_secs(20), || up(listening) && up(authority.management) && up(dns_management)),
            "pebble or challtestsrv did not start; see {}",
            authority.dir.display()
        );
        Some(authority)
    }

    /// Pebble's root certificate (PEM), from its management interface.
    fn root(&self) -> Vec<u8> {
        let config = trusting(&std::fs::read(&self.ca).unwrap());
        let mut tls = handshake(self.management, "localhost", &config).unwrap();
        tls.write_all(b"GET /roots/0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut data = Vec::new();
        let _ = tls.read_to_end(&mut data);
        let text = String::from_utf8_lossy(&data);
        let start = text.find("-----BEGIN CERTIFICATE-----").expect("a PEM root");
        let end = text.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
        text[start..end].as_bytes().to_vec()
    }

    /// Makes the DNS server answer `address` for `host`.
    fn resolve(&self, host: &str, address: &str) {
        let body = format!(r#"{{"host": "{host}", "addresses": ["{address}"]}}"#);
        let request = format!(
            "POST /add-a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let answer = exchange_raw(self.dns_management, request.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(name)).unwrap()
}

/// A test CA and a certificate it signs for Pebble's HTTPS (`localhost`, 127.0.0.1); returns
/// the CA's file.
fn write_pebble_certificate(dir: &Path) -> PathBuf {
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "sluice test CA for pebble");
    let ca_cert = params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("pebble.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("pebble.key"), key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}

/// What one sluice is configured with.
struct Setup<'a> {
    authority: &'a Authority,
    names: &'a [&'a str],
    web: &'a TestBackend,
    hook: &'a TestBackend,
    /// Where the configuration and storage go.
    dir: PathBuf,
    https_port: u16,
    /// Whether a plain http listener (on Pebble's HTTP-01 port) is configured.
    plain_http: bool,
    admin: SocketAddr,
}

impl<'a> Setup<'a> {
    fn new(authority: &'a Authority, names: &'a [&'a str], web: &'a TestBackend, hook: &'a TestBackend) -> Setup<'a> {
        let dir = authority.dir.join("sluice");
        std::fs::create_dir_all(&dir).unwrap();
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Setup { authority, names, web, hook, dir, https_port: free_port(), plain_http: true, admin }
    }

    /// Only the TLS listener, on Pebble's TLS-ALPN-01 port.
    fn tls_only(mut self) -> Setup<'a> {
        (self.https_port, self.plain_http) = (self.authority.tls_port, false);
        self
    }

    fn config_file(&self) -> PathBuf {
        let a = self.authority;
        let tls_listener = serde_json::json!({"listen": format!("127.0.0.1:{}", self.https_port),
            "tls": {"acme": self.names}, "routes": [{"pool": "web"}]});
        let mut listeners = vec![tls_listener];
        if self.plain_http {
            listeners.insert(
                0,
                serde_json::json!({"listen": format!("127.0.0.1:{}", a.http_port),
                "redirectToHttps": self.https_port, "routes": [{"pool": "web"}]}),
            );
        }
        let config = serde_json::json!({
            "acme": {"email": "ops@example.com", "directory": a.directory, "directoryCa": a.ca, "storage": "store"},
            "admin": {"listen": self.admin.to_string()},
            "alerts": {"webhook": format!("{}/hook", self.hook.url())},
            "timeouts": {"keepAlive": "5m", "client": "5m"},
            "listeners": listeners,
            "pools": {"web": {"servers": [self.web.url()]}},
        });
        let path = self.dir.join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }

    fn https(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.https_port))
    }

    fn http(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.authority.http_port))
    }

    fn storage(&self) -> PathBuf {
        let port = self.authority.directory.split(':').nth(2).unwrap().trim_end_matches("/dir");
        self.dir.join("store").join(format!("127.0.0.1_{port}_dir"))
    }

    /// Starts sluice and waits until its admin API answers.
    fn start(&self, run: &str) -> Sluice {
        let log = self.dir.join(format!("sluice-{run}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("-c")
            .arg(self.config_file())
            .env("RUST_LOG", "info,sluice::access=off")
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, &format!("sluice-{run}.log")))
            .spawn()
            .unwrap();
        let sluice = Sluice { _process: Running(child), log, admin: self.admin };
        let admin = self.admin;
        assert!(wait_until(Duration::from_secs(20), || TcpStream::connect(admin).is_ok()), "{}", sluice.log());
        sluice
    }
}

struct Sluice {
    _process: Running,
    log: PathBuf,
    admin: SocketAddr,
}

impl Sluice {
    /// `/stats`' one automatic certificate.
    fn acme(&self) -> Value {
        admin_stats(self.admin)["tls"]["acme"].get(0).cloned().unwrap_or(Value::Null)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Reloads the configuration (SIGHUP) and waits until the log says it was done.
    fn reload(&self) {
        common::signal(&self._process.0, "HUP");
        assert!(wait_until(ORDER_WITHIN, || self.log().contains("reloaded ")), "{}", self.log());
    }

    fn wait_for(&self, what: &str, mut condition: impl FnMut(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let held = wait_until(ORDER_WITHIN, || {
            last = self.acme();
            condition(&last)
        });
        assert!(held, "{what}: /stats says {last}\nsluice's log:\n{}", self.log());
        last
    }
}

fn hook_events(hook: &TestBackend, event: &str) -> Vec<Value> {
    let bodies = hook.requests().into_iter().map(|seen| serde_json::from_slice::<Value>(&seen.body).unwrap());
    bodies.filter(|body| body["event"] == event).collect()
}

#[test]
fn obtains_a_certificate_for_two_names_serves_it_by_sni_and_keeps_it_across_a_restart() {
    let Some(authority) = Authority::start("obtain", None) else { return };
    let (web, hook) = (TestBackend::named("web"), TestBackend::named("hook"));
    let names = ["a.example", "b.example"];
    let setup = Setup::new(&authority, &names, &web, &hook);
    let sluice = setup.start("first");
    let status = sluice.wait_for("a certificate", |acme| acme["state"] == "valid");
    assert_eq!(status["orders"], 1, "{status}");
    assert_eq!(status["listeners"][0], setup.https().to_string());

    let pebble_root = trusting(&authority.root());
    let mut serials = Vec::new();
    for name in names {
        let mut tls = handshake(setup.https(), name, &pebble_root)
            .unwrap_or_else(|e| panic!("{name}: {e}; the served certificate does not chain to Pebble's root"));
        let (serial, sans) = leaf(&tls);
        assert_eq!(sans, names, "{name}");
        assert_eq!(get(&mut tls, name), (200, "web".to_string()));
        serials.push(serial);
    }
    assert_eq!(serials[0], serials[1], "one certificate for both names");

    let folder = setup.storage();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for file in [folder.join("account.key"), folder.join("a.example/cert.pem"), folder.join("a.example/key.pem")] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(&folder), 0o700);
    assert_eq!(mode(&folder.join("a.example")), 0o700);

    let unknown = exchange_raw(
        setup.http(),
        b"GET /.well-known/acme-challenge/no-such-token HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    );
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    let other = exchange_raw(setup.http(), b"GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n");
    assert!(other.starts_with("HTTP/1.1 308"), "{other}");
    assert!(wait_until(ORDER_WITHIN, || hook_events(&hook, "certificate_renewed").len() == 1));
    assert_eq!(hook_events(&hook, "certificate_renewed")[0]["names"], serde_json::json!(names));

    sluice.reload();
    let tls = handshake(setup.https(), "a.example", &pebble_root).expect("the certificate after a reload");
    assert_eq!(leaf(&tls).0, serials[0], "a reload keeps the stored certificate");

    drop(sluice);
    let again = setup.start("restarted");
    let mut tls = handshake(setup.https(), "b.example", &pebble_root).expect("the stored certificate, served at start");
    assert_eq!(leaf(&tls).0, serials[0], "the same certificate after the restart");
    assert_eq!(get(&mut tls, "b.example").0, 200);
    let status = again.wait_for("the stored certificate", |acme| acme["state"] == "valid");
    assert_eq!(status["orders"], 0, "a restart with a valid stored certificate orders none: {status}");
    assert!(!again.log().contains("acme: ordering"), "{}", again.log());
}

#[test]
fn renews_short_lived_certificates_while_a_kept_alive_connection_stays_open_and_reports_a_failed_renewal() {
    let Some(authority) = Authority::start("renew", Some(24)) else { return };
    let (web, hook) = (TestBackend::named("web"), TestBackend::named("hook"));
    let names = ["renew.example"];
    let setup = Setup::new(&authority, &names, &web, &hook);
    let sluice = setup.start("first");
    sluice.wait_for("a certificate", |acme| acme["state"] == "valid");
    let pebble_root = trusting(&authority.root());
    let mut kept = handshake(setup.https(), "renew.example", &pebble_root).unwrap();
    let (first, _) = leaf(&kept);
    assert_eq!(get(&mut kept, "renew.example"), (200, "web".to_string()));

    let mut latest = first.clone();
    let renewed = wait_until(ORDER_WITHIN, || {
        if let Ok(tls) = handshake(setup.https(), "renew.example", &pebble_root) {
            latest = leaf(&tls).0;
        }
        latest != first
    });
    assert!(renewed, "still serving {first}\n{}\npebble:\n{}", sluice.log(), authority.log());
    assert_eq!(get(&mut kept, "renew.example"), (200, "web".to_string()), "the kept connection still serves");
    assert_eq!(leaf(&kept).0, first, "an open connection keeps its certificate");
    assert!(wait_until(ORDER_WITHIN, || hook_events(&hook, "certificate_renewed").len() >= 2));
    let status = sluice.acme();
    assert!(status["orders"].as_u64().unwrap() >= 2, "{status}");
    assert_eq!(status["failures"], 0, "{status}");

    // The next renewal's challenge goes where nothing listens: it fails, the certificate in
    // use stays, and the failure is reported.
    authority.resolve("renew.example", "127.0.0.2");
    let status = sluice.wait_for("a failed renewal", |acme| acme["failures"] == 1);
    assert_eq!(status["state"], "valid", "the served certificate stays: {status}");
    assert!(status["problem"].as_str().unwrap().contains("urn:ietf:params:acme:error:connection"), "{status}");
    assert!(wait_until(ORDER_WITHIN, || !hook_events(&hook, "certificate_renewal_failed").is_empty()));
}

#[test]
fn a_failed_challenge_leaves_the_listener_pending_with_the_problem_logged_and_alerted() {
    let Some(authority) = Authority::start("fail", None) else { return };
    // Pebble validates at 127.0.0.2, where nothing listens: the connection is refused.
    authority.resolve("unreachable.example", "127.0.0.2");
    let (web, hook) = (TestBackend::named("web"), TestBackend::named("hook"));
    let names = ["unreachable.example"];
    let setup = Setup::new(&authority, &names, &web, &hook);
    let check = Command::new(env!("CARGO_BIN_EXE_sluice")).arg("--check").arg("-c").arg(setup.config_file()).output();
    let check = String::from_utf8_lossy(&check.unwrap().stdout).to_string();
    assert!(check.contains("tls acme: names unreachable.example; PENDING: no certificate stored yet"), "{check}");

    let sluice = setup.start("first");
    let status = sluice.wait_for("a failed order", |acme| acme["failures"] == 1);
    assert_eq!(status["state"], "pending", "{status}");
    let problem = status["problem"].as_str().unwrap();
    assert!(problem.contains("validating unreachable.example"), "{problem}");
    assert!(problem.contains("urn:ietf:params:acme:error:connection"), "{problem}");
    assert!(sluice.log().contains("acme: no certificate for unreachable.example: validating unreachable.example"));
    assert!(sluice.log().contains("urn:ietf:params:acme:error:connection"), "{}", sluice.log());
    assert!(wait_until(ORDER_WITHIN, || !hook_events(&hook, "certificate_renewal_failed").is_empty()));
    let event = &hook_events(&hook, "certificate_renewal_failed")[0];
    assert_eq!(event["names"], serde_json::json!(names));
    assert!(event["detail"].as_str().unwrap().contains("urn:ietf:params:acme:error:connection"), "{event}");

    let metrics = common::admin_call(setup.admin, "GET", "/metrics", None, "").text();
    assert!(metrics.contains("sluice_acme_certificate_valid{names=\"unreachable.example\"} 0"), "{metrics}");
    assert!(metrics.contains("sluice_acme_order_failures_total{names=\"unreachable.example\"} 1"), "{metrics}");

    let refused = handshake(setup.https(), "unreachable.example", &trusting(&authority.root()));
    assert!(refused.is_err(), "a pending listener completes no handshake");
    let plain = exchange_raw(setup.http(), b"GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n");
    assert!(plain.starts_with("HTTP/1.1 308"), "the http listener still serves: {plain}");
    assert!(sluice
        .log()
        .contains("TLS handshake refused: the ACME certificate for unreachable.example is still pending"));
}

#[test]
fn answers_tls_alpn_challenges_in_the_handshake_when_no_plain_listener_is_there() {
    let Some(authority) = Authority::start("alpn", None) else { return };
    let (web, hook) = (TestBackend::named("web"), TestBackend::named("hook"));
    let names = ["alpn.example"];
    let setup = Setup::new(&authority, &names, &web, &hook).tls_only();
    let check = Command::new(env!("CARGO_BIN_EXE_sluice")).arg("--check").arg("-c").arg(setup.config_file()).output();
    let check = String::from_utf8_lossy(&check.unwrap().stdout).to_string();
    assert!(check.contains("challenges: TLS-ALPN-01 on the acme listeners"), "{check}");

    let sluice = setup.start("first");
    sluice.wait_for("a certificate", |acme| acme["state"] == "valid");
    // Nothing listens on Pebble's HTTP-01 port: the validation was in a TLS handshake.
    assert!(!authority.log().contains("validate w/ HTTP"), "{}", authority.log());
    let mut config = (*trusting(&authority.root())).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut tls = handshake(setup.https(), "alpn.example", &Arc::new(config)).unwrap();
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]), "ordinary clients still get http/1.1");
    assert_eq!(leaf(&tls).1, names);
    assert_eq!(get(&mut tls, "alpn.example"), (200, "web".to_string()));
}

#[test]
fn acme_configuration_errors_exit_2_naming_the_file_and_key() {
    let cases = [
        (
            r#"{"port": 8443, "servers": ["http://127.0.0.1:1"], "tls": {"acme": ["a.example"]}}"#,
            "tls.acme: needs the top-level \"acme\" object",
        ),
        (
            r#"{"port": 8443, "servers": ["http://127.0.0.1:1"], "tls": {"acme": []}, "acme": {}}"#,
            "tls.acme: must be a non-empty list",
        ),
        (
            r#"{"port": 8443, "servers": ["http://127.0.0.1:1"], "tls": {"acme": ["a.example"]}, "acme": {"directroy": "x"}}"#,
            "acme.directroy: unknown key",
        ),
    ];
    for (i, (json, expected)) in cases.into_iter().enumerate() {
        let path = common::config_file(&format!("acme-error-{i}"), json);
        let out = Command::new(env!("CARGO_BIN_EXE_sluice")).arg("--check").arg("-c").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("{}: {expected}", path.display())), "{stderr}\n  expected: {expected}");
    }
}

#[test]
fn challenge_paths_reach_the_backends_when_acme_is_not_configured() {
    let web = TestBackend::named("web");
    let sluice = common::Sluice::start(&[&web.url()], "");
    let answer = exchange_raw(
        sluice.addr,
        b"GET /.well-known/acme-challenge/token HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("web"), "{answer}");
    assert_eq!(web.requests()[0].target, "/.well-known/acme-challenge/token");
}
