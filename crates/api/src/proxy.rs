//! The client's address: the TCP peer, or, when the peer is a trusted proxy
//! (`--trusted-proxy CIDR`), the address that proxy reports in `X-Forwarded-For`.
//!
//! What must hold:
//! - From a peer outside every trusted CIDR the header is ignored: a client cannot choose the
//!   address that `allowedIP` policies, the per-address auth-failure limit and the audit
//!   `source` see.
//! - From a trusted peer the client is the right-most `X-Forwarded-For` address that is not
//!   itself a trusted proxy (each proxy appends the address it saw, so only entries to the right
//!   of the first untrusted one are trustworthy). When every entry is a trusted proxy, the
//!   left-most one is the client; when the header is absent, the peer is.
//! - Only `X-Forwarded-For` is read, never RFC 7239 `Forwarded`: a proxy that maintains one of
//!   the two passes the other through from the client untouched, so reading both would let a
//!   client forge its address.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;
use keyward_service::policies::{cidr_contains, parse_cidr};

/// Most `X-Forwarded-For` entries examined (right to left); a longer chain ends at the last
/// trusted entry examined.
const MAX_HOPS: usize = 32;

/// One trusted network: an address and a prefix length (`10.0.0.0/8`, `::1/128`; a bare
/// address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpAddr, u8);

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        cidr_contains((self.0, self.1), ip)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_cidr(s.trim())
            .map(|(net, bits)| Cidr(net, bits))
            .ok_or_else(|| format!("{s:?} is not an address or CIDR (e.g. 10.0.0.0/8, ::1/128)"))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

/// The proxies whose `X-Forwarded-For` is believed (none by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(cidrs: Vec<Cidr>) -> Self {
        Self(cidrs)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let mut client = peer;
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in entries.iter().rev().take(MAX_HOPS) {
            // An entry a trusted proxy wrote is an address; anything else ends the chain.
            let Some(ip) = parse_entry(entry) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Some(client)
    }
}

/// An `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:80`).
fn parse_entry(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let t = TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ]);
        let h = headers(&["203.0.113.7"]);
        // untrusted peer: the header is ignored
        assert_eq!(t.client_ip(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        // trusted peer: the forwarded address
        assert_eq!(t.client_ip(ip("10.1.2.3"), &h), ip("203.0.113.7"));
        // no header: the peer
        assert_eq!(
            t.client_ip(ip("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3")
        );
        // the right-most untrusted entry; what a client prepends is ignored
        let h = headers(&["6.6.6.6, 203.0.113.7, 10.0.0.9"]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("203.0.113.7"));
        // several header lines count as one list, in order
        let h = headers(&["6.6.6.6", "203.0.113.7:4711", "10.0.0.9"]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("203.0.113.7"));
        // every entry a trusted proxy: the left-most
        let h = headers(&["10.0.0.1, 10.0.0.2"]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("10.0.0.1"));
        // garbage ends the chain at the last trustworthy entry
        let h = headers(&["203.0.113.7, junk, 10.0.0.2"]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("10.0.0.2"));
        let h = headers(&["junk"]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("127.0.0.1"));
        // IPv6, bracketed with a port
        let h = headers(&["[2001:db8::1]:443"]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &h), ip("2001:db8::1"));
        // nobody trusted: the header never matters
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(ip("127.0.0.1"), &headers(&["203.0.113.7"])),
            ip("127.0.0.1")
        );
        assert_eq!(none.client_ip(None, &headers(&["203.0.113.7"])), None);
    }

    #[test]
    fn cidrs_parse() {
        assert!("10.0.0.0/8".parse::<Cidr>().is_ok());
        assert!("::1/128".parse::<Cidr>().is_ok());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }
}
