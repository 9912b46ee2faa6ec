//! permessage-deflate (RFC 7692): choosing an offer from `Sec-WebSocket-Extensions`, compressing what the server sends, and inflating what a client compressed.
//!
//! Sans-IO like the rest of [`proto`](crate::proto): the negotiation reads a
//! parsed request's offers and writes the answer for the 101; the inflater
//! turns a message's compressed payload into bytes, bounded by the size the
//! caller allows.

mod compress;
mod inflate;
mod negotiate;

pub use compress::{fits_window, split, Deflater, SharedDeflate};
pub use inflate::{InflateError, Inflater};
pub use negotiate::{negotiate, parse_offer, DeflateConfig, DeflateParams, Offer, OfferError};

/// The extension token (RFC 7692 §7).
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";
