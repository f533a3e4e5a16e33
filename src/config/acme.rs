//! Readers for automatic certificates: the top-level `acme` object (`email`, `directory`,
//! `storage`, `directoryCa`) and a listener's `"tls": {"acme": [names]}`, and the rule that
//! ties them: a listener may ask for ACME only when `acme` says where from. Paths are taken
//! relative to the configuration file's folder; nothing is read or written here (that is
//! `crate::acme`).

use super::section::Section;
use super::tls::beside_config;
use super::*;
use serde_json::Value;

/// Reads the top-level `acme` object, if any.
pub(super) fn read_acme(top: &mut Section) -> Result<Option<AcmeConfig>, ConfigError> {
    let Some(mut s) = top.section("acme")? else { return Ok(None) };
    s.allow(&["email", "directory", "storage", "directoryCa"])?;
    let email = match s.str("email")? {
        Some(email) if !is_plausible_email(email) => {
            return Err(s.error("email", &format!("{email:?} is not an address such as \"admin@example.com\"")))
        }
        email => email.map(str::to_string),
    };
    let directory = s.str("directory")?.unwrap_or(LETS_ENCRYPT_DIRECTORY);
    if !directory.starts_with("https://") || directory.len() <= "https://".len() {
        let problem = format!("{directory:?} is not an https:// URL such as \"{LETS_ENCRYPT_DIRECTORY}\"");
        return Err(s.error("directory", &problem));
    }
    let storage = match s.str("storage")? {
        Some("") => return Err(s.error("storage", "must not be empty; leave it out for \"./acme\"")),
        storage => beside_config(s.file, storage.unwrap_or(DEFAULT_ACME_STORAGE)).components().collect(),
    };
    let directory_ca = match s.str("directoryCa")? {
        Some("") => return Err(s.error("directoryCa", "must not be empty; leave it out to trust the system roots")),
        ca => ca.map(|ca| beside_config(s.file, ca)),
    };
    s.finish()?;
    Ok(Some(AcmeConfig { email, directory: directory.to_string(), storage, directory_ca }))
}

fn is_plausible_email(email: &str) -> bool {
    let Some((user, domain)) = email.split_once('@') else { return false };
    !user.is_empty() && domain.contains('.') && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Reads `acme` of a listener's `tls` object: a non-empty list of distinct DNS names.
pub(super) fn read_acme_names(s: &mut Section) -> Result<Vec<String>, ConfigError> {
    let problem = "must be a non-empty list of the names to certify, such as [\"example.com\", \"www.example.com\"]";
    let list = match s.get("acme") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => return Err(s.error("acme", problem)),
    };
    let mut names: Vec<String> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let key = format!("acme[{i}]");
        let Some(name) = item.as_str() else { return Err(s.error(&key, "must be a DNS name as a string")) };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        check_acme_name(&name).map_err(|p| s.error(&key, &p))?;
        if names.contains(&name) {
            return Err(s.error(&key, &format!("{name:?} is listed twice")));
        }
        names.push(name);
    }
    Ok(names)
}

/// Whether `name` can be certified through HTTP-01: a DNS name of two or more labels, no
/// wildcard, no IP address.
fn check_acme_name(name: &str) -> Result<(), String> {
    if name.starts_with("*.") {
        return Err(format!("{name:?}: wildcards need DNS-01 challenges, which sluice does not answer"));
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{name:?}: ACME certifies DNS names here, not IP addresses"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.contains('.') || !name.split('.').all(label_ok) {
        return Err(format!("{name:?} is not a DNS name such as \"www.example.com\""));
    }
    Ok(())
}

/// A listener with `tls.acme` needs the top-level `acme` object; say so at its key.
pub(super) fn check_acme_listeners(
    top: &Section,
    listeners: &[ListenerConfig],
    acme: Option<&AcmeConfig>,
) -> Result<(), ConfigError> {
    if acme.is_some() {
        return Ok(());
    }
    let full_form = top.has("listeners");
    for (i, listener) in listeners.iter().enumerate() {
        if listener.tls.as_ref().is_some_and(|tls| !tls.acme.is_empty()) {
            let key = if full_form { format!("listeners[{i}].tls.acme") } else { "tls.acme".to_string() };
            let problem = "needs the top-level \"acme\" object (at least {}, for Let's Encrypt) to say where \
                           certificates come from";
            return Err(top.error(&key, problem));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acme_names_are_dns_names_without_wildcards_or_addresses() {
        assert!(check_acme_name("example.com").is_ok());
        assert!(check_acme_name("a-b.c.example").is_ok());
        for bad in ["*.example.com", "127.0.0.1", "localhost", "a..b", "-a.com", "a b.com", ""] {
            assert!(check_acme_name(bad).is_err(), "{bad:?} passed");
        }
    }
}
