//! shardcast: a thread-per-core WebSocket pub/sub fanout engine on io_uring.
//!
//! # Layout
//!
//! Data crosses the engine one way, and each module imports only modules
//! below it in this list:
//!
//! ```text
//! socket ─▶ io (task, accept, dispatch) ─▶ api (Handler, Ws) ─▶ state (Core)
//!        ─▶ handle ─▶ fanout ─▶ mesh ─▶ conn (table, outbox) ─▶ socket
//! ```
//!
//! - `engine`: [`Server::start`]: binds the listeners, starts one pinned
//!   thread per core with its own monoio runtime, and runs each core's
//!   tasks (accept loop, inbox, flusher, ticker).
//! - `io`: one connection's task: readiness-driven reads into the core's
//!   scratch buffer, the answer to the HTTP request (plain HTTP, rejection
//!   or upgrade) and the dispatch of decoded messages to callbacks.
//! - `api`: the embedding API: [`Handler`], [`Ws`], [`HttpCtx`] and the
//!   request and response types; async sessions ([`Ws::spawn_session`],
//!   [`Session`]) that drive a connection from a task on its core; with feature `json`, typed JSON messages
//!   (`Ws::send_json`, `Message::json`, `json_frame`) and `router`, a
//!   router by message type.
//! - `state`: one core's state: connection table, topics, the
//!   application's [`Handler::Local`], and the one way to publish.
//! - `handle`: [`ServerHandle`], usable from any thread.
//! - `fanout`: local delivery and the one function that hands a frame to
//!   the other interested cores.
//! - `mesh`: between cores: lock-free mailboxes, their messages, counted
//!   publishes.
//! - `conn`: one core's connections: [`ConnId`], the table with each
//!   connection's lifecycle and deadlines, the outbox and its gathered
//!   writes.
//! - [`stats`]: per-core counters.
//! - [`pubsub`]: the topic registry and the cross-core interest table (no
//!   I/O).
//! - [`proto`]: the sans-IO WebSocket protocol (RFC 6455): handshake bytes,
//!   frame codec, SIMD unmasking, incremental UTF-8 validation, close codes.
//! - `sys`: the few raw socket calls.
//! - [`config`]: [`Config`] with every limit and its default.
//! - [`alloc`]: the mimalloc setting the binaries use so that memory freed
//!   after a burst of connections goes back to the system.
//! - [`cluster`] (feature `cluster`, on with `server`): multi-node fanout
//!   through a NATS or Redis broker, on a bridge thread of its own.
//! - [`server`] (feature `server`, on by default): the standalone server
//!   behind the `shardcast` binary, written against the public API above
//!   like any other application.

#![warn(missing_docs)]
#![warn(unreachable_pub)]

// Lets the standalone server (`server/`) name the engine as `shardcast::`,
// the way an application does.
extern crate self as shardcast;

pub mod alloc;
mod api;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
mod conn;
mod engine;
mod fanout;
mod handle;
mod io;
mod mesh;
pub mod proto;
pub mod pubsub;
#[cfg(feature = "server")]
pub mod server;
mod state;
pub mod stats;
pub mod streams;
mod sys;
mod uring;
mod uring_probe;

#[cfg(feature = "json")]
pub use api::{json_frame, router, JsonError};
pub use api::{
    Handler, HttpCtx, HttpRequest, HttpResponder, HttpResponse, Message, Rejection, SendError,
    Session, SpawnError, SubscribeError, UpgradeRequest, Ws, SESSION_QUEUE,
};
pub use config::{Compression, Config, IoPath, NodeLink, SlowConsumerPolicy, TaskRun};
pub use conn::{ConnId, OwnedMessage, PositionReader, SendStatus};
pub use engine::Server;
pub use fanout::PublishResult;
pub use handle::{DriverKind, HandleError, ServerHandle};
pub use mesh::{CoreView, PublishReport};
pub use proto::{CloseCode, PreparedFrame};
pub use stats::{CoreStats, MemoryGauges, StatsSnapshot};
pub use streams::{History, HistoryConfig, HistoryPolicy, Since, StreamJoin, StreamPosition};
pub use uring_probe::UringFeatures;

/// The README's examples compile as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The guides' examples compile as doctests.
#[doc = include_str!("../docs/getting-started.md")]
#[cfg(doctest)]
pub struct GettingStartedDoctests;

#[doc = include_str!("../docs/pubsub-patterns.md")]
#[cfg(doctest)]
pub struct PubsubPatternsDoctests;

#[doc = include_str!("../docs/migrating-from-tokio-tungstenite.md")]
#[cfg(doctest)]
pub struct MigratingDoctests;
