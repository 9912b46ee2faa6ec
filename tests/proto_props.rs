//! Verifies that the frame decoder yields the same messages however a stream is fragmented and chunked, that every frame encodes and decodes back to itself in both roles, and that arbitrary bytes never make it panic.

use proptest::prelude::*;
use shardcast::proto::decode::{Decoded, Decoder, Incoming, Limits, OwnedIncoming, Reply, Role};
use shardcast::proto::frame::{encode_frame, FrameHeader, OpCode, PreparedFrame, MAX_HEADER_LEN};
use shardcast::proto::{CloseCode, ProtocolError};

/// One data message as sent: its fragments' payload boundaries, and the
/// control frames sent after each non-final fragment.
#[derive(Debug, Clone)]
struct Planned {
    msg: OwnedIncoming,
    cuts: Vec<usize>,
    between: Vec<Vec<OwnedIncoming>>,
}

fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 0usize..140,
        2 => 120usize..400,
        1 => prop::sample::select(vec![65535usize, 65536, 70_000]),
    ]
}

fn text() -> impl Strategy<Value = String> {
    payload_len().prop_flat_map(|len| {
        // Mostly ASCII with multi-byte characters mixed in, so fragment and
        // chunk boundaries often fall inside a code point.
        let chars = prop::sample::select(vec!['a', 'z', ' ', 'é', 'κ', '€', '𝄞', '\u{10FFFF}']);
        prop::collection::vec(chars, len / 2..=len / 2 + 2).prop_map(|cs| cs.into_iter().collect())
    })
}

fn control() -> impl Strategy<Value = OwnedIncoming> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..=125).prop_map(OwnedIncoming::Ping),
        prop::collection::vec(any::<u8>(), 0..=125).prop_map(OwnedIncoming::Pong),
    ]
}

fn planned() -> impl Strategy<Value = Planned> {
    let data = prop_oneof![
        text().prop_map(OwnedIncoming::Text),
        payload_len()
            .prop_flat_map(|n| prop::collection::vec(any::<u8>(), n))
            .prop_map(OwnedIncoming::Binary),
    ];
    (
        data,
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        prop::collection::vec(prop::collection::vec(control(), 0..3), 4),
    )
        .prop_map(|(msg, cut_at, between)| {
            let len = match &msg {
                OwnedIncoming::Text(t) => t.len(),
                OwnedIncoming::Binary(b) => b.len(),
                _ => unreachable!(),
            };
            let mut cuts: Vec<usize> = cut_at.iter().map(|i| i.index(len + 1)).collect();
            cuts.sort_unstable();
            Planned { msg, cuts, between }
        })
}

/// Encodes `plan` as frames: masked with a fresh key per frame for a
/// server-role decoder, unmasked for a client-role one. Returns the bytes
/// and the messages the decoder should yield, in order.
fn encode_plan(
    plan: &[Planned],
    close: &Option<(u16, String)>,
    role: Role,
) -> (Vec<u8>, Vec<OwnedIncoming>) {
    let mask = || match role {
        Role::Server => Some(shardcast::proto::frame::random_mask()),
        Role::Client => None,
    };
    let mut out = Vec::new();
    let mut expect = Vec::new();
    for p in plan {
        let (opcode, payload) = match &p.msg {
            OwnedIncoming::Text(t) => (OpCode::Text, t.as_bytes()),
            OwnedIncoming::Binary(b) => (OpCode::Binary, &b[..]),
            _ => unreachable!(),
        };
        let mut bounds = vec![0];
        bounds.extend(&p.cuts);
        bounds.push(payload.len());
        let fragments = bounds.len() - 1;
        for i in 0..fragments {
            let fin = i + 1 == fragments;
            let op = if i == 0 { opcode } else { OpCode::Continuation };
            encode_frame(
                &mut out,
                fin,
                op,
                &payload[bounds[i]..bounds[i + 1]],
                mask(),
            );
            if !fin {
                for c in &p.between[i] {
                    let (op, body) = match c {
                        OwnedIncoming::Ping(b) => (OpCode::Ping, b),
                        OwnedIncoming::Pong(b) => (OpCode::Pong, b),
                        _ => unreachable!(),
                    };
                    encode_frame(&mut out, true, op, body, mask());
                    expect.push(c.clone());
                }
            }
        }
        expect.push(p.msg.clone());
    }
    if let Some((code, reason)) = close {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(reason.as_bytes());
        encode_frame(&mut out, true, OpCode::Close, &body, mask());
        expect.push(OwnedIncoming::Close(Some((
            CloseCode(*code),
            reason.clone(),
        ))));
    }
    (out, expect)
}

/// Decodes a well-formed stream with [`feed`], which must leave no bytes.
fn decode_chunked(
    role: Role,
    limits: &Limits,
    bytes: &[u8],
    chunks: &[usize],
) -> Result<Vec<OwnedIncoming>, ProtocolError> {
    let mut buf = Vec::new();
    let out = feed(role, limits, bytes, chunks, &mut buf)?;
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    Ok(out)
}

/// Feeds `bytes` to a decoder in chunks of the given sizes (cycled), as a
/// caller would: unconsumed bytes stay at the front of `buf` and new ones
/// are appended. Also checks that `needed` always asks for more than the
/// buffer holds and that holding `needed` bytes always brings progress.
fn feed(
    role: Role,
    limits: &Limits,
    bytes: &[u8],
    chunks: &[usize],
    buf: &mut Vec<u8>,
) -> Result<Vec<OwnedIncoming>, ProtocolError> {
    let mut decoder = Decoder::new(role);
    let mut out = Vec::new();
    let mut pos = 0;
    let mut sizes = chunks.iter().cycle();
    let mut waiting_for = 0;
    while pos < bytes.len() {
        let take = (*sizes.next().unwrap()).min(bytes.len() - pos);
        buf.extend_from_slice(&bytes[pos..pos + take]);
        pos += take;
        let mut first = true;
        loop {
            let before = buf.len();
            match decoder.decode(buf, limits)? {
                Decoded::Message {
                    consumed,
                    message,
                    reply,
                } => {
                    assert!(consumed > 0 && consumed <= before);
                    match (&message, reply) {
                        (Incoming::Ping(p), r) => assert_eq!(r, Some(Reply::Pong(p))),
                        (Incoming::Close(None), r) => {
                            assert_eq!(r, Some(Reply::Close(CloseCode::NORMAL, "")))
                        }
                        (Incoming::Close(Some(c)), r) => {
                            assert_eq!(r, Some(Reply::Close(c.code, c.reason)))
                        }
                        (_, r) => assert_eq!(r, None),
                    }
                    out.push(message.into());
                    buf.drain(..consumed);
                }
                Decoded::Incomplete { consumed, needed } => {
                    if first && before >= waiting_for && waiting_for > 0 {
                        // Holding `needed` bytes must bring progress.
                        assert!(consumed > 0 || needed > waiting_for, "stalled at {needed}");
                    }
                    buf.drain(..consumed);
                    if decoder.is_closed() {
                        assert_eq!(needed, 0);
                    } else {
                        assert!(needed > buf.len(), "needed {needed} <= held {}", buf.len());
                    }
                    waiting_for = needed;
                    break;
                }
            }
            first = false;
        }
    }
    Ok(out)
}

fn close_frame() -> impl Strategy<Value = Option<(u16, String)>> {
    prop::option::of((
        prop::sample::select(vec![1000u16, 1001, 1008, 1011, 1013, 3000, 4999]),
        "[a-zé€]{0,30}",
    ))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_yields_the_same_messages(
        plan in prop::collection::vec(planned(), 1..6),
        close in close_frame(),
        chunks in prop::collection::vec(1usize..300, 1..8),
        server in any::<bool>(),
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let limits = Limits::default();
        let (bytes, expect) = encode_plan(&plan, &close, role);
        let whole = decode_chunked(role, &limits, &bytes, &[bytes.len().max(1)]);
        prop_assert_eq!(whole, Ok(expect.clone()));
        let chunked = decode_chunked(role, &limits, &bytes, &chunks);
        prop_assert_eq!(chunked, Ok(expect));
    }

    #[test]
    fn byte_by_byte_yields_the_same_messages(
        plan in prop::collection::vec(planned(), 1..3),
        server in any::<bool>(),
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let (bytes, expect) = encode_plan(&plan, &None, role);
        prop_assume!(bytes.len() < 5_000);
        prop_assert_eq!(decode_chunked(role, &Limits::default(), &bytes, &[1]), Ok(expect));
    }

    #[test]
    fn header_round_trip(
        fin in any::<bool>(),
        rsv in 0u8..8,
        op in prop::sample::select(vec![
            OpCode::Continuation, OpCode::Text, OpCode::Binary,
            OpCode::Close, OpCode::Ping, OpCode::Pong,
        ]),
        mask in prop::option::of(any::<[u8; 4]>()),
        payload_len in prop_oneof![
            0u64..=125, 126u64..=65535, 65536u64..=u64::MAX >> 1,
            prop::sample::select(vec![0u64, 125, 126, 65535, 65536, u64::MAX >> 1]),
        ],
    ) {
        let h = FrameHeader { fin, rsv, opcode: op, mask, payload_len };
        let mut buf = [0; MAX_HEADER_LEN];
        let n = h.encode(&mut buf);
        prop_assert_eq!(n, h.encoded_len());
        prop_assert_eq!(FrameHeader::parse(&buf[..n]), Ok(Some((h, n))));
        for cut in 0..n {
            prop_assert_eq!(FrameHeader::parse(&buf[..cut]), Ok(None));
        }
    }

    #[test]
    fn frame_round_trip_every_opcode_and_length_form(
        op in prop::sample::select(vec![
            OpCode::Text, OpCode::Binary, OpCode::Close, OpCode::Ping, OpCode::Pong,
        ]),
        len in prop_oneof![
            prop::sample::select(vec![0usize, 1, 2, 124, 125, 126, 127, 65535, 65536]),
            0usize..70_000,
        ],
        seed in any::<u64>(),
        server in any::<bool>(),
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let mut rng = fastrand::Rng::with_seed(seed);
        let (payload, expect) = match op {
            OpCode::Text => {
                // Exactly `len` bytes: random characters, padded with ASCII.
                let mut t = String::new();
                loop {
                    let c = rng.choice(['a', 'é', '€', '𝄞']).unwrap();
                    if t.len() + c.len_utf8() > len {
                        break;
                    }
                    t.push(c);
                }
                while t.len() < len {
                    t.push('z');
                }
                (t.clone().into_bytes(), OwnedIncoming::Text(t))
            }
            OpCode::Binary => {
                let b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                (b.clone(), OwnedIncoming::Binary(b))
            }
            OpCode::Ping | OpCode::Pong => {
                let b: Vec<u8> = (0..len.min(125)).map(|_| rng.u8(..)).collect();
                (b.clone(), if op == OpCode::Ping { OwnedIncoming::Ping(b) } else { OwnedIncoming::Pong(b) })
            }
            _ => {
                let reason = "é".repeat(len.min(123) / 2);
                let mut body = 1000u16.to_be_bytes().to_vec();
                body.extend_from_slice(reason.as_bytes());
                if len == 0 {
                    (Vec::new(), OwnedIncoming::Close(None))
                } else {
                    (body, OwnedIncoming::Close(Some((CloseCode(1000), reason))))
                }
            }
        };
        let mask = (role == Role::Server).then(|| rng.u32(..).to_ne_bytes());
        let mut frame = Vec::new();
        encode_frame(&mut frame, true, op, &payload, mask);
        let got = decode_chunked(role, &Limits::default(), &frame, &[frame.len()]);
        prop_assert_eq!(got, Ok(vec![expect.clone()]));
        if role == Role::Client {
            // A prepared (server) frame decodes the same.
            let prepared = match &expect {
                OwnedIncoming::Text(t) => PreparedFrame::text(t),
                OwnedIncoming::Binary(b) => PreparedFrame::binary(b),
                OwnedIncoming::Ping(b) => PreparedFrame::ping(b),
                OwnedIncoming::Pong(b) => PreparedFrame::pong(b),
                OwnedIncoming::Close(Some((code, reason))) => PreparedFrame::close(*code, reason),
                _ => PreparedFrame::close(CloseCode::NO_STATUS, ""),
            };
            prop_assert_eq!(prepared.as_bytes().as_ref(), &frame[..]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..3000),
        chunks in prop::collection::vec(1usize..64, 1..6),
        server in any::<bool>(),
        rsv1 in any::<bool>(),
        small in any::<bool>(),
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let mut limits = Limits::new().with_allow_rsv1(rsv1);
        if small {
            limits = limits.with_max_frame_size(100).with_max_message_size(300);
        }
        let _ = feed(role, &limits, &bytes, &chunks, &mut Vec::new());
    }

    #[test]
    fn mostly_valid_frames_never_panic(
        frames in prop::collection::vec((any::<u8>(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..200)), 1..10),
        chunks in prop::collection::vec(1usize..64, 1..6),
        server in any::<bool>(),
    ) {
        // Well-formed headers with arbitrary first bytes and payloads reach
        // deeper states (fragments, close frames) than random bytes do.
        let role = if server { Role::Server } else { Role::Client };
        let mut bytes = Vec::new();
        for (b0, key_seed, payload) in &frames {
            let mask = (role == Role::Server).then_some([*key_seed, 1, 2, 3]);
            let start = bytes.len();
            encode_frame(&mut bytes, true, OpCode::Binary, payload, mask);
            bytes[start] = *b0;
        }
        let _ = feed(role, &Limits::default(), &bytes, &chunks, &mut Vec::new());
    }
}
