//! A router by message type (feature `json`) for protocols shaped `{"type": "chat", "data": {…}}`.
//!
//! Each `type` has a handler taking its typed payload, registered with
//! [`Router::on`]. The router is called from [`Handler::message`]:
//!
//! ```
//! use serde::Deserialize;
//! use shardcast::router::{Ctx, Router};
//! use shardcast::{Handler, Message, Rejection, UpgradeRequest, Ws};
//!
//! #[derive(Deserialize)]
//! struct Chat {
//!     room: String,
//!     text: String,
//! }
//!
//! struct App {
//!     router: Router<App>,
//! }
//!
//! impl Handler for App {
//!     type Data = ();
//!     type Local = ();
//!     fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
//!         Ok(())
//!     }
//!     fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
//!         self.router.dispatch(ws, msg);
//!     }
//! }
//!
//! let router = Router::new().on("chat", |ctx: &mut Ctx<'_, '_, App>, chat: Chat| {
//!     let _ = ctx.publish(&chat.room, "chat", &chat.text);
//! });
//! let app = App { router };
//! # let _ = app;
//! ```
//!
//! A message that is not JSON, has no string `type`, names a type with no
//! handler, or carries a `data` that does not deserialize into the
//! handler's type is answered with a JSON error (by default
//! `{"type":"error","error":"unknown_type","detail":"…"}`, see
//! [`Router::error_reply`]) and counted ([`Router::stats`]). A missing
//! `data` is read as `null`, so `()` and `Option<T>` payloads accept it.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::handler::Message;
use super::json::{json_frame, JsonError};
use super::ws::{SubscribeError, Ws};
use super::Handler;
use crate::conn::SendStatus;
use crate::fanout::PublishResult;
use crate::proto::PreparedFrame;

/// What a handler registered with [`Router::on`] is given besides its
/// payload: the connection (every [`Ws`] method, through `Deref`) and
/// helpers that speak the `{"type", "data"}` envelope.
pub struct Ctx<'r, 'a, H: Handler> {
    ws: &'r mut Ws<'a, H>,
    ty: &'r str,
}

impl<'a, H: Handler> Ctx<'_, 'a, H> {
    /// The `type` of the message being handled.
    pub fn message_type(&self) -> &str {
        self.ty
    }

    /// Sends `{"type": ty, "data": data}` to this connection.
    ///
    /// # Errors
    /// [`JsonError::Serialize`] if `data` cannot be serialised.
    pub fn reply<T: Serialize + ?Sized>(
        &mut self,
        ty: &str,
        data: &T,
    ) -> Result<SendStatus, JsonError> {
        let frame = envelope(ty, data)?;
        Ok(self.ws.send_prepared(&frame))
    }

    /// Publishes `{"type": ty, "data": data}` to every subscriber of
    /// `topic` on every core except this connection; serialised once.
    ///
    /// # Errors
    /// [`JsonError::Serialize`] if `data` cannot be serialised.
    pub fn publish<T: Serialize + ?Sized>(
        &mut self,
        topic: &str,
        ty: &str,
        data: &T,
    ) -> Result<PublishResult, JsonError> {
        let frame = envelope(ty, data)?;
        Ok(self.ws.publish(topic, &frame, false))
    }

    /// Joins `topic` (subscribes): `Ok(false)` if it had already joined.
    ///
    /// # Errors
    /// As [`Ws::subscribe`].
    pub fn join(&mut self, topic: &str) -> Result<bool, SubscribeError> {
        self.ws.subscribe(topic)
    }

    /// Leaves `topic` (unsubscribes); false if it had not joined.
    pub fn leave(&mut self, topic: &str) -> bool {
        self.ws.unsubscribe(topic)
    }
}

impl<'a, H: Handler> Deref for Ctx<'_, 'a, H> {
    type Target = Ws<'a, H>;
    fn deref(&self) -> &Ws<'a, H> {
        self.ws
    }
}

impl<H: Handler> DerefMut for Ctx<'_, '_, H> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.ws
    }
}

/// `{"type": ty, "data": data}` encoded once as a text frame.
///
/// # Errors
/// [`JsonError::Serialize`] if `data` cannot be serialised.
pub fn envelope<T: Serialize + ?Sized>(ty: &str, data: &T) -> Result<PreparedFrame, JsonError> {
    #[derive(Serialize)]
    struct Envelope<'x, T: ?Sized> {
        r#type: &'x str,
        data: &'x T,
    }
    json_frame(&Envelope { r#type: ty, data })
}

/// Why the router could not hand a message to a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteErrorKind {
    /// Not JSON, not an object, or no string `type` (binary messages that
    /// are not UTF-8 too). Default code: `bad_message`.
    BadMessage,
    /// No handler for the message's `type`. Default code: `unknown_type`.
    UnknownType,
    /// `data` did not deserialize into the handler's payload type.
    /// Default code: `bad_payload`.
    BadPayload,
}

impl RouteErrorKind {
    /// The default `error` code: `bad_message`, `unknown_type`,
    /// `bad_payload`.
    pub fn code(self) -> &'static str {
        match self {
            RouteErrorKind::BadMessage => "bad_message",
            RouteErrorKind::UnknownType => "unknown_type",
            RouteErrorKind::BadPayload => "bad_payload",
        }
    }
}

/// A message the router could not hand to a handler, as the error reply
/// builder sees it.
#[derive(Debug, Clone, Copy)]
pub struct RouteError<'m> {
    /// What went wrong.
    pub kind: RouteErrorKind,
    /// The message's `type`, when it had one.
    pub message_type: Option<&'m str>,
    /// A human-readable explanation (the parser's message, or the
    /// unknown type).
    pub detail: &'m str,
}

/// Counts of messages the router refused, since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// [`RouteErrorKind::BadMessage`] refusals.
    pub bad_message: u64,
    /// [`RouteErrorKind::UnknownType`] refusals.
    pub unknown_type: u64,
    /// [`RouteErrorKind::BadPayload`] refusals.
    pub bad_payload: u64,
}

type Route<H> =
    Box<dyn Fn(&mut Ctx<'_, '_, H>, &str) -> Result<(), serde_json::Error> + Send + Sync>;
type ErrorReply = Box<dyn Fn(&RouteError<'_>) -> Option<String> + Send + Sync>;

/// Routes JSON messages `{"type": …, "data": …}` to a handler per type.
/// Shared by every core (it lives in the application's [`Handler`]); its
/// only shared writes are the error counters, touched on refusals only.
pub struct Router<H: Handler> {
    routes: HashMap<Box<str>, Route<H>>,
    error_reply: ErrorReply,
    bad_message: AtomicU64,
    unknown_type: AtomicU64,
    bad_payload: AtomicU64,
}

impl<H: Handler> Default for Router<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Handler> Router<H> {
    /// A router with no routes and the default error reply.
    pub fn new() -> Self {
        Self {
            routes: HashMap::new(),
            error_reply: Box::new(|e| Some(default_error_reply(e))),
            bad_message: AtomicU64::new(0),
            unknown_type: AtomicU64::new(0),
            bad_payload: AtomicU64::new(0),
        }
    }

    /// Handles messages of type `ty` with `f`, given `data` deserialized
    /// as a `T`. A later registration of the same type replaces the
    /// earlier one.
    pub fn on<T, F>(mut self, ty: &str, f: F) -> Self
    where
        T: DeserializeOwned,
        F: Fn(&mut Ctx<'_, '_, H>, T) + Send + Sync + 'static,
    {
        let route: Route<H> = Box::new(move |ctx, data| {
            let payload: T = serde_json::from_str(data)?;
            f(ctx, payload);
            Ok(())
        });
        self.routes.insert(ty.into(), route);
        self
    }

    /// Replaces the error reply: `f` returns the text to send, or `None`
    /// to send nothing (the refusal is still counted). Default:
    /// `{"type":"error","error":CODE,"detail":DETAIL}` plus `"for":TYPE`
    /// when the message had a type, CODE being [`RouteErrorKind::code`].
    pub fn error_reply(
        mut self,
        f: impl Fn(&RouteError<'_>) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.error_reply = Box::new(f);
        self
    }

    /// The types with a handler, in no particular order.
    pub fn types(&self) -> impl Iterator<Item = &str> + '_ {
        self.routes.keys().map(|k| &**k)
    }

    /// Refusals counted so far, over every core.
    pub fn stats(&self) -> RouterStats {
        RouterStats {
            bad_message: self.bad_message.load(Ordering::Relaxed),
            unknown_type: self.unknown_type.load(Ordering::Relaxed),
            bad_payload: self.bad_payload.load(Ordering::Relaxed),
        }
    }

    /// Routes one message: runs its type's handler, or sends the error
    /// reply and counts the refusal. Returns the refusal's kind, if any.
    /// Bad input never panics.
    pub fn dispatch(&self, ws: &mut Ws<'_, H>, msg: Message<'_>) -> Option<RouteErrorKind> {
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(b) => match std::str::from_utf8(b) {
                Ok(t) => t,
                Err(_) => {
                    return self.refuse(ws, RouteErrorKind::BadMessage, None, "not UTF-8");
                }
            },
        };
        #[derive(Deserialize)]
        struct Envelope<'m> {
            // A `Cow`: a type spelled with escapes cannot be borrowed.
            #[serde(borrow)]
            r#type: std::borrow::Cow<'m, str>,
            #[serde(borrow, default)]
            data: Option<&'m RawValue>,
        }
        let env: Envelope<'_> = match serde_json::from_str(text) {
            Ok(e) => e,
            Err(e) => {
                let detail = e.to_string();
                return self.refuse(ws, RouteErrorKind::BadMessage, None, &detail);
            }
        };
        let ty: &str = &env.r#type;
        let Some(route) = self.routes.get(ty) else {
            let detail = format!("no handler for type {ty:?}");
            return self.refuse(ws, RouteErrorKind::UnknownType, Some(ty), &detail);
        };
        let data = env.data.map_or("null", RawValue::get);
        let mut ctx = Ctx { ws: &mut *ws, ty };
        match route(&mut ctx, data) {
            Ok(()) => None,
            Err(e) => {
                let detail = e.to_string();
                self.refuse(ws, RouteErrorKind::BadPayload, Some(ty), &detail)
            }
        }
    }

    fn refuse(
        &self,
        ws: &mut Ws<'_, H>,
        kind: RouteErrorKind,
        message_type: Option<&str>,
        detail: &str,
    ) -> Option<RouteErrorKind> {
        let counter = match kind {
            RouteErrorKind::BadMessage => &self.bad_message,
            RouteErrorKind::UnknownType => &self.unknown_type,
            RouteErrorKind::BadPayload => &self.bad_payload,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let err = RouteError {
            kind,
            message_type,
            detail,
        };
        if let Some(reply) = (self.error_reply)(&err) {
            ws.send_text(&reply);
        }
        Some(kind)
    }
}

/// The default error reply; see [`Router::error_reply`].
pub fn default_error_reply(e: &RouteError<'_>) -> String {
    let mut v = serde_json::json!({
        "type": "error",
        "error": e.kind.code(),
        "detail": e.detail,
    });
    if let Some(t) = e.message_type {
        v["for"] = serde_json::Value::from(t);
    }
    v.to_string()
}
