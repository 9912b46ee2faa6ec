//! The receiving half of permessage-deflate: a client's compressed message back to its bytes, never more of them than the caller allows.

use flate2::{Decompress, FlushDecompress, Status};

use crate::proto::close::CloseCode;
use crate::proto::utf8::Utf8Validator;

/// RFC 7692 §7.2.2: the sender removed these four bytes (the end of an
/// empty stored block) from the end of each message; the receiver appends
/// them before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The first output allocation of a message; it then doubles, up to the limit.
const FIRST_CHUNK: usize = 4096;

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InflateError {
    /// The inflated message would be larger than the limit: stopped as soon
    /// as one byte more than the limit was produced (a decompression bomb
    /// costs the limit, not its inflated size).
    #[error("inflated message larger than the configured maximum")]
    TooLarge,
    /// The payload is not a valid raw DEFLATE stream.
    #[error("invalid compressed data")]
    Corrupt,
    /// A text message inflated to bytes that are not UTF-8.
    #[error("invalid UTF-8 in a compressed text message")]
    InvalidUtf8,
}

impl InflateError {
    /// The close code that fails the connection: 1009 for
    /// [`TooLarge`](Self::TooLarge), 1007 for the others (data that is not
    /// what the message claims to be, RFC 6455 §7.4.1).
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::TooLarge => CloseCode::MESSAGE_TOO_BIG,
            Self::Corrupt | Self::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
        }
    }
}

/// One connection's inflater: a streaming raw-DEFLATE decompressor with the
/// negotiated window, kept between messages only when the client may refer
/// to earlier ones (context takeover).
#[derive(Debug)]
pub struct Inflater {
    /// Allocated on the first compressed message; dropped after each one
    /// under `client_no_context_takeover`, so an idle connection holds none.
    state: Option<Box<Decompress>>,
    window_bits: u8,
    no_context_takeover: bool,
}

impl Inflater {
    /// An inflater for a client that compresses with at most `window_bits`
    /// (8..=15) and, with `no_context_takeover`, compresses every message
    /// on its own. Allocates nothing until the first message.
    pub fn new(window_bits: u8, no_context_takeover: bool) -> Self {
        Self {
            state: None,
            // zlib's smallest raw-deflate window is 9 bits; a 512-byte
            // window decodes every stream made with a 256-byte one.
            window_bits: window_bits.clamp(9, 15),
            no_context_takeover,
        }
    }

    /// Whether decompressor state is held between messages right now.
    pub fn holds_state(&self) -> bool {
        self.state.is_some()
    }

    /// Inflates one whole message's `payload` (its fragments joined, the
    /// four-byte tail removed by the sender) into `out`, which it clears
    /// first. Output grows in steps and never past `max + 1` bytes of
    /// capacity: a bomb fails once it has produced `max + 1` bytes. With
    /// `text`, the output is checked for UTF-8 as it is produced.
    ///
    /// # Errors
    ///
    /// [`InflateError::TooLarge`] beyond `max` bytes,
    /// [`InflateError::Corrupt`] for data that is not raw DEFLATE,
    /// [`InflateError::InvalidUtf8`] for text that is not UTF-8. After an
    /// error the connection must be failed; the inflater is reset.
    pub fn inflate(
        &mut self,
        payload: &[u8],
        max: usize,
        text: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        out.clear();
        let bits = self.window_bits;
        let state = self
            .state
            .get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, bits)));
        let mut utf8 = text.then(Utf8Validator::new);
        let result = run(state, payload, max, out, utf8.as_mut())
            .and_then(|ended| {
                if ended {
                    return Ok(true);
                }
                run(state, &TAIL, max, out, utf8.as_mut())
            })
            .and_then(|ended| {
                if let Some(v) = utf8.as_mut() {
                    v.finish().map_err(|_| InflateError::InvalidUtf8)?;
                }
                Ok(ended)
            });
        match result {
            // A final block ends the stream: the next message starts a
            // new one, whatever the context takeover.
            Ok(false) if !self.no_context_takeover => {}
            _ => self.state = None,
        }
        result.map(drop)
    }
}

/// Feeds all of `input` to `state`, appending to `out`. Returns whether the
/// stream ended (a block with BFINAL).
fn run(
    state: &mut Decompress,
    mut input: &[u8],
    max: usize,
    out: &mut Vec<u8>,
    mut utf8: Option<&mut Utf8Validator>,
) -> Result<bool, InflateError> {
    let cap = max.saturating_add(1);
    loop {
        if out.len() == out.capacity() {
            if out.len() >= cap {
                return Err(InflateError::TooLarge);
            }
            let step = out.len().max(FIRST_CHUNK).min(cap - out.len());
            out.reserve_exact(step);
        }
        let (in_before, len_before) = (state.total_in(), out.len());
        let status = state
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        // Bounded by `input.len()`: the decompressor reads no more than it is given.
        let read = (state.total_in() - in_before) as usize;
        input = &input[read..];
        if let Some(v) = utf8.as_deref_mut() {
            v.feed(&out[len_before..])
                .map_err(|_| InflateError::InvalidUtf8)?;
        }
        if out.len() > max {
            return Err(InflateError::TooLarge);
        }
        match status {
            Status::StreamEnd => return Ok(true),
            // Room left in `out` and no input left: everything is out.
            _ if input.is_empty() && out.len() < out.capacity() => return Ok(false),
            // No progress with room to spare: the input is cut short,
            // which the next piece (the tail) completes.
            Status::BufError if out.len() < out.capacity() && read == 0 => return Ok(false),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
