//! The sans-IO WebSocket protocol core (RFC 6455): bytes in; "need more bytes", an event or an error out.
//!
//! Nothing in this module performs I/O or depends on a runtime. Replies the
//! peer is owed (pong, close) are returned to the caller as values.

pub mod close;
pub mod decode;
pub mod deflate;
pub mod encode;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use decode::{Decoded, Decoder, Incoming, Limits, OwnedIncoming, Reply, Role};
pub use error::ProtocolError;
pub use frame::{FrameHeader, OpCode, PreparedFrame, MAX_HEADER_LEN};
