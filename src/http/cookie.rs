//! Cookies, as far as sticky sessions need them: finding one cookie's value in a request's
//! `Cookie` fields, and writing the `Set-Cookie` value that pins a client to a backend.
//!
//! Called by `proxy`, which reads the cookie and writes the one `pool` names. Pure functions, no shared state.

use super::head::HeaderList;

/// The value of the first cookie called `name` in any of the request's `Cookie` fields
/// (`a=1; b=2`, several fields allowed), without surrounding double quotes. Names match
/// exactly, case included, as RFC 6265 says.
pub fn find_cookie<'a>(head: &'a impl HeaderList, name: &'a str) -> Option<&'a str> {
    head.values("cookie").flat_map(|field| field.split(|&b| b == b';')).find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
        if key != name.as_bytes() {
            return None;
        }
        let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
        std::str::from_utf8(value).ok()
    })
}

/// The `Set-Cookie` value for a session cookie on the whole site, hidden from scripts.
pub fn set_cookie(name: &str, value: &str) -> String {
    format!("{name}={value}; Path=/; HttpOnly")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{Header, RequestHead, Version};

    fn head(cookies: &[&str]) -> RequestHead {
        let headers = cookies.iter().map(|v| Header { name: "Cookie".into(), value: v.as_bytes().to_vec() }).collect();
        RequestHead { method: "GET".into(), target: "/".into(), version: Version::Http11, headers }
    }

    #[test]
    fn finds_the_named_cookie_among_many() {
        let table: [(&[&str], Option<&str>); 10] = [
            (&["SRV=abc"], Some("abc")),
            (&["a=1; SRV=abc; b=2"], Some("abc")),
            (&["a=1;SRV=abc"], Some("abc")),
            (&["a=1", "SRV=abc"], Some("abc")), // a second Cookie field
            (&["SRV=\"abc\""], Some("abc")),
            (&["SRV=first; SRV=second"], Some("first")),
            (&["srv=abc"], None), // names are case-sensitive
            (&["XSRV=abc; SRVX=abc"], None),
            (&["SRV"], None),
            (&[], None),
        ];
        for (fields, want) in table {
            assert_eq!(find_cookie(&head(fields), "SRV"), want, "{fields:?}");
        }
        assert_eq!(find_cookie(&head(&["SRV="]), "SRV"), Some(""));
        assert_eq!(find_cookie(&head(&[" ; SRV = x ;"]), "SRV"), Some("x"));
    }

    #[test]
    fn set_cookie_covers_the_site_and_hides_from_scripts() {
        assert_eq!(set_cookie("SRV", "0123abcd"), "SRV=0123abcd; Path=/; HttpOnly");
    }
}
