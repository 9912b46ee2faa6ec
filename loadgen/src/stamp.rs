//! The stamp every measured message carries, as fixed-width hex inside a JSON string:
//! `K` (a kind letter), sender id (8 hex), `S`, sequence number (16 hex),
//! `T`, send time in `CLOCK_MONOTONIC` nanoseconds (16 hex), then padding
//! `x` up to the requested payload size.
//!
//! Fixed width makes writing it a few stores and finding it one substring
//! search; hex keeps it valid in any JSON string and any server's echo.
//! The short stamp leaves out the send time, for a sender that keeps it
//! itself (echo), so a payload can be as short as the websocket-shootout's
//! 32 characters.

/// Length of a stamp without padding.
pub const STAMP_LEN: usize = 1 + 8 + 1 + 16 + 1 + 16;

/// Length of a short stamp: kind, sender, `S`, sequence number; no send time.
pub const SHORT_LEN: usize = 1 + 8 + 1 + 16;

/// A decoded stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The kind letter (`P` publish, `E` echo, `B` broadcast).
    pub kind: u8,
    /// The sender: publisher or connection id.
    pub sender: u32,
    /// The sender's sequence number, from 0.
    pub seq: u64,
    /// When it was sent (`CLOCK_MONOTONIC` ns).
    pub sent_ns: u64,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_hex(dst: &mut Vec<u8>, v: u64, digits: usize) {
    for i in (0..digits).rev() {
        dst.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

impl Stamp {
    /// Appends the stamp, then `x` until `payload_len` bytes were written
    /// (at least [`STAMP_LEN`]).
    pub fn write(&self, dst: &mut Vec<u8>, payload_len: usize) {
        let start = dst.len();
        dst.push(self.kind);
        put_hex(dst, u64::from(self.sender), 8);
        dst.push(b'S');
        put_hex(dst, self.seq, 16);
        dst.push(b'T');
        put_hex(dst, self.sent_ns, 16);
        let pad = payload_len.saturating_sub(dst.len() - start);
        dst.resize(dst.len() + pad, b'x');
    }

    /// Appends the short stamp (no send time), then `x` until
    /// `payload_len` bytes were written (at least [`SHORT_LEN`]).
    pub fn write_short(&self, dst: &mut Vec<u8>, payload_len: usize) {
        let start = dst.len();
        dst.push(self.kind);
        put_hex(dst, u64::from(self.sender), 8);
        dst.push(b'S');
        put_hex(dst, self.seq, 16);
        let pad = payload_len.saturating_sub(dst.len() - start);
        dst.resize(dst.len() + pad, b'x');
    }

    /// Parses a short stamp at the start of `b` (`sent_ns` is 0).
    pub fn parse_short(b: &[u8]) -> Option<Stamp> {
        if b.len() < SHORT_LEN || b[9] != b'S' {
            return None;
        }
        Some(Stamp {
            kind: b[0],
            sender: hex(&b[1..9])? as u32,
            seq: hex(&b[10..26])?,
            sent_ns: 0,
        })
    }

    /// Parses a stamp at the start of `b`.
    pub fn parse(b: &[u8]) -> Option<Stamp> {
        if b.len() < STAMP_LEN || b[9] != b'S' || b[26] != b'T' {
            return None;
        }
        Some(Stamp {
            kind: b[0],
            sender: hex(&b[1..9])? as u32,
            seq: hex(&b[10..26])?,
            sent_ns: hex(&b[27..43])?,
        })
    }
}

fn hex(b: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// Finds the stamp of kind `kind` inside a message: the first `"K` followed
/// by a well-formed stamp. One `memchr` pass over the message.
pub struct Finder {
    needle: [u8; 2],
}

impl Finder {
    /// A finder for stamps of kind `kind`.
    pub fn new(kind: u8) -> Self {
        Self {
            needle: [b'"', kind],
        }
    }

    /// The first stamp of this kind in `msg`.
    pub fn find(&self, msg: &[u8]) -> Option<Stamp> {
        memchr::memmem::find_iter(msg, &self.needle).find_map(|i| Stamp::parse(&msg[i + 1..]))
    }

    /// The first short stamp of this kind in `msg`.
    pub fn find_short(&self, msg: &[u8]) -> Option<Stamp> {
        memchr::memmem::find_iter(msg, &self.needle).find_map(|i| Stamp::parse_short(&msg[i + 1..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let s = Stamp {
            kind: b'P',
            sender: 0xdead_beef,
            seq: 42,
            sent_ns: u64::MAX - 7,
        };
        let mut v = b"{\"data\":\"".to_vec();
        s.write(&mut v, 64);
        assert_eq!(v.len(), 9 + 64);
        v.extend_from_slice(b"\"}");
        assert_eq!(Finder::new(b'P').find(&v), Some(s));
        assert_eq!(Finder::new(b'E').find(&v), None);
        let mut short = Vec::new();
        s.write(&mut short, 0);
        assert_eq!(short.len(), STAMP_LEN);
        assert_eq!(Stamp::parse(&short[..STAMP_LEN - 1]), None);
    }

    #[test]
    fn short_stamp_fits_the_shootout_payload() {
        let s = Stamp {
            kind: b'E',
            sender: 7,
            seq: 9,
            sent_ns: 0,
        };
        let mut v = b"{\"type\":\"echo\",\"payload\":\"".to_vec();
        let start = v.len();
        s.write_short(&mut v, 32);
        assert_eq!(v.len() - start, 32);
        v.extend_from_slice(b"\"}");
        assert_eq!(Finder::new(b'E').find_short(&v), Some(s));
        assert_eq!(Stamp::parse_short(&v[start..start + SHORT_LEN - 1]), None);
    }

    #[test]
    fn skips_lookalikes() {
        let msg = br#"{"type":"Pmessage","topic":"P1","data":"P00000001S0000000000000002T0000000000000003"}"#;
        let s = Finder::new(b'P').find(msg).unwrap();
        assert_eq!((s.sender, s.seq, s.sent_ns), (1, 2, 3));
    }
}
