//! Per-core counters, written only by their own core and summed when read (no dependencies).

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter with a single writer (its core): an increment is a plain load
/// and store, not a locked read-modify-write, and readers on other threads
/// see a recent value.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning core may call this.
    #[inline]
    pub fn bump(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Subtracts `n`. Only the owning core may call this.
    #[inline]
    pub fn drop_by(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_sub(n),
            Ordering::Relaxed,
        );
    }

    /// Sets the value (a gauge). Only the owning core may call this.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Handshake rejections by HTTP status.
pub const REJECT_STATUSES: [u16; 10] = [400, 403, 404, 405, 413, 426, 429, 431, 503, 401];

/// One core's counters.
#[derive(Default, Debug)]
#[repr(align(128))]
pub struct CoreStats {
    /// TCP connections accepted.
    pub accepted: Counter,
    /// TCP connections currently held (any state).
    pub sockets: Counter,
    /// Upgraded WebSocket connections currently open.
    pub active: Counter,
    /// Highest `active` seen.
    pub peak: Counter,
    /// Connections upgraded since start.
    pub upgrades: Counter,
    /// Data messages received.
    pub messages_in: Counter,
    /// Bytes received (handshakes included).
    pub bytes_in: Counter,
    /// Data messages queued for sending (direct sends and deliveries).
    pub messages_out: Counter,
    /// Bytes queued for sending (frames × recipients).
    pub bytes_out: Counter,
    /// Bytes written to sockets.
    pub write_bytes: Counter,
    /// Writes to sockets (`sendmsg` calls that wrote something): with
    /// [`frames_written`](Self::frames_written), how many frames one write
    /// carries.
    pub writes: Counter,
    /// Frames (messages and control frames) completely written to sockets.
    pub frames_written: Counter,
    /// Waits of [`Config::flush_gather`](crate::Config::flush_gather) before a step of writes.
    pub gathers: Counter,
    /// Direct path: receives that found every provided buffer in use
    /// (re-armed at once; the bytes wait in the socket meanwhile).
    pub recv_no_buffers: Counter,
    /// Messages compressed (permessage-deflate): with shared compression,
    /// one per publish that some subscriber took compressed, whatever the
    /// number of subscribers and cores; plus one per compressed direct
    /// send, and one per message and connection under context takeover.
    pub compressions: Counter,
    /// Bytes of frames given to the compressor.
    pub compress_in: Counter,
    /// Bytes of the frames it made (a frame that did not shrink counts
    /// its plain size).
    pub compress_out: Counter,
    /// Data messages queued compressed (RSV1), of `messages_out`.
    pub compressed_out: Counter,
    /// Publishes started on this core.
    pub publishes: Counter,
    /// Frames queued for subscribers on this core.
    pub deliveries: Counter,
    /// Messages dropped by the slow-consumer policy.
    pub dropped: Counter,
    /// Messages discarded before being written: sent to a connection that
    /// is closing or gone, thrown away by a slow-consumer close, or lost
    /// with a connection that ended or failed with frames still queued.
    /// With `dropped`, every message queued or attempted and not written
    /// is counted here: written + dropped + discarded = attempted.
    pub discarded: Counter,
    /// Connections closed by the slow-consumer policy.
    pub slow_closes: Counter,
    /// Cross-core publishes that found no subscriber here (interest bucket
    /// shared with another topic, or the last subscriber just left).
    pub fanout_misses: Counter,
    /// Protocol violations (closed with 1002/1007/1009).
    pub protocol_errors: Counter,
    /// Application callbacks that panicked (each closed its connection
    /// with 1011, or answered its request with 500).
    pub handler_panics: Counter,
    /// Connections closed because a message did not complete within
    /// [`Config::message_timeout`](crate::Config::message_timeout).
    pub message_timeouts: Counter,
    /// Connections closed because their partial message would have taken
    /// the core past
    /// [`Config::max_reassembly_per_core`](crate::Config::max_reassembly_per_core).
    pub reassembly_refused: Counter,
    /// Plain HTTP requests answered.
    pub http_requests: Counter,
    /// Handshakes rejected, by status (see [`REJECT_STATUSES`]; last slot:
    /// any other status).
    pub rejected: [Counter; REJECT_STATUSES.len() + 1],
    /// Sizes and capacities of the core's tables, written by the core once
    /// a second (see [`MemoryGauges`]).
    pub memory: [Counter; MemoryGauges::FIELDS],
}

impl CoreStats {
    pub(crate) fn opened(&self) {
        self.accepted.bump(1);
        self.sockets.bump(1);
    }

    pub(crate) fn closed(&self) {
        self.sockets.drop_by(1);
    }

    /// The global slot was already reserved with `Mesh::reserve_slot` when
    /// the socket was accepted.
    pub(crate) fn upgraded(&self) {
        self.upgrades.bump(1);
        self.active.bump(1);
        if self.active.get() > self.peak.get() {
            self.peak.0.store(self.active.get(), Ordering::Relaxed);
        }
    }

    pub(crate) fn closed_upgraded(&self) {
        self.active.drop_by(1);
    }

    pub(crate) fn rejected(&self, status: u16) {
        let i = REJECT_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(REJECT_STATUSES.len());
        self.rejected[i].bump(1);
    }

    /// A plain copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.get(),
            sockets: self.sockets.get(),
            active: self.active.get(),
            peak: self.peak.get(),
            upgrades: self.upgrades.get(),
            messages_in: self.messages_in.get(),
            bytes_in: self.bytes_in.get(),
            messages_out: self.messages_out.get(),
            bytes_out: self.bytes_out.get(),
            write_bytes: self.write_bytes.get(),
            writes: self.writes.get(),
            frames_written: self.frames_written.get(),
            gathers: self.gathers.get(),
            recv_no_buffers: self.recv_no_buffers.get(),
            compressions: self.compressions.get(),
            compress_in: self.compress_in.get(),
            compress_out: self.compress_out.get(),
            compressed_out: self.compressed_out.get(),
            publishes: self.publishes.get(),
            deliveries: self.deliveries.get(),
            dropped: self.dropped.get(),
            discarded: self.discarded.get(),
            slow_closes: self.slow_closes.get(),
            fanout_misses: self.fanout_misses.get(),
            protocol_errors: self.protocol_errors.get(),
            handler_panics: self.handler_panics.get(),
            message_timeouts: self.message_timeouts.get(),
            reassembly_refused: self.reassembly_refused.get(),
            http_requests: self.http_requests.get(),
            rejected: self.rejected.iter().map(Counter::get).collect(),
            memory: MemoryGauges::from_values(std::array::from_fn(|i| self.memory[i].get())),
        }
    }
}

/// Counters of one core, or summed over all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// TCP connections accepted.
    pub accepted: u64,
    /// TCP connections currently held.
    pub sockets: u64,
    /// WebSocket connections currently open.
    pub active: u64,
    /// Highest `active` (for a sum: the sum of per-core peaks).
    pub peak: u64,
    /// Connections upgraded since start.
    pub upgrades: u64,
    /// Data messages received.
    pub messages_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Data messages queued for sending.
    pub messages_out: u64,
    /// Bytes queued for sending.
    pub bytes_out: u64,
    /// Bytes written to sockets.
    pub write_bytes: u64,
    /// Writes to sockets (`sendmsg` calls that wrote something).
    pub writes: u64,
    /// Frames completely written to sockets.
    pub frames_written: u64,
    /// Waits of `flush_gather` before a step of writes.
    pub gathers: u64,
    /// Direct path receives that found no free buffer.
    pub recv_no_buffers: u64,
    /// Messages compressed (see [`CoreStats::compressions`]).
    pub compressions: u64,
    /// Bytes of frames given to the compressor.
    pub compress_in: u64,
    /// Bytes of the frames it made.
    pub compress_out: u64,
    /// Data messages queued compressed.
    pub compressed_out: u64,
    /// Publishes.
    pub publishes: u64,
    /// Frames queued for subscribers.
    pub deliveries: u64,
    /// Messages dropped by the slow-consumer policy.
    pub dropped: u64,
    /// Messages discarded before being written (see [`CoreStats::discarded`]).
    pub discarded: u64,
    /// Connections closed by the slow-consumer policy.
    pub slow_closes: u64,
    /// Cross-core publishes that found no local subscriber.
    pub fanout_misses: u64,
    /// Protocol violations.
    pub protocol_errors: u64,
    /// Application callbacks that panicked.
    pub handler_panics: u64,
    /// Connections closed by the message deadline.
    pub message_timeouts: u64,
    /// Connections closed by the per-core reassembly budget.
    pub reassembly_refused: u64,
    /// Plain HTTP requests answered.
    pub http_requests: u64,
    /// Rejected handshakes by status, in the order of [`REJECT_STATUSES`]
    /// plus one slot for any other status.
    pub rejected: Vec<u64>,
    /// Table sizes and capacities, as of the core's last tick.
    pub memory: MemoryGauges,
}

/// The sizes and capacities of a core's tables, written by the core once a
/// second: what it holds and how much memory it keeps for it, so a table
/// that never gives its memory back shows here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryGauges {
    /// Connections in the connection slab (any state).
    pub connections: u64,
    /// Slots of the connection slab.
    pub connection_slots: u64,
    /// Topics with a local subscriber.
    pub topics: u64,
    /// (subscriber, topic) pairs.
    pub subscriptions: u64,
    /// Entries the registry's topic-name index can hold without growing.
    pub topic_index_capacity: u64,
    /// Slots of the registry's topic table.
    pub topic_slots: u64,
    /// Slots of the registry's per-subscriber lists.
    pub subscriber_lists: u64,
    /// Entries the interest-bucket reference counts can hold.
    pub interest_refs_capacity: u64,
    /// Timer wheel entries, stale ones included.
    pub timer_entries: u64,
    /// Entries the timer wheel's slots can hold without growing.
    pub timer_capacity: u64,
    /// Room in the list of connections waiting to be flushed.
    pub dirty_capacity: u64,
    /// Connections holding a compressor of their own
    /// ([`Compression::Dedicated`](crate::Compression::Dedicated)).
    pub dedicated_compressors: u64,
    /// History topics whose home is this core ([`crate::streams`]).
    pub history_streams: u64,
    /// Bytes of publications those topics keep.
    pub history_bytes: u64,
}

impl MemoryGauges {
    /// Number of fields.
    pub const FIELDS: usize = 14;

    /// The fields' values, in declaration order.
    pub fn values(&self) -> [u64; Self::FIELDS] {
        [
            self.connections,
            self.connection_slots,
            self.topics,
            self.subscriptions,
            self.topic_index_capacity,
            self.topic_slots,
            self.subscriber_lists,
            self.interest_refs_capacity,
            self.timer_entries,
            self.timer_capacity,
            self.dirty_capacity,
            self.dedicated_compressors,
            self.history_streams,
            self.history_bytes,
        ]
    }

    /// The inverse of [`MemoryGauges::values`].
    pub fn from_values(v: [u64; Self::FIELDS]) -> Self {
        Self {
            connections: v[0],
            connection_slots: v[1],
            topics: v[2],
            subscriptions: v[3],
            topic_index_capacity: v[4],
            topic_slots: v[5],
            subscriber_lists: v[6],
            interest_refs_capacity: v[7],
            timer_entries: v[8],
            timer_capacity: v[9],
            dirty_capacity: v[10],
            dedicated_compressors: v[11],
            history_streams: v[12],
            history_bytes: v[13],
        }
    }
}

impl StatsSnapshot {
    /// Adds another core's counters.
    pub fn add(&mut self, o: &StatsSnapshot) {
        self.accepted += o.accepted;
        self.sockets += o.sockets;
        self.active += o.active;
        self.peak += o.peak;
        self.upgrades += o.upgrades;
        self.messages_in += o.messages_in;
        self.bytes_in += o.bytes_in;
        self.messages_out += o.messages_out;
        self.bytes_out += o.bytes_out;
        self.write_bytes += o.write_bytes;
        self.writes += o.writes;
        self.frames_written += o.frames_written;
        self.gathers += o.gathers;
        self.recv_no_buffers += o.recv_no_buffers;
        self.compressions += o.compressions;
        self.compress_in += o.compress_in;
        self.compress_out += o.compress_out;
        self.compressed_out += o.compressed_out;
        self.publishes += o.publishes;
        self.deliveries += o.deliveries;
        self.dropped += o.dropped;
        self.discarded += o.discarded;
        self.slow_closes += o.slow_closes;
        self.fanout_misses += o.fanout_misses;
        self.protocol_errors += o.protocol_errors;
        self.handler_panics += o.handler_panics;
        self.message_timeouts += o.message_timeouts;
        self.reassembly_refused += o.reassembly_refused;
        self.http_requests += o.http_requests;
        if self.rejected.len() < o.rejected.len() {
            self.rejected.resize(o.rejected.len(), 0);
        }
        for (a, b) in self.rejected.iter_mut().zip(&o.rejected) {
            *a += b;
        }
        let (mut m, o) = (self.memory.values(), o.memory.values());
        for (a, b) in m.iter_mut().zip(o) {
            *a += b;
        }
        self.memory = MemoryGauges::from_values(m);
    }

    /// Rejections with `status`.
    pub fn rejected_with(&self, status: u16) -> u64 {
        let i = REJECT_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(REJECT_STATUSES.len());
        self.rejected.get(i).copied().unwrap_or(0)
    }
}
