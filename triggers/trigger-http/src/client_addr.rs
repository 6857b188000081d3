//! The client's address: the TCP peer's, unless the peer is a trusted proxy
//! (`[application.tool.bv] trusted_proxies`); then the rightmost address in
//! the proxies' `Forwarded` (RFC 7239) or, without it, `X-Forwarded-For`
//! that is not itself a trusted proxy.
//!
//! Each proxy appends the address it received the request from, so walking
//! the list from the right over trusted hops reaches the first address no
//! trusted party vouches for: the client. Whatever a client writes to the
//! left of that is its own claim and is ignored. From a peer that is not
//! trusted, both headers are ignored altogether: a client cannot choose its
//! address. An entry that is not an address (`unknown`, an obfuscated
//! `_identifier`, garbage) ends the walk at the hop that reported it.
//!
//! The port is the one `Forwarded` gives with the address, else the peer's
//! (so it is never 0, which marks a chained request; see the auth
//! component's `require_internal_or_admin`).

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use bv_manifest::IpNetwork;

/// The trusted proxies; empty trusts no one.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<IpNetwork>);

impl TrustedProxies {
    /// The application's `trusted_proxies`, templates rendered.
    pub(crate) fn new(runtime: &bv_runtime::AppRuntime) -> anyhow::Result<Self> {
        let mut networks = Vec::new();
        for (i, entry) in runtime.app().bv.trusted_proxies.iter().enumerate() {
            let field = format!("application.tool.bv.trusted_proxies[{i}]");
            let text = entry
                .render(|name| runtime.app_variable(name))
                .map_err(|e| anyhow::anyhow!("{field}: {e}"))?;
            networks
                .extend(IpNetwork::parse_list(&text).map_err(|e| anyhow::anyhow!("{field}: {e}"))?);
        }
        Ok(Self(networks))
    }

    #[cfg(test)]
    fn of(list: &str) -> Self {
        Self(IpNetwork::parse_list(list).unwrap())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client of a request that arrived from `peer` with `headers`.
    pub(crate) fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let hops = if headers.contains_key(http::header::FORWARDED) {
            forwarded(headers)
        } else {
            x_forwarded_for(headers)
        };
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(addr) = hop else {
                return client;
            };
            let port = match addr.port() {
                0 => peer.port(),
                port => port,
            };
            client = SocketAddr::new(addr.ip().to_canonical(), port);
            if !self.trusts(client.ip()) {
                break;
            }
        }
        client
    }
}

/// The `for=` of each element of every `Forwarded` field, left to right
/// (`None` for one that is missing or not an address).
fn forwarded(headers: &HeaderMap) -> Vec<Option<SocketAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(http::header::FORWARDED) {
        let Ok(value) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in split_quoted(value, ',') {
            let node = split_quoted(element, ';').into_iter().find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| value.trim().trim_matches('"'))
            });
            hops.push(node.and_then(node_addr));
        }
    }
    hops
}

/// Every address of every `X-Forwarded-For` field, left to right.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<SocketAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| match value.to_str() {
            Ok(value) => value.split(',').map(|e| node_addr(e.trim())).collect(),
            Err(_) => vec![None],
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:4711`, `2001:db8::1`.
fn node_addr(node: &str) -> Option<SocketAddr> {
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = node.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

/// `s` split at `sep` outside double quotes.
fn split_quoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    const PROXY: &str = "10.0.0.5:40000";

    fn client(trusted: &str, peer: &str, pairs: &[(&str, &str)]) -> String {
        TrustedProxies::of(trusted)
            .client(peer.parse().unwrap(), &headers(pairs))
            .to_string()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let spoof = [
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=198.51.100.8"),
        ];
        assert_eq!(client("", PROXY, &spoof), PROXY);
        assert_eq!(
            client("10.0.0.0/8", "192.0.2.9:5000", &spoof),
            "192.0.2.9:5000"
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = "10.0.0.0/8";
        // The client put a fake address first; the proxy appended the real one.
        let xff = [("x-forwarded-for", "1.2.3.4, 203.0.113.9")];
        assert_eq!(client(trusted, PROXY, &xff), "203.0.113.9:40000");
        // Two proxies in the chain.
        let xff = [("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.1.1.1")];
        assert_eq!(client(trusted, PROXY, &xff), "203.0.113.9:40000");
        // Split over several fields.
        let xff = [
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        assert_eq!(client(trusted, PROXY, &xff), "203.0.113.9:40000");
        // Nothing forwarded: the proxy itself.
        assert_eq!(client(trusted, PROXY, &[]), PROXY);
        // Only trusted hops: the leftmost.
        let xff = [("x-forwarded-for", "10.9.9.9, 10.1.1.1")];
        assert_eq!(client(trusted, PROXY, &xff), "10.9.9.9:40000");
        // Garbage ends the walk at the hop that reported it.
        let xff = [("x-forwarded-for", "203.0.113.9, nonsense")];
        assert_eq!(client(trusted, PROXY, &xff), PROXY);
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_keeps_its_port() {
        let trusted = "10.0.0.0/8, ::1";
        let pairs = [
            ("x-forwarded-for", "198.51.100.1"),
            (
                "forwarded",
                r#"for=1.2.3.4;proto=http, for="[2001:db8:cafe::17]:4711";by=10.0.0.5"#,
            ),
        ];
        assert_eq!(client(trusted, PROXY, &pairs), "[2001:db8:cafe::17]:4711");
        let pairs = [("forwarded", "For=\"192.0.2.43:0\", for=10.2.2.2")];
        assert_eq!(client(trusted, "[::1]:7000", &pairs), "192.0.2.43:7000");
        let pairs = [("forwarded", "for=unknown")];
        assert_eq!(client(trusted, PROXY, &pairs), PROXY);
        let pairs = [("forwarded", "proto=https;by=10.0.0.1")];
        assert_eq!(client(trusted, PROXY, &pairs), PROXY);
        // IPv4-mapped peers count as IPv4.
        let xff = [("x-forwarded-for", "203.0.113.9")];
        assert_eq!(
            client(trusted, "[::ffff:10.0.0.5]:81", &xff),
            "203.0.113.9:81"
        );
    }
}
