//! Error types: one enum per layer, one variant per way a step can fail.

use std::io;
use std::time::Duration;

use shardcast::proto::handshake::HandshakeError;
use shardcast::proto::ProtocolError;

/// Why a URL is not a usable WebSocket URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The scheme is neither `ws://` nor `wss://`.
    #[error("the URL must start with ws:// or wss://")]
    Scheme,
    /// The host is missing or is not a name or IP address.
    #[error("the URL has no valid host")]
    Host,
    /// The port is not a number in 1..=65535.
    #[error("the URL's port is not a number in 1..=65535")]
    Port,
    /// `user:password@` is not supported; pass credentials as a token.
    #[error("user information in the URL is not supported; use a token")]
    UserInfo,
    /// RFC 6455 §3 forbids fragments in WebSocket URLs.
    #[error("a WebSocket URL must not have a fragment (#)")]
    Fragment,
    /// A space, control or non-ASCII character (percent-encode it).
    #[error("the URL contains a space, control or non-ASCII character")]
    InvalidCharacter,
}

/// A configuration the client cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL is invalid.
    #[error("invalid URL: {0}")]
    Url(#[from] UrlError),
    /// `wss://` was asked for, but the crate was built without feature `tls`.
    #[error("wss:// needs the crate feature `tls`")]
    TlsNotEnabled,
    /// A header name or value, or a subprotocol, cannot be sent.
    #[error("invalid header or subprotocol: {0}")]
    Header(String),
    /// A setting is out of range (e.g. a zero heartbeat timeout).
    #[error("invalid setting: {0}")]
    Setting(&'static str),
}

/// Why one attempt to open a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The host name did not resolve.
    #[error("could not resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The TCP connection failed (refused, unreachable, reset).
    #[error("TCP connect failed: {0}")]
    Tcp(#[source] io::Error),
    /// Connecting (TCP, TLS and the handshake together) took longer than the
    /// configured timeout.
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    /// The server answered the upgrade with an HTTP status other than 101
    /// (401: token refused, 403: origin refused, 429/503: try later).
    #[error("server refused the WebSocket upgrade with HTTP {0}")]
    Rejected(u16),
    /// The server's answer is not a valid upgrade for this request.
    #[error("invalid handshake response: {0}")]
    Handshake(#[source] HandshakeError),
    /// The connection closed or failed during the handshake.
    #[error("I/O error during the handshake: {0}")]
    Io(#[source] io::Error),
}

impl ConnectError {
    /// Whether another attempt may succeed: refusals that mean "your
    /// credentials or request are wrong" (HTTP 400, 401, 403, 426, 431, an
    /// invalid handshake) are not retried; network errors, timeouts and
    /// 429/503 are.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectError::Rejected(status) => matches!(status, 429 | 500..=599),
            ConnectError::Handshake(_) => false,
            _ => true,
        }
    }
}

/// Why a connection that was open ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// Reading or writing failed (reset, broken pipe, EOF without a Close).
    #[error("I/O error: {0}")]
    Io(#[source] io::Error),
    /// The server broke the WebSocket protocol.
    #[error("protocol error: {0}")]
    Protocol(#[source] ProtocolError),
    /// No pong (or other traffic) within the heartbeat timeout.
    #[error("heartbeat: no pong within {0:?}")]
    HeartbeatTimeout(Duration),
}

/// Errors of the client's operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The message was sent with [`Delivery::Now`](crate::Delivery::Now)
    /// while the client was not connected.
    #[error("not connected")]
    NotConnected,
    /// The offline queue is full; nothing was queued.
    #[error("queue full: {count} messages, {bytes} bytes queued")]
    QueueFull {
        /// Messages waiting.
        count: usize,
        /// Bytes waiting.
        bytes: usize,
    },
    /// The connection was lost after the message was written and before its
    /// acknowledgement came: it may or may not have been delivered.
    #[error("connection lost before the acknowledgement")]
    ConnectionLost,
    /// The server answered with an error.
    #[error("server error {code}: {message}")]
    Server {
        /// The error `code`, e.g. `forbidden`.
        code: String,
        /// The human-readable `message`.
        message: String,
    },
    /// The client was closed, or gave up reconnecting.
    #[error("client closed")]
    Closed,
    /// No answer within the time given.
    #[error("timed out")]
    Timeout,
    /// The `data` to publish is not valid JSON.
    #[error("data is not valid JSON")]
    InvalidJson,
    /// A token holds CR, LF or NUL.
    #[error("the token holds CR, LF or NUL")]
    InvalidToken,
}
