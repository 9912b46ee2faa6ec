//! Per-topic history: offsets and epochs assigned by each topic's home core, the last publications kept there, and subscriptions that start from a position.
//!
//! A topic with history (chosen by [`Config::history`](crate::Config::history))
//! has a **home core**, picked by a hash of its name. Every publish to it,
//! from any core or thread, goes to the home core first, which gives it the
//! next offset, frames it once with its position ([`HistoryConfig::with_frame`]),
//! keeps it in the topic's history and then fans it out as any publish: so
//! every subscriber on every core sees one topic's publications in offset
//! order (each core's inbox is FIFO per sender). Topics without history pay
//! nothing: not the hop, not a lookup beyond the policy check.
//!
//! A subscription to such a topic may start from a position
//! ([`Since::Offset`]): the subscriber's core pins its interest in the
//! topic (so the home core sends it every later publication), asks the home
//! core, and drops what arrives for that connection until the answer: the
//! publications after the position up to the home core's latest offset at
//! the moment it answered, or "not recovered". Publications after that
//! arrive after the answer, through the same FIFO inbox, so the switch from
//! history to the live stream has no gap and no duplicate.

pub(crate) mod joins;
mod store;

use std::sync::Arc;
use std::time::Duration;

use crate::proto::PreparedFrame;

pub(crate) use joins::Joins;
pub(crate) use store::Streams;

/// How much history a topic keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Publications kept, at most.
    pub size: usize,
    /// How long a publication is kept.
    pub ttl: Duration,
    /// Bytes of framed publications kept, at most (the oldest go first).
    pub max_bytes: usize,
}

impl HistoryPolicy {
    /// The last `size` publications of the last `ttl`, at most 1 MiB of them.
    pub fn new(size: usize, ttl: Duration) -> Self {
        Self {
            size,
            ttl,
            max_bytes: 1 << 20,
        }
    }

    /// Sets [`max_bytes`](Self::max_bytes).
    pub fn with_max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }
}

/// A topic's position: the offset of its latest publication (0 before the
/// first) in the stream incarnation `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    /// Offset of the latest publication; offsets start at 1 and have no gaps.
    pub offset: u64,
    /// The stream's incarnation: a new one after a restart or once the
    /// history expired, so old offsets are never taken for current ones.
    pub epoch: Arc<str>,
}

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// From the next publication; the answer carries the current position.
    Now,
    /// With the topic's last publication, if it has one in its history
    /// (the current state, for "latest value" subscriptions).
    Latest,
    /// After `offset` of `epoch`: every publication the client missed
    /// since, or none and `recovered: false` when they are no longer all
    /// in the history (or the epoch changed). Never a partial recovery.
    Offset {
        /// The last offset the client has.
        offset: u64,
        /// The epoch it had it in.
        epoch: String,
    },
}

/// How one topic of a [`Ws::join`](crate::Ws::join) started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamJoin {
    /// The topic.
    pub topic: String,
    /// Its position when the subscription switched to the live stream: the
    /// publications that follow have offsets from `position.offset + 1`.
    pub position: StreamPosition,
    /// For [`Since::Offset`]: every missed publication follows (possibly
    /// none). For [`Since::Latest`]: the last publication follows. False:
    /// nothing from the history follows.
    pub recovered: bool,
    /// Publications from the history sent ahead of the live stream.
    pub replayed: usize,
}

/// Which topics keep history: topic → its policy.
type PolicyFn = dyn Fn(&str) -> Option<HistoryPolicy> + Send + Sync;
/// How a publication is framed with its position: (topic, frame, position) → frame.
type FrameFn = dyn Fn(&str, &PreparedFrame, &StreamPosition) -> PreparedFrame + Send + Sync;

/// A history topic's position and what its home core keeps of it:
/// (offset, frame), oldest first.
pub type History = (StreamPosition, Vec<(u64, bytes::Bytes)>);

/// Which topics keep history and how their publications are framed.
#[derive(Clone)]
pub struct HistoryConfig {
    policy: Arc<PolicyFn>,
    frame: Arc<FrameFn>,
    /// Most publications one recovery may return; beyond, it is not
    /// recovered.
    pub max_recovery: usize,
}

impl std::fmt::Debug for HistoryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryConfig")
            .field("max_recovery", &self.max_recovery)
            .finish_non_exhaustive()
    }
}

impl HistoryConfig {
    /// History for the topics `policy` gives a [`HistoryPolicy`]; their
    /// publications are sent as published (the position is then known to
    /// the application through [`StreamJoin`] and
    /// [`ServerHandle::history`](crate::ServerHandle::history) only; see
    /// [`with_frame`](Self::with_frame) to put it in the frame).
    pub fn new(policy: impl Fn(&str) -> Option<HistoryPolicy> + Send + Sync + 'static) -> Self {
        Self {
            policy: Arc::new(policy),
            frame: Arc::new(|_, f, _| f.clone()),
            max_recovery: 1_000,
        }
    }

    /// Frames each publication of a history topic once, on its home core,
    /// from the frame published and its position (e.g. a JSON envelope
    /// with the offset and the epoch). Must be cheap and must not panic
    /// (a panic is caught and the publication sent as published).
    pub fn with_frame(
        mut self,
        frame: impl Fn(&str, &PreparedFrame, &StreamPosition) -> PreparedFrame + Send + Sync + 'static,
    ) -> Self {
        self.frame = Arc::new(frame);
        self
    }

    /// Sets [`max_recovery`](Self::max_recovery). Default: 1,000.
    pub fn with_max_recovery(mut self, n: usize) -> Self {
        self.max_recovery = n;
        self
    }

    /// The policy of `topic`, if it keeps history.
    pub fn policy(&self, topic: &str) -> Option<HistoryPolicy> {
        (self.policy)(topic)
    }

    pub(crate) fn frame(
        &self,
        topic: &str,
        frame: &PreparedFrame,
        pos: &StreamPosition,
    ) -> PreparedFrame {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (self.frame)(topic, frame, pos)
        }))
        .unwrap_or_else(|_| {
            tracing::error!(topic, "the history frame function panicked");
            frame.clone()
        })
    }
}

/// The home core of a history topic among `cores`.
pub(crate) fn home_core(topic: &str, cores: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(topic.as_bytes());
    h.write_u8(0xff);
    let v = h.finish();
    ((v ^ (v >> 32)) % cores.max(1) as u64) as usize
}

/// A fresh epoch: 8 hex digits.
pub(crate) fn new_epoch() -> Arc<str> {
    Arc::from(format!("{:08x}", fastrand::u32(..)).as_str())
}

/// What a home core answers a join with.
#[derive(Debug)]
pub(crate) struct Catchup {
    pub(crate) position: StreamPosition,
    pub(crate) recovered: bool,
    pub(crate) frames: Vec<bytes::Bytes>,
}
