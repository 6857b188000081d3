//! Connection addresses: parsing both forms Postgres accepts, the TLS policy
//! and the network endpoints the allow-list is checked against.

use std::str::FromStr;

use bv_outbound_networking::{AllowedHosts, OutboundUrl};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::Config;

/// A parsed, policy-checked address.
#[derive(Debug)]
pub struct Address {
    /// The tokio-postgres configuration the pool connects with.
    pub config: Config,
    /// Every `(host, port)` the client may dial, for the allow-list.
    pub endpoints: Vec<OutboundUrl>,
}

/// Why an address cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// Neither a `postgres://` URL nor a `key=value` connection string.
    #[error("invalid Postgres address: {0}")]
    Invalid(String),
    /// The address asks for TLS, which this host does not offer.
    #[error(
        "sslmode={0} is not supported: this host connects without TLS; \
         use sslmode=disable (or prefer)"
    )]
    Tls(&'static str),
    /// A Unix-domain socket: not a network destination an allow-list can name.
    #[error("Unix-socket addresses are not supported (host {0})")]
    UnixSocket(String),
    /// The address names no host.
    #[error("the address names no host")]
    NoHost,
    /// The component's `allowed_outbound_hosts` does not list the endpoint.
    #[error(
        "connection to postgres://{host}:{port} is not allowed: add it to the component's allowed_outbound_hosts"
    )]
    NotAllowed {
        /// The host that was refused.
        host: String,
        /// Its port.
        port: u16,
    },
}

fn ssl_mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        _ => "verify",
    }
}

/// Parses `address` (URL form `postgres://user@host:port/db?sslmode=disable`
/// or key-value form `host=.. port=.. user=.. dbname=..`), rejects sslmodes
/// that need TLS, and lists the endpoints it would dial. `prefer` (the
/// default when the address says nothing) is accepted: it allows a plain
/// connection, which is what this host makes.
pub fn parse(address: &str) -> Result<Address, AddressError> {
    let config = Config::from_str(address).map_err(|e| AddressError::Invalid(e.to_string()))?;
    match config.get_ssl_mode() {
        SslMode::Disable | SslMode::Prefer => {}
        other => return Err(AddressError::Tls(ssl_mode_name(other))),
    }
    let hosts = config.get_hosts();
    if hosts.is_empty() {
        return Err(AddressError::NoHost);
    }
    let ports = config.get_ports();
    let mut endpoints = Vec::with_capacity(hosts.len());
    for (i, host) in hosts.iter().enumerate() {
        let host = match host {
            Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            Host::Unix(p) => return Err(AddressError::UnixSocket(p.display().to_string())),
        };
        // libpq rule: one port for all hosts, or one port per host.
        let port = match ports.len() {
            0 => 5432,
            1 => ports[0],
            _ => *ports.get(i).unwrap_or(&5432),
        };
        endpoints.push(OutboundUrl {
            scheme: "postgres".to_string(),
            host,
            port,
        });
    }
    // `hostaddr` overrides the address actually dialled: check it too.
    for addr in config.get_hostaddrs() {
        let port = ports.first().copied().unwrap_or(5432);
        endpoints.push(OutboundUrl {
            scheme: "postgres".to_string(),
            host: addr.to_string(),
            port,
        });
    }
    Ok(Address { config, endpoints })
}

/// Fails with [`AddressError::NotAllowed`] naming the first endpoint of
/// `address` that `allowed` does not list.
pub fn check_allowed(address: &Address, allowed: &AllowedHosts) -> Result<(), AddressError> {
    for endpoint in &address.endpoints {
        if !allowed.allows(endpoint) {
            return Err(AddressError::NotAllowed {
                host: endpoint.host.clone(),
                port: endpoint.port,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn url_and_key_value_forms() {
        let a = parse("postgres://postgres@127.0.0.1:5433/app?sslmode=disable").unwrap();
        assert_eq!(a.endpoints[0].host, "127.0.0.1");
        assert_eq!(a.endpoints[0].port, 5433);
        let b = parse("host=db.internal port=6000 user=app dbname=app sslmode=disable").unwrap();
        assert_eq!(b.endpoints[0].host, "db.internal");
        assert_eq!(b.endpoints[0].port, 6000);
        let c = parse("host=db user=app").unwrap();
        assert_eq!(c.endpoints[0].port, 5432);
    }

    #[test]
    fn tls_modes_are_rejected_clearly() {
        let err = parse("postgres://u@h/db?sslmode=require").unwrap_err();
        assert!(err.to_string().contains("sslmode=require"), "{err}");
    }

    #[test]
    fn allow_list_is_enforced_per_endpoint() {
        let a = parse("host=127.0.0.1,10.0.0.9 port=5432 user=u").unwrap();
        assert!(check_allowed(&a, &allowed(&["postgres://127.0.0.1:5432"])).is_err());
        assert!(check_allowed(&a, &allowed(&["postgres://*:5432"])).is_ok());
        let b = parse("postgres://u@127.0.0.1:1/db").unwrap();
        let err = check_allowed(&b, &allowed(&["postgres://127.0.0.1:5432"])).unwrap_err();
        assert!(err.to_string().contains("not allowed"), "{err}");
    }

    #[test]
    fn garbage_is_invalid() {
        assert!(matches!(
            parse("postgres://[bad"),
            Err(AddressError::Invalid(_))
        ));
    }
}
