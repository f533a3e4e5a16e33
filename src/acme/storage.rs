//! What ACME keeps on disk under `acme.storage`, one folder per authority (so staging and
//! production certificates never mix): the account key (`account.key`) and, per certificate,
//! a folder named after its first name with `cert.pem` (the chain) and `key.pem`. Folders are
//! made mode 0700 and files 0600; a file is written beside its place and renamed over it, so
//! a reader sees the old or the new one whole. Read by `tls` at start and reload (through
//! [`certificate_files`]) and written by the renewal thread.

use super::jws::AccountKey;
use super::order::Issued;
use super::problem::AcmeError;
use crate::config::{AcmeConfig, CertificateFiles};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The folder of `config`'s authority: `storage` joined with the directory URL's host, port
/// and path, every other character an underscore.
pub fn authority_folder(config: &AcmeConfig) -> PathBuf {
    let url = config.directory.trim_start_matches("https://");
    let name: String =
        url.chars().map(|c| if c.is_ascii_alphanumeric() || "-.".contains(c) { c } else { '_' }).collect();
    config.storage.join(name.trim_matches('_'))
}

/// Where the certificate for `names` is kept; `key_path` names the listener key for errors.
pub fn certificate_files(config: &AcmeConfig, names: &[String], key_path: &str) -> CertificateFiles {
    let folder = authority_folder(config).join(names.first().map_or("certificate", String::as_str));
    CertificateFiles { cert: folder.join("cert.pem"), key: folder.join("key.pem"), key_path: key_path.to_string() }
}

/// The account key, made and stored on first use.
pub fn account_key(config: &AcmeConfig) -> Result<AccountKey, AcmeError> {
    let path = authority_folder(config).join("account.key");
    match fs::read(&path) {
        Ok(pem) => {
            let der = PrivatePkcs8KeyDer::from_pem_slice(&pem)
                .map_err(|e| AcmeError::Crypto(format!("{}: not a PKCS#8 PEM key: {e:?}", path.display())))?;
            AccountKey::from_pkcs8(der.secret_pkcs8_der())
                .map_err(|e| AcmeError::Crypto(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = AccountKey::generate().map_err(AcmeError::Crypto)?;
            write_private(&path, key.to_pem().as_bytes())?;
            Ok(key)
        }
        Err(error) => Err(AcmeError::Storage { path, error }),
    }
}

/// Stores a new certificate for `names` (the key first, so the pair on disk matches as soon
/// as the chain is in place).
pub fn store(config: &AcmeConfig, names: &[String], issued: &Issued) -> Result<CertificateFiles, AcmeError> {
    let files = certificate_files(config, names, "");
    write_private(&files.key, issued.key_pem.as_bytes())?;
    write_private(&files.cert, issued.chain_pem.as_bytes())?;
    Ok(files)
}

fn storage_error(path: &Path) -> impl FnOnce(std::io::Error) -> AcmeError + '_ {
    move |error| AcmeError::Storage { path: path.to_path_buf(), error }
}

/// Writes `bytes` to `path` with mode 0600, making its folders with mode 0700.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AcmeError> {
    let folder = path.parent().unwrap_or(Path::new("."));
    DirBuilder::new().recursive(true).mode(0o700).create(folder).map_err(storage_error(folder))?;
    fs::set_permissions(folder, fs::Permissions::from_mode(0o700)).map_err(storage_error(folder))?;
    let temporary = path.with_extension("new");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(storage_error(&temporary))?;
    fs::set_permissions(&temporary, fs::Permissions::from_mode(0o600)).map_err(storage_error(&temporary))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(storage_error(&temporary))?;
    fs::rename(&temporary, path).map_err(storage_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(storage: &Path) -> AcmeConfig {
        AcmeConfig {
            email: None,
            directory: "https://127.0.0.1:14000/dir".into(),
            storage: storage.to_path_buf(),
            directory_ca: None,
        }
    }

    #[test]
    fn the_account_key_is_made_once_kept_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("sluice-acme-storage-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let config = config(&dir);
        let first = account_key(&config).unwrap();
        let again = account_key(&config).unwrap();
        assert_eq!(first.thumbprint(), again.thumbprint());
        let folder = authority_folder(&config);
        assert_eq!(folder, dir.join("127.0.0.1_14000_dir"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&folder.join("account.key")), 0o600);
        assert_eq!(mode(&folder), 0o700);
        let _ = fs::remove_dir_all(&dir);
    }
}
