//! Counters of one client, readable at any time from any thread.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// What the client has done, as counted when [`Client::metrics`](crate::Client::metrics) was called.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Text messages received (every server message: deliveries and replies).
    pub messages_in: u64,
    /// Payload bytes of those messages.
    pub bytes_in: u64,
    /// Messages written to a connection (publishes, subscribes, ...).
    pub messages_out: u64,
    /// Payload bytes of those messages.
    pub bytes_out: u64,
    /// How long the current connection has been open; `None` when not connected.
    pub uptime: Option<Duration>,
    /// When the last message arrived.
    pub last_message: Option<SystemTime>,
    /// Round-trip time of the last answered WebSocket ping.
    pub rtt_last: Option<Duration>,
    /// Mean round-trip time over every answered ping.
    pub rtt_avg: Option<Duration>,
    /// Connections established after the first.
    pub reconnects: u64,
    /// Messages of history topics dropped as duplicates: their offset was
    /// not beyond the topic's position in the same epoch (the server does
    /// not send any; counted should one ever arrive).
    pub duplicates: u64,
    /// Messages of history topics known to be missing on an open connection:
    /// offsets skipped between two messages of one epoch (the server's `drop`
    /// slow-consumer policy skips messages for a subscriber too far behind;
    /// they are not recovered).
    pub skipped: u64,
    /// Failed attempts, lost connections and error replies from the server.
    pub errors: u64,
    /// Messages waiting in the outgoing queue.
    pub queue_depth: usize,
    /// Bytes waiting in the outgoing queue.
    pub queue_bytes: usize,
}

/// The live counters; plain relaxed atomics, as nothing is derived from
/// two of them together.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub reconnects: AtomicU64,
    pub duplicates: AtomicU64,
    pub skipped: AtomicU64,
    pub errors: AtomicU64,
    rtt_last_ns: AtomicU64,
    rtt_sum_ns: AtomicU64,
    rtt_count: AtomicU64,
    pub times: Mutex<Times>,
}

#[derive(Debug, Default)]
pub(crate) struct Times {
    pub connected_at: Option<Instant>,
    pub last_message: Option<SystemTime>,
}

impl Metrics {
    pub fn received(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
    }

    pub fn sent(&self, messages: u64, bytes: usize) {
        self.messages_out.fetch_add(messages, Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    pub fn rtt(&self, rtt: Duration) {
        let ns = rtt.as_nanos().min(u64::MAX as u128) as u64;
        self.rtt_last_ns.store(ns, Relaxed);
        self.rtt_sum_ns.fetch_add(ns, Relaxed);
        self.rtt_count.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self, queue_depth: usize, queue_bytes: usize) -> MetricsSnapshot {
        let times = self.times.lock().expect("metrics lock");
        let count = self.rtt_count.load(Relaxed);
        MetricsSnapshot {
            messages_in: self.messages_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            uptime: times.connected_at.map(|t| t.elapsed()),
            last_message: times.last_message,
            rtt_last: (count > 0).then(|| Duration::from_nanos(self.rtt_last_ns.load(Relaxed))),
            rtt_avg: (count > 0)
                .then(|| Duration::from_nanos(self.rtt_sum_ns.load(Relaxed) / count)),
            reconnects: self.reconnects.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            errors: self.errors.load(Relaxed),
            queue_depth,
            queue_bytes,
        }
    }
}
