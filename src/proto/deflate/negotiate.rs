//! Which permessage-deflate offer the server accepts, with which parameters (RFC 7692 §5, §7.1).

use std::fmt::Write as _;

use super::PERMESSAGE_DEFLATE;
use crate::proto::handshake::Extension;

/// What the server is willing to negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Answer with `server_no_context_takeover` whether or not the client
    /// asked for it (§7.1.1.1 allows it): every message the server sends is
    /// compressed on its own, so one compressed frame suits every
    /// subscriber. Default: true.
    pub server_no_context_takeover: bool,
    /// Answer with `client_no_context_takeover` whether or not the client
    /// offered it (§7.1.1.2 allows it): the inflater is then freed between
    /// messages instead of keeping the client's window and the inflater's
    /// state per connection (47 KiB with zlib-rs). Default: true.
    pub client_no_context_takeover: bool,
    /// The largest LZ77 window (8..=15) the server lets a client compress
    /// with, when the client says it can limit it (`client_max_window_bits`
    /// in its offer); the inflater's window is this large at most.
    /// Default: 15.
    pub client_max_window_bits: u8,
    /// The largest LZ77 window (8..=15) the server compresses with. An
    /// offer asking for a smaller one (`server_max_window_bits`) gets it:
    /// messages longer than that window then go to that client
    /// uncompressed. Default: 15.
    pub server_max_window_bits: u8,
    /// zlib compression level (0..=9) of what the server compresses.
    /// Default: 6; a published message is compressed once for all its
    /// subscribers, so a better ratio is cheap there.
    pub level: u32,
    /// Messages whose payload is shorter than this many bytes are sent
    /// uncompressed: below it deflate saves little or adds bytes, and
    /// costs CPU on both ends. Default: 128.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            client_max_window_bits: 15,
            server_max_window_bits: 15,
            level: 6,
            threshold: 128,
        }
    }
}

impl DeflateConfig {
    /// Sets [`client_no_context_takeover`](Self::client_no_context_takeover). Default: true.
    pub fn with_client_no_context_takeover(mut self, on: bool) -> Self {
        self.client_no_context_takeover = on;
        self
    }

    /// Sets [`server_no_context_takeover`](Self::server_no_context_takeover). Default: true.
    pub fn with_server_no_context_takeover(mut self, on: bool) -> Self {
        self.server_no_context_takeover = on;
        self
    }

    /// Sets [`client_max_window_bits`](Self::client_max_window_bits),
    /// clamped to 8..=15. Default: 15.
    pub fn with_client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = bits.clamp(8, 15);
        self
    }

    /// Sets [`server_max_window_bits`](Self::server_max_window_bits),
    /// clamped to 8..=15. Default: 15.
    pub fn with_server_max_window_bits(mut self, bits: u8) -> Self {
        self.server_max_window_bits = bits.clamp(8, 15);
        self
    }

    /// Sets [`level`](Self::level), clamped to 0..=9. Default: 6.
    pub fn with_level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// Sets [`threshold`](Self::threshold). Default: 128.
    pub fn with_threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }
}

/// One syntactically valid permessage-deflate offer (§7.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offer {
    /// `server_no_context_takeover` was offered.
    pub server_no_context_takeover: bool,
    /// `client_no_context_takeover` was offered.
    pub client_no_context_takeover: bool,
    /// `server_max_window_bits=N`, if offered.
    pub server_max_window_bits: Option<u8>,
    /// `client_max_window_bits` was offered: `Some(None)` without a value,
    /// `Some(Some(n))` with one.
    pub client_max_window_bits: Option<Option<u8>>,
}

/// Why an offer is invalid; RFC 7692 §7: the server "MUST decline" it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// Not a permessage-deflate element.
    #[error("not a permessage-deflate offer")]
    OtherExtension,
    /// "an extension parameter not defined for use in an offer".
    #[error("unknown parameter {0:?}")]
    UnknownParameter(String),
    /// "an extension parameter with an invalid value".
    #[error("invalid value for {0}")]
    InvalidValue(&'static str),
    /// "multiple extension parameters with the same name".
    #[error("duplicate parameter {0}")]
    DuplicateParameter(&'static str),
}

/// The parameters both ends agreed on, and the element that says so in
/// the 101's `Sec-WebSocket-Extensions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server compresses every message on its own.
    pub server_no_context_takeover: bool,
    /// The client compresses every message on its own: the inflater may
    /// be dropped between messages.
    pub client_no_context_takeover: bool,
    /// The server's LZ77 window, 8..=15.
    pub server_max_window_bits: u8,
    /// The largest window the client may use, 8..=15; the inflater's window.
    pub client_max_window_bits: u8,
    /// Whether the answer names `client_max_window_bits` (only allowed when
    /// the offer did, §7.1.2.2).
    answer_client_window: bool,
}

impl DeflateParams {
    /// The `Sec-WebSocket-Extensions` value that accepts the offer.
    pub fn response(&self) -> String {
        let mut s = String::from(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            let _ = write!(
                s,
                "; server_max_window_bits={}",
                self.server_max_window_bits
            );
        }
        if self.answer_client_window {
            let _ = write!(
                s,
                "; client_max_window_bits={}",
                self.client_max_window_bits
            );
        }
        s
    }
}

/// §7.1.2.1: "a decimal integer value without leading zeroes between 8 to
/// 15, inclusive". A quoted value has had its quotes removed already
/// (§7.1: it must conform "after unescaping").
fn window_bits(value: &str) -> Option<u8> {
    match value.as_bytes() {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// Reads one `Sec-WebSocket-Extensions` element as a permessage-deflate offer.
///
/// # Errors
///
/// [`OfferError::OtherExtension`] for another extension; otherwise the
/// reasons §7 gives for declining: an unknown parameter, an invalid value,
/// a parameter named twice.
pub fn parse_offer(ext: &Extension<'_>) -> Result<Offer, OfferError> {
    if !ext.name().eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
        return Err(OfferError::OtherExtension);
    }
    let mut offer = Offer::default();
    let mut seen = [false; 4];
    for (name, value) in ext.params() {
        const NAMES: [&str; 4] = [
            "server_no_context_takeover",
            "client_no_context_takeover",
            "server_max_window_bits",
            "client_max_window_bits",
        ];
        let Some(i) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)) else {
            return Err(OfferError::UnknownParameter(name.to_owned()));
        };
        if std::mem::replace(&mut seen[i], true) {
            return Err(OfferError::DuplicateParameter(NAMES[i]));
        }
        let invalid = OfferError::InvalidValue(NAMES[i]);
        match (i, value) {
            // §7.1.1.1, §7.1.1.2: these have no value.
            (0, None) => offer.server_no_context_takeover = true,
            (1, None) => offer.client_no_context_takeover = true,
            (0 | 1, Some(_)) => return Err(invalid),
            // §7.1.2.1: server_max_window_bits always has a value.
            (2, v) => offer.server_max_window_bits = Some(v.and_then(window_bits).ok_or(invalid)?),
            // §7.1.2.2: client_max_window_bits may come without one.
            (_, None) => offer.client_max_window_bits = Some(None),
            (_, Some(v)) => {
                offer.client_max_window_bits = Some(Some(window_bits(v).ok_or(invalid)?));
            }
        }
    }
    Ok(offer)
}

/// The parameters to accept `offer` with, or `None` if the server must
/// decline it.
fn accept(offer: &Offer, cfg: &DeflateConfig) -> Option<DeflateParams> {
    // §7.1.2.1: a client that limits the server's window gets that limit
    // (never more than ours). Any limit is supported: a message compressed
    // without context is sent compressed only if it is no longer than the
    // window (see `fits_window`), which no zlib window size restricts.
    let ours = cfg.server_max_window_bits.clamp(8, 15);
    let server_bits = offer.server_max_window_bits.map_or(ours, |b| b.min(ours));
    // §7.1.1.1: accepting an offer with server_no_context_takeover means
    // including it in the answer, i.e. compressing without context; the
    // server may also add it on its own. It does when configured to, and
    // for an 8-bit window, which zlib cannot keep between messages.
    let server_no_context_takeover =
        cfg.server_no_context_takeover || offer.server_no_context_takeover || server_bits < 9;
    let client_bits = cfg.client_max_window_bits.clamp(8, 15);
    let (client_window, answer_client_window) = match offer.client_max_window_bits {
        // §7.1.2.2: "If a received extension negotiation offer doesn't have
        // the client_max_window_bits extension parameter, the corresponding
        // extension negotiation response to the offer MUST NOT include" it;
        // the client may then use a 32 KiB window.
        None => (15, false),
        // The client can limit its window: limit it to ours (and to its
        // own hint, which a larger answer would contradict).
        Some(hint) => (hint.map_or(client_bits, |h| h.min(client_bits)), true),
    };
    Some(DeflateParams {
        server_no_context_takeover,
        client_no_context_takeover: cfg.client_no_context_takeover
            || offer.client_no_context_takeover,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_window,
        answer_client_window,
    })
}

/// Chooses the first permessage-deflate offer in `offers` (the client's
/// order of preference, RFC 7692 §5) that is valid and that `cfg` allows.
///
/// Invalid offers (unknown or repeated parameters, bad values) are
/// declined, as §7 requires, and the next one is tried; `None` means no
/// offer is accepted and the 101 names no extension.
pub fn negotiate<'a>(
    offers: impl IntoIterator<Item = Extension<'a>>,
    cfg: &DeflateConfig,
) -> Option<DeflateParams> {
    offers
        .into_iter()
        .filter_map(|e| parse_offer(&e).ok())
        .find_map(|o| accept(&o, cfg))
}

#[cfg(test)]
mod tests;
