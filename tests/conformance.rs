//! Verifies that the echo server answers every RFC 6455 framing, control, fragmentation, UTF-8, limit and closing case with the exact bytes and close code the standard requires.
//!
//! Each case runs over its own raw TCP connection to an in-process echo
//! server; the client builds frames by hand, so nothing between the test and
//! the server repairs a mistake. A case lists the bytes it sends, the exact
//! bytes it expects back and, when the server must fail the connection, the
//! close code. A case without a close code then closes normally and expects
//! its own close echoed: no stray frame may sit between the reply and that
//! echo.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use common::{masked_frame, stop, Raw, TIMEOUT};
use shardcast::{Config, Handler, Message, Rejection, Server, ServerHandle, UpgradeRequest, Ws};

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONT: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The server of `examples/echo.rs`: every text or binary message comes back.
struct Echo;

impl Handler for Echo {
    type Data = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        match msg {
            Message::Text(t) => ws.send_text(t),
            Message::Binary(b) => ws.send_binary(b),
        };
    }
}

/// Starts the echo server on one core, on a free loopback port.
fn echo_server(max_message_size: usize) -> ServerHandle {
    let config = Config::new()
        .cores(1)
        .pin(false)
        .listen("127.0.0.1:0".parse().unwrap())
        .max_message_size(max_message_size)
        .shutdown_timeout(std::time::Duration::from_secs(1));
    Server::new(config, Echo).start().expect("server starts")
}

/// The frame a server must send: FIN set, no RSV bits, unmasked, with the
/// shortest length form (7-bit up to 125, 16-bit up to 65535, else 64-bit).
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// A close frame's payload: the code, then the reason.
fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// A final, masked client frame without RSV bits.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    masked_frame(true, 0, opcode, payload)
}

/// A non-final, masked client frame without RSV bits.
fn part(opcode: u8, payload: &[u8]) -> Vec<u8> {
    masked_frame(false, 0, opcode, payload)
}

/// One conversation on a fresh connection.
struct Case {
    name: String,
    /// What the client writes, in one go.
    send: Vec<u8>,
    /// The exact bytes the server must answer with first.
    reply: Vec<u8>,
    /// `Some(code)`: the server must then fail the connection with `code`
    /// and end TCP. `None`: the connection must still be open and clean.
    close: Option<u16>,
}

impl Case {
    fn echo(name: impl Into<String>, send: Vec<u8>, reply: Vec<u8>) -> Case {
        Case {
            name: name.into(),
            send,
            reply,
            close: None,
        }
    }

    fn fails(name: impl Into<String>, send: Vec<u8>, code: u16) -> Case {
        Case {
            name: name.into(),
            send,
            reply: Vec::new(),
            close: Some(code),
        }
    }
}

/// Runs each case on its own connection.
fn run(addr: SocketAddr, cases: &[Case]) {
    assert!(!cases.is_empty());
    for case in cases {
        let mut r = Raw::connect(addr);
        // The server may fail the connection before it has read everything,
        // which can reset a long write: the answer is what counts.
        let _ = r.stream.write_all(&case.send);
        expect_bytes(&mut r, &case.reply, &case.name);
        match case.close {
            Some(code) => expect_close(&mut r, code, &case.name),
            None => {
                r.send_raw(&frame(CLOSE, &close_payload(1000, b"")));
                expect_bytes(
                    &mut r,
                    &server_frame(CLOSE, &close_payload(1000, b"")),
                    &format!("{}: close echo after the case", case.name),
                );
                expect_end(&mut r, &case.name);
            }
        }
    }
}

/// Reads exactly `n` bytes within the timeout.
fn read_bytes(r: &mut Raw, n: usize, what: &str) -> Vec<u8> {
    let start = Instant::now();
    let mut tmp = vec![0u8; 1 << 16];
    while r.buf.len() < n {
        assert!(
            start.elapsed() < TIMEOUT,
            "{what}: timed out with {} of {n} bytes: {:02x?}",
            r.buf.len(),
            head(&r.buf)
        );
        match r.stream.read(&mut tmp) {
            Ok(0) => panic!(
                "{what}: connection ended after {} of {n} bytes: {:02x?}",
                r.buf.len(),
                head(&r.buf)
            ),
            Ok(k) => r.buf.extend_from_slice(&tmp[..k]),
            Err(e) => panic!(
                "{what}: read failed after {} of {n} bytes ({e}): {:02x?}",
                r.buf.len(),
                head(&r.buf)
            ),
        }
    }
    r.buf.drain(..n).collect()
}

/// The first bytes of a buffer, for failure messages.
fn head(b: &[u8]) -> &[u8] {
    &b[..b.len().min(32)]
}

/// Asserts the next bytes from the server are exactly `expected`.
fn expect_bytes(r: &mut Raw, expected: &[u8], what: &str) {
    let got = read_bytes(r, expected.len(), what);
    if got != expected {
        let at = got.iter().zip(expected).position(|(a, b)| a != b).unwrap();
        let from = at.saturating_sub(8);
        panic!(
            "{what}: answer differs at byte {at} of {}: got {:02x?}, expected {:02x?} (from byte {from})",
            expected.len(),
            &got[from..(from + 24).min(got.len())],
            &expected[from..(from + 24).min(expected.len())],
        );
    }
}

/// Asserts the next frame is a server close with `code` (and a UTF-8
/// reason), and that the server then ends the TCP connection.
fn expect_close(r: &mut Raw, code: u16, what: &str) {
    let h = read_bytes(r, 2, what);
    assert_eq!(
        h[0],
        0x80 | CLOSE,
        "{what}: expected a close frame with FIN and no RSV, got {:02x?}{:02x?}",
        h,
        head(&r.buf)
    );
    assert_eq!(h[1] & 0x80, 0, "{what}: server frames are unmasked");
    let len = usize::from(h[1]);
    assert!(
        (2..=125).contains(&len),
        "{what}: close payload length {len}"
    );
    let body = read_bytes(r, len, what);
    assert_eq!(
        u16::from_be_bytes([body[0], body[1]]),
        code,
        "{what}: close code (reason {:?})",
        String::from_utf8_lossy(&body[2..])
    );
    assert!(
        std::str::from_utf8(&body[2..]).is_ok(),
        "{what}: close reason is not UTF-8: {:02x?}",
        &body[2..]
    );
    expect_end(r, what);
}

/// Asserts the server sends nothing more and ends the TCP connection.
fn expect_end(r: &mut Raw, what: &str) {
    assert!(
        r.buf.is_empty(),
        "{what}: bytes after the close: {:02x?}",
        head(&r.buf)
    );
    let mut tmp = [0u8; 256];
    match r.stream.read(&mut tmp) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: bytes after the close: {:02x?}", &tmp[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: the server did not end the connection: {e}"),
    }
}

/// Bytes 0..len in a pattern that shows misplaced or dropped bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// Printable ASCII of `len` bytes.
fn ascii(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// `payload` cut into `n` nearly equal fragments of `opcode`.
fn fragments(opcode: u8, payload: &[u8], n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let step = payload.len().div_ceil(n).max(1);
    let mut chunks: Vec<&[u8]> = payload.chunks(step).collect();
    while chunks.len() < n {
        chunks.push(&[]);
    }
    for (i, c) in chunks.iter().enumerate() {
        let op = if i == 0 { opcode } else { CONT };
        out.extend(masked_frame(i + 1 == chunks.len(), 0, op, c));
    }
    out
}

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

const VALID_CLOSE_CODES: [u16; 13] = [
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
];

const INVALID_CLOSE_CODES: [u16; 11] = [
    0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
];

#[test]
fn the_closing_handshake_echoes_valid_codes_and_rejects_the_rest() {
    let h = echo_server(1 << 20);
    let mut cases = Vec::new();
    for code in VALID_CLOSE_CODES {
        cases.push(Case {
            name: format!("close {code}"),
            send: frame(CLOSE, &close_payload(code, b"")),
            reply: server_frame(CLOSE, &close_payload(code, b"")),
            close: None,
        });
    }
    for code in INVALID_CLOSE_CODES {
        cases.push(Case::fails(
            format!("close {code}"),
            frame(CLOSE, &close_payload(code, b"")),
            1002,
        ));
    }
    for reason in ["bye", "ünïcødé reason ✓", &"r".repeat(123)] {
        cases.push(Case {
            name: format!("close 1000 with a reason of {} bytes", reason.len()),
            send: frame(CLOSE, &close_payload(1000, reason.as_bytes())),
            reply: server_frame(CLOSE, &close_payload(1000, reason.as_bytes())),
            close: None,
        });
    }
    cases.push(Case::fails(
        "close with a reason of 124 bytes (payload 126)",
        frame(CLOSE, &close_payload(1000, &ascii(124))),
        1002,
    ));
    for (name, reason) in [
        ("surrogate", &b"\xed\xa0\x80"[..]),
        ("overlong", b"\xc0\xaf"),
        ("truncated", b"ok\xe2\x82"),
    ] {
        cases.push(Case::fails(
            format!("close reason with {name} UTF-8"),
            frame(CLOSE, &close_payload(1000, reason)),
            1007,
        ));
    }
    cases.push(Case::fails(
        "close payload of 1 byte",
        frame(CLOSE, &[0x03]),
        1002,
    ));
    // Data after the close is neither echoed nor answered.
    let mut send = frame(CLOSE, &close_payload(1000, b""));
    send.extend(frame(TEXT, b"after close"));
    send.extend(frame(PING, b"after close"));
    cases.push(Case {
        name: "data after close".into(),
        send,
        reply: server_frame(CLOSE, &close_payload(1000, b"")),
        close: None,
    });
    // A close between fragments ends the connection; the partial message
    // is dropped.
    let mut send = part(TEXT, b"unfinished");
    send.extend(frame(CLOSE, &close_payload(1001, b"")));
    cases.push(Case {
        name: "close inside a fragmented message".into(),
        send,
        reply: server_frame(CLOSE, &close_payload(1001, b"")),
        close: None,
    });
    run_closes(h.local_addr(), &cases);

    // An empty close is answered with an empty close or with 1000.
    let mut r = Raw::connect(h.local_addr());
    r.send_raw(&frame(CLOSE, b""));
    let h2 = read_bytes(&mut r, 2, "empty close");
    let answer = match h2[1] {
        0 => h2,
        2 => [h2, read_bytes(&mut r, 2, "empty close")].concat(),
        n => panic!("empty close answered with a {n}-byte payload: {h2:02x?}"),
    };
    assert!(
        answer == [0x88, 0x00] || answer == [0x88, 0x02, 0x03, 0xe8],
        "empty close answered with {answer:02x?}"
    );
    expect_end(&mut r, "empty close");
    stop(h);
}

/// Runs close cases: a case without a close code has closed the
/// connection itself, so after its reply the server must end TCP.
fn run_closes(addr: SocketAddr, cases: &[Case]) {
    for case in cases {
        let mut r = Raw::connect(addr);
        let _ = r.stream.write_all(&case.send);
        expect_bytes(&mut r, &case.reply, &case.name);
        match case.close {
            Some(code) => expect_close(&mut r, code, &case.name),
            None => expect_end(&mut r, &case.name),
        }
    }
}
