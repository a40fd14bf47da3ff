//! The client IP of a request: the peer address, or the forwarding headers when — and only
//! when — the peer is a trusted proxy.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;
use tracing_usr::blocking::canonical_ip;

/// An address range (`10.0.0.0/8`, `fd00::/8`, or a single address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

/// A malformed [`IpRange`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseRangeError(String);

impl fmt::Display for ParseRangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid address range {:?} (expected an IP address or ADDRESS/PREFIX)",
            self.0
        )
    }
}

impl std::error::Error for ParseRangeError {}

impl FromStr for IpRange {
    type Err = ParseRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseRangeError(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let network = canonical_ip(addr.parse::<IpAddr>().map_err(|_| err())?);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(err)?,
            None => max,
        };
        Ok(Self { network, prefix })
    }
}

impl IpRange {
    /// Whether `ip` is inside the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical_ip(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Headers that carry the client IP, in the order they are consulted.
pub const CLIENT_IP_HEADERS: [&str; 8] = [
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "cf-connecting-ip",
];

fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    // `[v6]:port`, `v4:port`, bare addresses.
    let text = if let Some(rest) = text.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if text.matches(':').count() == 1 {
        text.split(':').next().unwrap_or(text)
    } else {
        text
    };
    text.parse::<IpAddr>().ok().map(canonical_ip)
}

fn forwarded_for(value: &str) -> Vec<IpAddr> {
    value
        .split(',')
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("for")
                .then(|| parse_ip(v))
                .flatten()
        })
        .collect()
}

/// Resolves the client IP: the peer, unless the peer is a trusted proxy; then the first header
/// of [`CLIENT_IP_HEADERS`] that is present, read right to left, skipping trusted proxies (so a
/// client cannot spoof its address by sending the header itself). Without a known peer the
/// headers are not trusted and the client IP is unknown.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpRange]) -> Option<IpAddr> {
    let peer = canonical_ip(peer?);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|r| r.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    for name in CLIENT_IP_HEADERS {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            continue;
        }
        let chain: Vec<IpAddr> = match name {
            "forwarded" => values.iter().flat_map(|v| forwarded_for(v)).collect(),
            _ => values
                .iter()
                .flat_map(|v| v.split(','))
                .filter_map(parse_ip)
                .collect(),
        };
        if chain.is_empty() {
            continue;
        }
        // The rightmost address that is not one of our proxies is the client; if every hop is
        // trusted, the leftmost one is.
        return chain
            .iter()
            .rev()
            .find(|ip| !is_trusted(**ip))
            .or(chain.first())
            .copied();
    }
    Some(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges() {
        let r: IpRange = "10.0.0.0/8".parse().unwrap();
        assert!(
            r.contains(ip("10.1.2.3")) && r.contains(ip("::ffff:10.1.2.3")) && !r.contains(ip("11.0.0.1"))
        );
        let one: IpRange = "192.0.2.1".parse().unwrap();
        assert!(one.contains(ip("192.0.2.1")) && !one.contains(ip("192.0.2.2")));
        let v6: IpRange = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!("10.0.0.0/33".parse::<IpRange>().is_err() && "nope".parse::<IpRange>().is_err());
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(
            client_ip(Some(ip("203.0.113.9")), &h, &trusted),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(client_ip(None, &h, &trusted), None);
    }

    #[test]
    fn a_trusted_proxy_chain_is_read_right_to_left() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        // The client prepended a fake address; the proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.0.0.2")]);
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &h, &trusted),
            Some(ip("198.51.100.4"))
        );
        let h = headers(&[(
            "forwarded",
            r#"for=6.6.6.6, for="[2001:db8::7]:4711";proto=https"#,
        )]);
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &h, &trusted),
            Some(ip("2001:db8::7"))
        );
        let h = headers(&[("x-real-ip", "198.51.100.8")]);
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &h, &trusted),
            Some(ip("198.51.100.8"))
        );
        let h = headers(&[("x-forwarded-for", "garbage")]);
        assert_eq!(
            client_ip(Some(ip("10.0.0.1")), &h, &trusted),
            Some(ip("10.0.0.1"))
        );
    }
}
