//! Why a handshake was refused, and which HTTP status says so.

/// A request or response head that cannot complete the handshake.
///
/// Server-role errors map to the status the peer should receive through
/// [`status`](Self::status); [`write_response`](Self::write_response) writes
/// that whole rejection. "Not enough bytes yet" is not an error: it is
/// [`Parsed::Incomplete`](super::Parsed::Incomplete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The head exceeds [`HandshakeLimits::max_header_bytes`](super::HandshakeLimits::max_header_bytes).
    #[error("head exceeds {limit} bytes")]
    HeadTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The head has more header fields than
    /// [`HandshakeLimits::max_headers`](super::HandshakeLimits::max_headers).
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit in force.
        limit: usize,
    },
    /// The bytes are not an HTTP/1.x head.
    #[error("malformed HTTP head: {0}")]
    Malformed(&'static str),
    /// The upgrade request's method is not `GET`.
    #[error("WebSocket upgrade requires GET")]
    MethodNotAllowed,
    /// The head is HTTP/1.0; the handshake needs HTTP/1.1 or later.
    #[error("WebSocket handshake requires HTTP/1.1")]
    UnsupportedHttpVersion,
    /// The request has no (or an empty) `Host` header.
    #[error("missing Host header")]
    MissingHost,
    /// A header that may appear only once appears several times.
    #[error("duplicate {0} header")]
    DuplicateHeader(&'static str),
    /// No `Upgrade` header carries the `websocket` token.
    #[error("Upgrade header does not name websocket")]
    NotWebSocketUpgrade,
    /// No `Connection` header carries the `Upgrade` token.
    #[error("Connection header lacks the Upgrade token")]
    MissingConnectionUpgrade,
    /// The request has no `Sec-WebSocket-Key` header.
    #[error("missing Sec-WebSocket-Key header")]
    MissingKey,
    /// `Sec-WebSocket-Key` is not the base64 encoding of 16 bytes.
    #[error("Sec-WebSocket-Key is not base64 of 16 bytes")]
    InvalidKey,
    /// `Sec-WebSocket-Version` is missing or not 13; answered with 426 and
    /// `Sec-WebSocket-Version: 13`.
    #[error("unsupported Sec-WebSocket-Version (13 required)")]
    UnsupportedVersion,
    /// `Content-Length` is not a decimal number, or several disagree.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Client role: the server answered with a status other than 101.
    #[error("server answered {0} instead of 101")]
    UnexpectedStatus(u16),
    /// Client role: `Sec-WebSocket-Accept` is missing or does not match the key sent.
    #[error("Sec-WebSocket-Accept does not match the key sent")]
    AcceptMismatch,
    /// Client role: the server selected a subprotocol the client did not
    /// offer, or several.
    #[error("server selected a subprotocol that was not offered")]
    UnexpectedProtocol,
    /// Client role: the server enabled an extension the client did not offer.
    #[error("server selected an extension that was not offered")]
    UnexpectedExtension,
}

impl HandshakeError {
    /// The HTTP status a server answers this error with.
    ///
    /// Client-role errors (the server's response was unacceptable) report 502
    /// Bad Gateway; nothing is sent to the peer for those.
    pub fn status(&self) -> u16 {
        match self {
            Self::HeadTooLarge { .. } | Self::TooManyHeaders { .. } => 431,
            // RFC 9110 §15.5.6: 405 means the target exists but does not
            // support the method, which is exactly the case of a non-GET
            // request asking for an upgrade.
            Self::MethodNotAllowed => 405,
            Self::UnsupportedVersion => 426,
            Self::Malformed(_)
            | Self::UnsupportedHttpVersion
            | Self::MissingHost
            | Self::DuplicateHeader(_)
            | Self::NotWebSocketUpgrade
            | Self::MissingConnectionUpgrade
            | Self::MissingKey
            | Self::InvalidKey
            | Self::InvalidContentLength => 400,
            Self::UnexpectedStatus(_)
            | Self::AcceptMismatch
            | Self::UnexpectedProtocol
            | Self::UnexpectedExtension => 502,
        }
    }

    /// A short, fixed description suitable as a response body.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::HeadTooLarge { .. } => "request head too large",
            Self::TooManyHeaders { .. } => "too many header fields",
            Self::Malformed(reason) => reason,
            Self::MethodNotAllowed => "WebSocket upgrade requires GET",
            Self::UnsupportedHttpVersion => "WebSocket handshake requires HTTP/1.1",
            Self::MissingHost => "missing Host header",
            Self::DuplicateHeader(_) => "duplicate header",
            Self::NotWebSocketUpgrade => "Upgrade header does not name websocket",
            Self::MissingConnectionUpgrade => "Connection header lacks the Upgrade token",
            Self::MissingKey => "missing Sec-WebSocket-Key",
            Self::InvalidKey => "Sec-WebSocket-Key is not base64 of 16 bytes",
            Self::UnsupportedVersion => "Sec-WebSocket-Version 13 required",
            Self::InvalidContentLength => "invalid Content-Length",
            Self::UnexpectedStatus(_) => "unexpected status",
            Self::AcceptMismatch => "Sec-WebSocket-Accept mismatch",
            Self::UnexpectedProtocol => "unexpected subprotocol",
            Self::UnexpectedExtension => "unexpected extension",
        }
    }

    /// Appends the complete rejection for this error to `dst`: status line,
    /// `Connection: close`, a `text/plain` body holding [`reason`](Self::reason),
    /// plus `Allow: GET` for 405 and `Upgrade: websocket` with
    /// `Sec-WebSocket-Version: 13` for 426.
    pub fn write_response(&self, dst: &mut Vec<u8>) {
        let status = self.status();
        let allow: &[(&str, &str)] = if status == 405 {
            // RFC 9110 §15.5.6: "The origin server MUST generate an Allow
            // header field in a 405 response".
            &[("Allow", "GET")]
        } else {
            &[]
        };
        super::response::write_rejection_with(dst, status, self.reason(), allow);
    }
}

/// Maps httparse's error; `max_headers` is the header-slot count the parser had.
pub(super) fn from_httparse(err: httparse::Error, max_headers: usize) -> HandshakeError {
    match err {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders { limit: max_headers },
        httparse::Error::HeaderName => HandshakeError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HandshakeError::Malformed("invalid header value"),
        httparse::Error::NewLine => HandshakeError::Malformed("invalid line ending"),
        httparse::Error::Status => HandshakeError::Malformed("invalid status"),
        httparse::Error::Token => HandshakeError::Malformed("invalid token"),
        httparse::Error::Version => HandshakeError::Malformed("invalid HTTP version"),
    }
}
