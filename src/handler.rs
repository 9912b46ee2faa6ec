//! The embedding API: the [`Handler`] an application implements and the [`Ws`] handle its callbacks get.
//!
//! Every callback runs on the core that owns the connection, inside that
//! core's event loop. A callback must not block (no blocking I/O, no
//! waiting on locks held elsewhere, no long computation): while it runs,
//! every other connection of that core waits. Hand slow work to another
//! thread and come back with [`ServerHandle::send`] or
//! [`ServerHandle::publish`].

use std::net::SocketAddr;

use bytes::Bytes;

use crate::conn::{ConnId, SendStatus};
use crate::proto::handshake::Request;
use crate::proto::{CloseCode, PreparedFrame};
use crate::shard::core::Core;
use crate::shard::{PublishReport, ServerHandle};

/// A data message from a client. Text is borrowed from the core's decode
/// buffer: no copy is made per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message (valid UTF-8).
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// Refuses a handshake with an HTTP status and a short body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status, e.g. 401, 403, 429.
    pub status: u16,
    /// Plain-text body.
    pub reason: String,
}

impl Rejection {
    /// A rejection with `status` and `reason`.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
}

/// The handshake request, as the `upgrade` hook sees it.
pub struct UpgradeRequest<'a> {
    pub(crate) request: &'a Request<'a>,
    pub(crate) peer: SocketAddr,
    pub(crate) protocol: Option<String>,
}

impl<'a> UpgradeRequest<'a> {
    /// The parsed HTTP request: path, query, headers, origin, offered
    /// subprotocols and extensions.
    pub fn request(&self) -> &Request<'a> {
        self.request
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The subprotocol that will be selected: by default the first of
    /// [`Config::subprotocols`](crate::Config::subprotocols) the client offered.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Selects a subprotocol (one the client offered) or none.
    pub fn set_protocol(&mut self, protocol: Option<&str>) {
        self.protocol = protocol.map(str::to_owned);
    }
}

/// A plain HTTP request (not an upgrade) to the WebSocket port.
pub struct HttpRequest<'a> {
    pub(crate) request: &'a Request<'a>,
    pub(crate) body: &'a [u8],
    pub(crate) peer: SocketAddr,
}

impl<'a> HttpRequest<'a> {
    /// The parsed request head.
    pub fn request(&self) -> &Request<'a> {
        self.request
    }

    /// The request body (`Content-Length` bytes).
    pub fn body(&self) -> &[u8] {
        self.body
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

/// A plain HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Further headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with `status`, content type and body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type: content_type.to_owned(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }
}

/// What a publish reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishResult {
    /// Local subscribers the frame was queued for.
    pub delivered: usize,
    /// Local subscribers skipped by the slow-consumer policy.
    pub dropped: usize,
    /// Other cores the frame was forwarded to (their counts arrive there).
    pub remote_cores: usize,
}

/// The application's side of the server.
///
/// One value serves every core (`Send + Sync`); per-connection state is
/// [`Handler::Data`], created by [`Handler::upgrade`] and owned by the
/// connection's core. All callbacks run on that core and must not block.
pub trait Handler: Sized + Send + Sync + 'static {
    /// Per-connection data, e.g. the authenticated user. Lives on the
    /// connection's core, so it need not be `Send`.
    type Data: 'static;

    /// Decides a handshake: accept with the connection's data, or reject
    /// with an HTTP status. Runs after the request was validated
    /// (RFC 6455 §4.2.1), the origin allowlist checked and the connection
    /// limit applied.
    ///
    /// # Errors
    /// A [`Rejection`] is answered with its status and the connection closed.
    fn upgrade(&self, req: &mut UpgradeRequest<'_>) -> Result<Self::Data, Rejection>;

    /// The connection is open. Default: nothing.
    fn open(&self, ws: &mut Ws<'_, Self>) {
        let _ = ws;
    }

    /// A whole text or binary message arrived. Default: nothing.
    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        let _ = (ws, msg);
    }

    /// The outbox went back under the low-water mark after a send reported
    /// backpressure. Default: nothing.
    fn drain(&self, ws: &mut Ws<'_, Self>) {
        let _ = ws;
    }

    /// The connection is gone (close handshake done, timed out, or lost:
    /// 1006). Sends are dropped from here on; subscriptions are removed
    /// after this returns. Default: nothing.
    fn close(&self, ws: &mut Ws<'_, Self>, code: CloseCode, reason: &str) {
        let _ = (ws, code, reason);
    }

    /// A plain HTTP request arrived on the WebSocket port. The connection is
    /// closed after the response. Default: 426 Upgrade Required.
    fn http(&self, req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_>) -> HttpResponse {
        let _ = (req, ctx);
        HttpResponse::text(426, "this is a WebSocket endpoint\n")
    }
}

/// Completion callback of a counted publish made from a callback.
pub(crate) type PublishDone = Box<dyn FnOnce(PublishReport) + Send>;

/// What an HTTP handler can do on its core.
pub struct HttpCtx<'a> {
    pub(crate) publish: &'a dyn Fn(&str, Bytes, Option<PublishDone>) -> PublishResult,
    pub(crate) handle: &'a ServerHandle,
    pub(crate) conn: ConnId,
    pub(crate) deferred: bool,
}

impl HttpCtx<'_> {
    /// Publishes a prepared frame to `topic` on every core.
    pub fn publish(&mut self, topic: &str, frame: &PreparedFrame) -> PublishResult {
        (self.publish)(topic, frame.as_bytes().clone(), None)
    }

    /// Publishes like [`HttpCtx::publish`] and calls `done` with the totals
    /// over all cores once every core has queued the frame. `done` runs on
    /// the thread of the last core to finish (possibly this one, before
    /// this returns) and must not block.
    pub fn publish_counted(
        &mut self,
        topic: &str,
        frame: &PreparedFrame,
        done: impl FnOnce(PublishReport) + Send + 'static,
    ) -> PublishResult {
        (self.publish)(topic, frame.as_bytes().clone(), Some(Box::new(done)))
    }

    /// Answers this request later, from any thread, with the returned
    /// [`HttpResponder`]; the response [`Handler::http`] returns is then
    /// ignored. The connection waits at most
    /// [`Config::close_timeout`](crate::Config::close_timeout) for it.
    pub fn defer(&mut self) -> HttpResponder {
        self.deferred = true;
        HttpResponder {
            handle: self.handle.clone(),
            to: self.conn,
            sent: false,
        }
    }

    /// The server's handle.
    pub fn handle(&self) -> &ServerHandle {
        self.handle
    }
}

/// Answers a deferred HTTP request (see [`HttpCtx::defer`]) from any
/// thread. Dropped without answering, it answers 500.
pub struct HttpResponder {
    handle: ServerHandle,
    to: ConnId,
    sent: bool,
}

impl HttpResponder {
    /// Sends `response` and closes the connection.
    pub fn respond(mut self, response: HttpResponse) {
        self.sent = true;
        self.handle.http_reply(self.to, &response);
    }
}

impl Drop for HttpResponder {
    fn drop(&mut self) {
        if !self.sent {
            self.handle
                .http_reply(self.to, &HttpResponse::text(500, "no response\n"));
        }
    }
}

/// A connection, as its callbacks see it.
pub struct Ws<'a, H: Handler> {
    core: &'a Core<H>,
    key: u32,
    gen: u32,
    data: &'a mut H::Data,
}

impl<'a, H: Handler> Ws<'a, H> {
    pub(crate) fn new(core: &'a Core<H>, key: u32, gen: u32, data: &'a mut H::Data) -> Self {
        Self {
            core,
            key,
            gen,
            data,
        }
    }

    /// This connection's id (usable from any thread with [`ServerHandle::send`]).
    pub fn id(&self) -> ConnId {
        self.core.conn_id(self.key, self.gen)
    }

    /// The core serving this connection.
    pub fn shard(&self) -> usize {
        self.core.id
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        crate::conn::peer_of(&self.core.conns.borrow()[self.key as usize].stream)
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
        let st = self.core.send(self.key, frame.as_bytes().clone());
        if st != SendStatus::Dropped {
            self.core.stats().bytes_out.bump(frame.len() as u64);
        }
        st
    }

    /// Subscribes to `topic`. Returns false if already subscribed (or the
    /// connection is closing).
    pub fn subscribe(&mut self, topic: &str) -> bool {
        self.is_open() && self.core.subscribe(self.key, topic)
    }

    /// Unsubscribes from `topic`. Returns false if it was not subscribed.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        self.core.unsubscribe(self.key, topic)
    }

    /// Whether this connection subscribes to `topic`.
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.core.registry.borrow().is_subscribed(self.key, topic)
    }

    /// The topics this connection subscribes to.
    pub fn topics(&self) -> Vec<String> {
        self.core
            .registry
            .borrow()
            .topics_of(self.key)
            .map(str::to_owned)
            .collect()
    }

    /// How many topics this connection subscribes to.
    pub fn subscription_count(&self) -> usize {
        self.core.registry.borrow().subscription_count(self.key)
    }

    /// Subscribers of `topic` on this connection's core.
    pub fn local_subscriber_count(&self, topic: &str) -> usize {
        self.core.registry.borrow().subscribers(topic).len()
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
        self.core
            .publish_then(topic, frame.as_bytes().clone(), exclude, Box::new(done))
    }

    /// Starts the closing handshake with `code` and `reason` (at most 123
    /// bytes are sent). Queued messages go out first.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.core.close(self.key, code, reason);
    }

    /// Bytes queued for this connection and not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.core.conns.borrow()[self.key as usize].queued
    }

    /// Whether messages can still be sent.
    pub fn is_open(&self) -> bool {
        self.core.conns.borrow()[self.key as usize].state == crate::conn::State::Open
    }

    /// The server's handle: publish with counts, send to other connections,
    /// stats.
    pub fn handle(&self) -> &ServerHandle {
        &self.core.handle
    }
}
