//! Verifies that valid UTF-8 text is echoed whole and that every class of invalid UTF-8 fails with 1007, as soon as it can never become valid.

use super::*;

/// Valid texts that exercise every encoded length and the boundaries
/// around the surrogates and the last code point.
const VALID_UTF8: [&str; 12] = [
    "κόσμε",
    "\u{0}\u{7f}",
    "\u{80}\u{7ff}",
    "\u{800}\u{fff}",
    "\u{d7ff}\u{e000}",
    "\u{fffd}\u{fffe}\u{ffff}",
    "\u{10000}\u{10ffff}",
    "Hello-µ@ßöäüàá-UTF-8!!",
    "😀 emoji 🎉 and 中文 and عربى",
    "a€b",
    "\u{f0000}\u{feff}",
    "",
];

/// Invalid UTF-8, one class per entry; each is embedded as `ab<seq>cd`
/// unless it is truncated at the end of the message.
const INVALID_UTF8: [(&str, &[u8], bool); 26] = [
    ("overlong 2-byte '/'", b"\xc0\xaf", false),
    ("overlong 2-byte max", b"\xc1\xbf", false),
    ("overlong 3-byte '/'", b"\xe0\x80\xaf", false),
    ("overlong 3-byte max", b"\xe0\x9f\xbf", false),
    ("overlong 4-byte '/'", b"\xf0\x80\x80\xaf", false),
    ("overlong 4-byte max", b"\xf0\x8f\xbf\xbf", false),
    ("high surrogate U+D800", b"\xed\xa0\x80", false),
    ("low surrogate U+DFFF", b"\xed\xbf\xbf", false),
    ("surrogate pair", b"\xed\xa0\x80\xed\xb0\x80", false),
    ("above U+10FFFF", b"\xf4\x90\x80\x80", false),
    ("F7 BF BF BF", b"\xf7\xbf\xbf\xbf", false),
    ("stray continuation 80", b"\x80", false),
    ("stray continuation BF", b"\xbf", false),
    ("stray continuations", b"\x80\xbf\x80", false),
    ("C0 lead", b"\xc0\x41", false),
    ("C1 lead", b"\xc1\x41", false),
    ("F5 lead", b"\xf5\x80\x80\x80", false),
    ("F8 5-byte form", b"\xf8\x88\x80\x80\x80", false),
    ("FC 6-byte form", b"\xfc\x84\x80\x80\x80\x80", false),
    ("FE", b"\xfe", false),
    ("FF", b"\xff", false),
    ("2-byte lead then ASCII", b"\xc3\x41", false),
    ("3-byte sequence cut then ASCII", b"\xe2\x82\x41", false),
    ("truncated 2-byte at end", b"\xc3", true),
    ("truncated 3-byte at end", b"\xe2\x82", true),
    ("truncated 4-byte at end", b"\xf0\x9f\x98", true),
];

/// The whole payload of an invalid case.
fn invalid_message(seq: &[u8], at_end: bool) -> Vec<u8> {
    let mut m = b"ab".to_vec();
    m.extend_from_slice(seq);
    if !at_end {
        m.extend_from_slice(b"cd");
    }
    m
}

#[test]
fn valid_utf8_is_echoed_whole_and_at_every_split() {
    let h = echo_server(1 << 20);
    let mut cases = Vec::new();
    for text in VALID_UTF8 {
        let b = text.as_bytes();
        cases.push(Case::echo(
            format!("{text:?} in one frame"),
            frame(TEXT, b),
            server_frame(TEXT, b),
        ));
        for k in 0..=b.len() {
            let mut send = part(TEXT, &b[..k]);
            send.extend(frame(CONT, &b[k..]));
            cases.push(Case::echo(
                format!("{text:?} split at byte {k}"),
                send,
                server_frame(TEXT, b),
            ));
        }
        // One byte per fragment.
        cases.push(Case::echo(
            format!("{text:?} one byte per fragment"),
            fragments(TEXT, b, b.len().max(1)),
            server_frame(TEXT, b),
        ));
    }
    run(h.local_addr(), &cases);
    stop(h);
}

#[test]
fn invalid_utf8_fails_with_1007_as_soon_as_it_is_certain() {
    let h = echo_server(1 << 20);
    let mut cases = Vec::new();
    for (name, seq, at_end) in INVALID_UTF8 {
        let m = invalid_message(seq, at_end);
        assert!(std::str::from_utf8(&m).is_err(), "{name}");
        cases.push(Case::fails(
            format!("{name} in one frame"),
            frame(TEXT, &m),
            1007,
        ));
        for k in 0..=m.len() {
            // A prefix no continuation could make valid must fail the
            // connection at once, without the rest of the message.
            let certain = matches!(std::str::from_utf8(&m[..k]), Err(e) if e.error_len().is_some());
            let mut send = part(TEXT, &m[..k]);
            if !certain {
                send.extend(frame(CONT, &m[k..]));
            }
            cases.push(Case::fails(
                format!(
                    "{name} split at byte {k}{}",
                    if certain { ", first fragment only" } else { "" }
                ),
                send,
                1007,
            ));
        }
        // The invalid bytes in a later fragment of a still unfinished
        // message, when they can already never be valid.
        let bad_at = std::str::from_utf8(&m).unwrap_err().valid_up_to();
        let mut send = part(TEXT, &m[..bad_at]);
        let rest = &m[bad_at..];
        let certain = std::str::from_utf8(rest)
            .err()
            .and_then(|e| e.error_len())
            .is_some();
        if certain {
            send.extend(part(CONT, rest));
            cases.push(Case::fails(
                format!("{name} in a non-final second fragment"),
                send,
                1007,
            ));
        }
    }
    // Within one frame: its header announces more payload than is sent,
    // and the payload stops right after the first byte that makes the text
    // invalid for good.
    for (name, seq, at_end) in INVALID_UTF8 {
        let mut m = invalid_message(seq, at_end);
        let Some(k) = (0..=m.len())
            .find(|&k| matches!(std::str::from_utf8(&m[..k]), Err(e) if e.error_len().is_some()))
        else {
            continue;
        };
        m.extend(ascii(200));
        let wire = frame(TEXT, &m);
        let header = wire.len() - m.len();
        cases.push(Case::fails(
            format!("{name} in the first {k} bytes of a 1-frame message"),
            wire[..header + k].to_vec(),
            1007,
        ));
    }
    // A valid message before the invalid one is still echoed.
    let mut send = frame(TEXT, "ok ✓".as_bytes());
    send.extend(frame(TEXT, b"\xed\xa0\x80"));
    cases.push(Case {
        name: "surrogate after a valid message".into(),
        send,
        reply: server_frame(TEXT, "ok ✓".as_bytes()),
        close: Some(1007),
    });
    run(h.local_addr(), &cases);
    stop(h);
}
