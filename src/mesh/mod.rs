//! Between cores: one lock-free mailbox per core, the messages it carries, and counted publishes.
//!
//! Everything here is shared by every core and by [`ServerHandle`]s on any
//! thread, and nothing here is locked on the message path.
//!
//! [`ServerHandle`]: crate::ServerHandle

mod completion;
mod mailbox;
mod msg;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::pubsub::InterestTable;
use crate::stats::CoreStats;

pub use completion::PublishReport;
pub(crate) use completion::{Completion, Tally};
pub(crate) use mailbox::{mailbox, Inbox, Mailbox};
pub(crate) use msg::CoreMsg;
pub use msg::CoreView;

/// What every core shares: the interest table, the mailboxes, the counters
/// and the count of upgraded connections.
pub(crate) struct Mesh {
    interest: Arc<InterestTable>,
    mailboxes: Box<[Mailbox]>,
    stats: Arc<[CoreStats]>,
    /// Connections over all cores, for the connection limit: from accept
    /// until answered, or until the WebSocket closes.
    upgraded: AtomicUsize,
    /// With compression on, messages at least this long get a cell for
    /// their compressed frame when published.
    deflate_threshold: Option<usize>,
    /// The open connections of each client identity
    /// ([`Ws::set_client_id`](crate::Ws::set_client_id)), over all cores.
    /// Locked when a connection is identified and when it closes, and by
    /// [`ServerHandle::send_to_client`](crate::ServerHandle::send_to_client):
    /// never on the message path.
    clients: std::sync::Mutex<rustc_hash::FxHashMap<Arc<str>, Vec<crate::conn::ConnId>>>,
}

impl Mesh {
    /// The mesh of `mailboxes.len()` cores.
    pub(crate) fn new(interest: Arc<InterestTable>, mailboxes: Vec<Mailbox>) -> Self {
        let n = mailboxes.len();
        Self {
            interest,
            mailboxes: mailboxes.into_boxed_slice(),
            stats: (0..n).map(|_| CoreStats::default()).collect(),
            upgraded: AtomicUsize::new(0),
            deflate_threshold: None,
            clients: Default::default(),
        }
    }

    /// Adds `conn` to client `id`'s connections unless it has `limit`
    /// already: Ok(its connections now) or Err(the limit it has).
    pub(crate) fn identify(
        &self,
        id: &str,
        conn: crate::conn::ConnId,
        limit: usize,
    ) -> Result<usize, usize> {
        let mut m = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let list = m.entry(Arc::from(id)).or_default();
        if list.contains(&conn) {
            return Ok(list.len());
        }
        if list.len() >= limit {
            let n = list.len();
            if n == 0 {
                m.remove(id);
            }
            return Err(n);
        }
        list.push(conn);
        Ok(list.len())
    }

    /// `conn` of client `id` closed.
    pub(crate) fn forget_client(&self, id: &str, conn: crate::conn::ConnId) {
        let mut m = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = m.get_mut(id) {
            list.retain(|c| *c != conn);
            if list.is_empty() {
                m.remove(id);
            }
        }
    }

    /// The open connections of client `id`.
    pub(crate) fn client_connections(&self, id: &str) -> Vec<crate::conn::ConnId> {
        let m = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        m.get(id).cloned().unwrap_or_default()
    }

    /// Publications of messages of at least `threshold` bytes carry a cell
    /// for their compressed frame (compression on); `None`: never.
    pub(crate) fn with_deflate(mut self, threshold: Option<usize>) -> Self {
        self.deflate_threshold = threshold;
        self
    }

    /// `frame` (a whole final server frame) as a publication.
    pub(crate) fn publication(&self, frame: bytes::Bytes) -> crate::conn::Publication {
        crate::conn::Publication::new(frame, self.deflate_threshold)
    }

    /// Number of cores.
    pub(crate) fn cores(&self) -> usize {
        self.mailboxes.len()
    }

    /// Which cores want which topics.
    pub(crate) fn interest(&self) -> &InterestTable {
        &self.interest
    }

    /// The interest table, to keep.
    pub(crate) fn interest_arc(&self) -> Arc<InterestTable> {
        self.interest.clone()
    }

    /// Queues `msg` for `core` (ignored for a core that does not exist).
    pub(crate) fn send(&self, core: usize, msg: CoreMsg) {
        if let Some(mb) = self.mailboxes.get(core) {
            mb.send(msg);
        }
    }

    /// Queues a publish for `core` unless its inbox is full (then counted
    /// as refused). Returns whether it was queued.
    pub(crate) fn send_publish(&self, core: usize, msg: CoreMsg) -> bool {
        self.mailboxes
            .get(core)
            .is_some_and(|mb| mb.send_publish(msg))
    }

    /// Publishes each core's inbox refused because it was full.
    pub(crate) fn inbox_refused(&self) -> Vec<u64> {
        self.mailboxes.iter().map(Mailbox::refused).collect()
    }

    /// `core`'s mailbox.
    pub(crate) fn mailbox(&self, core: usize) -> &Mailbox {
        &self.mailboxes[core]
    }

    /// Messages waiting in each core's inbox.
    pub(crate) fn inbox_depths(&self) -> Vec<usize> {
        self.mailboxes.iter().map(Mailbox::len).collect()
    }

    /// `core`'s counters.
    pub(crate) fn stats(&self, core: usize) -> &CoreStats {
        &self.stats[core]
    }

    /// Every core's counters.
    pub(crate) fn all_stats(&self) -> &[CoreStats] {
        &self.stats
    }

    /// Every core's counters, to keep (a core's connection table counts
    /// into its own).
    pub(crate) fn stats_arc(&self) -> Arc<[CoreStats]> {
        self.stats.clone()
    }

    /// Takes one of `max` connection slots over all cores. Reserved before
    /// the application's hook runs: cores accept at the same time, and a
    /// check-then-count would let each of them take the last slot.
    pub(crate) fn reserve_slot(&self, max: usize) -> bool {
        if self.upgraded.fetch_add(1, Ordering::AcqRel) >= max {
            self.upgraded.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back a slot taken with [`Mesh::reserve_slot`].
    pub(crate) fn release_slot(&self) {
        self.upgraded.fetch_sub(1, Ordering::AcqRel);
    }
}
