//! The client's address, as budgets and analytics key on it. Behind a load balancer every
//! request comes from the balancer: its address would put every client in one bucket. A peer in
//! `TRUSTED_PROXIES` has its `X-Forwarded-For` believed, hop by hop from the right (each trusted
//! proxy appends the address it received from), up to the first address that is not a trusted
//! proxy: that is the client. What lies left of it was written by the client and proves
//! nothing; `X-Forwarded-For` from a peer that is not trusted is ignored altogether.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// A `TRUSTED_PROXIES` entry: a network (`10.0.0.0/8`) or one address.
pub fn parse_proxy(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a network like 10.0.0.0/8"))
}

/// The client's address for a request from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else { return peer };
        hops.extend(value.split(','));
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    return ip;
                }
            }
            // A hop no trusted proxy would write: the last one that is known stands.
            Err(_) => return client,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", v.parse().expect("a header value"));
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn only_trusted_proxies_are_believed() {
        let trusted =
            [parse_proxy("10.0.0.0/8").expect("net"), parse_proxy("192.0.2.7").expect("ip")];
        // Straight from a client: its own header is ignored.
        assert_eq!(
            client_ip(ip("203.0.113.5"), &headers(&["1.2.3.4"]), &trusted),
            ip("203.0.113.5")
        );
        // Through the balancer: the address it saw.
        assert_eq!(
            client_ip(ip("10.1.1.1"), &headers(&["203.0.113.5"]), &trusted),
            ip("203.0.113.5")
        );
        // A client that writes its own header first cannot choose its address.
        let spoofed = headers(&["6.6.6.6, 203.0.113.5"]);
        assert_eq!(client_ip(ip("10.1.1.1"), &spoofed, &trusted), ip("203.0.113.5"));
        // Two trusted hops, in two headers.
        let chained = headers(&["203.0.113.5", "192.0.2.7"]);
        assert_eq!(client_ip(ip("10.1.1.1"), &chained, &trusted), ip("203.0.113.5"));
        // Garbage from the client side stops the walk at the last known hop.
        assert_eq!(client_ip(ip("10.1.1.1"), &headers(&["nonsense"]), &trusted), ip("10.1.1.1"));
        // A trusted peer without the header is the client.
        assert_eq!(client_ip(ip("10.1.1.1"), &HeaderMap::new(), &trusted), ip("10.1.1.1"));
        // Nothing trusted: the peer, always.
        assert_eq!(client_ip(ip("10.1.1.1"), &headers(&["203.0.113.5"]), &[]), ip("10.1.1.1"));
        assert!(parse_proxy("10.0.0.0/33").is_err() && parse_proxy("proxy").is_err());
    }
}
