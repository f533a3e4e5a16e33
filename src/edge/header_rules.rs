//! Header rules: fields a route sets or removes in the heads it sends on (`requestHeaders` to
//! the backend, `responseHeaders` to the client), after sluice's own rewriting.
//!
//! Read by `config::edge_rules`; applied by `proxy` to the head it has just written into its
//! output buffer, so the rules see exactly what would leave. Pure: no I/O, no shared state.
//!
//! `set` replaces every field of that name (names match in any case) with one field;
//! `remove` drops every field of that name. The fields that carry a connection or the
//! message's framing are sluice's alone and cannot be named: see [`is_reserved`].

use crate::http::headers::NOT_FORWARDED;

/// Whether no rule may set or remove field `name` (lower-case): the hop-by-hop fields and the
/// framing fields sluice writes from the framing it decided (`NOT_FORWARDED`), and `Host`.
pub fn is_reserved(name: &str) -> bool {
    name == "host" || NOT_FORWARDED.contains(&name)
}

/// One direction's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// Names as written and their values; each name once.
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Whether a rule names the field `name`, so the head's own fields of that name go.
    fn drops(&self, name: &[u8]) -> bool {
        self.remove.iter().any(|r| r.as_bytes().eq_ignore_ascii_case(name))
            || self.set.iter().any(|(s, _)| s.as_bytes().eq_ignore_ascii_case(name))
    }

    /// Applies the rules to the head written at `out[start..]`: a start line, `Name: value`
    /// lines and the empty line, as `http::headers` writes them, with nothing after it.
    /// The fields named by a rule are dropped, then the `set` fields are added at the end.
    pub fn apply(&self, out: &mut Vec<u8>, start: usize) {
        let Some(first_line) = line_length(&out[start..]) else { return };
        let mut read = start + first_line;
        let mut write = read;
        while let Some(len) = line_length(&out[read..]) {
            if len == 2 {
                break;
            }
            let line = read..read + len;
            let name_end = out[line.clone()].iter().position(|&b| b == b':').unwrap_or(len);
            if !self.drops(&out[read..read + name_end]) {
                out.copy_within(line, write);
                write += len;
            }
            read += len;
        }
        out.truncate(write);
        for (name, value) in &self.set {
            for part in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
                out.extend_from_slice(part);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// The length of the first line of `bytes` with its CRLF, if it has one.
fn line_length(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n").map(|i| i + 2)
}

/// Checks a rule's field name: an HTTP token, not a reserved one ([`is_reserved`]).
pub fn check_name(name: &str) -> Result<(), String> {
    let is_token =
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !is_token {
        return Err(format!("{name:?} is not a header field name"));
    }
    if is_reserved(&name.to_ascii_lowercase()) {
        return Err(format!(
            "{name:?} is a hop-by-hop or framing field that sluice writes itself; header rules cannot set or remove it"
        ));
    }
    Ok(())
}

/// Checks a value to set: printable ASCII, spaces and tabs inside, no line breaks.
pub fn check_value(value: &str) -> Result<(), String> {
    let printable = value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    let trimmed = value.trim_matches([' ', '\t']) == value;
    if !printable || !trimmed {
        return Err(format!("{value:?} must be printable ASCII without line breaks or surrounding spaces"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(set: &[(&str, &str)], remove: &[&str]) -> HeaderRules {
        HeaderRules {
            set: set.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            remove: remove.iter().map(|n| n.to_string()).collect(),
        }
    }

    const HEAD: &str = "GET / HTTP/1.1\r\nHost: a\r\nX-Old: 1\r\nserver: b\r\nx-old: 2\r\nAccept: */*\r\n\r\n";

    #[test]
    fn rules_rewrite_a_written_head() {
        // (set, remove, head after)
        type Case = (&'static [(&'static str, &'static str)], &'static [&'static str], &'static str);
        let table: [Case; 5] = [
            (&[], &[], HEAD),
            (&[], &["x-old"], "GET / HTTP/1.1\r\nHost: a\r\nserver: b\r\nAccept: */*\r\n\r\n"),
            (&[("X-Old", "new")], &[], "GET / HTTP/1.1\r\nHost: a\r\nserver: b\r\nAccept: */*\r\nX-Old: new\r\n\r\n"),
            (
                &[("Strict-Transport-Security", "max-age=63072000")],
                &["Server", "Missing"],
                "GET / HTTP/1.1\r\nHost: a\r\nX-Old: 1\r\nx-old: 2\r\nAccept: */*\r\n\
                 Strict-Transport-Security: max-age=63072000\r\n\r\n",
            ),
            (
                &[("Accept", "text/html"), ("X-A", "")],
                &["X-OLD"],
                "GET / HTTP/1.1\r\nHost: a\r\nserver: b\r\nAccept: text/html\r\nX-A: \r\n\r\n",
            ),
        ];
        for (set, remove, after) in table {
            let mut out = b"earlier bytes".to_vec();
            out.extend_from_slice(HEAD.as_bytes());
            rules(set, remove).apply(&mut out, 13);
            assert_eq!(&out[..13], b"earlier bytes");
            assert_eq!(String::from_utf8_lossy(&out[13..]), after, "set {set:?}, remove {remove:?}");
        }
    }

    #[test]
    fn a_head_with_only_a_start_line_gets_the_set_fields() {
        let mut out = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
        rules(&[("X-Frame-Options", "DENY")], &["Server"]).apply(&mut out, 0);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\nX-Frame-Options: DENY\r\n\r\n");
    }

    #[test]
    fn hop_by_hop_framing_and_malformed_names_are_refused() {
        for name in ["Connection", "keep-alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding"] {
            assert!(check_name(name).unwrap_err().contains("hop-by-hop or framing field"), "{name}");
        }
        for name in ["Upgrade", "CONTENT-LENGTH", "Host"] {
            assert!(check_name(name).unwrap_err().contains("hop-by-hop or framing field"), "{name}");
        }
        for name in ["", "X Frame", "X-Frame:", "Ünicode", "a\r\nb"] {
            assert!(check_name(name).unwrap_err().contains("is not a header field name"), "{name:?}");
        }
        for name in ["X-Frame-Options", "Server", "Authorization", "X-Forwarded-For", "a!#$%&'*+-.^_`|~z"] {
            assert_eq!(check_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn values_must_be_printable_single_lines() {
        for value in ["max-age=63072000; includeSubDomains", "", "a\tb", "\"quoted\""] {
            assert_eq!(check_value(value), Ok(()), "{value:?}");
        }
        for value in ["a\r\nX-Evil: 1", "a\nb", " padded", "padded ", "caf\u{e9}", "nul\0"] {
            assert!(check_value(value).is_err(), "{value:?}");
        }
    }
}
