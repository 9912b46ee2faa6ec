//! How a node joins its cluster: the broker's address and the bridge's settings.

use std::str::FromStr;
use std::time::Duration;

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// NATS core pub/sub.
    Nats,
    /// Redis pub/sub.
    Redis,
}

/// A broker's address: `nats://HOST:PORT` or `redis://HOST:PORT[/DB]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    kind: BrokerKind,
    url: String,
}

impl BrokerUrl {
    /// Which broker.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl FromStr for BrokerUrl {
    type Err = ClusterError;

    fn from_str(s: &str) -> Result<Self, ClusterError> {
        let (kind, rest) = if let Some(r) = s.strip_prefix("nats://") {
            (BrokerKind::Nats, r)
        } else if let Some(r) = s.strip_prefix("redis://") {
            (BrokerKind::Redis, r)
        } else {
            return Err(ClusterError::Url(format!(
                "{s:?}: expected nats://HOST:PORT or redis://HOST:PORT"
            )));
        };
        if rest.is_empty() || rest.starts_with('/') || rest.chars().any(char::is_whitespace) {
            return Err(ClusterError::Url(format!("{s:?}: no host")));
        }
        Ok(Self {
            kind,
            url: s.to_owned(),
        })
    }
}

/// Errors setting up a cluster bridge.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The broker address is not `nats://…` or `redis://…`.
    #[error("bad broker address {0}")]
    Url(String),
    /// The subject prefix is not dot-separated tokens free of whitespace,
    /// `*` and `>`.
    #[error("bad broker prefix {0:?}: dot-separated tokens without whitespace, '*' or '>'")]
    Prefix(String),
}

/// How a node joins its cluster.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// The broker every node of the cluster shares.
    pub broker: BrokerUrl,
    /// Subjects (channels) start with this, so that several clusters can
    /// share a broker. Default: `shardcast`.
    pub prefix: String,
    /// Publications waiting for the broker; past it they are dropped and
    /// counted
    /// ([`ClusterSnapshot::dropped_out`](super::ClusterSnapshot::dropped_out)).
    /// Default: 65,536.
    pub queue_capacity: usize,
    /// How long the node keeps a topic's broker subscription after its
    /// last local subscriber left, so churn does not storm the broker.
    /// Default: 1 s.
    pub linger: Duration,
    /// Topics starting with one of these stay on this node (neither
    /// subscribed nor forwarded), such as a server's own statistics.
    /// Default: none.
    pub local_prefixes: Vec<String>,
}

impl ClusterConfig {
    /// The defaults, with `broker`.
    pub fn new(broker: BrokerUrl) -> Self {
        Self {
            broker,
            prefix: "shardcast".to_owned(),
            queue_capacity: 1 << 16,
            linger: Duration::from_secs(1),
            local_prefixes: Vec::new(),
        }
    }

    /// Sets [`prefix`](Self::prefix).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`queue_capacity`](Self::queue_capacity).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Sets [`linger`](Self::linger).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets [`local_prefixes`](Self::local_prefixes).
    pub fn local_prefixes(mut self, prefixes: Vec<String>) -> Self {
        self.local_prefixes = prefixes;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let n: BrokerUrl = "nats://127.0.0.1:4222".parse().unwrap();
        assert_eq!(n.kind(), BrokerKind::Nats);
        let r: BrokerUrl = "redis://localhost:6379/0".parse().unwrap();
        assert_eq!(r.kind(), BrokerKind::Redis);
        for bad in ["", "http://x", "nats://", "redis:///0", "nats://a b"] {
            assert!(bad.parse::<BrokerUrl>().is_err(), "{bad:?}");
        }
    }
}
