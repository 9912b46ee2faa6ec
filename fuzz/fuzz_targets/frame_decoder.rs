//! Fuzzes the frame decoder: arbitrary bytes, cut into arbitrary chunks, fed to a server-role and a client-role decoder as a caller would; it must never panic.
//!
//! Input layout: byte 0 picks the limits (bit 0: RSV1 allowed, bit 1: small
//! size limits); bytes 1..=4 are chunk sizes (1 to 256, cycled); the rest
//! is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::proto::decode::{Decoded, Decoder, Limits, Incoming, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (sizes, stream) = rest.split_at(rest.len().min(4));
    let mut limits = Limits::new().with_allow_rsv1(flags & 1 != 0);
    if flags & 2 != 0 {
        limits = limits.with_max_frame_size(200).with_max_message_size(600);
    }
    let chunks: Vec<usize> = sizes.iter().map(|&s| s as usize + 1).collect();
    let chunks = if chunks.is_empty() {
        vec![usize::MAX]
    } else {
        chunks
    };
    for role in [Role::Server, Role::Client] {
        run(role, &limits, stream, &chunks);
    }
});

/// Feeds `stream` in chunks, keeping unconsumed bytes like a caller, until
/// it ends or the decoder reports a protocol error.
fn run(role: Role, limits: &Limits, stream: &[u8], chunks: &[usize]) {
    let mut decoder = Decoder::new(role);
    let mut buf = Vec::new();
    let mut pos = 0;
    for &size in chunks.iter().cycle() {
        if pos >= stream.len() {
            break;
        }
        let take = size.min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + take]);
        pos += take;
        loop {
            let held = buf.len();
            match decoder.decode(&mut buf, limits) {
                Ok(Decoded::Message {
                    consumed, message, ..
                }) => {
                    assert!(consumed > 0 && consumed <= held);
                    if let Incoming::Text(t) = message {
                        // The decoder hands out text it vouches for.
                        assert!(std::str::from_utf8(t.as_bytes()).is_ok());
                    }
                    buf.drain(..consumed);
                }
                Ok(Decoded::Incomplete { consumed, needed }) => {
                    assert!(consumed <= held);
                    buf.drain(..consumed);
                    assert!(needed > buf.len() || decoder.is_closed());
                    break;
                }
                Err(_) => return,
            }
        }
    }
}
