//! `ws://` and `wss://` URLs: parsed and checked once, before any socket is opened.

use std::fmt;

use crate::error::UrlError;

/// A parsed WebSocket URL: scheme, host, port and request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `wss://` (TLS) rather than `ws://`.
    pub secure: bool,
    /// The host as written, without IPv6 brackets.
    pub host: String,
    /// The port; 80 or 443 when the URL names none.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl Endpoint {
    /// Parses `ws://host[:port][/path][?query]` or the `wss://` form.
    ///
    /// # Errors
    ///
    /// [`UrlError`] naming the first part that is wrong: the scheme, an empty
    /// or invalid host, a port that is not a number in 1..=65535, user info
    /// (`user@`), a fragment (`#`, which RFC 6455 §3 forbids), or characters
    /// that cannot appear in a request line.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let (secure, rest) = if let Some(r) = strip_prefix_ci(url, "ws://") {
            (false, r)
        } else if let Some(r) = strip_prefix_ci(url, "wss://") {
            (true, r)
        } else {
            return Err(UrlError::Scheme);
        };
        // RFC 6455 §3: "Fragment identifiers are meaningless in the context
        // of WebSocket URIs and MUST NOT be used on these URIs."
        if rest.contains('#') {
            return Err(UrlError::Fragment);
        }
        if rest
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || !b.is_ascii())
        {
            return Err(UrlError::InvalidCharacter);
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or(UrlError::Host)?;
            let host = &v6[..end];
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(UrlError::Host);
            }
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(UrlError::Host),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
        {
            return Err(UrlError::Host);
        }
        let port = match port {
            None => {
                if secure {
                    443
                } else {
                    80
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(UrlError::Port),
            },
        };
        let target = if target.is_empty() {
            "/".to_owned()
        } else if target.starts_with('?') {
            format!("/{target}")
        } else {
            target.to_owned()
        };
        Ok(Endpoint {
            secure,
            host: host.to_ascii_lowercase(),
            port,
            target,
        })
    }

    /// The `Host` header value: the port is left out when it is the scheme's
    /// default, and IPv6 addresses get their brackets back.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.secure { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The request target with `name=value` added to its query,
    /// percent-encoding `value`.
    pub fn with_query_param(&self, name: &str, value: &str) -> String {
        let sep = if self.target.contains('?') { '&' } else { '?' };
        format!("{}{sep}{name}={}", self.target, percent_encode(value))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.secure { "wss" } else { "ws" };
        write!(f, "{scheme}://{}{}", self.host_header(), self.target)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let e = Endpoint::parse("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(
            (e.secure, e.host.as_str(), e.port, e.target.as_str()),
            (false, "127.0.0.1", 8080, "/ws")
        );
        let e = Endpoint::parse("WSS://Example.COM?x=1").unwrap();
        assert_eq!(
            (e.secure, e.host.as_str(), e.port, e.target.as_str()),
            (true, "example.com", 443, "/?x=1")
        );
        assert_eq!(e.host_header(), "example.com");
        let e = Endpoint::parse("ws://[::1]:9000").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));
        assert_eq!(e.host_header(), "[::1]:9000");
        assert_eq!(e.to_string(), "ws://[::1]:9000/");
    }

    #[test]
    fn refuses_what_cannot_be_a_websocket_url() {
        assert_eq!(Endpoint::parse("http://a/"), Err(UrlError::Scheme));
        assert_eq!(Endpoint::parse("ws://"), Err(UrlError::Host));
        assert_eq!(Endpoint::parse("ws://a:0/"), Err(UrlError::Port));
        assert_eq!(Endpoint::parse("ws://a:70000/"), Err(UrlError::Port));
        assert_eq!(Endpoint::parse("ws://a:+80/"), Err(UrlError::Port));
        assert_eq!(Endpoint::parse("ws://u:p@a/"), Err(UrlError::UserInfo));
        assert_eq!(Endpoint::parse("ws://a/#top"), Err(UrlError::Fragment));
        assert_eq!(
            Endpoint::parse("ws://a/x y"),
            Err(UrlError::InvalidCharacter)
        );
        assert_eq!(Endpoint::parse("ws://[zz]/"), Err(UrlError::Host));
        assert_eq!(
            Endpoint::parse("ws://a b/"),
            Err(UrlError::InvalidCharacter)
        );
    }

    #[test]
    fn query_parameters_are_percent_encoded() {
        let e = Endpoint::parse("ws://h/ws?a=1").unwrap();
        assert_eq!(
            e.with_query_param("token", "a b&c"),
            "/ws?a=1&token=a%20b%26c"
        );
        let e = Endpoint::parse("ws://h").unwrap();
        assert_eq!(e.with_query_param("token", "t.k-n_~"), "/?token=t.k-n_~");
    }
}
