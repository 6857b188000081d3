//! Spin's `allowed_outbound_hosts` rules, implemented for bv.
//!
//! Every Spin component is sandboxed: it may only open network connections
//! that its `allowed_outbound_hosts` list permits. bv enforces the same list
//! for outbound HTTP today and for PostgreSQL, Redis and MQTT later, so the
//! syntax and matching rules live here, independent of any protocol client:
//!
//! * [`AllowedHosts::parse`] validates a component's (already
//!   template-rendered) entries, `scheme://host[:port]`, with wildcards, CIDR
//!   ranges, port ranges and the service-chaining forms `http://self` and
//!   `http://<component>.spin.internal`;
//! * [`AllowedHosts::allows`] checks one concrete destination
//!   ([`OutboundUrl`]) and [`AllowedHosts::allows_chaining_to`] checks an
//!   in-process call to another component of the same app.
//!
//! Denying by default and matching exactly like Spin matters: an app that is
//! refused here would be refused by `spin up` too, and vice versa.

use std::fmt;
use std::net::IpAddr;

/// The domain Spin reserves for service chaining: `http://<component>.spin.internal`
/// reaches another component of the same application without leaving the host.
pub const SERVICE_CHAINING_DOMAIN: &str = "spin.internal";

/// The default port of a URL scheme, used when neither an allowed-host entry
/// nor a request URL names a port. `None` means the scheme has no well-known
/// port, so entries using it must give one explicitly.
pub fn default_port(scheme: &str) -> Option<u16> {
    Some(match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        "postgres" | "postgresql" => 5432,
        "mysql" => 3306,
        "redis" => 6379,
        "rediss" => 6380,
        "mqtt" => 1883,
        "mqtts" => 8883,
        "smtp" => 25,
        _ => return None,
    })
}

/// If `host` (optionally with `:port`) is `<component>.spin.internal`, returns
/// the component id. Used to recognise service-chaining requests.
pub fn service_chaining_target(host: &str) -> Option<&str> {
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let (first, rest) = host.split_once('.')?;
    (rest.eq_ignore_ascii_case(SERVICE_CHAINING_DOMAIN) && !first.is_empty()).then_some(first)
}

/// An `allowed_outbound_hosts` entry was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid allowed outbound host `{entry}`: {reason}")]
pub struct AllowedHostError {
    /// The offending entry, as given.
    pub entry: String,
    /// What is wrong with it, with a hint where one helps.
    pub reason: String,
}

/// A request URL could not be interpreted as an outbound destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid outbound URL `{url}`: {reason}")]
pub struct OutboundUrlError {
    /// The URL, as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The scheme part of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemePattern {
    /// `*`: any scheme.
    Any,
    /// One scheme, lowercased.
    Exact(String),
}

/// The host part of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: any host.
    Any,
    /// `*.example.com`: any strict subdomain; holds `.example.com` (lowercased).
    Subdomain(String),
    /// `self`: every component of this app through service chaining
    /// (`*.spin.internal`).
    SelfApp,
    /// An exact DNS name, lowercased.
    Name(String),
    /// An IP network; a plain IP literal is a network with a full-length prefix.
    Cidr {
        /// Network address (host bits cleared).
        addr: IpAddr,
        /// Prefix length in bits.
        prefix: u8,
    },
}

/// The port part of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortPattern {
    /// `*`: any port.
    Any,
    /// One port (given, or the scheme's default).
    Exact(u16),
    /// `start..end`: like Spin, the end is exclusive.
    Range(u16, u16),
}

/// One parsed `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    /// The entry as written, for messages.
    pub original: String,
    /// Which schemes it allows.
    pub scheme: SchemePattern,
    /// Which hosts it allows.
    pub host: HostPattern,
    /// Which ports it allows.
    pub port: PortPattern,
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

const SYNTAX_HINT: &str = "entries must look like <scheme>://<host>[:<port>], with '*' wildcards allowed for each part (use '*://*:*' to allow everything)";

fn is_valid_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn is_valid_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Clears the host bits of `addr` beyond `prefix`, so containment is a simple
/// comparison.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

fn max_prefix(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl AllowedHost {
    /// Parses one entry (already template-rendered).
    pub fn parse(entry: &str) -> Result<AllowedHost, AllowedHostError> {
        let err = |reason: String| AllowedHostError {
            entry: entry.to_string(),
            reason,
        };
        let trimmed = entry.trim();
        if trimmed == "insecure:allow-all" {
            return Err(err(
                "'insecure:allow-all' is not supported; use '*://*:*' if you really want to allow all outbound traffic".into(),
            ));
        }
        let Some((scheme, rest)) = trimmed.split_once("://") else {
            return Err(err(format!(
                "missing scheme (e.g. 'https://' or '*://'); {SYNTAX_HINT}"
            )));
        };
        if rest.contains(['?', '#']) {
            return Err(err("a query string or fragment is not allowed".into()));
        }
        if rest.contains('@') {
            return Err(err("user information ('user@') is not allowed".into()));
        }

        let scheme = if scheme == "*" {
            SchemePattern::Any
        } else if is_valid_scheme(scheme) {
            SchemePattern::Exact(scheme.to_ascii_lowercase())
        } else {
            return Err(err(format!("invalid scheme '{scheme}'")));
        };

        // Split host and port, allowing bracketed IPv6 and CIDR suffixes.
        let (host, port) = if let Some(after_bracket) = rest.strip_prefix('[') {
            let Some((inside, after)) = after_bracket.split_once(']') else {
                return Err(err("unclosed '[' in IPv6 host".into()));
            };
            let after = after.strip_suffix('/').unwrap_or(after);
            let port = match after {
                "" => None,
                p => match p.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return Err(err("a path is not allowed".into())),
                },
            };
            (inside, port)
        } else {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if let Some(p) = port {
            if p.contains('/') {
                return Err(err("a path is not allowed".into()));
            }
        }

        let host = Self::parse_host(host).map_err(err)?;

        let port = match port {
            None => {
                let SchemePattern::Exact(s) = &scheme else {
                    return Err(err(
                        "a port is required when the scheme is '*' (use ':*' for any port)".into(),
                    ));
                };
                match default_port(s) {
                    Some(p) => PortPattern::Exact(p),
                    None => {
                        return Err(err(format!(
                            "no port was given and scheme '{s}' has no known default port"
                        )))
                    }
                }
            }
            Some("*") => PortPattern::Any,
            Some(p) => {
                if let Some((start, end)) = p.split_once("..") {
                    let parse = |s: &str| {
                        s.parse::<u16>().map_err(|_| {
                            err(format!("port range '{p}' contains an invalid port '{s}'"))
                        })
                    };
                    let (start, end) = (parse(start)?, parse(end)?);
                    if start >= end {
                        return Err(err(format!(
                            "port range '{p}' is empty (the end is exclusive and must be greater than the start)"
                        )));
                    }
                    PortPattern::Range(start, end)
                } else {
                    PortPattern::Exact(p.parse().map_err(|_| {
                        err(format!("port '{p}' is not a number, '*' or a range 'a..b'"))
                    })?)
                }
            }
        };

        Ok(AllowedHost {
            original: entry.to_string(),
            scheme,
            host,
            port,
        })
    }

    fn parse_host(host: &str) -> Result<HostPattern, String> {
        if host.is_empty() {
            return Err(format!("the host is empty; {SYNTAX_HINT}"));
        }
        if host == "*" {
            return Ok(HostPattern::Any);
        }
        if host.eq_ignore_ascii_case("self") {
            return Ok(HostPattern::SelfApp);
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(HostPattern::Cidr {
                addr: ip,
                prefix: max_prefix(&ip),
            });
        }
        if let Some((addr, prefix)) = host.split_once('/') {
            if let Ok(ip) = addr.parse::<IpAddr>() {
                let prefix: u8 = prefix
                    .parse()
                    .ok()
                    .filter(|p| *p <= max_prefix(&ip))
                    .ok_or_else(|| format!("invalid CIDR prefix length '/{prefix}'"))?;
                return Ok(HostPattern::Cidr {
                    addr: mask(ip, prefix),
                    prefix,
                });
            }
            return Err("a path is not allowed".into());
        }
        if host.contains(':') {
            return Err(
                "IPv6 addresses must be written in brackets, e.g. 'http://[::1]:8080'".into(),
            );
        }
        if let Some(domain) = host.strip_prefix("*.") {
            if domain.contains('*') {
                return Err(format!(
                    "invalid host '{host}': '*' is only allowed as the first label"
                ));
            }
            if !is_valid_dns_name(domain) {
                return Err(format!("invalid host '{host}'"));
            }
            return Ok(HostPattern::Subdomain(format!(
                ".{}",
                domain.to_ascii_lowercase()
            )));
        }
        if host.contains('*') {
            return Err(format!(
                "invalid host '{host}': wildcards are only allowed as '*' or a '*.' prefix"
            ));
        }
        if host.starts_with('{') || host.contains("{{") {
            return Err(format!(
                "host '{host}' looks like an unrendered template or a host list, which is not supported"
            ));
        }
        if !is_valid_dns_name(host) {
            return Err(format!("invalid host '{host}'"));
        }
        Ok(HostPattern::Name(host.to_ascii_lowercase()))
    }

    /// Whether this entry permits a connection to `url`.
    pub fn allows(&self, url: &OutboundUrl) -> bool {
        let scheme_ok = match &self.scheme {
            SchemePattern::Any => true,
            SchemePattern::Exact(s) => s.eq_ignore_ascii_case(&url.scheme),
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Exact(p) => p == url.port,
            PortPattern::Range(start, end) => (start..end).contains(&url.port),
        };
        scheme_ok && port_ok && self.allows_host(&url.host)
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Subdomain(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            HostPattern::SelfApp => service_chaining_target(&host).is_some(),
            HostPattern::Name(name) => *name == host,
            HostPattern::Cidr { addr, prefix } => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                match host.parse::<IpAddr>() {
                    Ok(ip) => ip.is_ipv4() == addr.is_ipv4() && mask(ip, *prefix) == *addr,
                    Err(_) => false,
                }
            }
        }
    }
}

/// A component's parsed `allowed_outbound_hosts`. The default is empty, which
/// denies everything, matching Spin's sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

impl AllowedHosts {
    /// Parses every entry; the first bad one is reported.
    pub fn parse(entries: &[String]) -> Result<AllowedHosts, AllowedHostError> {
        entries
            .iter()
            .map(|e| AllowedHost::parse(e))
            .collect::<Result<Vec<_>, _>>()
            .map(|entries| AllowedHosts { entries })
    }

    /// The parsed entries, in manifest order.
    pub fn entries(&self) -> &[AllowedHost] {
        &self.entries
    }

    /// True when nothing at all is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether some entry permits a connection to `url`.
    pub fn allows(&self, url: &OutboundUrl) -> bool {
        self.entries.iter().any(|e| e.allows(url))
    }

    /// Whether the component may call `component` of the same app through
    /// service chaining: `http://self`, `https://self`, a matching
    /// `http://<component>.spin.internal` (or `*.spin.internal`) entry, or a
    /// wildcard broad enough to cover it.
    pub fn allows_chaining_to(&self, component: &str) -> bool {
        let host = format!("{component}.{SERVICE_CHAINING_DOMAIN}");
        ["http", "https"].iter().any(|scheme| {
            self.allows(&OutboundUrl {
                scheme: scheme.to_string(),
                host: host.clone(),
                port: default_port(scheme).unwrap_or_default(),
            })
        })
    }
}

/// A concrete outbound destination: what an allow-list is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundUrl {
    /// Lowercased scheme, e.g. `https`.
    pub scheme: String,
    /// Lowercased host; IPv6 literals without brackets.
    pub host: String,
    /// Explicit port, or the scheme's default.
    pub port: u16,
}

impl OutboundUrl {
    /// Parses a full URL such as `https://example.com/path` or
    /// `postgres://user:pw@db:5432/app`. A URL without a port takes the
    /// scheme's default; a scheme without a known default then is an error.
    pub fn parse(url: &str) -> Result<OutboundUrl, OutboundUrlError> {
        let err = |reason: String| OutboundUrlError {
            url: url.to_string(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| err(e.to_string()))?;
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| err("the URL has no host".into()))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let scheme = parsed.scheme().to_ascii_lowercase();
        let port = match parsed.port().or_else(|| default_port(&scheme)) {
            Some(p) => p,
            None => {
                return Err(err(format!(
                    "no port was given and scheme '{scheme}' has no known default port"
                )))
            }
        };
        Ok(OutboundUrl { scheme, host, port })
    }
}

impl fmt::Display for OutboundUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests;
