//! The HTTP/1.1 opening handshake (RFC 6455 §4), sans-IO, for both the server and the client role.
//!
//! Parsing is split from validation because the port that accepts WebSocket
//! upgrades also answers plain HTTP (health checks, metrics, publishing):
//! [`parse_request`] turns bytes into a borrowed [`Request`] that any route can
//! inspect, and only the WebSocket route calls [`Request::validate_upgrade`].
//!
//! ```
//! use shardcast::proto::handshake::{self, HandshakeLimits, Parsed};
//!
//! let bytes = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
//!     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!     Sec-WebSocket-Version: 13\r\n\r\n";
//! let Parsed::Complete { value: request, consumed } =
//!     handshake::parse_request(bytes, &HandshakeLimits::default())?
//! else {
//!     unreachable!("the head is complete");
//! };
//! assert_eq!(consumed, bytes.len());
//! let mut out = Vec::new();
//! match request.validate_upgrade() {
//!     Ok(key) => handshake::write_switching_protocols(&mut out, &key, None, &[]),
//!     Err(err) => err.write_response(&mut out),
//! }
//! assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
//! # Ok::<(), handshake::HandshakeError>(())
//! ```

mod client;
mod error;
mod headers;
mod response;
mod server;

pub use client::{ClientHandshake, Response};
pub use error::HandshakeError;
pub use headers::Extension;
pub use response::{
    reason_phrase, valid_header_name, valid_header_value, write_http_response, write_rejection,
    write_switching_protocols,
};
pub use server::{parse_request, percent_decode, BodyError, Request, UpgradeKey};

/// The GUID appended to the client's key before hashing (RFC 6455 §1.3).
pub const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version this crate speaks (RFC 6455 §4.1: "The value of
/// this header field MUST be 13").
pub const WEBSOCKET_VERSION: &str = "13";

/// Upper bound on [`HandshakeLimits::max_headers`]: the parser's scratch space
/// for header slots lives on the stack, so it has a fixed size.
pub const MAX_HEADERS_CAP: usize = 128;

/// The outcome of feeding bytes to a parser: either it needs more, or it
/// produced a value from the first `consumed` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The head is not complete yet; call again once more bytes arrived.
    Incomplete,
    /// The head is complete.
    Complete {
        /// What was parsed; it may borrow from the input buffer.
        value: T,
        /// Length of the head, terminating blank line included. Bytes after it
        /// (an HTTP body, or a WebSocket frame sent right behind the
        /// handshake) belong to the caller and must not be dropped.
        consumed: usize,
    },
}

impl<T> Parsed<T> {
    /// Whether a value was produced.
    pub fn is_complete(&self) -> bool {
        matches!(self, Parsed::Complete { .. })
    }

    /// Transforms the parsed value, keeping `consumed`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Parsed<U> {
        match self {
            Parsed::Incomplete => Parsed::Incomplete,
            Parsed::Complete { value, consumed } => Parsed::Complete {
                value: f(value),
                consumed,
            },
        }
    }
}

/// Bounds on a request or response head, so a peer cannot make us buffer or
/// scan without limit before the handshake is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeLimits {
    /// Largest accepted head (request line, headers and the blank line), in
    /// bytes. Larger heads fail with [`HandshakeError::HeadTooLarge`] (431) as
    /// soon as this many bytes arrived without the head ending, so a caller
    /// never needs to buffer more than this.
    ///
    /// Default: 8192 (8 KiB), the limit most HTTP servers use.
    pub max_header_bytes: usize,
    /// Largest accepted number of header fields; more fail with
    /// [`HandshakeError::TooManyHeaders`] (431). Values above
    /// [`MAX_HEADERS_CAP`] act as [`MAX_HEADERS_CAP`].
    ///
    /// Default: 64. A browser upgrade request carries about 15.
    pub max_headers: usize,
}

impl HandshakeLimits {
    /// Sets [`max_header_bytes`](Self::max_header_bytes).
    pub const fn with_max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Sets [`max_headers`](Self::max_headers).
    pub const fn with_max_headers(mut self, count: usize) -> Self {
        self.max_headers = count;
        self
    }
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 8 * 1024,
            max_headers: 64,
        }
    }
}

/// Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2):
/// base64 of the SHA-1 of the key followed by [`WEBSOCKET_GUID`].
///
/// `key` is the header value as sent (its base64 text, not the decoded bytes).
/// The result is ASCII.
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    use base64::Engine as _;
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID);
    let digest = sha.digest().bytes();
    let mut out = [0u8; 28];
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(digest, &mut out)
        .expect("20 bytes encode to exactly 28 base64 characters");
    debug_assert_eq!(written, out.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn default_limits() {
        let limits = HandshakeLimits::default();
        assert_eq!(limits.max_header_bytes, 8192);
        assert_eq!(limits.max_headers, 64);
    }

    #[test]
    fn parsed_map_keeps_consumed() {
        let p = Parsed::Complete {
            value: 2,
            consumed: 7,
        };
        assert_eq!(
            p.map(|v| v * 10),
            Parsed::Complete {
                value: 20,
                consumed: 7
            }
        );
        assert!(!Parsed::<u8>::Incomplete.map(|v| v).is_complete());
    }
}
