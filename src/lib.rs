//! shardcast: a thread-per-core WebSocket pub/sub fanout engine on io_uring.
//!
//! # Layout
//!
//! - [`proto`]: the sans-IO WebSocket protocol core (RFC 6455): handshake
//!   bytes, frame codec, SIMD unmasking, incremental UTF-8 validation and
//!   close codes. No sockets, no runtime; bytes in, events out.
//! - [`pubsub`]: the per-core topic registry and the lock-free cross-core
//!   interest table (no I/O).
//! - `shard`: one pinned thread per core with its own monoio runtime,
//!   SO_REUSEPORT listener, connection slab, timer wheel and inbox; the
//!   [`Server`] and its thread-safe [`ServerHandle`].
//! - `conn`: one connection: readiness-driven reads into the core's scratch
//!   buffer, the outbox and its gathered writes.
//! - [`handler`]: the embedding API, [`Handler`] and [`Ws`].
//! - [`config`]: [`Config`] with every limit and its default.
//! - [`alloc`]: the mimalloc setting the binaries use so that memory freed
//!   after a burst of connections goes back to the system.
//! - [`server`] (feature `server`, on by default): the standalone server
//!   behind the `shardcast` binary: JSON protocol, HTTP API, auth, limits,
//!   metrics, status page.

#![warn(missing_docs)]

pub mod alloc;
pub mod config;
mod conn;
pub mod handler;
pub mod proto;
pub mod pubsub;
#[cfg(feature = "server")]
pub mod server;
mod shard;

pub use config::{Config, SlowConsumerPolicy};
pub use conn::{ConnId, SendStatus};
pub use handler::{
    Handler, HttpCtx, HttpRequest, HttpResponder, HttpResponse, Message, PublishResult, Rejection,
    UpgradeRequest, Ws,
};
pub use proto::{CloseCode, PreparedFrame};
pub use shard::{
    CoreStats, CoreView, DriverKind, HandleError, MemoryGauges, PublishReport, Server,
    ServerHandle, StatsSnapshot,
};

/// The pure parsers of the server's inputs, for the fuzz targets in
/// `fuzz/`: the same functions the server runs, not a stable API.
#[doc(hidden)]
#[cfg(feature = "server")]
pub mod fuzzing {
    pub use crate::server::command::{
        error_json, parse_command, reply_json, topics_reply_json, Command, Op, ProtocolError,
    };
    pub use crate::server::http::{
        endpoint, parse_publish_body, presented_key, Endpoint, HttpError, PublishBody, PublishItem,
    };
    pub use crate::server::protocol::message_frame;
}

/// The README's examples compile as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
