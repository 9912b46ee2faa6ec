//! Which address a per-address limit counts: the peer, or the client a trusted proxy names, with IPv6 grouped per /64.

use std::net::{IpAddr, Ipv6Addr};

/// The client's address: the peer's, unless the peer is one of `trusted`
/// proxies; then the right-most address of `X-Forwarded-For` that is not a
/// trusted proxy itself (entries left of it could be forged by the
/// client). An unparsable entry ends the walk at the last good address.
pub(crate) fn client_address(
    peer: IpAddr,
    forwarded_for: Option<&str>,
    trusted: &[IpAddr],
) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut client = peer;
    if let Some(list) = forwarded_for {
        for entry in list.rsplit(',') {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !trusted.contains(&ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    client
}

/// Whether a browser `Origin` (`scheme://host[:port]`) names this machine:
/// `localhost`, `127.0.0.0/8` or `[::1]`, any port.
pub(crate) fn is_loopback_origin(origin: &str) -> bool {
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a `Host` header names this server in a way a DNS rebinding
/// attack cannot forge: an IP address literal (a rebinding attack needs a
/// name it controls), `localhost`, or a name of `allowed` (exact,
/// case-insensitive, without the port). The port is ignored.
pub(crate) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && (name.parse::<std::net::Ipv4Addr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || allowed.iter().any(|a| {
                let a = a.trim();
                let a = a.strip_suffix('.').unwrap_or(a);
                a.eq_ignore_ascii_case(name)
            }))
}

/// The key a per-address limit counts under: an IPv4 address as is (also
/// when written as IPv4-mapped IPv6), an IPv6 address by its /64, since one
/// host usually holds a whole /64.
pub(crate) fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_proxy_may_name_the_client() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        let xff = Some("6.6.6.6, 1.2.3.4, 10.0.0.2");
        // An untrusted peer's header is ignored.
        assert_eq!(client_address(ip("9.9.9.9"), xff, &trusted), ip("9.9.9.9"));
        // Through two trusted proxies: the first untrusted from the right.
        assert_eq!(client_address(ip("10.0.0.1"), xff, &trusted), ip("1.2.3.4"));
        // No header, or garbage: the proxy itself.
        assert_eq!(
            client_address(ip("10.0.0.1"), None, &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), Some("nonsense"), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn loopback_origins_are_recognised() {
        for o in [
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "https://[::1]:1",
            "http://127.3.4.5",
            "http://LOCALHOST",
        ] {
            assert!(is_loopback_origin(o), "{o}");
        }
        for o in [
            "https://evil.example",
            "http://localhost.evil.example",
            "http://10.0.0.1:8080",
            "null",
            "http://[::2]",
        ] {
            assert!(!is_loopback_origin(o), "{o}");
        }
    }

    #[test]
    fn hosts_a_rebinding_page_could_use_are_refused() {
        let allowed = ["app.example.com".to_string()];
        for h in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "[::1]",
            "10.1.2.3",
            "192.168.0.7:80",
            "app.example.com",
            "APP.example.com:443",
            "localhost.:1",
        ] {
            assert!(host_allowed(h, &allowed), "{h}");
        }
        for h in [
            "evil.example:8080",
            "evil.example",
            "localhost.evil.example",
            "app.example.com.evil",
            "",
            ":8080",
            "[not-an-ip]:1",
            "127.0.0.1.nip.io",
        ] {
            assert!(!host_allowed(h, &allowed), "{h}");
        }
        assert!(!host_allowed("app.example.com", &[]));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            limit_key(ip("2001:db8:1:2:bbbb::9")),
            limit_key(ip("2001:db8:1:2:aaaa::1"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:3::1")),
            limit_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(limit_key(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(limit_key(ip("1.2.3.4")), ip("1.2.3.4"));
    }
}
