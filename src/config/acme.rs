//! Readers for automatic certificates: the top-level `acme` object (`email`, `directory`,
//! `storage`, `directoryCa`) and a listener's `"tls": {"acme": [names]}`, and the rule that
//! ties them: a listener may ask for ACME only when `acme` says where from. Paths are taken
//! relative to the configuration file's folder; nothing is read or written here (that is
//! `crate::acme`).

use super::keys::{Key, Kind, Shape};
use super::section::Section;
use super::tls::beside_config;
use super::*;
use serde_json::Value;

/// The keys of the top-level `acme` object.
pub(super) const ACME: Shape = Shape::new(&[&[
    Key::new("email", Kind::Text, "The contact address the ACME account is registered with.")
        .example("admin@example.com"),
    Key::new("directory", Kind::Pattern("^https://."), "The ACME server's directory URL.")
        .default(LETS_ENCRYPT_DIRECTORY),
    Key::new("storage", Kind::Pattern("."), "Where the account and certificates are kept, relative to this file.")
        .default(DEFAULT_ACME_STORAGE),
    Key::new(
        "directoryCa",
        Kind::Pattern("."),
        "Root certificates (PEM) to trust for the ACME server; the system's when absent.",
    )
    .example("pebble.minica.pem"),
]]);

/// Reads the top-level `acme` object, if any.
pub(super) fn read_acme(top: &mut Section) -> Result<Option<AcmeConfig>, ConfigError> {
    let Some(mut s) = top.section("acme")? else { return Ok(None) };
    s.allow(&ACME)?;
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

/// A listener with `tls.acme` needs the top-level `acme` object; say so at its key. Two
/// lists that start with the same name must be the same list: a certificate is stored in a
/// folder named after its first name.
pub(super) fn check_acme_listeners(
    top: &Section,
    listeners: &[ListenerConfig],
    acme: Option<&AcmeConfig>,
) -> Result<(), ConfigError> {
    let full_form = top.has("listeners");
    let key = |i: usize| if full_form { format!("listeners[{i}].tls.acme") } else { "tls.acme".to_string() };
    let lists: Vec<(usize, &Vec<String>)> = listeners
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.tls.as_ref().filter(|tls| !tls.acme.is_empty()).map(|tls| (i, &tls.acme)))
        .collect();
    if let (None, Some(&(i, _))) = (acme, lists.first()) {
        let problem = "needs the top-level \"acme\" object (at least {}, for Let's Encrypt) to say where \
                       certificates come from";
        return Err(top.error(&key(i), problem));
    }
    for (n, &(j, later)) in lists.iter().enumerate() {
        if let Some(&(i, _)) = lists[..n].iter().find(|(_, earlier)| earlier[0] == later[0] && *earlier != later) {
            let problem = format!(
                "starts with \"{}\" as {} does but lists other names; a certificate is stored under its first \
                 name, so the two would overwrite each other: give both listeners the same list, or start this \
                 one with another name",
                later[0],
                key(i)
            );
            return Err(top.error(&key(j), &problem));
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

    #[test]
    fn two_listeners_may_share_a_list_but_not_a_first_name_with_other_names() {
        let config = |second: &str| {
            format!(
                r#"{{"acme": {{}}, "pools": {{"p": {{"servers": ["http://127.0.0.1:1"]}}}}, "listeners": [
                    {{"listen": ":8443", "tls": {{"acme": ["a.example", "b.example"]}}, "routes": [{{"pool": "p"}}]}},
                    {{"listen": ":9443", "tls": {{"acme": {second}}}, "routes": [{{"pool": "p"}}]}}]}}"#
            )
        };
        let same = crate::config::Config::parse(&config(r#"["a.example", "b.example"]"#), "config.json");
        assert!(same.is_ok(), "{:?}", same.err().map(|e| e.to_string()));
        let error = crate::config::Config::parse(&config(r#"["a.example", "c.example"]"#), "config.json")
            .map(|_| ())
            .expect_err("a list that starts with the same name but differs is refused")
            .to_string();
        assert!(
            error.starts_with("config.json: listeners[1].tls.acme: starts with \"a.example\" as listeners[0].tls.acme"),
            "{error}"
        );
    }
}
