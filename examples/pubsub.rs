//! A pub/sub server speaking the subset of shardcast's JSON protocol the
//! load generator uses:
//!
//! - `{"type":"subscribe","topics":["a","b"]}` → `{"type":"subscribed","topics":["a","b"]}`
//! - `{"type":"unsubscribe","topics":["a"]}` → `{"type":"unsubscribed","topics":["a"]}`
//! - `{"type":"publish","topic":"a","data":D}` → every subscriber of `a` (the
//!   publisher too, if it subscribed) receives
//!   `{"type":"message","topic":"a","data":D}`.
//!
//! `D` is any JSON value and is passed through byte for byte: simd-json
//! validates the message and yields the topic, but a parsed value has lost
//! its original spelling, so [`raw_member`] finds the raw bytes of `topic`
//! and `data` with a small scan of the (already validated) top-level object.
//! The outgoing frame is built once from three parts and shared by every
//! subscriber on every core.
//!
//! `cargo run --release --example pubsub -- --listen 127.0.0.1:9001 --cores 2`

use std::cell::RefCell;

use shardcast::proto::OpCode;
use shardcast::{Handler, Message, PreparedFrame, Rejection, Server, UpgradeRequest, Ws};
use simd_json::prelude::*;

#[path = "support/args.rs"]
mod args;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The pub/sub protocol handler.
pub struct PubSub;

thread_local! {
    /// simd-json parses in place; one scratch copy per core, reused.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Handler for PubSub {
    type Data = ();
    type Local = ();

    fn upgrade(&self, _req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            scratch.extend_from_slice(text.as_bytes());
            let Ok(value) = simd_json::to_borrowed_value(scratch) else {
                ws.send_text(r#"{"type":"error","error":"invalid JSON"}"#);
                return;
            };
            match value.get_str("type") {
                Some("publish") => {
                    let (Some(topic), Some(raw_topic), Some(data)) = (
                        value.get_str("topic"),
                        raw_member(text.as_bytes(), b"topic"),
                        raw_member(text.as_bytes(), b"data"),
                    ) else {
                        ws.send_text(r#"{"type":"error","error":"publish needs topic and data"}"#);
                        return;
                    };
                    let frame = PreparedFrame::from_parts(
                        OpCode::Text,
                        &[
                            b"{\"type\":\"message\",\"topic\":",
                            raw_topic,
                            b",\"data\":",
                            data,
                            b"}",
                        ],
                    );
                    ws.publish(topic, &frame, true);
                }
                Some(kind @ ("subscribe" | "unsubscribe")) => {
                    let Some(topics) = value.get_array("topics") else {
                        ws.send_text(r#"{"type":"error","error":"topics must be an array"}"#);
                        return;
                    };
                    let mut names = Vec::with_capacity(topics.len());
                    for t in topics.iter().filter_map(|t| t.as_str()) {
                        if kind == "subscribe" {
                            // A refused topic (the connection is closing, or
                            // the topic is full) is left out of the reply.
                            if ws.subscribe(t).is_err() {
                                continue;
                            }
                        } else {
                            ws.unsubscribe(t);
                        }
                        names.push(simd_json::BorrowedValue::from(t));
                    }
                    let names = simd_json::BorrowedValue::from(names).encode();
                    ws.send_text(&format!("{{\"type\":\"{kind}d\",\"topics\":{names}}}"));
                }
                _ => {
                    ws.send_text(r#"{"type":"error","error":"unknown type"}"#);
                }
            }
        });
    }
}

/// The raw bytes of member `key` of the top-level JSON object in `json`,
/// which must already be valid JSON. Only the top level is searched; a key
/// spelled with escapes is not found.
pub fn raw_member<'a>(json: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(json, i);
        if json.get(i) != Some(&b'"') {
            return None;
        }
        let k_end = skip_value(json, i)?;
        let k = &json[i + 1..k_end - 1];
        i = skip_ws(json, k_end);
        if json.get(i) != Some(&b':') {
            return None;
        }
        let v_start = skip_ws(json, i + 1);
        let v_end = skip_value(json, v_start)?;
        if k == key {
            return Some(&json[v_start..v_end]);
        }
        i = skip_ws(json, v_end);
        match json.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index just past the JSON value starting at `i`.
fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match *b.get(i)? {
            b'"' => {
                i += 1;
                loop {
                    match *b.get(i)? {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                i += 1;
            }
            _ if depth == 0 => {
                // A number or literal: runs to the next delimiter.
                while !matches!(
                    b.get(i),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    i += 1;
                }
                return Some(i);
            }
            _ => i += 1,
        }
        if depth == 0 {
            return Some(i);
        }
    }
}

#[allow(dead_code)] // the integration tests include this file for `PubSub`
fn main() -> std::io::Result<()> {
    shardcast::alloc::purge_freed_memory_promptly();
    let handle = Server::new(args::config_from_args(), PubSub).start()?;
    println!(
        "pubsub listening on ws://{} with {} cores ({:?})",
        handle.local_addr(),
        handle.cores(),
        handle.drivers()
    );
    handle.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::raw_member;

    #[test]
    fn finds_raw_members() {
        let j = br#"{ "type":"publish", "topic" : "a\"b", "data": {"x":[1,"}",2]}, "n": -1.5e3 }"#;
        assert_eq!(raw_member(j, b"topic"), Some(&br#""a\"b""#[..]));
        assert_eq!(raw_member(j, b"data"), Some(&br#"{"x":[1,"}",2]}"#[..]));
        assert_eq!(raw_member(j, b"n"), Some(&b"-1.5e3"[..]));
        assert_eq!(raw_member(j, b"missing"), None);
        assert_eq!(raw_member(b"[1]", b"data"), None);
    }
}
