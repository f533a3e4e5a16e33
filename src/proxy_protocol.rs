//! The PROXY protocol, versions 1 (a text line) and 2 (binary), as HAProxy specifies it: the
//! header a front proxy puts before a connection's first byte to say whom it carries.
//!
//! Pure functions over bytes: [`parse`] reads a header from the bytes received so far (saying
//! when it needs more, and refusing a malformed one as early as it can tell), [`encode`]
//! writes one. `connection` reads headers on listeners with `acceptProxy`; `backend`,
//! `tcp` and `health` write them to pools with `sendProxy`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A version 1 header is at most this long, its CRLF included (the specification's 108-byte
/// buffer holds it and a trailing zero).
pub const V1_MAX_BYTES: usize = 107;
/// The longest address block (addresses and TLVs) a version 2 header may announce here.
/// The field allows 65,535; real senders put a few hundred bytes of TLVs at most.
pub const V2_MAX_BLOCK_BYTES: usize = 4096;
/// The longest header [`parse`] can accept, of either version.
pub const MAX_HEADER_BYTES: usize = V2_FIXED_BYTES + V2_MAX_BLOCK_BYTES;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The signature, the version and command, the family and transport, the block's length.
const V2_FIXED_BYTES: usize = 16;

/// Which version of the protocol to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

impl ProxyVersion {
    /// The name the configuration uses.
    pub fn name(self) -> &'static str {
        match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        }
    }

    pub fn from_name(name: &str) -> Option<ProxyVersion> {
        [ProxyVersion::V1, ProxyVersion::V2].into_iter().find(|v| v.name() == name)
    }
}

/// The two ends of the connection the front proxy carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addresses {
    /// The client, as the front proxy saw it.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

/// A header read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: ProxyVersion,
    /// `None` for v1 `UNKNOWN`, v2 `LOCAL` and families without IP addresses (a Unix socket,
    /// unspecified): the connection's own peer stays the client.
    pub addresses: Option<Addresses>,
    /// How many bytes the header took; the connection's own bytes follow.
    pub length: usize,
}

/// Why bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The connection does not begin with `PROXY ` or the version 2 signature.
    Missing,
    /// A version 1 line reached 107 bytes without its CRLF.
    V1TooLong,
    /// A version 1 line that breaks the grammar; says where.
    V1Malformed(&'static str),
    /// A version 2 header whose version is not 2, or whose command, family or transport is
    /// not one the specification defines.
    V2Unsupported(&'static str),
    /// A version 2 header announcing an address block over [`V2_MAX_BLOCK_BYTES`].
    V2TooLong(usize),
    /// A version 2 address block too short for its family.
    V2Truncated,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Missing => write!(f, "no PROXY protocol header (the listener has acceptProxy)"),
            HeaderError::V1TooLong => write!(f, "PROXY v1 line longer than {V1_MAX_BYTES} bytes"),
            HeaderError::V1Malformed(why) => write!(f, "malformed PROXY v1 line: {why}"),
            HeaderError::V2Unsupported(why) => write!(f, "unsupported PROXY v2 header: {why}"),
            HeaderError::V2TooLong(n) => {
                write!(f, "PROXY v2 header announces {n} bytes of addresses (at most {V2_MAX_BLOCK_BYTES})")
            }
            HeaderError::V2Truncated => write!(f, "PROXY v2 address block too short for its family"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Reads a header from the start of `bytes`: `Ok(None)` when the bytes so far are a valid
/// beginning and more are needed. A header found whole has its `length`; bytes after it are
/// not looked at.
pub fn parse(bytes: &[u8]) -> Result<Option<Header>, HeaderError> {
    match bytes.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(bytes),
        Some(b'\r') => parse_v2(bytes),
        Some(_) => Err(HeaderError::Missing),
    }
}

fn starts_like(bytes: &[u8], expected: &[u8]) -> bool {
    let n = bytes.len().min(expected.len());
    bytes[..n] == expected[..n]
}

fn parse_v1(bytes: &[u8]) -> Result<Option<Header>, HeaderError> {
    if !starts_like(bytes, V1_PREFIX) {
        return Err(HeaderError::Missing);
    }
    let window = &bytes[..bytes.len().min(V1_MAX_BYTES)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if bytes.len() >= V1_MAX_BYTES { Err(HeaderError::V1TooLong) } else { Ok(None) };
    };
    let line = window[..lf].strip_suffix(b"\r").ok_or(HeaderError::V1Malformed("line ends without CR"))?;
    let line = std::str::from_utf8(&line[V1_PREFIX.len()..]).map_err(|_| HeaderError::V1Malformed("not ASCII"))?;
    let addresses = v1_addresses(line)?;
    Ok(Some(Header { version: ProxyVersion::V1, addresses, length: lf + 1 }))
}

/// The fields after `PROXY `: `UNKNOWN` with anything after it, or a protocol, two addresses
/// and two ports separated by single spaces.
fn v1_addresses(line: &str) -> Result<Option<Addresses>, HeaderError> {
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(None);
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let [protocol, source, destination, source_port, destination_port] = fields[..] else {
        return Err(HeaderError::V1Malformed("expected TCP4 or TCP6, two addresses and two ports"));
    };
    let (source, destination) = match protocol {
        "TCP4" => (v1_ipv4(source)?, v1_ipv4(destination)?),
        "TCP6" => (v1_ipv6(source)?, v1_ipv6(destination)?),
        _ => return Err(HeaderError::V1Malformed("the protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Some(Addresses {
        source: SocketAddr::new(source, v1_port(source_port)?),
        destination: SocketAddr::new(destination, v1_port(destination_port)?),
    }))
}

fn v1_ipv4(text: &str) -> Result<IpAddr, HeaderError> {
    text.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| HeaderError::V1Malformed("bad IPv4 address"))
}

fn v1_ipv6(text: &str) -> Result<IpAddr, HeaderError> {
    text.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| HeaderError::V1Malformed("bad IPv6 address"))
}

/// A port in decimal, 0 to 65535, without a sign or leading zeros.
fn v1_port(text: &str) -> Result<u16, HeaderError> {
    let bad = HeaderError::V1Malformed("bad port");
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(bad);
    }
    text.parse().map_err(|_| bad)
}

fn parse_v2(bytes: &[u8]) -> Result<Option<Header>, HeaderError> {
    if !starts_like(bytes, V2_SIGNATURE) {
        return Err(HeaderError::Missing);
    }
    if bytes.len() < V2_FIXED_BYTES {
        if let Some(&version_command) = bytes.get(12) {
            v2_command(version_command)?;
        }
        return Ok(None);
    }
    let local = v2_command(bytes[12])?;
    let family_transport = bytes[13];
    let block = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if block > V2_MAX_BLOCK_BYTES {
        return Err(HeaderError::V2TooLong(block));
    }
    let length = V2_FIXED_BYTES + block;
    let Some(block) = bytes.get(V2_FIXED_BYTES..length) else { return Ok(None) };
    let addresses = if local { None } else { v2_addresses(family_transport, block)? };
    Ok(Some(Header { version: ProxyVersion::V2, addresses, length }))
}

/// The version must be 2; returns whether the command is `LOCAL` (else it is `PROXY`).
fn v2_command(version_command: u8) -> Result<bool, HeaderError> {
    match version_command {
        0x20 => Ok(true),
        0x21 => Ok(false),
        v if v >> 4 != 2 => Err(HeaderError::V2Unsupported("the version is not 2")),
        _ => Err(HeaderError::V2Unsupported("the command is neither LOCAL nor PROXY")),
    }
}

/// The addresses of a `PROXY` command; TLVs after them are skipped.
fn v2_addresses(family_transport: u8, block: &[u8]) -> Result<Option<Addresses>, HeaderError> {
    let (family, transport) = (family_transport >> 4, family_transport & 0x0f);
    match transport {
        0 | 1 => {}
        2 => return Err(HeaderError::V2Unsupported("a datagram (UDP) connection on a TCP listener")),
        _ => return Err(HeaderError::V2Unsupported("unknown transport")),
    }
    let (source, destination, ports) = match family {
        // Unspecified or a Unix socket: no IP address to take, the peer stays the client.
        0 | 3 => return Ok(None),
        1 => {
            let b = block.get(..12).ok_or(HeaderError::V2Truncated)?;
            let ip = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&b[at..at + 4]).unwrap_or_default());
            (ip(0), ip(4), &b[8..12])
        }
        2 => {
            let b = block.get(..36).ok_or(HeaderError::V2Truncated)?;
            let ip = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&b[at..at + 16]).unwrap_or_default());
            (ip(0), ip(16), &b[32..36])
        }
        _ => return Err(HeaderError::V2Unsupported("unknown address family")),
    };
    Ok(Some(Addresses {
        source: SocketAddr::new(source, u16::from_be_bytes([ports[0], ports[1]])),
        destination: SocketAddr::new(destination, u16::from_be_bytes([ports[2], ports[3]])),
    }))
}

/// Appends a header in `version` to `out`: for `addresses`, or, with `None`, one that says
/// the connection carries no client (v1 `UNKNOWN`, v2 `LOCAL`), as health probes send.
/// Addresses of mixed families are both written as IPv6 (IPv4-mapped).
pub fn encode(version: ProxyVersion, addresses: Option<Addresses>, out: &mut Vec<u8>) {
    let addresses = addresses.map(same_family);
    match (version, addresses) {
        (ProxyVersion::V1, None) => out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
        (ProxyVersion::V1, Some(a)) => {
            let protocol = if a.source.is_ipv4() { "TCP4" } else { "TCP6" };
            let (s, d) = (a.source, a.destination);
            let line = format!("PROXY {protocol} {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port());
            out.extend_from_slice(line.as_bytes());
        }
        (ProxyVersion::V2, None) => {
            out.extend_from_slice(V2_SIGNATURE);
            out.extend_from_slice(&[0x20, 0x00, 0, 0]);
        }
        (ProxyVersion::V2, Some(a)) => {
            out.extend_from_slice(V2_SIGNATURE);
            match (a.source.ip(), a.destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.extend_from_slice(&[0x21, 0x11, 0, 12]);
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.extend_from_slice(&[0x21, 0x21, 0, 36]);
                    out.extend_from_slice(&as_ipv6(s).octets());
                    out.extend_from_slice(&as_ipv6(d).octets());
                }
            }
            out.extend_from_slice(&a.source.port().to_be_bytes());
            out.extend_from_slice(&a.destination.port().to_be_bytes());
        }
    }
}

fn as_ipv6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Both addresses in one family: IPv6 when either is.
fn same_family(a: Addresses) -> Addresses {
    if a.source.is_ipv4() == a.destination.is_ipv4() {
        return a;
    }
    let v6 = |addr: SocketAddr| SocketAddr::new(IpAddr::V6(as_ipv6(addr.ip())), addr.port());
    Addresses { source: v6(a.source), destination: v6(a.destination) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addrs(source: &str, destination: &str) -> Option<Addresses> {
        Some(Addresses { source: source.parse().unwrap(), destination: destination.parse().unwrap() })
    }

    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend_from_slice(&[command, family]);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    #[test]
    fn reads_valid_v1_lines() {
        let table: &[(&[u8], Option<Addresses>)] = &[
            (b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n", addrs("192.0.2.7:56324", "198.51.100.1:443")),
            (b"PROXY TCP6 2001:db8::7 ::1 65535 0\r\n", addrs("[2001:db8::7]:65535", "[::1]:0")),
            (b"PROXY UNKNOWN\r\n", None),
            (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", None),
        ];
        for (bytes, expected) in table {
            let mut with_data = bytes.to_vec();
            with_data.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let header = parse(&with_data).unwrap().unwrap();
            assert_eq!(header.addresses, *expected, "{}", String::from_utf8_lossy(bytes));
            assert_eq!(header.length, bytes.len());
            assert_eq!(header.version, ProxyVersion::V1);
        }
    }

    #[test]
    fn refuses_malformed_v1_lines() {
        let table: &[(&[u8], HeaderError)] = &[
            (b"GET / HTTP/1.1\r\n", HeaderError::Missing),
            (b"PROXX TCP4", HeaderError::Missing),
            (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", HeaderError::Missing),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", HeaderError::V1Malformed("line ends without CR")),
            (
                b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
                HeaderError::V1Malformed("the protocol is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                HeaderError::V1Malformed("expected TCP4 or TCP6, two addresses and two ports"),
            ),
            (
                b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
                HeaderError::V1Malformed("expected TCP4 or TCP6, two addresses and two ports"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
                HeaderError::V1Malformed("expected TCP4 or TCP6, two addresses and two ports"),
            ),
            (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", HeaderError::V1Malformed("bad IPv4 address")),
            (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", HeaderError::V1Malformed("bad IPv4 address")),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", HeaderError::V1Malformed("bad IPv6 address")),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", HeaderError::V1Malformed("bad port")),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", HeaderError::V1Malformed("bad port")),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", HeaderError::V1Malformed("bad port")),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", HeaderError::V1Malformed("bad port")),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
                HeaderError::V1Malformed("expected TCP4 or TCP6, two addresses and two ports"),
            ),
            (b"PROXY \xff\r\n", HeaderError::V1Malformed("not ASCII")),
            (b"PROXY \r\n", HeaderError::V1Malformed("expected TCP4 or TCP6, two addresses and two ports")),
            (b"PROXY TCP4 a b c d\r\n", HeaderError::V1Malformed("bad IPv4 address")),
        ];
        for (bytes, expected) in table {
            assert_eq!(parse(bytes), Err(*expected), "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn a_v1_line_of_107_bytes_passes_and_one_without_its_end_by_then_fails() {
        let longest = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX_BYTES - 16));
        assert_eq!(longest.len(), V1_MAX_BYTES);
        assert_eq!(parse(longest.as_bytes()).unwrap().unwrap().length, V1_MAX_BYTES);
        let too_long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX_BYTES - 15));
        assert_eq!(parse(too_long.as_bytes()), Err(HeaderError::V1TooLong));
        assert_eq!(parse(&too_long.as_bytes()[..V1_MAX_BYTES - 1]), Ok(None), "still short of the limit");
    }

    #[test]
    fn reads_valid_v2_headers_and_skips_their_tlvs() {
        let mut v4 = vec![192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb];
        v4.extend_from_slice(&[0x04, 0, 3, b'a', b'b', b'c']); // a NOOP TLV
        let mut v6 = [0u8; 36];
        v6[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        v6[31] = 1;
        v6[32..].copy_from_slice(&[0, 80, 1, 0]);
        let table: Vec<(Vec<u8>, Option<Addresses>)> = vec![
            (v2(0x21, 0x11, &v4), addrs("192.0.2.7:56324", "198.51.100.1:443")),
            (v2(0x21, 0x21, &v6), addrs("[2001:db8::7]:80", "[::1]:256")),
            (v2(0x20, 0x00, &[]), None),
            (v2(0x20, 0x11, &v4), None),
            (v2(0x21, 0x00, &[]), None),
            (v2(0x21, 0x31, &[0; 216]), None),
        ];
        for (bytes, expected) in table {
            let mut with_data = bytes.clone();
            with_data.extend_from_slice(b"\x16\x03\x01");
            let header = parse(&with_data).unwrap().unwrap();
            assert_eq!(header.addresses, expected, "{bytes:?}");
            assert_eq!(header.length, bytes.len());
            assert_eq!(header.version, ProxyVersion::V2);
        }
    }

    #[test]
    fn refuses_malformed_v2_headers() {
        let table: Vec<(Vec<u8>, HeaderError)> = vec![
            (b"\r\n\r\n\0\r\nQUIX\n".to_vec(), HeaderError::Missing),
            (b"\r\nGET".to_vec(), HeaderError::Missing),
            (v2(0x11, 0x11, &[0; 12]), HeaderError::V2Unsupported("the version is not 2")),
            (v2(0x22, 0x11, &[0; 12]), HeaderError::V2Unsupported("the command is neither LOCAL nor PROXY")),
            (v2(0x21, 0x12, &[0; 12]), HeaderError::V2Unsupported("a datagram (UDP) connection on a TCP listener")),
            (v2(0x21, 0x13, &[0; 12]), HeaderError::V2Unsupported("unknown transport")),
            (v2(0x21, 0x41, &[0; 12]), HeaderError::V2Unsupported("unknown address family")),
            (v2(0x21, 0x11, &[0; 11]), HeaderError::V2Truncated),
            (v2(0x21, 0x21, &[0; 12]), HeaderError::V2Truncated),
            (v2(0x21, 0x11, &vec![0; V2_MAX_BLOCK_BYTES + 1]), HeaderError::V2TooLong(V2_MAX_BLOCK_BYTES + 1)),
        ];
        for (bytes, expected) in table {
            assert_eq!(parse(&bytes), Err(expected), "{bytes:?}");
        }
        let mut announces_too_much = V2_SIGNATURE.to_vec();
        announces_too_much.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&announces_too_much), Err(HeaderError::V2TooLong(65535)), "known before the block arrives");
        assert!(parse(&announces_too_much[..13]).is_ok(), "the version byte alone is fine");
    }

    #[test]
    fn encodes_what_it_parses() {
        let table = [addrs("192.0.2.7:56324", "198.51.100.1:443"), addrs("[2001:db8::7]:80", "[::1]:8080"), None];
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            for addresses in table {
                let mut out = Vec::new();
                encode(version, addresses, &mut out);
                let header = parse(&out).unwrap().unwrap();
                assert_eq!((header.version, header.addresses, header.length), (version, addresses, out.len()));
            }
        }
    }

    #[test]
    fn encodes_mixed_families_as_ipv6() {
        let mixed = addrs("192.0.2.7:1000", "[::1]:80");
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let mut out = Vec::new();
            encode(version, mixed, &mut out);
            assert_eq!(parse(&out).unwrap().unwrap().addresses, addrs("[::ffff:192.0.2.7]:1000", "[::1]:80"));
        }
        let mut out = Vec::new();
        encode(ProxyVersion::V1, mixed, &mut out);
        assert_eq!(out, b"PROXY TCP6 ::ffff:192.0.2.7 ::1 1000 80\r\n");
    }

    #[test]
    fn every_prefix_of_a_header_asks_for_more() {
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let mut out = Vec::new();
            encode(version, addrs("[2001:db8::7]:80", "[::1]:8080"), &mut out);
            for end in 0..out.len() {
                assert_eq!(parse(&out[..end]), Ok(None), "{version:?} prefix of {end} bytes");
            }
        }
    }

    proptest! {
        /// Arbitrary bytes never panic, and a header found never claims more bytes than given.
        #[test]
        fn parse_never_panics_or_overreaches(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some(header)) = parse(&bytes) {
                prop_assert!(header.length <= bytes.len());
            }
        }

        /// Arbitrary bytes after the v1 prefix or v2 signature: still no panic, and the
        /// answer for a prefix is never an error where the longer input is complete.
        #[test]
        fn headers_with_random_tails_behave(tail in proptest::collection::vec(any::<u8>(), 0..120), v1 in any::<bool>()) {
            let mut bytes = if v1 { V1_PREFIX.to_vec() } else { V2_SIGNATURE.to_vec() };
            bytes.extend_from_slice(&tail);
            if let Ok(Some(header)) = parse(&bytes) {
                for end in 0..header.length {
                    prop_assert_eq!(parse(&bytes[..end]), Ok(None));
                }
            }
        }

        #[test]
        fn any_address_pair_round_trips(a in any::<[u8; 16]>(), b in any::<[u8; 4]>(), p in any::<u16>(), q in any::<u16>(), v1 in any::<bool>()) {
            let source = SocketAddr::new(IpAddr::from(a), p);
            let destination = SocketAddr::new(IpAddr::from(b), q);
            let version = if v1 { ProxyVersion::V1 } else { ProxyVersion::V2 };
            let mut out = Vec::new();
            encode(version, Some(Addresses { source, destination }), &mut out);
            let expected = same_family(Addresses { source, destination });
            prop_assert_eq!(parse(&out).unwrap().unwrap().addresses, Some(expected));
        }
    }
}
