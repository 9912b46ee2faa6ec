//! shardcast: a thread-per-core WebSocket pub/sub fanout engine on io_uring.
//!
//! # Layout
//!
//! - [`proto`]: the sans-IO WebSocket protocol core (RFC 6455): handshake
//!   bytes, frame codec, SIMD unmasking, incremental UTF-8 validation and
//!   close codes. No sockets, no runtime; bytes in, events out.

#![warn(missing_docs)]

pub mod proto;
