//! The account key and the JSON Web Signatures every ACME request carries (RFC 8555 section
//! 6.2, RFC 7515): ES256 over P-256 with aws-lc-rs, the key as a JWK until the account is
//! known and by its URL (`kid`) after, and the key's thumbprint (RFC 7638) that key
//! authorizations end with. Pure apart from drawing random numbers.

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};

/// An account's private key.
pub struct AccountKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
}

/// `bytes` in unpadded base64url, as JWS writes every part.
pub fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `der` as a PEM block with `label`, such as `PRIVATE KEY`.
pub fn pem(label: &str, der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out + &format!("-----END {label}-----\n")
}

impl AccountKey {
    /// A new random P-256 key.
    pub fn generate() -> Result<AccountKey, String> {
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|e| format!("cannot make an account key: {e}"))?;
        AccountKey::from_pkcs8(document.as_ref())
    }

    /// The key from its PKCS#8 DER form.
    pub fn from_pkcs8(der: &[u8]) -> Result<AccountKey, String> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| format!("not a P-256 account key: {e}"))?;
        Ok(AccountKey { pair, pkcs8: der.to_vec() })
    }

    /// The key as a PEM `PRIVATE KEY` (PKCS#8), as stored.
    pub fn to_pem(&self) -> String {
        pem("PRIVATE KEY", &self.pkcs8)
    }

    /// The public key as a JWK, members in the order RFC 7638 hashes them.
    pub fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        json!({"crv": "P-256", "kty": "EC", "x": base64url(x), "y": base64url(y)})
    }

    /// The JWK thumbprint (RFC 7638): base64url of SHA-256 over the JWK's required members
    /// in lexical order without spaces.
    pub fn thumbprint(&self) -> String {
        let jwk = self.jwk();
        let text = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap_or_default(),
            jwk["y"].as_str().unwrap_or_default()
        );
        base64url(digest(&SHA256, text.as_bytes()).as_ref())
    }

    /// The flattened JWS body for a POST to `url`: signed with `kid` once the account is
    /// known (with the JWK before); `payload` `None` is a POST-as-GET.
    pub fn sign(&self, url: &str, nonce: &str, kid: Option<&str>, payload: Option<&Value>) -> Result<String, String> {
        let mut protected = json!({"alg": "ES256", "nonce": nonce, "url": url});
        match kid {
            Some(kid) => protected["kid"] = json!(kid),
            None => protected["jwk"] = self.jwk(),
        }
        let protected = base64url(protected.to_string().as_bytes());
        let payload = payload.map_or_else(String::new, |p| base64url(p.to_string().as_bytes()));
        let signing_input = format!("{protected}.{payload}");
        let signature = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|e| format!("cannot sign a request: {e}"))?;
        Ok(json!({"protected": protected, "payload": payload, "signature": base64url(signature.as_ref())}).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    #[test]
    fn signatures_verify_against_the_jwk_and_keys_survive_pem() {
        let key = AccountKey::generate().unwrap();
        let body: Value =
            serde_json::from_str(&key.sign("https://ca/new", "n1", None, Some(&json!({}))).unwrap()).unwrap();
        let protected = URL_SAFE_NO_PAD.decode(body["protected"].as_str().unwrap()).unwrap();
        let header: Value = serde_json::from_slice(&protected).unwrap();
        assert_eq!(header["jwk"], key.jwk());
        assert_eq!((header["alg"].as_str(), header["nonce"].as_str()), (Some("ES256"), Some("n1")));
        let input = format!("{}.{}", body["protected"].as_str().unwrap(), body["payload"].as_str().unwrap());
        let signature = URL_SAFE_NO_PAD.decode(body["signature"].as_str().unwrap()).unwrap();
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.pair.public_key().as_ref().to_vec());
        public.verify(input.as_bytes(), &signature).unwrap();
        let again = AccountKey::from_pkcs8(&key.pkcs8).unwrap();
        assert_eq!(again.thumbprint(), key.thumbprint());
        assert!(key.to_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
    }

    #[test]
    fn posts_as_gets_have_an_empty_payload_and_a_kid() {
        let key = AccountKey::generate().unwrap();
        let body: Value = serde_json::from_str(&key.sign("u", "n", Some("https://ca/acct/1"), None).unwrap()).unwrap();
        assert_eq!(body["payload"], "");
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body["protected"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(header["kid"], "https://ca/acct/1");
        assert!(header.get("jwk").is_none());
    }
}
