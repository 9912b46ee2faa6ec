//! Async sessions: a connection handed from [`Handler::open`] to an async fn that drives it on the connection's core, with `recv().await` and `send(…).await` that waits out backpressure.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;

use super::{callback_panicked, CoreOf, Handler, Message, SubscribeError, Ws};
use crate::conn::{ConnId, OwnedMessage, SendStatus, SessionLink, State};
use crate::fanout::PublishResult;
use crate::handle::ServerHandle;
use crate::proto::{CloseCode, PreparedFrame};

/// How many received messages wait for a session's task by default
/// before the connection stops reading its socket.
pub const SESSION_QUEUE: usize = 16;

/// Why [`Ws::spawn_session`] did not start a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// Only [`Handler::open`] can hand its connection to a session.
    #[error("a session can only be started from Handler::open")]
    NotInOpen,
}

/// Why a session's send did not queue its message, or could not wait for
/// its drain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closing or gone; the message may not reach the
    /// client (counted as `discarded` if it was queued and never written).
    #[error("the connection is closed")]
    Closed,
    /// The outbox was over its limit and the slow-consumer policy refused
    /// the message (counted as `dropped`; under the close policies the
    /// connection is closing too).
    #[error("the message was dropped: the client reads too slowly")]
    Dropped,
    /// The value could not be serialised; nothing was sent.
    #[cfg(feature = "json")]
    #[error(transparent)]
    Json(#[from] super::JsonError),
}

impl OwnedMessage {
    /// The message as the callback style sees it, borrowed.
    pub fn as_message(&self) -> Message<'_> {
        match self {
            OwnedMessage::Text(t) => Message::Text(t),
            OwnedMessage::Binary(b) => Message::Binary(b),
        }
    }

    /// The text, if it is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            OwnedMessage::Text(t) => Some(t),
            OwnedMessage::Binary(_) => None,
        }
    }
}

/// A connection driven by an async task on its core, started by
/// [`Ws::spawn_session`] in [`Handler::open`].
///
/// ```no_run
/// use shardcast::{Config, Handler, Rejection, Server, Session, UpgradeRequest, Ws};
///
/// struct Echo;
///
/// impl Handler for Echo {
///     type Data = ();
///     type Local = ();
///     fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
///         Ok(())
///     }
///     fn open(&self, ws: &mut Ws<'_, Self>) {
///         // From here on the connection's messages go to this task.
///         let _ = ws.spawn_session(|s: Session<Echo>| async move {
///             while let Some(msg) = s.recv().await {
///                 if s.send(&msg).await.is_err() {
///                     break; // closed, or dropped as a slow consumer
///                 }
///             }
///         });
///     }
/// }
///
/// fn main() -> std::io::Result<()> {
///     let handle = Server::new(Config::new(), Echo).start()?;
///     handle.join();
///     Ok(())
/// }
/// ```
///
/// The task runs on the connection's core (it need not be `Send`), as a
/// monoio task beside the engine's own. Published frames reach the
/// connection as they reach any other: the shared `Bytes` of the publish
/// goes onto the same outbox, without a copy. What differs from the
/// callback style:
///
/// - Each received message is copied out of the core's read buffer into an
///   [`OwnedMessage`] so that the task can hold it across `.await`s. At
///   most [`SESSION_QUEUE`] messages (or the capacity given to
///   [`Ws::spawn_session_with`]) wait for the task; while the queue is
///   full the connection's socket is not read, so a client that sends
///   faster than the application reads is slowed by TCP, not buffered.
///   An application that stops reading for longer than
///   [`Config::idle_timeout`](crate::Config::idle_timeout) loses the
///   connection (its pongs are not read either).
/// - `send_*().await` queue the message and, when that took the outbox
///   over [`Config::outbox_low_water`](crate::Config::outbox_low_water),
///   return only once the flusher has written it back under that mark (no
///   polling: the drain wakes the task). A task that sends in a loop holds
///   at most the low-water mark plus one message in the outbox however
///   slowly the client reads.
/// - A connection driven by a session gets no `message` and no `drain`
///   callbacks; the others (`close`, `disconnect`, …) still run.
/// - The task must not block, as a callback must not, and must not await
///   anything another thread wakes (monoio is built without cross-thread
///   wakers). Other threads reach the session's client, not the task:
///   [`ServerHandle::send`] to [`Session::id`], or a publish to a topic it
///   subscribed to, goes straight onto its outbox. The task itself hears
///   only from its client and from tasks and callbacks of its own core
///   (e.g. through [`Handler::Local`]).
/// - When the task returns, the connection is closed with 1000 if it is
///   still open; received messages it left in its queue go nowhere (they
///   are not counted: nothing was sent). A panic in the task is caught, logged and counted in
///   `handler_panics`, and closes only its connection, with 1011.
///
/// Every method takes `&self`, so a task may wait in [`Session::recv`] in
/// one branch of a `select!` and send in another (one waiter at a time in
/// `recv` or `close`; any number in sends). Once the connection is
/// gone, `recv` returns `None` and sends return [`SendError::Closed`].
pub struct Session<H: Handler> {
    core: Rc<CoreOf<H>>,
    id: ConnId,
    link: Rc<SessionLink>,
}

impl<H: Handler> Session<H> {
    /// This connection's id (usable from any thread with
    /// [`ServerHandle::send`]).
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The core serving this connection (and running this task).
    pub fn core(&self) -> usize {
        self.core.id()
    }

    /// This core's application state ([`Handler::Local`]).
    pub fn local(&self) -> &H::Local {
        self.core.local()
    }

    /// The server's handle.
    pub fn handle(&self) -> &ServerHandle {
        self.core.handle()
    }

    /// The client's address; `None` once the connection is gone.
    pub fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        let conns = self.core.conns();
        conns.is_live(self.id).then(|| conns.peer(self.id.key()))
    }

    /// Whether the connection is open: messages can be sent.
    pub fn is_open(&self) -> bool {
        let conns = self.core.conns();
        conns.is_live(self.id) && conns.state(self.id.key()) == Some(State::Open)
    }

    /// Bytes queued for this connection and not yet written.
    pub fn buffered_amount(&self) -> usize {
        let conns = self.core.conns();
        if conns.is_live(self.id) {
            conns.buffered(self.id.key())
        } else {
            0
        }
    }

    /// The next message, in the order received; `None` once the connection
    /// is gone and every message received before has been returned.
    pub async fn recv(&self) -> Option<OwnedMessage> {
        loop {
            if let Some(msg) = self.link.pop() {
                return Some(msg);
            }
            if self.link.is_ended() {
                return None;
            }
            self.link.arrived().await;
        }
    }

    /// Calls `f` with this connection as callbacks see it ([`Ws`]): every
    /// synchronous operation of the callback style (subscribe, publish,
    /// broadcast, the connection's [`Handler::Data`], …). `None` once the
    /// connection is gone.
    ///
    /// `f` must not block, as a callback must not.
    pub fn with_ws<R>(&self, f: impl FnOnce(&mut Ws<'_, H>) -> R) -> Option<R> {
        let key = self.id.key();
        let (gen, data) = {
            let mut conns = self.core.conns();
            if !conns.is_live(self.id) {
                return None;
            }
            conns.take_data(key)?
        };
        // Puts the data back even if `f` panics, so that `close` still
        // gets it.
        struct Restore<'c, H: Handler> {
            core: &'c CoreOf<H>,
            key: u32,
            gen: u32,
            data: Option<H::Data>,
        }
        impl<H: Handler> Drop for Restore<'_, H> {
            fn drop(&mut self) {
                if let Some(d) = self.data.take() {
                    self.core.conns().put_data(self.key, self.gen, d);
                }
            }
        }
        let mut guard = Restore::<H> {
            core: &self.core,
            key,
            gen,
            data: Some(data),
        };
        let data = guard.data.as_mut()?;
        let mut ws = Ws::new(&self.core, key, gen, data);
        Some(f(&mut ws))
    }

    /// Calls `f` with the connection's [`Handler::Data`]; `None` once the
    /// connection is gone.
    pub fn with_data<R>(&self, f: impl FnOnce(&mut H::Data) -> R) -> Option<R> {
        self.with_ws(|ws| f(ws.data_mut()))
    }

    /// Subscribes to `topic`: `Ok(true)` if it was added, `Ok(false)` if
    /// this connection already subscribed.
    ///
    /// # Errors
    /// As [`Ws::subscribe`]; [`SubscribeError::Closed`] once the
    /// connection is gone.
    pub fn subscribe(&self, topic: &str) -> Result<bool, SubscribeError> {
        self.with_ws(|ws| ws.subscribe(topic))
            .unwrap_or(Err(SubscribeError::Closed))
    }

    /// Unsubscribes from `topic`. Returns false if it was not subscribed.
    pub fn unsubscribe(&self, topic: &str) -> bool {
        self.with_ws(|ws| ws.unsubscribe(topic)).unwrap_or(false)
    }

    /// Publishes a frame encoded once to every subscriber of `topic` on
    /// every core, this connection included only when `include_self` is
    /// set. Works after the connection is gone too.
    pub fn publish(&self, topic: &str, frame: &PreparedFrame, include_self: bool) -> PublishResult {
        let exclude = (!include_self).then_some(self.id);
        self.core
            .publish(topic, frame.as_bytes().clone(), exclude, None)
    }

    /// Publishes a text message to every subscriber of `topic` except this
    /// connection.
    pub fn publish_text(&self, topic: &str, text: &str) -> PublishResult {
        self.publish(topic, &PreparedFrame::text(text), false)
    }

    /// Sends a frame to every open connection of the server but `exclude`,
    /// as [`Ws::broadcast`].
    pub fn broadcast(&self, frame: &PreparedFrame, exclude: Option<ConnId>) -> PublishResult {
        self.core.broadcast(frame.as_bytes().clone(), exclude)
    }

    /// Sends `msg` as it is (e.g. one received, for an echo); see
    /// [`Session::send_prepared`].
    ///
    /// # Errors
    /// As [`Session::send_prepared`].
    pub async fn send(&self, msg: &OwnedMessage) -> Result<(), SendError> {
        match msg {
            OwnedMessage::Text(t) => self.send_text(t).await,
            OwnedMessage::Binary(b) => self.send_binary(b).await,
        }
    }

    /// Sends a text message; see [`Session::send_prepared`].
    ///
    /// # Errors
    /// As [`Session::send_prepared`].
    pub async fn send_text(&self, text: &str) -> Result<(), SendError> {
        self.send_frame(PreparedFrame::text(text).into_bytes())
            .await
    }

    /// Sends a binary message; see [`Session::send_prepared`].
    ///
    /// # Errors
    /// As [`Session::send_prepared`].
    pub async fn send_binary(&self, data: &[u8]) -> Result<(), SendError> {
        self.send_frame(PreparedFrame::binary(data).into_bytes())
            .await
    }

    /// Queues a frame encoded once (e.g. shared with other connections);
    /// when the outbox is then over
    /// [`Config::outbox_low_water`](crate::Config::outbox_low_water),
    /// waits until the flusher has written it back under the mark.
    ///
    /// # Errors
    /// [`SendError::Closed`] if the connection is closing or gone (before
    /// or during the wait); [`SendError::Dropped`] if the slow-consumer
    /// policy refused the message.
    pub async fn send_prepared(&self, frame: &PreparedFrame) -> Result<(), SendError> {
        self.send_frame(frame.as_bytes().clone()).await
    }

    async fn send_frame(&self, frame: Bytes) -> Result<(), SendError> {
        let key = self.id.key();
        let status = {
            let mut conns = self.core.conns();
            if !conns.is_live(self.id) || conns.state(key) != Some(State::Open) {
                return Err(SendError::Closed);
            }
            // As Ws::send_prepared: compressed for this connection when it
            // negotiated permessage-deflate.
            let (st, n) = conns.send(key, frame);
            if st != SendStatus::Dropped {
                conns.stats().bytes_out.bump(n as u64);
            }
            st
        };
        match status {
            SendStatus::Sent => Ok(()),
            SendStatus::Dropped => Err(SendError::Dropped),
            SendStatus::Backpressure => self.drained().await,
        }
    }

    /// Waits until the outbox is back under its low-water mark.
    async fn drained(&self) -> Result<(), SendError> {
        let low = self.core.config().outbox_low_water;
        std::future::poll_fn(|cx| {
            let conns = self.core.conns();
            if !conns.is_live(self.id) || conns.state(self.id.key()) != Some(State::Open) {
                return Poll::Ready(Err(SendError::Closed));
            }
            if conns.buffered(self.id.key()) <= low {
                return Poll::Ready(Ok(()));
            }
            self.link.wait_drain(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Starts the closing handshake with `code` and `reason` (at most 123
    /// bytes are sent; queued messages go out first), then waits until the
    /// connection is gone: the client answered, or
    /// [`Config::close_timeout`](crate::Config::close_timeout) passed.
    pub async fn close(&self, code: CloseCode, reason: &str) {
        {
            let mut conns = self.core.conns();
            if conns.is_live(self.id) {
                conns.close(self.id.key(), code, reason);
            }
        }
        while !self.link.is_ended() {
            self.link.arrived().await;
        }
    }
}

#[cfg(feature = "json")]
impl<H: Handler> Session<H> {
    /// The next message parsed as a `T`: `None` once the connection is
    /// gone, `Some(Err(…))` for a message that is not JSON or not a `T`
    /// (the session goes on; answer it or close).
    pub async fn recv_json<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Option<Result<T, super::JsonError>> {
        let msg = self.recv().await?;
        Some(msg.as_message().json())
    }

    /// Sends `value` as a JSON text message; see [`Session::send_prepared`].
    ///
    /// # Errors
    /// [`SendError::Json`] if `value` cannot be serialised (nothing is
    /// sent); otherwise as [`Session::send_prepared`].
    pub async fn send_json<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(), SendError> {
        let frame = super::json_frame(value)?;
        self.send_frame(frame.into_bytes()).await
    }

    /// Publishes `value` as a JSON text message to every subscriber of
    /// `topic` except this connection, serialised once.
    ///
    /// # Errors
    /// [`JsonError::Serialize`](super::JsonError::Serialize) if `value`
    /// cannot be serialised (nothing is published).
    pub fn publish_json<T: serde::Serialize + ?Sized>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<PublishResult, super::JsonError> {
        Ok(self.publish(topic, &super::json_frame(value)?, false))
    }
}

impl<H: Handler> Ws<'_, H> {
    /// Hands this connection to an async task on its core: `f` gets a
    /// [`Session`] and its future runs until it returns (the connection is
    /// then closed with 1000 if still open) or panics (closed with 1011,
    /// counted in `handler_panics`). Received messages go to
    /// [`Session::recv`] from now on, not to [`Handler::message`]; at most
    /// [`SESSION_QUEUE`] wait before the connection stops reading.
    ///
    /// Connections of a server may mix both styles: each `open` decides
    /// for its own connection (by path, by its data, …).
    ///
    /// # Errors
    /// [`SpawnError::NotInOpen`] anywhere but in [`Handler::open`], or a
    /// second time there.
    ///
    /// # Example
    /// ```
    /// use shardcast::{Handler, Rejection, Session, UpgradeRequest, Ws};
    ///
    /// struct Greeter;
    /// impl Handler for Greeter {
    ///     type Data = String;
    ///     type Local = ();
    ///     fn upgrade(&self, req: &mut UpgradeRequest<'_>) -> Result<String, Rejection> {
    ///         Ok(req.request().query_param("name").unwrap_or("you").to_owned())
    ///     }
    ///     fn open(&self, ws: &mut Ws<'_, Self>) {
    ///         let _ = ws.spawn_session(|s: Session<Greeter>| async move {
    ///             let name = s.with_data(|n| n.clone()).unwrap_or_default();
    ///             let _ = s.send_text(&format!("hello {name}")).await;
    ///             while let Some(msg) = s.recv().await {
    ///                 if msg.as_text() == Some("bye") {
    ///                     s.close(shardcast::CloseCode::NORMAL, "bye").await;
    ///                 }
    ///             }
    ///         });
    ///     }
    /// }
    /// ```
    pub fn spawn_session<F, Fut>(&mut self, f: F) -> Result<(), SpawnError>
    where
        F: FnOnce(Session<H>) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        self.spawn_session_with(SESSION_QUEUE, f)
    }

    /// [`Ws::spawn_session`] with at most `queue` (at least 1) received
    /// messages waiting for the task.
    ///
    /// # Errors
    /// As [`Ws::spawn_session`].
    pub fn spawn_session_with<F, Fut>(&mut self, queue: usize, f: F) -> Result<(), SpawnError>
    where
        F: FnOnce(Session<H>) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        let core = self.take_opening().ok_or(SpawnError::NotInOpen)?;
        let (key, gen) = self.key_gen();
        let link = Rc::new(SessionLink::new(gen, queue));
        core.attach_session(key, link.clone());
        let id = self.id();
        let fut = f(Session {
            core: core.clone(),
            id,
            link,
        });
        let core = core.clone();
        monoio::spawn(async move {
            let mut fut = std::pin::pin!(fut);
            let r = std::future::poll_fn(|cx| {
                match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                    Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
                    Ok(Poll::Pending) => Poll::Pending,
                    Err(panic) => Poll::Ready(Err(panic)),
                }
            })
            .await;
            let (code, reason) = match r {
                Ok(()) => (CloseCode::NORMAL, ""),
                Err(panic) => {
                    callback_panicked(
                        &core,
                        &*panic,
                        &format!("its session's connection {id:?} is closed"),
                    );
                    (CloseCode::INTERNAL_ERROR, "internal error")
                }
            };
            let mut conns = core.conns();
            if conns.is_live(id) {
                conns.close(id.key(), code, reason);
            }
        });
        Ok(())
    }
}
