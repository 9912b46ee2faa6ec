//! The [`Handler`] trait an application implements, and what its hooks are given: messages, handshake and HTTP requests.

use std::net::SocketAddr;

use super::http::{HttpCtx, HttpResponse};
use super::ws::Ws;
use crate::proto::deflate::DeflateParams;
use crate::proto::handshake::Request;
use crate::proto::CloseCode;

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
    request: &'a Request<'a>,
    peer: SocketAddr,
    core: usize,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
}

impl<'a> UpgradeRequest<'a> {
    pub(crate) fn new(
        request: &'a Request<'a>,
        peer: SocketAddr,
        core: usize,
        protocol: Option<String>,
        deflate: Option<DeflateParams>,
    ) -> Self {
        Self {
            request,
            peer,
            core,
            protocol,
            deflate,
        }
    }

    /// The selected subprotocol and compression, once the hook has run.
    pub(crate) fn into_choices(self) -> (Option<String>, Option<DeflateParams>) {
        (self.protocol, self.deflate)
    }

    /// The permessage-deflate parameters the 101 will accept, if
    /// [`Config::compression`](crate::Config::compression) is on and the
    /// client made an offer the server accepts; `None` otherwise.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref()
    }

    /// Declines compression for this connection: the 101 names no
    /// extension, and compressed frames from the client fail it (1002).
    pub fn decline_deflate(&mut self) {
        self.deflate = None;
    }

    /// The core that accepted the connection and will serve it.
    pub fn core(&self) -> usize {
        self.core
    }

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
    request: &'a Request<'a>,
    body: &'a [u8],
    peer: SocketAddr,
}

impl<'a> HttpRequest<'a> {
    pub(crate) fn new(request: &'a Request<'a>, body: &'a [u8], peer: SocketAddr) -> Self {
        Self {
            request,
            body,
            peer,
        }
    }

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

/// The application's side of the server.
///
/// One value serves every core (`Send + Sync`); per-connection state is
/// [`Handler::Data`], created by [`Handler::upgrade`] and owned by the
/// connection's core; per-core state is [`Handler::Local`], created by
/// [`Handler::local`] on each core as it starts.
///
/// Every callback runs on the core that owns the connection, inside that
/// core's event loop. A callback must not block (no blocking I/O, no
/// waiting on locks held elsewhere, no long computation): while it runs,
/// every other connection of that core waits. Hand slow work to another
/// thread and come back with [`ServerHandle::send`] or
/// [`ServerHandle::publish`].
///
/// Messages of a connection reach [`Handler::message`] unless
/// [`Handler::open`] handed it to an async task with
/// [`Ws::spawn_session`](crate::Ws::spawn_session).
///
/// # Example
/// ```
/// use std::cell::Cell;
/// use shardcast::{CloseCode, Handler, Message, Rejection, UpgradeRequest, Ws};
///
/// struct Counter;
///
/// impl Handler for Counter {
///     /// Messages this connection sent.
///     type Data = u64;
///     /// Messages this core received.
///     type Local = Cell<u64>;
///
///     fn upgrade(&self, req: &mut UpgradeRequest<'_>) -> Result<u64, Rejection> {
///         if req.request().path() != "/count" {
///             return Err(Rejection::new(404, "try /count"));
///         }
///         Ok(0)
///     }
///
///     fn message(&self, ws: &mut Ws<'_, Self>, _msg: Message<'_>) {
///         *ws.data_mut() += 1;
///         ws.local().set(ws.local().get() + 1);
///         let reply = format!("{} from you, {} on this core", ws.data(), ws.local().get());
///         ws.send_text(&reply);
///     }
///
///     fn close(&self, ws: &mut Ws<'_, Self>, code: CloseCode, _reason: &str) {
///         println!("{:?} left ({}) after {} messages", ws.id(), code.0, ws.data());
///     }
/// }
/// ```
///
/// [`ServerHandle::send`]: crate::ServerHandle::send
/// [`ServerHandle::publish`]: crate::ServerHandle::publish
pub trait Handler: Sized + Send + Sync + 'static {
    /// Per-connection data, e.g. the authenticated user. Lives on the
    /// connection's core, so it need not be `Send`.
    type Data: 'static;

    /// Per-core application state: caches, scratch buffers, deadlines of
    /// this core's connections. Reachable from [`Ws::local`] and
    /// [`HttpCtx::local`] without a lock or a thread-local; it need not be
    /// `Send` (interior mutability through `Cell`/`RefCell` is the usual
    /// shape). `()` when the application needs none.
    type Local: Default + 'static;

    /// Creates core `core`'s [`Handler::Local`], on that core's thread,
    /// before it accepts a connection. Default: `Self::Local::default()`.
    fn local(&self, core: usize) -> Self::Local {
        let _ = core;
        Self::Local::default()
    }

    /// A TCP connection from `peer` was accepted on core `core`, before
    /// any of its bytes are read; it already holds one of
    /// [`Config::max_connections`](crate::Config::max_connections). The
    /// place for limits that must count sockets whatever they become
    /// (idle, plain HTTP, WebSocket), e.g. per address. Every `connect`
    /// that returns `Ok` is followed by exactly one
    /// [`Handler::disconnect`]. Default: `Ok`.
    ///
    /// # Errors
    /// A [`Rejection`] is answered at once with its status, and the
    /// connection closed without reading its request.
    fn connect(&self, peer: SocketAddr, core: usize) -> Result<(), Rejection> {
        let _ = (peer, core);
        Ok(())
    }

    /// The connection [`Handler::connect`] admitted no longer counts: its
    /// request was answered (plain HTTP or a refused handshake) or
    /// abandoned, or, once upgraded, it closed (right after
    /// [`Handler::close`]). Default: nothing.
    fn disconnect(&self, peer: SocketAddr, core: usize) {
        let _ = (peer, core);
    }

    /// Decides a handshake: accept with the connection's data, or reject
    /// with an HTTP status. Runs after the request was validated
    /// (RFC 6455 §4.2.1) and the origin allowlist checked; the connection
    /// holds its slot of the connection limit since it was accepted.
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

    /// A [`Ws::join`] completed: `joins` says, per topic in the order
    /// asked, where the subscription switched to the live stream and
    /// whether the history it asked for follows. Runs before that history
    /// is queued, so what this sends (e.g. a reply with the positions)
    /// reaches the client first. `token` is the one given to `join`.
    /// Default: nothing.
    fn joined(&self, ws: &mut Ws<'_, Self>, token: u64, joins: &[crate::streams::StreamJoin]) {
        let _ = (ws, token, joins);
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
    fn http(&self, req: &HttpRequest<'_>, ctx: &mut HttpCtx<'_, Self>) -> HttpResponse {
        let _ = (req, ctx);
        HttpResponse::text(426, "this is a WebSocket endpoint\n")
    }
}
