//! What one core (or any thread) sends a core, and the read-only view a job sent there gets.

use std::sync::Arc;

use bytes::Bytes;

use super::completion::Tally;
use crate::conn::ConnId;
use crate::conn::Publication;
use crate::proto::CloseCode;

/// Read-only view of a core, for jobs sent with
/// [`ServerHandle::query`](crate::ServerHandle::query).
pub trait CoreView {
    /// The core's index.
    fn core(&self) -> usize;
    /// Open connections on this core (any state).
    fn connections(&self) -> usize;
    /// Topics with at least one subscriber on this core.
    fn topic_count(&self) -> usize;
    /// Subscribers of `topic` on this core.
    fn subscriber_count(&self, topic: &str) -> usize;
    /// Up to `n` of this core's topics with the most subscribers on this
    /// core, most first (ties by name). Costs a pass over the core's topics.
    fn busiest_topics(&self, n: usize) -> Vec<(Arc<str>, usize)>;
    /// (subscriber, topic) pairs on this core.
    fn subscription_total(&self) -> usize;
    /// Timer wheel entries (live and stale).
    fn timer_entries(&self) -> usize;
    /// Bytes queued in the outboxes of this core's connections (not yet
    /// written to their sockets).
    fn queued_bytes(&self) -> usize;
    /// The position and the kept publications (offset, frame; oldest
    /// first) of history topic `topic`, if this core is its home and
    /// holds its stream.
    fn history(&self, topic: &str) -> Option<crate::streams::History> {
        let _ = topic;
        None
    }
    /// The core itself, for [`Ws::visit`](crate::Ws::visit).
    #[doc(hidden)]
    fn core_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// A job run on a core with a view of its state (stats, queries, tests).
pub(crate) type CoreJob = Box<dyn FnOnce(&dyn CoreView) + Send>;

/// What one core (or a thread holding the handle) sends a core.
pub(crate) enum CoreMsg {
    /// Deliver a frame to the local subscribers of a topic.
    Publish {
        /// The topic.
        topic: Arc<str>,
        /// The frame, encoded once by the publisher.
        frame: Publication,
        /// A connection not to deliver to (the publisher).
        exclude: Option<ConnId>,
        /// Where to add the counts, for a counted publish.
        tally: Option<Arc<Tally>>,
    },
    /// Deliver a frame to every open connection of the core but `exclude`.
    Broadcast {
        /// The frame, encoded once by the sender.
        frame: Publication,
        /// A connection not to deliver to.
        exclude: Option<ConnId>,
    },
    /// Send a frame to one connection; a stale id is ignored.
    Send { to: ConnId, frame: Bytes },
    /// Close one connection; a stale id is ignored.
    Close {
        to: ConnId,
        code: CloseCode,
        reason: String,
    },
    /// Answer a plain HTTP request whose response was deferred (the whole
    /// response: status line, headers, body), then half-close.
    HttpReply { to: ConnId, response: Bytes },
    /// Publish to a history topic: sent to the topic's home core, which
    /// gives it its offset, frames it, keeps it and fans it out.
    StreamPublish {
        topic: Arc<str>,
        /// The frame as published (framed again with its position).
        frame: Bytes,
        exclude: Option<ConnId>,
        /// For a counted publish: called with the totals over all cores.
        done: Option<super::Completion>,
    },
    /// Where a subscription to a history topic starts: asked of the
    /// topic's home core by core `from` for topic `index` of its join `seq`.
    StreamJoin {
        from: usize,
        seq: u64,
        index: usize,
        topic: Arc<str>,
        since: crate::streams::Since,
    },
    /// The home core's answer to a [`CoreMsg::StreamJoin`].
    StreamJoined {
        seq: u64,
        index: usize,
        catchup: crate::streams::Catchup,
    },
    /// Run a closure on the core.
    Run(CoreJob),
    /// Stop accepting, close every connection with 1001 and stop.
    Shutdown,
}
