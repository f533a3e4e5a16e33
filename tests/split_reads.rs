//! A request arriving in pieces is the same request: for generated requests (method, target,
//! fields, no body or a Content-Length or chunked one) split at arbitrary byte boundaries over
//! several writes, the backend sees exactly what it sees when the request arrives in one write.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use std::thread;
use std::time::Duration;

/// Cases per run: enough to cross every boundary kind often, small enough for a few seconds.
const CASES: u32 = 64;

/// Where failing cases are kept (committed), to be replayed first on every later run.
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proptest-regressions/split_reads.txt");

/// Not a synchronisation: a short pause between writes on a `TCP_NODELAY` socket is what
/// makes each piece a separate segment, so sluice's reads really do end at the cuts.
const PAUSE_BETWEEN_PIECES: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
enum Body {
    None,
    Length(Vec<u8>),
    /// The body's bytes in the chunks they are sent as, each with an optional extension, and
    /// the trailer fields after the last chunk.
    Chunked {
        chunks: Vec<(Vec<u8>, Option<String>)>,
        trailers: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone)]
struct Request {
    method: String,
    target: String,
    fields: Vec<(String, String)>,
    body: Body,
}

impl Request {
    fn wire(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\nHost: split.test\r\n", self.method, self.target).into_bytes();
        for (name, value) in &self.fields {
            out.extend(format!("{name}: {value}\r\n").as_bytes());
        }
        match &self.body {
            Body::None => out.extend(b"\r\n"),
            Body::Length(bytes) => {
                out.extend(format!("Content-Length: {}\r\n\r\n", bytes.len()).as_bytes());
                out.extend(bytes);
            }
            Body::Chunked { chunks, trailers } => {
                out.extend(b"Transfer-Encoding: chunked\r\n\r\n");
                for (bytes, extension) in chunks.iter().filter(|(b, _)| !b.is_empty()) {
                    let extension = extension.as_deref().map(|e| format!(";{e}")).unwrap_or_default();
                    out.extend(format!("{:X}{extension}\r\n", bytes.len()).as_bytes());
                    out.extend(bytes);
                    out.extend(b"\r\n");
                }
                out.extend(b"0\r\n");
                for (name, value) in trailers {
                    out.extend(format!("{name}: {value}\r\n").as_bytes());
                }
                out.extend(b"\r\n");
            }
        }
        out
    }

    fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            Body::None => Vec::new(),
            Body::Length(bytes) => bytes.clone(),
            Body::Chunked { chunks, .. } => chunks.iter().flat_map(|(b, _)| b.clone()).collect(),
        }
    }
}

/// Field names sluice never rewrites: `X-P-` and a token.
fn field_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}".prop_map(|t| format!("X-P-{t}"))
}

/// Visible characters with inner spaces and tabs; no leading or trailing whitespace.
fn field_value() -> impl Strategy<Value = String> {
    prop_oneof!["[!-~]{0,1}", "[!-~][ \t!-~]{0,30}[!-~]"]
}

fn body() -> impl Strategy<Value = Body> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..300);
    let extension = prop::option::of("[a-z]{1,5}(=[a-z0-9]{1,5})?");
    prop_oneof![
        Just(Body::None),
        bytes().prop_map(Body::Length),
        (prop::collection::vec((bytes(), extension), 0..5), prop::collection::vec((field_name(), field_value()), 0..3))
            .prop_map(|(chunks, trailers)| Body::Chunked { chunks, trailers }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"]);
    let target = "/[A-Za-z0-9._~%!$&'()*+,;=:@/-]{0,40}(\\?[A-Za-z0-9._~%&=/?-]{0,20})?";
    let fields = prop::collection::vec((field_name(), field_value()), 0..8);
    (method, target, fields, body()).prop_map(|(method, target, fields, body)| Request {
        method: method.to_string(),
        target,
        fields,
        body,
    })
}

/// Sends `pieces` on a new connection, a pause between them, and returns what the backend saw.
fn forward(sluice: &Sluice, backend: &TestBackend, pieces: &[&[u8]]) -> Result<Seen, String> {
    let before = backend.request_count();
    let mut client = sluice.connect();
    client.stream.set_nodelay(true).map_err(|e| e.to_string())?;
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            thread::sleep(PAUSE_BETWEEN_PIECES);
        }
        client.send(piece);
    }
    let response = client.response()?;
    if response.status != 200 {
        return Err(format!("status {}: {}", response.status, response.text()));
    }
    let seen = backend.requests();
    if seen.len() != before + 1 {
        return Err(format!("the backend saw {} requests, not one", seen.len() - before));
    }
    Ok(seen[before].clone())
}

/// Where one cut goes: anywhere, or (`near_syntax`) just before or after a byte that ends or
/// separates something (CR, LF, colon, semicolon, space), where parsers most often slip.
#[derive(Debug, Clone)]
struct Cut {
    near_syntax: bool,
    index: Index,
}

/// `wire` cut at `cuts`, in any order, repeats allowed.
fn split<'a>(wire: &'a [u8], cuts: &[Cut]) -> Vec<&'a [u8]> {
    let syntax: Vec<usize> =
        (1..wire.len()).filter(|&i| b"\r\n:; ".contains(&wire[i]) || b"\r\n:; ".contains(&wire[i - 1])).collect();
    let position = |cut: &Cut| match cut.near_syntax {
        true if !syntax.is_empty() => syntax[cut.index.index(syntax.len())],
        _ => cut.index.index(wire.len()),
    };
    let mut at: Vec<usize> = cuts.iter().map(position).filter(|&c| c > 0).collect();
    at.sort_unstable();
    at.dedup();
    let mut pieces = Vec::new();
    let mut start = 0;
    for cut in at {
        pieces.push(&wire[start..cut]);
        start = cut;
    }
    pieces.push(&wire[start..]);
    pieces
}

fn check(sluice: &Sluice, backend: &TestBackend, request: &Request, cuts: &[Cut]) -> Result<(), TestCaseError> {
    let wire = request.wire();
    let whole = forward(sluice, backend, &[&wire]).map_err(|e| TestCaseError::fail(format!("in one write: {e}")))?;
    let pieces = split(&wire, cuts);
    let sizes: Vec<usize> = pieces.iter().map(|p| p.len()).collect();
    let parts = forward(sluice, backend, &pieces)
        .map_err(|e| TestCaseError::fail(format!("in pieces of {sizes:?} bytes: {e}")))?;
    let facts = |s: &Seen| (s.method.clone(), s.target.clone(), s.headers.clone(), s.body.clone());
    prop_assert_eq!(facts(&parts), facts(&whole), "in pieces of {:?} bytes", sizes);
    prop_assert_eq!(&whole.method, &request.method);
    prop_assert_eq!(&whole.target, &request.target);
    prop_assert_eq!(whole.body, request.body_bytes());
    let sent: Vec<(String, String)> = request.fields.clone();
    let passed: Vec<(String, String)> = whole.headers.into_iter().filter(|(n, _)| n.starts_with("X-P-")).collect();
    prop_assert_eq!(passed, sent);
    Ok(())
}

#[test]
fn a_request_split_at_any_bytes_is_forwarded_exactly_as_if_it_came_in_one_write() {
    let backend = TestBackend::start(|_| Reply::ok("ok"));
    let sluice = Sluice::start(&[&backend.url()], r#""workers": 4, "healthCheckInterval": "1m","#);
    let persistence = FileFailurePersistence::Direct(REGRESSIONS);
    let config = Config { cases: CASES, failure_persistence: Some(Box::new(persistence)), ..Config::default() };
    let cut = (any::<bool>(), any::<Index>()).prop_map(|(near_syntax, index)| Cut { near_syntax, index });
    let cases = (request(), prop::collection::vec(cut, 1..12));
    let result = TestRunner::new(config).run(&cases, |(request, cuts)| check(&sluice, &backend, &request, &cuts));
    if let Err(e) = result {
        panic!("{e}");
    }
}
