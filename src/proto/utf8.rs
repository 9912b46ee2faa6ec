//! UTF-8 validation, whole and incremental across fragment boundaries.

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
/// Holds at most three bytes of an unfinished code point between chunks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Self {
            pending: [0; 4],
            pending_len: 0,
        }
    }

    /// Whether the bytes fed so far end on a code point boundary.
    pub fn is_complete(&self) -> bool {
        self.pending_len == 0
    }

    /// Feeds the next chunk of the message.
    ///
    /// # Errors
    /// [`Utf8Error::Invalid`] when the data so far cannot be a prefix of
    /// valid UTF-8.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), Utf8Error> {
        if self.pending_len > 0 {
            // Finish the code point split over the previous boundary.
            let have = self.pending_len as usize;
            let need = utf8_len(self.pending[0]).ok_or(Utf8Error::Invalid)?;
            let take = (need - have).min(chunk.len());
            self.pending[have..have + take].copy_from_slice(&chunk[..take]);
            let now = have + take;
            match simdutf8::compat::from_utf8(&self.pending[..now]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => {
                    self.pending_len = now as u8;
                    return Ok(());
                }
                Err(_) => return Err(Utf8Error::Invalid),
            }
            chunk = &chunk[take..];
        }
        match simdutf8::compat::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let rest = &chunk[e.valid_up_to()..];
                self.pending[..rest.len()].copy_from_slice(rest);
                self.pending_len = rest.len() as u8;
                Ok(())
            }
            Err(_) => Err(Utf8Error::Invalid),
        }
    }

    /// Ends the message.
    ///
    /// # Errors
    /// [`Utf8Error::Invalid`] when the message stops inside a code point.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let complete = self.is_complete();
        *self = Self::new();
        if complete {
            Ok(())
        } else {
            Err(Utf8Error::Invalid)
        }
    }
}

fn utf8_len(first: u8) -> Option<usize> {
    match first {
        0x00..=0x7f => Some(1),
        0xc2..=0xdf => Some(2),
        0xe0..=0xef => Some(3),
        0xf0..=0xf4 => Some(4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_every_position() {
        let text = "κόσμε€𝄞 ascii";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut v = Utf8Validator::new();
            v.feed(&bytes[..cut]).unwrap();
            v.feed(&bytes[cut..]).unwrap();
            v.finish().unwrap();
        }
    }

    #[test]
    fn fails_fast_inside_first_chunk() {
        let mut v = Utf8Validator::new();
        // 0xc0 0xaf is an overlong '/', invalid immediately.
        assert_eq!(v.feed(b"ok\xc0\xaf"), Err(Utf8Error::Invalid));
    }

    #[test]
    fn fails_fast_on_split_surrogate() {
        let mut v = Utf8Validator::new();
        v.feed(b"a\xed").unwrap();
        // ED A0 80 is U+D800, a surrogate: invalid as soon as A0 is seen.
        assert_eq!(v.feed(b"\xa0"), Err(Utf8Error::Invalid));
    }

    #[test]
    fn truncated_at_end_is_invalid() {
        let mut v = Utf8Validator::new();
        v.feed(b"\xe2\x82").unwrap();
        assert_eq!(v.finish(), Err(Utf8Error::Invalid));
    }

    #[test]
    fn above_u10ffff_is_invalid() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xf4\x90\x80\x80"), Err(Utf8Error::Invalid));
    }
}
