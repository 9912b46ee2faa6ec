//! UTF-8 validation, whole and incremental across fragment boundaries.
//!
//! Both run simdutf8's SIMD validator over the bulk of the bytes. The
//! incremental validator finds an unfinished code point at the end of a
//! chunk by looking back at most three bytes, so every byte is validated
//! once; the few bytes of a code point split across chunks are checked by
//! hand against the well-formed byte ranges (Unicode Table 3-7).

/// Outcome of feeding a chunk to an [`Utf8Validator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Utf8Error {
    /// The bytes seen so far can never become valid UTF-8.
    Invalid,
}

/// Validates a whole buffer as UTF-8.
#[inline]
pub fn validate(buf: &[u8]) -> bool {
    simdutf8::basic::from_utf8(buf).is_ok()
}

/// Validates UTF-8 that arrives in pieces, failing as soon as an invalid
/// sequence is seen (not only at the end of the message).
///
/// "As soon as" is exact: [`feed`](Self::feed) fails for the first chunk
/// after which the bytes so far are no longer the beginning of any valid
/// UTF-8 text, even when the offending sequence started in an earlier chunk.
/// Holds at most three bytes of an unfinished code point between chunks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Utf8Validator {
    /// The start of a code point cut by the last chunk boundary.
    pending: [u8; 4],
    /// How many bytes of `pending` are in use (0 to 3).
    pending_len: u8,
    /// Set once an error was reported: later chunks cannot repair it.
    failed: bool,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Self {
            pending: [0; 4],
            pending_len: 0,
            failed: false,
        }
    }

    /// Whether the bytes fed so far end on a code point boundary (and no
    /// error was found).
    pub fn is_complete(&self) -> bool {
        self.pending_len == 0 && !self.failed
    }

    /// Feeds the next chunk of the message.
    ///
    /// # Errors
    /// [`Utf8Error::Invalid`] when the data so far cannot be a prefix of
    /// valid UTF-8. Once returned, every later call returns it too, until
    /// [`finish`](Self::finish) starts a new message.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Utf8Error> {
        if self.failed || !self.feed_inner(chunk) {
            self.failed = true;
            return Err(Utf8Error::Invalid);
        }
        Ok(())
    }

    /// Ends the message and resets the validator for the next one.
    ///
    /// # Errors
    /// [`Utf8Error::Invalid`] when the message stops inside a code point, or
    /// an earlier [`feed`](Self::feed) failed.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let complete = self.is_complete();
        *self = Self::new();
        if complete {
            Ok(())
        } else {
            Err(Utf8Error::Invalid)
        }
    }

    /// Returns whether the bytes so far, `chunk` included, can still begin
    /// valid UTF-8.
    fn feed_inner(&mut self, mut chunk: &[u8]) -> bool {
        if self.pending_len > 0 {
            // Complete the code point cut by the previous boundary.
            let have = usize::from(self.pending_len);
            let need = sequence_len(self.pending[0]);
            let take = (need - have).min(chunk.len());
            let now = have + take;
            self.pending[have..now].copy_from_slice(&chunk[..take]);
            if !is_sequence_prefix(&self.pending[..now]) {
                return false;
            }
            chunk = &chunk[take..];
            if now < need {
                self.pending_len = now as u8;
                return true;
            }
            self.pending_len = 0;
        }
        let (body, tail) = chunk.split_at(unfinished_tail_start(chunk));
        if !validate(body) {
            return false;
        }
        if !tail.is_empty() {
            if !is_sequence_prefix(tail) {
                return false;
            }
            self.pending[..tail.len()].copy_from_slice(tail);
            self.pending_len = tail.len() as u8;
        }
        true
    }
}

/// The length of the sequence a lead byte announces (1 for anything that
/// is not a multi-byte lead; validation rejects the invalid ones).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xff => 4,
        _ => 1,
    }
}

/// Where a code point that `chunk` starts but does not finish begins, or
/// `chunk.len()` when it ends on a boundary (or on bytes that validation
/// will reject anyway). A code point is at most four bytes, so its lead is
/// among the last three when it is unfinished.
#[inline]
fn unfinished_tail_start(chunk: &[u8]) -> usize {
    let n = chunk.len();
    if chunk.last().is_none_or(|b| b.is_ascii()) {
        return n;
    }
    for back in 1..=n.min(3) {
        let b = chunk[n - back];
        if b & 0xc0 != 0x80 {
            return if sequence_len(b) > back { n - back } else { n };
        }
    }
    n
}

/// Whether `bytes` (at most four) are the first bytes of one well-formed
/// code point, complete or not. The second byte's range is what excludes
/// overlong forms, surrogates and values above U+10FFFF.
fn is_sequence_prefix(bytes: &[u8]) -> bool {
    let Some(&lead) = bytes.first() else {
        return true;
    };
    let (len, second) = match lead {
        0x00..=0x7f => (1, 0x80..=0xbf),
        0xc2..=0xdf => (2, 0x80..=0xbf),
        0xe0 => (3, 0xa0..=0xbf),
        0xe1..=0xec | 0xee..=0xef => (3, 0x80..=0xbf),
        0xed => (3, 0x80..=0x9f),
        0xf0 => (4, 0x90..=0xbf),
        0xf1..=0xf3 => (4, 0x80..=0xbf),
        0xf4 => (4, 0x80..=0x8f),
        _ => return false,
    };
    bytes.len() <= len
        && bytes.get(1).is_none_or(|b| second.contains(b))
        && bytes.iter().skip(2).all(|&b| b & 0xc0 == 0x80)
}

#[cfg(test)]
mod tests;
