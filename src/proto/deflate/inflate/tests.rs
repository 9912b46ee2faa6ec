use flate2::{Compress, Compression, FlushCompress};

use super::*;

/// `data` compressed as a permessage-deflate sender does (RFC 7692 §7.2.1):
/// raw DEFLATE ending in a sync flush, whose 4-byte tail is removed.
pub(crate) fn compress(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let start = c.total_in();
    let mut out = Vec::new();
    loop {
        let done = (c.total_in() - start) as usize;
        out.reserve(data.len() / 2 + 64);
        c.compress_vec(&data[done..], &mut out, FlushCompress::Sync)
            .unwrap();
        if (c.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.is_empty() {
        // Nothing new to flush (an empty message right after a flush):
        // RFC 7692 §7.2.3.6, an empty message is a single 0x00.
        return vec![0x00];
    }
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

fn raw(bits: u8) -> Compress {
    Compress::new_with_window_bits(Compression::default(), false, bits)
}

const JSON: &[u8] =
    br#"{"topic":"prices","data":{"symbol":"ABC","bid":101.25,"ask":101.5,"ts":1700000000}}"#;

#[test]
fn one_message_round_trips() {
    let mut inf = Inflater::new(15, true);
    let mut out = Vec::new();
    let z = compress(&mut raw(15), JSON);
    assert!(z.len() < JSON.len());
    inf.inflate(&z, 1 << 20, true, &mut out).unwrap();
    assert_eq!(out, JSON);
    // No context takeover: nothing is held between messages.
    assert!(!inf.holds_state());
}

#[test]
fn context_takeover_refers_back_to_earlier_messages() {
    let mut c = raw(15);
    let mut inf = Inflater::new(15, false);
    let mut out = Vec::new();
    let first = compress(&mut c, JSON);
    let second = compress(&mut c, JSON);
    // The second message is mostly a reference to the first.
    assert!(
        second.len() < first.len() / 2,
        "{} vs {}",
        second.len(),
        first.len()
    );
    inf.inflate(&first, 1 << 20, true, &mut out).unwrap();
    assert!(inf.holds_state());
    inf.inflate(&second, 1 << 20, true, &mut out).unwrap();
    assert_eq!(out, JSON);
    // Without the first message's window the second cannot be read back.
    let mut fresh = Inflater::new(15, true);
    assert!(
        fresh
            .inflate(&second, 1 << 20, true, &mut out)
            .is_err_and(|e| e == InflateError::Corrupt)
            || out != JSON
    );
}

#[test]
fn a_small_window_is_honoured() {
    let data: Vec<u8> = (0..20_000u32)
        .flat_map(|i| (i % 700).to_le_bytes())
        .collect();
    for bits in 9..=15 {
        let mut c = raw(bits);
        let mut inf = Inflater::new(bits, false);
        let mut out = Vec::new();
        for _ in 0..3 {
            inf.inflate(&compress(&mut c, &data), 1 << 20, false, &mut out)
                .unwrap();
            assert_eq!(out, data, "window {bits}");
        }
    }
    // A window of 8 is inflated with 9 bits.
    let mut inf = Inflater::new(8, true);
    let mut out = Vec::new();
    inf.inflate(&compress(&mut raw(9), &data), 1 << 20, false, &mut out)
        .unwrap();
    assert_eq!(out, data);
}

#[test]
fn a_bomb_stops_at_the_limit() {
    // 10 MB of zeros compress to about 10 KB.
    let zeros = vec![0u8; 10_000_000];
    let z = compress(&mut raw(15), &zeros);
    assert!(z.len() < 20_000, "{}", z.len());
    let mut inf = Inflater::new(15, true);
    let mut out = Vec::new();
    let limit = 64 * 1024;
    assert_eq!(
        inf.inflate(&z, limit, false, &mut out),
        Err(InflateError::TooLarge)
    );
    assert!(out.capacity() <= limit + 1, "capacity {}", out.capacity());
    assert!(!inf.holds_state());
}

#[test]
fn exactly_the_limit_is_allowed() {
    let data = vec![b'a'; 10_000];
    let z = compress(&mut raw(15), &data);
    let mut inf = Inflater::new(15, true);
    let mut out = Vec::new();
    inf.inflate(&z, 10_000, false, &mut out).unwrap();
    assert_eq!(out.len(), 10_000);
    assert_eq!(
        inf.inflate(&z, 9_999, false, &mut out),
        Err(InflateError::TooLarge)
    );
}

#[test]
fn empty_messages() {
    let mut inf = Inflater::new(15, false);
    let mut out = vec![1, 2, 3];
    // An empty message is sent as one 0x00 byte (RFC 7692 §7.2.3.6).
    inf.inflate(&[0x00], 100, true, &mut out).unwrap();
    assert!(out.is_empty());
    let mut c = raw(15);
    let z = compress(&mut c, b"");
    inf.inflate(&z, 100, true, &mut out).unwrap();
    assert!(out.is_empty());
    // An empty payload, too.
    inf.inflate(&[], 100, true, &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn a_final_block_ends_the_stream() {
    // RFC 7692 §7.2.3.4 example: "Hello" in one final fixed-Huffman block,
    // and the same twice.
    let mut inf = Inflater::new(15, false);
    let mut out = Vec::new();
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    inf.inflate(&hello, 100, true, &mut out).unwrap();
    assert_eq!(out, b"Hello");
    inf.inflate(&hello, 100, true, &mut out).unwrap();
    assert_eq!(out, b"Hello");
    let final_block = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    inf.inflate(&final_block, 100, true, &mut out).unwrap();
    assert_eq!(out, b"Hello");
    assert!(!inf.holds_state());
}

#[test]
fn invalid_utf8_text_fails_even_when_valid_as_binary() {
    let bytes = [b'a', 0xff, b'b'];
    let z = compress(&mut raw(15), &bytes);
    let mut inf = Inflater::new(15, true);
    let mut out = Vec::new();
    assert_eq!(
        inf.inflate(&z, 100, true, &mut out),
        Err(InflateError::InvalidUtf8)
    );
    inf.inflate(&z, 100, false, &mut out).unwrap();
    assert_eq!(out, bytes);
    // A code point cut at the end of the message.
    let z = compress(&mut raw(15), "é".as_bytes().split_at(1).0);
    assert_eq!(
        inf.inflate(&z, 100, true, &mut out),
        Err(InflateError::InvalidUtf8)
    );
    assert_eq!(InflateError::InvalidUtf8.close_code().0, 1007);
    assert_eq!(InflateError::TooLarge.close_code().0, 1009);
}

#[test]
fn garbage_is_corrupt_not_a_panic() {
    let mut inf = Inflater::new(15, false);
    let mut out = Vec::new();
    assert_eq!(
        inf.inflate(&[0xff; 32], 100, false, &mut out),
        Err(InflateError::Corrupt)
    );
    // Reset after an error: a valid message inflates again.
    inf.inflate(&compress(&mut raw(15), b"ok"), 100, false, &mut out)
        .unwrap();
    assert_eq!(out, b"ok");
}

proptest::proptest! {
    /// Any bytes are inflated or refused, never more than the limit, never a panic.
    #[test]
    fn any_payload_is_bounded(payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), max in 0usize..4096) {
        let mut inf = Inflater::new(15, false);
        let mut out = Vec::new();
        let r = inf.inflate(&payload, max, false, &mut out);
        proptest::prop_assert!(out.capacity() <= max + 1 || r.is_ok() && out.len() <= max);
        if r.is_ok() {
            proptest::prop_assert!(out.len() <= max);
        }
    }

    /// Compressed data comes back whole, for every window and level.
    #[test]
    fn round_trip(data in proptest::collection::vec(0u8..4, 0..5000), bits in 9u8..=15, level in 0u32..=9) {
        let mut c = Compress::new_with_window_bits(Compression::new(level), false, bits);
        let mut inf = Inflater::new(bits, false);
        let mut out = Vec::new();
        for _ in 0..2 {
            inf.inflate(&compress(&mut c, &data), 1 << 20, false, &mut out).unwrap();
            proptest::prop_assert_eq!(&out, &data);
        }
    }
}

/// Level 0 (stored blocks) and an empty message: the sync flush alone.
#[test]
fn an_empty_stored_message_round_trips() {
    for bits in [9u8, 15] {
        let mut c = Compress::new_with_window_bits(Compression::new(0), false, bits);
        let mut inf = Inflater::new(bits, false);
        let mut out = Vec::new();
        for _ in 0..2 {
            let z = compress(&mut c, &[]);
            inf.inflate(&z, 1 << 20, false, &mut out).unwrap();
            assert!(out.is_empty());
        }
    }
}
