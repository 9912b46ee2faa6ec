//! One core's state: its connection table, its topics, the application's per-core state, and the one way to publish from it.
//!
//! Touched only by its own thread. Generic over the handler type `H`, its
//! per-connection data `D` and its per-core state `L`, without naming the
//! [`Handler`](crate::Handler) trait, which sits above this module.

use std::cell::{Cell, RefCell, RefMut};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::Config;
use rustc_hash::FxHashMap;

use crate::conn::{ConnId, ConnTable, FlushSchedule, LocalNotify, SessionLink};
use crate::fanout::{self, Publication, PublishResult};
use crate::handle::ServerHandle;
use crate::mesh::{Completion, CoreMsg, CoreView, Mesh, Tally};
use crate::proto::Limits;
use crate::pubsub::CoreTopics;
use crate::stats::{CoreStats, MemoryGauges};
use crate::streams::{self, Catchup, HistoryPolicy, Joins, Since, Streams};

/// Size of the per-core read buffer every readable connection reads into.
pub(crate) const SCRATCH_SIZE: usize = 64 << 10;

/// One core.
pub(crate) struct Core<H, D, L> {
    id: usize,
    mesh: Arc<Mesh>,
    handle: ServerHandle,
    handler: Arc<H>,
    config: Arc<Config>,
    limits: Limits,
    conns: RefCell<ConnTable<D>>,
    topics: RefCell<CoreTopics>,
    /// The history topics whose home is this core.
    streams: RefCell<Streams>,
    /// This core's joins waiting for their home cores' answers.
    joins: RefCell<Joins>,
    schedule: Rc<FlushSchedule>,
    /// The application's per-core state.
    local: L,
    /// The read buffer every readable connection of this core reads into.
    /// Where the readiness path reads (see [`crate::sys::OwnPages`] for why not
    /// a `Vec`).
    scratch: RefCell<crate::sys::OwnPages>,
    /// The links of the connections driven by an async session, by key:
    /// empty (and without memory) on a core serving only callbacks.
    sessions: RefCell<FxHashMap<u32, Rc<SessionLink>>>,
    shutting_down: Cell<bool>,
    /// Fired by a shutdown message.
    stop: LocalNotify,
    /// Fired when the last connection of a shutting-down core is gone.
    drained: LocalNotify,
}

impl<H, D, L> Core<H, D, L> {
    pub(crate) fn new(
        id: usize,
        mesh: Arc<Mesh>,
        handle: ServerHandle,
        handler: Arc<H>,
        config: Arc<Config>,
        local: L,
    ) -> Self {
        let limits = Limits::default()
            .with_max_frame_size(config.max_frame_size)
            .with_max_message_size(config.max_message_size);
        let schedule = Rc::new(FlushSchedule::default());
        Self {
            conns: RefCell::new(ConnTable::new(
                id,
                config.clone(),
                mesh.stats_arc(),
                schedule.clone(),
            )),
            topics: RefCell::new(CoreTopics::new(
                id,
                mesh.interest_arc(),
                config.node_link.clone(),
            )),
            streams: RefCell::new(Streams::default()),
            joins: RefCell::new(Joins::default()),
            id,
            handle,
            handler,
            limits,
            schedule,
            local,
            scratch: RefCell::new(crate::sys::OwnPages::new(SCRATCH_SIZE)),
            sessions: RefCell::new(FxHashMap::default()),
            shutting_down: Cell::new(false),
            stop: LocalNotify::default(),
            drained: LocalNotify::default(),
            config,
            mesh,
        }
    }

    /// The core's index.
    pub(crate) fn id(&self) -> usize {
        self.id
    }

    pub(crate) fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    pub(crate) fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    pub(crate) fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn local(&self) -> &L {
        &self.local
    }

    pub(crate) fn stats(&self) -> &CoreStats {
        self.mesh.stats(self.id)
    }

    /// The connection table, borrowed for one step (never across an
    /// `.await` or a callback).
    pub(crate) fn conns(&self) -> RefMut<'_, ConnTable<D>> {
        self.conns.borrow_mut()
    }

    /// The topics, borrowed for one step.
    pub(crate) fn topics(&self) -> RefMut<'_, CoreTopics> {
        self.topics.borrow_mut()
    }

    pub(crate) fn scratch(&self) -> RefMut<'_, crate::sys::OwnPages> {
        self.scratch.borrow_mut()
    }

    /// Registers the session link of connection `key`.
    pub(crate) fn attach_session(&self, key: u32, link: Rc<SessionLink>) {
        self.sessions.borrow_mut().insert(key, link);
    }

    /// The session link of connection `key`, if an async session drives
    /// it. One branch on a core without sessions.
    pub(crate) fn session(&self, key: u32) -> Option<Rc<SessionLink>> {
        let sessions = self.sessions.borrow();
        if sessions.is_empty() {
            return None;
        }
        let link = sessions.get(&key)?;
        let id = ConnId::new(self.id, key, link.gen());
        self.conns.borrow().is_live(id).then(|| link.clone())
    }

    /// Forgets the session link of the connection `key` (it is gone).
    pub(crate) fn detach_session(&self, key: u32) -> Option<Rc<SessionLink>> {
        let mut sessions = self.sessions.borrow_mut();
        if sessions.is_empty() {
            return None;
        }
        let link = sessions.remove(&key);
        if sessions.is_empty() && sessions.capacity() > 64 {
            *sessions = FxHashMap::default();
        }
        link
    }

    pub(crate) fn schedule(&self) -> &FlushSchedule {
        &self.schedule
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// Starts this core's shutdown.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        self.stop.notify();
    }

    pub(crate) fn stop_signal(&self) -> &LocalNotify {
        &self.stop
    }

    pub(crate) fn drained_signal(&self) -> &LocalNotify {
        &self.drained
    }

    /// Publishes to every subscriber of `topic` on every core, but
    /// `exclude`: the one way to publish from a core. Local subscribers get
    /// the frame now; every other core with interest gets one inbox
    /// message. With `done`, it is called with the totals over all cores
    /// once every core has queued the frame, on the thread of the last
    /// core to finish (possibly this one, before this returns).
    ///
    /// A topic with history goes through its home core (this one or one
    /// inbox message away): the result then counts nothing here, and
    /// `done` reports what the home core's fanout reached.
    pub(crate) fn publish(
        &self,
        topic: &str,
        frame: Bytes,
        exclude: Option<ConnId>,
        done: Option<Completion>,
    ) -> PublishResult {
        self.stats().publishes.bump(1);
        if let Some(link) = &self.config.node_link {
            link.publish(topic, &frame);
        }
        if let Some(policy) = self.config.history_of(topic) {
            let home = streams::home_core(topic, self.mesh.cores());
            if home == self.id {
                return self.publish_home(topic, policy, frame, exclude, done);
            }
            // Not refused when the inbox is full, unlike a fanout message:
            // it carries the only way to complete a counted publish, and
            // dropping it would leave a gap in the topic's offsets.
            self.mesh.send(
                home,
                CoreMsg::StreamPublish {
                    topic: Arc::from(topic),
                    frame,
                    exclude,
                    done,
                },
            );
            return PublishResult {
                remote_cores: 1,
                ..PublishResult::default()
            };
        }
        self.fanout(topic, self.mesh.publication(frame), exclude, done)
    }

    /// A publish of history topic `topic`, on its home core: the next
    /// offset, the frame with its position, kept, then fanned out.
    pub(crate) fn publish_home(
        &self,
        topic: &str,
        policy: HistoryPolicy,
        frame: Bytes,
        exclude: Option<ConnId>,
        done: Option<Completion>,
    ) -> PublishResult {
        let history = self.config.history.as_ref().expect("a history topic");
        let (_, framed) =
            self.streams
                .borrow_mut()
                .append(topic, policy, std::time::Instant::now(), |pos| {
                    let plain = crate::proto::PreparedFrame::from_bytes(frame);
                    history.frame(topic, &plain, pos).into_bytes()
                });
        self.fanout(topic, self.mesh.publication(framed), exclude, done)
    }

    fn fanout(
        &self,
        topic: &str,
        frame: Publication,
        exclude: Option<ConnId>,
        done: Option<Completion>,
    ) -> PublishResult {
        let cores = fanout::interested_cores(&self.mesh, topic, Some(self.id));
        let tally = done.map(|d| Tally::new(cores.len() + 1, d));
        fanout::to_cores(&self.mesh, &cores, topic, &frame, exclude, tally.as_ref());
        let exclude_here = exclude.filter(|e| e.core() == self.id).map(|e| e.key());
        let (delivered, dropped) = {
            let topics = self.topics.borrow();
            let mut conns = self.conns.borrow_mut();
            fanout::deliver(&mut conns, topics.subscribers(topic), &frame, exclude_here)
        };
        self.offer_to_joins(topic, &frame.frame);
        if let Some(t) = tally {
            t.add(delivered, dropped);
        }
        PublishResult {
            delivered,
            dropped,
            remote_cores: cores.len(),
        }
    }

    /// A live publication of `topic` reached this core: the joins waiting
    /// for it hold or drop it (see [`Joins::on_live`]); a connection whose
    /// join would hold too much is closed.
    fn offer_to_joins(&self, topic: &str, frame: &Bytes) {
        if self.joins.borrow().is_empty() {
            return;
        }
        let limit = self.config.outbox_burst_limit;
        let over = self.joins.borrow_mut().on_live(topic, frame, limit);
        for o in over {
            self.forget_joins(o.key);
            let mut conns = self.conns.borrow_mut();
            if conns.is_live(ConnId::new(self.id, o.key, o.gen)) {
                conns.stats().slow_closes.bump(1);
                conns.close(
                    o.key,
                    crate::proto::CloseCode::TRY_AGAIN_LATER,
                    "too slow to catch up",
                );
            }
        }
    }

    /// Connection `key` is gone (or gave up): its joins go and release
    /// the interest they pinned.
    pub(crate) fn forget_joins(&self, key: u32) {
        if self.joins.borrow().is_empty() {
            return;
        }
        let released = self.joins.borrow_mut().forget(key);
        let mut topics = self.topics.borrow_mut();
        for t in released {
            topics.unpin(&t);
        }
    }

    /// The joins in progress, for [`crate::api`] to start and finish them.
    pub(crate) fn joins(&self) -> RefMut<'_, Joins> {
        self.joins.borrow_mut()
    }

    /// On the home core of `topic`: where a subscription starting at
    /// `since` begins, and what it replays.
    pub(crate) fn join_home(&self, topic: &str, since: &Since) -> Catchup {
        let policy = self.config.history_of(topic);
        let cap = self.config.history.as_ref().map_or(0, |h| h.max_recovery);
        match policy {
            Some(p) => {
                self.streams
                    .borrow_mut()
                    .join(topic, p, since, cap, std::time::Instant::now())
            }
            // Not (or no longer) a history topic: no position to give.
            None => Catchup {
                position: streams::StreamPosition {
                    offset: 0,
                    epoch: Arc::from(""),
                },
                recovered: false,
                frames: Vec::new(),
            },
        }
    }

    /// Sends `frame` to every open connection on every core but `exclude`:
    /// local connections now, every other core one inbox message.
    pub(crate) fn broadcast(&self, frame: Bytes, exclude: Option<ConnId>) -> PublishResult {
        self.stats().publishes.bump(1);
        let frame = self.mesh.publication(frame);
        let remote_cores = fanout::broadcast_to_cores(&self.mesh, Some(self.id), &frame, exclude);
        let (delivered, dropped) = self.broadcast_here(&frame, exclude);
        PublishResult {
            delivered,
            dropped,
            remote_cores,
        }
    }

    /// Delivers a broadcast from another core (or the handle) to this
    /// core's open connections.
    pub(crate) fn deliver_broadcast(&self, frame: Publication, exclude: Option<ConnId>) {
        let n = self.conns.borrow().len();
        let frame = frame.localize(n);
        self.broadcast_here(&frame, exclude);
    }

    fn broadcast_here(&self, frame: &Publication, exclude: Option<ConnId>) -> (usize, usize) {
        let exclude_here = exclude.filter(|e| e.core() == self.id).map(|e| e.key());
        let mut conns = self.conns.borrow_mut();
        let keys = conns.open_keys();
        fanout::deliver(&mut conns, &keys, frame, exclude_here)
    }

    /// Delivers a frame another core published to this core's subscribers.
    pub(crate) fn deliver_remote(
        &self,
        topic: &str,
        frame: Publication,
        exclude: Option<ConnId>,
        tally: Option<Arc<Tally>>,
    ) {
        let exclude_here = exclude.filter(|e| e.core() == self.id).map(|e| e.key());
        let (delivered, dropped, frame) = {
            let topics = self.topics.borrow();
            let subs = topics.subscribers(topic);
            let frame = frame.localize(subs.len());
            let mut conns = self.conns.borrow_mut();
            let (d, dr) = fanout::deliver(&mut conns, subs, &frame, exclude_here);
            (d, dr, frame)
        };
        if delivered + dropped == 0 && self.joins.borrow().is_empty() {
            self.stats().fanout_misses.bump(1);
        }
        // The core-local copy, when a join holds it.
        self.offer_to_joins(topic, &frame.frame);
        if let Some(t) = tally {
            t.add(delivered, dropped);
        }
    }

    /// Gives back the memory of tables that emptied or are mostly empty,
    /// then publishes their sizes and capacities to this core's
    /// [`MemoryGauges`]. Runs once a second from the ticker, never on a
    /// connection's path. Returns the slab's former capacity when it has
    /// just been emptied and replaced: about the peak number of
    /// connections the core held.
    pub(crate) fn trim(&self) -> Option<usize> {
        let trimmed = self.conns.borrow_mut().trim();
        self.topics.borrow_mut().shrink();
        self.streams.borrow_mut().expire(std::time::Instant::now());
        if trimmed.emptied.is_some() {
            // No connection reads into it until the next one arrives.
            self.scratch.borrow_mut().release();
        }
        if trimmed.gave_back {
            // Most connections are gone. After the tables, so their memory
            // is part of what goes back.
            crate::alloc::core_emptied();
        }
        let mut g = MemoryGauges::default();
        self.conns.borrow().gauges(&mut g);
        let topics = self.topics.borrow();
        let cap = topics.capacity();
        g.topics = topics.registry().topic_count() as u64;
        g.subscriptions = topics.registry().subscription_total() as u64;
        g.topic_index_capacity = cap.names as u64;
        g.topic_slots = cap.topics as u64;
        g.subscriber_lists = cap.subscribers as u64;
        g.interest_refs_capacity = topics.refs_capacity() as u64;
        let streams = self.streams.borrow();
        g.history_streams = streams.len() as u64;
        g.history_bytes = streams.bytes() as u64;
        for (cell, v) in self.stats().memory.iter().zip(g.values()) {
            cell.set(v);
        }
        trimmed.emptied
    }
}

impl<H: 'static, D: 'static, L: 'static> CoreView for Core<H, D, L> {
    fn core(&self) -> usize {
        self.id
    }
    fn connections(&self) -> usize {
        self.conns.borrow().len()
    }
    fn topic_count(&self) -> usize {
        self.topics.borrow().registry().topic_count()
    }
    fn subscriber_count(&self, topic: &str) -> usize {
        self.topics.borrow().subscribers(topic).len()
    }
    fn busiest_topics(&self, n: usize) -> Vec<(Arc<str>, usize)> {
        self.topics.borrow().registry().busiest(n)
    }
    fn subscription_total(&self) -> usize {
        self.topics.borrow().registry().subscription_total()
    }
    fn timer_entries(&self) -> usize {
        self.conns.borrow().timer_entries()
    }
    fn queued_bytes(&self) -> usize {
        self.conns.borrow().queued_total()
    }
    fn core_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
    fn history(&self, topic: &str) -> Option<streams::History> {
        self.streams
            .borrow_mut()
            .read(topic, std::time::Instant::now())
    }
}
