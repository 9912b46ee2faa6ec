//! One core's state: its connections, topics, timers and outgoing writes; touched only by its own thread.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use slab::Slab;

use crate::config::{Config, SlowConsumerPolicy};
use crate::conn::{sys, Conn, ConnId, SendStatus, State};
use crate::handler::{Handler, PublishResult, Ws};
use crate::proto::{CloseCode, Limits, PreparedFrame};
use crate::pubsub::{Registry, Subscribed, Unsubscribed};
use crate::shard::mesh::{CoreMsg, Done, Tally};
use crate::shard::timer::TimerWheel;
use crate::shard::{Mesh, PublishReport, ServerHandle};

/// Size of the per-core read buffer every readable connection reads into.
pub(crate) const SCRATCH_SIZE: usize = 64 << 10;
/// Frames at most this large are copied together into one write buffer;
/// larger ones go out as their own iovec, shared with every subscriber.
const COALESCE_MAX: usize = 2048;
/// Frames up to this size that arrive from another core are copied once
/// into core-local memory before the per-subscriber clones.
const LOCAL_COPY_MAX: usize = 64 << 10;
/// Bytes one flush of one connection hands the kernel at most.
const WRITE_BATCH: usize = 256 << 10;

/// Read-only view of a core, for jobs sent with [`ServerHandle::run_on`].
pub trait CoreView {
    /// The core's index.
    fn core_id(&self) -> usize;
    /// Open connections on this core (any state).
    fn connections(&self) -> usize;
    /// Topics with at least one subscriber on this core.
    fn topic_count(&self) -> usize;
    /// Subscribers of `topic` on this core.
    fn subscriber_count(&self, topic: &str) -> usize;
    /// (subscriber, topic) pairs on this core.
    fn subscription_total(&self) -> usize;
    /// Timer wheel entries (live and stale).
    fn timer_entries(&self) -> usize;
    /// Bytes queued in the outboxes of this core's connections (not yet
    /// written to their sockets).
    fn queued_bytes(&self) -> usize;
}

/// A single-threaded, edge-style notification: `notify` wakes the one task
/// waiting in `notified`, or makes its next wait return at once.
#[derive(Default)]
pub(crate) struct LocalNotify {
    notified: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl LocalNotify {
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    pub fn notified(&self) -> Notified<'_> {
        Notified(self)
    }
}

pub(crate) struct Notified<'a>(&'a LocalNotify);

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.notified.replace(false) {
            Poll::Ready(())
        } else {
            self.0.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }
}

/// One core.
pub(crate) struct Core<H: Handler> {
    pub id: usize,
    pub mesh: Arc<Mesh>,
    pub handle: ServerHandle,
    pub handler: Arc<H>,
    pub config: Arc<Config>,
    pub limits: Limits,
    pub conns: RefCell<Slab<Conn<H::Data>>>,
    pub registry: RefCell<Registry>,
    /// Local topics per interest bucket: the core's bit in a bucket is set
    /// while this is non-zero.
    bucket_refs: RefCell<FxHashMap<usize, u32>>,
    dirty: RefCell<Vec<u32>>,
    pub flush_wake: LocalNotify,
    pub scratch: RefCell<Vec<u8>>,
    wbuf: RefCell<Vec<u8>>,
    iov: RefCell<Vec<libc::iovec>>,
    plan: RefCell<smallplan::Plan>,
    pub wheel: RefCell<TimerWheel>,
    pub clock: Cell<u64>,
    next_gen: Cell<u32>,
    pub shutting_down: Cell<bool>,
    pub stop: LocalNotify,
    /// Fired when the last connection of a shutting-down core is gone.
    pub drained: LocalNotify,
}

impl<H: Handler> Core<H> {
    pub fn new(
        id: usize,
        mesh: Arc<Mesh>,
        handle: ServerHandle,
        handler: Arc<H>,
        config: Arc<Config>,
    ) -> Self {
        let limits = Limits::default()
            .with_max_frame_size(config.max_frame_size)
            .with_max_message_size(config.max_message_size);
        Self {
            id,
            mesh,
            handle,
            handler,
            limits,
            conns: RefCell::new(Slab::new()),
            registry: RefCell::new(Registry::new()),
            bucket_refs: RefCell::new(FxHashMap::default()),
            dirty: RefCell::new(Vec::new()),
            flush_wake: LocalNotify::default(),
            scratch: RefCell::new(vec![0; SCRATCH_SIZE]),
            wbuf: RefCell::new(Vec::with_capacity(WRITE_BATCH)),
            iov: RefCell::new(Vec::with_capacity(sys::MAX_IOVECS)),
            plan: RefCell::new(smallplan::Plan::default()),
            wheel: RefCell::new(TimerWheel::new(64, 0)),
            clock: Cell::new(0),
            next_gen: Cell::new(1),
            shutting_down: Cell::new(false),
            stop: LocalNotify::default(),
            drained: LocalNotify::default(),
            config,
        }
    }

    /// Notes `n` bytes received on `key`: the idle clock restarts.
    pub fn note_rx(&self, key: u32, n: usize) {
        self.stats().bytes_in.bump(n as u64);
        if let Some(c) = self.conns.borrow_mut().get_mut(key as usize) {
            c.last_rx = self.now();
            c.ping_outstanding = false;
        }
    }

    /// The most a partial frame may make a connection buffer.
    pub fn limits_cap(&self) -> usize {
        self.config.max_frame_size.max(4096) + crate::proto::MAX_HEADER_LEN
    }

    pub fn stats(&self) -> &crate::shard::CoreStats {
        &self.mesh.stats[self.id]
    }

    pub fn now(&self) -> u64 {
        self.clock.get()
    }

    pub fn next_gen(&self) -> u32 {
        let g = self.next_gen.get();
        self.next_gen.set(g.wrapping_add(1).max(1));
        g
    }

    pub fn conn_id(&self, key: u32, gen: u32) -> ConnId {
        ConnId {
            shard: self.id as u16,
            key,
            gen,
        }
    }

    /// Whether `(key, gen)` still names a live connection.
    pub fn is_live(&self, key: u32, gen: u32) -> bool {
        self.conns
            .borrow()
            .get(key as usize)
            .is_some_and(|c| c.gen == gen)
    }

    // ----- sending -----

    /// Queues `frame` for connection `key`, applying the outbox limit.
    pub fn send(&self, key: u32, frame: Bytes) -> SendStatus {
        let mut conns = self.conns.borrow_mut();
        let Some(c) = conns.get_mut(key as usize) else {
            return SendStatus::Dropped;
        };
        if c.state != State::Open || !self.admit(key, c, frame.len()) {
            return SendStatus::Dropped;
        }
        c.queued += frame.len();
        c.outbox.push_back(frame);
        self.stats().messages_out.bump(1);
        self.mark_dirty(key, c);
        if c.queued > self.config.outbox_low_water {
            c.backpressured = true;
            SendStatus::Backpressure
        } else {
            SendStatus::Sent
        }
    }

    /// Whether `len` more bytes fit in `c`'s outbox; if not, applies the
    /// slow-consumer policy and returns false.
    fn admit(&self, key: u32, c: &mut Conn<H::Data>, len: usize) -> bool {
        if c.queued + len <= self.config.outbox_limit || c.queued == 0 {
            return true;
        }
        self.stats().dropped.bump(1);
        match &self.config.slow_consumer {
            SlowConsumerPolicy::DropMessage => {}
            SlowConsumerPolicy::Close(code, reason) => {
                self.stats().slow_closes.bump(1);
                self.begin_close(key, c, *code, reason, true);
            }
        }
        false
    }

    /// Queues the pong owed for a ping. Pongs count against the outbox
    /// limit like messages: a client that floods pings and reads nothing
    /// must not make us hold its answers without bound. Dropping a pong is
    /// allowed (RFC 6455 §5.5.3: only the latest ping needs an answer).
    pub fn send_pong(&self, key: u32, frame: Bytes) {
        let mut conns = self.conns.borrow_mut();
        if let Some(c) = conns.get_mut(key as usize) {
            if c.state != State::Open || !self.admit(key, c, frame.len()) {
                return;
            }
            c.queued += frame.len();
            c.outbox.push_back(frame);
            self.mark_dirty(key, c);
        }
    }

    /// Starts the closing handshake: queues a close frame (after what is
    /// queued, or instead of it when `discard` is set), stops further
    /// sends and shuts our side after it is written.
    pub fn close(&self, key: u32, code: CloseCode, reason: &str) {
        let mut conns = self.conns.borrow_mut();
        if let Some(c) = conns.get_mut(key as usize) {
            if c.state == State::Open {
                self.begin_close(key, c, code, reason, false);
            } else if c.state == State::Handshake {
                sys::shutdown(c.fd, libc::SHUT_RDWR);
            }
        }
    }

    pub(crate) fn begin_close(
        &self,
        key: u32,
        c: &mut Conn<H::Data>,
        code: CloseCode,
        reason: &str,
        discard: bool,
    ) {
        if discard {
            // Keep a partly written frame: the stream must stay well-formed.
            let keep = usize::from(c.head_written > 0);
            while c.outbox.len() > keep {
                c.outbox.pop_back();
            }
            c.queued = c.outbox.front().map_or(0, |f| f.len() - c.head_written);
        }
        let frame = PreparedFrame::close(code, reason).into_bytes();
        c.queued += frame.len();
        c.outbox.push_back(frame);
        c.state = State::Closing;
        c.fin_after_flush = true;
        c.closing_since = self.now();
        c.close_code
            .get_or_insert_with(|| Box::new((code, reason.into())));
        self.mark_dirty(key, c);
        // The peer has the close timeout to answer before we drop it.
        self.wheel.borrow_mut().insert(
            self.now() + crate::conn::read::secs(self.config.close_timeout),
            key,
            c.gen,
        );
    }

    /// Writes a plain HTTP response on a connection that is not (and will
    /// not be) upgraded, then half-closes it. Written directly when the
    /// socket takes it all, the common case; what does not fit (a large
    /// `/metrics` on many cores) goes through the outbox and the FIN
    /// follows it.
    pub(crate) fn write_and_finish(&self, key: u32, response: &[u8]) {
        let mut conns = self.conns.borrow_mut();
        let Some(c) = conns.get_mut(key as usize) else {
            return;
        };
        let sent = sys::send_parts(c.fd, &[response]).unwrap_or(0);
        if sent >= response.len() {
            sys::shutdown(c.fd, libc::SHUT_WR);
            return;
        }
        let rest = Bytes::copy_from_slice(&response[sent..]);
        c.queued += rest.len();
        c.outbox.push_back(rest);
        c.fin_after_flush = true;
        self.mark_dirty(key, c);
    }

    pub(crate) fn mark_dirty(&self, key: u32, c: &mut Conn<H::Data>) {
        if !c.dirty && !c.waiting_writable {
            c.dirty = true;
            let mut d = self.dirty.borrow_mut();
            if d.is_empty() {
                self.flush_wake.notify();
            }
            d.push(key);
        }
    }

    // ----- publishing -----

    /// Delivers `frame` to local subscribers of `topic`.
    pub fn publish_local(
        &self,
        topic: &str,
        frame: &Bytes,
        exclude: Option<u32>,
    ) -> (usize, usize) {
        let registry = self.registry.borrow();
        self.deliver(registry.subscribers(topic), frame, exclude)
    }

    /// Delivers a frame that arrived from another core. Every subscriber's
    /// clone bumps the frame's reference count; shared with other cores, that
    /// count's cache line would bounce between them once per subscriber, so
    /// the frame is first copied once into core-local memory (unless it has
    /// one subscriber here, or is large and has few).
    fn publish_foreign(&self, topic: &str, frame: Bytes, exclude: Option<u32>) -> (usize, usize) {
        let registry = self.registry.borrow();
        let subs = registry.subscribers(topic);
        let n = subs.len();
        let frame = if n > 1 && (frame.len() <= LOCAL_COPY_MAX || n >= 16) {
            Bytes::copy_from_slice(&frame)
        } else {
            frame
        };
        self.deliver(subs, &frame, exclude)
    }

    /// Queues `frame` for each of `subs` but `exclude`: (delivered, dropped).
    fn deliver(&self, subs: &[u32], frame: &Bytes, exclude: Option<u32>) -> (usize, usize) {
        let (mut delivered, mut dropped) = (0, 0);
        for &s in subs {
            if Some(s) == exclude {
                continue;
            }
            match self.send(s, frame.clone()) {
                SendStatus::Dropped => dropped += 1,
                _ => delivered += 1,
            }
        }
        let st = self.stats();
        st.deliveries.bump(delivered as u64);
        st.bytes_out.bump((delivered * frame.len()) as u64);
        (delivered, dropped)
    }

    /// Publishes to every subscriber on every core. Local subscribers get the
    /// frame now; every other core with interest gets one inbox message.
    pub fn publish(
        &self,
        topic: &str,
        frame: Bytes,
        exclude: Option<ConnId>,
        tally: Option<Arc<Tally>>,
    ) -> PublishResult {
        self.stats().publishes.bump(1);
        let bucket = self.mesh.interest.bucket(topic);
        let mut shared_topic: Option<Arc<str>> = None;
        let mut cores = 0;
        self.mesh.interest.for_each_core(bucket, |c| {
            if c != self.id {
                cores += 1;
                let t = shared_topic.get_or_insert_with(|| Arc::from(topic)).clone();
                self.mesh.mailboxes[c].send(CoreMsg::Publish {
                    topic: t,
                    frame: frame.clone(),
                    exclude,
                    tally: tally.clone(),
                });
            }
        });
        let exclude_local = exclude.filter(|e| e.shard() == self.id).map(|e| e.key);
        let (delivered, dropped) = self.publish_local(topic, &frame, exclude_local);
        PublishResult {
            delivered,
            dropped,
            remote_cores: cores,
        }
    }

    /// Publishes like [`Core::publish`] and calls `done` with the totals
    /// over all cores once every core has queued the frame; `done` runs on
    /// the thread of the last core to finish (possibly this one, before
    /// this returns).
    pub fn publish_then(
        &self,
        topic: &str,
        frame: Bytes,
        exclude: Option<ConnId>,
        done: Box<dyn FnOnce(PublishReport) + Send>,
    ) -> PublishResult {
        self.stats().publishes.bump(1);
        let bucket = self.mesh.interest.bucket(topic);
        // Collected first: the tally must know how many cores will answer.
        let mut remote = Vec::new();
        self.mesh.interest.for_each_core(bucket, |c| {
            if c != self.id {
                remote.push(c);
            }
        });
        let tally = Tally::with(remote.len() + 1, Done::Call(done));
        if !remote.is_empty() {
            let t: Arc<str> = Arc::from(topic);
            for &c in &remote {
                self.mesh.mailboxes[c].send(CoreMsg::Publish {
                    topic: t.clone(),
                    frame: frame.clone(),
                    exclude,
                    tally: Some(tally.clone()),
                });
            }
        }
        let exclude_local = exclude.filter(|e| e.shard() == self.id).map(|e| e.key);
        let (delivered, dropped) = self.publish_local(topic, &frame, exclude_local);
        tally.add(delivered, dropped);
        PublishResult {
            delivered,
            dropped,
            remote_cores: remote.len(),
        }
    }

    /// Gives back the memory of tables that emptied or are mostly empty
    /// (hysteresis: at most a quarter full), then publishes their sizes
    /// and capacities to this core's [`MemoryGauges`]. Runs once a second
    /// from the ticker, never on a connection's path.
    ///
    /// Shrinking the connection slab never changes a live key: an empty
    /// slab is replaced, a sparse one only loses its vacant tail. A key is
    /// reused after that as after any close; a stale [`ConnId`] still
    /// cannot reach the new connection because `gen` comes from this
    /// core's counter, which a new slab does not reset.
    ///
    /// Returns the slab's former capacity when it has just been emptied
    /// and replaced: about the peak number of connections the core held.
    ///
    /// [`MemoryGauges`]: crate::MemoryGauges
    pub fn trim(&self) -> Option<usize> {
        use crate::pubsub::registry::sparse;
        let mut gave_back = false;
        let mut emptied = None;
        {
            let mut conns = self.conns.borrow_mut();
            if conns.is_empty() {
                if conns.capacity() > 0 {
                    emptied = Some(conns.capacity());
                    *conns = Slab::new();
                    gave_back = true;
                }
            } else if sparse(conns.len(), conns.capacity()) {
                let before = conns.capacity();
                conns.shrink_to_fit();
                gave_back = conns.capacity() < before;
            }
        }
        self.registry.borrow_mut().shrink();
        {
            let mut refs = self.bucket_refs.borrow_mut();
            if refs.is_empty() || sparse(refs.len(), refs.capacity()) {
                refs.shrink_to_fit();
            }
        }
        {
            let mut d = self.dirty.borrow_mut();
            if d.is_empty() && d.capacity() > 1024 {
                *d = Vec::new();
            }
        }
        {
            // Wheel entries of closed connections stay until their slot
            // comes round (up to the wheel's span); after a wave of closes
            // they would hold the wave's memory that long. Sweep once
            // they outnumber the live connections (each has one or two),
            // or when no connection is left at all.
            let conns = self.conns.borrow();
            let mut wheel = self.wheel.borrow_mut();
            let stale = wheel.len() > 3 * conns.len() + 64;
            if stale || (conns.is_empty() && wheel.capacity() > 0) {
                wheel.retain(|k, g| conns.get(k as usize).is_some_and(|c| c.gen == g));
            }
        }
        if gave_back {
            // Most connections are gone. After the tables, so their memory
            // is part of what goes back.
            crate::alloc::core_emptied();
        }
        self.publish_gauges();
        emptied
    }

    fn publish_gauges(&self) {
        let (registry, wheel, conns) = (
            self.registry.borrow(),
            self.wheel.borrow(),
            self.conns.borrow(),
        );
        let cap = registry.capacity();
        let g = crate::MemoryGauges {
            connections: conns.len() as u64,
            connection_slots: conns.capacity() as u64,
            topics: registry.topic_count() as u64,
            subscriptions: registry.subscription_total() as u64,
            topic_index_capacity: cap.names as u64,
            topic_slots: cap.topics as u64,
            subscriber_lists: cap.subscribers as u64,
            interest_refs_capacity: self.bucket_refs.borrow().capacity() as u64,
            timer_entries: wheel.len() as u64,
            timer_capacity: wheel.capacity() as u64,
            dirty_capacity: self.dirty.borrow().capacity() as u64,
        };
        for (cell, v) in self.stats().memory.iter().zip(g.values()) {
            cell.set(v);
        }
    }

    /// Handles a message from another core.
    pub fn on_core_msg(&self, msg: CoreMsg) {
        match msg {
            CoreMsg::Publish {
                topic,
                frame,
                exclude,
                tally,
            } => {
                let ex = exclude.filter(|e| e.shard() == self.id).map(|e| e.key);
                let (d, x) = self.publish_foreign(&topic, frame, ex);
                if d + x == 0 {
                    self.stats().fanout_misses.bump(1);
                }
                if let Some(t) = tally {
                    t.add(d, x);
                }
            }
            CoreMsg::Send { to, frame } => {
                if self.is_live(to.key, to.gen) {
                    self.send(to.key, frame);
                }
            }
            CoreMsg::Close { to, code, reason } => {
                if self.is_live(to.key, to.gen) {
                    self.close(to.key, code, &reason);
                }
            }
            CoreMsg::HttpReply { to, response } => {
                if self.is_live(to.key, to.gen) {
                    self.write_and_finish(to.key, &response);
                }
            }
            CoreMsg::Run(job) => job(self),
            CoreMsg::Shutdown => {
                self.shutting_down.set(true);
                self.stop.notify();
            }
        }
    }

    // ----- subscriptions -----

    pub fn subscribe(&self, key: u32, topic: &str) -> bool {
        match self.registry.borrow_mut().subscribe(key, topic) {
            Subscribed::Added { first } => {
                if first {
                    let b = self.mesh.interest.bucket(topic);
                    let mut refs = self.bucket_refs.borrow_mut();
                    let n = refs.entry(b).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        self.mesh.interest.set(b, self.id);
                    }
                }
                true
            }
            Subscribed::AlreadySubscribed => false,
        }
    }

    pub fn unsubscribe(&self, key: u32, topic: &str) -> bool {
        match self.registry.borrow_mut().unsubscribe(key, topic) {
            Unsubscribed::Removed { last } => {
                if last {
                    self.topic_emptied(topic);
                }
                true
            }
            Unsubscribed::NotSubscribed => false,
        }
    }

    fn topic_emptied(&self, topic: &str) {
        let b = self.mesh.interest.bucket(topic);
        let mut refs = self.bucket_refs.borrow_mut();
        if let Some(n) = refs.get_mut(&b) {
            *n -= 1;
            if *n == 0 {
                refs.remove(&b);
                self.mesh.interest.clear(b, self.id);
            }
        }
    }

    pub fn remove_subscriptions(&self, key: u32) {
        let mut emptied = Vec::new();
        self.registry
            .borrow_mut()
            .remove_subscriber(key, |t| emptied.push(t.to_owned()));
        for t in emptied {
            self.topic_emptied(&t);
        }
    }

    // ----- callbacks -----

    /// Runs `f` with a [`Ws`] for connection `key`, its data taken out of the
    /// slab for the duration so the callback may touch any other state.
    pub fn with_ws<R>(&self, key: u32, f: impl FnOnce(&mut Ws<'_, H>) -> R) -> Option<R> {
        let (gen, mut data) = {
            let mut conns = self.conns.borrow_mut();
            let c = conns.get_mut(key as usize)?;
            (c.gen, c.data.take()?)
        };
        let r = {
            let mut ws = Ws::new(self, key, gen, &mut data);
            f(&mut ws)
        };
        if let Some(c) = self.conns.borrow_mut().get_mut(key as usize) {
            if c.gen == gen {
                c.data = Some(data);
            }
        }
        Some(r)
    }

    // ----- writing -----

    /// Writes every dirty connection's outbox: one `sendmsg` per connection
    /// per loop turn, however many frames were queued since the last one.
    pub fn flush(self: &std::rc::Rc<Self>) {
        loop {
            let keys = std::mem::take(&mut *self.dirty.borrow_mut());
            if keys.is_empty() {
                break;
            }
            for key in &keys {
                self.flush_conn(*key);
            }
            // Reuse the allocation for the next round.
            let mut d = self.dirty.borrow_mut();
            if d.is_empty() {
                let mut keys = keys;
                keys.clear();
                *d = keys;
            }
        }
    }

    /// Writes connection `key`'s outbox until it is empty or the socket is
    /// full; in the latter case a task waits for writability.
    pub fn flush_conn(self: &std::rc::Rc<Self>, key: u32) {
        let mut drain = false;
        {
            let mut conns = self.conns.borrow_mut();
            let Some(c) = conns.get_mut(key as usize) else {
                return;
            };
            c.dirty = false;
            if c.waiting_writable {
                return;
            }
            let mut wrote_total = 0usize;
            while !c.outbox.is_empty() {
                match self.write_some(c) {
                    Ok(0) => break,
                    Ok(n) => wrote_total += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        c.waiting_writable = true;
                        let stream = c.stream.clone();
                        let gen = c.gen;
                        let core = self.clone();
                        monoio::spawn(async move {
                            let _ = stream.writable(false).await;
                            let mut conns = core.conns.borrow_mut();
                            if let Some(c) = conns.get_mut(key as usize) {
                                if c.gen == gen {
                                    c.waiting_writable = false;
                                    drop(conns);
                                    core.flush_conn(key);
                                }
                            }
                        });
                        break;
                    }
                    Err(_) => {
                        // Peer gone: drop what is queued and wake the read
                        // task, which cleans up.
                        c.outbox.clear();
                        c.queued = 0;
                        c.head_written = 0;
                        sys::shutdown(c.fd, libc::SHUT_RDWR);
                        break;
                    }
                }
            }
            self.stats().write_bytes.bump(wrote_total as u64);
            if c.outbox.is_empty() && c.fin_after_flush {
                c.fin_after_flush = false;
                sys::shutdown(c.fd, libc::SHUT_WR);
            }
            if c.backpressured && c.queued <= self.config.outbox_low_water {
                c.backpressured = false;
                drain = c.state == State::Open;
            }
        }
        if drain {
            let h = self.handler.clone();
            self.with_ws(key, |ws| h.drain(ws));
        }
    }

    /// One `sendmsg` of the head of `c`'s outbox: small frames copied into
    /// one buffer, large shared frames by reference.
    fn write_some(&self, c: &mut Conn<H::Data>) -> std::io::Result<usize> {
        let mut wbuf = self.wbuf.borrow_mut();
        let mut iov = self.iov.borrow_mut();
        wbuf.clear();
        iov.clear();
        // First pass: copy small frames; remember where each run starts so
        // the iovecs can be built after `wbuf` stops growing.
        let mut plan = self.plan.borrow_mut();
        plan.clear();
        let mut total = 0usize;
        for (i, f) in c.outbox.iter().enumerate() {
            let bytes: &[u8] = if i == 0 { &f[c.head_written..] } else { f };
            if plan.len() >= sys::MAX_IOVECS - 1 || total >= WRITE_BATCH {
                break;
            }
            if bytes.len() <= COALESCE_MAX && wbuf.len() + bytes.len() <= wbuf.capacity() {
                let start = wbuf.len();
                wbuf.extend_from_slice(bytes);
                plan.push_copied(start, bytes.len());
            } else {
                plan.push_ref(i);
            }
            total += bytes.len();
        }
        for seg in plan.segments() {
            match seg {
                smallplan::Seg::Copied(start, len) => {
                    iov.push(sys::iovec_of(&wbuf[start..start + len]))
                }
                smallplan::Seg::Ref(i) => {
                    let f = &c.outbox[i];
                    let bytes: &[u8] = if i == 0 { &f[c.head_written..] } else { f };
                    iov.push(sys::iovec_of(bytes));
                }
            }
        }
        let n = sys::send_iovecs(c.fd, &iov)?;
        // Advance over what was written.
        let mut left = n;
        while left > 0 {
            let f = c
                .outbox
                .front()
                .expect("written bytes belong to queued frames");
            let rem = f.len() - c.head_written;
            if left >= rem {
                left -= rem;
                c.outbox.pop_front();
                c.head_written = 0;
            } else {
                c.head_written += left;
                left = 0;
            }
        }
        c.queued -= n;
        if c.outbox.is_empty() {
            // An idle connection keeps no queue memory.
            c.outbox = Default::default();
        }
        if n < total {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

impl<H: Handler> CoreView for Core<H> {
    fn core_id(&self) -> usize {
        self.id
    }
    fn connections(&self) -> usize {
        self.conns.borrow().len()
    }
    fn topic_count(&self) -> usize {
        self.registry.borrow().topic_count()
    }
    fn subscriber_count(&self, topic: &str) -> usize {
        self.registry.borrow().subscribers(topic).len()
    }
    fn subscription_total(&self) -> usize {
        self.registry.borrow().subscription_total()
    }
    fn timer_entries(&self) -> usize {
        self.wheel.borrow().len()
    }
    fn queued_bytes(&self) -> usize {
        self.conns.borrow().iter().map(|(_, c)| c.queued).sum()
    }
}

/// The layout of one gathered write: runs of copied bytes and references to
/// queued frames, merged where adjacent.
mod smallplan {
    #[derive(Clone, Copy)]
    pub enum Seg {
        Copied(usize, usize),
        Ref(usize),
    }

    #[derive(Default)]
    pub struct Plan {
        segs: Vec<Seg>,
    }

    impl Plan {
        pub fn len(&self) -> usize {
            self.segs.len()
        }
        pub fn clear(&mut self) {
            self.segs.clear();
        }
        pub fn push_copied(&mut self, start: usize, len: usize) {
            if let Some(Seg::Copied(s, l)) = self.segs.last_mut() {
                if *s + *l == start {
                    *l += len;
                    return;
                }
            }
            self.segs.push(Seg::Copied(start, len));
        }
        pub fn push_ref(&mut self, i: usize) {
            self.segs.push(Seg::Ref(i));
        }
        pub fn segments(&self) -> impl Iterator<Item = Seg> + '_ {
            self.segs.iter().copied()
        }
    }
}
