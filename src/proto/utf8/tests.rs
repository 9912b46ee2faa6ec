//! Checks the validators against `std::str::from_utf8`, over every class of
//! invalid sequence and every way of cutting it into chunks.

use super::*;
use proptest::prelude::*;

/// Whether `prefix` can still be extended to valid UTF-8, by the standard
/// library's definition: `error_len() == None` means "ran out of input".
fn can_continue(prefix: &[u8]) -> bool {
    match std::str::from_utf8(prefix) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

/// The index of the first byte whose arrival makes `bytes` impossible to
/// complete, if any.
fn fail_index(bytes: &[u8]) -> Option<usize> {
    let start = match std::str::from_utf8(bytes) {
        Ok(_) => return None,
        Err(e) => e.valid_up_to(),
    };
    (start..bytes.len()).find(|&i| !can_continue(&bytes[..=i]))
}

/// Feeds `chunks` in order and checks every answer against the standard
/// library: each feed fails exactly from the chunk holding the first
/// impossible byte on, `is_complete` tracks code point boundaries, and
/// `finish` accepts exactly the valid messages.
fn check_chunks(chunks: &[&[u8]]) {
    let whole = chunks.concat();
    let fail = fail_index(&whole);
    let mut v = Utf8Validator::new();
    let mut end = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        end += chunk.len();
        let should_fail = fail.is_some_and(|f| f < end);
        let got = v.feed(chunk);
        assert_eq!(
            got.is_err(),
            should_fail,
            "chunk {i} of {chunks:02x?}: fed up to {end}, first impossible byte at {fail:?}"
        );
        if !should_fail {
            let boundary = std::str::from_utf8(&whole[..end]).is_ok();
            assert_eq!(
                v.is_complete(),
                boundary,
                "is_complete after chunk {i} of {chunks:02x?}"
            );
        }
    }
    let valid = std::str::from_utf8(&whole).is_ok();
    assert_eq!(v.finish().is_ok(), valid, "finish of {chunks:02x?}");
    assert_eq!(validate(&whole), valid, "validate {whole:02x?}");
    // finish() resets: the validator is usable for the next message.
    assert_eq!(v.feed("ok €".as_bytes()), Ok(()));
    assert_eq!(v.finish(), Ok(()));
}

/// Checks `bytes` whole, split at every position into two chunks, into
/// three chunks at every pair of positions, and one byte at a time.
fn check_every_split(bytes: &[u8]) {
    check_chunks(&[bytes]);
    for a in 0..=bytes.len() {
        check_chunks(&[&bytes[..a], &bytes[a..]]);
        for b in a..=bytes.len() {
            check_chunks(&[&bytes[..a], &bytes[a..b], &bytes[b..]]);
        }
    }
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    check_chunks(&singles);
}

/// Sequences that are invalid wherever they appear, one per class.
const INVALID: &[(&str, &[u8])] = &[
    ("overlong 2-byte NUL", b"\xc0\x80"),
    ("overlong 2-byte max", b"\xc1\xbf"),
    ("overlong 3-byte NUL", b"\xe0\x80\x80"),
    ("overlong 3-byte max", b"\xe0\x9f\xbf"),
    ("overlong 4-byte NUL", b"\xf0\x80\x80\x80"),
    ("overlong 4-byte max", b"\xf0\x8f\xbf\xbf"),
    ("surrogate U+D800", b"\xed\xa0\x80"),
    ("surrogate U+DB7F", b"\xed\xad\xbf"),
    ("surrogate U+DC00", b"\xed\xb0\x80"),
    ("surrogate U+DFFF", b"\xed\xbf\xbf"),
    ("surrogate pair", b"\xed\xa0\x80\xed\xb0\x80"),
    ("U+110000", b"\xf4\x90\x80\x80"),
    ("U+13FFFF", b"\xf4\xbf\xbf\xbf"),
    ("F5 lead", b"\xf5\x80\x80\x80"),
    ("F7 lead", b"\xf7\xbf\xbf\xbf"),
    ("5-byte form", b"\xf8\x88\x80\x80\x80"),
    ("6-byte form", b"\xfc\x84\x80\x80\x80\x80"),
    ("FE", b"\xfe"),
    ("FF", b"\xff"),
    ("lone C0", b"\xc0"),
    ("lone C1", b"\xc1"),
    ("stray 80", b"\x80"),
    ("stray BF", b"\xbf"),
    ("continuation after 2-byte", b"\xc3\xa9\x80"),
    ("continuation after 4-byte", b"\xf0\x9f\x98\x80\xbf"),
    ("2-byte cut by ASCII", b"\xc3A"),
    ("3-byte cut after 1 by ASCII", b"\xe2A"),
    ("3-byte cut after 2 by ASCII", b"\xe2\x82A"),
    ("4-byte cut after 3 by ASCII", b"\xf0\x9f\x98A"),
    ("3-byte cut by a new lead", b"\xe2\x82\xe2\x82\xac"),
    ("4-byte cut by a new lead", b"\xf0\x9f\xc3\xa9"),
];

/// Starts of valid sequences: invalid only because the message ends.
const TRUNCATED: &[(&str, &[u8])] = &[
    ("2-byte after 1", b"\xc3"),
    ("3-byte after 1", b"\xe2"),
    ("3-byte after 2", b"\xe2\x82"),
    ("E0 after 2", b"\xe0\xa0"),
    ("ED after 2", b"\xed\x9f"),
    ("4-byte after 1", b"\xf0"),
    ("4-byte after 2", b"\xf0\x9f"),
    ("4-byte after 3", b"\xf0\x9f\x98"),
    ("F4 after 3", b"\xf4\x8f\xbf"),
];

/// Context placed around each sequence: nothing, ASCII, multi-byte text,
/// and enough ASCII to put the sequence across simdutf8's 64-byte blocks.
fn contexts() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = vec![
        (vec![], vec![]),
        (b"ab".to_vec(), b"cd".to_vec()),
        ("é€".as_bytes().to_vec(), "𝄞é".as_bytes().to_vec()),
    ];
    for pad in [61, 62, 63, 64, 65, 127] {
        out.push((vec![b'x'; pad], "ζ".repeat(40).into_bytes()));
    }
    out
}

#[test]
fn invalid_sequences_fail_at_the_first_impossible_byte_for_every_split() {
    for (what, seq) in INVALID {
        assert!(std::str::from_utf8(seq).is_err(), "{what} must be invalid");
        for (before, after) in contexts() {
            let bytes = [&before[..], seq, &after[..]].concat();
            let fail = fail_index(&bytes).expect("invalid");
            assert!(fail >= before.len(), "{what}: fails inside the context");
            if bytes.len() <= 24 {
                check_every_split(&bytes);
            } else {
                // Long contexts: cut near the sequence, where it matters.
                for a in before.len().saturating_sub(3)..=(before.len() + seq.len() + 3) {
                    let a = a.min(bytes.len());
                    check_chunks(&[&bytes[..a], &bytes[a..]]);
                }
            }
        }
    }
}

#[test]
fn truncated_sequences_fail_only_at_finish() {
    for (what, seq) in TRUNCATED {
        for (before, _) in contexts() {
            let bytes = [&before[..], seq].concat();
            assert_eq!(fail_index(&bytes), None, "{what}");
            if bytes.len() <= 24 {
                check_every_split(&bytes);
            }
            let mut v = Utf8Validator::new();
            v.feed(&bytes).unwrap();
            assert!(!v.is_complete(), "{what}");
            assert_eq!(v.finish(), Err(Utf8Error::Invalid), "{what}");
        }
    }
}

#[test]
fn valid_boundary_code_points_pass_every_split() {
    for c in [
        '\0',
        '\u{7f}',
        '\u{80}',
        '\u{7ff}',
        '\u{800}',
        '\u{fff}',
        '\u{1000}',
        '\u{d7ff}',
        '\u{e000}',
        '\u{fffd}',
        '\u{ffff}',
        '\u{10000}',
        '\u{3ffff}',
        '\u{40000}',
        '\u{fffff}',
        '\u{100000}',
        '\u{10ffff}',
    ] {
        let s = format!("a{c}{c}b{c}");
        check_every_split(s.as_bytes());
    }
    check_every_split("κόσμε€𝄞 ascii".as_bytes());
}

#[test]
fn every_one_and_two_byte_input_in_every_split() {
    for a in 0..=255u8 {
        check_chunks(&[&[a]]);
        for b in 0..=255u8 {
            check_chunks(&[&[a, b]]);
            check_chunks(&[&[a], &[b]]);
        }
    }
}

#[test]
fn three_byte_inputs_split_everywhere() {
    // Every lead and second byte, against third bytes at each range edge.
    let thirds = [
        0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc2, 0xe0, 0xed, 0xf0, 0xf4,
        0xff,
    ];
    for a in (0x80..=0xffu8).chain([b'a']) {
        for b in 0..=255u8 {
            for c in thirds {
                let s = [a, b, c];
                check_chunks(&[&s]);
                check_chunks(&[&s[..1], &s[1..]]);
                check_chunks(&[&s[..2], &s[2..]]);
            }
        }
    }
}

#[test]
fn a_failed_validator_stays_failed_until_finish() {
    let mut v = Utf8Validator::new();
    assert_eq!(v.feed(b"ok\xc0\xaf"), Err(Utf8Error::Invalid));
    assert_eq!(v.feed(b"fine"), Err(Utf8Error::Invalid));
    assert!(!v.is_complete());
    assert_eq!(v.finish(), Err(Utf8Error::Invalid));
    assert_eq!(v.feed(b"fine"), Ok(()));
    assert_eq!(v.finish(), Ok(()));
}

#[test]
fn fails_fast_on_split_surrogate() {
    let mut v = Utf8Validator::new();
    v.feed(b"a\xed").unwrap();
    // ED A0 80 is U+D800, a surrogate: invalid as soon as A0 is seen.
    assert_eq!(v.feed(b"\xa0"), Err(Utf8Error::Invalid));
}

#[test]
fn empty_chunks_change_nothing() {
    let mut v = Utf8Validator::new();
    v.feed(b"").unwrap();
    v.feed(b"\xf0").unwrap();
    v.feed(b"").unwrap();
    v.feed(b"\x9f\x98").unwrap();
    v.feed(b"").unwrap();
    assert!(!v.is_complete());
    v.feed(b"\x80").unwrap();
    assert!(v.is_complete());
    v.finish().unwrap();
}

/// Bytes that are mostly valid UTF-8, with a few bytes overwritten.
fn mostly_utf8() -> impl Strategy<Value = Vec<u8>> {
    (
        "[a-z \u{80}-\u{7ff}\u{800}-\u{ffff}\u{10000}-\u{10ffff}]{0,80}",
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    )
        .prop_map(|(s, edits)| {
            let mut bytes = s.into_bytes();
            if !bytes.is_empty() {
                for (at, b) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = b;
                }
            }
            bytes
        })
}

/// Cuts `bytes` at the given points (taken modulo the length, sorted).
fn cut(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for a in at {
        out.push(bytes[start..a].to_vec());
        start = a;
    }
    out.push(bytes[start..].to_vec());
    out
}

proptest! {
    #[test]
    fn random_chunkings_agree_with_std(
        bytes in prop_oneof![mostly_utf8(), prop::collection::vec(any::<u8>(), 0..40)],
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let chunks = cut(&bytes, &cuts);
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        check_chunks(&refs);
    }

    #[test]
    fn long_text_in_random_chunks_agrees_with_std(
        text in "[a-z \u{80}-\u{10ffff}]{100,400}",
        edit in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let mut bytes = text.into_bytes();
        if let Some((at, b)) = edit {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let chunks = cut(&bytes, &cuts);
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        check_chunks(&refs);
    }
}
