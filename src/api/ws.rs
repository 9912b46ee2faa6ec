//! [`Ws`]: a connection as its callbacks see it.

use std::net::SocketAddr;
use std::rc::Rc;

use super::{CoreOf, Handler};
use crate::conn::{ConnId, SendStatus, State};
use crate::fanout::PublishResult;
use crate::handle::ServerHandle;
use crate::mesh::PublishReport;
use crate::proto::{CloseCode, PreparedFrame};
use crate::streams::Since;

/// Why [`Ws::subscribe`] refused a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The connection is closing: it receives nothing more.
    #[error("the connection is closing")]
    Closed,
    /// The topic already has
    /// [`Config::max_subscribers_per_topic`](crate::Config::max_subscribers_per_topic)
    /// subscribers on this core.
    #[error("the topic has its maximum of {limit} subscribers on this core")]
    TopicFull {
        /// The limit it reached.
        limit: usize,
    },
    /// [`Ws::join`] named a topic without history
    /// ([`Config::history`](crate::Config::history)).
    #[error("the topic keeps no history")]
    NoHistory,
}

/// A connection, as its callbacks see it.
pub struct Ws<'a, H: Handler> {
    core: &'a CoreOf<H>,
    key: u32,
    gen: u32,
    data: &'a mut H::Data,
    /// Set in `open` only: the core's `Rc`, which an async session
    /// ([`Ws::spawn_session`]) keeps.
    opening: Option<&'a Rc<CoreOf<H>>>,
}

impl<'a, H: Handler> Ws<'a, H> {
    pub(crate) fn new(core: &'a CoreOf<H>, key: u32, gen: u32, data: &'a mut H::Data) -> Self {
        Self {
            core,
            key,
            gen,
            data,
            opening: None,
        }
    }

    /// Lets this `Ws` start an async session: it is the one of `open`.
    pub(crate) fn set_opening(&mut self, core: &'a Rc<CoreOf<H>>) {
        self.opening = Some(core);
    }

    /// The core's `Rc` while in `open`, taken by the session it starts.
    pub(crate) fn take_opening(&mut self) -> Option<&'a Rc<CoreOf<H>>> {
        self.opening.take()
    }

    /// (slab key, generation) of this connection.
    pub(crate) fn key_gen(&self) -> (u32, u32) {
        (self.key, self.gen)
    }

    /// This connection's id (usable from any thread with [`ServerHandle::send`]).
    pub fn id(&self) -> ConnId {
        ConnId::new(self.core.id(), self.key, self.gen)
    }

    /// The core serving this connection.
    pub fn core(&self) -> usize {
        self.core.id()
    }

    /// The server's [`Handler`] (useful in work that reaches a
    /// connection later, e.g. through
    /// [`Ws::visit`]).
    pub fn handler(&self) -> &'a H {
        self.core.handler()
    }

    /// This core's application state ([`Handler::Local`]).
    pub fn local(&self) -> &'a H::Local {
        self.core.local()
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.core.conns().peer(self.key)
    }

    /// The connection's data.
    pub fn data(&self) -> &H::Data {
        self.data
    }

    /// The connection's data, mutably.
    pub fn data_mut(&mut self) -> &mut H::Data {
        self.data
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) -> SendStatus {
        self.send_prepared(&PreparedFrame::text(text))
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> SendStatus {
        self.send_prepared(&PreparedFrame::binary(data))
    }

    /// Sends a frame encoded once, e.g. shared with other connections.
    pub fn send_prepared(&mut self, frame: &PreparedFrame) -> SendStatus {
        let mut conns = self.core.conns();
        let (st, n) = conns.send(self.key, frame.as_bytes().clone());
        if st != SendStatus::Dropped {
            conns.stats().bytes_out.bump(n as u64);
        }
        st
    }

    /// Subscribes to `topic`: `Ok(true)` if it was added, `Ok(false)` if
    /// this connection already subscribed.
    ///
    /// # Errors
    /// [`SubscribeError::Closed`] once the connection is closing;
    /// [`SubscribeError::TopicFull`] if `topic` already has
    /// [`Config::max_subscribers_per_topic`](crate::Config::max_subscribers_per_topic)
    /// subscribers on this core. Nothing is added either way.
    pub fn subscribe(&mut self, topic: &str) -> Result<bool, SubscribeError> {
        if !self.is_open() {
            return Err(SubscribeError::Closed);
        }
        let limit = self.core.config().max_subscribers_per_topic;
        let mut topics = self.core.topics();
        if topics.subscribers(topic).len() >= limit
            && !topics.registry().is_subscribed(self.key, topic)
        {
            return Err(SubscribeError::TopicFull { limit });
        }
        Ok(topics.subscribe(self.key, topic))
    }

    /// Subscribes to history topics from a position each (see
    /// [`crate::streams`]): for each, the topic's home core says where the
    /// subscription starts and replays what `since` asks for; then
    /// [`Handler::joined`] runs with `token` and the positions, and the
    /// replayed publications follow, then the live stream — without a gap
    /// or a duplicate at the switch, even while publishes go on. Until
    /// then the connection gets nothing of these topics. A topic the
    /// connection already subscribes to is left subscribed with
    /// [`Since::Now`] (only its position is asked), or resubscribed
    /// through the join otherwise.
    ///
    /// # Errors
    /// [`SubscribeError::Closed`] once the connection is closing;
    /// [`SubscribeError::NoHistory`] if a topic keeps no history. Nothing
    /// is started either way.
    pub fn join(&mut self, topics: &[(&str, Since)], token: u64) -> Result<(), SubscribeError> {
        if !self.is_open() {
            return Err(SubscribeError::Closed);
        }
        let cfg = self.core.config();
        if topics.iter().any(|(t, _)| cfg.history_of(t).is_none()) {
            return Err(SubscribeError::NoHistory);
        }
        let mut list = Vec::with_capacity(topics.len());
        {
            let mut subs = self.core.topics();
            for (t, since) in topics {
                let subscribed = subs.registry().is_subscribed(self.key, t);
                let gated = !(subscribed && *since == Since::Now);
                if gated {
                    if subscribed {
                        subs.unsubscribe(self.key, t);
                    }
                    // Every later publication reaches this core meanwhile.
                    subs.pin(t);
                }
                list.push((std::sync::Arc::<str>::from(*t), gated));
            }
        }
        let seq = self
            .core
            .joins()
            .start(self.key, self.gen, token, list.clone());
        let cores = self.core.mesh().cores();
        for (index, ((topic, _), (_, since))) in list.into_iter().zip(topics).enumerate() {
            let home = crate::streams::home_core(&topic, cores);
            // Through the home core's inbox even when it is this core, so
            // that the answer is taken in order with its publications.
            self.core.mesh().send(
                home,
                crate::mesh::CoreMsg::StreamJoin {
                    from: self.core.id(),
                    seq,
                    index,
                    topic,
                    since: since.clone(),
                },
            );
        }
        Ok(())
    }

    /// Runs `f` on connection `conn`'s core with its `Ws`, without
    /// waiting, from any thread (a core's included): how work finished
    /// elsewhere comes back to a connection's callbacks (e.g. state
    /// handed over by another connection). `f` gets `None` if the
    /// connection is gone by then (or driven by an async session), or if
    /// `H` is not the handler type of `handle`'s server. A panic in `f`
    /// closes the connection with 1011, as in any callback.
    pub fn visit(
        handle: &ServerHandle,
        conn: ConnId,
        f: impl FnOnce(Option<&mut Ws<'_, H>>) + Send + 'static,
    ) {
        handle.run_on(conn.core(), move |view| {
            match view.core_any().and_then(|a| a.downcast_ref::<CoreOf<H>>()) {
                Some(core) => visit(core, conn, f),
                None => f(None),
            }
        });
    }

    /// Identifies this connection as one of client `id`'s (e.g. the JWT
    /// `sub`), so that [`ServerHandle::send_to_client`](crate::ServerHandle::send_to_client)
    /// reaches it, on whatever core, until it closes. Returns how many
    /// connections the client has now.
    ///
    /// # Errors
    /// `Err(n)` if the client already has `limit` (= n) connections: this
    /// one is not added (close it, or answer so).
    pub fn set_client_id(&mut self, id: &str, limit: usize) -> Result<usize, usize> {
        let conn = self.id();
        let n = self.core.mesh().identify(id, conn, limit)?;
        if let Some(old) = self.core.conns().set_client(self.key, id) {
            if *old != *id {
                self.core.mesh().forget_client(&old, conn);
            }
        }
        Ok(n)
    }

    /// Starts tracking, for this connection, which messages carrying a
    /// position its peer's TCP acknowledged: each message queued from now
    /// on is read by `reader` (e.g. a history topic's message: its topic
    /// and offset) and logged with where it ends in the output stream;
    /// [`Ws::acked_positions`] compares that log with the kernel's count
    /// of acknowledged bytes (`tcpi_bytes_acked`, Linux 4.1+). Costs each
    /// queued message one `reader` call and each positioned one a log
    /// entry (32 bytes) until its peer acknowledges it; connections that
    /// do not call this pay nothing. Returns false if the socket cannot
    /// tell (nothing is tracked then): on the direct io_uring path
    /// ([`IoPath`](crate::IoPath)), whose sockets have no file descriptor
    /// to ask.
    pub fn track_acks(&mut self, reader: crate::conn::PositionReader) -> bool {
        self.core.conns().track_acks(self.key, reader)
    }

    /// Per topic, the offset of the last message (as the
    /// [`Ws::track_acks`] reader read it) whose every byte the peer's TCP
    /// acknowledged, asked of the kernel now; a topic with none is absent.
    /// `None` when the connection is not tracked. Still answers in
    /// [`Handler::close`](crate::Handler::close), even after a reset.
    pub fn acked_positions(&self) -> Option<Vec<(std::sync::Arc<str>, u64)>> {
        self.core.conns().acked_positions(self.key)
    }

    /// Like [`Ws::acked_positions`], counting every message written to
    /// the socket (acknowledged or still in the kernel's send queue): what
    /// a peer that closed cleanly reads before the close frame. Messages
    /// still in the outbox (never written) do not count.
    pub fn written_positions(&self) -> Option<Vec<(std::sync::Arc<str>, u64)>> {
        self.core.conns().written_positions(self.key)
    }

    /// Entries the delivery tracking holds for this connection: its
    /// messages not yet known acknowledged, plus one per topic.
    pub fn acked_entries(&self) -> usize {
        self.core.conns().acked_held(self.key)
    }

    /// The client identity set with [`Ws::set_client_id`].
    pub fn client_id(&self) -> Option<std::sync::Arc<str>> {
        self.core.conns().client(self.key)
    }

    /// Reads history topic `topic`'s position and the publications its
    /// home core keeps, there, and calls `f` with them on that core
    /// (`None`: no history, or nothing published yet). Does not wait: `f`
    /// runs later, possibly on another core, so it reaches this connection
    /// through [`ServerHandle::send`](crate::ServerHandle::send) with
    /// [`Ws::id`].
    pub fn read_history(
        &self,
        topic: &str,
        f: impl FnOnce(Option<crate::streams::History>) + Send + 'static,
    ) {
        let handle = self.core.handle();
        let t = topic.to_owned();
        handle.run_on(handle.history_home(topic), move |core| f(core.history(&t)));
    }

    /// Unsubscribes from `topic`. Returns false if it was not subscribed.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        self.core.topics().unsubscribe(self.key, topic)
    }

    /// Whether this connection subscribes to `topic`.
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.core.topics().registry().is_subscribed(self.key, topic)
    }

    /// The topics this connection subscribes to.
    pub fn topics(&self) -> Vec<String> {
        self.core
            .topics()
            .registry()
            .topics_of(self.key)
            .map(str::to_owned)
            .collect()
    }

    /// How many topics this connection subscribes to.
    pub fn subscription_count(&self) -> usize {
        self.core.topics().registry().subscription_count(self.key)
    }

    /// Subscribers of `topic` on this connection's core.
    pub fn local_subscriber_count(&self, topic: &str) -> usize {
        self.core.topics().subscribers(topic).len()
    }

    /// Publishes a text message to every subscriber of `topic` except this
    /// connection.
    pub fn publish_text(&mut self, topic: &str, text: &str) -> PublishResult {
        self.publish(topic, &PreparedFrame::text(text), false)
    }

    /// Publishes a binary message to every subscriber of `topic` except this
    /// connection.
    pub fn publish_binary(&mut self, topic: &str, data: &[u8]) -> PublishResult {
        self.publish(topic, &PreparedFrame::binary(data), false)
    }

    /// Publishes a prepared frame to every subscriber of `topic`, including
    /// this connection only when `include_self` is set.
    pub fn publish(
        &mut self,
        topic: &str,
        frame: &PreparedFrame,
        include_self: bool,
    ) -> PublishResult {
        let exclude = (!include_self).then(|| self.id());
        self.core
            .publish(topic, frame.as_bytes().clone(), exclude, None)
    }

    /// Publishes like [`Ws::publish`] and calls `done` with the totals over
    /// all cores once every core has queued the frame. `done` runs on the
    /// thread of the last core to finish (possibly this one, before this
    /// returns) and must not block; [`ServerHandle::send`] is how it
    /// reaches a connection.
    pub fn publish_counted(
        &mut self,
        topic: &str,
        frame: &PreparedFrame,
        include_self: bool,
        done: impl FnOnce(PublishReport) + Send + 'static,
    ) -> PublishResult {
        let exclude = (!include_self).then(|| self.id());
        self.core.publish(
            topic,
            frame.as_bytes().clone(),
            exclude,
            Some(Box::new(done)),
        )
    }

    /// Sends a prepared frame to every open connection of the server, on
    /// every core, except `exclude` (e.g. `Some(ws.id())`, the sender).
    /// Encoded once, whatever the number of connections; each other core
    /// gets one inbox message (refused and counted like a publish when its
    /// inbox is full). The counts in the result are this core's.
    pub fn broadcast(&mut self, frame: &PreparedFrame, exclude: Option<ConnId>) -> PublishResult {
        self.core.broadcast(frame.as_bytes().clone(), exclude)
    }

    /// Starts the closing handshake with `code` and `reason` (at most 123
    /// bytes are sent). Queued messages go out first.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.core.conns().close(self.key, code, reason);
    }

    /// Like [`Ws::close`], but what is queued and not yet started is
    /// dropped first (and counted as discarded): for a peer presumed gone,
    /// e.g. one whose client has reconnected elsewhere and will get those
    /// messages there.
    pub fn close_discarding(&mut self, code: CloseCode, reason: &str) {
        self.core.conns().close_discarding(self.key, code, reason);
    }

    /// Bytes queued for this connection and not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.core.conns().buffered(self.key)
    }

    /// Whether messages can still be sent.
    pub fn is_open(&self) -> bool {
        self.core.conns().state(self.key) == Some(State::Open)
    }

    /// The server's handle: publish with counts, send to other connections,
    /// stats.
    pub fn handle(&self) -> &'a ServerHandle {
        self.core.handle()
    }
}

/// [`Ws::visit`], on `conn`'s core.
fn visit<H: Handler>(core: &CoreOf<H>, conn: ConnId, f: impl FnOnce(Option<&mut Ws<'_, H>>)) {
    let taken = {
        let mut conns = core.conns();
        if conns.is_live(conn) {
            conns.take_data(conn.key())
        } else {
            None
        }
    };
    let Some((gen, mut data)) = taken else {
        return f(None);
    };
    let key = conn.key();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut ws = Ws::new(core, key, gen, &mut data);
        f(Some(&mut ws));
    }));
    core.conns().put_data(key, gen, data);
    if let Err(panic) = r {
        super::callback_panicked(core, &*panic, &format!("connection {conn:?} is closed"));
        core.conns()
            .close(key, CloseCode::INTERNAL_ERROR, "internal error");
    }
}
