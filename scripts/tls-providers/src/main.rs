//! Measures the two crypto providers rustls offers, as sluice would use them: full TLS 1.3
//! handshakes with an ECDSA P-256 certificate (the server's work and the client's), resumed
//! handshakes, and bulk application data (server to client, 16 KiB records). Everything runs
//! in memory, one thread, no sockets, so the numbers are the providers' own cost. Prints one
//! JSON object.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ConnectionCommon, RootCertStore, ServerConfig, ServerConnection, SideData};
use std::ops::DerefMut;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MEASURE: Duration = Duration::from_secs(3);
const BULK_BYTES: usize = 256 << 20;

fn main() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().self_signed(&key).unwrap();
    let cert_der = CertificateDer::from(cert.der().to_vec());
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let providers: [(&str, CryptoProvider); 2] = [
        ("ring", rustls::crypto::ring::default_provider()),
        ("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider()),
    ];
    let mut rows = Vec::new();
    for (name, provider) in providers {
        let (server, client) = configs(name, Arc::new(provider), &cert_der, &key_der);
        let mut fresh = (*client).clone();
        fresh.resumption = rustls::client::Resumption::disabled();
        let fresh = Arc::new(fresh);
        let full = rate(|| drop(handshake(&server, &fresh)));
        let resumed = rate(|| drop(handshake(&server, &client)));
        let mib_s = bulk(&server, &client);
        rows.push(format!(
            r#"{{"provider": "{name}", "full_handshakes_per_s": {full:.0}, "resumed_handshakes_per_s": {resumed:.0}, "bulk_mib_per_s": {mib_s:.0}}}"#
        ));
    }
    println!(r#"{{"certificate": "ECDSA P-256", "tls": "1.3", "providers": [{}]}}"#, rows.join(", "));
}

fn configs(
    name: &str,
    provider: Arc<CryptoProvider>,
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.clone_key())
        .unwrap();
    server.send_tls13_tickets = 1;
    server.ticketer = match name {
        "ring" => rustls::crypto::ring::Ticketer::new().unwrap(),
        _ => rustls::crypto::aws_lc_rs::Ticketer::new().unwrap(),
    };
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// Runs `step` for [`MEASURE`] and returns how many times a second it ran.
fn rate(mut step: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < MEASURE {
        step();
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// One handshake between a new client and a new server connection; it resumes an earlier
/// session when `client` keeps them (TLS 1.3 tickets).
fn handshake(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> (ServerConnection, ClientConnection) {
    let mut c = ClientConnection::new(Arc::clone(client), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut s = ServerConnection::new(Arc::clone(server)).unwrap();
    while c.is_handshaking() || s.is_handshaking() {
        transfer(&mut c, &mut s);
        transfer(&mut s, &mut c);
    }
    transfer(&mut s, &mut c);
    (s, c)
}

/// Moves every TLS byte `from` has for the other side into `to`, and processes it.
fn transfer<A, SA, B, SB>(from: &mut A, to: &mut B)
where
    A: DerefMut<Target = ConnectionCommon<SA>>,
    B: DerefMut<Target = ConnectionCommon<SB>>,
    SA: SideData,
    SB: SideData,
{
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut slice = &buf[..];
    while !slice.is_empty() {
        to.read_tls(&mut slice).unwrap();
        to.process_new_packets().unwrap();
    }
}

/// MiB a second of application data, server to client, encrypted and decrypted.
fn bulk(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> f64 {
    let (mut s, mut c) = handshake(server, client);
    let chunk = vec![7u8; 16 * 1024];
    let mut sink = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let mut sent = 0;
    while sent < BULK_BYTES {
        s.writer().write_all(&chunk).unwrap();
        transfer(&mut s, &mut c);
        while let Ok(n @ 1..) = c.reader().read(&mut sink) {
            let _ = n;
        }
        sent += chunk.len();
    }
    (sent >> 20) as f64 / started.elapsed().as_secs_f64()
}
