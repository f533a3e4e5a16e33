//! Reading a head (start line and header fields) from a [`BufferedStream`] and parsing it with
//! httparse into an owned [`RequestHead`] or [`ResponseHead`].
//!
//! A head can be read into one kept from before (`read_request_head_into`): its strings and
//! fields keep their storage and are refilled, so a connection that reads head after head
//! allocates nothing once it has seen heads as large as the next one.
//!
//! Line endings are strict: every line ends in CRLF; a bare LF or a bare CR is refused, so no
//! backend can split the same bytes into different lines than sluice did. httparse itself
//! refuses obs-fold, whitespace before a colon and control characters in values.

use super::stream::{is_progress_only, is_timeout, BufferedStream, TimedRead};
use std::fmt;
use std::io;
use std::ops::Deref;
use std::time::{Duration, Instant};

/// Heads with more header fields than this are refused as too large.
pub const MAX_HEADERS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    Http10,
    #[default]
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// As the peer spelled it; compare with `eq_ignore_ascii_case`.
    pub name: String,
    pub value: Vec<u8>,
}

/// A head's header fields in order; reads as a slice of [`Header`]. Fields removed or cleared
/// keep their storage for the next ones pushed.
#[derive(Clone, Default)]
pub struct Headers {
    /// The fields are `fields[..len]`; the rest are spare storage.
    fields: Vec<Header>,
    len: usize,
}

impl Headers {
    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn push(&mut self, name: &str, value: &[u8]) {
        if self.len == self.fields.len() {
            self.fields.push(Header::default());
        }
        let field = &mut self.fields[self.len];
        set_text(&mut field.name, name);
        field.value.clear();
        field.value.extend_from_slice(value);
        self.len += 1;
    }

    /// Removes every field called `name` (in any case), keeping the others in order.
    pub fn remove(&mut self, name: &str) {
        let mut kept = 0;
        for i in 0..self.len {
            if !self.fields[i].name.eq_ignore_ascii_case(name) {
                self.fields.swap(kept, i);
                kept += 1;
            }
        }
        self.len = kept;
    }
}

impl Deref for Headers {
    type Target = [Header];

    fn deref(&self) -> &[Header] {
        &self.fields[..self.len]
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl From<Vec<Header>> for Headers {
    fn from(fields: Vec<Header>) -> Headers {
        Headers { len: fields.len(), fields }
    }
}

impl FromIterator<Header> for Headers {
    fn from_iter<I: IntoIterator<Item = Header>>(iter: I) -> Headers {
        Headers::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        **self == **other
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub version: Version,
    pub headers: Headers,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseHead {
    pub version: Version,
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
}

/// Why no head could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed the connection before sending any byte of a head.
    Closed,
    /// The peer closed the connection in the middle of a head.
    Truncated,
    /// The wait ran out; `partial` says whether some of the head had arrived.
    TimedOut {
        partial: bool,
    },
    /// The head is longer than the limit, or has too many fields.
    TooLarge,
    /// The first line alone (a request's target, say) is longer than the head limit.
    LineTooLong,
    Malformed(&'static str),
    UnsupportedVersion,
    /// The next read would block and `HeadWait::may_block` said not to.
    WouldBlock,
    Io(io::Error),
}

/// How a head is waited for. `first_byte` bounds the wait for it to start; from its first
/// byte it must be complete within `whole`, by `deadline`, which the caller keeps if the
/// connection is parked in between. Before each read that could block, `may_block` is asked:
/// when it says no, reading stops with [`HeadError::WouldBlock`] and the connection can wait
/// somewhere cheaper than a worker thread.
pub struct HeadWait<'a> {
    pub first_byte: Duration,
    /// `None`: no overall limit, only `first_byte` for each read.
    pub whole: Option<Duration>,
    pub deadline: Option<Instant>,
    pub may_block: &'a mut dyn FnMut() -> bool,
    /// With `Some`, no read blocks longer than this before `may_block` is asked again, so a
    /// worker waiting on a quiet client notices soon when workers become scarce.
    pub ask_again_every: Option<Duration>,
}

/// Looks up headers by name, case-insensitively.
pub trait HeaderList {
    fn all(&self) -> &[Header];

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.all().iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_slice())
    }

    fn value<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.values(name).next()
    }

    fn has(&self, name: &str) -> bool {
        self.value(name).is_some()
    }
}

impl HeaderList for RequestHead {
    fn all(&self) -> &[Header] {
        &self.headers
    }
}

impl HeaderList for ResponseHead {
    fn all(&self) -> &[Header] {
        &self.headers
    }
}

/// Reads a request head into `head`, reusing its storage.
pub fn read_request_head_into<S: TimedRead>(
    src: &mut BufferedStream<S>,
    max_bytes: usize,
    wait: &mut HeadWait,
    head: &mut RequestHead,
) -> Result<(), HeadError> {
    read_head(src, max_bytes, wait, |buf| parse_request(buf, head))
}

pub fn read_request_head<S: TimedRead>(
    src: &mut BufferedStream<S>,
    max_bytes: usize,
    wait: &mut HeadWait,
) -> Result<RequestHead, HeadError> {
    let mut head = RequestHead::default();
    read_request_head_into(src, max_bytes, wait, &mut head).map(|()| head)
}

/// Reads a response head into `head`, reusing its storage.
pub fn read_response_head_into<S: TimedRead>(
    src: &mut BufferedStream<S>,
    max_bytes: usize,
    wait: Duration,
    head: &mut ResponseHead,
) -> Result<(), HeadError> {
    let mut always = || true;
    let mut wait =
        HeadWait { first_byte: wait, whole: None, deadline: None, may_block: &mut always, ask_again_every: None };
    read_head(src, max_bytes, &mut wait, |buf| parse_response(buf, head))
}

pub fn read_response_head<S: TimedRead>(
    src: &mut BufferedStream<S>,
    max_bytes: usize,
    wait: Duration,
) -> Result<ResponseHead, HeadError> {
    let mut head = ResponseHead::default();
    read_response_head_into(src, max_bytes, wait, &mut head).map(|()| head)
}

/// Reads until `parse` finds a complete head in the buffered bytes; `parse` stores the head
/// and says how many bytes it took, or `None` while it is incomplete.
fn read_head<S: TimedRead>(
    src: &mut BufferedStream<S>,
    max_bytes: usize,
    wait: &mut HeadWait,
    mut parse: impl FnMut(&[u8]) -> Result<Option<usize>, HeadError>,
) -> Result<(), HeadError> {
    // With slices, when the first byte must have come by (without, `first_byte` bounds each read).
    let mut first_byte_by = None;
    loop {
        if !src.buffered().is_empty() {
            if let Some(len) = parse(src.buffered())? {
                if len > max_bytes {
                    // The buffer may be larger than a head may be (it also holds small bodies).
                    return Err(too_large(&src.buffered()[..max_bytes]));
                }
                src.consume(len);
                return Ok(());
            }
            if src.buffered().len() >= max_bytes || src.is_full() {
                return Err(too_large(src.buffered()));
            }
        }
        let now = Instant::now();
        if wait.deadline.is_none() && !src.buffered().is_empty() {
            wait.deadline = wait.whole.map(|whole| now + whole);
        }
        let timeout = match (wait.deadline, wait.ask_again_every) {
            (None, None) => wait.first_byte,
            (None, Some(_)) => match *first_byte_by.get_or_insert(now + wait.first_byte) {
                by if by > now => by - now,
                _ => return Err(HeadError::TimedOut { partial: false }),
            },
            (Some(d), _) if d > now => d - now,
            (Some(_), _) => return Err(HeadError::TimedOut { partial: true }),
        };
        if !(wait.may_block)() {
            return Err(HeadError::WouldBlock);
        }
        let sliced = wait.ask_again_every.filter(|&slice| slice < timeout);
        src.set_read_timeout(sliced.unwrap_or(timeout));
        match src.fill() {
            Ok(0) if src.buffered().is_empty() => return Err(HeadError::Closed),
            Ok(0) => return Err(HeadError::Truncated),
            Ok(_) => {
                if wait.deadline.is_none() {
                    wait.deadline = wait.whole.map(|whole| Instant::now() + whole);
                }
            }
            Err(e) if is_progress_only(&e) => {
                // TLS records (the handshake, say) are client input like a head's bytes: the
                // whole head, handshake included, must arrive within `whole`.
                if wait.deadline.is_none() {
                    wait.deadline = wait.whole.map(|whole| Instant::now() + whole);
                }
            }
            // A slice ran out, not the wait: ask again.
            Err(e) if is_timeout(&e) && sliced.is_some() => {}
            Err(e) if is_timeout(&e) => return Err(HeadError::TimedOut { partial: !src.buffered().is_empty() }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && src.buffered().is_empty() => {
                return Err(HeadError::Closed)
            }
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// Why a head that filled `limit` bytes without ending is refused: its first line did not fit
/// ([`HeadError::LineTooLong`]: for a request, `414`), or the line did and the fields did not
/// ([`HeadError::TooLarge`]: `431`). Empty lines before the first are skipped, as parsing does.
fn too_large(buffered: &[u8]) -> HeadError {
    let start = buffered.iter().position(|b| !matches!(b, b'\r' | b'\n')).unwrap_or(buffered.len());
    if buffered[start..].contains(&b'\n') {
        HeadError::TooLarge
    } else {
        HeadError::LineTooLong
    }
}

/// Parses a request head from the start of `buf` into `head`; `None` while it is incomplete.
/// Pure; [`read_request_head`] and the fuzz targets call it.
pub fn parse_request(buf: &[u8], head: &mut RequestHead) -> Result<Option<usize>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::Version) => return parse_other_version(buf, head),
        Err(e) => return Err(parse_error(e)),
    };
    check_line_endings(&buf[..len])?;
    head.version = version_of(req.version)?;
    set_text(&mut head.method, req.method.unwrap_or_default());
    set_text(&mut head.target, req.path.unwrap_or_default());
    refill(&mut head.headers, req.headers);
    Ok(Some(len))
}

/// httparse reads only HTTP/1.0 and HTTP/1.1. A later HTTP/1.x request is read as 1.1 (RFC
/// 9110 section 2.5), another major version is unsupported (505), and anything else where
/// the version belongs makes the request line malformed (400).
fn parse_other_version(buf: &[u8], head: &mut RequestHead) -> Result<Option<usize>, HeadError> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let Some(line_len) = buf[start..].iter().position(|&b| b == b'\r' || b == b'\n') else { return Ok(None) };
    let line = &buf[start..start + line_len];
    let malformed = HeadError::Malformed("malformed request line");
    if line.iter().filter(|&&b| b == b' ').count() != 2 {
        return Err(malformed);
    }
    match line.rsplit(|&b| b == b' ').next() {
        Some([b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor]) if (b'2'..=b'9').contains(minor) => {
            let mut as_1_1 = buf.to_vec();
            as_1_1[start + line_len - 1] = b'1';
            parse_request(&as_1_1, head)
        }
        Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor])
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(HeadError::UnsupportedVersion)
        }
        _ => Err(malformed),
    }
}

/// Parses a response head from the start of `buf` into `head`, like [`parse_request`].
pub fn parse_response(buf: &[u8], head: &mut ResponseHead) -> Result<Option<usize>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(parse_error(e)),
    };
    check_line_endings(&buf[..len])?;
    let status = resp.code.unwrap_or_default();
    if status < 100 {
        return Err(HeadError::Malformed("status code below 100"));
    }
    head.version = version_of(resp.version)?;
    head.status = status;
    set_text(&mut head.reason, resp.reason.unwrap_or_default());
    refill(&mut head.headers, resp.headers);
    Ok(Some(len))
}

fn parse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        httparse::Error::Version => HeadError::UnsupportedVersion,
        httparse::Error::HeaderName => {
            HeadError::Malformed("invalid header name, or whitespace before a colon, or obs-fold")
        }
        httparse::Error::HeaderValue => HeadError::Malformed("invalid character in a header value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status line"),
        httparse::Error::Token => HeadError::Malformed("invalid method or request line"),
    }
}

fn version_of(minor: Option<u8>) -> Result<Version, HeadError> {
    match minor {
        Some(0) => Ok(Version::Http10),
        Some(1) => Ok(Version::Http11),
        _ => Err(HeadError::UnsupportedVersion),
    }
}

/// Replaces `text` with `with`, keeping its storage.
fn set_text(text: &mut String, with: &str) {
    text.clear();
    text.push_str(with);
}

fn refill(headers: &mut Headers, parsed: &[httparse::Header<'_>]) {
    headers.clear();
    for field in parsed {
        headers.push(field.name, field.value);
    }
}

/// Every LF must follow a CR, and every CR must precede an LF: in each pair of neighbouring
/// bytes the first is a CR exactly when the second is an LF, and the head neither starts with
/// an LF nor ends with a CR. (Folded without early exits: the compiler then checks many
/// bytes per instruction.)
fn check_line_endings(head: &[u8]) -> Result<(), HeadError> {
    let (Some(&first), Some(&last)) = (head.first(), head.last()) else { return Ok(()) };
    let neighbours = head[..head.len() - 1].iter().zip(&head[1..]);
    let pairs_ok = neighbours.fold(true, |ok, (&a, &b)| ok & ((a == b'\r') == (b == b'\n')));
    if first == b'\n' || last == b'\r' || !pairs_ok {
        return Err(HeadError::Malformed("line endings must be CRLF"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// A server-side stream whose client stays connected and silent.
    fn quiet_stream() -> (BufferedStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (BufferedStream::new(server, 1024), client)
    }

    #[test]
    fn a_sliced_wait_asks_again_whether_it_may_block() {
        let (mut src, _client) = quiet_stream();
        let mut asked = 0;
        let mut may_block = || {
            asked += 1;
            asked == 1
        };
        let slice = Some(Duration::from_millis(10));
        let mut wait = HeadWait {
            first_byte: Duration::from_secs(30),
            whole: None,
            deadline: None,
            may_block: &mut may_block,
            ask_again_every: slice,
        };
        let got = read_request_head(&mut src, 1024, &mut wait);
        assert!(matches!(got, Err(HeadError::WouldBlock)), "{got:?}");
        assert_eq!(asked, 2);
    }

    #[test]
    fn slices_still_end_at_the_first_byte_timeout() {
        let (mut src, _client) = quiet_stream();
        let mut always = || true;
        let slice = Some(Duration::from_millis(10));
        let mut wait = HeadWait {
            first_byte: Duration::from_millis(60),
            whole: None,
            deadline: None,
            may_block: &mut always,
            ask_again_every: slice,
        };
        let got = read_request_head(&mut src, 1024, &mut wait);
        assert!(matches!(got, Err(HeadError::TimedOut { partial: false })), "{got:?}");
    }

    fn request(bytes: &[u8]) -> Result<Option<RequestHead>, String> {
        let mut head = RequestHead::default();
        let parsed = super::parse_request(bytes, &mut head).map_err(|e| format!("{e:?}"))?;
        Ok(parsed.map(|_| head))
    }

    fn parse_request(bytes: &[u8]) -> Result<Option<usize>, HeadError> {
        super::parse_request(bytes, &mut RequestHead::default())
    }

    #[test]
    fn parses_a_simple_request() {
        let head = request(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Y:  z \r\n\r\n").unwrap().unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/a?b=c");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.value("host"), Some(&b"x"[..]));
        assert_eq!(head.value("x-y"), Some(&b"z"[..]));
    }

    #[test]
    fn partial_heads_ask_for_more() {
        assert_eq!(request(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(request(b"GE"), Ok(None));
    }

    #[test]
    fn refuses_what_a_backend_might_read_differently() {
        let bad: &[&[u8]] = &[
            b"GET / HTTP/1.1\nHost: x\n\n",
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\x01y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\x00y\r\n\r\n",
            b"GET / HTTP/1.1\r\n: x\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        ];
        for bytes in bad {
            assert!(request(bytes).is_err(), "accepted {:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn line_endings_are_crlf_and_nothing_else() {
        let cases: [(&[u8], bool); 9] = [
            (b"a\r\nb\r\n\r\n", true),
            (b"", true),
            (b"\n", false),
            (b"\r", false),
            (b"a\nb\r\n", false),
            (b"a\rb\r\n", false),
            (b"a\r\r\n", false),
            (b"a\r\n\n", false),
            (b"a\n\r", false),
        ];
        for (bytes, ok) in cases {
            assert_eq!(check_line_endings(bytes).is_ok(), ok, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn versions_other_than_1_0_and_1_1() {
        let head = request(b"GET / HTTP/1.2\r\nHost: x\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.version, Version::Http11);
        assert!(matches!(parse_request(b"GET / HTTP/2.0\r\n\r\n"), Err(HeadError::UnsupportedVersion)));
        assert!(matches!(parse_request(b"GET / HTTP/3.0\r\n\r\n"), Err(HeadError::UnsupportedVersion)));
        for bad in [&b"GET / FOO/1.1\r\n\r\n"[..], b"GET / http/1.1\r\n\r\n", b"GET /a b HTTP/1.1\r\n\r\n"] {
            assert!(matches!(parse_request(bad), Err(HeadError::Malformed(_))), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(request(b"GET / HTTP/1.2"), Ok(None));
    }

    #[test]
    fn a_full_buffer_is_a_long_line_until_the_first_line_has_ended() {
        assert!(matches!(too_large(b"GET /aaaaaaaa"), HeadError::LineTooLong));
        assert!(matches!(too_large(b"\r\nGET /aaaaaaaa"), HeadError::LineTooLong));
        assert!(matches!(too_large(b"GET / HTTP/1.1\r\nX-Long: aaaa"), HeadError::TooLarge));
        assert!(matches!(too_large(b"GET / HTTP/1.1\n"), HeadError::TooLarge));
    }

    #[test]
    fn too_many_headers_is_too_large() {
        let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            bytes.extend(format!("h{i}: v\r\n").as_bytes());
        }
        bytes.extend(b"\r\n");
        assert!(matches!(parse_request(&bytes), Err(HeadError::TooLarge)));
    }

    #[test]
    fn a_head_read_into_a_used_one_holds_only_the_new_head_and_keeps_its_storage() {
        let mut head = RequestHead::default();
        let heads: [&[u8]; 3] = [
            b"POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nX-Long: 0123456789\r\n\r\n",
            b"GET / HTTP/1.0\r\nX: y\r\n\r\n",
            b"GET /third HTTP/1.1\r\nHost: c\r\nAccept: */*\r\n\r\n",
        ];
        for bytes in heads {
            let len = super::parse_request(bytes, &mut head).unwrap();
            assert_eq!(len, Some(bytes.len()));
            assert_eq!(Some(&head), request(bytes).unwrap().as_ref(), "{:?}", String::from_utf8_lossy(bytes));
        }
        assert_eq!(head.headers.fields.len(), 3, "field storage is reused, not grown: {:?}", head.headers.fields);
        assert!(head.method.capacity() >= "POST".len());
    }

    #[test]
    fn removing_fields_keeps_the_others_in_order() {
        let mut headers = Headers::default();
        for (name, value) in [("Host", "a"), ("X", "1"), ("host", "b"), ("Y", "2")] {
            headers.push(name, value.as_bytes());
        }
        headers.remove("HOST");
        let names: Vec<&str> = headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["X", "Y"]);
        headers.push("Host", b"c");
        assert_eq!(headers.last().map(|h| h.value.as_slice()), Some(&b"c"[..]));
        assert_eq!(headers.len(), 3);
    }

    #[test]
    fn parses_a_response() {
        let mut head = ResponseHead::default();
        let len = parse_response(b"HTTP/1.1 204 No Content\r\nA: b\r\n\r\nrest", &mut head).unwrap().unwrap();
        assert_eq!((head.status, head.reason.as_str(), len), (204, "No Content", 33));
        assert!(parse_response(b"HTTP/1.1 200 OK\nA: b\n\n", &mut head).is_err());
    }

    /// Found by the `request_head` fuzz target: `004` was accepted and relayed as `4`, an
    /// invalid status line. RFC 9110 section 15 makes codes below 100 invalid.
    #[test]
    fn a_status_below_100_is_malformed() {
        let mut head = ResponseHead::default();
        for line in ["HTTP/1.1 004 X\r\n\r\n", "HTTP/1.0 099 X\r\n\r\n", "HTTP/1.1 000 X\r\n\r\n"] {
            assert!(matches!(parse_response(line.as_bytes(), &mut head), Err(HeadError::Malformed(_))), "{line:?}");
        }
        assert!(parse_response(b"HTTP/1.1 100 Continue\r\n\r\n", &mut head).is_ok());
        assert!(parse_response(b"HTTP/1.1 999 Odd\r\n\r\n", &mut head).is_ok());
    }
}
