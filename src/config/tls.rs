//! Readers for the TLS keys: a listener's `tls` (one certificate, several chosen by SNI, or
//! names for ACME, and `minVersion`), its `redirectToHttps`, and a pool's `tls` (`ca`, `verify`) for
//! `https://` backends. Certificate paths are taken relative to the configuration file's
//! folder; the files themselves are read later, by `crate::tls`.

use super::acme::read_acme_names;
use super::section::Section;
use super::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The keys of a listener's `tls` object.
pub(super) const LISTENER_TLS_KEYS: [&str; 5] = ["cert", "key", "certificates", "acme", "minVersion"];
/// The keys of a pool's `tls` object.
pub(super) const POOL_TLS_KEYS: [&str; 2] = ["ca", "verify"];

/// A listener's `tls`: `{"cert", "key"}`, `{"certificates": [{"cert", "key"}, ...]}` or
/// `{"acme": ["example.com", ...]}`, and `minVersion`. `extra` are further keys the object may hold (the short form's pool keys).
pub(super) fn read_listener_tls(
    parent: &mut Section,
    extra: &[&'static str],
) -> Result<Option<ListenerTls>, ConfigError> {
    let Some(mut s) = parent.section("tls")? else { return Ok(None) };
    let allowed: Vec<&str> = LISTENER_TLS_KEYS.iter().chain(extra).copied().collect();
    s.allow(&allowed)?;
    let has_single = s.has("cert") || s.has("key");
    if s.has("acme") && (has_single || s.has("certificates")) {
        return Err(s.error("acme", "give either certificate files or \"acme\", not both"));
    }
    let (certificates, acme) = match (has_single, s.has("certificates")) {
        (true, true) => return Err(s.error("certificates", "give either \"cert\" and \"key\" or \"certificates\"")),
        (true, false) => (vec![read_certificate_files(&mut s)?], Vec::new()),
        (false, true) => (read_certificate_list(&mut s)?, Vec::new()),
        (false, false) if s.has("acme") => (Vec::new(), read_acme_names(&mut s)?),
        (false, false) if extra.iter().any(|k| s.has(k)) => return Ok(None),
        (false, false) => {
            let problem =
                "missing: the certificate chain, such as \"site.pem\", with its \"key\" (or \"acme\": [names])";
            return Err(s.error("cert", problem));
        }
    };
    let min_version = match s.str("minVersion")? {
        None | Some("1.2") => TlsVersion::V1_2,
        Some("1.3") => TlsVersion::V1_3,
        Some(other) => return Err(s.error("minVersion", &format!("{other:?} is not \"1.2\" or \"1.3\""))),
    };
    for key in extra {
        s.get(key);
    }
    s.finish()?;
    Ok(Some(ListenerTls { certificates, acme, min_version }))
}

fn read_certificate_list(s: &mut Section) -> Result<Vec<CertificateFiles>, ConfigError> {
    let list = match s.get("certificates") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => return Err(s.error("certificates", "must be a non-empty list of {\"cert\", \"key\"} objects")),
    };
    let mut certificates = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let mut entry = Section::new(s.file, s.child_path(&format!("certificates[{i}]")), item)?;
        entry.allow(&["cert", "key"])?;
        certificates.push(read_certificate_files(&mut entry)?);
        entry.finish()?;
    }
    Ok(certificates)
}

fn read_certificate_files(s: &mut Section) -> Result<CertificateFiles, ConfigError> {
    let cert = s.str("cert")?.ok_or_else(|| s.error("cert", "missing: the certificate chain's PEM file"))?;
    let key = s.str("key")?.ok_or_else(|| s.error("key", "missing: the private key's PEM file"))?;
    let (cert, key) = (beside_config(s.file, cert), beside_config(s.file, key));
    Ok(CertificateFiles { cert, key, key_path: s.path.clone() })
}

/// `redirectToHttps`: `true` (port 443) or the https port.
pub(super) fn read_redirect_to_https(s: &mut Section) -> Result<Option<u16>, ConfigError> {
    let problem = "must be true, false, or the https port such as 8443";
    match s.get("redirectToHttps") {
        None | Some(Value::Bool(false)) => Ok(None),
        Some(Value::Bool(true)) => Ok(Some(443)),
        Some(Value::Number(n)) => match n.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|&p| p > 0) {
            Some(port) => Ok(Some(port)),
            None => Err(s.error("redirectToHttps", problem)),
        },
        Some(_) => Err(s.error("redirectToHttps", problem)),
    }
}

/// A pool's `tls`: `{"ca": "roots.pem", "verify": false}`, both optional.
pub(super) fn read_pool_tls(s: &mut Section) -> Result<BackendTls, ConfigError> {
    let mut tls = BackendTls::default();
    if let Some(ca) = s.str("ca")? {
        tls.ca = Some(beside_config(s.file, ca));
    }
    if let Some(verify) = s.bool("verify")? {
        tls.verify = verify;
    }
    Ok(tls)
}

/// `path` as written, or beside the configuration file when it is relative.
pub(super) fn beside_config(config_file: &str, path: &str) -> PathBuf {
    let path = Path::new(path);
    match Path::new(config_file).parent() {
        Some(folder) if path.is_relative() => folder.join(path),
        _ => path.to_path_buf(),
    }
}

/// `redirectToHttps` needs a plain http listener: a redirect from a tls listener to https
/// would send clients back to where they are.
pub(super) fn check_redirect(
    s: &Section,
    tls: Option<&ListenerTls>,
    redirect_to_https: Option<u16>,
    mode: ListenerMode,
) -> Result<(), ConfigError> {
    match (redirect_to_https, tls, mode) {
        (None, _, _) => Ok(()),
        (Some(_), Some(_), _) => {
            Err(s.error("redirectToHttps", "this listener already speaks TLS; redirect from a plain one"))
        }
        (Some(_), None, ListenerMode::Http) => Ok(()),
        (Some(_), None, _) => Err(s.error("redirectToHttps", "only an http listener can redirect to https")),
    }
}
