//! Verifies that frames of every length form, pings, pongs, reserved bits and opcodes, and message size limits get the exact answers RFC 6455 requires.

use super::*;

const LENGTHS: [usize; 8] = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20];

#[test]
fn framing_echoes_every_length_form() {
    let h = echo_server(4 << 20);
    let mut cases = Vec::new();
    for len in LENGTHS {
        cases.push(Case::echo(
            format!("binary of {len} bytes"),
            frame(BINARY, &pattern(len)),
            server_frame(BINARY, &pattern(len)),
        ));
        cases.push(Case::echo(
            format!("text of {len} bytes"),
            frame(TEXT, &ascii(len)),
            server_frame(TEXT, &ascii(len)),
        ));
    }
    // Several messages in one write come back in order.
    let mut send = Vec::new();
    let mut reply = Vec::new();
    for len in [0, 5, 126, 0, 70000] {
        send.extend(frame(BINARY, &pattern(len)));
        reply.extend(server_frame(BINARY, &pattern(len)));
    }
    cases.push(Case::echo("pipelined messages", send, reply));
    // "the most significant bit MUST be 0" (RFC 6455 5.2).
    let mut msb = vec![0x82, 0xff];
    msb.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
    msb.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0, 0, 0]);
    cases.push(Case::fails("64-bit length with the top bit set", msb, 1002));
    // A client frame must be masked (RFC 6455 5.1).
    cases.push(Case::fails(
        "unmasked client frame",
        vec![0x81, 0x02, b'h', b'i'],
        1002,
    ));
    run(h.local_addr(), &cases);
    stop(h);
}

#[test]
fn ping_is_answered_with_an_identical_pong() {
    let h = echo_server(1 << 20);
    let mut cases = Vec::new();
    for len in [0, 1, 125] {
        cases.push(Case::echo(
            format!("ping of {len} bytes"),
            frame(PING, &pattern(len)),
            server_frame(PONG, &pattern(len)),
        ));
    }
    cases.push(Case::fails(
        "ping of 126 bytes",
        frame(PING, &pattern(126)),
        1002,
    ));
    cases.push(Case::fails(
        "ping of 65536 bytes",
        frame(PING, &pattern(65536)),
        1002,
    ));
    let mut send = frame(PONG, b"unsolicited");
    send.extend(frame(PONG, b""));
    send.extend(frame(TEXT, b"after pongs"));
    cases.push(Case::echo(
        "unsolicited pongs are ignored",
        send,
        server_frame(TEXT, b"after pongs"),
    ));
    let mut send = Vec::new();
    let mut reply = Vec::new();
    for i in 0..10u8 {
        send.extend(frame(PING, &[i; 10]));
        reply.extend(server_frame(PONG, &[i; 10]));
    }
    cases.push(Case::echo("ten pings in a row", send, reply));
    // Control frames between fragments are answered before the message,
    // which then arrives whole.
    let mut send = part(TEXT, b"Hello, ");
    send.extend(frame(PING, b"between"));
    send.extend(frame(PONG, b"ignored"));
    send.extend(part(CONT, b"fragmented "));
    send.extend(frame(PING, b""));
    send.extend(frame(CONT, b"world"));
    let mut reply = server_frame(PONG, b"between");
    reply.extend(server_frame(PONG, b""));
    reply.extend(server_frame(TEXT, b"Hello, fragmented world"));
    cases.push(Case::echo("pings between fragments", send, reply));
    // One byte per fragment, cut inside characters, a ping between each.
    let text = "€😀".as_bytes();
    let mut send = Vec::new();
    let mut reply = Vec::new();
    for (i, b) in text.iter().enumerate() {
        let op = if i == 0 { TEXT } else { CONT };
        send.extend(masked_frame(i + 1 == text.len(), 0, op, &[*b]));
        if i + 1 < text.len() {
            send.extend(frame(PING, &[i as u8]));
            reply.extend(server_frame(PONG, &[i as u8]));
        }
    }
    reply.extend(server_frame(TEXT, text));
    cases.push(Case::echo(
        "a ping between every 1-byte fragment",
        send,
        reply,
    ));
    cases.push(Case::echo(
        "unsolicited pong of 125 bytes",
        [frame(PONG, &pattern(125)), frame(BINARY, b"next")].concat(),
        server_frame(BINARY, b"next"),
    ));
    run(h.local_addr(), &cases);
    stop(h);
}

#[test]
fn reserved_bits_and_opcodes_fail_with_1002() {
    let h = echo_server(1 << 20);
    let mut cases = Vec::new();
    for rsv in [4u8, 2, 1, 7] {
        for (opcode, payload) in [
            (TEXT, &b"x"[..]),
            (BINARY, b"x"),
            (PING, b"p"),
            (CLOSE, b""),
        ] {
            cases.push(Case::fails(
                format!("RSV {rsv:03b} on opcode {opcode:#x}"),
                masked_frame(true, rsv, opcode, payload),
                1002,
            ));
        }
        // The violation after a good message: the good one is echoed.
        let mut send = frame(TEXT, b"ok");
        send.extend(masked_frame(true, rsv, TEXT, b"x"));
        cases.push(Case {
            name: format!("RSV {rsv:03b} after a message"),
            send,
            reply: server_frame(TEXT, b"ok"),
            close: Some(1002),
        });
    }
    for opcode in (3..=7).chain(0xB..=0xF) {
        for payload in [&b""[..], b"reserved"] {
            cases.push(Case::fails(
                format!("opcode {opcode:#x} with {} bytes", payload.len()),
                frame(opcode, payload),
                1002,
            ));
        }
        let mut send = frame(TEXT, b"ok");
        send.extend(frame(opcode, b""));
        cases.push(Case {
            name: format!("opcode {opcode:#x} after a message"),
            send,
            reply: server_frame(TEXT, b"ok"),
            close: Some(1002),
        });
        let mut send = part(TEXT, b"half");
        send.extend(frame(opcode, b""));
        cases.push(Case::fails(
            format!("opcode {opcode:#x} inside a fragmented message"),
            send,
            1002,
        ));
    }
    run(h.local_addr(), &cases);
    stop(h);
}

#[test]
fn a_large_message_survives_every_write_granularity() {
    let h = echo_server(4 << 20);
    let data = pattern(1 << 20);
    let wire = frame(BINARY, &data);
    let expected = server_frame(BINARY, &data);
    for chunk in [1usize, 7, 1000, 65536] {
        let what = format!("1 MiB in writes of {chunk} bytes");
        let mut r = Raw::connect(h.local_addr());
        let start = Instant::now();
        for c in wire.chunks(chunk) {
            r.stream.write_all(c).unwrap();
            r.stream.flush().unwrap();
        }
        assert!(start.elapsed() < TIMEOUT, "{what}: writing took too long");
        expect_bytes(&mut r, &expected, &what);
        r.send_raw(&frame(CLOSE, &close_payload(1000, b"")));
        expect_bytes(
            &mut r,
            &server_frame(CLOSE, &close_payload(1000, b"")),
            &what,
        );
        expect_end(&mut r, &what);
    }
    // Multi-byte text cut inside characters by 7-byte writes.
    let text = "a€😀ß".repeat((1 << 20) / 10);
    let mut r = Raw::connect(h.local_addr());
    for c in frame(TEXT, text.as_bytes()).chunks(7) {
        r.stream.write_all(c).unwrap();
    }
    expect_bytes(
        &mut r,
        &server_frame(TEXT, text.as_bytes()),
        "1 MiB of multi-byte text in writes of 7 bytes",
    );
    // The same in fragments, each fragment written in pieces.
    let mut r = Raw::connect(h.local_addr());
    let wire = fragments(BINARY, &data, 33);
    for c in wire.chunks(4099) {
        r.stream.write_all(c).unwrap();
    }
    expect_bytes(&mut r, &expected, "1 MiB in 33 fragments");
    stop(h);
}

#[test]
fn messages_over_the_limit_fail_with_1009() {
    const LIMIT: usize = 65536;
    let h = echo_server(LIMIT);
    let cases = vec![
        Case::echo(
            "binary of exactly the limit",
            frame(BINARY, &pattern(LIMIT)),
            server_frame(BINARY, &pattern(LIMIT)),
        ),
        Case::echo(
            "fragments adding up to the limit",
            fragments(TEXT, &ascii(LIMIT), 4),
            server_frame(TEXT, &ascii(LIMIT)),
        ),
        Case::fails(
            "binary one byte over",
            frame(BINARY, &pattern(LIMIT + 1)),
            1009,
        ),
        Case::fails("text one byte over", frame(TEXT, &ascii(LIMIT + 1)), 1009),
        Case::fails(
            "fragments one byte over",
            fragments(BINARY, &pattern(LIMIT + 1), 3),
            1009,
        ),
        // The announced length alone is enough: no payload follows.
        Case::fails(
            "header announcing 1 MiB",
            frame(BINARY, &pattern(1 << 20))[..14].to_vec(),
            1009,
        ),
    ];
    run(h.local_addr(), &cases);
    stop(h);
}
