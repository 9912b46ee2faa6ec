//! The sending half of permessage-deflate: a message's frame compressed into a frame with RSV1, once per publish for every subscriber or through one connection's own window.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, FlushCompress};

use crate::proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};

/// RFC 7692 §7.2.1: a sync flush ends with these four bytes (the end of an
/// empty stored block), which the sender removes.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// RSV1 in the RSV bits of [`FrameHeader`]: "Per-Message Compressed" (RFC 7692 §6).
const RSV1: u8 = 0b100;

/// A raw-DEFLATE compressor that turns whole message frames into
/// compressed ones.
///
/// Two uses: one per core, reset after every message (no context
/// takeover: each message stands alone, so the result suits every
/// subscriber whatever its window), and one per connection under
/// context takeover (`Compression::Dedicated`), whose window carries over
/// from message to message and must see every compressed message that
/// connection gets, in order.
pub struct Deflater {
    z: Compress,
    takeover: bool,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("takeover", &self.takeover)
            .finish_non_exhaustive()
    }
}

impl Deflater {
    /// A compressor at `level` (0..=9) with a window of `window_bits`
    /// (9..=15; zlib has no 8-bit raw window, see [`fits_window`]).
    /// With `takeover`, each message may refer to the ones before it.
    pub fn new(level: u32, window_bits: u8, takeover: bool) -> Self {
        Self {
            z: Compress::new_with_window_bits(
                Compression::new(level.min(9)),
                false,
                window_bits.clamp(9, 15),
            ),
            takeover,
            scratch: Vec::new(),
        }
    }

    /// The compressed frame of the whole, final, unmasked server frame
    /// `frame` (a Text or Binary frame as [`PreparedFrame`] makes them),
    /// or `None` when compressing would not make it smaller — send the
    /// plain frame then, which leaves a context-takeover window as it was
    /// (an uncompressed message never enters it).
    ///
    /// [`PreparedFrame`]: crate::proto::PreparedFrame
    pub fn compress_frame(&mut self, frame: &[u8]) -> Option<Bytes> {
        let (opcode, payload) = split(frame)?;
        self.compress(opcode, payload)
    }

    /// A compressed final frame with `opcode` carrying `payload`, or
    /// `None` when it would not be smaller than the plain one.
    pub fn compress(&mut self, opcode: OpCode, payload: &[u8]) -> Option<Bytes> {
        let out = &mut self.scratch;
        out.clear();
        let start = self.z.total_in();
        loop {
            out.reserve(payload.len() / 2 + 64);
            let done = (self.z.total_in() - start) as usize;
            if self
                .z
                .compress_vec(&payload[done..], out, FlushCompress::Sync)
                .is_err()
            {
                // Not reachable with a valid stream state; resynchronise
                // and send this message plain.
                self.z.reset();
                return None;
            }
            let consumed = (self.z.total_in() - start) as usize == payload.len();
            // Room left after a sync flush means the flush is complete.
            if consumed && out.len() < out.capacity() {
                break;
            }
        }
        if out.is_empty() {
            // A flush with nothing new to flush (an empty message right
            // after another flush) emits nothing: RFC 7692 §7.2.3.6 sends
            // an empty message as a single 0x00.
            out.push(0x00);
        } else {
            debug_assert!(out.ends_with(&TAIL));
            out.truncate(out.len() - TAIL.len());
        }
        let body = out.len();
        if !self.takeover {
            self.z.reset();
        }
        if body >= payload.len() && !self.takeover {
            return None;
        }
        // Under context takeover the window now holds this message and
        // the client's must too: compressed even when no smaller.
        Some(frame_with(opcode, &out[..body]))
    }

    /// Bytes of payload compressed so far (for stats).
    pub fn total_in(&self) -> u64 {
        self.z.total_in()
    }
}

/// A whole final frame with RSV1 set, carrying `body`.
fn frame_with(opcode: OpCode, body: &[u8]) -> Bytes {
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = FrameHeader {
        fin: true,
        rsv: RSV1,
        opcode,
        mask: None,
        payload_len: body.len() as u64,
    }
    .encode(&mut head);
    let mut buf = BytesMut::with_capacity(n + body.len());
    buf.extend_from_slice(&head[..n]);
    buf.extend_from_slice(body);
    buf.freeze()
}

/// The opcode and payload of a whole, final, unmasked Text or Binary
/// frame without RSV bits; `None` for anything else (control frames are
/// never compressed, RFC 7692 §6.1).
pub fn split(frame: &[u8]) -> Option<(OpCode, &[u8])> {
    let (&b0, rest) = frame.split_first()?;
    let &b1 = rest.first()?;
    if b0 & 0xF0 != 0x80 || b1 & 0x80 != 0 {
        return None;
    }
    let opcode = match b0 & 0x0F {
        0x1 => OpCode::Text,
        0x2 => OpCode::Binary,
        _ => return None,
    };
    let start = match b1 & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    Some((opcode, frame.get(start..)?))
}

/// Whether a message compressed on its own with a 32 KiB window can go to
/// a client that limited the server's window to `window_bits`.
///
/// A message compressed without context refers back no further than its
/// own start, so a payload of at most 2^`window_bits` bytes never uses a
/// distance beyond that window, whatever window the compressor had. Larger
/// ones go to such a client uncompressed (RFC 7692 allows any message to
/// be sent plain). This is also how an 8-bit window, which zlib cannot
/// compress with, is honoured.
#[inline]
pub fn fits_window(payload_len: usize, window_bits: u8) -> bool {
    window_bits >= 15 || payload_len <= 1usize << window_bits
}

/// The compressed form of one published frame, made at most once by
/// whichever core first has a subscriber that negotiated compression, and
/// shared by every such subscriber on every core.
#[derive(Debug, Default)]
pub struct SharedDeflate {
    cell: OnceLock<Option<Bytes>>,
}

impl SharedDeflate {
    /// An empty cell.
    pub fn new() -> Self {
        Self::default()
    }

    /// The compressed frame of `frame`, compressing it with `deflater` if
    /// no core has yet; `None` if compression does not make it smaller.
    /// Returns whether this call compressed (for the compression count:
    /// exactly one call per cell does). A core that asks while another is
    /// compressing waits for that result rather than compressing again.
    pub fn get(&self, frame: &[u8], deflater: &mut Deflater) -> (Option<&Bytes>, bool) {
        let mut ran = false;
        let got = self.cell.get_or_init(|| {
            ran = true;
            deflater.compress_frame(frame)
        });
        (got.as_ref(), ran)
    }

    /// The compressed frame if it was already made.
    pub fn made(&self) -> Option<Option<&Bytes>> {
        self.cell.get().map(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::deflate::Inflater;
    use crate::proto::PreparedFrame;

    fn inflate(frame: &Bytes, inf: &mut Inflater) -> Vec<u8> {
        assert_eq!(frame[0] & 0x40, 0x40, "RSV1 set");
        let start = match frame[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let mut out = Vec::new();
        inf.inflate(&frame[start..], 1 << 24, frame[0] & 0x0F == 1, &mut out)
            .unwrap();
        out
    }

    const JSON: &str = r#"{"type":"message","topic":"prices","data":{"symbol":"ABC","bid":101.25,"ask":101.5,"ts":1700000000,"symbol2":"ABC","bid2":101.25}}"#;

    #[test]
    fn a_compressed_frame_inflates_back_and_is_smaller() {
        let plain = PreparedFrame::text(JSON);
        let mut d = Deflater::new(6, 15, false);
        let z = d.compress_frame(plain.as_bytes()).expect("compressible");
        assert!(z.len() < plain.len(), "{} vs {}", z.len(), plain.len());
        assert_eq!(z[0], 0xC1, "FIN + RSV1 + Text");
        let mut inf = Inflater::new(15, true);
        assert_eq!(inflate(&z, &mut inf), JSON.as_bytes());
        // Reset between messages: the same input gives the same bytes.
        assert_eq!(d.compress_frame(plain.as_bytes()).unwrap(), z);
    }

    #[test]
    fn incompressible_and_control_frames_stay_plain() {
        let mut d = Deflater::new(6, 15, false);
        assert!(d
            .compress_frame(PreparedFrame::text("ab").as_bytes())
            .is_none());
        assert!(d
            .compress_frame(PreparedFrame::ping(b"aaaaaaaaaaaaaaaa").as_bytes())
            .is_none());
        let noise: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
        assert!(d
            .compress_frame(PreparedFrame::binary(&noise).as_bytes())
            .is_none());
    }

    #[test]
    fn large_frames_round_trip() {
        let big = JSON.repeat(2000);
        let plain = PreparedFrame::text(&big);
        let mut d = Deflater::new(1, 15, false);
        let z = d.compress_frame(plain.as_bytes()).unwrap();
        let mut inf = Inflater::new(15, true);
        assert_eq!(inflate(&z, &mut inf), big.as_bytes());
    }

    #[test]
    fn takeover_refers_back_and_a_streaming_inflater_follows() {
        let mut d = Deflater::new(6, 15, true);
        let mut inf = Inflater::new(15, false);
        let a = d
            .compress_frame(PreparedFrame::text(JSON).as_bytes())
            .unwrap();
        let b = d
            .compress_frame(PreparedFrame::text(JSON).as_bytes())
            .unwrap();
        assert!(b.len() < a.len() / 2, "{} vs {}", b.len(), a.len());
        assert_eq!(inflate(&a, &mut inf), JSON.as_bytes());
        assert_eq!(inflate(&b, &mut inf), JSON.as_bytes());
    }

    #[test]
    fn small_windows_are_honoured_by_size() {
        assert!(fits_window(256, 8));
        assert!(!fits_window(257, 8));
        assert!(fits_window(1 << 20, 15));
        // A message no longer than the window inflates with that window.
        let text: String = JSON.repeat(2).chars().take(256).collect();
        let mut d = Deflater::new(9, 15, false);
        let z = d
            .compress_frame(PreparedFrame::text(&text).as_bytes())
            .unwrap();
        let mut inf = Inflater::new(9, true);
        assert_eq!(inflate(&z, &mut inf), text.as_bytes());
    }

    #[test]
    fn the_shared_cell_compresses_once() {
        let plain = PreparedFrame::text(JSON);
        let cell = SharedDeflate::new();
        let mut d = Deflater::new(6, 15, false);
        let (a, ran_a) = cell.get(plain.as_bytes(), &mut d);
        let a = a.cloned();
        let (b, ran_b) = cell.get(plain.as_bytes(), &mut d);
        assert!(ran_a && !ran_b);
        assert_eq!(a.as_ref(), b);
        assert_eq!(cell.made(), Some(b));
    }

    #[test]
    fn empty_messages_compress_to_one_byte_under_takeover() {
        let mut d = Deflater::new(0, 15, true);
        let mut inf = Inflater::new(15, false);
        for _ in 0..3 {
            let z = d
                .compress_frame(PreparedFrame::text("").as_bytes())
                .unwrap();
            assert_eq!(inflate(&z, &mut inf), b"");
        }
        let z = d
            .compress_frame(PreparedFrame::text(JSON).as_bytes())
            .unwrap();
        assert_eq!(inflate(&z, &mut inf), JSON.as_bytes());
    }

    #[test]
    fn split_reads_only_plain_data_frames() {
        assert_eq!(
            split(PreparedFrame::text("hi").as_bytes()),
            Some((OpCode::Text, &b"hi"[..]))
        );
        assert_eq!(split(&[0x81]), None);
        assert_eq!(split(&[0x01, 0x00]), None, "not final");
        assert_eq!(split(&[0xC1, 0x00]), None, "RSV1 already");
        assert_eq!(split(&[0x81, 0x80, 0, 0, 0, 0]), None, "masked");
        assert_eq!(split(&[0x88, 0x00]), None, "control");
    }
}
