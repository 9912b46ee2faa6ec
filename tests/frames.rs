//! Verifies that messages of every size and shape round-trip, and that protocol violations close with the code RFC 6455 requires.

mod common;
use common::*;

#[test]
fn echo_text_binary_and_large() {
    let (h, _) = start(config(2));
    let mut c = connect(h.local_addr(), "/");
    send_text(&mut c, "héllo wörld");
    assert_eq!(read_text(&mut c), "héllo wörld");
    for size in [0usize, 1, 125, 126, 65535, 65536, 1 << 20] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
        c.send(tungstenite::Message::binary(data.clone())).unwrap();
        match c.read().unwrap() {
            tungstenite::Message::Binary(b) => assert_eq!(&b[..], &data[..], "size {size}"),
            other => panic!("{other:?}"),
        }
    }
    let big = "z".repeat(3 << 20);
    send_text(&mut c, &big);
    assert_eq!(read_text(&mut c).len(), big.len());
    stop(h);
}

#[test]
fn ping_gets_pong_and_fragments_reassemble_around_control_frames() {
    let (h, _) = start(config(1));
    let mut r = Raw::connect(h.local_addr());
    r.send_frame(true, 9, b"are you there");
    assert_eq!(
        r.read_frame().unwrap(),
        (true, 10, b"are you there".to_vec())
    );
    // Text in three fragments with a ping between them, split inside a
    // multi-byte character.
    let text = "añb€c".as_bytes();
    r.send_frame(false, 1, &text[..2]);
    r.send_frame(true, 9, b"p");
    r.send_frame(false, 0, &text[2..5]);
    r.send_frame(true, 0, &text[5..]);
    assert_eq!(r.read_frame().unwrap(), (true, 10, b"p".to_vec()));
    assert_eq!(r.read_frame().unwrap(), (true, 1, text.to_vec()));
    // An unsolicited pong is ignored.
    r.send_frame(true, 10, b"");
    r.send_frame(true, 1, b"after");
    assert_eq!(r.read_frame().unwrap(), (true, 1, b"after".to_vec()));
    stop(h);
}

#[test]
fn close_handshake_is_echoed_and_the_server_closes_tcp() {
    let (h, ev) = start(config(1));
    let mut r = Raw::connect(h.local_addr());
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"done");
    r.send_frame(true, 8, &payload);
    assert_eq!(r.expect_close(), Some(1000));
    r.expect_eof();
    wait_until("close callback", || !ev.closed.lock().unwrap().is_empty());
    assert_eq!(ev.closed.lock().unwrap()[0], (1000, "done".to_string()));
    stop(h);
}

#[test]
fn server_initiated_close() {
    let (h, _) = start(config(1));
    let mut r = Raw::connect(h.local_addr());
    r.send_frame(true, 1, b"close:4001");
    assert_eq!(r.expect_close(), Some(4001));
    r.send_frame(true, 8, &4001u16.to_be_bytes());
    r.expect_eof();
    stop(h);
}

fn expect_code(addr: std::net::SocketAddr, bytes: &[u8], code: u16) {
    let mut r = Raw::connect(addr);
    r.send_raw(bytes);
    assert_eq!(
        r.expect_close(),
        Some(code),
        "after sending {:02x?}",
        &bytes[..bytes.len().min(16)]
    );
    r.expect_eof();
}

#[test]
fn violations_close_with_the_right_code() {
    let (h, ev) = start(config(1).max_message_size(1 << 16));
    let addr = h.local_addr();
    // Unmasked client frame: 1002.
    expect_code(addr, &[0x81, 0x02, b'h', b'i'], 1002);
    // Reserved opcode: 1002.
    expect_code(addr, &masked_frame(true, 0, 3, b""), 1002);
    // RSV1 without an extension: 1002.
    expect_code(addr, &masked_frame(true, 4, 1, b"x"), 1002);
    // Continuation without a start: 1002.
    expect_code(addr, &masked_frame(true, 0, 0, b"x"), 1002);
    // Fragmented control frame: 1002.
    expect_code(addr, &masked_frame(false, 0, 9, b"x"), 1002);
    // Invalid UTF-8: 1007.
    expect_code(addr, &masked_frame(true, 0, 1, b"\xc0\xaf"), 1007);
    // Over the message limit: 1009.
    expect_code(
        addr,
        &masked_frame(true, 0, 2, &vec![0; (1 << 16) + 1]),
        1009,
    );
    // A frame announcing 2^62 bytes: 1009 at once.
    let mut huge = vec![0x82, 0xff];
    huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    expect_code(addr, &huge, 1009);
    // Close with an invalid code: 1002.
    expect_code(
        addr,
        &masked_frame(true, 0, 8, &1005u16.to_be_bytes()),
        1002,
    );
    // Fragments over the message limit: 1009.
    let mut frags = masked_frame(false, 0, 2, &vec![0; 40000]);
    frags.extend_from_slice(&masked_frame(true, 0, 0, &vec![0; 40000]));
    expect_code(addr, &frags, 1009);
    assert!(h.stats().protocol_errors >= 10);
    wait_until("close callbacks", || ev.closed.lock().unwrap().len() >= 10);
    stop(h);
}

#[test]
fn invalid_utf8_fails_fast_in_the_first_fragment() {
    let (h, _) = start(config(1));
    let mut r = Raw::connect(h.local_addr());
    // The message is not finished, but its first fragment already holds a
    // sequence that can never be valid: the server must not wait.
    r.send_frame(false, 1, b"ok \xed\xa0\x80");
    assert_eq!(r.expect_close(), Some(1007));
    stop(h);
}
