//! The stamp every measured message carries, as fixed-width hex inside a JSON string:
//! `K` (a kind letter), sender id (8 hex), `S`, sequence number (16 hex),
//! `T`, send time in `CLOCK_MONOTONIC` nanoseconds (16 hex), then padding
//! up to the requested payload size: text like a quote feed's (symbols,
//! prices, sizes), so that a compressing server and client see what real
//! messages compress to (about a third), not a run of one letter.
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

/// Padding text: quote-like records (`SYM bid ask size;`) with
/// pseudo-random symbols and numbers, fixed for every run. No `"` or `\\`,
/// so it stays inside a JSON string and never looks like a stamp.
fn filler() -> &'static [u8] {
    static FILL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILL.get_or_init(|| {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut v = Vec::with_capacity(8 << 10);
        while v.len() < 8 << 10 {
            for _ in 0..3 + next(2) {
                v.push(b'A' + next(26) as u8);
            }
            let bid = 10 + next(990);
            let cents = next(100);
            v.extend_from_slice(
                format!(
                    " {bid}.{cents:02} {bid}.{:02} {}; ",
                    (cents + 1 + next(9)) % 100,
                    100 * (1 + next(50))
                )
                .as_bytes(),
            );
        }
        v
    })
}

/// Appends `n` bytes of padding, starting at a place chosen by `seq`.
fn pad(dst: &mut Vec<u8>, n: usize, seq: u64) {
    let fill = filler();
    let mut at = (seq.wrapping_mul(131) % fill.len() as u64) as usize;
    let mut left = n;
    while left > 0 {
        let take = left.min(fill.len() - at);
        dst.extend_from_slice(&fill[at..at + take]);
        left -= take;
        at = 0;
    }
}

fn put_hex(dst: &mut Vec<u8>, v: u64, digits: usize) {
    for i in (0..digits).rev() {
        dst.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

impl Stamp {
    /// Appends the stamp, then padding until `payload_len` bytes were
    /// written (at least [`STAMP_LEN`]).
    pub fn write(&self, dst: &mut Vec<u8>, payload_len: usize) {
        let start = dst.len();
        dst.push(self.kind);
        put_hex(dst, u64::from(self.sender), 8);
        dst.push(b'S');
        put_hex(dst, self.seq, 16);
        dst.push(b'T');
        put_hex(dst, self.sent_ns, 16);
        let n = payload_len.saturating_sub(dst.len() - start);
        pad(dst, n, self.seq);
    }

    /// Appends the short stamp (no send time), then padding until
    /// `payload_len` bytes were written (at least [`SHORT_LEN`]).
    pub fn write_short(&self, dst: &mut Vec<u8>, payload_len: usize) {
        let start = dst.len();
        dst.push(self.kind);
        put_hex(dst, u64::from(self.sender), 8);
        dst.push(b'S');
        put_hex(dst, self.seq, 16);
        let n = payload_len.saturating_sub(dst.len() - start);
        pad(dst, n, self.seq);
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
    fn padding_is_text_without_quotes_that_compresses_like_data() {
        let s = Stamp {
            kind: b'P',
            sender: 1,
            seq: 5,
            sent_ns: 9,
        };
        let mut v = Vec::new();
        s.write(&mut v, 20_000);
        assert_eq!(v.len(), 20_000);
        let body = &v[STAMP_LEN..];
        assert!(body.iter().all(|&c| c.is_ascii_graphic() || c == b' '));
        assert!(!body.contains(&b'"') && !body.contains(&b'\\'));
        // Neither a run of one byte nor noise: deflate takes it to
        // between a fifth and a half.
        let mut z = flate2::Compress::new(flate2::Compression::default(), false);
        let mut out = Vec::with_capacity(20_000);
        z.compress_vec(&v[..1024], &mut out, flate2::FlushCompress::Finish)
            .unwrap();
        assert!((205..512).contains(&out.len()), "1 KiB -> {} B", out.len());
    }

    #[test]
    fn skips_lookalikes() {
        let msg = br#"{"type":"Pmessage","topic":"P1","data":"P00000001S0000000000000002T0000000000000003"}"#;
        let s = Finder::new(b'P').find(msg).unwrap();
        assert_eq!((s.sender, s.seq, s.sent_ns), (1, 2, 3));
    }
}
