//! The connection table of one core: slab entries, each connection's lifecycle and deadlines, admission onto outboxes and the flush.
//!
//! One cohesive owner, which is why it is one file: every change of a
//! connection's state (handshake → open → closing → gone), every deadline
//! armed for it and every frame queued on it happens in a method here, so
//! no other module writes a connection's fields.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use monoio::net::TcpStream;
use rustc_hash::FxHashMap;
use slab::Slab;

use super::acked::{AckTaps, PositionReader};
use super::deflate::{Choice, ConnDeflate, CoreDeflate};
use super::outbox::{Gather, InFlight, Outbox};
use super::timer::TimerWheel;
use super::Publication;
use super::{secs, ConnId, LocalNotify, SendStatus, State};
use crate::config::{Config, SlowConsumerPolicy};
use crate::proto::{CloseCode, PreparedFrame};
use crate::pubsub::registry::sparse;
use crate::stats::{CoreStats, MemoryGauges};
use crate::sys;
use crate::uring::{DirectIo, Slot};

/// How a connection's socket is held.
enum Sock {
    /// A process descriptor the runtime polls for readiness (the entry's
    /// `fd`).
    Stream(Rc<TcpStream>),
    /// A direct descriptor of a socket ring (the entry's `fd` holds the
    /// packed [`Slot`]); its peer address is in the table's `peers`.
    Direct,
}

/// A direct connection's peer address, kept compact: most are IPv4.
#[derive(Default)]
enum PeerAddr {
    #[default]
    Unknown,
    V4([u8; 4], u16),
    V6(Box<std::net::SocketAddrV6>),
}

impl PeerAddr {
    fn new(a: SocketAddr) -> Self {
        match a {
            SocketAddr::V4(v4) => PeerAddr::V4(v4.ip().octets(), v4.port()),
            SocketAddr::V6(v6) => PeerAddr::V6(Box::new(v6)),
        }
    }
    fn get(&self) -> SocketAddr {
        match self {
            PeerAddr::Unknown => SocketAddr::from(([0, 0, 0, 0], 0)),
            PeerAddr::V4(ip, port) => SocketAddr::from((*ip, *port)),
            PeerAddr::V6(a) => SocketAddr::V6(**a),
        }
    }
}

/// What a frame pushed onto an outbox is; decides its admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A data message: only while open and within the outbox limit;
    /// counted, and reports backpressure.
    Message,
    /// A ping or a pong: only while open and within the outbox limit.
    /// Dropping a pong is allowed (RFC 6455 §5.5.3: only the latest ping
    /// needs an answer), and a client that floods pings and reads nothing
    /// must not make us hold its answers without bound.
    Control,
    /// A close frame, the 101 response or an HTTP answer: always admitted.
    /// At most one per connection, and each ends what may be sent.
    Last,
}

/// A connection's slab entry: everything other tasks on the core may touch.
/// The decoder and any partial frame live in the read task.
struct Conn<D> {
    gen: u32,
    fd: RawFd,
    sock: Sock,
    state: State,
    outbox: Outbox,
    /// Reported backpressure; `drain` fires below the low-water mark.
    /// (The flags live here, not in the outbox, so that all of them pack
    /// into one word of the entry.)
    backpressured: bool,
    /// After the outbox empties, shut down our sending side (close sent).
    fin_after_flush: bool,
    /// Listed in the table's dirty list for the next flush.
    dirty: bool,
    /// A write hit a full socket and a task waits for writability; on
    /// the direct path, a send is in flight.
    waiting_writable: bool,
    /// The `close` callback has run (it runs exactly once).
    close_notified: bool,
    /// A ping is out and unanswered.
    ping_outstanding: bool,
    /// Core clock second of the last byte received.
    last_rx: u64,
    /// Core clock second when closing started.
    closing_since: u32,
    /// One more than the core clock second since which the outbox has been
    /// over the outbox limit without a break; 0 while it is not.
    over_since: u32,
    /// The first close code sent or received, reported to `close`.
    /// Boxed: rare, and kept out of every idle connection's entry.
    close_code: Option<Box<(CloseCode, Box<str>)>>,
    /// The application's data; taken out while a callback runs.
    data: Option<D>,
}

/// How a connection that is going away ended, for the `close` callback.
pub(crate) struct Finished {
    /// It was upgraded and the application has not been told yet.
    pub(crate) was_open: bool,
    /// The first close code sent or received (1006 if none).
    pub(crate) code: CloseCode,
    /// Its reason.
    pub(crate) reason: Box<str>,
}

/// A connection's partly received message: since when, and the bytes its
/// read task holds for it (read buffer and reassembly buffer).
struct Partial {
    gen: u32,
    since: u64,
    held: usize,
}

/// What the flusher must look at: the wake-up for it and the connections
/// whose sockets became writable again. Shared with the tasks that wait
/// for writability, which touch nothing else.
#[derive(Default)]
pub(crate) struct FlushSchedule {
    wake: LocalNotify,
    writable: RefCell<Vec<(u32, u32)>>,
}

impl FlushSchedule {
    /// Fired when the first connection becomes dirty since the last flush.
    pub(crate) fn wake(&self) -> &LocalNotify {
        &self.wake
    }
}

/// Whether a connection over the outbox limit since `over_since` (one
/// more than that core second; 0: not over) has stayed over it for the
/// slow-consumer grace period by `now`.
fn lagging(over_since: u32, now: u64, cfg: &Config) -> bool {
    over_since != 0
        && (now + 1).saturating_sub(u64::from(over_since)) >= secs(cfg.slow_consumer_grace)
}

/// What [`ConnTable::trim`] gave back.
pub(crate) struct Trimmed {
    /// The slab emptied and was replaced; its former capacity (about the
    /// peak number of connections).
    pub(crate) emptied: Option<usize>,
    /// The slab's memory shrank.
    pub(crate) gave_back: bool,
}

/// One core's connections.
pub(crate) struct ConnTable<D> {
    core: usize,
    slab: Slab<Conn<D>>,
    next_gen: u32,
    /// Core clock, in whole seconds since the core started.
    now: u64,
    wheel: TimerWheel,
    dirty: Vec<u32>,
    /// The dirty list a flush in steps is working through, and how far.
    flushing: Vec<u32>,
    flushing_at: usize,
    schedule: Rc<FlushSchedule>,
    gather: Gather,
    /// Connections with a message in progress. A side table, so idle
    /// connections pay nothing for it.
    partials: FxHashMap<u32, Partial>,
    /// Sum of `partials`' held bytes.
    partial_total: usize,
    /// Connections waiting for a deferred HTTP answer: key → generation.
    awaiting: FxHashMap<u32, u32>,
    /// Client identities of the connections that have one.
    clients: FxHashMap<u32, Arc<str>>,
    /// Where the tracked connections' positioned messages end, and what
    /// their peers acknowledged (see [`super::acked`]).
    acked: AckTaps,
    /// Connections whose outbox went over the limit, checked once a second
    /// for sustained lag ([`ConnTable::enforce_lag`]).
    over: Vec<(u32, u32)>,
    /// The compressors (permessage-deflate).
    deflate: CoreDeflate,
    /// The direct path's rings, when this core runs it.
    direct: Option<Rc<DirectIo>>,
    /// Direct sends in flight, by their user data (key and generation:
    /// a slot reused before an old send completes gets its own entry).
    sending: FxHashMap<u64, Box<InFlight>>,
    /// Finished sends' records, for reuse (boxed: a record in flight must
    /// not move, and reuse keeps its allocation).
    #[allow(clippy::vec_box)]
    spare_sends: Vec<Box<InFlight>>,
    /// Direct connections' peer addresses, by key.
    peers: Vec<PeerAddr>,
    cfg: Arc<Config>,
    stats: Arc<[CoreStats]>,
}

impl<D> ConnTable<D> {
    /// Core `core`'s empty table.
    pub(crate) fn new(
        core: usize,
        cfg: Arc<Config>,
        stats: Arc<[CoreStats]>,
        schedule: Rc<FlushSchedule>,
    ) -> Self {
        Self {
            core,
            slab: Slab::new(),
            next_gen: 1,
            now: 0,
            wheel: TimerWheel::new(64, 0),
            dirty: Vec::new(),
            flushing: Vec::new(),
            flushing_at: 0,
            schedule,
            gather: Gather::new(),
            partials: FxHashMap::default(),
            partial_total: 0,
            over: Vec::new(),
            awaiting: FxHashMap::default(),
            clients: FxHashMap::default(),
            acked: AckTaps::default(),
            deflate: CoreDeflate::new(cfg.deflate),
            direct: None,
            sending: FxHashMap::default(),
            spare_sends: Vec::new(),
            peers: Vec::new(),
            cfg,
            stats,
        }
    }

    /// This core's counters.
    pub(crate) fn stats(&self) -> &CoreStats {
        &self.stats[self.core]
    }

    /// Connections held (any state).
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Connections with frames queued since the last flush.
    pub(crate) fn dirty_len(&self) -> usize {
        self.dirty.len() + (self.flushing.len() - self.flushing_at)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    // ----- identity -----

    /// Takes a slot for a just-accepted socket and arms its handshake
    /// deadline. Returns its key.
    pub(crate) fn insert(&mut self, stream: Rc<TcpStream>, fd: RawFd) -> u32 {
        self.insert_sock(Sock::Stream(stream), fd)
    }

    /// The core runs the direct path on these rings.
    pub(crate) fn set_direct(&mut self, direct: Rc<DirectIo>) {
        self.direct = Some(direct);
    }

    /// [`insert`](Self::insert) for a socket accepted into a ring's table.
    pub(crate) fn insert_direct(&mut self, slot: Slot, peer: SocketAddr) -> u32 {
        let key = self.insert_sock(Sock::Direct, slot.pack());
        let i = key as usize;
        if self.peers.len() <= i {
            super::reserve_gently(&mut self.peers, i + 1);
            self.peers.resize_with(i + 1, PeerAddr::default);
        }
        self.peers[i] = PeerAddr::new(peer);
        key
    }

    /// The ring slot of direct connection `key`.
    pub(crate) fn slot(&self, key: u32) -> Option<Slot> {
        let c = self.slab.get(key as usize)?;
        matches!(c.sock, Sock::Direct).then(|| Slot::unpack(c.fd))
    }

    /// The generation of the connection in slot `key`.
    pub(crate) fn gen(&self, key: u32) -> Option<u32> {
        self.slab.get(key as usize).map(|c| c.gen)
    }

    fn insert_sock(&mut self, sock: Sock, fd: RawFd) -> u32 {
        if self.slab.len() == self.slab.capacity() {
            // By an eighth, not by doubling (see `reserve_gently`).
            self.slab.reserve_exact((self.slab.capacity() / 8).max(64));
        }
        let gen = self.next_gen;
        self.next_gen = gen.wrapping_add(1).max(1);
        let now = self.now;
        let key = self.slab.insert(Conn {
            gen,
            fd,
            sock,
            state: State::Handshake,
            outbox: Outbox::default(),
            backpressured: false,
            fin_after_flush: false,
            dirty: false,
            waiting_writable: false,
            close_notified: false,
            ping_outstanding: false,
            last_rx: now,
            closing_since: 0,
            over_since: 0,
            close_code: None,
            data: None,
        }) as u32;
        self.stats().opened();
        self.wheel
            .insert(now + secs(self.cfg.handshake_timeout), key, gen);
        key
    }

    /// The id of the connection in slot `key`.
    pub(crate) fn id(&self, key: u32) -> ConnId {
        ConnId::new(self.core, key, self.slab[key as usize].gen)
    }

    /// Whether `id` still names a live connection of this core.
    pub(crate) fn is_live(&self, id: ConnId) -> bool {
        id.core() == self.core
            && self
                .slab
                .get(id.key() as usize)
                .is_some_and(|c| c.gen == id.gen())
    }

    /// The state of the connection in slot `key`.
    pub(crate) fn state(&self, key: u32) -> Option<State> {
        self.slab.get(key as usize).map(|c| c.state)
    }

    /// The client's address (cached by the runtime after the first call).
    pub(crate) fn peer(&self, key: u32) -> SocketAddr {
        match &self.slab[key as usize].sock {
            Sock::Stream(s) => s
                .peer_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            Sock::Direct => self
                .peers
                .get(key as usize)
                .map_or_else(|| PeerAddr::Unknown.get(), PeerAddr::get),
        }
    }

    /// Shuts `c`'s socket (`how` as for shutdown(2)): at once for a
    /// descriptor, by a submission for a direct one.
    fn shut(direct: &Option<Rc<DirectIo>>, c: &Conn<D>, how: libc::c_int) {
        match (&c.sock, direct) {
            (Sock::Direct, Some(d)) => d.shutdown(Slot::unpack(c.fd), how),
            _ => sys::shutdown(c.fd, how),
        }
    }

    /// Bytes queued for `key` and not yet written.
    pub(crate) fn buffered(&self, key: u32) -> usize {
        self.slab.get(key as usize).map_or(0, |c| c.outbox.queued())
    }

    /// Bytes queued over every connection.
    pub(crate) fn queued_total(&self) -> usize {
        self.slab.iter().map(|(_, c)| c.outbox.queued()).sum()
    }

    /// Timer wheel entries (live and stale).
    pub(crate) fn timer_entries(&self) -> usize {
        self.wheel.len()
    }

    /// Takes the application's data out for a callback: (generation, data).
    pub(crate) fn take_data(&mut self, key: u32) -> Option<(u32, D)> {
        let c = self.slab.get_mut(key as usize)?;
        Some((c.gen, c.data.take()?))
    }

    /// Puts the data back after a callback, if the connection is still
    /// the same one.
    pub(crate) fn put_data(&mut self, key: u32, gen: u32, data: D) {
        if let Some(c) = self.slab.get_mut(key as usize) {
            if c.gen == gen {
                c.data = Some(data);
            }
        }
    }

    // ----- reading -----

    /// Notes `n` bytes received on `key`: the idle clock restarts.
    pub(crate) fn note_rx(&mut self, key: u32, n: usize) {
        self.stats[self.core].bytes_in.bump(n as u64);
        if let Some(c) = self.slab.get_mut(key as usize) {
            c.last_rx = self.now;
            c.ping_outstanding = false;
        }
    }

    /// The read task of `key` holds `held` bytes for a message not yet
    /// complete (`pending`), or none (`pending` false). The first report of
    /// a message starts its completion deadline
    /// ([`Config::message_timeout`]). Returns false, having closed the
    /// connection with 1013, when the message would take the core past
    /// [`Config::max_reassembly_per_core`]; the task then stops decoding.
    pub(crate) fn note_partial(&mut self, key: u32, pending: bool, held: usize) -> bool {
        let Some(c) = self.slab.get(key as usize) else {
            return true;
        };
        let gen = c.gen;
        if !pending || c.state != State::Open {
            self.forget_partial(key);
            return true;
        }
        let old = self.partials.get(&key).map_or(0, |p| p.held);
        let total = self.partial_total - old + held;
        if held > old && total > self.cfg.max_reassembly_per_core {
            self.forget_partial(key);
            self.stats().reassembly_refused.bump(1);
            self.close(
                key,
                CloseCode::TRY_AGAIN_LATER,
                "server busy: partial messages over budget",
            );
            return false;
        }
        self.partial_total = total;
        let now = self.now;
        match self.partials.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().held = held,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Partial {
                    gen,
                    since: now,
                    held,
                });
                self.wheel
                    .insert(now + secs(self.cfg.message_timeout), key, gen);
            }
        }
        true
    }

    fn forget_partial(&mut self, key: u32) {
        if let Some(p) = self.partials.remove(&key) {
            self.partial_total -= p.held;
        }
    }

    // ----- the outbox -----

    /// Queues `frame` for `key`: the one way onto an outbox. Data and
    /// control frames are admitted only while the connection is open and
    /// within the outbox limit; over the limit the slow-consumer policy
    /// applies. The frame goes as it is: data messages that may be
    /// compressed go through [`send`](Self::send) or
    /// [`deliver`](Self::deliver).
    pub(crate) fn push(&mut self, key: u32, frame: Bytes, kind: Kind) -> SendStatus {
        self.enqueue(key, frame, kind, false)
    }

    /// Whether an open connection's outbox admits `len` more bytes of a
    /// message, or of a control frame when `control` (see
    /// [`push`](Self::push)).
    fn admits(&self, c: &Conn<D>, len: usize, control: bool) -> bool {
        let q = c.outbox.queued() + len;
        // Over the limit, only a reader that has stayed over it for
        // the grace period is refused; a burst that a reader is
        // keeping up with is admitted up to the burst limit. Control
        // frames (pongs owed to the peer's own pings, keepalive pings)
        // get no such allowance: a burst of pongs is the peer's doing,
        // and a flood of pings must not make the server hold more than
        // the limit.
        c.state == State::Open
            && (q <= self.cfg.outbox_limit
                || c.outbox.queued() == 0
                || (!control
                    && q <= self.cfg.outbox_burst_limit
                    && !lagging(c.over_since, self.now, &self.cfg)))
    }

    /// [`push`](Self::push); `admitted` skips the admission of a message
    /// the caller has already admitted.
    fn enqueue(&mut self, key: u32, frame: Bytes, kind: Kind, admitted: bool) -> SendStatus {
        let (limit, low) = (self.cfg.outbox_limit, self.cfg.outbox_low_water);
        let now = self.now;
        let Some(c) = self.slab.get(key as usize) else {
            if kind == Kind::Message {
                self.stats[self.core].discarded.bump(1);
            }
            return SendStatus::Dropped;
        };
        let admitted = admitted
            || match kind {
                Kind::Last => true,
                Kind::Message | Kind::Control => self.admits(c, frame.len(), kind == Kind::Control),
            };
        if !admitted {
            if c.state == State::Open {
                self.refuse(key);
            } else if kind == Kind::Message {
                // Sent to a connection that is closing.
                self.stats[self.core].discarded.bump(1);
            }
            return SendStatus::Dropped;
        }
        self.acked.on_queued(key, frame.len());
        let c = &mut self.slab[key as usize];
        c.outbox.push(frame);
        if c.over_since == 0 && c.outbox.queued() > limit {
            c.over_since = now as u32 + 1;
            self.over.push((key, c.gen));
        }
        let mut status = SendStatus::Sent;
        if kind == Kind::Message {
            self.stats[self.core].messages_out.bump(1);
            if c.outbox.queued() > low {
                c.backpressured = true;
                status = SendStatus::Backpressure;
            }
        }
        if !c.dirty && !c.waiting_writable {
            c.dirty = true;
            if self.dirty.is_empty() {
                self.schedule.wake.notify();
            }
            self.dirty.push(key);
        }
        status
    }

    /// Records `key`'s client identity; returns the one it had.
    pub(crate) fn set_client(&mut self, key: u32, id: &str) -> Option<Arc<str>> {
        self.clients.insert(key, Arc::from(id))
    }

    /// `key`'s client identity.
    pub(crate) fn client(&self, key: u32) -> Option<Arc<str>> {
        self.clients.get(&key).cloned()
    }

    /// Takes `key`'s client identity (it is going).
    pub(crate) fn take_client(&mut self, key: u32) -> Option<Arc<str>> {
        if self.clients.is_empty() {
            return None;
        }
        self.clients.remove(&key)
    }

    /// Starts tracking which positioned messages of `key` its peer
    /// acknowledged (see [`super::acked`]); false if the socket cannot
    /// tell.
    pub(crate) fn track_acks(&mut self, key: u32, reader: PositionReader) -> bool {
        let Some(c) = self.slab.get(key as usize) else {
            return false;
        };
        let queued = c.outbox.queued();
        if !matches!(c.sock, Sock::Direct) {
            return self.acked.start(key, c.fd, queued, reader);
        }
        // A direct descriptor is no file descriptor: getsockopt needs one
        // installed for its socket (Linux 6.8), held as long as the
        // tracking; bytes of a send in flight are still queued.
        let in_flight =
            self.sending
                .contains_key(&crate::uring::user_data(crate::uring::Op::Send, key, c.gen));
        let Some(fd) = self
            .direct
            .as_ref()
            .and_then(|d| d.install_fd(Slot::unpack(c.fd)))
        else {
            return false;
        };
        self.acked
            .start_installed(key, fd, queued, in_flight, reader)
    }

    /// Per topic, the last offset of `key` its peer acknowledged (see
    /// [`AckTaps::acked`]).
    pub(crate) fn acked_positions(&mut self, key: u32) -> Option<Vec<(Arc<str>, u64)>> {
        self.acked.acked(key)
    }

    /// Per topic, the last offset of `key` written to its socket (see
    /// [`AckTaps::written`]).
    pub(crate) fn written_positions(&mut self, key: u32) -> Option<Vec<(Arc<str>, u64)>> {
        self.acked.written(key)
    }

    /// Entries `key`'s delivery tracking holds.
    pub(crate) fn acked_held(&self, key: u32) -> usize {
        self.acked.held(key)
    }

    /// Notes what permessage-deflate `key` negotiated.
    pub(crate) fn set_deflate(&mut self, key: u32, deflate: ConnDeflate) {
        if self.slab.contains(key as usize) {
            self.deflate.negotiated(key, deflate);
        }
    }

    /// How a data message `frame` goes to `key`.
    #[inline]
    fn choose(&self, key: u32, frame: &[u8]) -> Choice {
        self.deflate.choose(key, frame)
    }

    /// Queues the data message `frame` (a whole final Text or Binary
    /// frame) for `key`, compressed for it when it negotiated
    /// permessage-deflate and the message is worth it. Returns the status
    /// and the bytes queued.
    pub(crate) fn send(&mut self, key: u32, frame: Bytes) -> (SendStatus, usize) {
        if self.acked.tracks(key) {
            let plain = frame.clone();
            let r = self.send_plain(key, frame);
            if r.0 != SendStatus::Dropped {
                self.acked.on_message(key, &plain);
            }
            return r;
        }
        self.send_plain(key, frame)
    }

    /// [`send`](Self::send) without the delivery tracking.
    fn send_plain(&mut self, key: u32, frame: Bytes) -> (SendStatus, usize) {
        match self.choose(key, &frame) {
            Choice::Plain => {
                let n = frame.len();
                (self.push(key, frame, Kind::Message), n)
            }
            Choice::Alone => {
                let z = self
                    .deflate
                    .compress_alone(&frame, &self.stats[self.core])
                    .unwrap_or(frame);
                self.queue_message(key, z, false)
            }
            Choice::Dedicated => self.send_dedicated(key, frame),
        }
    }

    /// A message through `key`'s own compressor: admitted before it is
    /// compressed, because a compressed message that is then dropped
    /// would leave the compressor's window ahead of the client's.
    fn send_dedicated(&mut self, key: u32, frame: Bytes) -> (SendStatus, usize) {
        let c = &self.slab[key as usize];
        if !self.admits(c, frame.len(), false) {
            let n = frame.len();
            return (self.push(key, frame, Kind::Message), n);
        }
        let z = self
            .deflate
            .compress_dedicated(key, &frame, &self.stats[self.core])
            .unwrap_or(frame);
        self.queue_message(key, z, true)
    }

    /// Queues a data message that may be compressed, counting it as
    /// compressed when it carries RSV1.
    fn queue_message(&mut self, key: u32, frame: Bytes, admitted: bool) -> (SendStatus, usize) {
        let (n, compressed) = (frame.len(), frame[0] & 0x40 != 0);
        let st = self.enqueue(key, frame, Kind::Message, admitted);
        if compressed && st != SendStatus::Dropped {
            self.stats[self.core].compressed_out.bump(1);
        }
        (st, n)
    }

    /// Queues a publish for subscriber `key`: its plain frame, or its
    /// compressed one for a subscriber that negotiated permessage-deflate.
    /// The compressed frame is made once per publish over all cores
    /// (`local` keeps this core's copy of it between subscribers).
    /// Returns the status and the bytes queued.
    pub(crate) fn deliver(
        &mut self,
        key: u32,
        p: &Publication,
        local: &mut Option<Option<Bytes>>,
    ) -> (SendStatus, usize) {
        let r = self.deliver_plain(key, p, local);
        if r.0 != SendStatus::Dropped && self.acked.tracks(key) {
            self.acked.on_message(key, &p.frame);
        }
        r
    }

    /// [`deliver`](Self::deliver) without the delivery tracking.
    fn deliver_plain(
        &mut self,
        key: u32,
        p: &Publication,
        local: &mut Option<Option<Bytes>>,
    ) -> (SendStatus, usize) {
        let Some(cell) = p.deflated.as_deref() else {
            let n = p.frame.len();
            return (self.push(key, p.frame.clone(), Kind::Message), n);
        };
        match self.choose(key, &p.frame) {
            Choice::Plain => {
                let n = p.frame.len();
                (self.push(key, p.frame.clone(), Kind::Message), n)
            }
            Choice::Dedicated => self.send_dedicated(key, p.frame.clone()),
            Choice::Alone => {
                let z = local
                    .get_or_insert_with(|| {
                        let (z, made_here) =
                            self.deflate.shared(cell, &p.frame, &self.stats[self.core]);
                        // Made on another core: copied once into this
                        // core's memory, like a plain frame from there.
                        z.map(|z| {
                            if made_here {
                                z.clone()
                            } else {
                                Bytes::copy_from_slice(z)
                            }
                        })
                    })
                    .clone()
                    .unwrap_or_else(|| p.frame.clone());
                self.queue_message(key, z, false)
            }
        }
    }

    /// Once a second: a connection that has stayed over the outbox limit
    /// for the grace period is a slow consumer even if nothing more is sent
    /// to it; under the close policy it is closed now.
    pub(crate) fn enforce_lag(&mut self) {
        let now = self.now;
        let close = match &self.cfg.slow_consumer {
            SlowConsumerPolicy::Close(code, reason) => Some((*code, reason.clone())),
            SlowConsumerPolicy::DropMessage => None,
        };
        let mut over = std::mem::take(&mut self.over);
        over.retain(|&(key, gen)| {
            let Some(c) = self.slab.get(key as usize) else {
                return false;
            };
            if c.gen != gen || c.over_since == 0 || c.state != State::Open {
                return false;
            }
            match &close {
                Some((code, reason)) if lagging(c.over_since, now, &self.cfg) => {
                    self.stats().slow_closes.bump(1);
                    self.begin_close(key, *code, reason, true);
                    false
                }
                _ => true,
            }
        });
        over.append(&mut self.over);
        self.over = over;
    }

    /// An open connection's outbox is full: counts the drop and applies
    /// the slow-consumer policy.
    fn refuse(&mut self, key: u32) {
        self.stats().dropped.bump(1);
        if let SlowConsumerPolicy::Close(code, reason) = &self.cfg.slow_consumer {
            let (code, reason) = (*code, reason.clone());
            self.stats().slow_closes.bump(1);
            self.begin_close(key, code, &reason, true);
        }
    }

    // ----- lifecycle -----

    /// Completes the upgrade: queues the 101 response, hands the
    /// connection its data and arms its idle (and ping) deadline.
    pub(crate) fn upgrade(&mut self, key: u32, response: Vec<u8>, data: D) {
        self.push(key, Bytes::from(response), Kind::Last);
        let now = self.now;
        let c = &mut self.slab[key as usize];
        c.state = State::Open;
        c.data = Some(data);
        c.last_rx = now;
        let gen = c.gen;
        self.stats().upgraded();
        let (ping, idle) = (secs(self.cfg.ping_interval), secs(self.cfg.idle_timeout));
        let first = if ping > 0 { ping.min(idle) } else { idle };
        self.wheel.insert(now + first, key, gen);
    }

    /// Starts the closing handshake with `code` and `reason` after what is
    /// queued; a connection still in its handshake is just shut.
    pub(crate) fn close(&mut self, key: u32, code: CloseCode, reason: &str) {
        match self.state(key) {
            Some(State::Open) => self.begin_close(key, code, reason, false),
            Some(State::Handshake) => {
                Self::shut(&self.direct, &self.slab[key as usize], libc::SHUT_RDWR)
            }
            _ => {}
        }
    }

    /// [`close`](Self::close), dropping what is queued and not yet
    /// started first (counted as discarded): for a peer that is gone.
    pub(crate) fn close_discarding(&mut self, key: u32, code: CloseCode, reason: &str) {
        if self.state(key) == Some(State::Open) {
            self.begin_close(key, code, reason, true);
        }
    }

    /// The peer's close frame arrived: remember its code and, if we had not
    /// started closing, queue `echo` (the close the decoder says we owe).
    pub(crate) fn peer_closed(
        &mut self,
        key: u32,
        code: CloseCode,
        reason: &str,
        echo: Option<(CloseCode, &str)>,
    ) {
        let c = &mut self.slab[key as usize];
        c.close_code
            .get_or_insert_with(|| Box::new((code, reason.into())));
        if c.state == State::Open {
            if let Some((ec, er)) = echo {
                self.begin_close(key, ec, er, false);
            }
        }
    }

    /// Queues a close frame (after what is queued, or instead of what has
    /// not started when `discard` is set), stops further sends, shuts our
    /// side once it is written and arms the close deadline.
    fn begin_close(&mut self, key: u32, code: CloseCode, reason: &str, discard: bool) {
        let in_flight = self.in_flight_frames(key);
        let c = &mut self.slab[key as usize];
        if discard {
            let n = c.outbox.discard_unsent(in_flight);
            self.stats[self.core].discarded.bump(n as u64);
        }
        c.close_code
            .get_or_insert_with(|| Box::new((code, reason.into())));
        c.fin_after_flush = true;
        self.push(
            key,
            PreparedFrame::close(code, reason).into_bytes(),
            Kind::Last,
        );
        self.enter_closing(key);
    }

    /// Nothing more may be sent: the peer has the close timeout to finish
    /// before the socket is shut.
    fn enter_closing(&mut self, key: u32) {
        let now = self.now;
        let c = &mut self.slab[key as usize];
        c.state = State::Closing;
        c.closing_since = now as u32;
        let gen = c.gen;
        self.wheel
            .insert(now + secs(self.cfg.close_timeout), key, gen);
    }

    /// Answers a plain HTTP request (or refuses a handshake) and half-closes
    /// once the answer is out; the close timeout bounds the rest.
    pub(crate) fn answer_http(&mut self, key: u32, response: &[u8]) {
        self.write_and_finish(key, response);
        self.enter_closing(key);
    }

    /// The application answers this request later
    /// ([`ConnTable::http_reply`]); meanwhile the connection waits, at
    /// most [`Config::http_reply_timeout`], after which it gets a 504.
    pub(crate) fn defer_http(&mut self, key: u32) {
        let now = self.now;
        let c = &mut self.slab[key as usize];
        c.state = State::Closing;
        c.closing_since = now as u32;
        let gen = c.gen;
        self.awaiting.insert(key, gen);
        self.wheel
            .insert(now + secs(self.cfg.http_reply_timeout), key, gen);
    }

    /// The deferred answer to a plain HTTP request; ignored if the request
    /// was already answered (504 after its deadline).
    pub(crate) fn http_reply(&mut self, key: u32, response: &[u8]) {
        if self.awaiting.remove(&key).is_some() {
            self.write_and_finish(key, response);
            self.enter_closing(key);
        }
    }

    /// Writes an interim response (`100 Continue`) directly; one that does
    /// not fit is not worth queueing (the client sends the body anyway
    /// after its own timeout).
    pub(crate) fn write_interim(&mut self, key: u32, response: &[u8]) {
        if matches!(self.slab[key as usize].sock, Sock::Direct) {
            self.push(key, Bytes::copy_from_slice(response), Kind::Last);
            return;
        }
        let _ = sys::send_parts(self.slab[key as usize].fd, &[response]);
    }

    /// Writes `response` directly when the socket takes it all, the common
    /// case; what does not fit (a large `/metrics` on many cores) goes
    /// through the outbox and the FIN follows it.
    fn write_and_finish(&mut self, key: u32, response: &[u8]) {
        let fd = self.slab[key as usize].fd;
        // A direct socket is written by a submission: through the outbox.
        let sent = match self.slab[key as usize].sock {
            Sock::Stream(_) => sys::send_parts(fd, &[response]).unwrap_or(0),
            Sock::Direct => 0,
        };
        if sent >= response.len() {
            sys::shutdown(fd, libc::SHUT_WR);
            return;
        }
        self.slab[key as usize].fin_after_flush = true;
        self.push(key, Bytes::copy_from_slice(&response[sent..]), Kind::Last);
    }

    /// The read task is done with `key`: reports how it ended (once) and
    /// drops what is still queued. The entry stays until
    /// [`ConnTable::remove`], so the `close` callback still has its data.
    pub(crate) fn finish(&mut self, key: u32) -> Finished {
        let c = &mut self.slab[key as usize];
        let was_open = c.data.is_some() && !c.close_notified;
        c.close_notified = true;
        let (code, reason) = c
            .close_code
            .take()
            .map_or((CloseCode::ABNORMAL, "".into()), |b| *b);
        c.state = State::Closing;
        if self.acked.tracks(key) {
            let in_flight = if c.waiting_writable && matches!(c.sock, Sock::Direct) {
                let ud = crate::uring::user_data(crate::uring::Op::Send, key, c.gen);
                self.sending.get(&ud).map_or(0, |f| f.bytes)
            } else {
                0
            };
            self.acked.closing(key, c.outbox.queued(), in_flight);
        }
        let lost = c.outbox.clear();
        self.stats[self.core].discarded.bump(lost as u64);
        if was_open {
            self.stats().closed_upgraded();
        }
        Finished {
            was_open,
            code,
            reason,
        }
    }

    /// Frees `key`'s slot and shuts its socket.
    pub(crate) fn remove(&mut self, key: u32) {
        self.forget_partial(key);
        self.awaiting.remove(&key);
        self.deflate.forget(key);
        self.acked.forget(key);
        let c = self.slab.remove(key as usize);
        match (&c.sock, &self.direct) {
            (Sock::Direct, Some(d)) => {
                d.close(Slot::unpack(c.fd), key, c.gen);
                if let Some(p) = self.peers.get_mut(key as usize) {
                    *p = PeerAddr::Unknown;
                }
            }
            _ => sys::shutdown(c.fd, libc::SHUT_RDWR),
        }
        self.stats().closed();
    }

    /// The keys of the open (upgraded, not closing) connections.
    pub(crate) fn open_keys(&self) -> Vec<u32> {
        self.slab
            .iter()
            .filter(|(_, c)| c.state == State::Open)
            .map(|(k, _)| k as u32)
            .collect()
    }

    /// Server shutdown: close 1001 to every open connection; handshakes in
    /// progress are dropped.
    pub(crate) fn close_all(&mut self) {
        let keys: Vec<u32> = self.slab.iter().map(|(k, _)| k as u32).collect();
        for k in keys {
            self.close(k, CloseCode::GOING_AWAY, "server shutting down");
        }
    }

    // ----- deadlines -----

    /// Advances the core clock to `now` and collects the connections whose
    /// wheel slot came round into `due`.
    pub(crate) fn advance(&mut self, now: u64, due: &mut Vec<(u32, u32)>) {
        self.now = now;
        self.wheel.advance(now, due);
    }

    /// Acts on a connection whose timer came round: handshake timeout,
    /// idle timeout, ping, close timeout. Re-arms it otherwise.
    pub(crate) fn on_timer(&mut self, key: u32, gen: u32) {
        let now = self.now;
        let cfg = self.cfg.clone();
        let Some(c) = self.slab.get_mut(key as usize) else {
            return;
        };
        if c.gen != gen {
            return;
        }
        let next = match c.state {
            State::Closing if self.awaiting.get(&key) == Some(&gen) => {
                let deadline = u64::from(c.closing_since) + secs(cfg.http_reply_timeout);
                if now >= deadline {
                    self.awaiting.remove(&key);
                    let mut out = Vec::new();
                    crate::proto::handshake::write_http_response(
                        &mut out,
                        504,
                        "text/plain; charset=utf-8",
                        &[("Connection", "close")],
                        b"the answer was not ready in time\n",
                    );
                    self.answer_http(key, &out);
                    return;
                }
                deadline
            }
            State::Handshake | State::Closing => {
                let deadline = if c.state == State::Handshake {
                    c.last_rx + secs(cfg.handshake_timeout)
                } else {
                    u64::from(c.closing_since) + secs(cfg.close_timeout)
                };
                if now >= deadline {
                    Self::shut(&self.direct, c, libc::SHUT_RDWR);
                    return;
                }
                deadline
            }
            State::Open => {
                let idle = now.saturating_sub(c.last_rx);
                let idle_limit = secs(cfg.idle_timeout);
                let ping = secs(cfg.ping_interval);
                if idle >= idle_limit {
                    self.begin_close(key, CloseCode::GOING_AWAY, "idle timeout", true);
                    return;
                }
                let mut next = c.last_rx + idle_limit;
                if let Some(p) = self.partials.get(&key).filter(|p| p.gen == gen) {
                    let deadline = p.since + secs(cfg.message_timeout);
                    if now >= deadline {
                        self.forget_partial(key);
                        self.stats().message_timeouts.bump(1);
                        let reason = "message not completed in time";
                        self.begin_close(key, CloseCode::POLICY_VIOLATION, reason, true);
                        return;
                    }
                    next = next.min(deadline);
                }
                if ping > 0 && idle >= ping && !c.ping_outstanding {
                    c.ping_outstanding = true;
                    self.push(key, PreparedFrame::ping(b"").into_bytes(), Kind::Control);
                }
                if ping > 0 {
                    next.min(now + ping)
                } else {
                    next
                }
            }
        };
        self.wheel.insert(next, key, gen);
    }

    // ----- writing -----

    /// Writes connections that got frames since the last flush, and those
    /// whose sockets became writable again: one `sendmsg` per connection
    /// however many frames were queued. Stops after writing `budget`
    /// connections; returns whether some are left. Adds to `drained` the
    /// open connections whose backpressure ended. Between two steps the
    /// core may read more input: a connection not yet written by then
    /// takes its new frames along in the same write, one already written
    /// is written again in a later step.
    pub(crate) fn flush_some(&mut self, budget: usize, drained: &mut Vec<u32>) -> bool {
        let writable = std::mem::take(&mut *self.schedule.writable.borrow_mut());
        for (key, gen) in writable {
            if let Some(c) = self.slab.get_mut(key as usize) {
                if c.gen == gen {
                    c.waiting_writable = false;
                    if self.flush_one(key) {
                        drained.push(key);
                    }
                }
            }
        }
        let mut written = 0;
        loop {
            if self.flushing_at >= self.flushing.len() {
                // This list is done: take the connections dirtied since,
                // reusing its allocation for the next one.
                self.flushing.clear();
                self.flushing_at = 0;
                std::mem::swap(&mut self.flushing, &mut self.dirty);
                if self.flushing.is_empty() {
                    return false;
                }
            }
            if written == budget {
                return true;
            }
            let key = self.flushing[self.flushing_at];
            self.flushing_at += 1;
            if self.flush_one(key) {
                drained.push(key);
            }
            written += 1;
        }
    }

    /// Writes `key`'s outbox until it is empty or the socket is full; in
    /// the latter case a task waits for writability. Returns whether the
    /// connection is open and its backpressure just ended.
    pub(crate) fn flush_one(&mut self, key: u32) -> bool {
        let low = self.cfg.outbox_low_water;
        let Some(c) = self.slab.get_mut(key as usize) else {
            return false;
        };
        c.dirty = false;
        if c.waiting_writable {
            return false;
        }
        if matches!(c.sock, Sock::Direct) {
            return self.send_direct(key);
        }
        let (mut bytes, mut writes, mut frames) = (0usize, 0u64, 0usize);
        while !c.outbox.is_empty() {
            let full = match c.outbox.write_some(c.fd, &mut self.gather) {
                Ok(w) => {
                    bytes += w.bytes;
                    frames += w.frames;
                    writes += u64::from(w.bytes > 0);
                    w.full
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
                Err(_) => {
                    // Peer gone: drop what is queued and shut the socket;
                    // the read task sees it and cleans up.
                    let lost = c.outbox.clear();
                    self.stats[self.core].discarded.bump(lost as u64);
                    sys::shutdown(c.fd, libc::SHUT_RDWR);
                    break;
                }
            };
            if full {
                c.waiting_writable = true;
                let Sock::Stream(stream) = &c.sock else {
                    unreachable!("direct connections are written by submissions")
                };
                let (stream, gen, schedule) = (stream.clone(), c.gen, self.schedule.clone());
                monoio::spawn(async move {
                    let _ = stream.writable(false).await;
                    schedule.writable.borrow_mut().push((key, gen));
                    schedule.wake.notify();
                });
                break;
            }
        }
        let stats = &self.stats[self.core];
        stats.write_bytes.bump(bytes as u64);
        stats.writes.bump(writes);
        stats.frames_written.bump(frames as u64);
        if c.outbox.queued() <= self.cfg.outbox_limit {
            c.over_since = 0;
        }
        if c.outbox.is_empty() && c.fin_after_flush {
            c.fin_after_flush = false;
            sys::shutdown(c.fd, libc::SHUT_WR);
        }
        if c.backpressured && c.outbox.queued() <= low {
            c.backpressured = false;
            return c.state == State::Open;
        }
        false
    }

    /// Hands direct connection `key`'s outbox to the kernel as one
    /// `sendmsg` submission (submitted with the rest of the core's turn).
    /// Until it completes ([`send_done`](Self::send_done)) the connection
    /// gathers frames, which go in the next send. Returns whether the
    /// connection's backpressure just ended (only when nothing was queued).
    fn send_direct(&mut self, key: u32) -> bool {
        let Some(direct) = self.direct.clone() else {
            return false;
        };
        let c = &mut self.slab[key as usize];
        let slot = Slot::unpack(c.fd);
        if c.outbox.is_empty() {
            if c.fin_after_flush {
                c.fin_after_flush = false;
                direct.shutdown(slot, libc::SHUT_WR);
            }
            return false;
        }
        let mut f = self.spare_sends.pop().unwrap_or_else(InFlight::new);
        c.outbox.prepare(&mut f);
        // SAFETY: `f` is boxed and kept in `sending` until the send's
        // completion; its header, iovecs and the bytes they point to (its
        // copy buffer and the frames it holds) do not change meanwhile.
        unsafe { direct.send(slot, key, c.gen, &f.hdr) };
        c.waiting_writable = true;
        self.sending.insert(
            crate::uring::user_data(crate::uring::Op::Send, key, c.gen),
            f,
        );
        false
    }

    /// Submits what the direct path has queued (sends, shutdowns).
    pub(crate) fn submit_direct(&self) {
        if let Some(d) = &self.direct {
            d.submit();
        }
    }

    /// Frames of `key`'s outbox a direct send in flight covers.
    fn in_flight_frames(&self, key: u32) -> usize {
        let Some(c) = self.slab.get(key as usize) else {
            return 0;
        };
        if !c.waiting_writable || !matches!(c.sock, Sock::Direct) {
            return 0;
        }
        let ud = crate::uring::user_data(crate::uring::Op::Send, key, c.gen);
        self.sending.get(&ud).map_or(0, |f| f.frames)
    }

    /// A direct send completed with `res` (bytes written, or an error).
    /// Returns whether the connection is open and its backpressure just
    /// ended.
    pub(crate) fn send_done(&mut self, user_data: u64, res: i32) -> bool {
        let Some(mut f) = self.sending.remove(&user_data) else {
            return false;
        };
        f.recycle();
        if self.spare_sends.len() < 256 {
            self.spare_sends.push(f);
        }
        let Some((_, key, low)) = crate::uring::parse_user_data(user_data) else {
            return false;
        };
        let (limit, low_water) = (self.cfg.outbox_limit, self.cfg.outbox_low_water);
        let Some(c) = self.slab.get_mut(key as usize) else {
            return false;
        };
        if !crate::uring::same_gen(c.gen, low) || !matches!(c.sock, Sock::Direct) {
            return false; // a connection since closed
        }
        c.waiting_writable = false;
        let stats = &self.stats[self.core];
        if res < 0 {
            // Peer gone: drop what is queued and shut the socket; its
            // receive ends and the connection is cleaned up there.
            let lost = c.outbox.clear();
            stats.discarded.bump(lost as u64);
            Self::shut(&self.direct, c, libc::SHUT_RDWR);
            return false;
        }
        let n = (res as usize).min(c.outbox.queued());
        let frames = c.outbox.advance(n);
        self.acked.sent(key, n);
        stats.write_bytes.bump(n as u64);
        stats.writes.bump(1);
        stats.frames_written.bump(frames as u64);
        if c.outbox.queued() <= limit {
            c.over_since = 0;
        }
        if !c.outbox.is_empty() {
            if !c.dirty {
                c.dirty = true;
                if self.dirty.is_empty() {
                    self.schedule.wake.notify();
                }
                self.dirty.push(key);
            }
        } else if c.fin_after_flush {
            c.fin_after_flush = false;
            Self::shut(&self.direct, c, libc::SHUT_WR);
        }
        if c.backpressured && c.outbox.queued() <= low_water {
            c.backpressured = false;
            return c.state == State::Open;
        }
        false
    }

    // ----- memory -----

    /// Gives back the memory of tables that emptied or are mostly empty
    /// (hysteresis: at most a quarter full).
    ///
    /// Shrinking the slab never changes a live key: an empty slab is
    /// replaced, a sparse one only loses its vacant tail. A key is reused
    /// after that as after any close; a stale [`ConnId`] still cannot
    /// reach the new connection because `gen` comes from this table's
    /// counter, which a new slab does not reset.
    pub(crate) fn trim(&mut self) -> Trimmed {
        let mut t = Trimmed {
            emptied: None,
            gave_back: false,
        };
        if self.slab.is_empty() {
            if self.slab.capacity() > 0 {
                t.emptied = Some(self.slab.capacity());
                self.slab = Slab::new();
                self.gather.release();
                t.gave_back = true;
            }
        } else if sparse(self.slab.len(), self.slab.capacity()) {
            let before = self.slab.capacity();
            self.slab.shrink_to_fit();
            t.gave_back = self.slab.capacity() < before;
        }
        // The flush lists keep their room from one flush to the next while
        // the core has connections; a core without any (their keys are
        // stale) or with a list far larger than needed gives it back.
        if self.slab.is_empty() {
            self.peers = Vec::new();
        } else if sparse(self.slab.len(), self.peers.capacity()) {
            // Keys past the slab's last entry are vacant.
            self.peers.truncate(self.slab.capacity());
            self.peers.shrink_to_fit();
        }
        if self.slab.is_empty() {
            self.dirty = Vec::new();
            self.flushing = Vec::new();
            self.flushing_at = 0;
            // The direct path's spare send records (with the room their
            // vectors grew) wait for sends that no connection will make.
            self.spare_sends = Vec::new();
        }
        if self.sending.is_empty() || sparse(self.sending.len(), self.sending.capacity()) {
            self.sending.shrink_to_fit();
        }
        if self.dirty.is_empty() && self.dirty.capacity() > 1024 {
            self.dirty = Vec::new();
        }
        if self.flushing_at >= self.flushing.len() && self.flushing.capacity() > 1024 {
            self.flushing = Vec::new();
            self.flushing_at = 0;
        }
        if self.over.is_empty() && self.over.capacity() > 64 {
            self.over = Vec::new();
        }
        self.deflate.trim();
        if self.clients.capacity() > 64 && self.clients.len() * 4 < self.clients.capacity() {
            self.clients.shrink_to_fit();
        }
        // Wheel entries of closed connections stay until their slot comes
        // round (up to the wheel's span); after a wave of closes they would
        // hold the wave's memory that long. Sweep once they outnumber the
        // live connections (each has one or two), or when none is left.
        let stale = self.wheel.len() > 3 * self.slab.len() + 64;
        if stale || (self.slab.is_empty() && self.wheel.capacity() > 0) {
            let slab = &self.slab;
            self.wheel
                .retain(|k, g| slab.get(k as usize).is_some_and(|c| c.gen == g));
        }
        t
    }

    /// Fills in the connection table's part of the memory gauges.
    pub(crate) fn gauges(&self, g: &mut MemoryGauges) {
        g.connections = self.slab.len() as u64;
        g.connection_slots = self.slab.capacity() as u64;
        g.timer_entries = self.wheel.len() as u64;
        g.timer_capacity = self.wheel.capacity() as u64;
        g.dirty_capacity = (self.dirty.capacity() + self.flushing.capacity()) as u64;
        g.dedicated_compressors = self.deflate.dedicated_len() as u64;
    }
}

impl<D> Drop for ConnTable<D> {
    fn drop(&mut self) {
        // A send still in flight when the core stops may be read by the
        // kernel until its ring is torn down, after this table: leak its
        // buffers rather than free memory the kernel may still read.
        for (_, f) in self.sending.drain() {
            Box::leak(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slab entry is most of what an idle connection costs in user
    /// space; keep it from growing unnoticed.
    #[test]
    fn slab_entry_stays_small() {
        let size = std::mem::size_of::<Conn<()>>();
        assert!(size <= 96, "Conn<()> is {size} bytes");
        eprintln!(
            "Conn<()>: {size} bytes, TcpStream: {}",
            std::mem::size_of::<TcpStream>()
        );
    }
}
