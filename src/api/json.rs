//! Typed JSON messages (feature `json`): send, publish and parse serde types, each publish serialised once.
//!
//! The parser and serialiser are `serde_json`: measured against
//! `simd-json` (`simd_json::serde::from_slice` into the same types, which
//! needs a mutable copy of the message) by `benches/json.rs`, it is the
//! faster on both sizes asked for. Instructions per parse counted by
//! callgrind (`scripts/json-callgrind.sh 2000`): a 98-byte chat message
//! 3,030 against 5,738, a 10,307-byte batch of small objects 399,454 against
//! 476,046; criterion's times on the same machine (busy, so only the ratio
//! matters): 196 ns against 442 ns and 22.3 µs against 66.7 µs.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::handler::Message;
use super::ws::Ws;
use super::Handler;
use crate::conn::SendStatus;
use crate::fanout::PublishResult;
use crate::handle::ServerHandle;
use crate::proto::PreparedFrame;

/// Why a value could not be turned into JSON, or a message into a value.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The value could not be serialised (e.g. a map with non-string keys,
    /// or a `Serialize` impl that failed).
    #[error("cannot serialise to JSON: {0}")]
    Serialize(#[source] serde_json::Error),
    /// The message is not valid JSON, or not the shape of the type asked
    /// for; the inner error names the line and column.
    #[error("invalid JSON message: {0}")]
    Deserialize(#[source] serde_json::Error),
}

/// Encodes `value` once as a text frame, ready to send to or publish for
/// any number of connections.
///
/// # Errors
/// [`JsonError::Serialize`] if `value` cannot be serialised.
///
/// # Example
/// ```
/// let frame = shardcast::json_frame(&serde_json::json!({"type": "tick", "n": 1})).unwrap();
/// assert!(frame.len() > 0);
/// ```
pub fn json_frame<T: Serialize + ?Sized>(value: &T) -> Result<PreparedFrame, JsonError> {
    let text = serde_json::to_string(value).map_err(JsonError::Serialize)?;
    Ok(PreparedFrame::text(&text))
}

impl Message<'_> {
    /// Parses the message (text, or binary holding UTF-8 JSON) as a `T`.
    ///
    /// # Errors
    /// [`JsonError::Deserialize`] if the message is not JSON or not a `T`;
    /// bad input never panics.
    ///
    /// # Example
    /// ```
    /// use shardcast::Message;
    ///
    /// #[derive(Debug, serde::Deserialize)]
    /// struct Move {
    ///     x: i32,
    /// }
    ///
    /// let m: Move = Message::Text(r#"{"x":3}"#).json().unwrap();
    /// assert_eq!(m.x, 3);
    /// let err = Message::Text("{").json::<Move>().unwrap_err();
    /// assert!(err.to_string().starts_with("invalid JSON message"));
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, JsonError> {
        match self {
            Message::Text(t) => serde_json::from_str(t),
            Message::Binary(b) => serde_json::from_slice(b),
        }
        .map_err(JsonError::Deserialize)
    }
}

impl<H: Handler> Ws<'_, H> {
    /// Sends `value` as a JSON text message.
    ///
    /// # Errors
    /// [`JsonError::Serialize`] if `value` cannot be serialised (nothing
    /// is sent).
    pub fn send_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<SendStatus, JsonError> {
        Ok(self.send_prepared(&json_frame(value)?))
    }

    /// Publishes `value` as a JSON text message to every subscriber of
    /// `topic` except this connection, on every core. It is serialised
    /// once, whatever the number of subscribers.
    ///
    /// # Errors
    /// [`JsonError::Serialize`] if `value` cannot be serialised (nothing
    /// is published).
    pub fn publish_json<T: Serialize + ?Sized>(
        &mut self,
        topic: &str,
        value: &T,
    ) -> Result<PublishResult, JsonError> {
        Ok(self.publish(topic, &json_frame(value)?, false))
    }
}

impl ServerHandle {
    /// Publishes `value` as a JSON text message to every subscriber of
    /// `topic` on every core, from any thread; serialised once. Returns
    /// the number of cores it was sent to, as [`ServerHandle::publish`].
    ///
    /// # Errors
    /// [`JsonError::Serialize`] if `value` cannot be serialised (nothing
    /// is published).
    pub fn publish_json<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<usize, JsonError> {
        Ok(self.publish(topic, &json_frame(value)?))
    }
}
