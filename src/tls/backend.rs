//! TLS to `https://` backends: the client configuration of a pool. Backends are verified
//! against the system's roots plus the pool's `tls.ca`; the name checked (and sent as SNI) is
//! the host of the backend's URL, an IP address against the certificate's IP names.
//! `"verify": false` accepts any certificate, still checking that the handshake is signed by
//! the key the backend presented; it is logged as a warning at start.

use crate::config::{BackendTls, ConfigError, ServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// The system's root certificates, read once per load of the configuration.
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    roots
}

/// The client configuration for a pool's `https://` backends. `key` names the pool's `tls`
/// in errors.
pub fn client_config(
    tls: &BackendTls,
    system: &RootCertStore,
    source: &str,
    key: &str,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError { file: source.into(), key: key.into(), problem: e.to_string() })?;
    let mut config = if tls.verify {
        let mut roots = system.clone();
        if let Some(ca) = &tls.ca {
            let error = |problem: String| ConfigError { file: source.into(), key: format!("{key}.ca"), problem };
            let pem = std::fs::read(ca).map_err(|e| error(format!("cannot read {}: {e}", ca.display())))?;
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| error(format!("{} is not PEM: {e:?}", ca.display())))?;
                roots.add(cert).map_err(|e| error(format!("{}: {e}", ca.display())))?;
                added += 1;
            }
            if added == 0 {
                return Err(error(format!("{} holds no certificate", ca.display())));
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A new TLS client connection to `server`, naming its host for SNI and verification.
pub fn connection(config: &Arc<ClientConfig>, server: &ServerConfig) -> std::io::Result<ClientConnection> {
    let name = ServerName::try_from(server.host.clone())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{}: {e}", server.host)))?;
    ClientConnection::new(Arc::clone(config), name).map_err(std::io::Error::other)
}

/// `"verify": false`: any certificate is accepted, but the handshake must still be signed by
/// the key in the certificate the backend sent.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
