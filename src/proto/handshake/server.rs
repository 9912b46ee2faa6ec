//! Server role: parsing a request head, and deciding whether it is a valid upgrade (RFC 6455 §4.2.1).

use std::borrow::Cow;

use base64::Engine as _;

use super::headers::{head_status, header_slots, slot_count, window, Extension, HeaderList};
use super::{accept_key, HandshakeError, HandshakeLimits, Parsed, WEBSOCKET_VERSION};

/// Parses an HTTP/1.x request head from the start of `buf`.
///
/// Returns [`Parsed::Incomplete`] until the blank line ending the head has
/// arrived; then the request, which borrows `buf`, and the head's length.
/// Bytes after the head are not looked at: they are a body or the first
/// WebSocket frame, and are the caller's. Both HTTP/1.0 and HTTP/1.1 parse;
/// [`Request::validate_upgrade`] insists on 1.1.
///
/// # Errors
///
/// - [`HandshakeError::HeadTooLarge`] (431) once `limits.max_header_bytes`
///   bytes are buffered without the head ending, or if a complete head is longer.
/// - [`HandshakeError::TooManyHeaders`] (431) beyond `limits.max_headers` fields.
/// - [`HandshakeError::Malformed`] (400) if the bytes are not an HTTP/1.x request.
pub fn parse_request<'b>(
    buf: &'b [u8],
    limits: &HandshakeLimits,
) -> Result<Parsed<Request<'b>>, HandshakeError> {
    let mut slots = header_slots();
    let mut req = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        window(buf, limits),
        &mut slots[..slot_count(limits)],
    );
    let Some(consumed) = head_status(status, buf.len(), limits)? else {
        return Ok(Parsed::Incomplete);
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        unreachable!("httparse fills the request line before reporting a complete head");
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    Ok(Parsed::Complete {
        value: Request {
            method,
            target,
            path,
            query,
            version,
            headers: HeaderList::from_httparse(req.headers),
        },
        consumed,
    })
}

/// Why a plain request's body cannot be read; see [`Request::body_end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// `Content-Length` is not a decimal number, or several disagree.
    InvalidLength,
    /// The declared body is longer than the limit.
    TooLarge,
    /// The request has a `Transfer-Encoding` (a chunked body). Bodies are
    /// framed by `Content-Length` only; guessing the length of a body in a
    /// transfer coding we do not decode is how requests get smuggled.
    TransferCoding,
}

impl BodyError {
    /// The HTTP status to answer with: 400, 413 or 411 (Length Required).
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidLength => 400,
            Self::TooLarge => 413,
            Self::TransferCoding => 411,
        }
    }
}

/// A parsed request head, borrowing the buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    method: &'a str,
    target: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    version: u8,
    headers: HeaderList<'a>,
}

impl<'a> Request<'a> {
    /// The method, e.g. `GET` (case-sensitive, RFC 9110 §9.1).
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The request target as sent, query included.
    pub fn target(&self) -> &'a str {
        self.target
    }

    /// The request target up to, not including, the first `?`. Not
    /// percent-decoded. Absolute-form targets (`http://host/p`) are returned whole.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The raw query after the first `?`, without the `?`; `None` if the
    /// target has no `?`.
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// The value of the first `name=value` pair in the query whose name is
    /// exactly `name`; `Some("")` for a bare `name` or `name=`.
    ///
    /// Names and values are compared and returned raw, *not* percent-decoded
    /// (a `+` stays a `+`): decode the value with [`percent_decode`] when it
    /// may contain escapes.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    /// The minor HTTP version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Every header field in arrival order, as `(name, value)`. Values have
    /// surrounding whitespace removed and may be any bytes but CR, LF and NUL.
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

    /// The values of every field called `name`, in order.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a [u8]> + 's {
        self.headers.get_all(name)
    }

    /// The declared body length: `Ok(None)` without a `Content-Length` field.
    ///
    /// Repeated fields must agree. `Transfer-Encoding` is not interpreted;
    /// a caller reading bodies should refuse requests that carry it.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::InvalidContentLength`] (400) if a value is not plain
    /// decimal digits, overflows `u64`, or several values differ (RFC 9112
    /// §6.3: such a message is unrecoverable and must be rejected, else the
    /// peer and we could disagree on where the body ends).
    pub fn content_length(&self) -> Result<Option<u64>, HandshakeError> {
        let mut length = None;
        for value in self.headers.get_all("content-length") {
            let parsed = parse_decimal(value).ok_or(HandshakeError::InvalidContentLength)?;
            if length.is_some_and(|l| l != parsed) {
                return Err(HandshakeError::InvalidContentLength);
            }
            length = Some(parsed);
        }
        Ok(length)
    }

    /// Where the body of a plain (non-upgrade) request ends in the buffer
    /// whose first `head_len` bytes are this head: `head_len` plus the
    /// declared `Content-Length` (0 without one). Bodies longer than
    /// `max_body` are refused before any of them is buffered.
    ///
    /// # Errors
    ///
    /// [`BodyError::InvalidLength`] (400) as for
    /// [`content_length`](Self::content_length), [`BodyError::TooLarge`]
    /// (413) beyond `max_body`, [`BodyError::TransferCoding`] (411) when a
    /// `Transfer-Encoding` field is present.
    pub fn body_end(&self, head_len: usize, max_body: usize) -> Result<usize, BodyError> {
        if self.headers.get("transfer-encoding").is_some() {
            return Err(BodyError::TransferCoding);
        }
        let len = self
            .content_length()
            .map_err(|_| BodyError::InvalidLength)?
            .unwrap_or(0);
        if len > max_body as u64 {
            return Err(BodyError::TooLarge);
        }
        // Cannot overflow: `len` fits `max_body`, a usize, and the head is
        // in memory.
        Ok(head_len.saturating_add(len as usize))
    }

    /// The `Origin` header, if present and UTF-8. Browsers always send it;
    /// checking it is how a server refuses cross-site pages (RFC 6455 §10.2).
    pub fn origin(&self) -> Option<&'a str> {
        self.headers.get_str("origin")
    }

    /// The `Host` header, if present and UTF-8.
    pub fn host(&self) -> Option<&'a str> {
        self.headers.get_str("host")
    }

    /// The subprotocols offered in every `Sec-WebSocket-Protocol` field, in
    /// the client's order, trimmed, empty elements skipped.
    pub fn protocols(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.headers.str_elements("sec-websocket-protocol")
    }

    /// Picks the subprotocol to answer with: the first of `supported` (the
    /// server's preference order) that the client offered, compared exactly.
    pub fn select_protocol<'s>(&self, supported: &[&'s str]) -> Option<&'s str> {
        supported
            .iter()
            .copied()
            .find(|s| self.protocols().any(|p| p == *s))
    }

    /// The extensions offered in every `Sec-WebSocket-Extensions` field, in order.
    pub fn extensions(&self) -> impl Iterator<Item = Extension<'a>> + '_ {
        self.headers.extensions("sec-websocket-extensions")
    }

    /// Whether the request asks for a WebSocket upgrade at all: some
    /// `Upgrade` field lists `websocket`. Cheap enough to route on; only
    /// [`validate_upgrade`](Self::validate_upgrade) checks the rest.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.headers.has_token("upgrade", "websocket")
    }

    /// Checks the opening handshake requirements of RFC 6455 §4.2.1 and
    /// returns the key to answer with.
    ///
    /// # Errors
    ///
    /// In the order checked; [`HandshakeError::status`] gives the response status:
    /// - [`MethodNotAllowed`](HandshakeError::MethodNotAllowed) (405) unless the method is `GET`;
    /// - [`UnsupportedHttpVersion`](HandshakeError::UnsupportedHttpVersion) (400) for HTTP/1.0;
    /// - [`MissingHost`](HandshakeError::MissingHost) or
    ///   [`DuplicateHeader`](HandshakeError::DuplicateHeader) (400) for zero, empty or several `Host` fields;
    /// - [`NotWebSocketUpgrade`](HandshakeError::NotWebSocketUpgrade) (400) if no `Upgrade` field lists `websocket`;
    /// - [`MissingConnectionUpgrade`](HandshakeError::MissingConnectionUpgrade) (400) if no `Connection` field lists `Upgrade`;
    /// - [`UnsupportedVersion`](HandshakeError::UnsupportedVersion) (426) unless `Sec-WebSocket-Version` is `13`;
    /// - [`DuplicateHeader`](HandshakeError::DuplicateHeader) (400) for a repeated `Sec-WebSocket-Version` or `Sec-WebSocket-Key`;
    /// - [`MissingKey`](HandshakeError::MissingKey) or [`InvalidKey`](HandshakeError::InvalidKey) (400)
    ///   unless `Sec-WebSocket-Key` is the base64 of exactly 16 bytes.
    pub fn validate_upgrade(&self) -> Result<UpgradeKey, HandshakeError> {
        // §4.2.1 item 1: "An HTTP/1.1 or higher GET request".
        if self.method != "GET" {
            return Err(HandshakeError::MethodNotAllowed);
        }
        if self.version < 1 {
            return Err(HandshakeError::UnsupportedHttpVersion);
        }
        // Item 2: "A |Host| header field containing the server's authority."
        // RFC 9112 §3.2: a server "MUST respond with a 400 (Bad Request)" to
        // a request with more than one Host field.
        match self.headers.count("host") {
            0 => return Err(HandshakeError::MissingHost),
            1 => {}
            _ => return Err(HandshakeError::DuplicateHeader("Host")),
        }
        if self.headers.get("host").is_some_and(<[u8]>::is_empty) {
            return Err(HandshakeError::MissingHost);
        }
        // Item 3: "An |Upgrade| header field containing the value
        // "websocket", treated as an ASCII case-insensitive value."
        if !self.is_websocket_upgrade() {
            return Err(HandshakeError::NotWebSocketUpgrade);
        }
        // Item 4: "A |Connection| header field that includes the token
        // "Upgrade", treated as an ASCII case-insensitive value."
        if !self.headers.has_token("connection", "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        // Item 6, checked before the key so that a client speaking another
        // version learns which one we speak even if its key differs too.
        // §4.2.2: if the version is not understood, the server "MUST abort
        // the WebSocket handshake ... and instead send an appropriate HTTP
        // error code (such as 426 Upgrade Required) and a
        // |Sec-WebSocket-Version| header field".
        match self.headers.count("sec-websocket-version") {
            0 => return Err(HandshakeError::UnsupportedVersion),
            1 => {}
            // §11.3.5: it "MUST NOT appear more than once in an HTTP request".
            _ => return Err(HandshakeError::DuplicateHeader("Sec-WebSocket-Version")),
        }
        if self.headers.get("sec-websocket-version") != Some(WEBSOCKET_VERSION.as_bytes()) {
            return Err(HandshakeError::UnsupportedVersion);
        }
        // Item 5: "A |Sec-WebSocket-Key| header field with a base64-encoded
        // value that, when decoded, is 16 bytes in length."
        // §11.3.1: it "MUST NOT appear more than once in an HTTP request".
        let key = match self.headers.count("sec-websocket-key") {
            0 => return Err(HandshakeError::MissingKey),
            1 => self.headers.get("sec-websocket-key").unwrap_or_default(),
            _ => return Err(HandshakeError::DuplicateHeader("Sec-WebSocket-Key")),
        };
        if !is_valid_key(key) {
            return Err(HandshakeError::InvalidKey);
        }
        Ok(UpgradeKey::from_key(key))
    }
}

/// Whether `key` is the padded base64 of exactly 16 bytes: 24 characters, of
/// which the last two are `==`.
fn is_valid_key(key: &[u8]) -> bool {
    // 16 bytes need 24 base64 characters; 24 characters decode to at most 18.
    let mut decoded = [0u8; 18];
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode_slice(key, &mut decoded)
            .is_ok_and(|n| n == 16)
}

/// Plain decimal digits, as RFC 9110 §8.6 requires of `Content-Length`.
fn parse_decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Proof that a request passed [`Request::validate_upgrade`], carrying the
/// `Sec-WebSocket-Accept` value the 101 response needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeKey {
    accept: [u8; 28],
}

impl UpgradeKey {
    /// Derives the accept value from a `Sec-WebSocket-Key` value without
    /// validating it; [`Request::validate_upgrade`] is the checked way.
    pub fn from_key(key: &[u8]) -> Self {
        Self {
            accept: accept_key(key),
        }
    }

    /// The `Sec-WebSocket-Accept` value.
    pub fn accept(&self) -> &str {
        std::str::from_utf8(&self.accept).unwrap_or_default()
    }
}

/// Decodes `%XX` escapes in a query component (RFC 3986 §2.1). `+` is left
/// alone: it means a space only in HTML form encoding.
///
/// Borrows when there is nothing to decode. Returns `None` for a `%` not
/// followed by two hex digits, or if the decoded bytes are not UTF-8.
pub fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = char::from(hex[0]).to_digit(16)?;
            let lo = char::from(hex[1]).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests;
