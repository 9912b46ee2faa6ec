//! Frame headers (RFC 6455 §5.2): opcodes, parsing and serialising the 2–14 byte header.
//!
//! Whole-frame encoding lives in [`encode`](crate::proto::encode) and is
//! re-exported here, so `frame::{encode_frame, PreparedFrame}` work too.

use crate::proto::error::ProtocolError;

pub use crate::proto::encode::{encode_frame, encode_frame_bytes, random_mask, PreparedFrame};

/// The longest frame header: 2 bytes, an 8-byte extended length and a 4-byte
/// masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// A frame's opcode (§5.2). The reserved values 0x3–0x7 and 0xB–0xF have no
/// variant; [`FrameHeader::parse`] rejects them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// 0x0: the next fragment of a fragmented Text or Binary message.
    Continuation = 0,
    /// 0x1: UTF-8 text.
    Text = 1,
    /// 0x2: binary data.
    Binary = 2,
    /// 0x8: the closing handshake.
    Close = 8,
    /// 0x9: a ping; the peer owes a Pong with the same payload.
    Ping = 9,
    /// 0xA: a pong, solicited or not.
    Pong = 10,
}

impl OpCode {
    /// Whether this is a control opcode (Close, Ping, Pong): the high bit of
    /// the 4-bit opcode is set (§5.5).
    #[inline]
    pub const fn is_control(self) -> bool {
        self as u8 & 0x8 != 0
    }

    /// The opcode with value `v`, or `None` for reserved values and
    /// anything above 0xF.
    #[inline]
    pub const fn from_u8(v: u8) -> Option<OpCode> {
        match v {
            0 => Some(OpCode::Continuation),
            1 => Some(OpCode::Text),
            2 => Some(OpCode::Binary),
            8 => Some(OpCode::Close),
            9 => Some(OpCode::Ping),
            10 => Some(OpCode::Pong),
            _ => None,
        }
    }
}

/// A parsed frame header (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of a message.
    pub fin: bool,
    /// The reserved bits as a 3-bit value: `0b100` = RSV1, `0b010` = RSV2,
    /// `0b001` = RSV3.
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present exactly when the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// The payload length; below 2^63 (§5.2).
    pub payload_len: u64,
}

/// The encoded length of a header for `payload_len` bytes of payload, masked
/// or not: 2, 4 or 10 bytes, plus 4 for a masking key.
#[inline]
pub const fn header_len(payload_len: u64, masked: bool) -> usize {
    let len = match payload_len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    };
    if masked {
        len + 4
    } else {
        len
    }
}

impl FrameHeader {
    /// Parses the header at the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds less than a whole header; nothing
    /// is consumed, so call again with the same bytes plus more. On success
    /// returns the header and its length in bytes (2 to [`MAX_HEADER_LEN`]).
    ///
    /// Checks only what makes a header unrepresentable; the rules that
    /// depend on the role, extensions or the message in progress (masking,
    /// RSV bits, control frame sizes, fragmentation) are the
    /// [`Decoder`](crate::proto::decode::Decoder)'s.
    ///
    /// Lengths are accepted in any of the three forms, even when a shorter
    /// one would do: §5.2's "minimal number of bytes MUST be used" binds the
    /// sender, and rejecting it would buy nothing the size limits do not.
    ///
    /// # Errors
    /// - [`ProtocolError::ReservedOpcode`] for opcodes 0x3–0x7 and 0xB–0xF,
    ///   as soon as the first byte is there.
    /// - [`ProtocolError::InvalidLength`] when a 64-bit length has its most
    ///   significant bit set, as soon as that byte is there.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0F))?;
        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        let len7 = b1 & 0x7F;
        let masked = b1 & 0x80 != 0;
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let len = 2 + ext + if masked { 4 } else { 0 };
        // §5.2: for the 64-bit form "the most significant bit MUST be 0".
        if len7 == 127 && buf.get(2).is_some_and(|b| b & 0x80 != 0) {
            return Err(ProtocolError::InvalidLength);
        }
        if buf.len() < len {
            return Ok(None);
        }
        let payload_len = match len7 {
            126 => u16::from_be_bytes([buf[2], buf[3]]) as u64,
            127 => u64::from_be_bytes([
                buf[2], buf[3], buf[4], buf[5], buf[6], buf[7], buf[8], buf[9],
            ]),
            n => n as u64,
        };
        let mask = masked.then(|| [buf[len - 4], buf[len - 3], buf[len - 2], buf[len - 1]]);
        let header = FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x7,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, len)))
    }

    /// Writes the header into `dst` and returns its length, using the
    /// shortest length form (§5.2: "the minimal number of bytes MUST be
    /// used to encode the length").
    ///
    /// Only the low three bits of `rsv` are used. `payload_len` must be
    /// below 2^63; debug builds assert it, release builds clear the top bit.
    #[inline]
    pub fn encode(&self, dst: &mut [u8; MAX_HEADER_LEN]) -> usize {
        debug_assert!(self.payload_len >> 63 == 0, "payload length >= 2^63");
        dst[0] = ((self.fin as u8) << 7) | ((self.rsv & 0x7) << 4) | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let len = self.payload_len;
        let mut n = match len {
            0..=125 => {
                dst[1] = mask_bit | len as u8;
                2
            }
            126..=0xFFFF => {
                dst[1] = mask_bit | 126;
                dst[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            _ => {
                dst[1] = mask_bit | 127;
                dst[2..10].copy_from_slice(&(len & (u64::MAX >> 1)).to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            dst[n..n + 4].copy_from_slice(&key);
            n += 4;
        }
        n
    }

    /// The encoded length of this header (see [`header_len`]).
    #[inline]
    pub const fn encoded_len(&self) -> usize {
        header_len(self.payload_len, self.mask.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(buf: &[u8]) -> (FrameHeader, usize) {
        FrameHeader::parse(buf).unwrap().unwrap()
    }

    #[test]
    fn opcode_values() {
        for v in 0..=255u8 {
            match OpCode::from_u8(v) {
                Some(op) => assert_eq!(op as u8, v),
                None => assert!(matches!(v, 3..=7 | 11..), "{v}"),
            }
        }
        assert!(!OpCode::Continuation.is_control());
        assert!(!OpCode::Text.is_control());
        assert!(!OpCode::Binary.is_control());
        assert!(OpCode::Close.is_control());
        assert!(OpCode::Ping.is_control());
        assert!(OpCode::Pong.is_control());
    }

    #[test]
    fn parse_rfc_masked_hello_header() {
        // RFC 6455 §5.7: a masked "Hello" from a client.
        let (h, len) = parse_ok(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f]);
        assert_eq!(len, 6);
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                rsv: 0,
                opcode: OpCode::Text,
                mask: Some([0x37, 0xfa, 0x21, 0x3d]),
                payload_len: 5
            }
        );
    }

    #[test]
    fn parse_three_length_forms() {
        // 7-bit: 125.
        assert_eq!(parse_ok(&[0x82, 125]).0.payload_len, 125);
        // 16-bit: 126 then 0x0100 = 256.
        let (h, len) = parse_ok(&[0x82, 126, 0x01, 0x00]);
        assert_eq!((h.payload_len, len), (256, 4));
        // 64-bit: 127 then 0x0000_0000_0001_0000 = 65536.
        let (h, len) = parse_ok(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!((h.payload_len, len), (65536, 10));
        // 64-bit, largest legal value.
        let (h, _) = parse_ok(&[0x82, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(h.payload_len, u64::MAX >> 1);
    }

    #[test]
    fn parse_fin_and_rsv_bits() {
        let (h, _) = parse_ok(&[0x71, 0x00]);
        assert!(!h.fin);
        assert_eq!(h.rsv, 0b111);
        let (h, _) = parse_ok(&[0xc1, 0x00]);
        assert!(h.fin);
        assert_eq!(h.rsv, 0b100);
        let (h, _) = parse_ok(&[0x91, 0x00]);
        assert_eq!(h.rsv, 0b001);
    }

    #[test]
    fn parse_64_bit_length_with_msb_set_fails_from_its_first_byte() {
        assert_eq!(
            FrameHeader::parse(&[0x82, 0xff, 0x80]),
            Err(ProtocolError::InvalidLength)
        );
        assert_eq!(
            FrameHeader::parse(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::InvalidLength)
        );
    }

    #[test]
    fn parse_reserved_opcodes_fail_from_the_first_byte() {
        for op in (3..=7).chain(0xb..=0xf) {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn parse_short_input_is_none() {
        let full = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(FrameHeader::parse(&full[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(parse_ok(&full).1, 14);
    }

    #[test]
    fn encode_uses_minimal_length_forms() {
        for (len, hlen) in [
            (0u64, 2),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (u64::MAX >> 1, 10),
        ] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let h = FrameHeader {
                    fin: len % 2 == 0,
                    rsv: 0b101,
                    opcode: OpCode::Binary,
                    mask,
                    payload_len: len,
                };
                let mut buf = [0; MAX_HEADER_LEN];
                let n = h.encode(&mut buf);
                let expect = hlen + if mask.is_some() { 4 } else { 0 };
                assert_eq!(n, expect);
                assert_eq!(h.encoded_len(), expect);
                assert_eq!(parse_ok(&buf[..n]), (h, n));
            }
        }
    }

    #[test]
    fn encode_rfc_examples() {
        // RFC 6455 §5.7: unmasked 256-byte binary: 0x82 0x7E 0x0100.
        let mut buf = [0; MAX_HEADER_LEN];
        let h = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask: None,
            payload_len: 256,
        };
        let n = h.encode(&mut buf);
        assert_eq!(&buf[..n], &[0x82, 0x7e, 0x01, 0x00]);
        // 64 KiB: 0x82 0x7F 0x0000000000010000.
        let h = FrameHeader {
            payload_len: 65536,
            ..h
        };
        let n = h.encode(&mut buf);
        assert_eq!(&buf[..n], &[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
    }
}
