//! Differential fuzzing of UTF-8 validation: `validate` and the incremental
//! validator, over arbitrary chunkings, against `std::str::from_utf8`.
//!
//! Input: 1 byte giving the number of cuts (low 3 bits), then one byte per
//! cut (its position, scaled to the text), then the text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::proto::utf8::{self, Utf8Validator};

/// Whether `prefix` can still be extended to valid UTF-8.
fn can_continue(prefix: &[u8]) -> bool {
    match std::str::from_utf8(prefix) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n & 7).min(rest.len());
    let (cut_bytes, text) = rest.split_at(n);
    let mut cuts: Vec<usize> = cut_bytes
        .iter()
        .map(|&c| usize::from(c) * text.len() / 255)
        .collect();
    cuts.sort_unstable();
    cuts.push(text.len());

    let valid = std::str::from_utf8(text).is_ok();
    assert_eq!(utf8::validate(text), valid, "validate");

    let mut v = Utf8Validator::new();
    let mut start = 0;
    let mut failed = false;
    for end in cuts {
        let fed = v.feed(&text[start..end]);
        // Fail fast: an error exactly when the bytes so far cannot continue.
        assert_eq!(fed.is_err(), !can_continue(&text[..end]), "feed up to {end}");
        failed |= fed.is_err();
        if !failed {
            assert_eq!(v.is_complete(), std::str::from_utf8(&text[..end]).is_ok());
        }
        start = end;
    }
    assert_eq!(v.finish().is_ok(), valid, "finish");
});
