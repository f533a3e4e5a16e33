//! A small DNS stub client: one question (A, AAAA or SRV) to the configured resolvers over a
//! std `UdpSocket`, again over TCP when the answer comes back truncated. The messages are
//! written and read by the `simple-dns` crate; this file only moves them and judges the
//! answer.
//!
//! Every wait is bounded: [`QUERY_TIMEOUT`] a try, [`TRIES`] tries, each to the next
//! resolver in turn. Called only by the discovery thread (and its first round at start),
//! never by a worker. Shares nothing.

use simple_dns::rdata::{RData, OPT};
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, RCODE, TYPE};
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest wait for one answer from one resolver.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Tries per question, each to the next resolver (wrapping round).
pub const TRIES: usize = 2;

/// The UDP payload size announced with EDNS(0): large enough for dozens of SRV records, small
/// enough not to be fragmented on the way (the DNS Flag Day 2020 value).
const EDNS_UDP_BYTES: u16 = 1232;

/// What one question got back, the records of the name asked (following CNAMEs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// A and AAAA records.
    pub addresses: Vec<IpAddr>,
    /// SRV records.
    pub services: Vec<Service>,
    /// Addresses of other names, from the additional section (an SRV answer's targets).
    pub glue: Vec<(String, IpAddr)>,
    /// The shortest TTL of the records used, in seconds; `None` when there are none.
    pub ttl: Option<u32>,
}

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host, in lower case without the final dot.
    pub target: String,
}

/// Why a question got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// NXDOMAIN: the name does not exist.
    NoSuchName(String),
    /// No resolver answered in time, or every one answered with a failure.
    Failed { name: String, why: String },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NoSuchName(name) => write!(f, "{name}: no such name (NXDOMAIN)"),
            LookupError::Failed { name, why } => write!(f, "{name}: {why}"),
        }
    }
}

/// Asks `resolvers` for the `kind` records of `name`.
pub fn query(resolvers: &[SocketAddr], name: &str, kind: TYPE) -> Result<Answer, LookupError> {
    let failed = |why: String| LookupError::Failed { name: name.to_string(), why };
    if resolvers.is_empty() {
        return Err(failed("no DNS server to ask (none in \"resolvers\" or /etc/resolv.conf)".into()));
    }
    let id = next_id();
    let message = build_query(id, name, kind).map_err(|e| failed(format!("cannot write the question: {e}")))?;
    let mut problems = Vec::new();
    for attempt in 0..TRIES.max(resolvers.len()) {
        let server = resolvers[attempt % resolvers.len()];
        let reply = match exchange(server, &message, id) {
            Ok(reply) => reply,
            Err(e) => {
                problems.push(format!("{server}: {e}"));
                continue;
            }
        };
        match read_answer(&reply, name, kind) {
            Ok(answer) => return Ok(answer),
            Err(Verdict::NoSuchName) => return Err(LookupError::NoSuchName(name.to_string())),
            Err(Verdict::Failed(why)) => problems.push(format!("{server}: {why}")),
        }
    }
    Err(failed(problems.join("; ")))
}

/// A query id that differs from one question to the next and between processes.
fn next_id() -> u16 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (RandomState::new().hash_one((n, Instant::now())) & 0xffff) as u16
}

fn build_query(id: u16, name: &str, kind: TYPE) -> Result<Vec<u8>, simple_dns::SimpleDnsError> {
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    packet.questions.push(Question::new(Name::new(name)?, kind.into(), CLASS::IN.into(), false));
    *packet.opt_mut() = Some(OPT { opt_codes: Vec::new(), udp_packet_size: EDNS_UDP_BYTES, version: 0 });
    packet.build_bytes_vec()
}

/// Sends `message` to `server` over UDP and returns the reply with id `id`; over TCP when
/// that reply says it was truncated.
fn exchange(server: SocketAddr, message: &[u8], id: u16) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(server)?;
    socket.send(message)?;
    let deadline = Instant::now() + QUERY_TIMEOUT;
    let mut buffer = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {QUERY_TIMEOUT:?}")));
        }
        socket.set_read_timeout(Some(left))?;
        let n = match socket.recv(&mut buffer) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e),
        };
        let reply = &buffer[..n];
        // A stray datagram (an old answer, a spoofing attempt) is not ours: keep waiting.
        if n < 12 || u16::from_be_bytes([reply[0], reply[1]]) != id || reply[2] & 0x80 == 0 {
            continue;
        }
        if reply[2] & 0x02 != 0 {
            return exchange_tcp(server, message);
        }
        return Ok(reply.to_vec());
    }
}

/// The same question over TCP, for an answer too large for UDP.
fn exchange_tcp(server: SocketAddr, message: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&server, QUERY_TIMEOUT)?;
    stream.set_read_timeout(Some(QUERY_TIMEOUT))?;
    stream.set_write_timeout(Some(QUERY_TIMEOUT))?;
    let length = u16::try_from(message.len()).map_err(|_| io::Error::other("question too long"))?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    stream.write_all(&framed)?;
    let mut length = [0u8; 2];
    stream.read_exact(&mut length)?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}

/// What a reply says, when it is not an answer.
enum Verdict {
    NoSuchName,
    /// Worth asking the next resolver.
    Failed(String),
}

/// Reads the records of `name` (and of the names its CNAMEs lead to) out of `reply`.
fn read_answer(reply: &[u8], name: &str, kind: TYPE) -> Result<Answer, Verdict> {
    let packet = Packet::parse(reply).map_err(|e| Verdict::Failed(format!("unreadable answer: {e}")))?;
    match packet.rcode() {
        RCODE::NoError => {}
        RCODE::NameError => return Err(Verdict::NoSuchName),
        other => return Err(Verdict::Failed(format!("answered {other:?}"))),
    }
    let asked = packet.questions.first().map(|q| plain_name(&q.qname));
    if asked.as_deref() != Some(name) {
        return Err(Verdict::Failed("the answer is for another question".into()));
    }
    let mut names = vec![name.to_string()];
    let mut answer = Answer::default();
    let mut ttl: Option<u32> = None;
    for record in &packet.answers {
        let owner = plain_name(&record.name);
        if !names.contains(&owner) {
            continue;
        }
        match &record.rdata {
            RData::CNAME(target) => names.push(plain_name(&target.0)),
            RData::A(a) if kind == TYPE::A => answer.addresses.push(IpAddr::V4(Ipv4Addr::from(a.address))),
            RData::AAAA(a) if kind == TYPE::AAAA => answer.addresses.push(IpAddr::V6(Ipv6Addr::from(a.address))),
            RData::SRV(srv) if kind == TYPE::SRV => answer.services.push(Service {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: plain_name(&srv.target),
            }),
            _ => continue,
        }
        ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
    }
    for record in &packet.additional_records {
        let address = match &record.rdata {
            RData::A(a) => IpAddr::V4(Ipv4Addr::from(a.address)),
            RData::AAAA(a) => IpAddr::V6(Ipv6Addr::from(a.address)),
            _ => continue,
        };
        answer.glue.push((plain_name(&record.name), address));
    }
    answer.ttl = ttl;
    Ok(answer)
}

/// A name in lower case without its final dot, as names are compared here.
pub fn plain_name(name: &Name) -> String {
    let text = name.to_string().to_ascii_lowercase();
    text.strip_suffix('.').map(str::to_string).unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, CNAME, SRV};
    use simple_dns::ResourceRecord;

    fn reply(build: impl FnOnce(&mut Packet<'static>)) -> Vec<u8> {
        let mut packet = Packet::new_reply(7);
        build(&mut packet);
        packet.build_bytes_vec().unwrap()
    }

    fn record(owner: &'static str, ttl: u32, rdata: RData<'static>) -> ResourceRecord<'static> {
        ResourceRecord::new(Name::new_unchecked(owner), CLASS::IN, ttl, rdata)
    }

    fn question(name: &'static str, kind: TYPE) -> Question<'static> {
        Question::new(Name::new_unchecked(name), kind.into(), CLASS::IN.into(), false)
    }

    #[test]
    fn addresses_follow_cnames_and_the_shortest_ttl_wins() {
        let bytes = reply(|p| {
            p.questions.push(question("web.test", TYPE::A));
            p.answers.push(record("web.test", 60, RData::CNAME(CNAME(Name::new_unchecked("pods.test")))));
            p.answers.push(record("pods.test", 5, RData::A(A { address: 0x0a00_0001 })));
            p.answers.push(record("other.test", 1, RData::A(A { address: 0x0a00_0009 })));
        });
        let answer = read_answer(&bytes, "web.test", TYPE::A).ok().unwrap();
        assert_eq!(answer.addresses, [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]);
        assert_eq!(answer.ttl, Some(5));
    }

    #[test]
    fn srv_records_come_with_the_glue_of_the_additional_section() {
        let bytes = reply(|p| {
            p.questions.push(question("_http._tcp.web.test", TYPE::SRV));
            let srv = SRV { priority: 1, weight: 20, port: 8080, target: Name::new_unchecked("Node1.Test.") };
            p.answers.push(record("_http._tcp.web.test", 30, RData::SRV(srv)));
            p.additional_records.push(record("node1.test", 30, RData::A(A { address: 0x7f00_0002 })));
        });
        let answer = read_answer(&bytes, "_http._tcp.web.test", TYPE::SRV).ok().unwrap();
        assert_eq!(answer.services, [Service { priority: 1, weight: 20, port: 8080, target: "node1.test".into() }]);
        assert_eq!(answer.glue, [("node1.test".to_string(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))]);
    }

    #[test]
    fn nxdomain_and_server_failures_are_told_apart() {
        let nx = reply(|p| {
            p.questions.push(question("gone.test", TYPE::A));
            *p.rcode_mut() = RCODE::NameError;
        });
        assert!(matches!(read_answer(&nx, "gone.test", TYPE::A), Err(Verdict::NoSuchName)));
        let servfail = reply(|p| {
            p.questions.push(question("web.test", TYPE::A));
            *p.rcode_mut() = RCODE::ServerFailure;
        });
        assert!(matches!(read_answer(&servfail, "web.test", TYPE::A), Err(Verdict::Failed(_))));
        let other = reply(|p| p.questions.push(question("elsewhere.test", TYPE::A)));
        assert!(matches!(read_answer(&other, "web.test", TYPE::A), Err(Verdict::Failed(_))));
        assert!(matches!(read_answer(b"\x00\x07", "web.test", TYPE::A), Err(Verdict::Failed(_))));
    }

    #[test]
    fn a_resolver_that_is_not_there_fails_at_once_rather_than_hanging() {
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let result = query(&[closed], "web.test", TYPE::A);
        assert!(matches!(result, Err(LookupError::Failed { .. })), "{result:?}");
    }
}
