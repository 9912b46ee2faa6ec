//! What crosses the broker: topic names mapped to subjects (channels) without collisions, and the envelope around a publication (no I/O).

use bytes::{BufMut, Bytes, BytesMut};

use crate::proto::frame::OpCode;

/// The envelope's first bytes: a magic and the format's version.
const MAGIC: &[u8; 3] = b"SC1";
/// Magic, opcode, origin, sequence, topic length.
const HEAD: usize = 3 + 1 + 8 + 8 + 2;
/// Escaped names longer than this become a hash (the name travels in the
/// envelope), so a subject stays well inside NATS's 4 KiB control line.
const MAX_ESCAPED: usize = 768;

/// Whether `prefix` can begin a subject: dot-separated tokens, none empty,
/// without whitespace, `*` or `>` (NATS's rules, applied to Redis too so a
/// setting means the same on both).
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
        })
}

/// The subject (NATS) or channel (Redis) of `topic` under `prefix`.
///
/// `prefix.t.NAME` with every byte of the name outside `[A-Za-z0-9_-]`
/// written `%HH`, so any name (spaces, dots, `*`, `>`, non-ASCII) is one
/// token and two names never share a subject; `prefix.e` for the empty
/// name; `prefix.h.HASH` (128-bit FNV-1a) for a name whose escaped form
/// would be longer than 768 bytes. A hashed subject could in principle be
/// shared, so receivers check the name carried in the envelope.
pub fn subject(prefix: &str, topic: &str) -> String {
    if topic.is_empty() {
        return format!("{prefix}.e");
    }
    let mut s = String::with_capacity(prefix.len() + 3 + topic.len());
    s.push_str(prefix);
    s.push_str(".t.");
    for &b in topic.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            s.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            s.push('%');
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        if s.len() > prefix.len() + 3 + MAX_ESCAPED {
            let (a, b) = fnv128(topic.as_bytes());
            return format!("{prefix}.h.{a:016x}{b:016x}");
        }
    }
    s
}

/// Two FNV-1a 64-bit hashes with different offsets: stable across builds
/// and platforms, unlike std's hasher.
fn fnv128(data: &[u8]) -> (u64, u64) {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for &x in data {
        a = (a ^ u64::from(x)).wrapping_mul(PRIME);
        b = (b ^ u64::from(x.rotate_left(3))).wrapping_mul(PRIME);
    }
    (a, b)
}

/// One publication as it crosses the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Text or Binary.
    pub opcode: OpCode,
    /// The publishing node.
    pub origin: u64,
    /// The origin's sequence number for this topic, from 1.
    pub seq: u64,
    /// The topic's name.
    pub topic: &'a str,
    /// The message.
    pub payload: &'a [u8],
}

/// Why an envelope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Shorter than its header says, or not this format.
    #[error("not a shardcast envelope")]
    Malformed,
    /// Neither Text nor Binary.
    #[error("opcode {0} cannot cross nodes")]
    Opcode(u8),
    /// A topic, or a Text payload, that is not UTF-8.
    #[error("not UTF-8")]
    Utf8,
    /// A topic longer than 65,535 bytes.
    #[error("topic too long")]
    TopicTooLong,
}

impl<'a> Envelope<'a> {
    /// Serialises the envelope: magic `SC1`, opcode, origin and sequence
    /// (big-endian), the topic's length (u16) and name, the payload.
    ///
    /// # Errors
    /// [`EnvelopeError::TopicTooLong`], [`EnvelopeError::Opcode`].
    pub fn encode(&self) -> Result<Bytes, EnvelopeError> {
        let len = u16::try_from(self.topic.len()).map_err(|_| EnvelopeError::TopicTooLong)?;
        if !matches!(self.opcode, OpCode::Text | OpCode::Binary) {
            return Err(EnvelopeError::Opcode(self.opcode as u8));
        }
        let mut b = BytesMut::with_capacity(HEAD + self.topic.len() + self.payload.len());
        b.put_slice(MAGIC);
        b.put_u8(self.opcode as u8);
        b.put_u64(self.origin);
        b.put_u64(self.seq);
        b.put_u16(len);
        b.put_slice(self.topic.as_bytes());
        b.put_slice(self.payload);
        Ok(b.freeze())
    }

    /// Parses an envelope received from the broker; a Text payload is
    /// checked to be UTF-8, since subscribers would fail a connection
    /// that gets anything else.
    ///
    /// # Errors
    /// Any [`EnvelopeError`] but `TopicTooLong`.
    pub fn decode(buf: &'a [u8]) -> Result<Self, EnvelopeError> {
        if buf.len() < HEAD || &buf[..3] != MAGIC {
            return Err(EnvelopeError::Malformed);
        }
        let opcode = match buf[3] {
            1 => OpCode::Text,
            2 => OpCode::Binary,
            o => return Err(EnvelopeError::Opcode(o)),
        };
        let u64_at = |i: usize| {
            let mut a = [0; 8];
            a.copy_from_slice(&buf[i..i + 8]);
            u64::from_be_bytes(a)
        };
        let origin = u64_at(4);
        let seq = u64_at(12);
        let len = usize::from(u16::from_be_bytes([buf[20], buf[21]]));
        let rest = &buf[HEAD..];
        if rest.len() < len {
            return Err(EnvelopeError::Malformed);
        }
        let (topic, payload) = rest.split_at(len);
        let topic = simdutf8::basic::from_utf8(topic).map_err(|_| EnvelopeError::Utf8)?;
        if opcode == OpCode::Text && simdutf8::basic::from_utf8(payload).is_err() {
            return Err(EnvelopeError::Utf8);
        }
        Ok(Self {
            opcode,
            origin,
            seq,
            topic,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awkward_names_get_distinct_single_token_subjects() {
        let long = "é".repeat(128);
        let names = [
            "",
            "news",
            "a b",
            "a.b",
            "a%2Eb",
            "*",
            ">",
            "a.*",
            "a.>",
            "ünïcødé",
            "%",
            "%25",
            long.as_str(),
        ];
        let subjects: Vec<String> = names.iter().map(|n| subject("sc.x", n)).collect();
        for (n, s) in names.iter().zip(&subjects) {
            let tail = s.strip_prefix("sc.x.").unwrap();
            assert!(
                tail.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>'),
                "{n:?} -> {s}"
            );
            assert!(tail.split('.').all(|t| !t.is_empty()), "{n:?} -> {s}");
        }
        let unique: std::collections::HashSet<_> = subjects.iter().collect();
        assert_eq!(unique.len(), names.len());
        // 256 bytes of non-ASCII escape to 768 bytes: still escaped.
        assert!(subjects[12].starts_with("sc.x.t."));
        let longer = "é".repeat(200);
        let h = subject("sc", &longer);
        assert!(h.starts_with("sc.h.") && h.len() == 5 + 32, "{h}");
        assert_ne!(h, subject("sc", &"é".repeat(201)));
    }

    proptest::proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = Envelope::decode(&data);
            let mut framed = b"SC1\x01".to_vec();
            framed.extend_from_slice(&data);
            let _ = Envelope::decode(&framed);
        }

        #[test]
        fn every_topic_round_trips(topic in ".{0,40}", payload in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let e = Envelope { opcode: OpCode::Binary, origin: 1, seq: 2, topic: &topic, payload: &payload };
            let bytes = e.encode().unwrap();
            proptest::prop_assert_eq!(Envelope::decode(&bytes).unwrap(), e);
            let s = subject("p", &topic);
            proptest::prop_assert!(s.bytes().all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>'));
        }
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix("shardcast"));
        assert!(valid_prefix("prod.eu-1"));
        for bad in ["", "a..b", ".a", "a.", "a b", "a.*", ">", "a\tb"] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
    }

    #[test]
    fn envelope_round_trip_and_refusals() {
        let e = Envelope {
            opcode: OpCode::Text,
            origin: 7,
            seq: 42,
            topic: "a.b c",
            payload: "héllo".as_bytes(),
        };
        let bytes = e.encode().unwrap();
        assert_eq!(Envelope::decode(&bytes).unwrap(), e);
        for cut in 0..bytes.len() - "héllo".len() {
            assert!(Envelope::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.to_vec();
        bad[3] = 9;
        assert_eq!(Envelope::decode(&bad), Err(EnvelopeError::Opcode(9)));
        let mut bad = bytes.to_vec();
        let n = bad.len();
        bad[n - 1] = 0xFF;
        assert_eq!(Envelope::decode(&bad), Err(EnvelopeError::Utf8));
        let bin = Envelope {
            opcode: OpCode::Binary,
            payload: &[0xFF, 0],
            ..e
        };
        assert_eq!(Envelope::decode(&bin.encode().unwrap()).unwrap(), bin);
        assert_eq!(Envelope::decode(b"nope"), Err(EnvelopeError::Malformed));
    }
}
