//! State shared by the client's handles, its driver task and the connection: queue, registry, pending acknowledgements.
//!
//! One `std::sync::Mutex` guards it; it is never held across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use tokio::sync::{broadcast, oneshot, watch, Notify};

use crate::config::{Config, TokenPlacement};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::protocol::{self, ServerMsg};
use crate::queue::{OutQueue, Outgoing};
use crate::registry::{Delivered, Registry};
use crate::state::StateChange;

/// A positive answer to a message sent with an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ack {
    /// `published`, with the number of subscribers it was queued for.
    Published(u64),
    /// `authenticated`, with the token's subject.
    Authenticated(String),
    /// `subscribed`, `unsubscribed` or `pong`.
    Done,
}

pub(crate) type AckResult = Result<Ack, Error>;

pub(crate) enum Waiter {
    User(oneshot::Sender<AckResult>),
    /// The subscribe sent after a reconnect: errors go to the streams. Kept
    /// after its `subscribed` answer, since errors for the topics it refused
    /// follow that answer with the same id; dropped with the connection.
    Resubscribe,
}

pub(crate) struct Pending {
    waiter: Waiter,
    /// Handed to a connection's writer: if that connection is lost before
    /// the answer, the outcome is unknown.
    written: bool,
}

pub(crate) struct Inner {
    pub queue: OutQueue,
    pub registry: Registry,
    pending: HashMap<u64, Pending>,
    pub connected: bool,
    pub stopped: bool,
    /// The token every new connection presents: the configured one until
    /// [`Client::authenticate`](crate::Client::authenticate) replaces it.
    pub token: Option<(String, TokenPlacement)>,
    next_id: u64,
}

impl Inner {
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The waiter of an answer with this id: a user's is taken, a
    /// resubscribe's stays (for the errors that may follow its answer).
    fn take_waiter(&mut self, id: Option<u64>) -> Option<Waiter> {
        let id = id?;
        match self.pending.get(&id)?.waiter {
            Waiter::Resubscribe => Some(Waiter::Resubscribe),
            Waiter::User(_) => self.pending.remove(&id).map(|p| p.waiter),
        }
    }
}

/// Whether a message may wait in the offline queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Send now if connected; otherwise queue it, in order, for the next
    /// connection (or fail with [`Error::QueueFull`]). Default.
    #[default]
    Queue,
    /// Send only if connected now; otherwise fail with [`Error::NotConnected`].
    Now,
}

pub(crate) struct Shared {
    pub cfg: Config,
    inner: Mutex<Inner>,
    /// The queue has something for the writer.
    pub wake_writer: Notify,
    pub metrics: Metrics,
    pub state_tx: watch::Sender<StateChange>,
    pub changes_tx: broadcast::Sender<StateChange>,
}

impl Shared {
    pub fn new(cfg: Config, initial: StateChange) -> Self {
        let queue = OutQueue::new(cfg.queue_max_messages, cfg.queue_max_bytes);
        let token = cfg.token.clone();
        Self {
            cfg,
            inner: Mutex::new(Inner {
                queue,
                registry: Registry::default(),
                pending: HashMap::new(),
                connected: false,
                stopped: false,
                token,
                next_id: 0,
            }),
            wake_writer: Notify::new(),
            metrics: Metrics::default(),
            state_tx: watch::channel(initial.clone()).0,
            changes_tx: broadcast::channel(256).0,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("client state lock")
    }

    pub fn set_state(&self, change: StateChange) {
        let _ = self.changes_tx.send(change.clone());
        self.state_tx.send_replace(change);
    }

    /// Queues the text `make(id)` builds (with a fresh id when `ack`).
    pub fn enqueue(
        &self,
        delivery: Delivery,
        ack: bool,
        make: impl FnOnce(Option<u64>) -> String,
    ) -> Result<Option<oneshot::Receiver<AckResult>>, Error> {
        let mut g = self.lock();
        if g.stopped {
            return Err(Error::Closed);
        }
        if delivery == Delivery::Now && !g.connected {
            return Err(Error::NotConnected);
        }
        let id = ack.then(|| g.next_id());
        g.queue.push(Outgoing {
            text: make(id),
            ack: id,
        })?;
        let rx = id.map(|id| {
            let (tx, rx) = oneshot::channel();
            g.pending.insert(
                id,
                Pending {
                    waiter: Waiter::User(tx),
                    written: false,
                },
            );
            rx
        });
        drop(g);
        self.wake_writer.notify_one();
        Ok(rx)
    }

    /// Takes up to `max_bytes` (at least one message) for the writer, and
    /// marks their acknowledgements as written.
    pub fn take_batch(&self, max_bytes: usize, into: &mut Vec<Outgoing>) {
        let mut g = self.lock();
        if !g.connected {
            return;
        }
        let mut bytes = 0;
        while bytes < max_bytes {
            let Some(item) = g.queue.pop() else { break };
            bytes += item.text.len();
            if let Some(p) = item.ack.and_then(|id| g.pending.get_mut(&id)) {
                p.written = true;
            }
            into.push(item);
        }
    }

    /// Puts a batch the writer could not write back at the front, in order.
    pub fn requeue(&self, batch: Vec<Outgoing>) {
        let mut g = self.lock();
        for item in batch.into_iter().rev() {
            if let Some(p) = item.ack.and_then(|id| g.pending.get_mut(&id)) {
                p.written = false;
            }
            g.queue.push_front(item);
        }
    }

    /// A connection is open: what it must carry before anything queued, in
    /// order: the `auth` message (token placement [`TokenPlacement::Message`])
    /// and the resubscribe, if any topic is held.
    pub fn on_connected(&self) -> Vec<String> {
        let mut g = self.lock();
        let mut first = Vec::new();
        if let Some((token, TokenPlacement::Message)) = &g.token {
            // No id: a refusal closes with 1008, which the close policy handles.
            first.push(protocol::auth(token, None));
        }
        let inner = &mut *g;
        let resubscribe = inner.registry.on_connected(|| {
            inner.next_id += 1;
            inner.next_id
        });
        for (id, text) in resubscribe {
            g.pending.insert(
                id,
                Pending {
                    waiter: Waiter::Resubscribe,
                    written: true,
                },
            );
            first.push(text);
        }
        g.connected = true;
        drop(g);
        self.metrics
            .times
            .lock()
            .expect("metrics lock")
            .connected_at = Some(Instant::now());
        first
    }

    /// The connection is gone: answers written but unanswered messages
    /// with [`Error::ConnectionLost`].
    pub fn on_disconnected(&self) {
        let lost: Vec<Pending> = {
            let mut g = self.lock();
            g.connected = false;
            let ids: Vec<u64> = g
                .pending
                .iter()
                .filter(|(_, p)| p.written)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| g.pending.remove(id)).collect()
        };
        for p in lost {
            if let Waiter::User(tx) = p.waiter {
                let _ = tx.send(Err(Error::ConnectionLost));
            }
        }
        self.metrics
            .times
            .lock()
            .expect("metrics lock")
            .connected_at = None;
    }

    /// The client stopped for good: every waiter gets [`Error::Closed`],
    /// every subscription stream ends.
    pub fn on_stopped(&self) {
        let pending: Vec<Pending> = {
            let mut g = self.lock();
            g.stopped = true;
            g.connected = false;
            g.registry.clear();
            g.pending.drain().map(|(_, p)| p).collect()
        };
        for p in pending {
            if let Waiter::User(tx) = p.waiter {
                let _ = tx.send(Err(Error::Closed));
            }
        }
    }

    /// Handles one text message from the server.
    pub fn on_text(&self, text: &str) {
        self.metrics.received(text.len());
        self.metrics
            .times
            .lock()
            .expect("metrics lock")
            .last_message = Some(SystemTime::now());
        let Some(msg) = ServerMsg::parse(text) else {
            self.metrics.error();
            return;
        };
        let mut g = self.lock();
        match &*msg.kind {
            "message" => {
                if let (Some(topic), Some(data)) = (&msg.topic, msg.data) {
                    let position = msg.position();
                    match g.registry.deliver(topic, data.get(), position) {
                        Delivered::Duplicate => {
                            self.metrics.duplicates.fetch_add(1, Relaxed);
                        }
                        Delivered::To { skipped, .. } => {
                            if skipped > 0 {
                                self.metrics.skipped.fetch_add(skipped, Relaxed);
                            }
                        }
                    }
                }
            }
            "error" => {
                self.metrics.error();
                let code = msg.code.as_deref().unwrap_or("").to_owned();
                let message = msg.message.as_deref().unwrap_or("").to_owned();
                match g.take_waiter(msg.own_id()) {
                    Some(Waiter::User(tx)) => {
                        drop(g);
                        let _ = tx.send(Err(Error::Server { code, message }));
                    }
                    Some(Waiter::Resubscribe) => {
                        // The refused topics are listed in the error.
                        let topics = msg.topics.as_deref().unwrap_or_default();
                        g.registry
                            .refused(topics.iter().map(String::as_str), &code, &message);
                    }
                    None => {}
                }
            }
            _ => {
                if msg.kind == "subscribed" {
                    if let Some(topics) = &msg.topics {
                        g.registry.subscribed(topics, msg.streams.as_ref());
                    }
                }
                let ack = match (&*msg.kind, msg.delivered) {
                    ("published", Some(n)) => Ack::Published(n),
                    ("authenticated", _) => {
                        Ack::Authenticated(msg.sub.as_deref().unwrap_or("").to_owned())
                    }
                    _ => Ack::Done,
                };
                if let Some(Waiter::User(tx)) = g.take_waiter(msg.own_id()) {
                    drop(g);
                    let _ = tx.send(Ok(ack));
                }
            }
        }
    }
}
