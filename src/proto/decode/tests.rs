//! Unit tests of the decoder: one or more hand-written byte sequences per RFC 6455 rule.

use super::*;

/// The masking key of RFC 6455 §5.7's examples.
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame written out by hand: first byte `b0`, MASK set, the
/// shortest length form, `KEY`, then `payload` XORed with `KEY`.
fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b0];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&KEY);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    f
}

fn text(s: &str) -> OwnedIncoming {
    OwnedIncoming::Text(s.to_owned())
}

/// Runs `decoder` over `buf` until it needs more bytes or fails, dropping
/// consumed bytes from `buf` as a caller would.
fn drain(
    decoder: &mut Decoder,
    buf: &mut Vec<u8>,
    limits: &Limits,
) -> (Vec<OwnedIncoming>, Result<usize, ProtocolError>) {
    let mut out = Vec::new();
    loop {
        match decoder.decode(buf, limits) {
            Ok(Decoded::Message {
                consumed, message, ..
            }) => {
                out.push(message.into());
                buf.drain(..consumed);
            }
            Ok(Decoded::Incomplete { consumed, needed }) => {
                buf.drain(..consumed);
                return (out, Ok(needed));
            }
            Err(e) => return (out, Err(e)),
        }
    }
}

/// Decodes `bytes` in one piece as `role`.
fn run(
    role: Role,
    limits: &Limits,
    bytes: &[u8],
) -> (Vec<OwnedIncoming>, Result<usize, ProtocolError>) {
    drain(&mut Decoder::new(role), &mut bytes.to_vec(), limits)
}

/// The error decoding `bytes` as a server fails with.
fn server_err(bytes: &[u8]) -> ProtocolError {
    run(Role::Server, &Limits::default(), bytes).1.unwrap_err()
}

/// The messages `bytes` decode to as a server, which must all be complete.
fn server_ok(bytes: &[u8]) -> Vec<OwnedIncoming> {
    let (msgs, rest) = run(Role::Server, &Limits::default(), bytes);
    // 2 for the next header, 0 once a Close ended the stream.
    assert!(
        matches!(rest, Ok(2) | Ok(0)),
        "input fully consumed: {rest:?}"
    );
    msgs
}

/// Feeds `bytes` to a fresh decoder in chunks of `chunk` bytes, keeping the
/// unconsumed bytes between calls as the caller's contract says.
fn dribble(
    role: Role,
    limits: &Limits,
    bytes: &[u8],
    chunk: usize,
) -> Result<Vec<OwnedIncoming>, ProtocolError> {
    let mut decoder = Decoder::new(role);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk) {
        buf.extend_from_slice(piece);
        let (msgs, rest) = drain(&mut decoder, &mut buf, limits);
        out.extend(msgs);
        rest?;
    }
    assert!(buf.is_empty(), "leftover {buf:?}");
    Ok(out)
}

#[test]
fn decoder_is_24_bytes_or_less() {
    assert!(std::mem::size_of::<Decoder>() <= 24);
}

#[test]
fn rfc_masked_hello() {
    let frame = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut buf = frame;
    let mut decoder = Decoder::new(Role::Server);
    assert_eq!(
        decoder.decode(&mut buf, &Limits::default()),
        Ok(Decoded::Message {
            consumed: 11,
            message: Incoming::Text("Hello"),
            reply: None
        })
    );
}

#[test]
fn rfc_unmasked_frames_in_client_role() {
    let limits = Limits::default();
    // §5.7: unmasked "Hello", then "Hel" + "lo" fragmented, then a ping.
    let bytes = [
        0x81, 0x05, b'H', b'e', b'l', b'l', b'o', //
        0x01, 0x03, b'H', b'e', b'l', 0x80, 0x02, b'l', b'o', //
        0x89, 0x05, b'H', b'e', b'l', b'l', b'o',
    ];
    let (msgs, rest) = run(Role::Client, &limits, &bytes);
    assert_eq!(
        msgs,
        [
            text("Hello"),
            text("Hello"),
            OwnedIncoming::Ping(b"Hello".to_vec())
        ]
    );
    assert_eq!(rest, Ok(2));
}

#[test]
fn ping_is_answered_with_identical_pong() {
    let mut buf = masked(0x89, b"Hello");
    let mut decoder = Decoder::new(Role::Server);
    let Ok(Decoded::Message { message, reply, .. }) = decoder.decode(&mut buf, &Limits::default())
    else {
        panic!("expected a message");
    };
    assert_eq!(message, Incoming::Ping(b"Hello"));
    assert_eq!(reply, Some(Reply::Pong(b"Hello")));
}

#[test]
fn pong_needs_no_reply() {
    // §5.7: masked pong "Hello".
    let mut buf = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut decoder = Decoder::new(Role::Server);
    let Ok(Decoded::Message { message, reply, .. }) = decoder.decode(&mut buf, &Limits::default())
    else {
        panic!("expected a message");
    };
    assert_eq!((message, reply), (Incoming::Pong(b"Hello"), None));
}

#[test]
fn sixteen_bit_length() {
    // 0x82 0xFE 0x01 0x00: 256 bytes.
    let payload: Vec<u8> = (0..=255).collect();
    let frame = masked(0x82, &payload);
    assert_eq!(&frame[..4], &[0x82, 0xfe, 0x01, 0x00]);
    assert_eq!(server_ok(&frame), [OwnedIncoming::Binary(payload)]);
}

#[test]
fn sixty_four_bit_length() {
    // 0x82 0xFF then 0x0000000000010000: 65536 bytes.
    let payload: Vec<u8> = (0..65536).map(|i| (i * 7) as u8).collect();
    let frame = masked(0x82, &payload);
    assert_eq!(&frame[..10], &[0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(server_ok(&frame), [OwnedIncoming::Binary(payload)]);
}

#[test]
fn non_minimal_length_forms_are_accepted() {
    // 3 bytes announced in the 16-bit and the 64-bit form.
    let a = [0x82, 0xfe, 0, 3, 0, 0, 0, 0, 1, 2, 3];
    let b = [0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 1, 2, 3];
    assert_eq!(server_ok(&a), [OwnedIncoming::Binary(vec![1, 2, 3])]);
    assert_eq!(server_ok(&b), [OwnedIncoming::Binary(vec![1, 2, 3])]);
}

#[test]
fn boundary_lengths() {
    for len in [0, 1, 124, 125, 126, 127, 65535, 65536, 65537] {
        let bin: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let txt: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        assert_eq!(
            server_ok(&masked(0x82, &bin)),
            [OwnedIncoming::Binary(bin)],
            "{len}"
        );
        assert_eq!(
            server_ok(&masked(0x81, txt.as_bytes())),
            [text(&txt)],
            "{len}"
        );
    }
}

#[test]
fn empty_messages() {
    assert_eq!(server_ok(&[0x81, 0x80, 1, 2, 3, 4]), [text("")]);
    assert_eq!(
        server_ok(&[0x82, 0x80, 1, 2, 3, 4]),
        [OwnedIncoming::Binary(vec![])]
    );
    assert_eq!(
        server_ok(&[0x89, 0x80, 1, 2, 3, 4]),
        [OwnedIncoming::Ping(vec![])]
    );
    // An empty first fragment and an empty last one.
    let bytes = [0x01, 0x80, 1, 2, 3, 4, 0x80, 0x80, 1, 2, 3, 4];
    assert_eq!(server_ok(&bytes), [text("")]);
}

#[test]
fn length_with_most_significant_bit_fails_at_once() {
    assert_eq!(
        server_err(&[0x82, 0xff, 0x80]),
        ProtocolError::InvalidLength
    );
    assert_eq!(
        server_err(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]),
        ProtocolError::InvalidLength
    );
    assert_eq!(ProtocolError::InvalidLength.close_code(), CloseCode(1002));
}

#[test]
fn server_requires_masked_frames() {
    let e = server_err(&[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
    assert_eq!(e, ProtocolError::UnmaskedFrame);
    assert_eq!(e.close_code(), CloseCode::PROTOCOL_ERROR);
    // Control frames too.
    assert_eq!(server_err(&[0x89, 0x00]), ProtocolError::UnmaskedFrame);
}

#[test]
fn client_rejects_masked_frames() {
    let (_, r) = run(Role::Client, &Limits::default(), &masked(0x81, b"Hello"));
    assert_eq!(r, Err(ProtocolError::MaskedFrame));
    assert_eq!(ProtocolError::MaskedFrame.close_code(), CloseCode(1002));
}

#[test]
fn reserved_opcodes_fail() {
    for op in (3..=7).chain(0xb..=0xf) {
        assert_eq!(
            server_err(&[0x80 | op, 0x80, 0, 0, 0, 0]),
            ProtocolError::ReservedOpcode(op)
        );
        // Only two bytes needed to tell.
        assert_eq!(server_err(&[op, 0xff]), ProtocolError::ReservedOpcode(op));
    }
}

#[test]
fn reserved_bits_fail_without_extension() {
    for b0 in [0xc1, 0xa1, 0x91, 0xf2, 0xc9] {
        let e = server_err(&masked(b0, b"x"));
        assert_eq!(e, ProtocolError::ReservedBits, "{b0:#x}");
        assert_eq!(e.close_code(), CloseCode(1002));
    }
}

#[test]
fn rsv1_with_permessage_deflate() {
    let limits = Limits::new().with_allow_rsv1(true);
    // RSV1 on a single text frame: compressed, UTF-8 left to the caller.
    let (msgs, r) = run(Role::Server, &limits, &masked(0xc1, b"\xff\x00"));
    assert_eq!(r, Ok(2));
    assert_eq!(
        msgs,
        [OwnedIncoming::Compressed {
            opcode: OpCode::Text,
            payload: vec![0xff, 0]
        }]
    );
    // RSV1 on the first fragment only.
    let mut bytes = masked(0x42, b"ab");
    bytes.extend(masked(0x80, b"cd"));
    let (msgs, _) = run(Role::Server, &limits, &bytes);
    assert_eq!(
        msgs,
        [OwnedIncoming::Compressed {
            opcode: OpCode::Binary,
            payload: b"abcd".to_vec()
        }]
    );
    // RSV1 on a continuation, on a control frame, RSV2 and RSV3: errors.
    let mut bytes = masked(0x41, b"ab");
    bytes.extend(masked(0xc0, b"cd"));
    for bad in [
        bytes,
        masked(0xc9, b""),
        masked(0xa1, b""),
        masked(0x91, b""),
    ] {
        let (_, r) = run(Role::Server, &limits, &bad);
        assert_eq!(r, Err(ProtocolError::ReservedBits));
    }
}

#[test]
fn control_frames_are_limited_to_125_bytes() {
    assert_eq!(
        server_ok(&masked(0x89, &[7; 125])),
        [OwnedIncoming::Ping(vec![7; 125])]
    );
    // 126 bytes in the 16-bit form: 0x89 0xFE 0x00 0x7E; fails from 2 bytes.
    let e = server_err(&masked(0x89, &[7; 126]));
    assert_eq!(e, ProtocolError::ControlFrameTooLong);
    assert_eq!(
        server_err(&[0x8a, 0xfe]),
        ProtocolError::ControlFrameTooLong
    );
    assert_eq!(
        server_err(&[0x88, 0xff]),
        ProtocolError::ControlFrameTooLong
    );
}

#[test]
fn control_frames_must_not_be_fragmented() {
    // Ping without FIN.
    let e = server_err(&[0x09, 0x80, 0, 0, 0, 0]);
    assert_eq!(e, ProtocolError::FragmentedControlFrame);
    assert_eq!(e.close_code(), CloseCode(1002));
}

#[test]
fn control_frames_between_fragments() {
    // "Hel" (no FIN), ping, pong, "lo" (FIN).
    let mut bytes = masked(0x01, b"Hel");
    bytes.extend(masked(0x89, b"p"));
    bytes.extend(masked(0x8a, b"q"));
    bytes.extend(masked(0x80, b"lo"));
    let first = masked(0x01, b"Hel").len();
    let ping = masked(0x89, b"p").len();
    let mut decoder = Decoder::new(Role::Server);
    let limits = Limits::default();
    let mut buf = bytes.clone();
    match decoder.decode(&mut buf, &limits) {
        Ok(Decoded::Message {
            consumed,
            message: Incoming::Ping(b"p"),
            reply: Some(Reply::Pong(b"p")),
        }) => assert_eq!(consumed, first + ping),
        other => panic!("{other:?}"),
    }
    assert!(decoder.in_fragmented_message());
    assert_eq!(
        server_ok(&bytes),
        [
            OwnedIncoming::Ping(b"p".to_vec()),
            OwnedIncoming::Pong(b"q".to_vec()),
            text("Hello")
        ]
    );
}

#[test]
fn continuation_without_start_fails() {
    let e = server_err(&masked(0x80, b"lo"));
    assert_eq!(e, ProtocolError::UnexpectedContinuation);
    assert_eq!(e.close_code(), CloseCode(1002));
    // Also right after a complete fragmented message.
    let mut bytes = masked(0x01, b"Hel");
    bytes.extend(masked(0x80, b"lo"));
    bytes.extend(masked(0x80, b"!"));
    let (msgs, r) = run(Role::Server, &Limits::default(), &bytes);
    assert_eq!(msgs, [text("Hello")]);
    assert_eq!(r, Err(ProtocolError::UnexpectedContinuation));
}

#[test]
fn new_message_inside_fragmented_message_fails() {
    for b0 in [0x81, 0x82, 0x01, 0x02] {
        let mut bytes = masked(0x01, b"Hel");
        bytes.extend(masked(b0, b"lo"));
        assert_eq!(server_err(&bytes), ProtocolError::ExpectedContinuation);
    }
}

#[test]
fn close_without_body() {
    let mut buf = [0x88, 0x80, 1, 2, 3, 4];
    let mut decoder = Decoder::new(Role::Server);
    assert_eq!(
        decoder.decode(&mut buf, &Limits::default()),
        Ok(Decoded::Message {
            consumed: 6,
            message: Incoming::Close(None),
            reply: Some(Reply::Close(CloseCode::NORMAL, ""))
        })
    );
    assert!(decoder.is_closed());
}

#[test]
fn close_with_code_and_reason_is_echoed() {
    let mut buf = masked(0x88, b"\x0f\xa0bye");
    let mut decoder = Decoder::new(Role::Server);
    let Ok(Decoded::Message { message, reply, .. }) = decoder.decode(&mut buf, &Limits::default())
    else {
        panic!("expected a message");
    };
    let frame = CloseFrame {
        code: CloseCode(4000),
        reason: "bye",
    };
    assert_eq!(message, Incoming::Close(Some(frame)));
    assert_eq!(reply, Some(Reply::Close(CloseCode(4000), "bye")));
}

#[test]
fn close_body_of_one_byte_fails() {
    let e = server_err(&masked(0x88, &[0x03]));
    assert_eq!(e, ProtocolError::InvalidCloseLength);
    assert_eq!(e.close_code(), CloseCode(1002));
}

#[test]
fn close_codes_are_checked() {
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let e = server_err(&masked(0x88, &code.to_be_bytes()));
        assert_eq!(e, ProtocolError::InvalidCloseCode(code));
        assert_eq!(e.close_code(), CloseCode(1002));
    }
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999,
    ] {
        let msgs = server_ok(&masked(0x88, &code.to_be_bytes()));
        assert_eq!(
            msgs,
            [OwnedIncoming::Close(Some((CloseCode(code), String::new())))]
        );
    }
}

#[test]
fn close_reason_must_be_utf8() {
    let e = server_err(&masked(0x88, b"\x03\xe8ok\xc0\xaf"));
    assert_eq!(e, ProtocolError::InvalidUtf8);
    assert_eq!(e.close_code(), CloseCode::INVALID_PAYLOAD);
}

#[test]
fn nothing_after_close() {
    let limits = Limits::default();
    let mut decoder = Decoder::new(Role::Server);
    let mut buf = masked(0x88, b"\x03\xe8");
    buf.extend(masked(0x81, b"late"));
    let (msgs, r) = drain(&mut decoder, &mut buf, &limits);
    assert_eq!(
        msgs,
        [OwnedIncoming::Close(Some((CloseCode(1000), String::new())))]
    );
    assert_eq!(r, Err(ProtocolError::ReceivedAfterClose));
    assert!(decoder.is_closed());
    assert_eq!(
        decoder.decode(&mut [], &limits),
        Ok(Decoded::Incomplete {
            consumed: 0,
            needed: 0
        })
    );
}

#[test]
fn close_between_fragments_drops_the_message() {
    let mut bytes = masked(0x01, b"Hel");
    bytes.extend(masked(0x88, b""));
    let mut decoder = Decoder::new(Role::Server);
    let (msgs, r) = drain(&mut decoder, &mut bytes, &Limits::default());
    assert_eq!(msgs, [OwnedIncoming::Close(None)]);
    assert_eq!(r, Ok(0));
    assert!(decoder.reassembly.is_none());
}

#[test]
fn invalid_utf8_in_single_frame_fails() {
    // κόσμε then ED A0 80 (a UTF-16 surrogate), then "edited".
    let bad = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited";
    let e = server_err(&masked(0x81, bad));
    assert_eq!(e, ProtocolError::InvalidUtf8);
    assert_eq!(e.close_code(), CloseCode(1007));
    // Truncated code point at the end of the message.
    assert_eq!(
        server_err(&masked(0x81, b"a\xe2\x82")),
        ProtocolError::InvalidUtf8
    );
    // Valid multi-byte text passes, in both roles.
    assert_eq!(
        server_ok(&masked(0x81, "κόσμε€𝄞".as_bytes())),
        [text("κόσμε€𝄞")]
    );
    let mut unmasked = vec![0x81, 4];
    unmasked.extend_from_slice("𝄞".as_bytes());
    let (msgs, _) = run(Role::Client, &Limits::default(), &unmasked);
    assert_eq!(msgs, [text("𝄞")]);
    let (_, r) = run(Role::Client, &Limits::default(), &[0x81, 2, 0xc0, 0xaf]);
    assert_eq!(r, Err(ProtocolError::InvalidUtf8));
}

#[test]
fn invalid_utf8_fails_in_the_first_fragment() {
    // Only the first fragment has arrived; its overlong '/' fails now.
    let e = server_err(&masked(0x01, b"ok\xc0\xaf"));
    assert_eq!(e, ProtocolError::InvalidUtf8);
}

#[test]
fn invalid_utf8_fails_in_a_partial_frame() {
    // A text frame announcing 100 bytes of which 10 arrived: the invalid
    // bytes among them fail without waiting for the other 90.
    let mut payload = b"abcdef\xed\xa0\x80x".to_vec();
    payload.resize(100, b'a');
    let frame = masked(0x81, &payload);
    assert_eq!(server_err(&frame[..6 + 10]), ProtocolError::InvalidUtf8);
    // The same inside a continuation frame.
    let mut bytes = masked(0x01, b"Hel");
    let cont = masked(0x80, &payload);
    bytes.extend_from_slice(&cont[..8 + 10]);
    assert_eq!(server_err(&bytes), ProtocolError::InvalidUtf8);
}

#[test]
fn invalid_utf8_fails_on_the_byte_that_makes_it_invalid() {
    // "a" ED A0 80: ED is fine alone, ED A0 is a surrogate.
    let frame = masked(0x81, b"a\xed\xa0\x80");
    let mut decoder = Decoder::new(Role::Server);
    let limits = Limits::default();
    let mut buf = frame[..8].to_vec(); // header + "a" ED
    assert_eq!(
        decoder.decode(&mut buf, &limits),
        Ok(Decoded::Incomplete {
            consumed: 0,
            needed: 10
        })
    );
    buf.push(frame[8]); // A0
    assert_eq!(
        decoder.decode(&mut buf, &limits),
        Err(ProtocolError::InvalidUtf8)
    );
    // "a" E2 then "b": the unfinished code point is broken by a byte that is
    // fine on its own.
    let frame = masked(0x81, b"a\xe2bcdef");
    let mut decoder = Decoder::new(Role::Server);
    let mut buf = frame[..8].to_vec();
    assert!(matches!(
        decoder.decode(&mut buf, &limits),
        Ok(Decoded::Incomplete { .. })
    ));
    buf.push(frame[8]);
    assert_eq!(
        decoder.decode(&mut buf, &limits),
        Err(ProtocolError::InvalidUtf8)
    );
}

#[test]
fn code_points_split_across_fragments() {
    // "a€" with € = E2 82 AC split after E2, and after E2 82.
    for cut in [2, 3] {
        let whole = "a€b".as_bytes();
        let mut bytes = masked(0x01, &whole[..cut]);
        bytes.extend(masked(0x80, &whole[cut..]));
        assert_eq!(server_ok(&bytes), [text("a€b")]);
    }
    // A message ending inside a code point fails at its last fragment.
    let mut bytes = masked(0x01, b"a\xe2");
    bytes.extend(masked(0x80, b""));
    assert_eq!(server_err(&bytes), ProtocolError::InvalidUtf8);
}

#[test]
fn dribbled_frames_are_unmasked_once_and_validated_as_they_arrive() {
    let limits = Limits::default();
    let txt = "héllo wörld κόσμε 𝄞 and some ASCII to make it longer than 126 bytes, \
               plus more: €€€ 𝄞𝄞 end";
    let mut bytes = masked(0x81, txt.as_bytes());
    bytes.extend(masked(0x82, &[0xAB; 300]));
    // A fragmented message with a ping in the middle.
    bytes.extend(masked(0x01, "κόσ".as_bytes()));
    bytes.extend(masked(0x89, b"ping"));
    bytes.extend(masked(0x00, "με €".as_bytes()));
    bytes.extend(masked(0x80, "𝄞!".as_bytes()));
    let expect = [
        text(txt),
        OwnedIncoming::Binary(vec![0xAB; 300]),
        OwnedIncoming::Ping(b"ping".to_vec()),
        text("κόσμε €𝄞!"),
    ];
    for chunk in [1, 2, 3, 5, 7, 64, 1000] {
        assert_eq!(
            dribble(Role::Server, &limits, &bytes, chunk),
            Ok(expect.to_vec()),
            "{chunk}"
        );
    }
}

#[test]
fn needed_tells_how_many_bytes_to_wait_for() {
    let limits = Limits::default();
    let cases: [(&[u8], usize); 7] = [
        (&[], 2),
        (&[0x81], 2),
        (&[0x81, 0x85], 11), // 6-byte header + 5
        (&[0x81, 0x85, 1, 2, 3, 4], 11),
        (&[0x82, 0xfe], 8), // 16-bit length not known yet
        (&[0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4], 8 + 256),
        (&[0x82, 0xff, 0, 0], 14),
    ];
    for (bytes, needed) in cases {
        let mut buf = bytes.to_vec();
        let mut decoder = Decoder::new(Role::Server);
        let got = decoder.decode(&mut buf, &limits);
        assert_eq!(
            got,
            Ok(Decoded::Incomplete {
                consumed: 0,
                needed
            }),
            "{bytes:?}"
        );
    }
}

#[test]
fn absorbed_fragments_are_consumed_before_a_partial_frame() {
    let first = masked(0x02, b"abc");
    let second = masked(0x80, b"defgh");
    let mut buf = first.clone();
    buf.extend_from_slice(&second[..7]);
    let mut decoder = Decoder::new(Role::Server);
    let limits = Limits::default();
    assert_eq!(
        decoder.decode(&mut buf, &limits),
        Ok(Decoded::Incomplete {
            consumed: first.len(),
            needed: second.len()
        })
    );
    let mut rest = buf[first.len()..].to_vec();
    rest.extend_from_slice(&second[7..]);
    let Ok(Decoded::Message {
        consumed, message, ..
    }) = decoder.decode(&mut rest, &limits)
    else {
        panic!("expected the message");
    };
    assert_eq!(
        (consumed, message),
        (second.len(), Incoming::Binary(b"abcdefgh"))
    );
}

#[test]
fn frame_size_limit_is_checked_from_the_header() {
    // A header announcing 2^62 bytes fails at once with 1009.
    let header = [0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
    let e = server_err(&header);
    assert_eq!(e, ProtocolError::FrameTooLarge);
    assert_eq!(e.close_code(), CloseCode::MESSAGE_TOO_BIG);
    // A small limit: 10 bytes pass, 11 fail before the payload arrives.
    let limits = Limits::new().with_max_frame_size(10);
    let (msgs, _) = run(Role::Server, &limits, &masked(0x82, &[0; 10]));
    assert_eq!(msgs, [OwnedIncoming::Binary(vec![0; 10])]);
    let (_, r) = run(Role::Server, &limits, &masked(0x82, &[0; 11])[..6]);
    assert_eq!(r, Err(ProtocolError::FrameTooLarge));
}

#[test]
fn message_size_limit_is_checked_across_fragments() {
    let limits = Limits::new().with_max_message_size(10);
    let mut bytes = masked(0x02, &[1; 6]);
    bytes.extend(masked(0x00, &[2; 4]));
    bytes.extend(masked(0x80, &[]));
    let (msgs, _) = run(Role::Server, &limits, &bytes);
    assert_eq!(msgs.len(), 1);
    // One byte more: fails on the header of the fragment crossing it.
    let mut bytes = masked(0x02, &[1; 6]);
    bytes.extend_from_slice(&masked(0x80, &[2; 5])[..6]);
    let (_, r) = run(Role::Server, &limits, &bytes);
    assert_eq!(r, Err(ProtocolError::MessageTooLarge));
    assert_eq!(ProtocolError::MessageTooLarge.close_code(), CloseCode(1009));
    // A single frame over the message limit, too.
    let (_, r) = run(Role::Server, &limits, &masked(0x81, &[b'a'; 11])[..6]);
    assert_eq!(r, Err(ProtocolError::MessageTooLarge));
}

#[test]
fn reassembly_buffer_lives_only_while_needed() {
    let limits = Limits::default();
    let mut decoder = Decoder::new(Role::Server);
    assert!(decoder.reassembly.is_none());
    let mut buf = masked(0x01, b"Hel");
    assert!(matches!(
        decoder.decode(&mut buf, &limits),
        Ok(Decoded::Incomplete { .. })
    ));
    assert!(decoder.reassembly.is_some());
    let mut buf = masked(0x80, b"lo");
    assert!(matches!(
        decoder.decode(&mut buf, &limits),
        Ok(Decoded::Message {
            message: Incoming::Text("Hello"),
            ..
        })
    ));
    // Freed on the next call, once the message's borrow has ended.
    assert!(!decoder.in_fragmented_message());
    assert!(matches!(
        decoder.decode(&mut [], &limits),
        Ok(Decoded::Incomplete { .. })
    ));
    assert!(decoder.reassembly.is_none());
}

#[test]
fn errors_reset_the_decoder() {
    let limits = Limits::default();
    let mut decoder = Decoder::new(Role::Server);
    let mut bytes = masked(0x01, b"Hel");
    let partial = masked(0x80, &[b'a'; 50]);
    bytes.extend_from_slice(&partial[..20]);
    let (_, r) = drain(&mut decoder, &mut bytes, &limits);
    assert_eq!(r, Ok(partial.len()));
    // Breaking the contract (other bytes than before) gives garbage or an
    // error, never a panic.
    let mut other = masked(0x81, b"\xff");
    assert_eq!(
        decoder.decode(&mut other, &limits),
        Err(ProtocolError::ExpectedContinuation)
    );
    assert_eq!((decoder.progress, decoder.tail), (0, 0));
    assert!(decoder.reassembly.is_none());
    let mut ok = masked(0x81, b"fresh");
    assert!(matches!(
        decoder.decode(&mut ok, &limits),
        Ok(Decoded::Message {
            message: Incoming::Text("fresh"),
            ..
        })
    ));
}

#[test]
fn client_role_dribbled() {
    let limits = Limits::default();
    let txt = "€uro 𝄞";
    let mut bytes = vec![0x81, txt.len() as u8];
    bytes.extend_from_slice(txt.as_bytes());
    bytes.extend_from_slice(&[0x02, 3, 1, 2, 3, 0x80, 1, 4]);
    for chunk in 1..6 {
        assert_eq!(
            dribble(Role::Client, &limits, &bytes, chunk),
            Ok(vec![
                text("€uro 𝄞"),
                OwnedIncoming::Binary(vec![1, 2, 3, 4])
            ])
        );
    }
    let mut bad = vec![0x81, 10];
    bad.extend_from_slice(b"ab\xf4\x90");
    assert_eq!(
        dribble(Role::Client, &limits, &bad, 1),
        Err(ProtocolError::InvalidUtf8)
    );
}

#[test]
fn a_caller_breaking_the_contract_never_gets_invalid_text() {
    let limits = Limits::default();
    // Half of a text frame, then the whole frame with the half that was
    // already unmasked replaced by invalid UTF-8.
    let frame = masked(0x81, b"abcdefghij");
    let mut decoder = Decoder::new(Role::Server);
    let mut buf = frame[..6 + 5].to_vec();
    assert!(matches!(
        decoder.decode(&mut buf, &limits),
        Ok(Decoded::Incomplete { .. })
    ));
    let mut swapped = frame.clone();
    swapped[6..11].fill(0xff);
    assert_eq!(
        decoder.decode(&mut swapped, &limits),
        Err(ProtocolError::InvalidUtf8)
    );
    // The same for the continuation of a fragmented text message.
    let cont = masked(0x80, b"abcdefghij");
    let mut decoder = Decoder::new(Role::Server);
    let mut buf = masked(0x01, b"xy");
    let first = buf.len();
    buf.extend_from_slice(&cont[..8 + 5]);
    assert!(
        matches!(decoder.decode(&mut buf, &limits), Ok(Decoded::Incomplete { consumed, .. }) if consumed == first)
    );
    let mut swapped = cont.clone();
    swapped[8..13].fill(0xff);
    assert_eq!(
        decoder.decode(&mut swapped, &limits),
        Err(ProtocolError::InvalidUtf8)
    );
    // And for a dribbled first fragment.
    let head = masked(0x01, b"abcdefghij");
    let mut decoder = Decoder::new(Role::Server);
    let mut buf = head[..6 + 5].to_vec();
    assert!(matches!(
        decoder.decode(&mut buf, &limits),
        Ok(Decoded::Incomplete { .. })
    ));
    let mut swapped = head.clone();
    swapped[6..11].fill(0xff);
    swapped.extend(masked(0x80, b""));
    assert_eq!(
        decoder.decode(&mut swapped, &limits),
        Err(ProtocolError::InvalidUtf8)
    );
}
