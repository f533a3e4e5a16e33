//! From a DNS entry of `servers` to the backends it stands for today: one per A/AAAA address
//! for `dns`, one per SRV target address for `dnsSrv`, each a [`ServerConfig`] marked with
//! the entry it came from.
//!
//! SRV records carry more than addresses: the port, a priority and a weight. The lowest
//! priority present serves; targets of any higher priority are backups (RFC 2782: try the
//! lowest first). Weights follow [`scale_srv_weights`]. Called by the discovery thread;
//! asks the DNS through `lookup`, shares nothing.

use super::lookup::{query, Answer, LookupError, Service};
use crate::config::{DnsLookup, DnsServers, Protocol, ServerConfig};
use simple_dns::TYPE;
use std::net::{IpAddr, SocketAddr};

/// The backends an entry stands for, and how soon to ask again by the records' TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub servers: Vec<ServerConfig>,
    pub ttl: Option<u32>,
}

/// Looks up `entry` for a pool speaking `protocol`. An answer with no usable address is an
/// error, like a failed lookup: the caller keeps what it had.
pub fn find(entry: &DnsServers, protocol: Protocol, resolvers: &[SocketAddr]) -> Result<Found, LookupError> {
    let found = match &entry.lookup {
        DnsLookup::Address { host, port } => {
            let answer = addresses(resolvers, host)?;
            let servers = answer
                .addresses
                .iter()
                .map(|&ip| server(entry, protocol, host, SocketAddr::new(ip, *port), entry.weight.unwrap_or(1), false))
                .collect();
            Found { servers, ttl: answer.ttl }
        }
        DnsLookup::Srv { name } => services(entry, protocol, resolvers, name)?,
    };
    if found.servers.is_empty() {
        let name = entry.name.clone();
        return Err(LookupError::Failed { name, why: "the answer has no address".to_string() });
    }
    Ok(found)
}

/// The A and AAAA records of `host`. The AAAA question is asked only when the A question
/// found the name, and its failure is forgiven when A records were found.
fn addresses(resolvers: &[SocketAddr], host: &str) -> Result<Answer, LookupError> {
    let mut answer = query(resolvers, host, TYPE::A)?;
    match query(resolvers, host, TYPE::AAAA) {
        Ok(v6) => {
            answer.addresses.extend(v6.addresses);
            answer.ttl = min_ttl(answer.ttl, v6.ttl);
        }
        Err(e) if answer.addresses.is_empty() => return Err(e),
        Err(e) => log::debug!("discovery: {e}; using the A records of {host}"),
    }
    Ok(answer)
}

/// The SRV records of `name`, each target's addresses taken from the additional section
/// when there, else looked up.
fn services(
    entry: &DnsServers,
    protocol: Protocol,
    resolvers: &[SocketAddr],
    name: &str,
) -> Result<Found, LookupError> {
    let answer = query(resolvers, name, TYPE::SRV)?;
    // A target of "." says the service is not offered there.
    let services: Vec<&Service> = answer.services.iter().filter(|s| !s.target.is_empty()).collect();
    let weights = scale_srv_weights(&services.iter().map(|s| s.weight).collect::<Vec<_>>());
    let serving = services.iter().map(|s| s.priority).min().unwrap_or(0);
    let mut ttl = answer.ttl;
    let mut servers: Vec<ServerConfig> = Vec::new();
    for (service, weight) in services.iter().zip(weights) {
        let glue: Vec<IpAddr> =
            answer.glue.iter().filter(|(owner, _)| *owner == service.target).map(|(_, ip)| *ip).collect();
        let ips = if glue.is_empty() {
            match addresses(resolvers, &service.target) {
                Ok(found) => {
                    ttl = min_ttl(ttl, found.ttl);
                    found.addresses
                }
                Err(e) => {
                    log::warn!("discovery: {}: SRV target {}: {e}; skipping it", entry.name, service.target);
                    continue;
                }
            }
        } else {
            glue
        };
        let weight = entry.weight.unwrap_or(weight);
        let backup = service.priority > serving;
        for ip in ips {
            let found = server(entry, protocol, &service.target, SocketAddr::new(ip, service.port), weight, backup);
            if !servers.iter().any(|s| s.url == found.url) {
                servers.push(found);
            }
        }
    }
    Ok(Found { servers, ttl })
}

/// SRV weights (0 to 65535) as sluice weights (0 to 1000), keeping their proportions: when
/// every weight is at most 1000 they are used as they are; otherwise all are scaled so that
/// the largest becomes 1000, rounding to the nearest. A weight of 0 (and one that would round
/// to 0) becomes 1: RFC 2782 gives such targets a small share, never none.
pub fn scale_srv_weights(weights: &[u16]) -> Vec<u32> {
    let largest = u32::from(weights.iter().copied().max().unwrap_or(0));
    weights
        .iter()
        .map(|&w| {
            let w = u32::from(w);
            let scaled = if largest <= 1000 { w } else { (w * 1000 + largest / 2) / largest };
            scaled.max(1)
        })
        .collect()
}

/// The backend at `addr`, named `host` (sent as `Host` by health checks and as the TLS server
/// name), with the settings of `entry`.
fn server(
    entry: &DnsServers,
    protocol: Protocol,
    host: &str,
    addr: SocketAddr,
    weight: u32,
    backup: bool,
) -> ServerConfig {
    let (scheme, tls) = match protocol {
        Protocol::Tcp => ("tcp", false),
        Protocol::Http if entry.https => ("https", true),
        Protocol::Http => ("http", false),
    };
    ServerConfig {
        url: format!("{scheme}://{addr}"),
        protocol,
        tls,
        authority: format!("{host}:{}", addr.port()),
        host: host.to_string(),
        port: addr.port(),
        addrs: vec![addr],
        weight,
        max_connections: entry.max_connections,
        backup: entry.backup || backup,
        discovered_from: Some(entry.name.clone()),
    }
}

fn min_ttl(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_weights_keep_their_proportions_within_sluices_range() {
        //  SRV weights          sluice weights
        assert_eq!(scale_srv_weights(&[1, 2, 10]), [1, 2, 10]);
        assert_eq!(scale_srv_weights(&[0, 5]), [1, 5]);
        assert_eq!(scale_srv_weights(&[65535, 32768, 1]), [1000, 500, 1]);
        assert_eq!(scale_srv_weights(&[2000, 1000, 0]), [1000, 500, 1]);
        assert_eq!(scale_srv_weights(&[]), Vec::<u32>::new());
    }

    #[test]
    fn discovered_servers_take_the_pools_scheme_and_name_their_entry() {
        let entry = DnsServers {
            name: "web.test:8443".into(),
            lookup: DnsLookup::Address { host: "web.test".into(), port: 8443 },
            weight: None,
            max_connections: Some(3),
            backup: false,
            https: true,
            key_path: "servers[0]".into(),
        };
        let s = server(&entry, Protocol::Http, "web.test", "[::1]:8443".parse().unwrap(), 2, true);
        assert_eq!((s.url.as_str(), s.authority.as_str(), s.tls), ("https://[::1]:8443", "web.test:8443", true));
        assert_eq!((s.weight, s.backup, s.max_connections), (2, true, Some(3)));
        assert_eq!(s.discovered_from.as_deref(), Some("web.test:8443"));
        let s = server(&entry, Protocol::Tcp, "web.test", "10.0.0.1:5432".parse().unwrap(), 1, false);
        assert_eq!((s.url.as_str(), s.tls), ("tcp://10.0.0.1:5432", false));
    }
}
