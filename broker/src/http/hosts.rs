//! Which `Host` names the HTTP listener answers to: the address the
//! client connected to (the listener's own), a loopback name
//! (`localhost`, `127.0.0.1`, `[::1]`), or one given with
//! `--http-allowed-hosts`. Every request, on every route (`/metrics`, the
//! dashboard's files, the API), must name one: a page on another site
//! whose name an attacker points at this broker (DNS rebinding) sends its
//! own name as `Host`, and is refused (403) before anything is read. A
//! POST's `Origin` is held to the same list (`api/origin.rs`), never to
//! the request's own `Host`, which the attacker chooses.

use std::net::{IpAddr, SocketAddr};

/// The address a request's client connected to: the listener's own, as
/// the server puts it in each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ListenerAddr(pub SocketAddr);

/// One name of `--http-allowed-hosts`: a host name or IP address, with
/// a port or without (any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    name: String,
    port: Option<u16>,
}

impl AllowedHost {
    /// Parses `NAME` or `NAME:PORT` (`[V6]:PORT` for an IPv6 address).
    ///
    /// # Errors
    /// Why the entry is not a host name, an address or a port.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let (name, port) = split_host(entry.trim());
        let port = match port {
            None => None,
            Some(port) => Some(
                port.parse::<u16>()
                    .map_err(|_| format!("{entry:?}: {port:?} is not a port"))?,
            ),
        };
        let valid_name = !name.is_empty()
            && (name.parse::<IpAddr>().is_ok()
                || name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                }));
        if !valid_name {
            return Err(format!("{entry:?} is not a host name or an IP address"));
        }
        Ok(Self {
            name: name.to_ascii_lowercase(),
            port,
        })
    }
}

/// The names one listener answers to, besides its own address and the
/// loopback names.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    extra: Vec<AllowedHost>,
}

impl AllowedHosts {
    /// The loopback names, the listener's address, and `extra`.
    pub fn new(extra: Vec<AllowedHost>) -> Self {
        Self { extra }
    }

    /// Whether `host` (a `Host` header, or an `Origin` without its
    /// scheme) names this listener, reached at `local`.
    pub fn allows(&self, host: &str, local: SocketAddr) -> bool {
        let (name, port) = split_host(host);
        let port = match port {
            None => None,
            Some(port) => match port.parse::<u16>() {
                Ok(port) => Some(port),
                Err(_) => return false,
            },
        };
        let name = name.to_ascii_lowercase();
        let ip = name.parse::<IpAddr>().ok();
        if name == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
            return true;
        }
        if ip == Some(local.ip()) && port.is_none_or(|p| p == local.port()) {
            return true;
        }
        self.extra
            .iter()
            .any(|a| a.name == name && a.port.is_none_or(|p| port.is_none_or(|q| q == p)))
    }
}

/// `name` and `port` of `host[:port]` or `[v6][:port]`.
fn split_host(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((v6, after)) => (v6, after.strip_prefix(':')),
            None => (rest, None),
        };
    }
    match host.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SocketAddr {
        "10.0.0.5:9090".parse().unwrap()
    }

    #[test]
    fn loopback_names_and_the_listeners_own_address_are_answered() {
        let hosts = AllowedHosts::default();
        for host in [
            "localhost",
            "localhost:9090",
            "LOCALHOST",
            "127.0.0.1:9090",
            "[::1]:9090",
            "10.0.0.5:9090",
            "10.0.0.5",
        ] {
            assert!(hosts.allows(host, local()), "{host}");
        }
        for host in [
            "rebound.example:9090",
            "10.0.0.5:9091",
            "10.0.0.6:9090",
            "",
            "localhost:notaport",
        ] {
            assert!(!hosts.allows(host, local()), "{host}");
        }
    }

    #[test]
    fn allowed_hosts_add_names_with_or_without_a_port() {
        let hosts = AllowedHosts::new(vec![
            AllowedHost::parse("sluice.internal").unwrap(),
            AllowedHost::parse("dash.example.com:443").unwrap(),
            AllowedHost::parse("[fd00::5]:9090").unwrap(),
        ]);
        assert!(hosts.allows("sluice.internal:9090", local()));
        assert!(hosts.allows("Sluice.Internal", local()));
        assert!(hosts.allows("dash.example.com:443", local()));
        assert!(hosts.allows("dash.example.com", local()));
        assert!(!hosts.allows("dash.example.com:8443", local()));
        assert!(hosts.allows("[fd00::5]:9090", local()));
        assert!(!hosts.allows("other.internal", local()));
    }

    #[test]
    fn a_bad_entry_is_refused_naming_it() {
        for entry in ["", "bad name", "host:port", "a..b", "under_score"] {
            assert!(AllowedHost::parse(entry).is_err(), "{entry}");
        }
    }
}
