//! Basic authentication (RFC 7617) against stored password hashes: bcrypt (`$2a$`, `$2b$`,
//! and htpasswd's `$2y$`) or argon2id (`$argon2id$`, as `sluice hash-password` prints). A
//! plaintext password is never accepted in the configuration.
//!
//! Read by `config::edge_rules`; asked by [`super::Edge::check`] once per request on a route
//! with `basicAuth`. The only shared state is the verified-credentials memo below.
//!
//! Checking a bcrypt or argon2id hash takes milliseconds of CPU by design, and a browser sends
//! the same credentials with every request. So each user's last password that checked out is
//! kept in memory (one per configured user, so the memo is bounded by the configuration), and
//! a request repeating it is compared with it in constant time instead of being hashed again.
//! Wrong passwords are hashed every time: pair `basicAuth` with `rateLimit` against guessing.

use argon2::password_hash::phc::PasswordHash as PhcString;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use std::collections::HashMap;
use std::sync::Mutex;

/// The highest bcrypt cost accepted (htpasswd allows up to 17); each step doubles the work.
const MAX_BCRYPT_COST: u32 = 17;
/// The most memory one argon2id check may use, in KiB (256 MiB).
const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;
/// Passwords longer than this are refused without hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// One user's stored password hash, checked when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordHash {
    Bcrypt(String),
    Argon2id(String),
}

impl PasswordHash {
    /// Reads a stored hash; anything that is not a bcrypt or argon2id hash is refused, so a
    /// plaintext password cannot slip into the configuration.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        let help = "make one with `sluice hash-password` or `htpasswd -nB USER`";
        if text.starts_with("$2") {
            return parse_bcrypt(text).map_err(|why| format!("not a valid bcrypt hash ({why}); {help}"));
        }
        if text.starts_with("$argon2") {
            return parse_argon2id(text).map_err(|why| format!("not a valid argon2id hash ({why}); {help}"));
        }
        Err(format!("must be a bcrypt or argon2id password hash, not a password; {help}"))
    }

    /// Whether `password` matches this hash.
    pub fn verify(&self, password: &[u8]) -> bool {
        if password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        match self {
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::Argon2id(hash) => Argon2::default().verify_password(password, hash.as_str()).is_ok(),
        }
    }
}

fn parse_bcrypt(text: &str) -> Result<PasswordHash, String> {
    let parts: bcrypt::HashParts = text.parse().map_err(|e: bcrypt::BcryptError| e.to_string())?;
    let cost = parts.get_cost();
    if !(4..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(format!("cost {cost} is outside 4 to {MAX_BCRYPT_COST}"));
    }
    Ok(PasswordHash::Bcrypt(text.to_string()))
}

fn parse_argon2id(text: &str) -> Result<PasswordHash, String> {
    let phc = PhcString::new(text).map_err(|e| e.to_string())?;
    if phc.algorithm.as_str() != "argon2id" {
        return Err(format!("{} is not argon2id", phc.algorithm));
    }
    if phc.hash.is_none() || phc.salt.is_none() {
        return Err("the salt or the hash is missing".to_string());
    }
    let params = argon2::Params::try_from(&phc).map_err(|e| e.to_string())?;
    if params.m_cost() > MAX_ARGON2_MEMORY_KIB {
        return Err(format!("m={} KiB is more than the {MAX_ARGON2_MEMORY_KIB} KiB allowed", params.m_cost()));
    }
    Ok(PasswordHash::Argon2id(text.to_string()))
}

/// Hashes `password` with argon2id and a random salt, with the crate's default parameters
/// (19 MiB of memory, 2 passes, 1 lane: the OWASP recommendation), for `sluice hash-password`.
pub fn hash_password(password: &str) -> Result<String, String> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("the password must be 1 to {MAX_PASSWORD_BYTES} bytes"));
    }
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// A route's `basicAuth` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuthConfig {
    pub realm: String,
    /// Names and their hashes, in the order written.
    pub users: Vec<(String, PasswordHash)>,
}

/// `basicAuth` at work: the users, the challenge to send, and the verified-credentials memo.
#[derive(Debug)]
pub struct BasicAuth {
    config: BasicAuthConfig,
    /// The `WWW-Authenticate` value of a `401`.
    challenge: String,
    /// Each user's last password that matched its hash. Written and read by workers checking
    /// credentials, held only for a lookup or an insert.
    verified: Mutex<HashMap<String, Vec<u8>>>,
}

impl BasicAuth {
    pub fn new(config: BasicAuthConfig) -> BasicAuth {
        let challenge = format!("Basic realm=\"{}\"", config.realm);
        BasicAuth { config, challenge, verified: Mutex::new(HashMap::new()) }
    }

    /// The `WWW-Authenticate` value for a `401`.
    pub fn challenge(&self) -> &str {
        &self.challenge
    }

    /// Whether the request's `Authorization` fields (all of them) carry a configured user
    /// and its password. More than one field is refused.
    pub fn admits<'a>(&self, mut authorization: impl Iterator<Item = &'a [u8]>) -> bool {
        let (Some(value), None) = (authorization.next(), authorization.next()) else { return false };
        let Some((user, password)) = basic_credentials(value) else { return false };
        let Some((name, hash)) = self.config.users.iter().find(|(name, _)| name.as_bytes() == user.as_slice()) else {
            // Spend the time a known user's check takes, so timing does not tell who exists.
            if let Some((_, any)) = self.config.users.first() {
                any.verify(&password);
            }
            return false;
        };
        if let Some(known) = crate::lock(&self.verified).get(name) {
            if constant_time_eq(known, &password) {
                return true;
            }
        }
        if !hash.verify(&password) {
            return false;
        }
        crate::lock(&self.verified).insert(name.clone(), password);
        true
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user and password of a `Basic` credential, such as `Basic YWxpY2U6c2VjcmV0`.
pub fn basic_credentials(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let encoded = rest.trim_ascii();
    let decoded = decode_base64(encoded)?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let password = decoded[colon + 1..].to_vec();
    let mut user = decoded;
    user.truncate(colon);
    Some((user, password))
}

/// Decodes standard base64 with its `=` padding (RFC 4648, section 4); `None` for anything
/// malformed. Sizes past what a credential needs are refused.
fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(4) || text.len() > 4 * MAX_PASSWORD_BYTES {
        return None;
    }
    let padding = text.iter().rev().take_while(|&&b| b == b'=').count();
    if padding > 2 {
        return None;
    }
    let digits = &text[..text.len() - padding];
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0u32);
    for &b in digits {
        bits = (bits << 6) | u32::from(base64_value(b)?);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    // Leftover bits must be zero, or the encoding was not canonical.
    (bits & ((1 << count) - 1) == 0).then_some(out)
}

fn base64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by `htpasswd -nbB alice secret` (cost 5).
    const HTPASSWD_BCRYPT: &str = "$2y$05$m6pRZYYoFbUk3JX5pG/nVuqOi.YH0RO8Zcohep7cnNgN50HVfXxqS";

    fn header(user_password: &str) -> Vec<u8> {
        format!("Basic {}", encode_base64(user_password.as_bytes())).into_bytes()
    }

    fn encode_base64(bytes: &[u8]) -> String {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn auth(users: &[(&str, &str)]) -> BasicAuth {
        let users = users.iter().map(|(n, h)| (n.to_string(), PasswordHash::parse(h).unwrap())).collect();
        BasicAuth::new(BasicAuthConfig { realm: "staff".into(), users })
    }

    #[test]
    fn base64_credentials_decode_into_user_and_password() {
        // (Authorization value, user and password)
        type Case = (&'static [u8], Option<(&'static str, &'static str)>);
        let table: [Case; 10] = [
            (b"Basic YWxpY2U6c2VjcmV0", Some(("alice", "secret"))),
            (b"basic YWxpY2U6c2VjcmV0", Some(("alice", "secret"))),
            (b"Basic   YWxpY2U6c2VjcmV0 ", Some(("alice", "secret"))),
            (b"Basic YTpiOmM=", Some(("a", "b:c"))),
            (b"Basic Ojo=", Some(("", ":"))),
            (b"Bearer YWxpY2U6c2VjcmV0", None),
            (b"Basic YWxpY2U", None),
            (b"Basic YWxpY2U6c2VjcmV0===", None),
            (b"Basic YWxp!2U6", None),
            (b"Basic YWxpY2U=", None),
        ];
        for (value, expected) in table {
            let got = basic_credentials(value);
            let got = got.as_ref().map(|(u, p)| (std::str::from_utf8(u).unwrap(), std::str::from_utf8(p).unwrap()));
            assert_eq!(got, expected, "{}", String::from_utf8_lossy(value));
        }
        assert_eq!(decode_base64(b"YR=="), None, "non-zero leftover bits");
        assert_eq!(header("alice:secret"), b"Basic YWxpY2U6c2VjcmV0");
    }

    #[test]
    fn only_bcrypt_and_argon2id_hashes_are_accepted() {
        let argon = hash_password("pw").unwrap();
        assert!(argon.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{argon}");
        assert!(matches!(PasswordHash::parse(&argon), Ok(PasswordHash::Argon2id(_))));
        assert!(matches!(PasswordHash::parse(HTPASSWD_BCRYPT), Ok(PasswordHash::Bcrypt(_))));
        let b2b = HTPASSWD_BCRYPT.replacen("$2y$", "$2b$", 1);
        assert!(matches!(PasswordHash::parse(&b2b), Ok(PasswordHash::Bcrypt(_))));
        // (stored text, problem)
        let table = [
            ("secret", "must be a bcrypt or argon2id password hash, not a password"),
            ("", "must be a bcrypt or argon2id password hash, not a password"),
            ("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "not a password"),
            ("$apr1$abc$def", "not a password"),
            ("$2y$05$short", "not a valid bcrypt hash"),
            ("$2q$05$m6pRZYYoFbUk3JX5pG/nVuqOi.YH0RO8Zcohep7cnNgN50HVfXxqS", "not a valid bcrypt hash"),
            ("$2y$31$m6pRZYYoFbUk3JX5pG/nVuqOi.YH0RO8Zcohep7cnNgN50HVfXxqS", "cost 31 is outside 4 to 17"),
            ("$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "argon2i is not argon2id"),
            ("$argon2id$v=19$m=19456,t=2,p=1", "not a valid argon2id hash"),
            ("$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "KiB allowed"),
        ];
        for (text, problem) in table {
            let err = PasswordHash::parse(text).expect_err(text);
            assert!(err.contains(problem), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_user_is_admitted_with_the_right_password_only() {
        let argon = hash_password("hunter2").unwrap();
        let auth = auth(&[("alice", HTPASSWD_BCRYPT), ("bob", &argon)]);
        // (Authorization fields, admitted)
        let table: [(Vec<Vec<u8>>, bool); 8] = [
            (vec![header("alice:secret")], true),
            (vec![header("bob:hunter2")], true),
            (vec![header("alice:secret")], true),
            (vec![header("alice:Secret")], false),
            (vec![header("bob:secret")], false),
            (vec![header("carol:secret")], false),
            (vec![], false),
            (vec![header("alice:secret"), header("alice:secret")], false),
        ];
        for (fields, admitted) in table {
            assert_eq!(auth.admits(fields.iter().map(Vec::as_slice)), admitted, "{fields:?}");
        }
        assert_eq!(auth.challenge(), "Basic realm=\"staff\"");
    }

    #[test]
    fn a_remembered_password_does_not_let_a_different_one_in() {
        let auth = auth(&[("alice", HTPASSWD_BCRYPT)]);
        assert!(auth.admits(std::iter::once(header("alice:secret").as_slice())));
        assert_eq!(crate::lock(&auth.verified).get("alice").map(Vec::as_slice), Some(&b"secret"[..]));
        assert!(!auth.admits(std::iter::once(header("alice:secre").as_slice())));
        assert!(!auth.admits(std::iter::once(header("alice:secrett").as_slice())));
        assert!(auth.admits(std::iter::once(header("alice:secret").as_slice())));
    }

    #[test]
    fn constant_time_comparison_agrees_with_equality() {
        for (a, b) in [(&b"abc"[..], &b"abc"[..]), (b"abc", b"abd"), (b"abc", b"ab"), (b"", b"")] {
            assert_eq!(constant_time_eq(a, b), a == b, "{a:?} {b:?}");
        }
    }
}
