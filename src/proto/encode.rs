//! Frame encoding: whole frames into caller buffers, and frames prepared once and shared by every subscriber.

use bytes::{Bytes, BytesMut};

use crate::proto::close::{truncate_reason, CloseCode, MAX_CONTROL_PAYLOAD};
use crate::proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::proto::mask;

/// Serialises the header of a frame without RSV bits.
#[inline]
fn header(
    fin: bool,
    opcode: OpCode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
) -> ([u8; MAX_HEADER_LEN], usize) {
    debug_assert!(
        !opcode.is_control() || (fin && payload_len <= MAX_CONTROL_PAYLOAD),
        "control frames must be final and carry at most 125 bytes"
    );
    let mut head = [0; MAX_HEADER_LEN];
    let len = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask,
        payload_len: payload_len as u64,
    }
    .encode(&mut head);
    (head, len)
}

/// A growable byte buffer a frame can be appended to: `Vec<u8>` or `BytesMut`.
trait FrameBuf: std::ops::DerefMut<Target = [u8]> {
    fn reserve_more(&mut self, n: usize);
    fn append(&mut self, bytes: &[u8]);
}

impl FrameBuf for Vec<u8> {
    fn reserve_more(&mut self, n: usize) {
        self.reserve(n);
    }
    fn append(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl FrameBuf for BytesMut {
    fn reserve_more(&mut self, n: usize) {
        self.reserve(n);
    }
    fn append(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

#[inline]
fn encode_into<B: FrameBuf>(
    dst: &mut B,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let (head, len) = header(fin, opcode, payload.len(), mask);
    dst.reserve_more(len + payload.len());
    dst.append(&head[..len]);
    let start = dst.len();
    dst.append(payload);
    if let Some(key) = mask {
        mask::apply_mask(&mut dst[start..], key, 0);
    }
}

/// Appends a whole frame to `dst`: header, then `payload`, masked with
/// `mask` when it is `Some` (the client role; §5.3: "The masking key ...
/// MUST be derived from a strong source of entropy", see [`random_mask`]).
///
/// Reserves the exact room once. The caller keeps control frames final and
/// at most 125 bytes (§5.5); debug builds assert it.
#[inline]
pub fn encode_frame(
    dst: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    encode_into(dst, fin, opcode, payload, mask);
}

/// [`encode_frame`] into a [`BytesMut`].
#[inline]
pub fn encode_frame_bytes(
    dst: &mut BytesMut,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    encode_into(dst, fin, opcode, payload, mask);
}

/// A fresh masking key for a client frame, from `fastrand`'s per-thread
/// generator.
///
/// Not cryptographic. The key exists so that script in a browser cannot
/// predict the bytes on the wire and poison intermediary caches (§10.3);
/// that matters for clients running untrusted code, not for shardcast's
/// load generator or service-to-service clients. A browser-grade client
/// would draw keys from a CSPRNG.
#[inline]
pub fn random_mask() -> [u8; 4] {
    fastrand::u32(..).to_ne_bytes()
}

/// A complete, final, unmasked (server-role) frame, encoded once.
///
/// Cloning bumps a reference count, so one publish to 100,000 subscribers
/// on every core shares one buffer; `Bytes` is `Send`, so the frame can
/// cross cores as is.
///
/// # Example
/// ```
/// use shardcast::PreparedFrame;
///
/// let frame = PreparedFrame::text("hello");
/// // FIN + text opcode, a 5-byte payload, no mask (server to client).
/// assert_eq!(frame.as_bytes()[..], b"\x81\x05hello"[..]);
/// let shared = frame.clone(); // no copy of the bytes
/// assert_eq!(shared, frame);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedFrame(Bytes);

impl PreparedFrame {
    /// A Text frame.
    pub fn text(text: &str) -> Self {
        Self::from_parts(OpCode::Text, &[text.as_bytes()])
    }

    /// A Binary frame.
    pub fn binary(data: &[u8]) -> Self {
        Self::from_parts(OpCode::Binary, &[data])
    }

    /// A Ping frame. The payload is cut to its first 125 bytes (§5.5:
    /// control frames "MUST have a payload length of 125 bytes or less");
    /// a ping payload is opaque, so a cut one still does its job, and
    /// callers on the hot path need no error branch.
    pub fn ping(payload: &[u8]) -> Self {
        Self::from_parts(OpCode::Ping, &[payload])
    }

    /// A Pong frame, cut to 125 bytes like [`PreparedFrame::ping`]. Pongs
    /// answering a decoded Ping never need cutting.
    pub fn pong(payload: &[u8]) -> Self {
        Self::from_parts(OpCode::Pong, &[payload])
    }

    /// A Close frame with `code` and `reason`, the reason cut at a char
    /// boundary to fit the 125-byte control payload.
    ///
    /// A code that is not [valid on the wire](CloseCode::is_valid_on_wire)
    /// (e.g. [`CloseCode::NO_STATUS`]) gives an empty body, which the RFC
    /// reads as "no status code" (§7.1.5), rather than a frame the peer must
    /// reject.
    pub fn close(code: CloseCode, reason: &str) -> Self {
        if !code.is_valid_on_wire() {
            return Self::from_parts(OpCode::Close, &[]);
        }
        Self::from_parts(
            OpCode::Close,
            &[&code.0.to_be_bytes(), truncate_reason(reason).as_bytes()],
        )
    }

    /// A final frame with `opcode` whose payload is the concatenation of
    /// `parts`, copied once straight into the frame (e.g. a JSON envelope's
    /// prefix, the published data and its suffix).
    ///
    /// Control payloads are cut at 125 bytes (use [`PreparedFrame::close`]
    /// for a cut at a char boundary). For [`OpCode::Text`] the parts must
    /// join into UTF-8; debug builds assert it.
    pub fn from_parts(opcode: OpCode, parts: &[&[u8]]) -> Self {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let len = if opcode.is_control() {
            total.min(MAX_CONTROL_PAYLOAD)
        } else {
            total
        };
        let (head, head_len) = header(true, opcode, len, None);
        let mut buf = BytesMut::with_capacity(head_len + len);
        buf.extend_from_slice(&head[..head_len]);
        let mut left = len;
        for part in parts {
            let take = part.len().min(left);
            buf.extend_from_slice(&part[..take]);
            left -= take;
        }
        debug_assert!(
            opcode != OpCode::Text || std::str::from_utf8(&buf[head_len..]).is_ok(),
            "text frame payload is not UTF-8"
        );
        PreparedFrame(buf.freeze())
    }

    /// A frame from bytes the engine knows to hold one whole, final,
    /// unmasked server frame (one it made earlier).
    pub(crate) fn from_bytes(frame: Bytes) -> Self {
        PreparedFrame(frame)
    }

    /// The encoded frame, ready to write.
    #[inline]
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The encoded frame, ready to write.
    #[inline]
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The frame's length on the wire, header included.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: a frame has at least a 2-byte header.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The frame's opcode.
    #[inline]
    pub fn opcode(&self) -> OpCode {
        OpCode::from_u8(self.0[0] & 0x0F).expect("a prepared frame holds a valid opcode")
    }

    /// The frame's payload, after its header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        // Unmasked, so the header is 2, 4 or 10 bytes by the length form.
        let start = match self.0[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        &self.0[start..]
    }
}

impl AsRef<[u8]> for PreparedFrame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<PreparedFrame> for Bytes {
    fn from(frame: PreparedFrame) -> Self {
        frame.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_frame_rfc_masked_hello() {
        // RFC 6455 §5.7: 0x81 0x85 0x37 0xfa 0x21 0x3d 0x7f 0x9f 0x4d 0x51 0x58.
        let mut out = vec![0xAA];
        encode_frame(
            &mut out,
            true,
            OpCode::Text,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        assert_eq!(
            out,
            [0xAA, 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn encode_frame_rfc_unmasked_fragments() {
        // RFC 6455 §5.7: "Hel" then "lo" as two fragments.
        let mut out = Vec::new();
        encode_frame(&mut out, false, OpCode::Text, b"Hel", None);
        encode_frame(&mut out, true, OpCode::Continuation, b"lo", None);
        assert_eq!(out, [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
    }

    #[test]
    fn encode_frame_bytes_matches_vec() {
        for len in [0, 1, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for mask in [None, Some([9, 8, 7, 6])] {
                let mut v = Vec::new();
                encode_frame(&mut v, true, OpCode::Binary, &payload, mask);
                let mut b = BytesMut::new();
                encode_frame_bytes(&mut b, true, OpCode::Binary, &payload, mask);
                assert_eq!(v, &b[..], "len {len}");
            }
        }
    }

    #[test]
    fn prepared_frames() {
        let f = PreparedFrame::text("Hello");
        assert_eq!(f.as_bytes().as_ref(), b"\x81\x05Hello");
        assert_eq!(f.opcode(), OpCode::Text);
        assert_eq!(f.payload(), b"Hello");
        assert_eq!(f.len(), 7);
        assert!(!f.is_empty());
        let f = PreparedFrame::binary(&[0; 300]);
        assert_eq!(&f.as_bytes()[..4], &[0x82, 126, 0x01, 0x2c]);
        assert_eq!(f.payload().len(), 300);
        assert_eq!(PreparedFrame::ping(b"p").as_bytes().as_ref(), b"\x89\x01p");
        assert_eq!(PreparedFrame::pong(b"").as_bytes().as_ref(), b"\x8a\x00");
    }

    #[test]
    fn prepared_clone_shares_the_buffer() {
        let f = PreparedFrame::binary(&[7; 1000]);
        let g = f.clone();
        assert_eq!(f.as_bytes().as_ptr(), g.as_bytes().as_ptr());
        assert_eq!(f.into_bytes().as_ptr(), Bytes::from(g).as_ptr());
    }

    #[test]
    fn prepared_from_parts_concatenates() {
        let f = PreparedFrame::from_parts(OpCode::Text, &[b"{\"d\":", b"42", b"}"]);
        assert_eq!(f, PreparedFrame::text("{\"d\":42}"));
        let big = vec![b'x'; 70_000];
        let f = PreparedFrame::from_parts(OpCode::Binary, &[b"[", &big, b"]"]);
        assert_eq!(f.payload().len(), 70_002);
        assert_eq!(
            &f.as_bytes()[..10],
            &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x72]
        );
    }

    #[test]
    fn prepared_control_frames_are_cut_to_125() {
        let f = PreparedFrame::ping(&[1; 200]);
        assert_eq!(f.as_bytes()[1], 125);
        assert_eq!(f.payload(), &[1; 125]);
        let f = PreparedFrame::from_parts(OpCode::Pong, &[&[1; 100], &[2; 100]]);
        assert_eq!(f.payload().len(), 125);
        assert_eq!(&f.payload()[99..101], &[1, 2]);
    }

    #[test]
    fn prepared_close() {
        let f = PreparedFrame::close(CloseCode::GOING_AWAY, "bye");
        assert_eq!(f.as_bytes().as_ref(), b"\x88\x05\x03\xe9bye");
        assert_eq!(f.opcode(), OpCode::Close);
        // Codes that may not be sent give an empty body.
        for code in [CloseCode::NO_STATUS, CloseCode::ABNORMAL, CloseCode(999)] {
            assert_eq!(
                PreparedFrame::close(code, "x").as_bytes().as_ref(),
                b"\x88\x00"
            );
        }
        // 200 two-byte chars: cut to 61 of them (122 bytes) + the code.
        let reason = "é".repeat(200);
        let f = PreparedFrame::close(CloseCode::NORMAL, &reason);
        assert_eq!(f.payload().len(), 124);
        assert_eq!(&f.payload()[2..], "é".repeat(61).as_bytes());
    }

    #[test]
    fn random_masks_vary() {
        let keys: std::collections::HashSet<[u8; 4]> = (0..64).map(|_| random_mask()).collect();
        assert!(keys.len() > 60);
    }
}
