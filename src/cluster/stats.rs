//! The bridge's counters: written by the bridge thread and the cores, read by anyone (metrics, health).

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};

/// The broker connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    /// Not connected yet, or reconnecting after a loss.
    Connecting,
    /// Connected: publications cross nodes.
    Connected,
    /// The bridge has stopped.
    Stopped,
}

impl BrokerState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => BrokerState::Connected,
            2 => BrokerState::Stopped,
            _ => BrokerState::Connecting,
        }
    }

    /// `connecting`, `connected` or `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerState::Connecting => "connecting",
            BrokerState::Connected => "connected",
            BrokerState::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for BrokerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Live counters of one node's bridge.
#[derive(Debug, Default)]
pub struct ClusterStats {
    state: AtomicU8,
    pub(crate) reconnects: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) dropped_out: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) dropped_in: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) queued: AtomicI64,
    pub(crate) subscriptions: AtomicU64,
}

/// A reading of [`ClusterStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterSnapshot {
    /// The broker connection's state.
    pub state: BrokerState,
    /// Connections re-established after a loss.
    pub reconnects: u64,
    /// This node's publications handed to the broker.
    pub published: u64,
    /// This node's publications not handed to the broker: the bridge's
    /// queue was full, the broker was unreachable, or the frame could not
    /// cross (a compressed or control frame).
    pub dropped_out: u64,
    /// Publications from other nodes delivered to this node's cores.
    pub received: u64,
    /// Messages from the broker refused: not an envelope of this format,
    /// or not UTF-8 where it must be.
    pub dropped_in: u64,
    /// Publications of other nodes this node should have received and did
    /// not, counted from their sequence numbers.
    pub gaps: u64,
    /// Publications waiting in the bridge's queue.
    pub queued: u64,
    /// Topics the node holds a broker subscription for.
    pub subscriptions: u64,
}

impl ClusterStats {
    pub(crate) fn set_state(&self, s: BrokerState) {
        let v = match s {
            BrokerState::Connecting => 0,
            BrokerState::Connected => 1,
            BrokerState::Stopped => 2,
        };
        self.state.store(v, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ClusterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClusterSnapshot {
            state: BrokerState::from_u8(self.state.load(Ordering::Relaxed)),
            reconnects: get(&self.reconnects),
            published: get(&self.published),
            dropped_out: get(&self.dropped_out),
            received: get(&self.received),
            dropped_in: get(&self.dropped_in),
            gaps: get(&self.gaps),
            queued: self.queued.load(Ordering::Relaxed).max(0) as u64,
            subscriptions: get(&self.subscriptions),
        }
    }
}
