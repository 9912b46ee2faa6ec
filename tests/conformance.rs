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
use shardcast::{Config, Server, ServerHandle};

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONT: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

#[path = "../examples/support/echo.rs"]
mod echo;
use echo::Echo;

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
    /// and end TCP. `None`: under [`run`] the connection must still be open
    /// and clean; under `closing::run_closes` the case closed it itself, so
    /// the server must end TCP after the reply.
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

#[path = "conformance/closing.rs"]
mod closing;
#[path = "conformance/fragmentation.rs"]
mod fragmentation;
#[path = "conformance/framing.rs"]
mod framing;
#[path = "conformance/utf8.rs"]
mod utf8;
