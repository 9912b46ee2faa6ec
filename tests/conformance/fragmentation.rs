//! Verifies that fragmented messages reassemble, with control frames between fragments, and that every illegal fragment sequence fails with 1002.

use super::*;

#[test]
fn fragmented_messages_reassemble_and_bad_sequences_fail_with_1002() {
    let h = echo_server(1 << 20);
    let mut cases = Vec::new();
    let text = "Hello, fragmented wörld — ∑ 😀!".as_bytes();
    for n in 1..=text.len() {
        cases.push(Case::echo(
            format!("text in {n} fragments"),
            fragments(TEXT, text, n),
            server_frame(TEXT, text),
        ));
    }
    for n in [2, 3, 16, 100] {
        let data = pattern(1000);
        cases.push(Case::echo(
            format!("binary in {n} fragments"),
            fragments(BINARY, &data, n),
            server_frame(BINARY, &data),
        ));
    }
    let big = pattern(300_000);
    cases.push(Case::echo(
        "binary of 300000 bytes in 7 fragments",
        fragments(BINARY, &big, 7),
        server_frame(BINARY, &big),
    ));
    for (name, opcode) in [("text", TEXT), ("binary", BINARY)] {
        let mut send = part(opcode, b"");
        send.extend(part(CONT, b"ab"));
        send.extend(part(CONT, b""));
        send.extend(frame(CONT, b"cd"));
        cases.push(Case::echo(
            format!("{name} with empty first and middle fragments"),
            send,
            server_frame(opcode, b"abcd"),
        ));
        let mut send = part(opcode, b"abcd");
        send.extend(frame(CONT, b""));
        cases.push(Case::echo(
            format!("{name} with an empty final fragment"),
            send,
            server_frame(opcode, b"abcd"),
        ));
        let mut send = part(opcode, b"");
        send.extend(part(CONT, b""));
        send.extend(frame(CONT, b""));
        cases.push(Case::echo(
            format!("{name} of empty fragments only"),
            send,
            server_frame(opcode, b""),
        ));
    }
    // Two fragmented messages back to back stay apart.
    let mut send = fragments(TEXT, b"first", 2);
    send.extend(fragments(BINARY, b"second", 3));
    let mut reply = server_frame(TEXT, b"first");
    reply.extend(server_frame(BINARY, b"second"));
    cases.push(Case::echo("two fragmented messages", send, reply));

    cases.push(Case::fails(
        "final continuation without a start",
        frame(CONT, b"x"),
        1002,
    ));
    cases.push(Case::fails(
        "non-final continuation without a start",
        part(CONT, b"x"),
        1002,
    ));
    cases.push(Case::fails(
        "empty continuation without a start",
        frame(CONT, b""),
        1002,
    ));
    let mut send = frame(TEXT, b"done");
    send.extend(frame(CONT, b"late"));
    cases.push(Case {
        name: "continuation after a finished message".into(),
        send,
        reply: server_frame(TEXT, b"done"),
        close: Some(1002),
    });
    for (first, second) in [
        (TEXT, TEXT),
        (TEXT, BINARY),
        (BINARY, TEXT),
        (BINARY, BINARY),
    ] {
        for fin in [true, false] {
            let mut send = part(first, b"start");
            send.extend(masked_frame(fin, 0, second, b"again"));
            cases.push(Case::fails(
                format!("opcode {second:#x} (fin {fin}) inside a fragmented {first:#x}"),
                send,
                1002,
            ));
        }
    }
    for opcode in [PING, PONG, CLOSE] {
        cases.push(Case::fails(
            format!("non-final control frame {opcode:#x}"),
            part(opcode, b""),
            1002,
        ));
        let mut send = part(opcode, b"ab");
        send.extend(frame(CONT, b"cd"));
        cases.push(Case::fails(
            format!("fragmented control frame {opcode:#x}"),
            send,
            1002,
        ));
        let mut send = part(TEXT, b"msg");
        send.extend(part(opcode, b""));
        cases.push(Case::fails(
            format!("non-final control frame {opcode:#x} inside a message"),
            send,
            1002,
        ));
    }
    run(h.local_addr(), &cases);
    stop(h);
}
