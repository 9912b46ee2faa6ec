//! A resilient [shardcast](https://docs.rs/shardcast) client on tokio: it reconnects with
//! jittered exponential backoff, detects dead connections with a heartbeat,
//! queues messages while offline, resubscribes after a reconnect and counts
//! what it does.
//!
//! ```no_run
//! use std::time::Duration;
//! use shardcast_client::{Client, Config, Delivery, Event};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::start(Config::new("ws://127.0.0.1:8080/ws")?)?;
//! client.connected(Duration::from_secs(5)).await?;
//! let mut news = client.subscribe("news").await?;
//! client.publish("news", r#"{"hello":"world"}"#, Delivery::Queue)?;
//! while let Some(event) = news.recv().await {
//!     match event {
//!         Event::Message(m) => println!("{}: {}", m.topic, m.data),
//!         Event::Gap { recovered, .. } => println!("reconnected; missed messages recovered: {recovered}"),
//!         other => println!("{other:?}"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Recovery on history topics
//!
//! On topics the server keeps history for (`--history 'PATTERN=SIZE,TTL_SECS'`),
//! every message carries a [`Position`] (an offset within an epoch). The client
//! keeps each topic's last position ([`Client::position`]) and, after a
//! reconnect, subscribes again *from* it: the server replays exactly the
//! messages published meanwhile, in order, before the live stream. Each
//! subscription stream first gets [`Event::Gap`] with `recovered: true`, then
//! those messages; nothing is lost and nothing is duplicated (a message at or
//! before the position would be dropped and counted in
//! [`MetricsSnapshot::duplicates`]; offsets skipped on an open connection, by a
//! server whose slow-consumer policy drops messages, are counted in
//! [`MetricsSnapshot::skipped`]). When the server cannot recover (it
//! restarted, so the epoch changed; the history expired or no longer holds
//! every missed message), the gap says `recovered: false` with the position the
//! stream goes on from. Topics without history get `recovered: false` and no
//! positions.
//!
//! The WebSocket protocol itself (handshake, frames, masks) is
//! `shardcast::proto`, used in the client role; this crate adds the I/O.
//!
//! # Layout
//!
//! - [`url`]: `ws://` / `wss://` URL parsing and validation.
//! - `config`: [`Config`], every setting with its default.
//! - [`reconnect`]: [`BackoffPolicy`] (full jitter) and [`ClosePolicy`]; no I/O, no clock.
//! - `state`: [`State`], [`StateChange`] and [`Reason`].
//! - `queue`: the bounded outgoing queue (count and bytes).
//! - `registry`: subscriptions, positions, resubscribe and gap reporting.
//! - `protocol`: the server's JSON messages.
//! - `metrics`: [`MetricsSnapshot`].
//! - `transport`: TCP, TLS (feature `tls`) and the opening handshake.
//! - `conn`: one open connection: reader, heartbeat, writer.
//! - `shared`: state the handles, the driver and the connection share.
//! - `client`: [`Client`], [`Subscription`] and the driver task.
//! - `error`: one error enum per layer.

#![warn(missing_docs)]

mod client;
mod config;
mod conn;
mod error;
mod metrics;
mod protocol;
mod queue;
pub mod reconnect;
mod registry;
mod shared;
mod state;
mod transport;
pub mod url;

pub use client::{Client, Subscription};
pub use config::{Config, Heartbeat, TokenPlacement};
pub use error::{ConfigError, ConnectError, ConnectionError, Error, UrlError};
pub use metrics::MetricsSnapshot;
pub use reconnect::{Backoff, BackoffPolicy, ClosePolicy, Jitter, Verdict};
pub use registry::{Event, Message, Position};
pub use shared::Delivery;
pub use state::{Reason, State, StateChange};
