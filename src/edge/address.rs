//! Address rules: which client addresses may reach a route (`allow` and `deny` lists of
//! CIDR blocks, IPv4 and IPv6).
//!
//! Read by `config::edge_rules`, asked by [`super::Edge::check`] once per request on a route
//! that has them. Pure: no I/O, no shared state.
//!
//! A client is admitted when it is in no `deny` block and, if `allow` is given, in one of its
//! blocks; so `deny` wins over `allow`, whatever the order. IPv4 clients that reach a dual-stack
//! listener as IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) match IPv4 blocks.

use std::fmt;
use std::net::IpAddr;

/// One block of addresses: a network address and the length of its prefix in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_bits: u8,
}

impl Cidr {
    /// Reads `"10.0.0.0/8"`, `"2001:db8::/32"`, or a single address such as `"192.0.2.7"`.
    /// Bits set past the prefix are refused rather than guessed at.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let help = "is not an address or CIDR block such as \"10.0.0.0/8\", \"192.0.2.7\" or \"2001:db8::/32\"";
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| format!("{text:?} {help}"))?;
        let max_bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix_bits = match prefix {
            None => max_bits,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .ok()
                .filter(|bits| *bits <= max_bits)
                .ok_or_else(|| format!("{text:?}: the prefix length must be from 0 to {max_bits}"))?,
            Some(_) => return Err(format!("{text:?} {help}")),
        };
        let cidr = Cidr { network, prefix_bits };
        let masked = cidr.masked(network);
        if masked != network {
            return Err(format!(
                "{text:?} has bits set past the /{prefix_bits} prefix (the block is {}/{prefix_bits})",
                masked
            ));
        }
        Ok(cidr)
    }

    /// Whether `ip` lies in this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == self.network
    }

    /// `ip` with the bits past this block's prefix cleared; `ip` is of the block's family.
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix_bits)).unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix_bits)).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_bits)
    }
}

/// A route's `allow` and `deny` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressRules {
    /// Empty: every address not denied is allowed.
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

impl AddressRules {
    /// Whether a client at `ip` may reach the route.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let denied = self.deny.iter().any(|c| c.contains(ip));
        let allowed = self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip));
        allowed && !denied
    }

    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn rules(allow: &[&str], deny: &[&str]) -> AddressRules {
        let read = |list: &[&str]| list.iter().map(|t| Cidr::parse(t).unwrap()).collect();
        AddressRules { allow: read(allow), deny: read(deny) }
    }

    #[test]
    fn blocks_contain_the_addresses_under_their_prefix() {
        // (block, address, contained)
        let table = [
            ("10.0.0.0/8", "10.255.3.4", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("192.0.2.7/32", "192.0.2.7", true),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("127.0.3.0/24", "127.0.3.5", true),
            ("127.0.3.0/24", "127.0.4.5", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("2001:db8::/32", "2001:db8:1::5", true),
            ("2001:db8::/32", "2001:db9::5", false),
            ("::1", "::1", true),
            ("::/0", "fe80::1", true),
            ("::/0", "127.0.0.1", false),
            ("2001:db8::/128", "2001:db8::", true),
            ("2001:db8::/127", "2001:db8::1", true),
        ];
        for (block, address, contained) in table {
            let cidr = Cidr::parse(block).unwrap();
            assert_eq!(cidr.contains(ip(address)), contained, "{block} contains {address}");
        }
    }

    #[test]
    fn malformed_blocks_are_refused_with_the_reason() {
        let table = [
            ("10.0.0.0/33", "the prefix length must be from 0 to 32"),
            ("2001:db8::/129", "the prefix length must be from 0 to 128"),
            ("10.0.0.0/", "is not an address or CIDR block"),
            ("10.0.0.0/-1", "is not an address or CIDR block"),
            ("10.0.0.0/8/8", "is not an address or CIDR block"),
            ("10.0.0/8", "is not an address or CIDR block"),
            ("10.0.0.256", "is not an address or CIDR block"),
            ("office", "is not an address or CIDR block"),
            ("", "is not an address or CIDR block"),
            (" 10.0.0.0/8", "is not an address or CIDR block"),
            ("10.1.0.0/8", "has bits set past the /8 prefix (the block is 10.0.0.0/8)"),
            ("2001:db8::1/32", "has bits set past the /32 prefix (the block is 2001:db8::/32)"),
        ];
        for (text, problem) in table {
            let err = Cidr::parse(text).expect_err(text);
            assert!(err.contains(problem), "{text:?}: {err}");
        }
    }

    #[test]
    fn deny_wins_over_allow_and_an_empty_allow_admits_everyone_else() {
        let office = rules(&["10.0.0.0/8", "2001:db8::/32"], &["10.0.0.5"]);
        let nobody_denied = rules(&[], &["192.0.2.0/24"]);
        // (rules, address, admitted)
        let table = [
            (&office, "10.1.1.1", true),
            (&office, "10.0.0.5", false),
            (&office, "::ffff:10.0.0.5", false),
            (&office, "192.0.2.1", false),
            (&office, "2001:db8::7", true),
            (&office, "::1", false),
            (&nobody_denied, "192.0.2.200", false),
            (&nobody_denied, "198.51.100.1", true),
            (&nobody_denied, "::1", true),
        ];
        for (rules, address, admitted) in table {
            assert_eq!(rules.admits(ip(address)), admitted, "{address} with {rules:?}");
        }
    }

    #[test]
    fn blocks_print_as_written() {
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("::1").unwrap().to_string(), "::1/128");
    }
}
