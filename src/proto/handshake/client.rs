//! Client role: the upgrade request, and checking the server's answer (RFC 6455 §4.1).

use base64::Engine as _;

use super::headers::{
    head_status, header_slots, quoted_list, slot_count, window, Extension, HeaderList,
};
use super::response::push_header;
use super::{accept_key, HandshakeError, HandshakeLimits, Parsed, WEBSOCKET_VERSION};

/// A client's side of one opening handshake: the request to send, and what
/// the server's response must contain.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    request: Vec<u8>,
    accept: [u8; 28],
    protocols: Vec<String>,
    extensions: Vec<String>,
    limits: HandshakeLimits,
}

impl ClientHandshake {
    /// Builds the upgrade request with a fresh random key.
    ///
    /// `path_and_query` is the request target (`""` means `/`); `protocols`
    /// are offered in preference order; `extra_headers` (e.g. `Origin`,
    /// `Authorization`) are appended as given. Offering extensions is done
    /// by passing a `Sec-WebSocket-Extensions` header here; the server may
    /// then accept those, and no others.
    ///
    /// # Panics
    ///
    /// If `host`, `path_and_query`, a protocol or a header contains CR, LF or
    /// NUL, `path_and_query` contains a space, a protocol is empty or contains
    /// a comma, or a header name is empty or contains `:` or whitespace.
    pub fn new(
        host: &str,
        path_and_query: &str,
        protocols: &[&str],
        extra_headers: &[(&str, &str)],
    ) -> Self {
        // RFC 6455 §4.1: the nonce "MUST be selected randomly for each
        // connection". It proves the server read this request, not secrecy,
        // so a fast non-cryptographic generator suffices.
        let key = fastrand::u128(..).to_le_bytes();
        Self::with_key(key, host, path_and_query, protocols, extra_headers)
    }

    /// Like [`new`](Self::new) with a chosen key, for reproducible runs and tests.
    ///
    /// # Panics
    ///
    /// As [`new`](Self::new).
    pub fn with_key(
        key: [u8; 16],
        host: &str,
        path_and_query: &str,
        protocols: &[&str],
        extra_headers: &[(&str, &str)],
    ) -> Self {
        let mut encoded = [0u8; 24];
        base64::engine::general_purpose::STANDARD
            .encode_slice(key, &mut encoded)
            .expect("16 bytes encode to exactly 24 base64 characters");

        let target = if path_and_query.is_empty() {
            "/"
        } else {
            path_and_query
        };
        assert!(
            !target
                .bytes()
                .any(|b| matches!(b, b' ' | b'\r' | b'\n' | b'\0')),
            "request target contains a space, CR, LF or NUL"
        );
        let mut request = Vec::with_capacity(160 + target.len() + host.len());
        request.extend_from_slice(b"GET ");
        request.extend_from_slice(target.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\n");
        push_header(&mut request, "Host", host);
        request
            .extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
        request.extend_from_slice(&encoded);
        request.extend_from_slice(b"\r\nSec-WebSocket-Version: ");
        request.extend_from_slice(WEBSOCKET_VERSION.as_bytes());
        request.extend_from_slice(b"\r\n");
        if !protocols.is_empty() {
            assert!(
                protocols.iter().all(|p| !p.is_empty() && !p.contains(',')),
                "subprotocols must be non-empty and contain no comma"
            );
            push_header(
                &mut request,
                "Sec-WebSocket-Protocol",
                &protocols.join(", "),
            );
        }
        let mut extensions = Vec::new();
        for (name, value) in extra_headers {
            push_header(&mut request, name, value);
            if name.eq_ignore_ascii_case("sec-websocket-extensions") {
                extensions
                    .extend(quoted_list(value).map(|e| Extension::parse(e).name().to_owned()));
            }
        }
        request.extend_from_slice(b"\r\n");

        Self {
            request,
            accept: accept_key(&encoded),
            protocols: protocols.iter().map(|&p| p.to_owned()).collect(),
            extensions,
            limits: HandshakeLimits::default(),
        }
    }

    /// Replaces the limits applied to the server's response head.
    ///
    /// Default: [`HandshakeLimits::default`].
    pub fn with_limits(mut self, limits: HandshakeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The complete request head to send.
    pub fn request_bytes(&self) -> &[u8] {
        &self.request
    }

    /// Appends the request head to `dst`.
    pub fn write_request(&self, dst: &mut Vec<u8>) {
        dst.extend_from_slice(&self.request);
    }

    /// The `Sec-WebSocket-Accept` value the server must answer with.
    pub fn expected_accept(&self) -> &str {
        std::str::from_utf8(&self.accept).unwrap_or_default()
    }

    /// Parses and checks the server's response head from the start of `buf`.
    ///
    /// Returns [`Parsed::Incomplete`] until the head has fully arrived. On
    /// success `consumed` is the head's length: the server may send its first
    /// frames in the same segment, and those bytes are the caller's.
    ///
    /// # Errors
    ///
    /// - [`HandshakeError::HeadTooLarge`], [`HandshakeError::TooManyHeaders`]
    ///   or [`HandshakeError::Malformed`] if the head is not acceptable HTTP;
    /// - [`HandshakeError::UnexpectedStatus`] with the status if it is not 101;
    /// - [`HandshakeError::UnsupportedHttpVersion`] for an HTTP/1.0 response;
    /// - [`HandshakeError::NotWebSocketUpgrade`] unless `Upgrade` is `websocket`;
    /// - [`HandshakeError::MissingConnectionUpgrade`] unless `Connection` lists `Upgrade`;
    /// - [`HandshakeError::AcceptMismatch`] unless exactly one
    ///   `Sec-WebSocket-Accept` matches the key sent;
    /// - [`HandshakeError::UnexpectedExtension`] for an extension not offered;
    /// - [`HandshakeError::UnexpectedProtocol`] for a subprotocol not offered,
    ///   or more than one.
    pub fn parse_response<'b>(
        &self,
        buf: &'b [u8],
    ) -> Result<Parsed<Response<'b>>, HandshakeError> {
        let mut slots = header_slots();
        let mut resp = httparse::Response::new(&mut []);
        let status = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            window(buf, &self.limits),
            &mut slots[..slot_count(&self.limits)],
        );
        let Some(consumed) = head_status(status, buf.len(), &self.limits)? else {
            return Ok(Parsed::Incomplete);
        };
        let (Some(version), Some(code)) = (resp.version, resp.code) else {
            unreachable!("httparse fills the status line before reporting a complete head");
        };
        let headers = HeaderList::from_httparse(resp.headers);

        // §4.1: "If the status code received from the server is not 101, the
        // client handles the response per HTTP [RFC2616] procedures."
        if code != 101 {
            return Err(HandshakeError::UnexpectedStatus(code));
        }
        if version < 1 {
            return Err(HandshakeError::UnsupportedHttpVersion);
        }
        // §4.1: "If the response lacks an |Upgrade| header field or the
        // |Upgrade| header field contains a value that is not an ASCII
        // case-insensitive match for the value "websocket" ..., the client
        // MUST _Fail the WebSocket Connection_."
        let mut upgrade = headers.str_elements("upgrade");
        let upgrade_ok = upgrade
            .next()
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
            && upgrade.next().is_none();
        drop(upgrade);
        if !upgrade_ok {
            return Err(HandshakeError::NotWebSocketUpgrade);
        }
        // "If the response lacks a |Connection| header field or the
        // |Connection| header field doesn't contain a token that is an ASCII
        // case-insensitive match for the value "Upgrade", the client MUST
        // _Fail the WebSocket Connection_."
        if !headers.has_token("connection", "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        // "If the response lacks a |Sec-WebSocket-Accept| header field or the
        // |Sec-WebSocket-Accept| contains a value other than the
        // base64-encoded SHA-1 of the concatenation of the
        // |Sec-WebSocket-Key| (as a string, not base64-decoded) with the
        // string "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" ..., the client MUST
        // _Fail the WebSocket Connection_."
        let mut accept = headers.get_all("sec-websocket-accept");
        let accept_ok = accept.next() == Some(&self.accept[..]) && accept.next().is_none();
        drop(accept);
        if !accept_ok {
            return Err(HandshakeError::AcceptMismatch);
        }
        // "If the response includes a |Sec-WebSocket-Extensions| header field
        // and this header field indicates the use of an extension that was
        // not present in the client's handshake ..., the client MUST _Fail
        // the WebSocket Connection_."
        if headers
            .extensions("sec-websocket-extensions")
            .any(|e| !self.extensions.iter().any(|o| o == e.name()))
        {
            return Err(HandshakeError::UnexpectedExtension);
        }
        // "If the response includes a |Sec-WebSocket-Protocol| header field
        // and this header field indicates the use of a subprotocol that was
        // not present in the client's handshake ..., the client MUST _Fail
        // the WebSocket Connection_." The server selects at most one.
        // Non-UTF-8 values are invisible to str_elements; refuse them rather
        // than report "no subprotocol".
        if headers
            .get_all("sec-websocket-protocol")
            .any(|v| std::str::from_utf8(v).is_err())
        {
            return Err(HandshakeError::UnexpectedProtocol);
        }
        let mut selected = headers.str_elements("sec-websocket-protocol");
        let protocol = match (selected.next(), selected.next()) {
            (None, _) => None,
            (Some(p), None) if self.protocols.iter().any(|o| o == p) => Some(p),
            _ => return Err(HandshakeError::UnexpectedProtocol),
        };
        drop(selected);

        Ok(Parsed::Complete {
            value: Response { headers, protocol },
            consumed,
        })
    }
}

/// A server's accepted `101 Switching Protocols` response, borrowing the
/// buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'a> {
    headers: HeaderList<'a>,
    protocol: Option<&'a str>,
}

impl<'a> Response<'a> {
    /// The subprotocol the server selected, if any; always one the client offered.
    pub fn protocol(&self) -> Option<&'a str> {
        self.protocol
    }

    /// The extensions the server enabled; always ones the client offered.
    pub fn extensions(&self) -> impl Iterator<Item = Extension<'a>> + '_ {
        self.headers.extensions("sec-websocket-extensions")
    }

    /// Every header field in arrival order, as `(name, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + '_ {
        self.headers.iter()
    }

    /// The value of the first field called `name`, compared ASCII case-insensitively.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.get(name)
    }

    /// Like [`header`](Self::header), but `None` also when the value is not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.headers.get_str(name)
    }
}

#[cfg(test)]
mod tests;
