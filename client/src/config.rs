//! What a client connects to and how it behaves: every field documents its default.

use std::time::Duration;

use crate::error::ConfigError;
use crate::reconnect::{BackoffPolicy, ClosePolicy};
use crate::url::Endpoint;

/// Where the token goes in the opening handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPlacement {
    /// `?token=...` in the request target (what browsers must use).
    Query,
    /// `Authorization: Bearer ...`.
    Header,
    /// An `{"type":"auth","token":...}` message, written first on every
    /// connection (before the resubscribe and anything queued); for paths
    /// where the handshake's query and headers are logged or stripped.
    Message,
}

/// Heartbeat settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Heartbeat {
    /// A WebSocket ping is sent this often. Default: 15 s.
    pub interval: Duration,
    /// A ping not answered within this time marks the connection dead, so a
    /// connection that vanished without a FIN is noticed within
    /// `interval + timeout`. Default: 10 s.
    pub timeout: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Heartbeat {
    /// Pings every `interval`, dead after `timeout` without the pong.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Self { interval, timeout }
    }
}

/// A client's configuration. Build it with [`Config::new`] and the
/// `with_*` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The parsed URL.
    pub endpoint: Endpoint,
    /// Extra request headers (e.g. `Origin`). Default: none.
    pub headers: Vec<(String, String)>,
    /// A token and where it goes. Default: none.
    pub token: Option<(String, TokenPlacement)>,
    /// Subprotocols offered, in preference order. Default: none.
    pub protocols: Vec<String>,
    /// Limit for TCP connect, TLS and the handshake together. Default: 5 s.
    pub connect_timeout: Duration,
    /// The reconnection schedule. Default: [`BackoffPolicy::default`].
    pub backoff: BackoffPolicy,
    /// Which server close codes stop reconnection. Default: [`ClosePolicy::default`].
    pub close_policy: ClosePolicy,
    /// Pings and the dead-connection timeout; `None` disables them (the
    /// client still answers the server's pings). Default: [`Heartbeat::default`].
    pub heartbeat: Option<Heartbeat>,
    /// Messages the outgoing queue holds at most. Default: 1024.
    pub queue_max_messages: usize,
    /// Bytes the outgoing queue holds at most. Default: 1 MiB.
    pub queue_max_bytes: usize,
    /// The largest message accepted from the server. Default: 16 MiB.
    pub max_message_size: usize,
    /// Seeds the random source of the backoff's jitter, so that a test can
    /// predict every wait; `None` seeds it from the OS, which is what keeps
    /// many clients from retrying in step. Default: `None`.
    pub jitter_seed: Option<u64>,
    /// The TLS configuration for `wss://`. Default: Mozilla's root
    /// certificates (webpki-roots), no client certificate.
    #[cfg(feature = "tls")]
    pub tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
}

impl Config {
    /// A configuration with every default, for `url`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Url`] for an invalid URL; [`ConfigError::TlsNotEnabled`]
    /// for `wss://` without the crate feature `tls`.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        let endpoint = Endpoint::parse(url)?;
        if endpoint.secure && !cfg!(feature = "tls") {
            return Err(ConfigError::TlsNotEnabled);
        }
        Ok(Self {
            endpoint,
            headers: Vec::new(),
            token: None,
            protocols: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            backoff: BackoffPolicy::default(),
            close_policy: ClosePolicy::default(),
            heartbeat: Some(Heartbeat::default()),
            queue_max_messages: 1024,
            queue_max_bytes: 1 << 20,
            max_message_size: 16 << 20,
            jitter_seed: None,
            #[cfg(feature = "tls")]
            tls: None,
        })
    }

    /// Adds a request header.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Header`] if the name is empty or holds `:`, whitespace
    /// or control characters, or the value holds CR, LF or NUL.
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, ConfigError> {
        if name.is_empty()
            || name.bytes().any(|b| {
                b == b':' || b.is_ascii_whitespace() || b.is_ascii_control() || !b.is_ascii()
            })
            || value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0'))
        {
            return Err(ConfigError::Header(name.to_owned()));
        }
        self.headers.push((name.to_owned(), value.to_owned()));
        Ok(self)
    }

    /// Sends `token` with every connection, in the query or a header.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Header`] if a header token holds CR, LF or NUL.
    pub fn with_token(
        mut self,
        token: &str,
        placement: TokenPlacement,
    ) -> Result<Self, ConfigError> {
        if token.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
            return Err(ConfigError::Header("token".into()));
        }
        self.token = Some((token.to_owned(), placement));
        Ok(self)
    }

    /// Offers a subprotocol.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Header`] if it is empty or holds a comma, whitespace
    /// or control characters.
    pub fn with_protocol(mut self, protocol: &str) -> Result<Self, ConfigError> {
        if protocol.is_empty()
            || protocol.bytes().any(|b| {
                b == b',' || b.is_ascii_whitespace() || b.is_ascii_control() || !b.is_ascii()
            })
        {
            return Err(ConfigError::Header(protocol.to_owned()));
        }
        self.protocols.push(protocol.to_owned());
        Ok(self)
    }

    /// Sets [`Config::connect_timeout`]. Default: 5 s.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`Config::backoff`]. Default: [`BackoffPolicy::default`].
    pub fn with_backoff(mut self, backoff: BackoffPolicy) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets [`Config::close_policy`]. Default: [`ClosePolicy::default`].
    pub fn with_close_policy(mut self, policy: ClosePolicy) -> Self {
        self.close_policy = policy;
        self
    }

    /// Sets [`Config::heartbeat`]. Default: `Some(Heartbeat::default())`.
    pub fn with_heartbeat(mut self, heartbeat: Option<Heartbeat>) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Sets [`Config::jitter_seed`]. Default: `None` (seeded by the OS).
    pub fn with_jitter_seed(mut self, seed: Option<u64>) -> Self {
        self.jitter_seed = seed;
        self
    }

    /// Sets the outgoing queue's bounds. Default: 1024 messages, 1 MiB.
    pub fn with_queue(mut self, max_messages: usize, max_bytes: usize) -> Self {
        self.queue_max_messages = max_messages;
        self.queue_max_bytes = max_bytes;
        self
    }

    /// Sets [`Config::tls`]. Default: webpki roots.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, tls: std::sync::Arc<tokio_rustls::rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Checks the settings that builder methods do not.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(h) = self.heartbeat {
            if h.interval.is_zero() || h.timeout.is_zero() {
                return Err(ConfigError::Setting(
                    "heartbeat interval and timeout must be > 0",
                ));
            }
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::Setting("connect_timeout must be > 0"));
        }
        if self.backoff.factor.is_nan()
            || self.backoff.factor < 1.0
            || self.backoff.max < self.backoff.base
        {
            return Err(ConfigError::Setting(
                "backoff needs factor >= 1 and max >= base",
            ));
        }
        if self.queue_max_messages == 0 || self.queue_max_bytes == 0 {
            return Err(ConfigError::Setting("queue bounds must be > 0"));
        }
        Ok(())
    }

    /// The request target, with `token` when it goes in the query.
    pub(crate) fn target(&self, token: Option<&(String, TokenPlacement)>) -> String {
        match token {
            Some((t, TokenPlacement::Query)) => self.endpoint.with_query_param("token", t),
            _ => self.endpoint.target.clone(),
        }
    }

    /// Every extra header, `token`'s included when it goes in a header.
    pub(crate) fn all_headers(
        &self,
        token: Option<&(String, TokenPlacement)>,
    ) -> Vec<(String, String)> {
        let mut h = self.headers.clone();
        if let Some((t, TokenPlacement::Header)) = token {
            h.push(("Authorization".into(), format!("Bearer {t}")));
        }
        h
    }
}
